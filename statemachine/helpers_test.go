package statemachine

import (
	"fmt"
	"testing"

	metadatav1 "github.com/dmq-project/metadata/gen/dmq/metadata/v1"
	"github.com/stretchr/testify/require"
)

// harness applies records at consecutive indexes, as a controller would.
type harness struct {
	t  testing.TB
	sm *StateMachine
}

func newHarness(t testing.TB) *harness { return &harness{t: t, sm: New()} }

func (h *harness) apply(record *metadatav1.Record) Result {
	h.t.Helper()
	before := h.sm.Hash()
	r := h.sm.Apply(h.sm.AppliedIndex()+1, record)
	if !r.Duplicate {
		require.Equal(h.t, int64(h.sm.AppliedIndex()), r.Version)
	}
	if r.Err != nil || r.Duplicate {
		// An error or a duplicate changes nothing but the version.
		other := h.sm.Snapshot()
		require.NotEqual(h.t, before, h.sm.Hash(), "the version must move")
		restored, err := Restore(other)
		require.NoError(h.t, err)
		require.Equal(h.t, h.sm.Hash(), restored.Hash())
	}
	require.NoError(h.t, h.sm.CheckInvariants())
	return r
}

func (h *harness) mustApply(record *metadatav1.Record) Result {
	h.t.Helper()
	r := h.apply(record)
	require.Nil(h.t, r.Err, "applying %v", record)
	return r
}

func (h *harness) mustFail(record *metadatav1.Record, code metadatav1.ErrorCode) *Error {
	h.t.Helper()
	snapBefore := stateBytesWithoutVersion(h.sm)
	r := h.apply(record)
	require.NotNil(h.t, r.Err, "applying %v should fail with %v", record, code)
	require.Equal(h.t, code, r.Err.Code, r.Err.Message)
	require.Equal(h.t, snapBefore, stateBytesWithoutVersion(h.sm), "a failed record must change nothing")
	return r.Err
}

// stateBytesWithoutVersion is the snapshot of the metadata with the version,
// the clock and the sessions left out, so that "nothing changed" can be
// compared across an apply (a refused request of a session still records
// its result there).
func stateBytesWithoutVersion(sm *StateMachine) string {
	saved, savedNow, savedSessions := sm.appliedIndex, sm.nowMs, sm.sessions
	sm.appliedIndex, sm.nowMs, sm.sessions = 0, 0, newSessionTable()
	defer func() { sm.appliedIndex, sm.nowMs, sm.sessions = saved, savedNow, savedSessions }()
	return string(sm.Snapshot())
}

func registerRecord(id int32, rack string) *metadatav1.Record {
	return &metadatav1.Record{Body: &metadatav1.Record_RegisterBroker{RegisterBroker: &metadatav1.RegisterBrokerRecord{
		BrokerId: id, Host: fmt.Sprintf("broker-%d.local", id), Port: 9092, Rack: rack, IncarnationId: "inc-1",
	}}}
}

func testTopicID(n int) string {
	var raw [16]byte
	raw[0] = 1
	raw[12], raw[13], raw[14], raw[15] = byte(n>>24), byte(n>>16), byte(n>>8), byte(n)
	return TopicIDFromBytes(raw)
}

func createTopicRecord(name string, partitions, rf int32, offset uint32, idSeed int) *metadatav1.Record {
	return &metadatav1.Record{Body: &metadatav1.Record_CreateTopic{CreateTopic: &metadatav1.CreateTopicRecord{
		Name: name, TopicId: testTopicID(idSeed), PartitionCount: partitions, ReplicationFactor: rf,
		Config: DefaultTopicConfig(1, rf), PlacementOffset: offset,
	}}}
}

func fenceRecord(id int32, epoch int64) *metadatav1.Record {
	return &metadatav1.Record{Body: &metadatav1.Record_FenceBroker{FenceBroker: &metadatav1.FenceBrokerRecord{BrokerId: id, BrokerEpoch: epoch}}}
}

func unfenceRecord(id int32, epoch int64) *metadatav1.Record {
	return &metadatav1.Record{Body: &metadatav1.Record_UnfenceBroker{UnfenceBroker: &metadatav1.UnfenceBrokerRecord{BrokerId: id, BrokerEpoch: epoch}}}
}

func withRequestID(record *metadatav1.Record, session, seq uint64) *metadatav1.Record {
	record.RequestId = &metadatav1.RequestId{ClientId: fmt.Sprintf("client-of-%d", session), SessionId: session, Sequence: seq}
	return record
}

func openSessionRecord(client string, timeoutMs int64) *metadatav1.Record {
	return &metadatav1.Record{Body: &metadatav1.Record_OpenSession{OpenSession: &metadatav1.OpenSessionRecord{ClientId: client, TimeoutMs: timeoutMs}}}
}

// openSession opens a session with a one-minute timeout and returns its id.
func (h *harness) openSession(client string) uint64 {
	h.t.Helper()
	return uint64(h.mustApply(openSessionRecord(client, 60_000)).Version)
}

// at stamps a record with a leader's clock.
func at(ms int64, record *metadatav1.Record) *metadatav1.Record {
	record.LeaderTimeMs = ms
	return record
}
