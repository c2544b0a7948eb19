package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
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

func TestLoadConfigPrecedence(t *testing.T) {
	dir := t.TempDir()
	seedYAML := `server:
  port: 8080

metadata:
  cluster-id: "dmq-cluster-1"
  data-dir: ./data/metadata

raft:
  election-timeout-ms: 5000
  heartbeat-interval-ms: 1000
  max-log-entries: 1000

replication:
  default-replication-factor: 1
  min-ISR: 1

services:
  config-path: config/services.json
  heartbeat-timeout-ms: 30000
`
	path := filepath.Join(dir, "application.yml")
	require.NoError(t, os.WriteFile(path, []byte(seedYAML), 0o644))

	cfg, err := loadConfig([]string{"--config", path}, func(string) string { return "" })
	require.NoError(t, err, "the seed's configuration file is accepted as it is")
	assert.Equal(t, 5000, cfg.Raft.ElectionTimeoutMs)
	assert.Equal(t, 100*time.Millisecond, cfg.tick(), "ten Raft ticks per heartbeat")
	assert.Equal(t, 10, cfg.ticksPerHeartbeat())
	assert.Equal(t, 5*time.Second, time.Duration(cfg.electionTicks())*cfg.tick(), "the election timeout is kept in time")
	assert.Equal(t, 5*time.Second, time.Duration(cfg.requestTimeoutTicks())*cfg.tick(), "so is the request timeout")

	env := map[string]string{"DMQ_SERVER_PORT": "9000", "DMQ_RAFT_MAX_LOG_ENTRIES": "50"}
	cfg, err = loadConfig([]string{"--config", path, "--server.port", "9100"}, func(k string) string { return env[k] })
	require.NoError(t, err)
	assert.Equal(t, 9100, cfg.Server.Port, "flags beat the environment")
	assert.EqualValues(t, 50, cfg.Raft.MaxLogEntries, "the environment beats the file")

	cfg, err = loadConfig(nil, func(string) string { return "" })
	require.NoError(t, err)
	assert.Equal(t, 8080, cfg.Server.Port)
	assert.Equal(t, "./data/metadata", cfg.Metadata.DataDir)

	for _, bad := range [][]string{
		{"--server.port", "0"},
		{"--server.port", "http"},
		{"--raft.election-timeout-ms", "100", "--raft.heartbeat-interval-ms", "100"},
		{"--metadata.cluster-id", ""},
	} {
		_, err := loadConfig(bad, func(string) string { return "" })
		if bad[0] == "--metadata.cluster-id" {
			// An empty flag keeps the default: not an error.
			assert.NoError(t, err)
			continue
		}
		assert.Error(t, err, "%v", bad)
	}
	require.NoError(t, os.WriteFile(path, []byte("server:\n  prot: 1\n"), 0o644))
	_, err = loadConfig([]string{"--config", path}, func(string) string { return "" })
	assert.ErrorContains(t, err, "prot", "a misspelt key is an error, not a silent default")
}

func TestLoadServices(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "services.json")
	require.NoError(t, os.WriteFile(path, []byte(`{"services":{
  "metadata-services":[{"id":1,"host":"localhost","port":9091,"url":"http://localhost:9091"},{"id":2,"host":"localhost","port":9092}],
  "storage-services":[{"id":1,"host":"localhost","port":8081,"url":"http://localhost:8081"}]}}`), 0o644))
	s, err := loadServices(path, true)
	require.NoError(t, err)
	require.Len(t, s.Services.MetadataServices, 2)
	assert.Equal(t, "http://localhost:9092", s.Services.MetadataServices[1].Endpoint())

	cfg := defaultConfig()
	cfg.Metadata.NodeID = 2
	peers, self, err := resolvePeers(&cfg, s)
	require.NoError(t, err)
	assert.EqualValues(t, 2, self)
	assert.Len(t, peers, 2)
	assert.Equal(t, 9092, cfg.Server.Port, "the port comes from this controller's entry")

	cfg = defaultConfig()
	_, _, err = resolvePeers(&cfg, s)
	assert.ErrorContains(t, err, "--id")

	missing, err := loadServices(filepath.Join(dir, "absent.json"), false)
	assert.NoError(t, err)
	assert.Nil(t, missing)
	_, err = loadServices(filepath.Join(dir, "absent.json"), true)
	assert.Error(t, err, "a services file named explicitly must exist")

	// The Java deployment's own file works as it is; a push protocol is
	// one of two; a misspelt key is still an error.
	for _, c := range []struct{ file, err string }{
		{`{"services":{"metadata-services":[{"id":1,"url":"http://a:1"}],"storage-services":[{"id":101,"url":"http://s:1","pairedMetadataServiceId":1,"protocol":"seed-rest"}]},
		  "controller":{"electionTimeoutMs":5000},"metadata":{"sync":{"syncTimeoutMs":30000}},"jwt":{"secret":"s","algorithm":"HS256"}}`, ""},
		{`{"services":{"storage-services":[{"id":1,"url":"http://s:1","protocol":"grpc"}]}}`, `protocol "grpc"`},
		{`{"services":{"metadata-services":[{"id":1,"url":"http://a:1","protocol":"seed-rest"}]}}`, "storage services only"},
		{`{"services":{"storage-services":[{"id":1,"url":"http://s:1","protocoll":"seed-rest"}]}}`, "protocoll"},
	} {
		require.NoError(t, os.WriteFile(path, []byte(c.file), 0o644))
		_, err := loadServices(path, true)
		if c.err == "" {
			assert.NoError(t, err)
		} else {
			assert.ErrorContains(t, err, c.err)
		}
	}
}

