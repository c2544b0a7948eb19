package storage

import (
	"bytes"
	"math/rand/v2"
	"sync"
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/stretchr/testify/require"
	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"
)

// snapshotBytes is data of n bytes that differs at every offset, so that a
// chunk stored out of place or twice shows.
func snapshotBytes(n int, seed uint64) []byte {
	r := rand.New(rand.NewPCG(seed, 0))
	out := make([]byte, n)
	for i := range out {
		out[i] = byte(r.Uint32())
	}
	return out
}

func requireSnapshot(t *testing.T, s *Store, index uint64, data []byte) {
	t.Helper()
	snap, err := s.Snapshot()
	require.NoError(t, err)
	require.Equal(t, index, snap.GetMetadata().GetIndex())
	require.True(t, bytes.Equal(data, snap.GetData()), "the snapshot at %d holds %d bytes, not its %d", index, len(snap.GetData()), len(data))
}

func chunkIndexes(t *testing.T, s *Store) map[uint64]int {
	t.Helper()
	out := map[uint64]int{}
	require.NoError(t, s.engine.scan(snapshotChunkPrefix, snapshotChunkEnd, func(key, _ []byte) error {
		out[bytesToIndex(key[len(snapshotChunkPrefix):])]++
		return nil
	}))
	return out
}

func bytesToIndex(b []byte) uint64 {
	var v uint64
	for _, c := range b[:8] {
		v = v<<8 | uint64(c)
	}
	return v
}

// A staged snapshot is not the stored one until it is installed, across a
// restart too; installing one drops every other's data, a staged one
// never installed included. Data spans several chunks.
func TestStagedSnapshotIsStoredOnlyOnceInstalled(t *testing.T) {
	for _, b := range backends() {
		t.Run(b.name, func(t *testing.T) {
			s := b.open(t)
			require.NoError(t, s.Save(Update{HardState: hardState(1, 1, 10), Entries: ents(1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1), MustSync: true}))
			at5, at8, at9 := snapshotBytes(2*snapshotChunkBytes+17, 5), snapshotBytes(3*snapshotChunkBytes, 8), snapshotBytes(100, 9)

			require.NoError(t, s.StageSnapshot(5, at5))
			s = b.reopen(t, s)
			requireSnapshot(t, s, 0, nil)

			require.NoError(t, s.StageSnapshot(5, at5))
			_, err := s.InstallSnapshot(5, confState(1), at5)
			require.NoError(t, err)
			requireSnapshot(t, s, 5, at5)
			s = b.reopen(t, s)
			requireSnapshot(t, s, 5, at5)
			require.Equal(t, map[uint64]int{5: 3}, chunkIndexes(t, s))

			require.NoError(t, s.StageSnapshot(8, at8))
			s = b.reopen(t, s)
			requireSnapshot(t, s, 5, at5)
			_, err = s.InstallSnapshot(4, confState(1), at8)
			require.ErrorIs(t, err, ErrSnapOutOfDate)

			_, err = s.CreateSnapshot(9, confState(1), at9)
			require.NoError(t, err)
			require.Equal(t, map[uint64]int{9: 1}, chunkIndexes(t, s), "the data of the snapshot replaced and of the one staged are gone")
			s = b.reopen(t, s)
			requireSnapshot(t, s, 9, at9)
		})
	}
}

// A snapshot from a leader is stored in chunks too, and replaces a
// snapshot of this store's own.
func TestSnapshotFromALeaderIsChunked(t *testing.T) {
	for _, b := range backends() {
		t.Run(b.name, func(t *testing.T) {
			s := b.open(t)
			require.NoError(t, s.Save(Update{HardState: hardState(1, 1, 3), Entries: ents(1, 1, 1, 1), MustSync: true}))
			_, err := s.CreateSnapshot(2, confState(1), []byte("own"))
			require.NoError(t, err)
			fromLeader := snapshotBytes(snapshotChunkBytes+1, 40)
			require.NoError(t, s.Save(Update{HardState: hardState(2, 1, 40), Snapshot: snapshotAt(40, 2, fromLeader)}))
			require.Equal(t, map[uint64]int{40: 2}, chunkIndexes(t, s))
			s = b.reopen(t, s)
			requireSnapshot(t, s, 40, fromLeader)
		})
	}
}

