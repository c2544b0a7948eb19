package wire

import (
	"slices"
	"strings"

	metadatav1 "github.com/dmq-project/metadata/gen/dmq/metadata/v1"
	"google.golang.org/protobuf/proto"
)

// ApplyDelta is what a receiver of pushes does: the state at
// delta.FromVersion plus the delta is the state at delta.ToVersion, in the
// canonical order ClusterState uses (brokers by id, topics by name,
// partitions by index). base is not modified.
func ApplyDelta(base *metadatav1.ClusterState, delta *metadatav1.MetadataDelta) *metadatav1.ClusterState {
	out := proto.CloneOf(base)
	ApplyDeltaInPlace(out, delta)
	return out
}

// ApplyDeltaInPlace is ApplyDelta for a receiver that owns its state:
// out is modified and takes ownership of the delta's messages.
func ApplyDeltaInPlace(out *metadatav1.ClusterState, delta *metadatav1.MetadataDelta) {
	out.MetadataVersion = delta.GetToVersion()
	for _, b := range delta.GetUpsertedBrokers() {
		out.Brokers = slices.DeleteFunc(out.Brokers, func(x *metadatav1.Broker) bool { return x.GetId() == b.GetId() })
		out.Brokers = append(out.Brokers, b)
	}
	for _, id := range delta.GetRemovedBrokerIds() {
		out.Brokers = slices.DeleteFunc(out.Brokers, func(x *metadatav1.Broker) bool { return x.GetId() == id })
	}
	slices.SortFunc(out.Brokers, func(x, y *metadatav1.Broker) int { return int(x.GetId()) - int(y.GetId()) })
	for _, name := range delta.GetDeletedTopics() {
		out.Topics = slices.DeleteFunc(out.Topics, func(x *metadatav1.Topic) bool { return x.GetName() == name })
	}
	for _, topic := range delta.GetUpsertedTopics() {
		out.Topics = slices.DeleteFunc(out.Topics, func(x *metadatav1.Topic) bool { return x.GetName() == topic.GetName() })
		out.Topics = append(out.Topics, topic)
	}
	slices.SortFunc(out.Topics, func(x, y *metadatav1.Topic) int { return strings.Compare(x.GetName(), y.GetName()) })
	for _, p := range delta.GetChangedPartitions() {
		i, found := slices.BinarySearchFunc(out.Topics, p.GetTopic(), func(t *metadatav1.Topic, name string) int {
			return strings.Compare(t.GetName(), name)
		})
		if !found {
			continue
		}
		topic := out.Topics[i]
		for int(p.GetPartition()) >= len(topic.Partitions) {
			topic.Partitions = append(topic.Partitions, nil)
		}
		topic.Partitions[p.GetPartition()] = p
	}
}