// dmqdBinary builds dmqd once for the process tests.
func dmqdBinary(t *testing.T) string {
	bin := filepath.Join(t.TempDir(), "dmqd")
	out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput()
	require.NoError(t, err, "%s", out)
	return bin
}

func freePort(t *testing.T) int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func startDmqd(t *testing.T, bin, dataDir string, port int) *exec.Cmd {
	cmd := exec.Command(bin, "--server.port", fmt.Sprint(port), "--metadata.data-dir", dataDir, "--services.config-path", filepath.Join(dataDir, "none.json"))
	var logs bytes.Buffer
	cmd.Stderr = &logs
	require.NoError(t, cmd.Start())
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		}
	})
	return cmd
}

func curl(t *testing.T, method, url, body string) (int, map[string]any) {
	var reader io.Reader
	if body != "" {
		reader = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, url, reader)
	require.NoError(t, err)
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, nil
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	var out map[string]any
	_ = json.Unmarshal(data, &out)
	return resp.StatusCode, out
}

// TestSeedCurlExamplesAgainstTheBinary runs the seed's curl examples,
// verbatim, against a real dmqd process, stops it with SIGTERM, restarts it
// and finds the metadata still there.
func TestSeedCurlExamplesAgainstTheBinary(t *testing.T) {
	bin := dmqdBinary(t)
	dataDir := t.TempDir()
	port := freePort(t)
	base := fmt.Sprintf("http://127.0.0.1:%d", port)
	// The services file named does not exist: a missing explicit file is an
	// error, so point at none and expect the failure first.
	cmd := startDmqd(t, bin, dataDir, port)
	err := cmd.Wait()
	require.Error(t, err, "an explicitly named services file that does not exist stops dmqd")

	require.NoError(t, os.WriteFile(filepath.Join(dataDir, "none.json"), []byte(`{"services":{}}`), 0o644))
	cmd = startDmqd(t, bin, dataDir, port)
	require.Eventually(t, func() bool {
		status, _ := curl(t, "POST", base+"/api/v1/metadata/brokers", `{
    "id": 1,
    "host": "localhost",
    "port": 8082,
    "rack": "rack1"
  }`)
		return status == http.StatusOK
	}, 20*time.Second, 50*time.Millisecond)
	status, body := curl(t, "POST", base+"/api/v1/metadata/brokers", `{
    "id": 1,
    "host": "localhost",
    "port": 8082,
    "rack": "rack1"
  }`)
	require.Equal(t, http.StatusOK, status, "registering again with the same endpoint is idempotent")
	assert.Equal(t, map[string]any{"id": float64(1), "host": "localhost", "port": float64(8082), "rack": "rack1",
		"isAlive": true, "brokerEpoch": body["broker"].(map[string]any)["brokerEpoch"],
		"fenced": false, "inControlledShutdown": false, "incarnationId": ""}, body["broker"])
	assert.Equal(t, true, body["success"])
	assert.Equal(t, "NONE", body["errorCode"])

	status, body = curl(t, "POST", base+"/api/v1/metadata/topics", `{
    "name": "test-topic",
    "partitions": 3,
    "replicationFactor": 1
  }`)
	require.Equal(t, http.StatusOK, status, "%v", body)
	status, body = curl(t, "GET", base+"/api/v1/metadata/topics/test-topic/partitions", "")
	require.Equal(t, http.StatusOK, status)
	assert.Len(t, body["partitions"], 3)
	status, body = curl(t, "POST", base+"/api/v1/metadata/storage-heartbeat", `{
    "serviceId": "storage-1",
    "metadataVersion": 123456789,
    "partitionCount": 10,
    "isAlive": true
  }`)
	require.Equal(t, http.StatusOK, status)
	assert.Equal(t, true, body["registered"])

	require.NoError(t, cmd.Process.Signal(syscall.SIGTERM))
	require.NoError(t, cmd.Wait(), "SIGTERM is a clean shutdown")

	cmd = startDmqd(t, bin, dataDir, port)
	require.Eventually(t, func() bool {
		status, body = curl(t, "GET", base+"/api/v1/metadata/topics/test-topic/partitions", "")
		return status == http.StatusOK
	}, 20*time.Second, 50*time.Millisecond, "the topic survives a restart")
	assert.Len(t, body["partitions"], 3)
	require.NoError(t, cmd.Process.Signal(syscall.SIGTERM))
	require.NoError(t, cmd.Wait())
}