// Data written by a version before chunks, under one key, is read, and
// dropped by the next snapshot stored.
func TestSnapshotOfAnEarlierVersionIsRead(t *testing.T) {
	d := NewDisk()
	s, err := OpenMem(d)
	require.NoError(t, err)
	require.NoError(t, s.Save(Update{HardState: hardState(1, 1, 3), Entries: ents(1, 1, 1, 1), MustSync: true}))
	old := snapshotAt(2, 1, []byte("whole"))
	b := &batch{}
	meta, err := marshalMeta(old)
	require.NoError(t, err)
	b.put(keySnapshotMeta, seal(keySnapshotMeta, meta))
	b.put(keySnapshotData, seal(keySnapshotData, old.GetData()))
	require.NoError(t, s.commit(b, true))
	require.NoError(t, s.Close())

	s, err = OpenMem(d)
	require.NoError(t, err)
	requireSnapshot(t, s, 2, []byte("whole"))
	_, err = s.CreateSnapshot(3, confState(1), []byte("chunked"))
	require.NoError(t, err)
	value, err := s.engine.get(keySnapshotData)
	require.NoError(t, err)
	require.Nil(t, value, "the whole value of the earlier version is left behind")
}

// A snapshot missing its last chunk, or holding one out of sequence, does
// not open: its data would be cut short.
func TestSnapshotMissingAChunkIsCorrupt(t *testing.T) {
	for _, damage := range []struct {
		name string
		do   func(b *batch)
	}{
		{"last chunk gone", func(b *batch) { b.deleteRange(snapshotChunkKey(7, 2), snapshotChunkKey(7, 3)) }},
		{"middle chunk gone", func(b *batch) { b.deleteRange(snapshotChunkKey(7, 1), snapshotChunkKey(7, 2)) }},
	} {
		t.Run(damage.name, func(t *testing.T) {
			d := NewDisk()
			s, err := OpenMem(d)
			require.NoError(t, err)
			require.NoError(t, s.Save(Update{HardState: hardState(1, 1, 8), Entries: ents(1, 1, 1, 1, 1, 1, 1, 1, 1), MustSync: true}))
			_, err = s.CreateSnapshot(7, confState(1), snapshotBytes(2*snapshotChunkBytes+5, 7))
			require.NoError(t, err)
			b := &batch{}
			damage.do(b)
			require.NoError(t, s.commit(b, true))
			require.NoError(t, s.Close())
			_, err = OpenMem(d)
			require.ErrorIs(t, err, ErrCorrupt)
		})
	}
}

// Staging runs beside the owner's writes and reads (the race detector
// watches), a failed staging write poisons the store as any failed write
// does, and Close waits for a staging under way.
func TestStagingRunsBesideTheOwner(t *testing.T) {
	fs := vfs.NewMem()
	s, err := OpenPebble("db", fs)
	require.NoError(t, err)
	require.NoError(t, s.Save(Update{HardState: hardState(1, 1, 1), Entries: ents(1, 1), MustSync: true}))
	data := snapshotBytes(4*snapshotChunkBytes, 1)
	var wg sync.WaitGroup
	wg.Add(1)
	var staged error
	go func() {
		defer wg.Done()
		staged = s.StageSnapshot(1, data)
	}()
	for i := uint64(2); i < 200; i++ {
		require.NoError(t, s.Save(Update{HardState: hardState(1, 1, i), Entries: ents(i, 1), MustSync: true}))
		_, err := s.Entries(i, i+1, 1<<20)
		require.NoError(t, err)
	}
	wg.Wait()
	require.NoError(t, staged)
	_, err = s.InstallSnapshot(1, confState(1), data)
	require.NoError(t, err)

	wg.Add(1)
	go func() {
		defer wg.Done()
		staged = s.StageSnapshot(150, snapshotBytes(8*snapshotChunkBytes, 2))
	}()
	require.NoError(t, s.Close())
	wg.Wait()
	if staged != nil {
		require.ErrorIs(t, staged, ErrClosed, "a staging either finished before Close or never began")
	}
	s, err = OpenPebble("db", fs)
	require.NoError(t, err)
	requireSnapshot(t, s, 1, data)
	requireBounds(t, s, 1, 199)
	require.NoError(t, s.Close())

	d := NewDisk()
	m, err := OpenMem(d)
	require.NoError(t, err)
	require.NoError(t, m.Save(Update{HardState: hardState(1, 1, 1), Entries: ents(1, 1), MustSync: true}))
	d.FailSyncs = 1
	require.ErrorIs(t, m.StageSnapshot(1, data), ErrInjectedSync)
	require.ErrorIs(t, m.Save(Update{Entries: ents(2, 1)}), ErrFailed, "a failed staging must poison the store")
}

func snapshotAt(index, term uint64, data []byte) *raftpb.Snapshot {
	return &raftpb.Snapshot{Metadata: &raftpb.SnapshotMetadata{Index: new(index), Term: new(term), ConfState: confState(1)}, Data: data}
}

func marshalMeta(snap *raftpb.Snapshot) ([]byte, error) { return proto.Marshal(snap.GetMetadata()) }
