package statemachine

import (
	"encoding/binary"
	"hash/crc32"
	"strings"
	"testing"

	metadatav1 "github.com/dmq-project/metadata/gen/dmq/metadata/v1"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/proto"
)

func TestRegisterBroker(t *testing.T) {
	h := newHarness(t)
	r := h.mustApply(registerRecord(1, "rack1"))
	assert.EqualValues(t, 1, r.BrokerEpoch, "the epoch is the index of the registration")
	b := h.sm.Broker(1)
	require.NotNil(t, b)
	assert.True(t, b.IsAlive)
	assert.Equal(t, "rack1", b.Rack)
	assert.EqualValues(t, 1, b.BrokerEpoch)

	// The same incarnation at the same endpoint: idempotent, same epoch.
	r = h.mustApply(registerRecord(1, "rack1"))
	assert.EqualValues(t, 1, r.BrokerEpoch)

	// Once fenced, a new incarnation may take the id over, with a new epoch.
	h.mustApply(fenceRecord(1, 1))
	assert.False(t, h.sm.Broker(1).IsAlive)
	takeover := registerRecord(1, "rack2")
	takeover.GetRegisterBroker().IncarnationId = "inc-2"
	r = h.mustApply(takeover)
	assert.EqualValues(t, 4, r.BrokerEpoch)
	assert.True(t, h.sm.Broker(1).IsAlive)
	assert.Equal(t, "rack2", h.sm.Broker(1).Rack)

	// A fence aimed at the old epoch no longer applies.
	h.mustFail(fenceRecord(1, 1), metadatav1.ErrorCode_STALE_BROKER_EPOCH)
}

func TestFenceMovesLeadershipAndKeepsTheLastISRMember(t *testing.T) {
	h := newHarness(t)
	for id := int32(1); id <= 3; id++ {
		h.mustApply(registerRecord(id, ""))
	}
	h.mustApply(createTopicRecord("t", 6, 2, 0, 1))
	before := h.sm.Topic("t")

	h.mustApply(fenceRecord(1, 0))
	after := h.sm.Topic("t")
	for i, p := range after.Partitions {
		old := before.Partitions[i]
		assert.NotContains(t, p.Isr, int32(1), "fenced broker left the ISR of %d", i)
		assert.NotEqual(t, int32(1), p.Leader)
		if old.Leader == 1 {
			assert.Equal(t, old.LeaderEpoch+1, p.LeaderEpoch)
			assert.Contains(t, old.Isr, p.Leader, "the new leader comes from the old ISR")
		}
		if contains(old.Isr, 1) {
			assert.Equal(t, old.PartitionEpoch+1, p.PartitionEpoch)
		} else {
			assert.True(t, proto.Equal(old, p), "untouched partition %d changed", i)
		}
	}

	// Fence the second broker too: partitions whose ISR is down to one
	// member stay offline rather than losing their last in-sync replica.
	h.mustApply(fenceRecord(2, 0))
	offline := 0
	for _, p := range h.sm.Topic("t").Partitions {
		if p.Leader == NoLeader {
			offline++
			require.Len(t, p.Isr, 1)
			assert.Contains(t, []int32{1, 2}, p.Isr[0])
		} else {
			assert.Equal(t, int32(3), p.Leader)
		}
	}
	assert.Positive(t, offline)
	assert.Equal(t, offline, h.sm.OfflinePartitionCount())

	// When the last ISR member comes back, it leads again.
	h.mustApply(unfenceRecord(1, 0))
	h.mustApply(unfenceRecord(2, 0))
	assert.Zero(t, h.sm.OfflinePartitionCount())
}

