package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/dmq-project/metadata/client"
	"github.com/dmq-project/metadata/node"
	"github.com/dmq-project/metadata/rpc/rpctest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.yaml.in/yaml/v3"
)

type ctl struct {
	t         *testing.T
	endpoints string
}

// run executes dmqctl in-process and returns stdout, stderr, exit code.
func (c ctl) run(args ...string) (string, string, int) {
	var stdout, stderr bytes.Buffer
	code := execute(append([]string{"--endpoints", c.endpoints, "--timeout", "20s"}, args...), &stdout, &stderr,
		func(string) string { return "" })
	return stdout.String(), stderr.String(), code
}

func (c ctl) ok(args ...string) string {
	c.t.Helper()
	out, errOut, code := c.run(args...)
	require.Equal(c.t, exitOK, code, "dmqctl %v: %s", args, errOut)
	return out
}

func (c ctl) json(args ...string) map[string]any {
	c.t.Helper()
	var v map[string]any
	out := c.ok(append(args, "-o", "json")...)
	require.NoError(c.t, json.Unmarshal([]byte(out), &v), out)
	return v
}

// lines splits a table into its rows of fields.
func lines(out string) [][]string {
	var rows [][]string
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		rows = append(rows, strings.Fields(line))
	}
	return rows
}

func TestEveryCommand(t *testing.T) {
	cluster := rpctest.Start(t, 3, nil)
	cluster.WaitLeader(t)
	c := ctl{t: t, endpoints: strings.Join(cluster.URLs(), ",")}

	// Brokers.
	out := c.ok("broker", "register", "--id", "1", "--host", "localhost", "--port", "9092", "--rack", "r1")
	rows := lines(out)
	require.Len(t, rows, 2)
	assert.Equal(t, []string{"ID", "HOST", "PORT", "RACK", "STATE", "EPOCH"}, rows[0])
	assert.Equal(t, []string{"1", "localhost", "9092", "r1", "alive"}, rows[1][:5])
	c.ok("broker", "register", "--id", "2", "--host", "localhost", "--port", "9093")
	rows = lines(c.ok("broker", "list"))
	assert.Len(t, rows, 3)
	desc := c.json("broker", "describe", "2")
	assert.Equal(t, float64(9093), desc["broker"].(map[string]any)["port"])

	// Topics.
	rows = lines(c.ok("topic", "create", "orders", "--partitions", "3", "--replication-factor", "2", "--config", "retention.ms=1000"))
	assert.Equal(t, []string{"NAME", "ID", "PARTITIONS", "RF", "MIN-ISR", "RETENTION-MS"}, rows[0])
	assert.Equal(t, "orders", rows[1][0])
	assert.Equal(t, []string{"3", "2", "1", "1000"}, rows[1][2:])
	created := c.json("topic", "describe", "orders")
	partitions := created["partitions"].([]any)
	require.Len(t, partitions, 3)
	for _, p := range partitions {
		assert.Len(t, p.(map[string]any)["replicas"], 2)
	}
	rows = lines(c.ok("topic", "configs", "orders"))
	assert.Equal(t, []string{"KEY", "VALUE"}, rows[0])
	assert.Contains(t, rows, []string{"retention.ms", "1000"}, "the value set at creation")
	assert.Contains(t, rows, []string{"compression.type", "producer"}, "a default")
	assert.Len(t, rows, 7, "a header and the six topic configs")
	assert.Equal(t, "1000", c.json("topic", "configs", "orders")["retentionMs"])
	rows = lines(c.ok("topic", "add-partitions", "orders", "--count", "5"))
	assert.Equal(t, "5", rows[1][2])
	rows = lines(c.ok("topic", "describe", "orders"))
	assert.Len(t, rows, 6, "a header and five partitions")
	c.ok("topic", "create", "audit", "-p", "1")
	listed := c.json("topic", "list")
	assert.Len(t, listed["topics"], 2)
	var y map[string]any
	require.NoError(t, yaml.Unmarshal([]byte(c.ok("topic", "list", "-o", "yaml")), &y))
	assert.Len(t, y["topics"], 2)
	c.ok("topic", "delete", "audit")

	// Errors: exit codes scripts can use, and messages that say what.
	_, errOut, code := c.run("topic", "describe", "audit")
	assert.Equal(t, exitNotFound, code)
	assert.Contains(t, errOut, "UNKNOWN_TOPIC")
	_, errOut, code = c.run("topic", "create", "orders")
	assert.Equal(t, exitConflict, code)
	assert.Contains(t, errOut, "TOPIC_ALREADY_EXISTS")
	_, _, code = c.run("topic", "create", "bad name")
	assert.Equal(t, exitInvalid, code)
	_, _, code = c.run("topic", "create")
	assert.Equal(t, exitUsage, code)
	_, _, code = c.run("broker", "describe", "zero")
	assert.Equal(t, exitUsage, code)
	_, _, code = c.run("topic", "list", "-o", "xml")
	assert.Equal(t, exitUsage, code)

	// Cluster metadata and watch.
	rows = lines(c.ok("cluster", "metadata"))
	assert.Equal(t, []string{"2", "1", "5"}, rows[1][3:], "brokers, topics, partitions")
	meta := c.json("cluster", "metadata")
	assert.NotEmpty(t, meta["state"].(map[string]any)["metadataVersion"])
	var watched bytes.Buffer
	code = execute([]string{"--endpoints", c.endpoints, "--timeout", "1s", "watch"}, &watched, &bytes.Buffer{}, func(string) string { return "" })
	assert.Equal(t, exitOK, code)
	assert.Contains(t, watched.String(), "full", "a watch from version 0 starts with the full state")

	// Quorum.
	rows = lines(c.ok("quorum", "describe"))
	require.Len(t, rows, 4)
	leaders := 0
	for _, row := range rows[1:] {
		if row[3] == "true" {
			leaders++
		}
	}
	assert.Equal(t, 1, leaders)
	rows = lines(c.ok("quorum", "snapshot"))
	assert.Equal(t, []string{"INDEX", "BYTES"}, rows[0])
	// A controller is added with its data directory, which the leader asks
	// it for: one that is not running is not added.
	_, stderr, code := c.run("quorum", "add-learner", "9", "--url", "http://127.0.0.1:1")
	assert.NotZero(t, code)
	assert.Contains(t, stderr, "must be running to be added")
	_, _, code = c.run("quorum", "promote", "2")
	assert.Equal(t, exitInvalid, code, "only a learner can be promoted")
	_, _, code = c.run("quorum", "remove-voter", "9")
	assert.Equal(t, exitInvalid, code, "9 is not a member")
	rows = lines(c.ok("quorum", "transfer-leader"))
	assert.Equal(t, []string{"LEADER", "TERM"}, rows[0])
	c.ok("broker", "unregister", "2")
	_, _, code = c.run("broker", "describe", "2")
	assert.Equal(t, exitNotFound, code)
}

