package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/dmq-project/metadata/rpc/rpctest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestTopicBatches(t *testing.T) {
	cluster := rpctest.Start(t, 1, nil)
	cluster.WaitLeader(t)
	c := ctl{t: t, endpoints: strings.Join(cluster.URLs(), ",")}
	c.ok("broker", "register", "--id", "1", "--host", "localhost", "--port", "9092")
	c.ok("topic", "create", "taken")

	file := filepath.Join(t.TempDir(), "topics.yaml")
	require.NoError(t, os.WriteFile(file, []byte(`
topics:
  - name: orders
    partitions: 3
    configs: {retention.ms: 86400000, unclean.leader.election.enable: true}
  - name: taken
    partitions: 1
  - name: wide
    partitions: 1
    replicationFactor: 2
`), 0o644))

	// A dry run: what would happen, and nothing happens.
	out, _, code := c.run("topic", "create-batch", "--file", file, "--validate-only")
	assert.Equal(t, exitConflict, code, "a topic would fail: the first failure's exit code")
	rows := lines(out)
	assert.Equal(t, []string{"NAME", "RESULT", "ID", "PARTITIONS", "RF", "MESSAGE"}, rows[0])
	assert.Equal(t, []string{"orders", "NONE", "3", "1"}, rows[1])
	assert.Equal(t, []string{"taken", "TOPIC_ALREADY_EXISTS"}, rows[2][:2])
	assert.Equal(t, []string{"wide", "INVALID_REPLICATION_FACTOR"}, rows[3][:2])
	_, _, code = c.run("topic", "describe", "orders")
	assert.Equal(t, exitNotFound, code, "a dry run created a topic")

	// Atomic: refused as a whole; the table still says why.
	out, errOut, code := c.run("topic", "create-batch", "--file", file, "--atomic")
	assert.Equal(t, exitConflict, code)
	assert.Contains(t, errOut, "atomic batch of 3 topics refused")
	assert.Equal(t, []string{"orders", "BATCH_ABORTED"}, lines(out)[1][:2])
	_, _, code = c.run("topic", "describe", "orders")
	assert.Equal(t, exitNotFound, code, "an atomic batch applied in part")

	// Per topic, from stdin: the valid one is created with its configs.
	stdin = strings.NewReader(`{"topics":[{"name":"orders","partitions":3,"configs":{"retention.ms":"86400000"}},{"name":"taken","partitions":1}]}`)
	defer func() { stdin = os.Stdin }()
	out, errOut, code = c.run("topic", "create-batch", "-f", "-")
	assert.Equal(t, exitConflict, code)
	assert.Contains(t, errOut, `1 of 2 topics were not created; the first, "taken"`)
	assert.Len(t, lines(out)[1][2], 22, "the created topic's id")
	assert.Contains(t, lines(c.ok("topic", "configs", "orders")), []string{"retention.ms", "86400000"})

	rows = lines(c.ok("topic", "delete-batch", "orders", "taken"))
	assert.Equal(t, []string{"orders", "NONE"}, rows[1][:2])
	assert.Equal(t, []string{"taken", "NONE"}, rows[2][:2])
	_, _, code = c.run("topic", "delete-batch", "orders")
	assert.Equal(t, exitNotFound, code)

	// A file that is not a batch is a usage error, naming what is wrong.
	require.NoError(t, os.WriteFile(file, []byte("topics:\n  - name: x\n    partitionz: 1\n"), 0o644))
	_, errOut, code = c.run("topic", "create-batch", "--file", file)
	assert.Equal(t, exitUsage, code)
	assert.Contains(t, errOut, "partitionz")
}

func TestConfigCommands(t *testing.T) {
	cluster := rpctest.Start(t, 1, nil)
	cluster.WaitLeader(t)
	c := ctl{t: t, endpoints: strings.Join(cluster.URLs(), ",")}
	c.ok("broker", "register", "--id", "1", "--host", "localhost", "--port", "9092")

	c.ok("config", "alter", "cluster", "--set", "compression.type=zstd", "--set", "retention.ms=3600000")
	rows := lines(c.ok("config", "describe", "cluster"))
	assert.Equal(t, []string{"KEY", "VALUE", "SOURCE", "DEFAULT"}, rows[0])
	assert.Contains(t, rows, []string{"compression.type", "zstd", "CLUSTER_DEFAULT_CONFIG", "false"})
	assert.Contains(t, rows, []string{"segment.bytes", "1073741824", "DEFAULT_CONFIG", "true"})

	c.ok("topic", "create", "orders", "--config", "retention.ms=1000")
	c.ok("config", "alter", "topic", "orders", "--set", "segment.bytes=1048576")
	rows = lines(c.ok("config", "describe", "topic", "orders"))
	assert.Contains(t, rows, []string{"compression.type", "zstd", "CLUSTER_DEFAULT_CONFIG", "true"})
	assert.Contains(t, rows, []string{"retention.ms", "1000", "TOPIC_CONFIG", "false"})
	assert.Contains(t, rows, []string{"segment.bytes", "1048576", "TOPIC_CONFIG", "false"})

	c.ok("config", "alter", "topic", "orders", "--delete", "retention.ms")
	assert.Contains(t, lines(c.ok("config", "describe", "topic", "orders")), []string{"retention.ms", "3600000", "CLUSTER_DEFAULT_CONFIG", "true"})

	_, errOut, code := c.run("config", "alter", "topic", "orders", "--set", "min.insync.replicas=2")
	assert.Equal(t, exitInvalid, code)
	assert.Contains(t, errOut, "INVALID_CONFIG")
	_, _, code = c.run("config", "alter", "topic", "missing", "--set", "retention.ms=1")
	assert.Equal(t, exitNotFound, code)
	_, _, code = c.run("config", "describe", "topic", "missing")
	assert.Equal(t, exitNotFound, code)
	_, _, code = c.run("config", "describe", "broker", "1")
	assert.Equal(t, exitUsage, code)
	_, _, code = c.run("config", "alter", "cluster")
	assert.Equal(t, exitUsage, code)
	c.ok("config", "alter", "topic", "orders", "--set", "retention.ms=5", "--validate-only")
	assert.Contains(t, lines(c.ok("config", "describe", "topic", "orders")), []string{"retention.ms", "3600000", "CLUSTER_DEFAULT_CONFIG", "true"})
}

