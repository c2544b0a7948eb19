package seedwire

import (
	"encoding/json"
	"strings"
	"testing"

	metadatav1 "github.com/dmq-project/metadata/gen/dmq/metadata/v1"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

type names []string

func (n names) HasTopicWithPrefix(prefix string) bool {
	for _, name := range n {
		if strings.HasPrefix(name, prefix) {
			return true
		}
	}
	return false
}

func part(topic string, index, leader int32, replicas, isr []int32, leaderEpoch, partitionEpoch int32) *metadatav1.Partition {
	return &metadatav1.Partition{Topic: topic, Partition: index, Leader: leader, Replicas: replicas, Isr: isr,
		LeaderEpoch: leaderEpoch, PartitionEpoch: partitionEpoch}
}

var controller = Controller{ID: 2, URL: "http://c2:9092", Term: 7, NowMs: 1_700_000_000_000}

func types(updates []MetadataUpdateRequest) []UpdateType {
	out := make([]UpdateType, len(updates))
	for i, u := range updates {
		out[i] = u.UpdateType
	}
	return out
}

// A full state carries the real leaders, followers, ISRs and epochs (the
// seed's used replicas[0] and every replica, undoing failovers), brokers
// gone as not alive, and the controller.
func TestFullState(t *testing.T) {
	state := &metadatav1.ClusterState{MetadataVersion: 42,
		Brokers: []*metadatav1.Broker{{Id: 1, Host: "h1", Port: 9092}, {Id: 2, Host: "h2", Port: 9092, Fenced: true}},
		Topics: []*metadatav1.Topic{{Name: "orders", Partitions: []*metadatav1.Partition{
			part("orders", 0, 3, []int32{1, 2, 3}, []int32{3, 1}, 4, 9),
		}}}}
	push := &metadatav1.PushMetadataRequest{MetadataVersion: 42, Update: &metadatav1.PushMetadataRequest_FullState{FullState: state}}
	updates := Updates(push, controller, true, names{"orders"}, []int32{5})
	require.Equal(t, []UpdateType{ControllerChanged, FullSnapshot}, types(updates))
	for _, u := range updates {
		assert.Equal(t, int64(42), u.Version)
		assert.Equal(t, int32(2), u.ControllerID)
		assert.Equal(t, "http://c2:9092", u.ControllerURL)
		assert.Equal(t, int64(7), u.ControllerTerm)
	}
	full := updates[1]
	assert.Equal(t, []BrokerInfo{{ID: 1, Host: "h1", Port: 9092, Alive: true}, {ID: 2, Host: "h2", Port: 9092}, {ID: 5}}, full.Brokers)
	assert.Equal(t, []Partition{{Topic: "orders", Partition: 0, LeaderID: 3, FollowerIDs: []int32{1, 2}, ISRIDs: []int32{3, 1}, LeaderEpoch: 4}},
		full.Partitions)
}

// A delta says its types, in the order a receiver must apply them, and
// never wipes what it does not name.
func TestDeltaTypes(t *testing.T) {
	delta := &metadatav1.MetadataDelta{FromVersion: 10, ToVersion: 14,
		UpsertedBrokers:  []*metadatav1.Broker{{Id: 4, Host: "h4", Port: 1}},
		RemovedBrokerIds: []int32{9},
		DeletedTopics:    []string{"old"},
		UpsertedTopics: []*metadatav1.Topic{{Name: "grown", Partitions: []*metadatav1.Partition{
			part("grown", 0, 1, []int32{1, 2}, []int32{1}, 1, 3), // changed since its creation
			part("grown", 1, 2, []int32{2, 1}, []int32{2, 1}, 0, 0),
		}}},
		ChangedPartitions: []*metadatav1.Partition{part("other", 3, 2, []int32{1, 2}, []int32{2}, 5, 8)},
	}
	push := &metadatav1.PushMetadataRequest{MetadataVersion: 14, Update: &metadatav1.PushMetadataRequest_Delta{Delta: delta}}
	require.False(t, NeedsFullState(delta, names{"grown", "other"}))
	updates := Updates(push, controller, false, names{"grown", "other"}, nil)
	require.Equal(t, []UpdateType{BrokerUpdate, TopicDeleted, TopicCreated, LeaderUpdate}, types(updates))
	assert.Equal(t, []BrokerInfo{{ID: 4, Host: "h4", Port: 1, Alive: true}, {ID: 9}}, updates[0].Brokers)
	assert.Equal(t, []string{"old"}, updates[1].DeletedTopics)
	assert.Len(t, updates[2].Partitions, 2, "TOPIC_CREATED adds what a receiver lacks")
	leaders := updates[3].Partitions
	require.Len(t, leaders, 2, "a partition changed since its creation, and the changed one of another topic")
	assert.Equal(t, "grown", leaders[0].Topic)
	assert.Equal(t, Partition{Topic: "other", Partition: 3, LeaderID: 2, FollowerIDs: []int32{1}, ISRIDs: []int32{2}, LeaderEpoch: 5}, leaders[1])

	empty := &metadatav1.PushMetadataRequest{MetadataVersion: 15, Update: &metadatav1.PushMetadataRequest_Delta{
		Delta: &metadatav1.MetadataDelta{FromVersion: 14, ToVersion: 15}}}
	updates = Updates(empty, controller, true, names{}, nil)
	require.Equal(t, []UpdateType{ControllerChanged, BrokerUpdate}, types(updates), "the version travels even when nothing else does")
	assert.Equal(t, int64(15), updates[1].Version)
}

// The seed's receiver deletes by key prefix: deleting "a" would take
// "a-b"'s partitions, so such a delta must go as a full state.
func TestDeletingAPrefixNeedsAFullState(t *testing.T) {
	delta := &metadatav1.MetadataDelta{DeletedTopics: []string{"a"}}
	assert.True(t, NeedsFullState(delta, names{"a-b"}))
	assert.False(t, NeedsFullState(delta, names{"ab", "b-a"}))
	assert.Panics(t, func() {
		Updates(&metadatav1.PushMetadataRequest{Update: &metadatav1.PushMetadataRequest_Delta{Delta: delta}}, controller, false, names{"a-b"}, nil)
	})
}

// The JSON is the seed's, field for field, with lists present when empty
// (its receiver throws on a null list in a full snapshot).
func TestJSONFieldNames(t *testing.T) {
	data, err := json.Marshal(MetadataUpdateRequest{UpdateType: FullSnapshot, Version: 3, Brokers: []BrokerInfo{{ID: 1, Alive: true}},
		Partitions: []Partition{{Topic: "t", FollowerIDs: []int32{}, ISRIDs: []int32{1}}}, DeletedTopics: []string{}})
	require.NoError(t, err)
	var fields map[string]any
	require.NoError(t, json.Unmarshal(data, &fields))
	for _, name := range []string{"updateType", "version", "brokers", "partitions", "deletedTopics", "controllerId",
		"controllerUrl", "controllerTerm", "timestamp"} {
		assert.Contains(t, fields, name)
	}
	partition := fields["partitions"].([]any)[0].(map[string]any)
	for _, name := range []string{"topic", "partition", "leaderId", "followerIds", "isrIds", "leaderEpoch"} {
		assert.Contains(t, partition, name)
	}
	assert.Equal(t, []any{}, partition["followerIds"])
	broker := fields["brokers"].([]any)[0].(map[string]any)
	assert.Equal(t, true, broker["alive"])
	assert.Equal(t, float64(3), fields["version"], "numbers, not strings")
}