func TestNoClusterSaysWhatToDo(t *testing.T) {
	var stdout, stderr bytes.Buffer
	code := execute([]string{"--timeout", "300ms", "topic", "list"}, &stdout, &stderr,
		func(key string) string {
			if key == "DMQ_ENDPOINTS" {
				return "http://127.0.0.1:1,http://127.0.0.1:2,http://127.0.0.1:3"
			}
			return ""
		})
	assert.Equal(t, exitUnavailable, code)
	assert.Contains(t, stderr.String(), "no leader among 3 endpoints")
	assert.Contains(t, stderr.String(), "is the cluster up?")
}

func TestCompletion(t *testing.T) {
	var stdout bytes.Buffer
	code := execute([]string{"completion", "bash"}, &stdout, &bytes.Buffer{}, func(string) string { return "" })
	assert.Equal(t, exitOK, code)
	assert.Contains(t, stdout.String(), "dmqctl")
}

// TestTLSFlags: dmqctl dials a TLS cluster with --tls-ca-file (or its
// environment variable), presents a client certificate when told, and
// refuses a server it cannot verify.
func TestTLSFlags(t *testing.T) {
	ca := rpctest.NewCA(t, "cluster")
	operator := ca.Issue(t, "operator")
	cluster := rpctest.Start(t, 1, func(c *rpctest.Controller) {
		c.TLS = ca.ControllerTLS(t, "controller-1")
		c.TLS.RequireClientCert = true
		c.ProbeTLS = ca.ClientTLS(t, operator)
	})
	cluster.WaitLeader(t)
	run := func(env map[string]string, args ...string) (string, int) {
		var stdout, stderr bytes.Buffer
		code := execute(append([]string{"--endpoints", "http://" + cluster[0].Addr, "--timeout", "3s"}, args...), &stdout, &stderr,
			func(k string) string { return env[k] })
		return stdout.String() + stderr.String(), code
	}
	out, code := run(nil, "--tls-ca-file", ca.CertFile, "--tls-cert-file", operator.CertFile, "--tls-key-file", operator.KeyFile,
		"broker", "register", "--id", "1", "--host", "localhost", "--port", "9092")
	require.Equal(t, exitOK, code, out)
	out, code = run(map[string]string{"DMQ_TLS_CA_FILE": ca.CertFile, "DMQ_TLS_CERT_FILE": operator.CertFile, "DMQ_TLS_KEY_FILE": operator.KeyFile},
		"broker", "list")
	require.Equal(t, exitOK, code, out)
	assert.Contains(t, out, "localhost")

	out, code = run(nil, "--tls-ca-file", ca.CertFile, "broker", "list")
	assert.Equal(t, exitUnavailable, code, "no client certificate: %s", out)
	out, code = run(nil, "--tls-cert-file", operator.CertFile, "--tls-key-file", operator.KeyFile, "broker", "list")
	assert.Equal(t, exitUnavailable, code, "the system's roots do not know the cluster's CA: %s", out)
	assert.Contains(t, out, "certificate")
	out, code = run(nil, "--tls-cert-file", operator.CertFile, "broker", "list")
	assert.Equal(t, exitUsage, code, "a certificate without its key: %s", out)
}