func TestUncleanElection(t *testing.T) {
	h := newHarness(t)
	for id := int32(1); id <= 2; id++ {
		h.mustApply(registerRecord(id, ""))
	}
	rec := createTopicRecord("unclean", 1, 2, 0, 1)
	rec.GetCreateTopic().Config.UncleanLeaderElectionEnable = true
	h.mustApply(rec)
	p := h.sm.Topic("unclean").Partitions[0]
	leader, follower := p.Leader, p.Replicas[1]
	epoch, _ := h.sm.BrokerEpoch(leader)
	// The leader shrinks the ISR to itself, then dies.
	h.mustApply(&metadatav1.Record{Body: &metadatav1.Record_AlterPartition{AlterPartition: &metadatav1.AlterPartitionRecord{
		BrokerId: leader, BrokerEpoch: epoch, Topic: "unclean", LeaderEpoch: p.LeaderEpoch,
		PartitionEpoch: p.PartitionEpoch, NewIsr: []int32{leader}}}})
	h.mustApply(fenceRecord(leader, 0))
	p = h.sm.Topic("unclean").Partitions[0]
	assert.Equal(t, follower, p.Leader, "an out-of-sync replica takes over when unclean election is allowed")
	assert.Equal(t, []int32{follower}, p.Isr)
}

func TestControlledShutdown(t *testing.T) {
	h := newHarness(t)
	for id := int32(1); id <= 3; id++ {
		h.mustApply(registerRecord(id, ""))
	}
	h.mustApply(createTopicRecord("t", 3, 3, 0, 1))
	h.mustApply(&metadatav1.Record{Body: &metadatav1.Record_BeginControlledShutdown{
		BeginControlledShutdown: &metadatav1.BeginControlledShutdownRecord{BrokerId: 2}}})
	b := h.sm.Broker(2)
	assert.True(t, b.InControlledShutdown)
	assert.False(t, b.IsAlive)
	assert.False(t, b.Fenced)
	for _, p := range h.sm.Topic("t").Partitions {
		assert.NotEqual(t, int32(2), p.Leader)
		assert.NotContains(t, p.Isr, int32(2))
	}
	// A broker shutting down receives no new replicas.
	h.mustFail(createTopicRecord("t3", 1, 3, 0, 2), metadatav1.ErrorCode_INVALID_REPLICATION_FACTOR)
	h.mustApply(createTopicRecord("t2", 4, 2, 0, 3))
	for _, p := range h.sm.Topic("t2").Partitions {
		assert.NotContains(t, p.Replicas, int32(2))
	}
}

func TestAlterPartitionAndPreferredElection(t *testing.T) {
	h := newHarness(t)
	for id := int32(1); id <= 3; id++ {
		h.mustApply(registerRecord(id, ""))
	}
	h.mustApply(createTopicRecord("t", 1, 3, 0, 1))
	p := h.sm.Topic("t").Partitions[0]
	preferred := p.Replicas[0]
	require.Equal(t, preferred, p.Leader)

	h.mustApply(fenceRecord(preferred, 0))
	h.mustApply(unfenceRecord(preferred, 0))
	p = h.sm.Topic("t").Partitions[0]
	require.NotEqual(t, preferred, p.Leader)
	require.NotContains(t, p.Isr, preferred)

	elect := &metadatav1.Record{Body: &metadatav1.Record_ElectLeaders{ElectLeaders: &metadatav1.ElectLeadersRecord{}}}
	assert.Zero(t, h.mustApply(elect).Elected, "the preferred replica is not in the ISR yet")

	// The leader adds the caught-up replica back.
	leaderEpoch, _ := h.sm.BrokerEpoch(p.Leader)
	newISR := append(append([]int32{}, p.Isr...), preferred)
	h.mustApply(&metadatav1.Record{Body: &metadatav1.Record_AlterPartition{AlterPartition: &metadatav1.AlterPartitionRecord{
		BrokerId: p.Leader, BrokerEpoch: leaderEpoch, Topic: "t", LeaderEpoch: p.LeaderEpoch,
		PartitionEpoch: p.PartitionEpoch, NewIsr: newISR}}})
	q := h.sm.Topic("t").Partitions[0]
	assert.Equal(t, newISR, q.Isr)
	assert.Equal(t, p.PartitionEpoch+1, q.PartitionEpoch)
	assert.Equal(t, p.LeaderEpoch, q.LeaderEpoch)

	assert.EqualValues(t, 1, h.mustApply(elect).Elected)
	q = h.sm.Topic("t").Partitions[0]
	assert.Equal(t, preferred, q.Leader)
	assert.Equal(t, p.LeaderEpoch+1, q.LeaderEpoch)
}

