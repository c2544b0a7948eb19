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

// refusedBeforeLog stands for an item the proposer refused before the
// log: the record does not hold it (request_size, request_indexes).
var refusedBeforeLog = &Error{Code: metadatav1.ErrorCode_INVALID_REQUEST,
	Message: "refused by the controller that proposed the batch, before the log"}

// positions checks a record's request_size and request_indexes for n items.
func positions(size int32, indexes []int32, n int) *Error {
	if size == 0 && len(indexes) == 0 {
		return nil
	}
	if int(size) < n || size > TopicsPerBatchMax || len(indexes) != n {
		return errorf(metadatav1.ErrorCode_INVALID_RECORD, "a batch of %d items names %d positions in a request of %d", n, len(indexes), size)
	}
	for i, index := range indexes {
		if index < 0 || index >= size || (i > 0 && index <= indexes[i-1]) {
			return errorf(metadatav1.ErrorCode_INVALID_RECORD, "batch positions %v are not increasing within %d", indexes, size)
		}
	}
	return nil
}

// inRequestOrder lays a record's item results out in its request's order,
// the items the proposer refused marked refusedBeforeLog.
func inRequestOrder(r Result, size int32, indexes []int32) Result {
	if size == 0 || r.Items == nil {
		return r
	}
	items := make([]ItemResult, size)
	for i := range items {
		items[i].Err = refusedBeforeLog
	}
	for i, item := range r.Items {
		items[indexes[i]] = item
	}
	r.Items = items
	return r
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
	if err := positions(r.RequestSize, r.RequestIndexes, len(r.Topics)); err != nil {
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
	return inRequestOrder(BatchResult(items, r.Atomic, func(i int) string { return r.Topics[i].Name }, "created"),
		r.RequestSize, r.RequestIndexes)
}

// CheckDeleteTopics is CheckCreateTopics for DeleteTopics.
func (s *StateMachine) CheckDeleteTopics(r *metadatav1.DeleteTopicsRecord) Result {
	if err := ValidateBatchSize(len(r.Names), 0); err != nil {
		return fail(err)
	}
	if err := positions(r.RequestSize, r.RequestIndexes, len(r.Names)); err != nil {
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
	return inRequestOrder(BatchResult(items, r.Atomic, func(i int) string { return r.Names[i] }, "deleted"),
		r.RequestSize, r.RequestIndexes)
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
		if result.Items[requestIndex(i, r.RequestIndexes)].Err == nil {
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
		if result.Items[requestIndex(i, r.RequestIndexes)].Err == nil {
			s.removeTopic(s.topics[name], c)
		}
	}
	return result
}

// requestIndex is the request position of a record's i-th item.
func requestIndex(i int, indexes []int32) int {
	if indexes == nil {
		return i
	}
	return int(indexes[i])
}