// dmqctl version prints its own build and a controller's, read from the
// controller's /version.
func TestVersion(t *testing.T) {
	cluster := rpctest.Start(t, 1, nil)
	cluster.WaitLeader(t)
	c := ctl{t: t, endpoints: cluster.URLs()[0]}
	out := c.ok("version")
	rows := strings.Split(strings.TrimSpace(out), "\n")
	require.Len(t, rows, 2, out)
	assert.Regexp(t, `^client: \S+ .*go1\.`, rows[0])
	assert.Regexp(t, `^server: \S+ .*go1\..* \(`+regexp.QuoteMeta(cluster.URLs()[0])+`\)$`, rows[1])

	none := ctl{t: t, endpoints: "http://127.0.0.1:1"}
	out, _, code := none.run("version")
	assert.Equal(t, exitUnavailable, code)
	assert.Contains(t, out, "client: ", "the client's version is printed even when no controller answers")
}

// storage-agent refuses a broker id it cannot heartbeat for at once, with
// the usage exit code, instead of serving and retrying (found by review).
func TestStorageAgentRefusesAnInvalidID(t *testing.T) {
	c := ctl{t: t, endpoints: "http://127.0.0.1:1"}
	_, errOut, code := c.run("storage-agent", "--id", "0", "--listen", "127.0.0.1:0")
	assert.Equal(t, exitUsage, code, errOut)
	assert.Contains(t, errOut, "broker id 0")
}

