//go:build regressions

package sim

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestRegressionSeedsFailWithTheirBugs brings each regression seed's bug
// back (the revert in testdata/reverts, applied to a copy of this tree)
// and checks that the seed fails there: a seed that passes with its bug
// is worthless, and the simulator's own changes make seeds go stale.
// Run by `make check-regressions`.
func TestRegressionSeedsFailWithTheirBugs(t *testing.T) {
	root, err := filepath.Abs("..")
	require.NoError(t, err)
	files := gitFiles(t, root)
	for _, r := range regressionSeeds {
		t.Run(r.revert, func(t *testing.T) {
			require.NotEmpty(t, r.revert, "seed %d names no revert", r.seed)
			tree := t.TempDir()
			for _, f := range files {
				data, err := os.ReadFile(filepath.Join(root, f))
				require.NoError(t, err)
				require.NoError(t, os.MkdirAll(filepath.Dir(filepath.Join(tree, f)), 0o755))
				require.NoError(t, os.WriteFile(filepath.Join(tree, f), data, 0o644))
			}
			revert := filepath.Join(root, "sim", "testdata", "reverts", r.revert+".diff")
			run(t, tree, "git", "apply", revert)
			args := []string{"run", "./cmd/dmqsim", "run", "--seed", fmt.Sprint(r.seed), "--duration", r.duration.String()}
			if r.nodes > 0 {
				args = append(args, "--nodes", fmt.Sprint(r.nodes))
			}
			cmd := exec.Command("go", args...)
			cmd.Dir = tree
			out, err := cmd.CombinedOutput()
			require.Error(t, err, "seed %d passes with %s reverted: find another seed or a deterministic test\n%s", r.seed, r.revert, out)
			require.Contains(t, string(out), "VIOLATION", "seed %d failed to run rather than found the bug:\n%s", r.seed, out)
			for _, line := range strings.Split(string(out), "\n") {
				if strings.HasPrefix(line, "VIOLATION") {
					t.Logf("seed %d with %s reverted: %s", r.seed, r.revert, line)
					break
				}
			}
		})
	}
}

// gitFiles lists the tree's files as git sees them: tracked and new ones,
// without what .gitignore leaves out.
func gitFiles(t *testing.T, root string) []string {
	out := run(t, root, "git", "ls-files", "--cached", "--others", "--exclude-standard")
	var files []string
	for _, f := range strings.Split(strings.TrimSpace(out), "\n") {
		if _, err := os.Stat(filepath.Join(root, f)); err == nil {
			files = append(files, f)
		}
	}
	return files
}

func run(t *testing.T, dir, name string, args ...string) string {
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	require.NoError(t, cmd.Run(), "%s %v:\n%s", name, args, out.String())
	return out.String()
}