func TestUnregisterBroker(t *testing.T) {
	h := newHarness(t)
	for id := int32(1); id <= 2; id++ {
		h.mustApply(registerRecord(id, ""))
	}
	h.mustApply(createTopicRecord("t", 2, 2, 0, 1))
	h.mustApply(&metadatav1.Record{Body: &metadatav1.Record_UnregisterBroker{UnregisterBroker: &metadatav1.UnregisterBrokerRecord{BrokerId: 1}}})
	assert.Nil(t, h.sm.Broker(1))
	for _, p := range h.sm.Topic("t").Partitions {
		assert.Equal(t, int32(2), p.Leader)
		assert.Equal(t, []int32{2}, p.Isr)
	}
}

func TestCreateAndDeleteTopic(t *testing.T) {
	h := newHarness(t)
	h.mustApply(registerRecord(1, "rack1"))
	r := h.mustApply(createTopicRecord("test-topic", 3, 1, 0, 1))
	assert.Equal(t, testTopicID(1), r.TopicID)
	topic := h.sm.Topic("test-topic")
	require.Len(t, topic.Partitions, 3)
	for i, p := range topic.Partitions {
		assert.EqualValues(t, i, p.Partition)
		assert.Equal(t, []int32{1}, p.Replicas)
		assert.Equal(t, []int32{1}, p.Isr)
		assert.EqualValues(t, 1, p.Leader)
	}
	h.mustApply(&metadatav1.Record{Body: &metadatav1.Record_CreatePartitions{CreatePartitions: &metadatav1.CreatePartitionsRecord{Topic: "test-topic", PartitionCount: 5}}})
	assert.Len(t, h.sm.Topic("test-topic").Partitions, 5)
	h.mustApply(&metadatav1.Record{Body: &metadatav1.Record_DeleteTopic{DeleteTopic: &metadatav1.DeleteTopicRecord{Name: "test-topic"}}})
	assert.Nil(t, h.sm.Topic("test-topic"))
	// The name and its collision key are free again.
	h.mustApply(createTopicRecord("test_topic", 1, 1, 0, 2))
}

func TestRetriedRequestIsAppliedOnce(t *testing.T) {
	h := newHarness(t)
	h.mustApply(registerRecord(1, ""))
	a, b := h.openSession("a"), h.openSession("b")
	create := withRequestID(createTopicRecord("once", 1, 1, 0, 1), a, 7)
	first := h.mustApply(create)
	h.mustApply(&metadatav1.Record{Body: &metadatav1.Record_DeleteTopic{DeleteTopic: &metadatav1.DeleteTopicRecord{Name: "once"}}})

	retry := h.apply(create)
	assert.True(t, retry.Duplicate)
	assert.Nil(t, retry.Err)
	assert.Equal(t, first.Version, retry.Version, "a retry reports the version of the first apply")
	assert.Equal(t, first.TopicID, retry.TopicID)
	assert.Nil(t, h.sm.Topic("once"), "the retry must not recreate the deleted topic")

	// The same sequence in another session is a different request.
	other := withRequestID(createTopicRecord("once", 1, 1, 0, 2), b, 7)
	assert.False(t, h.mustApply(other).Duplicate)
}

