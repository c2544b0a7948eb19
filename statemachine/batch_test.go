package statemachine

import (
	"fmt"
	"math/rand/v2"
	"os"
	"testing"

	metadatav1 "github.com/dmq-project/metadata/gen/dmq/metadata/v1"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func batchItem(name string, partitions, rf int32, idSeed int) *metadatav1.CreateTopicRecord {
	return createTopicRecord(name, partitions, rf, uint32(idSeed), idSeed).GetCreateTopic()
}

func createTopicsRecord(atomic bool, items ...*metadatav1.CreateTopicRecord) *metadatav1.Record {
	return &metadatav1.Record{Body: &metadatav1.Record_CreateTopics{CreateTopics: &metadatav1.CreateTopicsRecord{Topics: items, Atomic: atomic}}}
}

func deleteTopicsRecord(atomic bool, names ...string) *metadatav1.Record {
	return &metadatav1.Record{Body: &metadatav1.Record_DeleteTopics{DeleteTopics: &metadatav1.DeleteTopicsRecord{Names: names, Atomic: atomic}}}
}

func itemCodes(items []ItemResult) []metadatav1.ErrorCode {
	codes := make([]metadatav1.ErrorCode, len(items))
	for i, item := range items {
		codes[i] = item.Err.GetCode()
	}
	return codes
}

// mixedBatch has one item of each outcome, against a cluster of three
// brokers holding topic "a".
func mixedBatch(h *harness) []*metadatav1.CreateTopicRecord {
	for id := int32(1); id <= 3; id++ {
		h.mustApply(registerRecord(id, ""))
	}
	h.mustApply(createTopicRecord("a", 1, 1, 0, 1))
	return []*metadatav1.CreateTopicRecord{
		batchItem("b", 2, 3, 10),
		batchItem("a", 1, 1, 11),   // exists
		batchItem("c.x", 1, 1, 12), //
		batchItem("c_x", 1, 1, 13), // collides with the batch's c.x
		batchItem("d", 1, 4, 14),   // more replicas than brokers
		batchItem("e", 3, 2, 15),
	}
}

var mixedCodes = []metadatav1.ErrorCode{
	metadatav1.ErrorCode_NONE, metadatav1.ErrorCode_TOPIC_ALREADY_EXISTS, metadatav1.ErrorCode_NONE,
	metadatav1.ErrorCode_TOPIC_NAME_COLLISION, metadatav1.ErrorCode_INVALID_REPLICATION_FACTOR, metadatav1.ErrorCode_NONE,
}

func TestCreateTopicsAnswersEachTopic(t *testing.T) {
	h := newHarness(t)
	items := mixedBatch(h)
	before := h.sm.Version()
	r := h.mustApply(createTopicsRecord(false, items...))
	assert.Equal(t, mixedCodes, itemCodes(r.Items))
	for _, name := range []string{"b", "c.x", "e"} {
		require.NotNil(t, h.sm.Topic(name), name)
	}
	assert.Nil(t, h.sm.Topic("c_x"))
	assert.Nil(t, h.sm.Topic("d"))
	assert.Len(t, h.sm.Topic("e").Partitions, 3)
	assert.Equal(t, testTopicID(10), r.Items[0].TopicID)
	assert.Empty(t, r.Items[1].TopicID)
	delta, ok := h.sm.DeltaSince(before)
	require.True(t, ok)
	var changed []string
	for _, topic := range delta.UpsertedTopics {
		changed = append(changed, topic.Name)
	}
	assert.Equal(t, []string{"b", "c.x", "e"}, changed, "one version, every created topic in its delta")
}

func TestAtomicCreateTopicsIsAllOrNone(t *testing.T) {
	h := newHarness(t)
	items := mixedBatch(h)
	err := h.mustFail(createTopicsRecord(true, items...), metadatav1.ErrorCode_TOPIC_ALREADY_EXISTS)
	assert.Contains(t, err.Message, `3 would fail, the first is "a"`)
	refused := h.sm.CheckCreateTopics(createTopicsRecord(true, items...).GetCreateTopics())
	want := slicesReplace(mixedCodes, metadatav1.ErrorCode_NONE, metadatav1.ErrorCode_BATCH_ABORTED)
	assert.Equal(t, want, itemCodes(refused.Items), "the valid items say why they were not created")

	valid := []*metadatav1.CreateTopicRecord{items[0], items[2], items[5]}
	created := h.mustApply(createTopicsRecord(true, valid...))
	assert.Equal(t, []metadatav1.ErrorCode{0, 0, 0}, itemCodes(created.Items))
	assert.Len(t, h.sm.Topics(), 4)
}

func slicesReplace(codes []metadatav1.ErrorCode, from, to metadatav1.ErrorCode) []metadatav1.ErrorCode {
	out := make([]metadatav1.ErrorCode, len(codes))
	for i, c := range codes {
		out[i] = c
		if c == from {
			out[i] = to
		}
	}
	return out
}

func TestDeleteTopicsAnswersEachTopicOrAll(t *testing.T) {
	h := newHarness(t)
	h.mustApply(registerRecord(1, ""))
	h.mustApply(createTopicRecord("a", 1, 1, 0, 1))
	h.mustApply(createTopicRecord("b", 1, 1, 0, 2))

	err := h.mustFail(deleteTopicsRecord(true, "a", "missing", "b"), metadatav1.ErrorCode_UNKNOWN_TOPIC)
	assert.Contains(t, err.Message, `"missing"`)
	assert.Len(t, h.sm.Topics(), 2)

	r := h.mustApply(deleteTopicsRecord(false, "a", "missing", "a", ".."))
	assert.Equal(t, []metadatav1.ErrorCode{0, metadatav1.ErrorCode_UNKNOWN_TOPIC, metadatav1.ErrorCode_UNKNOWN_TOPIC,
		metadatav1.ErrorCode_INVALID_TOPIC_NAME}, itemCodes(r.Items))
	assert.Equal(t, testTopicID(1), r.Items[0].TopicID)
	assert.Nil(t, h.sm.Topic("a"))
	assert.NotNil(t, h.sm.Topic("b"))
}

func TestBatchesAreBounded(t *testing.T) {
	h := newHarness(t)
	h.mustApply(registerRecord(1, ""))
	h.mustFail(createTopicsRecord(false), metadatav1.ErrorCode_INVALID_REQUEST)
	h.mustFail(deleteTopicsRecord(false), metadatav1.ErrorCode_INVALID_REQUEST)

	many := make([]*metadatav1.CreateTopicRecord, TopicsPerBatchMax+1)
	names := make([]string, TopicsPerBatchMax+1)
	for i := range many {
		names[i] = fmt.Sprintf("t%d", i)
		many[i] = batchItem(names[i], 1, 1, i+1)
	}
	err := h.mustFail(createTopicsRecord(false, many...), metadatav1.ErrorCode_INVALID_REQUEST)
	assert.Contains(t, err.Message, "at most 10000")
	h.mustFail(deleteTopicsRecord(false, names...), metadatav1.ErrorCode_INVALID_REQUEST)

	wide := []*metadatav1.CreateTopicRecord{batchItem("w1", PartitionsPerRequestMax, 1, 1), batchItem("w2", PartitionsPerRequestMax, 1, 2)}
	for i := 3; len(wide)*PartitionsPerRequestMax <= PartitionsPerBatchMax; i++ {
		wide = append(wide, batchItem(fmt.Sprintf("w%d", i), PartitionsPerRequestMax, 1, i))
	}
	err = h.mustFail(createTopicsRecord(false, wide...), metadatav1.ErrorCode_INVALID_REQUEST)
	assert.Contains(t, err.Message, "at most 100000")
	// At the caps exactly, the batch applies.
	r := h.mustApply(createTopicsRecord(true, wide[:len(wide)-1]...))
	assert.Len(t, r.Items, PartitionsPerBatchMax/PartitionsPerRequestMax)
	assert.Equal(t, PartitionsPerBatchMax, h.sm.PartitionCount())
}

// A dry run answers exactly what the record would, and changes nothing:
// random batches over a small name space, against random states.
func TestCheckAnswersWhatApplyWould(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	names := []string{"a", "b", "c.d", "c_d", "e", "..", "f"}
	for round := 0; round < 300; round++ {
		h := newHarness(t)
		brokers := 1 + rng.IntN(3)
		for id := 1; id <= brokers; id++ {
			h.mustApply(registerRecord(int32(id), ""))
		}
		for i, name := range names[:2+rng.IntN(3)] {
			if rng.IntN(2) == 0 {
				h.apply(createTopicRecord(name, 1, 1, 0, 100+i)) // c_d may collide with c.d
			}
		}
		atomic := rng.IntN(2) == 0
		var record *metadatav1.Record
		var check func() Result
		if rng.IntN(2) == 0 {
			var items []*metadatav1.CreateTopicRecord
			for i := 0; i < 1+rng.IntN(5); i++ {
				items = append(items, batchItem(names[rng.IntN(len(names))], int32(1+rng.IntN(3)), int32(1+rng.IntN(3)), 1+rng.IntN(4)))
			}
			record = createTopicsRecord(atomic, items...)
			check = func() Result { return h.sm.CheckCreateTopics(record.GetCreateTopics()) }
		} else {
			var batch []string
			for i := 0; i < 1+rng.IntN(5); i++ {
				batch = append(batch, names[rng.IntN(len(names))])
			}
			record = deleteTopicsRecord(atomic, batch...)
			check = func() Result { return h.sm.CheckDeleteTopics(record.GetDeleteTopics()) }
		}
		before := stateBytesWithoutVersion(h.sm)
		dry := check()
		require.Equal(t, before, stateBytesWithoutVersion(h.sm), "a dry run changed the state")
		real := h.apply(record)
		dry.Version = real.Version
		require.Equal(t, dry, real, "round %d: %v", round, record)
		if atomic && real.Err != nil {
			require.Equal(t, before, stateBytesWithoutVersion(h.sm), "an atomic batch applied in part")
		}
	}
}

func TestRetriedBatchGetsItsFirstAnswer(t *testing.T) {
	h := newHarness(t)
	items := mixedBatch(h)
	session := h.openSession("batch")
	first := h.mustApply(withRequestID(createTopicsRecord(false, items...), session, 1))
	h.mustApply(deleteTopicsRecord(false, "b", "e"))

	data := h.sm.Snapshot()
	restored, err := Restore(data)
	require.NoError(t, err)
	require.Equal(t, data, restored.Snapshot(), "the items of a session's result survive a snapshot")
	for _, sm := range []*StateMachine{h.sm, restored} {
		retry := sm.Apply(sm.AppliedIndex()+1, withRequestID(createTopicsRecord(false, items...), session, 1))
		assert.True(t, retry.Duplicate)
		assert.Equal(t, itemCodes(first.Items), itemCodes(retry.Items), "the first answer, item by item")
		for i := range first.Items {
			assert.Equal(t, first.Items[i].TopicID, retry.Items[i].TopicID)
		}
		assert.Nil(t, sm.Topic("b"), "a retry re-created a deleted topic")
	}
}

// A snapshot written by the previous format (no batch items) restores, and
// its sessions still answer their retries.
func TestSnapshotOfFormatTwoRestores(t *testing.T) {
	data, err := os.ReadFile("testdata/snapshot-format-2.bin")
	require.NoError(t, err)
	sm, err := Restore(data)
	require.NoError(t, err)
	require.NotNil(t, sm.Topic("x"))
	assert.Len(t, sm.Topic("x").Partitions, 4)
	assert.Len(t, sm.Brokers(), 3)
	// The fixture's sessions opened at indexes 4 and 6; the second's
	// request failed with TOPIC_ALREADY_EXISTS.
	retry, ok := sm.LookupRequest(&metadatav1.RequestId{ClientId: "client-of-6", SessionId: 6, Sequence: 1})
	require.True(t, ok)
	assert.Equal(t, metadatav1.ErrorCode_TOPIC_ALREADY_EXISTS, retry.Err.GetCode())
	again, err := Restore(sm.Snapshot())
	require.NoError(t, err)
	assert.Equal(t, sm.Hash(), again.Hash(), "re-encoded in the current format")
}

// Sessions keep their batch answers as codes and ids, and at most
// SessionItemsMax items in all: beyond, the least recently active sessions
// go (their retries are refused as expired, never applied twice).
func TestSessionsHoldBoundedBatchAnswers(t *testing.T) {
	h := newHarness(t)
	h.mustApply(registerRecord(1, ""))
	names := make([]string, TopicsPerBatchMax)
	for i := range names {
		names[i] = fmt.Sprintf("%0200d", i) // long names of topics that do not exist
	}
	sessions := make([]uint64, SessionItemsMax/TopicsPerBatchMax+1)
	for i := range sessions {
		sessions[i] = h.openSession("big")
		r := h.sm.Apply(h.sm.AppliedIndex()+1, withRequestID(deleteTopicsRecord(false, names...), sessions[i], 1))
		require.Len(t, r.Items, TopicsPerBatchMax)
		require.NotEmpty(t, r.Items[0].Err.Message, "the first answer has its messages")
	}
	assert.LessOrEqual(t, h.sm.sessions.items, SessionItemsMax)
	_, ok := h.sm.LookupRequest(&metadatav1.RequestId{ClientId: "big", SessionId: sessions[0], Sequence: 1})
	assert.False(t, ok, "the oldest session was evicted")
	last, ok := h.sm.LookupRequest(&metadatav1.RequestId{ClientId: "big", SessionId: sessions[len(sessions)-1], Sequence: 1})
	require.True(t, ok)
	assert.Empty(t, last.Items[0].Err.Message, "messages are not kept")
	assert.Less(t, len(h.sm.Snapshot()), 4<<20, "the snapshot holds codes, not 2.5 MB of messages per session")
	restored, err := Restore(h.sm.Snapshot())
	require.NoError(t, err)
	assert.Equal(t, h.sm.sessions.items, restored.sessions.items)
}
