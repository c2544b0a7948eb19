package statemachine

import (
	metadatav1 "github.com/dmq-project/metadata/gen/dmq/metadata/v1"
)

// Bounds on one batch (CreateTopics, DeleteTopics). A batch is one record,
// applied in one step: the bounds keep a record under the API's request
// size and its apply well under a Raft tick at the caps.
const (
	TopicsPerBatchMax     = 10_000
	PartitionsPerBatchMax = 100_000
)

// ItemResult is the outcome of one item of a batch.
type ItemResult struct {
	// Err is nil when the item applied (or, validating only, would).
	Err *Error
	// TopicID is the id of the topic created or deleted.
	TopicID string
}

// batchNames is what the earlier items of a batch create, for the checks
// of the later ones: names, collision keys and ids not yet in the state.
// A nil *batchNames is an empty one (a lone record).
type batchNames struct {
	names map[string]struct{}
	keys  map[string]string
	ids   map[string]string
}

func newBatchNames(capacity int) *batchNames {
	return &batchNames{names: make(map[string]struct{}, capacity), keys: make(map[string]string, capacity),
		ids: make(map[string]string, capacity)}
}

func (b *batchNames) hasName(name string) bool {
	if b == nil {
		return false
	}
	_, ok := b.names[name]
	return ok
}

func (b *batchNames) collision(key string) (string, bool) {
	if b == nil {
		return "", false
	}
	other, ok := b.keys[key]
	return other, ok
}

func (b *batchNames) idUser(id string) (string, bool) {
	if b == nil {
		return "", false
	}
	other, ok := b.ids[id]
	return other, ok
}

func (b *batchNames) add(r *metadatav1.CreateTopicRecord) {
	b.names[r.Name] = struct{}{}
	b.keys[collisionKey(r.Name)] = r.Name
	b.ids[r.TopicId] = r.Name
}

// ValidateBatchSize checks the bounds of a batch of topics with partitions
// partitions in all (0 for deletions).
func ValidateBatchSize(topics int, partitions int64) *Error {
	if topics == 0 {
		return errorf(metadatav1.ErrorCode_INVALID_REQUEST, "the batch names no topic")
	}
	if topics > TopicsPerBatchMax {
		return errorf(metadatav1.ErrorCode_INVALID_REQUEST,
			"the batch names %d topics: at most %d per request", topics, TopicsPerBatchMax)
	}
	if partitions > PartitionsPerBatchMax {
		return errorf(metadatav1.ErrorCode_INVALID_REQUEST,
			"the batch creates %d partitions: at most %d per request", partitions, PartitionsPerBatchMax)
	}
	return nil
}

func batchPartitions(r *metadatav1.CreateTopicsRecord) int64 {
	var total int64
	for _, t := range r.Topics {
		total += int64(max(t.PartitionCount, 0))
	}
	return total
}

// CheckCreateTopics answers what applying r now would answer, changing
// nothing: the dry run of CreateTopics(validate_only). Version is left to
// the caller.
func (s *StateMachine) CheckCreateTopics(r *metadatav1.CreateTopicsRecord) Result {
	if err := ValidateBatchSize(len(r.Topics), batchPartitions(r)); err != nil {
		return fail(err)
	}
	eligible := len(s.eligibleBrokers())
	batch := newBatchNames(len(r.Topics))
	items := make([]ItemResult, len(r.Topics))
	for i, t := range r.Topics {
		if err := s.checkCreateTopic(t, eligible, batch); err != nil {
			items[i].Err = err
			continue
		}
		items[i].TopicID = t.TopicId
		batch.add(t)
	}
	return BatchResult(items, r.Atomic, func(i int) string { return r.Topics[i].Name }, "created")
}

// CheckDeleteTopics is CheckCreateTopics for DeleteTopics.
func (s *StateMachine) CheckDeleteTopics(r *metadatav1.DeleteTopicsRecord) Result {
	if err := ValidateBatchSize(len(r.Names), 0); err != nil {
		return fail(err)
	}
	deleted := make(map[string]struct{}, len(r.Names))
	items := make([]ItemResult, len(r.Names))
	for i, name := range r.Names {
		if err := ValidateTopicName(name); err != nil {
			items[i].Err = err
			continue
		}
		t, ok := s.topics[name]
		if _, gone := deleted[name]; !ok || gone {
			items[i].Err = errorf(metadatav1.ErrorCode_UNKNOWN_TOPIC, "topic %q does not exist", name)
			continue
		}
		deleted[name] = struct{}{}
		items[i].TopicID = t.id
	}
	return BatchResult(items, r.Atomic, func(i int) string { return r.Names[i] }, "deleted")
}

// BatchResult completes the items of a checked batch. An atomic batch with
// a failing item fails as a whole, with the first failure's code, and marks
// every item that would have passed BATCH_ABORTED.
func BatchResult(items []ItemResult, atomic bool, name func(int) string, verb string) Result {
	first, failures := -1, 0
	for i := range items {
		if items[i].Err != nil {
			failures++
			if first < 0 {
				first = i
			}
		}
	}
	if !atomic || failures == 0 {
		return Result{Items: items}
	}
	aborted := errorf(metadatav1.ErrorCode_BATCH_ABORTED,
		"valid, but the atomic batch was refused for topic %q: nothing was %s", name(first), verb)
	for i := range items {
		if items[i].Err == nil {
			items[i] = ItemResult{Err: aborted}
		}
	}
	cause := items[first].Err
	return Result{Items: items, Err: errorf(cause.Code,
		"atomic batch of %d topics refused, nothing was %s: %d would fail, the first is %q: %s",
		len(items), verb, failures, name(first), cause.Message)}
}

func (s *StateMachine) createTopics(r *metadatav1.CreateTopicsRecord, c *change) Result {
	result := s.CheckCreateTopics(r)
	if result.Err != nil {
		return result
	}
	ring := newBrokerRing(s.eligibleBrokers())
	for i, t := range r.Topics {
		if result.Items[i].Err == nil {
			s.insertTopic(t, ring, c)
		}
	}
	return result
}

func (s *StateMachine) deleteTopics(r *metadatav1.DeleteTopicsRecord, c *change) Result {
	result := s.CheckDeleteTopics(r)
	if result.Err != nil {
		return result
	}
	for i, name := range r.Names {
		if result.Items[i].Err == nil {
			s.removeTopic(s.topics[name], c)
		}
	}
	return result
}
