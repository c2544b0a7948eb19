package statemachine

import (
	"strings"
	"testing"

	metadatav1 "github.com/dmq-project/metadata/gen/dmq/metadata/v1"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/proto"
)

func TestValidateTopicName(t *testing.T) {
	valid := []string{"a", "test-topic", "A.b_C-9", strings.Repeat("x", 249), "...", "_"}
	for _, name := range valid {
		assert.Nil(t, ValidateTopicName(name), "%q should be valid", name)
	}
	invalid := []string{"", ".", "..", strings.Repeat("x", 250), "a b", "a/b", "tópico", "a\x00", "a:b", "a*"}
	for _, name := range invalid {
		err := ValidateTopicName(name)
		if assert.NotNil(t, err, "%q should be invalid", name) {
			assert.Equal(t, metadatav1.ErrorCode_INVALID_TOPIC_NAME, err.Code)
		}
	}
}

func TestParseTopicConfig(t *testing.T) {
	config, err := ParseTopicConfig(nil, 2, 3)
	require.Nil(t, err)
	assert.True(t, proto.Equal(DefaultTopicConfig(2, 3), config))
	assert.EqualValues(t, 2, config.MinInsyncReplicas)

	// The cluster default never exceeds the replication factor.
	config, err = ParseTopicConfig(nil, 2, 1)
	require.Nil(t, err)
	assert.EqualValues(t, 1, config.MinInsyncReplicas)

	config, err = ParseTopicConfig(map[string]string{
		"retention.ms": "-1", "retention.bytes": "1048576", "segment.bytes": "1024",
		"compression.type": "zstd", "min.insync.replicas": "2", "unclean.leader.election.enable": "true",
	}, 1, 3)
	require.Nil(t, err)
	assert.EqualValues(t, -1, config.RetentionMs)
	assert.EqualValues(t, 1048576, config.RetentionBytes)
	assert.EqualValues(t, 1024, config.SegmentBytes)
	assert.Equal(t, "zstd", config.CompressionType)
	assert.EqualValues(t, 2, config.MinInsyncReplicas)
	assert.True(t, config.UncleanLeaderElectionEnable)

	bad := []map[string]string{
		{"retention.ms": "-2"},
		{"retention.ms": "soon"},
		{"retention.bytes": "1e9"},
		{"segment.bytes": "13"},
		{"segment.bytes": "4294967296"},
		{"compression.type": "brotli"},
		{"min.insync.replicas": "0"},
		{"min.insync.replicas": "4"},
		{"unclean.leader.election.enable": "maybe"},
		{"cleanup.policy": "compact"},
	}
	for _, configs := range bad {
		_, err := ParseTopicConfig(configs, 1, 3)
		if assert.NotNil(t, err, "%v should be rejected", configs) {
			assert.Equal(t, metadatav1.ErrorCode_INVALID_CONFIG, err.Code)
		}
	}
}

func TestParseServiceID(t *testing.T) {
	for input, want := range map[string]int32{"1": 1, "storage-1": 1, "storage-42": 42, "7": 7} {
		id, err := ParseServiceID(input)
		require.Nil(t, err, input)
		assert.Equal(t, want, id, input)
	}
	for _, input := range []string{"", "storage-", "storage-0", "0", "-1", "storage--1", "+3", "broker-1", "1.5", "99999999999"} {
		_, err := ParseServiceID(input)
		if assert.NotNil(t, err, input) {
			assert.Equal(t, metadatav1.ErrorCode_INVALID_REQUEST, err.Code)
		}
	}
}