// Findings of an operator's first hour, each fixed:
//   - topic list printed 0 partitions for every topic;
//   - watch repeated its header for every event and printed 0 partitions
//     for a full state;
//   - quorum describe from a follower printed MATCH 0 / LAG 0 for everyone,
//     which looks healthy.
func TestOperatorFindings(t *testing.T) {
	cluster := rpctest.Start(t, 3, nil)
	leader := cluster.WaitLeader(t)
	c := ctl{t: t, endpoints: strings.Join(cluster.URLs(), ",")}
	c.ok("broker", "register", "--id", "1", "--host", "localhost", "--port", "9092")
	c.ok("topic", "create", "orders", "--partitions", "3")
	c.ok("topic", "create", "audit", "--partitions", "2")

	rows := lines(c.ok("topic", "list"))
	require.Len(t, rows, 3)
	assert.Equal(t, "PARTITIONS", rows[0][2])
	assert.Equal(t, []string{"audit", "2"}, []string{rows[1][0], rows[1][2]})
	assert.Equal(t, []string{"orders", "3"}, []string{rows[2][0], rows[2][2]})

	var watched bytes.Buffer
	code := execute([]string{"--endpoints", c.endpoints, "--timeout", "1s", "watch"}, &watched, &bytes.Buffer{}, func(string) string { return "" })
	require.Equal(t, exitOK, code)
	watchRows := lines(watched.String())
	assert.Equal(t, 1, strings.Count(watched.String(), "KIND"), "one header for the stream:\n%s", watched.String())
	require.GreaterOrEqual(t, len(watchRows), 2)
	assert.Equal(t, "full", watchRows[1][0])
	assert.Equal(t, "5", watchRows[1][6], "a full state's partitions: %v", watchRows[1])

	// A follower says it does not know the figures...
	var follower string
	var followerID uint64
	for _, tc := range cluster {
		if tc.ID != leader.ID {
			follower, followerID = tc.URL(), tc.ID
		}
	}
	cl, err := client.New(client.Config{Endpoints: []string{follower}})
	require.NoError(t, err)
	own, err := cl.DescribeQuorumAt(context.Background(), follower)
	require.NoError(t, err)
	assert.False(t, own.GetProgressKnown())
	assert.Equal(t, followerID, own.GetAnsweredBy())
	// ...and dmqctl, given the follower alone, asks the leader for them.
	f := ctl{t: t, endpoints: follower}
	described := f.json("quorum", "describe")
	assert.Equal(t, true, described["progressKnown"], "the leader's view, with match and lag: %v", described)
	rows = lines(f.ok("quorum", "describe"))
	for _, row := range rows[1:] {
		assert.NotEqual(t, "0", row[4], "a member with match index 0 in a running quorum: %v", row)
	}
}

// A stand-in storage service whose push URL the controllers do not know
// says so, instead of waiting silently for pushes that never come.
func TestStorageAgentSaysWhenItGetsNoPushes(t *testing.T) {
	cluster := rpctest.Start(t, 1, nil) // no push URLs
	cluster.WaitLeader(t)
	c := ctl{t: t, endpoints: cluster.URLs()[0]}
	out, errOut, code := c.run("storage-agent", "--id", "1", "--listen", "127.0.0.1:0", "--interval", "50ms", "--run-for", "3s")
	require.Equal(t, exitOK, code, errOut)
	assert.Contains(t, out, "the controllers have no push URL for storage service 1")
	assert.Equal(t, 1, strings.Count(out, "no push URL"), "said once")
}

// With --watch, a storage agent the controllers cannot push to follows
// their metadata on the watch stream instead.
func TestStorageAgentWatchesWithoutPushes(t *testing.T) {
	cluster := rpctest.Start(t, 1, nil) // no push URLs
	cluster.WaitLeader(t)
	c := ctl{t: t, endpoints: cluster.URLs()[0]}
	out, errOut, code := c.run("storage-agent", "--id", "1", "--listen", "127.0.0.1:0", "--interval", "50ms", "--run-for", "2s", "--watch")
	require.Equal(t, exitOK, code, errOut)
	assert.Contains(t, out, "watching the controllers' metadata")
	assert.Regexp(t, `full update: version \d+, 0 brokers, 0 topics`, out)
	assert.Regexp(t, `delta update: version \d+, 1 brokers, 0 topics`, out, "its own registration arrives as a delta")
	assert.NotContains(t, out, "no push URL")
}