// A reassignment through dmqctl: started, listed while in progress (no
// storage service reports the new replica caught up here), cancelled.
func TestPartitionReassignCommands(t *testing.T) {
	cluster := rpctest.Start(t, 1, nil)
	cluster.WaitLeader(t)
	c := ctl{t: t, endpoints: strings.Join(cluster.URLs(), ",")}
	for _, id := range []string{"1", "2"} {
		c.ok("broker", "register", "--id", id, "--host", "localhost", "--port", "909"+id)
	}
	c.ok("topic", "create", "orders", "--partitions", "1", "--replication-factor", "1")
	from := c.json("topic", "describe", "orders")["partitions"].([]any)[0].(map[string]any)["leader"].(float64)
	to := 3 - int(from)

	plan := filepath.Join(t.TempDir(), "plan.json")
	require.NoError(t, os.WriteFile(plan, []byte(fmt.Sprintf(`{"version":1,"partitions":[{"topic":"orders","partition":0,"replicas":[%d]}]}`, to)), 0o644))
	rows := lines(c.ok("partition", "reassign", "--file", plan))
	assert.Equal(t, []string{"TOPIC", "PARTITION", "RESULT", "MESSAGE"}, rows[0])
	assert.Equal(t, []string{"orders", "0", "NONE"}, rows[1])
	rows = lines(c.ok("partition", "reassignments"))
	require.Len(t, rows, 2, "one move in progress")
	assert.Equal(t, []string{"orders", "0", fmt.Sprintf("[%d,%d]", to, int(from)), fmt.Sprintf("[%d]", to), fmt.Sprintf("[%d]", int(from))}, rows[1])

	rows = lines(c.ok("partition", "reassign", "--file", plan, "--cancel"))
	assert.Equal(t, []string{"orders", "0", "NONE"}, rows[1])
	assert.Len(t, lines(c.ok("partition", "reassignments")), 1, "cancelled: none in progress")
	_, errOut, code := c.run("partition", "reassign", "--file", plan, "--cancel")
	assert.Equal(t, exitConflict, code)
	assert.Contains(t, errOut, "NO_REASSIGNMENT_IN_PROGRESS")
}

func TestRebalanceCommands(t *testing.T) {
	cluster := rpctest.Start(t, 1, nil)
	cluster.WaitLeader(t)
	c := ctl{t: t, endpoints: strings.Join(cluster.URLs(), ",")}
	c.ok("broker", "register", "--id", "1", "--host", "localhost", "--port", "9091")
	c.ok("topic", "create", "orders", "--partitions", "4", "--replication-factor", "1")
	c.ok("broker", "register", "--id", "2", "--host", "localhost", "--port", "9092")

	rows := lines(c.ok("rebalance", "--dry-run"))
	assert.Equal(t, []string{"TOPIC", "PARTITION", "REPLICAS"}, rows[0])
	assert.Len(t, rows, 3, "two of four partitions move to the new broker")
	rows = lines(c.ok("broker", "decommission", "2", "--dry-run"))
	assert.Len(t, rows, 1, "broker 2 holds nothing yet: nothing to move")
	c.ok("rebalance", "--max-moving", "1")
	rows = lines(c.ok("rebalance", "status"))
	assert.Equal(t, []string{"PLANNED", "STARTED", "SKIPPED", "PENDING", "MOVING", "MAX-MOVING", "DRAINING", "SINCE"}, rows[0])
	assert.Equal(t, []string{"2", "1", "0", "1", "1", "1", "[]"}, rows[1][:7])
	_, _, code := c.run("broker", "decommission", "7")
	assert.Equal(t, exitNotFound, code)
}