func TestValidateBrokerRegistration(t *testing.T) {
	cases := []struct {
		name          string
		id            int32
		host          string
		port          int32
		rack, incarID string
		want          metadatav1.ErrorCode
	}{
		{"ok dns", 1, "localhost", 8082, "rack1", "", metadatav1.ErrorCode_NONE},
		{"ok ipv4", 2, "10.0.0.1", 1, "", "x", metadatav1.ErrorCode_NONE},
		{"ok ipv6", 3, "[::1]", 65535, "", "", metadatav1.ErrorCode_NONE},
		{"id zero", 0, "localhost", 8082, "", "", metadatav1.ErrorCode_INVALID_REQUEST},
		{"id negative", -1, "localhost", 8082, "", "", metadatav1.ErrorCode_INVALID_REQUEST},
		{"empty host", 1, "", 8082, "", "", metadatav1.ErrorCode_INVALID_BROKER_ENDPOINT},
		{"host with space", 1, "bad host", 8082, "", "", metadatav1.ErrorCode_INVALID_BROKER_ENDPOINT},
		{"host label dash", 1, "-a.b", 8082, "", "", metadatav1.ErrorCode_INVALID_BROKER_ENDPOINT},
		{"host too long", 1, strings.Repeat("a.", 127) + "a", 8082, "", "", metadatav1.ErrorCode_INVALID_BROKER_ENDPOINT},
		{"host empty label", 1, "a..b", 8082, "", "", metadatav1.ErrorCode_INVALID_BROKER_ENDPOINT},
		{"port zero", 1, "localhost", 0, "", "", metadatav1.ErrorCode_INVALID_BROKER_ENDPOINT},
		{"port too big", 1, "localhost", 65536, "", "", metadatav1.ErrorCode_INVALID_BROKER_ENDPOINT},
		{"rack control char", 1, "localhost", 1, "r\n1", "", metadatav1.ErrorCode_INVALID_REQUEST},
		{"rack too long", 1, "localhost", 1, strings.Repeat("r", 256), "", metadatav1.ErrorCode_INVALID_REQUEST},
		{"incarnation too long", 1, "localhost", 1, "", strings.Repeat("i", 65), metadatav1.ErrorCode_INVALID_REQUEST},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := ValidateBrokerRegistration(tc.id, tc.host, tc.port, tc.rack, tc.incarID)
			assert.Equal(t, tc.want, err.GetCode())
		})
	}
}