func TestRequestRejectedOnceIsRejectedOnRetry(t *testing.T) {
	h := newHarness(t)
	h.mustApply(registerRecord(1, ""))
	a := h.openSession("a")
	// Answered with a definite error, the request must not apply later
	// through a delayed retry, whatever changed in between.
	bad := withRequestID(createTopicRecord("late", 1, 2, 0, 3), a, 1)
	h.mustFail(bad, metadatav1.ErrorCode_INVALID_REPLICATION_FACTOR)
	h.mustApply(registerRecord(2, ""))
	again := h.apply(bad)
	assert.True(t, again.Duplicate)
	assert.Equal(t, metadatav1.ErrorCode_INVALID_REPLICATION_FACTOR, again.Err.GetCode())
	assert.Nil(t, h.sm.Topic("late"))
}

// The window of a count-bounded table: however many writes of other
// sessions apply between an attempt and its retry, the retry is answered
// from the session, never applied again.
func TestRetryAfterManyOtherWritesIsStillADuplicate(t *testing.T) {
	h := newHarness(t)
	h.mustApply(registerRecord(1, ""))
	a := h.openSession("a")
	create := withRequestID(createTopicRecord("victim", 1, 1, 0, 1), a, 1)
	first := h.mustApply(create)
	h.mustApply(&metadatav1.Record{Body: &metadatav1.Record_DeleteTopic{DeleteTopic: &metadatav1.DeleteTopicRecord{Name: "victim"}}})
	busy := h.openSession("busy")
	for seq := uint64(1); seq <= 25_000; seq++ {
		h.sm.Apply(h.sm.AppliedIndex()+1, withRequestID(&metadatav1.Record{Body: &metadatav1.Record_NoOp{NoOp: &metadatav1.NoOpRecord{}}}, busy, seq))
	}
	retry := h.apply(create)
	assert.True(t, retry.Duplicate)
	assert.Equal(t, first.Version, retry.Version)
	assert.Nil(t, h.sm.Topic("victim"), "a retry re-created a deleted topic")
}

func TestStaleSequenceIsRefusedNotApplied(t *testing.T) {
	h := newHarness(t)
	h.mustApply(registerRecord(1, ""))
	a := h.openSession("a")
	stale := withRequestID(createTopicRecord("stale", 1, 1, 0, 1), a, 1)
	h.mustApply(stale)
	h.mustApply(withRequestID(&metadatav1.Record{Body: &metadatav1.Record_DeleteTopic{DeleteTopic: &metadatav1.DeleteTopicRecord{Name: "stale"}}}, a, 2))
	// A delayed copy of request 1 arrives after the client moved on to 2.
	h.mustFail(stale, metadatav1.ErrorCode_SESSION_EXPIRED)
	assert.Nil(t, h.sm.Topic("stale"))
}

func TestRequestOfAnUnknownOrExpiredSessionIsRefused(t *testing.T) {
	h := newHarness(t)
	h.mustApply(registerRecord(1, ""))
	h.mustFail(withRequestID(createTopicRecord("never", 1, 1, 0, 1), 99, 1), metadatav1.ErrorCode_SESSION_EXPIRED)

	a := uint64(h.mustApply(at(1_000, openSessionRecord("a", 5_000))).Version)
	h.mustApply(at(5_999, withRequestID(createTopicRecord("in-time", 1, 1, 0, 2), a, 1)))
	// The clock is the largest stamp applied: a leader whose clock is
	// behind does not move it back.
	h.mustApply(at(10_999, &metadatav1.Record{Body: &metadatav1.Record_NoOp{NoOp: &metadatav1.NoOpRecord{}}}))
	h.mustApply(at(100, withRequestID(createTopicRecord("still", 1, 1, 0, 3), a, 2)))
	// Over 5 s after its last request, at 10 999 ms, the session is gone.
	h.mustApply(at(16_001, &metadatav1.Record{Body: &metadatav1.Record_NoOp{NoOp: &metadatav1.NoOpRecord{}}}))
	assert.Zero(t, h.sm.sessions.len())
	err := h.mustFail(withRequestID(createTopicRecord("late", 1, 1, 0, 4), a, 3), metadatav1.ErrorCode_SESSION_EXPIRED)
	assert.Contains(t, err.Message, "unknown or expired")
	// Even a retry of its last request: the outcome is unknown, not a success.
	h.mustFail(withRequestID(createTopicRecord("still", 1, 1, 0, 3), a, 2), metadatav1.ErrorCode_SESSION_EXPIRED)
	restored, rerr := Restore(h.sm.Snapshot())
	require.NoError(t, rerr)
	assert.Equal(t, h.sm.Hash(), restored.Hash())
}

