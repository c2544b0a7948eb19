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
			require.NotEmpty(t, r.revert, "seeds %v name no revert", r.seeds)
			tree := t.TempDir()
			for _, f := range files {
				data, err := os.ReadFile(filepath.Join(root, f))
				require.NoError(t, err)
				require.NoError(t, os.MkdirAll(filepath.Dir(filepath.Join(tree, f)), 0o755))
				require.NoError(t, os.WriteFile(filepath.Join(tree, f), data, 0o644))
			}
			revert := filepath.Join(root, "sim", "testdata", "reverts", r.revert+".diff")
			run(t, tree, "git", "apply", revert)
			run(t, tree, "go", "build", "-o", "dmqsim.bin", "./cmd/dmqsim")
			var passed []uint64
			for _, seed := range r.seeds {
				args := []string{"run", "--seed", fmt.Sprint(seed), "--duration", r.duration.String()}
				if r.nodes > 0 {
					args = append(args, "--nodes", fmt.Sprint(r.nodes))
				}
				cmd := exec.Command(filepath.Join(tree, "dmqsim.bin"), args...)
				cmd.Dir = tree
				out, err := cmd.CombinedOutput()
				if err == nil {
					passed = append(passed, seed)
					continue
				}
				require.Contains(t, string(out), "VIOLATION", "seed %d failed to run rather than found the bug:\n%s", seed, out)
				for _, line := range strings.Split(string(out), "\n") {
					if strings.HasPrefix(line, "VIOLATION") {
						t.Logf("seed %d with %s reverted: %s", seed, r.revert, line)
						break
					}
				}
				return
			}
			require.Failf(t, "stale regression seeds", "seeds %v all pass with %s reverted: find others or a deterministic test", passed, r.revert)
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