// TestApplyRejects runs every record-level rejection through Apply and
// Check on a small cluster, and verifies each error changes nothing.
func TestApplyRejects(t *testing.T) {
	h := newHarness(t)
	for id := int32(1); id <= 3; id++ {
		h.mustApply(registerRecord(id, "r1"))
	}
	h.mustApply(createTopicRecord("orders", 3, 2, 0, 1))
	orders := h.sm.Topic("orders")
	p0 := orders.Partitions[0]
	epoch1, _ := h.sm.BrokerEpoch(p0.Leader)

	alter := func(mutate func(*metadatav1.AlterPartitionRecord)) *metadatav1.Record {
		r := &metadatav1.AlterPartitionRecord{
			BrokerId: p0.Leader, BrokerEpoch: epoch1, Topic: "orders", Partition: 0,
			LeaderEpoch: p0.LeaderEpoch, PartitionEpoch: p0.PartitionEpoch, NewIsr: []int32{p0.Leader},
		}
		mutate(r)
		return &metadatav1.Record{Body: &metadatav1.Record_AlterPartition{AlterPartition: r}}
	}
	createWith := func(mutate func(*metadatav1.CreateTopicRecord)) *metadatav1.Record {
		r := createTopicRecord("fresh", 1, 1, 0, 99)
		mutate(r.GetCreateTopic())
		return r
	}
	notReplica := int32(6 - p0.Replicas[0] - p0.Replicas[1])

	cases := []struct {
		name   string
		record *metadatav1.Record
		want   metadatav1.ErrorCode
	}{
		{"no body", &metadatav1.Record{}, metadatav1.ErrorCode_INVALID_RECORD},
		{"client id too long", &metadatav1.Record{RequestId: &metadatav1.RequestId{ClientId: strings.Repeat("c", 129), SessionId: 1, Sequence: 1}, Body: registerRecord(9, "").Body}, metadatav1.ErrorCode_INVALID_REQUEST},
		{"register id zero", registerRecord(0, ""), metadatav1.ErrorCode_INVALID_REQUEST},
		{"register new incarnation while live", &metadatav1.Record{Body: &metadatav1.Record_RegisterBroker{RegisterBroker: &metadatav1.RegisterBrokerRecord{
			BrokerId: 1, Host: "broker-1.local", Port: 9092, Rack: "r1", IncarnationId: "inc-2"}}}, metadatav1.ErrorCode_DUPLICATE_BROKER_REGISTRATION},
		{"register same incarnation new port", &metadatav1.Record{Body: &metadatav1.Record_RegisterBroker{RegisterBroker: &metadatav1.RegisterBrokerRecord{
			BrokerId: 1, Host: "broker-1.local", Port: 9093, Rack: "r1", IncarnationId: "inc-1"}}}, metadatav1.ErrorCode_DUPLICATE_BROKER_REGISTRATION},
		{"register bad port", &metadatav1.Record{Body: &metadatav1.Record_RegisterBroker{RegisterBroker: &metadatav1.RegisterBrokerRecord{
			BrokerId: 4, Host: "h", Port: 0}}}, metadatav1.ErrorCode_INVALID_BROKER_ENDPOINT},
		{"unregister unknown", &metadatav1.Record{Body: &metadatav1.Record_UnregisterBroker{UnregisterBroker: &metadatav1.UnregisterBrokerRecord{BrokerId: 42}}}, metadatav1.ErrorCode_UNKNOWN_BROKER},
		{"fence unknown", fenceRecord(42, 0), metadatav1.ErrorCode_UNKNOWN_BROKER},
		{"fence stale epoch", fenceRecord(1, 999), metadatav1.ErrorCode_STALE_BROKER_EPOCH},
		{"unfence unfenced", unfenceRecord(1, 0), metadatav1.ErrorCode_BROKER_STATE_UNCHANGED},
		{"shutdown stale epoch", &metadatav1.Record{Body: &metadatav1.Record_BeginControlledShutdown{BeginControlledShutdown: &metadatav1.BeginControlledShutdownRecord{BrokerId: 1, BrokerEpoch: 7}}}, metadatav1.ErrorCode_STALE_BROKER_EPOCH},
		{"create bad name", createWith(func(r *metadatav1.CreateTopicRecord) { r.Name = "a b" }), metadatav1.ErrorCode_INVALID_TOPIC_NAME},
		{"create existing", createWith(func(r *metadatav1.CreateTopicRecord) { r.Name = "orders" }), metadatav1.ErrorCode_TOPIC_ALREADY_EXISTS},
		{"create bad topic id", createWith(func(r *metadatav1.CreateTopicRecord) { r.TopicId = "short" }), metadatav1.ErrorCode_INVALID_RECORD},
		{"create zero topic id", createWith(func(r *metadatav1.CreateTopicRecord) { r.TopicId = TopicIDFromBytes([16]byte{}) }), metadatav1.ErrorCode_INVALID_RECORD},
		{"create reused topic id", createWith(func(r *metadatav1.CreateTopicRecord) { r.TopicId = orders.TopicId }), metadatav1.ErrorCode_INVALID_RECORD},
		{"create zero partitions", createWith(func(r *metadatav1.CreateTopicRecord) { r.PartitionCount = 0 }), metadatav1.ErrorCode_INVALID_PARTITIONS},
		{"create negative partitions", createWith(func(r *metadatav1.CreateTopicRecord) { r.PartitionCount = -3 }), metadatav1.ErrorCode_INVALID_PARTITIONS},
		{"create too many partitions", createWith(func(r *metadatav1.CreateTopicRecord) { r.PartitionCount = 10_001 }), metadatav1.ErrorCode_INVALID_PARTITIONS},
		{"create rf zero", createWith(func(r *metadatav1.CreateTopicRecord) { r.ReplicationFactor = 0 }), metadatav1.ErrorCode_INVALID_REPLICATION_FACTOR},
		{"create rf above live brokers", createWith(func(r *metadatav1.CreateTopicRecord) {
			r.ReplicationFactor = 4
			r.Config.MinInsyncReplicas = 1
		}), metadatav1.ErrorCode_INVALID_REPLICATION_FACTOR},
		{"create rf huge", createWith(func(r *metadatav1.CreateTopicRecord) { r.ReplicationFactor = 1 << 20 }), metadatav1.ErrorCode_INVALID_REPLICATION_FACTOR},
		{"create no config", createWith(func(r *metadatav1.CreateTopicRecord) { r.Config = nil }), metadatav1.ErrorCode_INVALID_CONFIG},
		{"create min isr above rf", createWith(func(r *metadatav1.CreateTopicRecord) { r.Config.MinInsyncReplicas = 2 }), metadatav1.ErrorCode_INVALID_CONFIG},
		{"create bad compression", createWith(func(r *metadatav1.CreateTopicRecord) { r.Config.CompressionType = "rar" }), metadatav1.ErrorCode_INVALID_CONFIG},
		{"delete unknown", &metadatav1.Record{Body: &metadatav1.Record_DeleteTopic{DeleteTopic: &metadatav1.DeleteTopicRecord{Name: "nope"}}}, metadatav1.ErrorCode_UNKNOWN_TOPIC},
		{"grow unknown", &metadatav1.Record{Body: &metadatav1.Record_CreatePartitions{CreatePartitions: &metadatav1.CreatePartitionsRecord{Topic: "nope", PartitionCount: 5}}}, metadatav1.ErrorCode_UNKNOWN_TOPIC},
		{"shrink", &metadatav1.Record{Body: &metadatav1.Record_CreatePartitions{CreatePartitions: &metadatav1.CreatePartitionsRecord{Topic: "orders", PartitionCount: 2}}}, metadatav1.ErrorCode_INVALID_PARTITIONS},
		{"grow to same", &metadatav1.Record{Body: &metadatav1.Record_CreatePartitions{CreatePartitions: &metadatav1.CreatePartitionsRecord{Topic: "orders", PartitionCount: 3}}}, metadatav1.ErrorCode_INVALID_PARTITIONS},
		{"grow too much", &metadatav1.Record{Body: &metadatav1.Record_CreatePartitions{CreatePartitions: &metadatav1.CreatePartitionsRecord{Topic: "orders", PartitionCount: 10_004}}}, metadatav1.ErrorCode_INVALID_PARTITIONS},
		{"alter unknown broker", alter(func(r *metadatav1.AlterPartitionRecord) { r.BrokerId = 42 }), metadatav1.ErrorCode_UNKNOWN_BROKER},
		{"alter no epoch", alter(func(r *metadatav1.AlterPartitionRecord) { r.BrokerEpoch = 0 }), metadatav1.ErrorCode_INVALID_REQUEST},
		{"alter stale broker epoch", alter(func(r *metadatav1.AlterPartitionRecord) { r.BrokerEpoch = epoch1 + 100 }), metadatav1.ErrorCode_STALE_BROKER_EPOCH},
		{"alter unknown topic", alter(func(r *metadatav1.AlterPartitionRecord) { r.Topic = "nope" }), metadatav1.ErrorCode_UNKNOWN_TOPIC},
		{"alter unknown partition", alter(func(r *metadatav1.AlterPartitionRecord) { r.Partition = 3 }), metadatav1.ErrorCode_UNKNOWN_PARTITION},
		{"alter negative partition", alter(func(r *metadatav1.AlterPartitionRecord) { r.Partition = -1 }), metadatav1.ErrorCode_UNKNOWN_PARTITION},
		{"alter old leader epoch", alter(func(r *metadatav1.AlterPartitionRecord) { r.LeaderEpoch = -1 }), metadatav1.ErrorCode_FENCED_LEADER_EPOCH},
		{"alter old partition epoch", alter(func(r *metadatav1.AlterPartitionRecord) { r.PartitionEpoch = 5 }), metadatav1.ErrorCode_INVALID_PARTITION_EPOCH},
		{"alter empty isr", alter(func(r *metadatav1.AlterPartitionRecord) { r.NewIsr = nil }), metadatav1.ErrorCode_INVALID_ISR},
		{"alter isr without leader", alter(func(r *metadatav1.AlterPartitionRecord) { r.NewIsr = []int32{p0.Replicas[1]} }), metadatav1.ErrorCode_INVALID_ISR},
		{"alter isr non-replica", alter(func(r *metadatav1.AlterPartitionRecord) { r.NewIsr = []int32{p0.Leader, notReplica} }), metadatav1.ErrorCode_INVALID_ISR},
		{"alter isr twice", alter(func(r *metadatav1.AlterPartitionRecord) { r.NewIsr = []int32{p0.Leader, p0.Leader} }), metadatav1.ErrorCode_INVALID_ISR},
		{"elect unknown topic", &metadatav1.Record{Body: &metadatav1.Record_ElectLeaders{ElectLeaders: &metadatav1.ElectLeadersRecord{
			Targets: []*metadatav1.TopicPartitions{{Topic: "nope"}}}}}, metadatav1.ErrorCode_UNKNOWN_TOPIC},
		{"elect unknown partition", &metadatav1.Record{Body: &metadatav1.Record_ElectLeaders{ElectLeaders: &metadatav1.ElectLeadersRecord{
			Targets: []*metadatav1.TopicPartitions{{Topic: "orders", Partitions: []int32{0, 9}}}}}}, metadatav1.ErrorCode_UNKNOWN_PARTITION},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h.t = t
			h.mustFail(tc.record, tc.want)
		})
	}

	t.Run("collision", func(t *testing.T) {
		h.t = t
		h.mustApply(createTopicRecord("metrics.cpu", 1, 1, 0, 500))
		err := h.mustFail(createTopicRecord("metrics_cpu", 1, 1, 0, 501), metadatav1.ErrorCode_TOPIC_NAME_COLLISION)
		assert.Contains(t, err.Message, "metrics.cpu")
	})
	t.Run("fenced broker in new ISR", func(t *testing.T) {
		h.t = t
		follower := p0.Replicas[1]
		if follower == p0.Leader {
			follower = p0.Replicas[0]
		}
		h.mustApply(fenceRecord(follower, 0))
		current := h.sm.Topic("orders").Partitions[0]
		h.mustFail(alter(func(r *metadatav1.AlterPartitionRecord) {
			r.PartitionEpoch = current.PartitionEpoch
			r.NewIsr = []int32{p0.Leader, follower}
		}), metadatav1.ErrorCode_INVALID_ISR)
		h.mustFail(fenceRecord(follower, 0), metadatav1.ErrorCode_BROKER_STATE_UNCHANGED)
	})
}