func TestSessionTableIsBoundedByEvictingTheLeastRecentlyActive(t *testing.T) {
	sm := New()
	index := uint64(0)
	open := func() uint64 {
		index++
		r := sm.Apply(index, openSessionRecord("c", 60_000))
		require.Nil(t, r.Err)
		return index
	}
	first := open()
	second := open()
	for i := 2; i < SessionsMax; i++ {
		open()
	}
	// The first session stays active; the second is now the least recent.
	index++
	require.Nil(t, sm.Apply(index, withRequestID(&metadatav1.Record{Body: &metadatav1.Record_NoOp{NoOp: &metadatav1.NoOpRecord{}}}, first, 1)).Err)
	open()
	assert.Equal(t, SessionsMax, sm.sessions.len())
	_, live := sm.sessions.live(second, 0)
	assert.False(t, live, "the least recently active session is evicted")
	_, live = sm.sessions.live(first, 0)
	assert.True(t, live)
	restored, err := Restore(sm.Snapshot())
	require.NoError(t, err)
	assert.Equal(t, sm.Hash(), restored.Hash())
	// Both evict the same session next.
	index++
	rec := openSessionRecord("c", 60_000)
	sm.Apply(index, rec)
	restored.Apply(index, rec)
	assert.Equal(t, sm.Hash(), restored.Hash())
}

// A full table gives up an expired session before a live one, even when a
// long-lived session at the head holds the expired ones behind it.
func TestFullSessionTableEvictsAnExpiredSessionFirst(t *testing.T) {
	sm := New()
	index := uint64(1)
	require.Nil(t, sm.Apply(index, at(0, openSessionRecord("long", SessionTimeoutMax))).Err)
	long := index
	index++
	require.Nil(t, sm.Apply(index, at(0, openSessionRecord("short", SessionTimeoutMin))).Err)
	short := index
	for sm.sessions.len() < SessionsMax {
		index++
		require.Nil(t, sm.Apply(index, at(SessionTimeoutMin, openSessionRecord("c", 60_000))).Err)
	}
	index++
	require.Nil(t, sm.Apply(index, at(SessionTimeoutMin+1, openSessionRecord("new", 60_000))).Err)
	_, live := sm.sessions.live(long, sm.nowMs)
	assert.True(t, live, "the live session at the head is kept")
	_, kept := sm.sessions.byID[short]
	assert.False(t, kept, "the expired session behind it is evicted")
	restored, err := Restore(sm.Snapshot())
	require.NoError(t, err)
	assert.Equal(t, sm.Hash(), restored.Hash())
}

func TestOpenSessionValidatesItsTimeout(t *testing.T) {
	h := newHarness(t)
	h.mustFail(openSessionRecord("c", SessionTimeoutMin-1), metadatav1.ErrorCode_INVALID_REQUEST)
	h.mustFail(openSessionRecord("c", SessionTimeoutMax+1), metadatav1.ErrorCode_INVALID_REQUEST)
	h.mustFail(openSessionRecord(strings.Repeat("c", 129), 60_000), metadatav1.ErrorCode_INVALID_REQUEST)
	assert.Nil(t, ValidateRequestID(nil))
	assert.Equal(t, metadatav1.ErrorCode_INVALID_REQUEST, ValidateRequestID(&metadatav1.RequestId{ClientId: "c", Sequence: 1}).GetCode(),
		"a request id without a session is refused before it is proposed")
	assert.Equal(t, metadatav1.ErrorCode_INVALID_REQUEST, ValidateRequestID(&metadatav1.RequestId{SessionId: 3}).GetCode())
}

