package main

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// The README's dmqctl walk-through runs verbatim, in order, on a fresh
// copy of the repository: make cluster, the stand-in storage services,
// a topic with replication factor 3, and the rest. (Its first version
// asked for replication factor 3 with no broker registered, and a quorum
// description before any leader was elected.)
func TestReadmeWalkthroughRunsVerbatim(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binaries and runs a cluster")
	}
	for _, port := range []int{9091, 9092, 9093, 8081, 8082, 8083} {
		l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
		if err != nil {
			t.Skipf("*** SKIPPED: port %d, which the walk-through uses, is taken (a make cluster running?) ***", port)
		}
		l.Close()
	}
	root := repoRoot(t)
	readme, err := os.ReadFile(filepath.Join(root, "README.md"))
	require.NoError(t, err)
	start := strings.Index(string(readme), "make cluster                                 # builds bin/")
	require.Positive(t, start, "the walk-through's first line")
	end := strings.Index(string(readme)[start:], "```")
	require.Positive(t, end)
	script := string(readme)[start : start+end]

	// A copy of the tracked tree, so that bin/, data/ and logs/ of the
	// working copy are left alone.
	tree := t.TempDir()
	list := exec.Command("git", "ls-files", "--cached", "--others", "--exclude-standard")
	list.Dir = root
	out, err := list.Output()
	require.NoError(t, err)
	for _, f := range strings.Fields(string(out)) {
		data, err := os.ReadFile(filepath.Join(root, f))
		if os.IsNotExist(err) {
			continue
		}
		require.NoError(t, err)
		info, err := os.Stat(filepath.Join(root, f))
		require.NoError(t, err)
		require.NoError(t, os.MkdirAll(filepath.Dir(filepath.Join(tree, f)), 0o755))
		require.NoError(t, os.WriteFile(filepath.Join(tree, f), data, info.Mode().Perm()))
	}
	t.Cleanup(func() {
		stop := exec.Command("make", "--no-print-directory", "cluster-stop")
		stop.Dir = tree
		_ = stop.Run()
	})
	cmd := exec.Command("bash", "-e", "-c", script)
	cmd.Dir = tree
	// Its own process group: should it fail half-way, the storage agents
	// it started in the background go with it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	var buf syncBuffer
	cmd.Stdout, cmd.Stderr = &buf, &buf
	started := time.Now()
	require.NoError(t, cmd.Start())
	t.Cleanup(func() { _ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) })
	err = cmd.Wait()
	output := []byte(buf.String())
	text := string(output)
	require.NoError(t, err, "the walk-through failed after %v:\n%s", time.Since(started), text)
	assert.Contains(t, text, "controller 3: pid")
	assert.Regexp(t, `(?m)^3\s+http://localhost:9093\s+voter`, text)
	assert.Regexp(t, `(?m)^orders\s+\S+\s+6\s+3\s+`, text, "orders with 6 partitions and replication factor 3")
	assert.Equal(t, 3, strings.Count(text, "alive"), "three live brokers:\n%s", text)
	assert.Contains(t, text, "server: ")
	assert.Regexp(t, `(?m)^delta push: version \d+, 3 brokers, 1 topics$`, text, "storage service 1 received the topic")
}