func TestUndecodableEntryIsANoOp(t *testing.T) {
	sm := New()
	before := stateBytesWithoutVersion(sm)
	r := sm.ApplyEntry(1, []byte{0xff, 0xff, 0xff})
	require.NotNil(t, r.Err)
	assert.Equal(t, metadatav1.ErrorCode_INVALID_RECORD, r.Err.Code)
	assert.EqualValues(t, 1, sm.Version())
	assert.Equal(t, before, stateBytesWithoutVersion(sm))
}

func TestIndexesMustBeContiguous(t *testing.T) {
	sm := New()
	sm.Advance(1)
	assert.PanicsWithValue(t, "statemachine: applying index 3 after 1: entries must be applied in order, once each",
		func() { sm.Advance(3) })
	assert.Panics(t, func() { sm.Apply(1, registerRecord(1, "")) })
	assert.EqualValues(t, 1, sm.Version())
}

// A topic's config shown as Kafka keys parses back into the same config:
// what dmqctl topic configs prints can be given to topic create.
func TestTopicConfigEntriesRoundTrip(t *testing.T) {
	parsed, err := ParseTopicConfig(map[string]string{
		ConfigRetentionMs: "1000", ConfigCompressionType: "zstd", ConfigMinInsyncReplica: "2",
		ConfigUncleanElection: "true", ConfigSegmentBytes: "1048576", ConfigRetentionBytes: "-1",
	}, 1, 3)
	require.Nil(t, err)
	entries := TopicConfigEntries(parsed)
	configs := map[string]string{}
	for i, e := range entries {
		if i > 0 {
			require.Less(t, entries[i-1][0], e[0], "sorted by key")
		}
		configs[e[0]] = e[1]
	}
	again, err := ParseTopicConfig(configs, 1, 3)
	require.Nil(t, err)
	require.True(t, proto.Equal(parsed, again), "%v != %v", parsed, again)
	require.Len(t, configs, 6)
}