func TestDeltaSince(t *testing.T) {
	h := newHarness(t)
	h.mustApply(registerRecord(1, ""))
	h.mustApply(registerRecord(2, ""))
	v2 := h.sm.Version()
	h.mustApply(createTopicRecord("a", 2, 2, 0, 1))
	h.mustApply(createTopicRecord("b", 2, 2, 0, 2))
	v4 := h.sm.Version()
	h.mustApply(fenceRecord(1, 0))
	h.mustApply(&metadatav1.Record{Body: &metadatav1.Record_DeleteTopic{DeleteTopic: &metadatav1.DeleteTopicRecord{Name: "a"}}})
	h.sm.Advance(h.sm.AppliedIndex() + 1)

	delta, ok := h.sm.DeltaSince(v4)
	require.True(t, ok)
	assert.Equal(t, v4, delta.FromVersion)
	assert.Equal(t, h.sm.Version(), delta.ToVersion)
	require.Len(t, delta.UpsertedBrokers, 1)
	assert.True(t, delta.UpsertedBrokers[0].Fenced)
	assert.Equal(t, []string{"a"}, delta.DeletedTopics)
	assert.Empty(t, delta.UpsertedTopics)
	require.Len(t, delta.ChangedPartitions, 2, "both partitions of b lost broker 1")
	for _, p := range delta.ChangedPartitions {
		assert.Equal(t, "b", p.Topic)
		assert.True(t, proto.Equal(h.sm.Topic("b").Partitions[p.Partition], p))
	}

	delta, ok = h.sm.DeltaSince(v2)
	require.True(t, ok)
	require.Len(t, delta.UpsertedTopics, 1)
	assert.Equal(t, "b", delta.UpsertedTopics[0].Name)
	assert.Len(t, delta.UpsertedTopics[0].Partitions, 2)
	assert.Empty(t, delta.ChangedPartitions, "partitions of an upserted topic travel with it")

	delta, ok = h.sm.DeltaSince(h.sm.Version())
	require.True(t, ok)
	assert.Empty(t, delta.UpsertedBrokers)

	_, ok = h.sm.DeltaSince(h.sm.Version() + 1)
	assert.False(t, ok, "a receiver ahead of the controller has diverged: full state")

	restored, err := Restore(h.sm.Snapshot())
	require.NoError(t, err)
	_, ok = restored.DeltaSince(v4)
	assert.False(t, ok, "a restored node holds no history before its snapshot")
	_, ok = restored.DeltaSince(restored.Version())
	assert.True(t, ok)
}

// A delta says what a receiver that applies only upserts and deletions
// needs to know: a topic deleted and created again is deleted first (its
// old partitions must not linger where the new topic has fewer), and a
// topic that grew is upserted whole (its changed partitions are always
// ones a receiver at the base holds). The seed's receivers rely on both.
func TestDeltaSinceRecreatedAndGrownTopics(t *testing.T) {
	h := newHarness(t)
	h.mustApply(registerRecord(1, ""))
	h.mustApply(createTopicRecord("a", 4, 1, 0, 1))
	h.mustApply(createTopicRecord("b", 1, 1, 0, 2))
	base := h.sm.Version()
	h.mustApply(&metadatav1.Record{Body: &metadatav1.Record_DeleteTopic{DeleteTopic: &metadatav1.DeleteTopicRecord{Name: "a"}}})
	h.mustApply(createTopicRecord("a", 2, 1, 0, 3))
	h.mustApply(&metadatav1.Record{Body: &metadatav1.Record_CreatePartitions{CreatePartitions: &metadatav1.CreatePartitionsRecord{Topic: "b", PartitionCount: 3}}})

	delta, ok := h.sm.DeltaSince(base)
	require.True(t, ok)
	assert.Equal(t, []string{"a"}, delta.DeletedTopics, "deleted, though it exists again")
	require.Len(t, delta.UpsertedTopics, 2)
	assert.Equal(t, "a", delta.UpsertedTopics[0].Name)
	assert.Len(t, delta.UpsertedTopics[0].Partitions, 2)
	assert.Equal(t, "b", delta.UpsertedTopics[1].Name)
	assert.Len(t, delta.UpsertedTopics[1].Partitions, 3, "a grown topic travels whole")
	assert.Empty(t, delta.ChangedPartitions)
}

