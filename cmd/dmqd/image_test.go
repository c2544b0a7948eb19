package main

import (
	"fmt"
	"net/http"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// make image builds an image from scratch (no base image can be pulled)
// whose dmqd serves the seed's API as a non-root user, reports healthy
// through its own probe, and knows its build. Skipped, loudly, where no
// Docker daemon answers.
func TestImageServes(t *testing.T) {
	if err := exec.Command("docker", "info").Run(); err != nil {
		t.Skipf("*** SKIPPED: no Docker daemon answers (%v): the image is not tested ***", err)
	}
	root := repoRoot(t)
	tag := fmt.Sprintf("dmq/dmqd:test-%d", time.Now().UnixNano())
	out, err := exec.Command(filepath.Join(root, "scripts", "image.sh"), tag).CombinedOutput()
	require.NoError(t, err, "%s", out)
	t.Cleanup(func() { _ = exec.Command("docker", "rmi", "-f", tag).Run() })
	var size int64
	_, err = fmt.Sscanf(string(out[strings.Index(string(out), "(")+1:]), "%d bytes", &size)
	require.NoError(t, err, "%s", out)
	assert.Less(t, size, int64(40<<20), "the image is under 40 MB")

	port := freePort(t)
	name := strings.ReplaceAll(strings.TrimPrefix(tag, "dmq/dmqd:"), ".", "-")
	out, err = exec.Command("docker", "run", "-d", "--name", name, "-p", fmt.Sprintf("127.0.0.1:%d:8080", port), tag).CombinedOutput()
	require.NoError(t, err, "%s", out)
	t.Cleanup(func() { _ = exec.Command("docker", "rm", "-f", name).Run() })
	require.Eventually(t, func() bool {
		health, err := exec.Command("docker", "inspect", "--format", "{{.State.Health.Status}}", name).Output()
		return err == nil && strings.TrimSpace(string(health)) == "healthy"
	}, 60*time.Second, 500*time.Millisecond, "the HEALTHCHECK (dmqd probe of /readyz) passes")
	status, body := curl(t, "POST", fmt.Sprintf("http://127.0.0.1:%d/api/v1/metadata/brokers", port),
		`{"id": 1, "host": "localhost", "port": 8082, "rack": "rack1"}`)
	assert.Equal(t, http.StatusOK, status, "%v", body)
	user, err := exec.Command("docker", "inspect", "--format", "{{.Config.User}}", name).Output()
	require.NoError(t, err)
	assert.Equal(t, "65532:65532", strings.TrimSpace(string(user)), "not root")
	version, err := exec.Command("docker", "run", "--rm", tag, "--version").CombinedOutput()
	require.NoError(t, err, "%s", version)
	assert.Contains(t, string(version), "dmqd v")
}
