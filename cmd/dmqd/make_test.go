package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// repoRoot is the repository's root, two levels above this package.
func repoRoot(t *testing.T) string {
	root, err := filepath.Abs(filepath.Join("..", ".."))
	require.NoError(t, err)
	return root
}

// Every documented target is listed by make help: e2e, whose name has a
// digit, once was not.
func TestMakeHelpListsEveryDocumentedTarget(t *testing.T) {
	root := repoRoot(t)
	makefile, err := os.ReadFile(filepath.Join(root, "Makefile"))
	require.NoError(t, err)
	documented := regexp.MustCompile(`(?m)^([^\s:#]+):[^\n]*## `).FindAllStringSubmatch(string(makefile), -1)
	require.NotEmpty(t, documented)
	cmd := exec.Command("make", "--no-print-directory", "help")
	cmd.Dir = root
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "%s", out)
	for _, m := range documented {
		assert.Regexp(t, `(?m)^\s+`+regexp.QuoteMeta(m[1])+`\s`, string(out), "make help omits %s", m[1])
	}
	assert.Contains(t, string(out), "e2e")
}

// make cluster run twice used to truncate the running controllers' logs
// and overwrite their pid files, and make cluster-stop then orphaned them.
// The second start is refused and the first cluster stops cleanly.
func TestClusterScriptRefusesASecondStart(t *testing.T) {
	root := repoRoot(t)
	dir := t.TempDir()
	bin := filepath.Join(dir, "bin")
	require.NoError(t, os.MkdirAll(bin, 0o755))
	build := exec.Command("go", "build", "-o", filepath.Join(bin, "dmqd"), ".")
	out, err := build.CombinedOutput()
	require.NoError(t, err, "%s", out)
	services := filepath.Join(dir, "services.json")
	writeServices(t, services, []int{freePort(t), freePort(t), freePort(t)})
	logs := filepath.Join(dir, "logs")
	script := func(action string) (string, error) {
		cmd := exec.Command(filepath.Join(root, "scripts", "cluster.sh"), action)
		cmd.Env = append(os.Environ(), "BIN="+bin, "LOGS="+logs, "DATA="+filepath.Join(dir, "data"), "SERVICES="+services)
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	pids := func() []int {
		var out []int
		for id := 1; id <= 3; id++ {
			raw, err := os.ReadFile(filepath.Join(logs, fmt.Sprintf("dmqd-%d.pid", id)))
			require.NoError(t, err)
			var pid int
			_, err = fmt.Sscan(string(raw), &pid)
			require.NoError(t, err)
			out = append(out, pid)
		}
		return out
	}
	alive := func(pid int) bool { return syscall.Kill(pid, 0) == nil }

	out1, err := script("start")
	require.NoError(t, err, out1)
	first := pids()
	t.Cleanup(func() {
		for _, pid := range first {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	})
	require.Eventually(t, func() bool {
		info, err := os.Stat(filepath.Join(logs, "dmqd-1.log"))
		return err == nil && info.Size() > 0
	}, 10*time.Second, 50*time.Millisecond, "controller 1 logs")
	logBefore, err := os.ReadFile(filepath.Join(logs, "dmqd-1.log"))
	require.NoError(t, err)

	out2, err := script("start")
	require.Error(t, err, "a second start while the cluster runs: %s", out2)
	assert.Contains(t, out2, "already running")
	assert.Equal(t, first, pids(), "the pid files were overwritten")
	logAfter, err := os.ReadFile(filepath.Join(logs, "dmqd-1.log"))
	require.NoError(t, err)
	assert.True(t, strings.HasPrefix(string(logAfter), string(logBefore)), "the running controller's log was truncated")

	out3, err := script("stop")
	require.NoError(t, err, out3)
	for _, pid := range first {
		assert.Eventually(t, func() bool { return !alive(pid) }, 10*time.Second, 50*time.Millisecond, "controller pid %d orphaned", pid)
	}
}

// make run starts a controller with authentication off: it listens on the
// loopback interface only, not on every interface as it once did.
func TestMakeRunBindsTheLoopbackInterface(t *testing.T) {
	cmd := exec.Command("make", "--no-print-directory", "-n", "run")
	cmd.Dir = repoRoot(t)
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "%s", out)
	assert.Contains(t, string(out), "./cmd/dmqd")
	assert.Contains(t, string(out), "--server.host 127.0.0.1")
}
