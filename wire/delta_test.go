package wire

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	metadatav1 "github.com/dmq-project/metadata/gen/dmq/metadata/v1"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/proto"
)

// applyDeltaBySorting is the definition ApplyDeltaInPlace keeps: replace
// or add what the delta names, drop what it removes, then sort the whole
// state into the canonical order.
func applyDeltaBySorting(out *metadatav1.ClusterState, delta *metadatav1.MetadataDelta) {
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
		for int(p.GetPartition()) >= len(out.Topics[i].Partitions) {
			out.Topics[i].Partitions = append(out.Topics[i].Partitions, nil)
		}
		out.Topics[i].Partitions[p.GetPartition()] = p
	}
}

// Applying deltas by binary search gives what sorting the whole state
// gives, on random states (sorted or not) and random deltas.
func TestApplyDeltaInPlaceKeepsTheCanonicalState(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	topic := func(name string, partitions int) *metadatav1.Topic {
		t := &metadatav1.Topic{Name: name}
		for p := range partitions {
			t.Partitions = append(t.Partitions, &metadatav1.Partition{Topic: name, Partition: int32(p), Leader: rng.Int32N(9)})
		}
		return t
	}
	for round := range 2000 {
		state := &metadatav1.ClusterState{MetadataVersion: 10}
		// Distinct ids and names, sorted as a controller sends them, or,
		// one time in four, in any order.
		for _, id := range rng.Perm(20)[:rng.IntN(12)] {
			state.Brokers = append(state.Brokers, &metadatav1.Broker{Id: int32(id), Host: fmt.Sprint("h", rng.IntN(5))})
		}
		for _, n := range rng.Perm(20)[:rng.IntN(12)] {
			state.Topics = append(state.Topics, topic(fmt.Sprint("t", n), 1+rng.IntN(3)))
		}
		if rng.IntN(4) != 0 {
			slices.SortFunc(state.Brokers, compareBrokers)
			slices.SortFunc(state.Topics, compareTopics)
		}
		delta := &metadatav1.MetadataDelta{FromVersion: 10, ToVersion: 11 + int64(rng.IntN(5))}
		for range rng.IntN(4) {
			delta.UpsertedBrokers = append(delta.UpsertedBrokers, &metadatav1.Broker{Id: rng.Int32N(20), Host: "new"})
		}
		for range rng.IntN(3) {
			delta.RemovedBrokerIds = append(delta.RemovedBrokerIds, rng.Int32N(20))
		}
		for range rng.IntN(3) {
			delta.DeletedTopics = append(delta.DeletedTopics, fmt.Sprint("t", rng.IntN(20)))
		}
		for range rng.IntN(4) {
			delta.UpsertedTopics = append(delta.UpsertedTopics, topic(fmt.Sprint("t", rng.IntN(20)), 1+rng.IntN(3)))
		}
		for range rng.IntN(4) {
			delta.ChangedPartitions = append(delta.ChangedPartitions, &metadatav1.Partition{Topic: fmt.Sprint("t", rng.IntN(20)),
				Partition: rng.Int32N(4), Leader: 7})
		}
		want, got := proto.CloneOf(state), proto.CloneOf(state)
		applyDeltaBySorting(want, proto.CloneOf(delta))
		ApplyDeltaInPlace(got, proto.CloneOf(delta))
		require.True(t, proto.Equal(want, got), "round %d:\nstate %v\ndelta %v\nwant %v\ngot  %v", round, state, delta, want, got)
	}
}
