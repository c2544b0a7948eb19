package main

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/dmq-project/metadata/client"
	metadatav1 "github.com/dmq-project/metadata/gen/dmq/metadata/v1"
	"github.com/dmq-project/metadata/rpc/rpctest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestTLSClusterOfProcesses: three dmqd processes configured by YAML with
// security.tls, found by a services.json of http:// URLs, elect a leader
// over mutual TLS and serve clients over TLS only; the plaintext warning
// is gone from their logs.
func TestTLSClusterOfProcesses(t *testing.T) {
	bin := dmqdBinary(t)
	ca := rpctest.NewCA(t, "cluster")
	dir := t.TempDir()
	ports := []int{freePort(t), freePort(t), freePort(t)}
	var entries []string
	for i, port := range ports {
		entries = append(entries, fmt.Sprintf(`{"id":%d,"host":"127.0.0.1","port":%d,"url":"http://127.0.0.1:%d"}`, i+1, port, port))
	}
	services := filepath.Join(dir, "services.json")
	require.NoError(t, os.WriteFile(services, []byte(`{"services":{"metadata-services":[`+strings.Join(entries, ",")+`]}}`), 0o644))

	var logs []*bytes.Buffer
	var cmds []*exec.Cmd
	for i := range ports {
		pair := ca.Issue(t, fmt.Sprintf("controller-%d", i+1))
		config := filepath.Join(dir, fmt.Sprintf("dmqd-%d.yaml", i+1))
		require.NoError(t, os.WriteFile(config, []byte(fmt.Sprintf(`raft:
  election-timeout-ms: 500
  heartbeat-interval-ms: 50
security:
  tls:
    cert-file: %s
    key-file: %s
    peer-ca-file: %s
`, pair.CertFile, pair.KeyFile, ca.CertFile)), 0o644))
		cmd := exec.Command(bin, "--config", config, "--id", fmt.Sprint(i+1), "--services.config-path", services,
			"--metadata.data-dir", filepath.Join(dir, fmt.Sprint("node-", i+1)))
		var log bytes.Buffer
		cmd.Stderr = &log
		require.NoError(t, cmd.Start())
		logs, cmds = append(logs, &log), append(cmds, cmd)
		t.Cleanup(func() {
			if cmd.ProcessState == nil {
				_ = cmd.Process.Kill()
				_ = cmd.Wait()
			}
		})
	}

	var endpoints []string
	for _, port := range ports {
		endpoints = append(endpoints, fmt.Sprintf("http://127.0.0.1:%d", port))
	}
	c, err := client.New(client.Config{Endpoints: endpoints, TLS: ca.ClientTLS(t, rpctest.KeyPair{})})
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, err = c.RegisterBroker(ctx, &metadatav1.RegisterBrokerRequest{Id: 1, Host: "localhost", Port: 9092})
	require.NoError(t, err, "a leader elected over mutual TLS commits")
	_, err = c.CreateTopic(ctx, &metadatav1.CreateTopicRequest{Name: "secure", Partitions: 3})
	require.NoError(t, err)
	quorum, err := c.DescribeQuorum(ctx)
	require.NoError(t, err)
	require.Len(t, quorum.GetMembers(), 3)
	require.Eventually(t, func() bool {
		quorum, err = c.DescribeQuorum(ctx)
		if err != nil {
			return false
		}
		for _, m := range quorum.GetMembers() {
			if m.GetMatchIndex() < quorum.GetCommitIndex() {
				return false
			}
		}
		return true
	}, 10*time.Second, 50*time.Millisecond, "every controller replicates over mutual TLS")

	// Go's TLS server answers a cleartext request with 400 at most.
	if resp, err := http.Get(endpoints[0] + "/api/v1/metadata/topics"); err == nil {
		_ = resp.Body.Close()
		require.Equal(t, http.StatusBadRequest, resp.StatusCode, "no cleartext listener")
	}

	for i, cmd := range cmds {
		require.NoError(t, cmd.Process.Signal(syscall.SIGTERM))
		require.NoError(t, cmd.Wait())
		assert.Contains(t, logs[i].String(), `"tls":true`)
		assert.NotContains(t, logs[i].String(), "plaintext", "controller %d", i+1)
	}
}