func TestHistoryIsBounded(t *testing.T) {
	sm := New()
	sm.Apply(1, registerRecord(1, ""))
	for i := uint64(2); i < 2+historyEntriesMax+5; i++ {
		rec := fenceRecord(1, 0)
		if i%2 == 1 {
			rec = unfenceRecord(1, 0)
		}
		require.Nil(t, sm.Apply(i, rec).Err)
	}
	assert.Len(t, sm.history.changes, historyEntriesMax)
	_, ok := sm.DeltaSince(1)
	assert.False(t, ok)
	_, ok = sm.DeltaSince(sm.history.floor)
	assert.True(t, ok)
}

func TestSnapshotRoundTripAndCorruption(t *testing.T) {
	h := newHarness(t)
	for id := int32(1); id <= 4; id++ {
		h.mustApply(registerRecord(id, []string{"a", "b"}[id%2]))
	}
	h.mustApply(withRequestID(createTopicRecord("x", 8, 3, 5, 1), h.openSession("cli"), 1))
	h.mustApply(fenceRecord(2, 0))
	data := h.sm.Snapshot()
	assert.Equal(t, data, h.sm.Snapshot(), "snapshots are deterministic")

	restored, err := Restore(data)
	require.NoError(t, err)
	assert.Equal(t, h.sm.Hash(), restored.Hash())
	assert.Equal(t, data, restored.Snapshot())
	assert.True(t, proto.Equal(h.sm.ClusterState(), restored.ClusterState()))

	for _, i := range []int{0, 9, len(data) / 2, len(data) - 1} {
		corrupt := append([]byte(nil), data...)
		corrupt[i] ^= 0x40
		_, err := Restore(corrupt)
		assert.ErrorIs(t, err, ErrCorruptSnapshot, "flipped byte %d", i)
	}
	_, err = Restore(data[:len(data)-1])
	assert.ErrorIs(t, err, ErrCorruptSnapshot)
	_, err = Restore(nil)
	assert.ErrorIs(t, err, ErrCorruptSnapshot)
}

func contains(ids []int32, id int32) bool {
	for _, x := range ids {
		if x == id {
			return true
		}
	}
	return false
}

func TestImbalancedPartitions(t *testing.T) {
	h := newHarness(t)
	for id := int32(1); id <= 3; id++ {
		h.mustApply(registerRecord(id, ""))
	}
	h.mustApply(createTopicRecord("t", 6, 2, 0, 1))
	assert.Empty(t, h.sm.ImbalancedPartitions(10))
	h.mustApply(fenceRecord(1, 0))
	assert.Empty(t, h.sm.ImbalancedPartitions(10), "a fenced preferred replica is not a candidate")
	h.mustApply(unfenceRecord(1, 0))
	// Broker 1 is back but out of the ISRs: still no candidates until the
	// leaders add it back.
	assert.Empty(t, h.sm.ImbalancedPartitions(10))
	for _, p := range h.sm.Topic("t").Partitions {
		if p.Replicas[0] != 1 {
			continue
		}
		epoch, _ := h.sm.BrokerEpoch(p.Leader)
		h.mustApply(&metadatav1.Record{Body: &metadatav1.Record_AlterPartition{AlterPartition: &metadatav1.AlterPartitionRecord{
			BrokerId: p.Leader, BrokerEpoch: epoch, Topic: "t", Partition: p.Partition, LeaderEpoch: p.LeaderEpoch,
			PartitionEpoch: p.PartitionEpoch, NewIsr: append(append([]int32{}, p.Isr...), 1)}}})
	}
	all := h.sm.ImbalancedPartitions(10)
	require.Len(t, all, 1)
	assert.Len(t, all[0].Partitions, 2)
	limited := h.sm.ImbalancedPartitions(1)
	require.Len(t, limited, 1)
	assert.Len(t, limited[0].Partitions, 1)
}

