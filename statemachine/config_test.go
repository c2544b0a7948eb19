package statemachine

import (
	"testing"

	metadatav1 "github.com/dmq-project/metadata/gen/dmq/metadata/v1"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func topicResource(name string) *metadatav1.ConfigResource {
	return &metadatav1.ConfigResource{Type: metadatav1.ConfigResource_TOPIC, Name: name}
}

var clusterResource = &metadatav1.ConfigResource{Type: metadatav1.ConfigResource_CLUSTER}

func set(key, value string) *metadatav1.AlterConfigOp {
	return &metadatav1.AlterConfigOp{Key: key, Op: metadatav1.AlterConfigOp_SET, Value: value}
}

// del is a DELETE as the proposer writes it, with the built-in value.
func del(key string) *metadatav1.AlterConfigOp {
	return &metadatav1.AlterConfigOp{Key: key, Op: metadatav1.AlterConfigOp_DELETE,
		Value: configValue(DefaultTopicConfig(1, ReplicationFactorMax), key)}
}

func alterRecord(changes ...*metadatav1.ResourceConfigChanges) *metadatav1.Record {
	return &metadatav1.Record{Body: &metadatav1.Record_AlterConfigs{AlterConfigs: &metadatav1.AlterConfigsRecord{Resources: changes}}}
}

func changes(res *metadatav1.ConfigResource, ops ...*metadatav1.AlterConfigOp) *metadatav1.ResourceConfigChanges {
	return &metadatav1.ResourceConfigChanges{Resource: res, Ops: ops}
}

// described is a resource's configs as key → "value source".
func described(sm *StateMachine, res *metadatav1.ConfigResource) map[string]string {
	out := map[string]string{}
	for _, e := range sm.DescribeConfigs(res, DefaultTopicConfig(1, ReplicationFactorMax)).Entries {
		out[e.Key] = e.Value + " " + e.Source.String()
		own := metadatav1.ConfigSource_TOPIC_CONFIG
		if res.Type == metadatav1.ConfigResource_CLUSTER {
			own = metadatav1.ConfigSource_CLUSTER_DEFAULT_CONFIG
		}
		if e.IsDefault != (e.Source != own) {
			out[e.Key] += " (is_default wrong)"
		}
	}
	return out
}

func TestNewTopicsTakeTheClusterDefaultsTheyDoNotSet(t *testing.T) {
	h := newHarness(t)
	h.mustApply(registerRecord(1, ""))
	h.mustApply(registerRecord(2, ""))
	h.mustApply(createTopicRecord("before", 1, 2, 0, 1))
	h.mustApply(alterRecord(changes(clusterResource, set(ConfigCompressionType, "lz4"), set(ConfigMinInsyncReplica, "3"),
		set(ConfigUncleanElection, "True"))))
	assert.Equal(t, map[string]string{ConfigCompressionType: "lz4", ConfigMinInsyncReplica: "3", ConfigUncleanElection: "true"},
		h.sm.ClusterConfig(), "kept as they read back")

	explicit := createTopicRecord("after", 1, 2, 0, 2)
	explicit.GetCreateTopic().Config.RetentionMs = 1000
	explicit.GetCreateTopic().Config.CompressionType = "zstd"
	explicit.GetCreateTopic().ExplicitConfigs = []string{ConfigCompressionType, ConfigRetentionMs}
	h.mustApply(explicit)
	assert.Equal(t, map[string]string{
		ConfigCompressionType:  "zstd TOPIC_CONFIG",
		ConfigMinInsyncReplica: "2 CLUSTER_DEFAULT_CONFIG", // 3, capped at the replication factor
		ConfigRetentionBytes:   "-1 DEFAULT_CONFIG",
		ConfigRetentionMs:      "1000 TOPIC_CONFIG",
		ConfigSegmentBytes:     "1073741824 DEFAULT_CONFIG",
		ConfigUncleanElection:  "true CLUSTER_DEFAULT_CONFIG",
	}, described(h.sm, topicResource("after")))
	assert.Equal(t, "producer DEFAULT_CONFIG", described(h.sm, topicResource("before"))[ConfigCompressionType],
		"defaults are for new topics: an existing one keeps its values")
	assert.Equal(t, "lz4 CLUSTER_DEFAULT_CONFIG", described(h.sm, clusterResource)[ConfigCompressionType])
	assert.Equal(t, "604800000 DEFAULT_CONFIG", described(h.sm, clusterResource)[ConfigRetentionMs])
}

func TestAlterTopicConfigs(t *testing.T) {
	h := newHarness(t)
	h.mustApply(registerRecord(1, ""))
	h.mustApply(registerRecord(2, ""))
	h.mustApply(createTopicRecord("t", 1, 2, 0, 1))
	h.mustApply(alterRecord(changes(clusterResource, set(ConfigRetentionMs, "5000"))))
	before := h.sm.Version()

	r := h.mustApply(alterRecord(
		changes(topicResource("t"), set(ConfigSegmentBytes, "1048576"), set(ConfigMinInsyncReplica, "2")),
		changes(topicResource("missing"), set(ConfigSegmentBytes, "1048576")),
	))
	assert.Equal(t, []metadatav1.ErrorCode{0, metadatav1.ErrorCode_UNKNOWN_TOPIC}, itemCodes(r.Items))
	got := described(h.sm, topicResource("t"))
	assert.Equal(t, "1048576 TOPIC_CONFIG", got[ConfigSegmentBytes])
	assert.Equal(t, "2 TOPIC_CONFIG", got[ConfigMinInsyncReplica])
	delta, ok := h.sm.DeltaSince(before)
	require.True(t, ok)
	require.Len(t, delta.UpsertedTopics, 1, "a config change is pushed as the topic's")
	assert.EqualValues(t, 1048576, delta.UpsertedTopics[0].Config.SegmentBytes)

	// A deleted key falls back to the cluster's default, or the built-in.
	r = h.mustApply(alterRecord(changes(topicResource("t"), del(ConfigRetentionMs), del(ConfigSegmentBytes))))
	require.Nil(t, r.Items[0].Err)
	got = described(h.sm, topicResource("t"))
	assert.Equal(t, "5000 CLUSTER_DEFAULT_CONFIG", got[ConfigRetentionMs])
	assert.Equal(t, "1073741824 DEFAULT_CONFIG", got[ConfigSegmentBytes])

	// A change the topic cannot take changes nothing of it.
	snapshot := stateBytesWithoutVersion(h.sm)
	r = h.apply(alterRecord(changes(topicResource("t"), set(ConfigSegmentBytes, "2000"), set(ConfigMinInsyncReplica, "3"))))
	assert.Equal(t, metadatav1.ErrorCode_INVALID_CONFIG, r.Items[0].Err.GetCode())
	assert.Contains(t, r.Items[0].Err.Message, "replication factor 2")
	r = h.apply(alterRecord(changes(topicResource("t"), set(ConfigCompressionType, "brotli"))))
	assert.Equal(t, metadatav1.ErrorCode_INVALID_CONFIG, r.Items[0].Err.GetCode())
	r = h.apply(alterRecord(changes(clusterResource, set(ConfigSegmentBytes, "1"), set(ConfigRetentionMs, "9"))))
	assert.Equal(t, metadatav1.ErrorCode_INVALID_CONFIG, r.Items[0].Err.GetCode(), "a cluster change is all or nothing")
	assert.Equal(t, snapshot, stateBytesWithoutVersion(h.sm))

	// The cluster's default removed: a deleted key now takes the built-in.
	h.mustApply(alterRecord(changes(clusterResource, del(ConfigRetentionMs))))
	assert.Empty(t, h.sm.ClusterConfig())
	h.mustApply(alterRecord(changes(topicResource("t"), del(ConfigRetentionMs))))
	assert.Equal(t, "604800000 DEFAULT_CONFIG", described(h.sm, topicResource("t"))[ConfigRetentionMs])
}

func TestConfigChangesAreCheckedAsTheyApply(t *testing.T) {
	for name, resourceChanges := range map[string]*metadatav1.ResourceConfigChanges{
		"unknown key":       changes(topicResource("t"), set("retention.hours", "1")),
		"key twice":         changes(topicResource("t"), set(ConfigRetentionMs, "1"), del(ConfigRetentionMs)),
		"no op":             changes(topicResource("t")),
		"no type":           changes(&metadatav1.ConfigResource{Name: "t"}, set(ConfigRetentionMs, "1")),
		"named cluster":     changes(&metadatav1.ConfigResource{Type: metadatav1.ConfigResource_CLUSTER, Name: "x"}, set(ConfigRetentionMs, "1")),
		"bad topic name":    changes(topicResource(".."), set(ConfigRetentionMs, "1")),
		"unknown operation": changes(topicResource("t"), &metadatav1.AlterConfigOp{Key: ConfigRetentionMs, Value: "1"}),
	} {
		h := newHarness(t)
		h.mustApply(registerRecord(1, ""))
		h.mustApply(createTopicRecord("t", 1, 1, 0, 1))
		record := alterRecord(resourceChanges)
		dry := h.sm.CheckAlterConfigs(record.GetAlterConfigs())
		r := h.apply(record)
		dry.Version = r.Version
		assert.Equal(t, dry, r, name)
		require.Len(t, r.Items, 1, name)
		assert.NotNil(t, r.Items[0].Err, name)
	}
}

func TestConfigSourcesSurviveASnapshot(t *testing.T) {
	h := newHarness(t)
	h.mustApply(registerRecord(1, ""))
	h.mustApply(alterRecord(changes(clusterResource, set(ConfigCompressionType, "gzip"))))
	h.mustApply(createTopicRecord("t", 1, 1, 0, 1))
	h.mustApply(alterRecord(changes(topicResource("t"), set(ConfigRetentionMs, "10"))))
	restored, err := Restore(h.sm.Snapshot())
	require.NoError(t, err)
	assert.Equal(t, described(h.sm, topicResource("t")), described(restored, topicResource("t")))
	assert.Equal(t, h.sm.ClusterConfig(), restored.ClusterConfig())
	assert.Equal(t, "gzip CLUSTER_DEFAULT_CONFIG", described(restored, topicResource("t"))[ConfigCompressionType])

	// A source that names nothing is refused as corrupt.
	h.sm.topics["t"].sources = h.sm.topics["t"].sources.with(0, 3)
	_, err = Restore(h.sm.Snapshot())
	assert.ErrorIs(t, err, ErrCorruptSnapshot)
}

// Enabling unclean election on a topic brings back its offline partitions
// whose ISR is gone, from a live replica, as Kafka's operators expect of
// the setting (found by review: they stayed offline until some replica
// registered again).
func TestEnablingUncleanElectionBringsOfflinePartitionsBack(t *testing.T) {
	h := newHarness(t)
	h.mustApply(registerRecord(1, ""))
	h.mustApply(registerRecord(2, ""))
	h.mustApply(createTopicRecord("t", 1, 2, 0, 1))
	p := h.sm.Topic("t").Partitions[0]
	leader, follower := p.Leader, p.Replicas[1]
	// The follower leaves the ISR, then the leader is fenced: offline.
	h.mustApply(&metadatav1.Record{Body: &metadatav1.Record_AlterPartition{AlterPartition: &metadatav1.AlterPartitionRecord{
		BrokerId: leader, BrokerEpoch: h.sm.Brokers()[leader-1].BrokerEpoch, Topic: "t", LeaderEpoch: p.LeaderEpoch,
		PartitionEpoch: p.PartitionEpoch, NewIsr: []int32{leader}}}})
	h.mustApply(fenceRecord(leader, 0))
	require.EqualValues(t, NoLeader, h.sm.Topic("t").Partitions[0].Leader)

	h.mustApply(alterRecord(changes(topicResource("t"), set(ConfigUncleanElection, "true"))))
	p = h.sm.Topic("t").Partitions[0]
	assert.Equal(t, follower, p.Leader, "the live replica leads")
	assert.Equal(t, []int32{follower}, p.Isr)
	assert.Zero(t, h.sm.OfflinePartitionCount())
}

// A cluster default in a snapshot must be in the form apply keeps, so that
// equal states have equal bytes (found by review: "+100" was accepted).
func TestSnapshotRefusesNonCanonicalClusterDefaults(t *testing.T) {
	h := newHarness(t)
	h.mustApply(alterRecord(changes(clusterResource, set(ConfigRetentionMs, "100"))))
	h.sm.clusterConfig[ConfigRetentionMs] = "+100"
	_, err := Restore(h.sm.Snapshot())
	assert.ErrorIs(t, err, ErrCorruptSnapshot)
}