// TestInitialClusterState: how an empty data directory starts is a key
// like the others (file, environment, flag), defaults to the founding
// handshake, and refuses a value it does not know or one that
// contradicts metadata.join.
func TestInitialClusterState(t *testing.T) {
	none := func(string) string { return "" }
	cfg, err := loadConfig(nil, none)
	require.NoError(t, err)
	assert.Equal(t, "auto", cfg.Metadata.InitialClusterState)

	env := map[string]string{"DMQ_METADATA_INITIAL_CLUSTER_STATE": "existing"}
	cfg, err = loadConfig(nil, func(k string) string { return env[k] })
	require.NoError(t, err)
	assert.Equal(t, "existing", cfg.Metadata.InitialClusterState)
	cfg, err = loadConfig([]string{"--metadata.initial-cluster-state", "new"}, func(k string) string { return env[k] })
	require.NoError(t, err)
	assert.Equal(t, "new", cfg.Metadata.InitialClusterState, "the flag wins over the environment")

	_, err = loadConfig([]string{"--metadata.initial-cluster-state", "fresh"}, none)
	assert.ErrorContains(t, err, "auto, new or existing")
	_, err = loadConfig([]string{"--metadata.initial-cluster-state", "new", "--metadata.join", "true"}, none)
	assert.ErrorContains(t, err, "contradict")
}

// TestFoundingControllerWaitsForItsPeers: a dmqd process whose founding
// peer never starts does not found a cluster on its own: it tells who it
// is from its first moment, answers the API "starting", logs whom it
// waits for, and a SIGTERM ends the wait cleanly.
func TestFoundingControllerWaitsForItsPeers(t *testing.T) {
	bin := dmqdBinary(t)
	dir := t.TempDir()
	port, absent := freePort(t), freePort(t)
	services := filepath.Join(dir, "services.json")
	require.NoError(t, os.WriteFile(services, []byte(fmt.Sprintf(`{"services":{"metadata-services":[
		{"id":1,"host":"127.0.0.1","port":%d},{"id":2,"host":"127.0.0.1","port":%d}]}}`, port, absent)), 0o644))
	cmd := exec.Command(bin, "--id", "1", "--services.config-path", services, "--server.host", "127.0.0.1",
		"--metadata.data-dir", filepath.Join(dir, "node-1"))
	var logs bytes.Buffer
	cmd.Stderr = &logs
	require.NoError(t, cmd.Start())
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		}
	})
	base := fmt.Sprintf("http://127.0.0.1:%d", port)
	var identity map[string]any
	require.Eventually(t, func() bool {
		var status int
		status, identity = curl(t, "GET", base+"/internal/v1/identity", "")
		return status == http.StatusOK
	}, 20*time.Second, 50*time.Millisecond)
	assert.Equal(t, "formatted", identity["state"])
	assert.Equal(t, "dmq-cluster-1", identity["clusterId"])
	status, _ := curl(t, "GET", base+"/api/v1/metadata/quorum", "")
	assert.Equal(t, http.StatusServiceUnavailable, status, "the API waits for the founding")

	require.NoError(t, cmd.Process.Signal(syscall.SIGTERM))
	require.NoError(t, cmd.Wait(), "SIGTERM ends the wait cleanly")
	assert.Contains(t, logs.String(), "waiting for the founding peers")
	assert.Contains(t, logs.String(), "2 (", "the log names the peer it waits for")
	assert.NotContains(t, logs.String(), "founding the cluster\"", "it never founded")
}

// Keeping no rotated audit log would mean keeping them all (the rotation
// library reads 0 so): refused (found by review).
func TestAuditLogKeepMustBePositive(t *testing.T) {
	_, err := loadConfig([]string{"--security.audit-log-keep", "0"}, func(string) string { return "" })
	require.Error(t, err)
	assert.Contains(t, err.Error(), "security.audit-log-keep")
}