func TestSnapshotOfFormatOneIsRefusedClearly(t *testing.T) {
	data := New().Snapshot()
	body := append([]byte(nil), data[:len(data)-4]...)
	body[len(snapshotMagic)] = 1 // the format version, a one-byte varint
	old := binary.LittleEndian.AppendUint32(body, crc32.Checksum(body, castagnoli))
	_, err := Restore(old)
	require.ErrorIs(t, err, ErrCorruptSnapshot)
	assert.Contains(t, err.Error(), "predates client sessions")
}

// The brokers that left are remembered (replicated, in snapshots), most
// recent last, until they register again, and at most DepartedBrokersMax.
func TestDepartedBrokersAreRemembered(t *testing.T) {
	h := newHarness(t)
	unregister := func(id int32) {
		h.mustApply(&metadatav1.Record{Body: &metadatav1.Record_UnregisterBroker{UnregisterBroker: &metadatav1.UnregisterBrokerRecord{BrokerId: id}}})
	}
	for id := int32(1); id <= 3; id++ {
		h.mustApply(registerRecord(id, ""))
	}
	unregister(2)
	unregister(1)
	assert.Equal(t, []int32{2, 1}, h.sm.DepartedBrokers())
	h.mustApply(registerRecord(2, ""))
	assert.Equal(t, []int32{1}, h.sm.DepartedBrokers(), "a broker back is no longer departed")
	restored, err := Restore(h.sm.Snapshot())
	require.NoError(t, err)
	assert.Equal(t, []int32{1}, restored.DepartedBrokers())

	for id := int32(100); id < 100+DepartedBrokersMax; id++ {
		h.mustApply(registerRecord(id, ""))
		unregister(id)
	}
	departed := h.sm.DepartedBrokers()
	require.Len(t, departed, DepartedBrokersMax)
	assert.Equal(t, int32(100), departed[0], "the oldest is forgotten first")
}

// The controller's rebalance names what its state held when it proposed;
// a topic deleted or shrunk in between is skipped, not a reason to elect
// nothing (found by review: one deleted topic failed the whole record).
func TestRebalanceSkipsTargetsGoneSinceItWasProposed(t *testing.T) {
	h := newHarness(t)
	h.mustApply(registerRecord(1, ""))
	h.mustApply(registerRecord(2, ""))
	h.mustApply(createTopicRecord("kept", 1, 2, 0, 1))
	p := h.sm.Topic("kept").Partitions[0]
	// Move the leader off the preferred replica: fence it and bring it back.
	h.mustApply(fenceRecord(p.Replicas[0], 0))
	h.mustApply(unfenceRecord(p.Replicas[0], 0))
	require.Nil(t, h.isrChange("kept", 0, p.Replicas[1], p.Replicas[0]).Err)
	require.NotEqual(t, p.Replicas[0], h.sm.Topic("kept").Partitions[0].Leader)
	targets := []*metadatav1.TopicPartitions{{Topic: "gone", Partitions: []int32{0}}, {Topic: "kept", Partitions: []int32{0, 5}}}
	h.mustFail(&metadatav1.Record{Body: &metadatav1.Record_ElectLeaders{ElectLeaders: &metadatav1.ElectLeadersRecord{Targets: targets}}},
		metadatav1.ErrorCode_UNKNOWN_TOPIC)
	r := h.mustApply(&metadatav1.Record{Body: &metadatav1.Record_ElectLeaders{ElectLeaders: &metadatav1.ElectLeadersRecord{Targets: targets, SkipMissing: true}}})
	assert.EqualValues(t, 1, r.Elected)
	assert.Equal(t, p.Replicas[0], h.sm.Topic("kept").Partitions[0].Leader)
}