// Shell completion offers the cluster's topic names and broker ids.
func TestCompletionNamesTopicsAndBrokers(t *testing.T) {
	cluster := rpctest.Start(t, 1, nil)
	cluster.WaitLeader(t)
	c := ctl{t: t, endpoints: cluster.URLs()[0]}
	c.ok("broker", "register", "--id", "7", "--host", "localhost", "--port", "9092")
	c.ok("topic", "create", "orders", "--partitions", "1")
	c.ok("topic", "create", "audit", "--partitions", "1")

	out := c.ok("__complete", "topic", "describe", "or")
	assert.Contains(t, out, "orders")
	assert.NotContains(t, out, "audit")
	out = c.ok("__complete", "topic", "delete", "")
	assert.Contains(t, out, "orders")
	assert.Contains(t, out, "audit")
	out = c.ok("__complete", "broker", "describe", "")
	assert.Contains(t, out, "7\tlocalhost:9092")
}

// Commands an operator of Kafka or etcd reaches for: the cluster id, and
// electing preferred leaders (the API had it; dmqctl did not).
func TestClusterIDAndElectLeaders(t *testing.T) {
	cluster := rpctest.Start(t, 1, nil)
	cluster.WaitLeader(t)
	c := ctl{t: t, endpoints: cluster.URLs()[0]}
	rows := lines(c.ok("cluster", "id"))
	require.Len(t, rows, 2)
	assert.Equal(t, "CLUSTER-ID", rows[0][0])
	assert.Equal(t, "test-cluster", rows[1][0])

	c.ok("broker", "register", "--id", "1", "--host", "localhost", "--port", "9092")
	c.ok("topic", "create", "orders", "--partitions", "2")
	rows = lines(c.ok("topic", "elect-leaders"))
	assert.Equal(t, []string{"ELECTED", "VERSION"}, rows[0])
	assert.Equal(t, "0", rows[1][0], "every leader is preferred already")
	c.ok("topic", "elect-leaders", "orders", "0", "1")
	_, _, code := c.run("topic", "elect-leaders", "orders", "x")
	assert.Equal(t, exitUsage, code)
	_, errOut, code := c.run("topic", "elect-leaders", "missing")
	assert.Equal(t, exitNotFound, code, errOut)
}

// snapshot save writes a whole backup file (for dmqd restore).
func TestSnapshotSave(t *testing.T) {
	cluster := rpctest.Start(t, 3, nil)
	cluster.WaitLeader(t)
	c := ctl{t: t, endpoints: strings.Join(cluster.URLs(), ",")}
	c.ok("broker", "register", "--id", "1", "--host", "localhost", "--port", "9092")
	path := filepath.Join(t.TempDir(), "backup.dmq")
	out := c.ok("snapshot", "save", path)
	assert.Contains(t, out, "saved a backup of")
	file, err := os.ReadFile(path)
	require.NoError(t, err)
	backup, err := node.DecodeBackup(file)
	require.NoError(t, err)
	assert.Positive(t, backup.Index)
	_, err = os.Stat(path + ".part")
	assert.True(t, os.IsNotExist(err), "no partial file left behind")
}

// storage-agent --interval 0 crashed (a ticker of 0); it is a usage error.
func TestStorageAgentRefusesAZeroInterval(t *testing.T) {
	c := ctl{t: t, endpoints: "http://127.0.0.1:1"}
	_, errOut, code := c.run("storage-agent", "--id", "1", "--listen", "127.0.0.1:0", "--interval", "0")
	assert.Equal(t, exitUsage, code, errOut)
	assert.Contains(t, errOut, "interval")
}
