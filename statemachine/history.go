package statemachine

import (
	"slices"

	metadatav1 "github.com/dmq-project/metadata/gen/dmq/metadata/v1"
)

// Bounds on the change history kept for deltas. History is soft state: it
// is not in snapshots or hashes, and a node restored from a snapshot starts
// with none (its deltas begin at the snapshot's version).
const (
	historyEntriesMax = 4096
	historyKeysMax    = 1 << 18
)

type partitionKey struct {
	topic string
	index int32
}

// change names what one applied record touched. A delta is built from the
// union of the changes after a version, read from the current state.
type change struct {
	version    int64
	brokers    []int32
	topics     []string
	partitions []partitionKey
	// deleted names the topics deleted (also in topics): a topic deleted
	// and created again is a deletion and an upsert in a delta.
	deleted []string
}

func (c *change) keyCount() int {
	return len(c.brokers) + len(c.topics) + len(c.partitions) + len(c.deleted) + 1
}

func (c *change) empty() bool {
	return len(c.brokers) == 0 && len(c.topics) == 0 && len(c.partitions) == 0
}

type history struct {
	changes []change
	keys    int
	// floor is the oldest version a delta can start from: every change
	// after it is still held.
	floor int64
}

func newHistory(floor int64) history { return history{floor: floor} }

func (h *history) add(c change) {
	if c.empty() {
		return
	}
	if n := len(h.changes); n > 0 && h.changes[n-1].version >= c.version {
		panic("statemachine: history versions must increase")
	}
	h.changes = append(h.changes, c)
	h.keys += c.keyCount()
	for len(h.changes) > historyEntriesMax || (h.keys > historyKeysMax && len(h.changes) > 1) {
		h.floor = h.changes[0].version
		h.keys -= h.changes[0].keyCount()
		h.changes[0] = change{}
		h.changes = h.changes[1:]
	}
}

// DeltaSince returns what changed after version since, as the state now. It
// returns false when since is older than the history held, or newer than
// the current version (a divergent receiver): the caller sends a full state.
func (s *StateMachine) DeltaSince(since int64) (*metadatav1.MetadataDelta, bool) {
	if since < s.history.floor || since > s.Version() {
		return nil, false
	}
	delta := &metadatav1.MetadataDelta{FromVersion: since, ToVersion: s.Version()}
	brokers := map[int32]bool{}
	topics := map[string]bool{}
	deleted := map[string]bool{}
	partitions := map[partitionKey]bool{}
	start, _ := slices.BinarySearchFunc(s.history.changes, since+1, func(c change, v int64) int {
		switch {
		case c.version < v:
			return -1
		case c.version > v:
			return 1
		}
		return 0
	})
	for _, c := range s.history.changes[start:] {
		for _, id := range c.brokers {
			brokers[id] = true
		}
		for _, name := range c.topics {
			topics[name] = true
		}
		for _, name := range c.deleted {
			deleted[name] = true
		}
		for _, key := range c.partitions {
			partitions[key] = true
		}
	}
	brokerIDs := make([]int32, 0, len(brokers))
	for id := range brokers { // determinism: collected, then sorted
		brokerIDs = append(brokerIDs, id)
	}
	slices.Sort(brokerIDs)
	for _, id := range brokerIDs {
		if b, ok := s.brokers[id]; ok {
			delta.UpsertedBrokers = append(delta.UpsertedBrokers, b.toProto())
		} else {
			delta.RemovedBrokerIds = append(delta.RemovedBrokerIds, id)
		}
	}
	topicNames := make([]string, 0, len(topics))
	for name := range topics { // determinism: collected, then sorted
		topicNames = append(topicNames, name)
	}
	sortStrings(topicNames)
	for _, name := range topicNames {
		t, ok := s.topics[name]
		if !ok || deleted[name] {
			delta.DeletedTopics = append(delta.DeletedTopics, name)
		}
		if ok {
			delta.UpsertedTopics = append(delta.UpsertedTopics, t.toProto(true))
		}
	}
	keys := make([]partitionKey, 0, len(partitions))
	for key := range partitions { // determinism: collected, then sorted
		if !topics[key.topic] {
			keys = append(keys, key)
		}
	}
	slices.SortFunc(keys, func(a, b partitionKey) int {
		if a.topic != b.topic {
			if a.topic < b.topic {
				return -1
			}
			return 1
		}
		return int(a.index) - int(b.index)
	})
	for _, key := range keys {
		t, ok := s.topics[key.topic]
		// A partition key of a topic that no longer exists is always
		// accompanied by the topic's own key (delete records name it).
		if !ok || int(key.index) >= len(t.partitions) {
			panic("statemachine: history names a partition the state does not have: " + key.topic)
		}
		delta.ChangedPartitions = append(delta.ChangedPartitions, t.partitionProto(key.index))
	}
	return delta, true
}
