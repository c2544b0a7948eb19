package statemachine

import (
	"encoding/binary"
	"hash/crc32"
	"testing"

	metadatav1 "github.com/dmq-project/metadata/gen/dmq/metadata/v1"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/proto"
)

// fuzzBase is a small cluster for fuzzed records to act on.
func fuzzBase(t testing.TB) *StateMachine {
	h := newHarness(t)
	for id := int32(1); id <= 4; id++ {
		h.mustApply(registerRecord(id, []string{"r1", "r2"}[id%2]))
	}
	h.mustApply(createTopicRecord("orders", 4, 3, 0, 1))
	h.mustApply(createTopicRecord("audit.log", 2, 2, 1, 2))
	return h.sm
}

func fuzzSeeds(t testing.TB) [][]byte {
	sm := fuzzBase(t)
	p := sm.Topic("orders").Partitions[0]
	records := []*metadatav1.Record{
		registerRecord(5, "r3"),
		fenceRecord(1, 0),
		unfenceRecord(1, 0),
		createTopicRecord("new", 3, 2, 7, 3),
		openSessionRecord("c", 60_000),
		withRequestID(createTopicRecord("dup", 1, 1, 0, 4), 1, 1),
		{Body: &metadatav1.Record_DeleteTopic{DeleteTopic: &metadatav1.DeleteTopicRecord{Name: "orders"}}},
		{Body: &metadatav1.Record_CreatePartitions{CreatePartitions: &metadatav1.CreatePartitionsRecord{Topic: "orders", PartitionCount: 9}}},
		{Body: &metadatav1.Record_AlterPartition{AlterPartition: &metadatav1.AlterPartitionRecord{
			BrokerId: p.Leader, BrokerEpoch: int64(p.Leader), Topic: "orders", LeaderEpoch: p.LeaderEpoch,
			PartitionEpoch: p.PartitionEpoch, NewIsr: []int32{p.Leader}}}},
		{Body: &metadatav1.Record_ElectLeaders{ElectLeaders: &metadatav1.ElectLeadersRecord{}}},
		{Body: &metadatav1.Record_BeginControlledShutdown{BeginControlledShutdown: &metadatav1.BeginControlledShutdownRecord{BrokerId: 2}}},
		{Body: &metadatav1.Record_UnregisterBroker{UnregisterBroker: &metadatav1.UnregisterBrokerRecord{BrokerId: 3}}},
	}
	var seeds [][]byte
	var all []byte
	for _, r := range records {
		data, err := proto.Marshal(r)
		require.NoError(t, err)
		one := binary.AppendUvarint(nil, uint64(len(data)))
		one = append(one, data...)
		seeds = append(seeds, one)
		all = append(all, one...)
	}
	return append(seeds, all)
}

// FuzzApplyRecord feeds arbitrary bytes as a sequence of length-prefixed log
// entries to a small cluster: no input may panic, every invariant holds after
// every entry, a rejected entry changes nothing but the version, and the
// state survives a snapshot round trip.
func FuzzApplyRecord(f *testing.F) {
	for _, seed := range fuzzSeeds(f) {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, input []byte) {
		sm := fuzzBase(t)
		for entries := 0; len(input) > 0 && entries < 64; entries++ {
			n, read := binary.Uvarint(input)
			if read <= 0 || n > uint64(len(input)-read) {
				n, read = uint64(len(input)), 0
			}
			data := input[read : read+int(n)]
			input = input[read+int(n):]
			before := stateBytesWithoutVersion(sm)
			r := sm.ApplyEntry(sm.AppliedIndex()+1, data)
			if r.Err != nil || r.Duplicate {
				require.Equal(t, before, stateBytesWithoutVersion(sm))
			}
			require.NoError(t, sm.CheckInvariants())
			assertNoFencedLeaders(t, sm)
		}
		restored, err := Restore(sm.Snapshot())
		require.NoError(t, err)
		require.Equal(t, sm.Hash(), restored.Hash())
	})
}

// FuzzRestore: arbitrary snapshot bytes never panic; whatever restores is a
// state that satisfies the invariants and re-encodes to the same bytes (an
// older format: to the current one, which then round-trips).
func FuzzRestore(f *testing.F) {
	sm := fuzzBase(f)
	for _, snapshot := range [][]byte{sm.Snapshot(), New().Snapshot()} {
		f.Add(snapshot)
		f.Add(snapshot[:len(snapshot)-4])
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		// Also try the bytes with a valid checksum appended, so that the
		// fuzzer reaches the decoder and not only the checksum.
		sealed := binary.LittleEndian.AppendUint32(append([]byte(nil), data...), crc32.Checksum(data, castagnoli))
		for _, candidate := range [][]byte{data, sealed} {
			restored, err := Restore(candidate)
			if err != nil {
				require.ErrorIs(t, err, ErrCorruptSnapshot)
				continue
			}
			require.NoError(t, restored.CheckInvariants())
			if candidate[len(snapshotMagic)] == snapshotFormatVersion {
				require.Equal(t, candidate, restored.Snapshot())
				continue
			}
			// An older format is read and written in the current one
			// (found by the fuzzer: a format 2 snapshot): that one must
			// then round-trip byte for byte, to the same state.
			upgraded := restored.Snapshot()
			again, err := Restore(upgraded)
			require.NoError(t, err)
			require.Equal(t, upgraded, again.Snapshot())
			require.Equal(t, restored.Hash(), again.Hash())
		}
	})
}
