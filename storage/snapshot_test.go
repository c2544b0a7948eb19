package storage

import (
	"bytes"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
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

func blobs(t *testing.T, s *Store) []string {
	t.Helper()
	names, err := s.engine.blobNames()
	require.NoError(t, err)
	return names
}

// A staged snapshot is not the stored one until it is installed, across a
// restart too; installing one drops every other's data, a staged one
// never installed included. The Pebble engine writes a blob in pieces.
func TestStagedSnapshotIsStoredOnlyOnceInstalled(t *testing.T) {
	for _, b := range backends() {
		t.Run(b.name, func(t *testing.T) {
			s := b.open(t)
			require.NoError(t, s.Save(Update{HardState: hardState(1, 1, 10), Entries: ents(1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1), MustSync: true}))
			at5, at8, at9 := snapshotBytes(2*snapshotBlobPiece+17, 5), snapshotBytes(3*snapshotBlobPiece, 8), snapshotBytes(100, 9)

			require.NoError(t, s.StageSnapshot(5, at5))
			s = b.reopen(t, s)
			requireSnapshot(t, s, 0, nil)

			require.NoError(t, s.StageSnapshot(5, at5))
			_, err := s.InstallSnapshot(5, confState(1), at5)
			require.NoError(t, err)
			requireSnapshot(t, s, 5, at5)
			s = b.reopen(t, s)
			requireSnapshot(t, s, 5, at5)
			require.Equal(t, []string{snapshotBlob(5)}, blobs(t, s))

			require.NoError(t, s.StageSnapshot(8, at8))
			require.Equal(t, []string{snapshotBlob(5), snapshotBlob(8)}, blobs(t, s))
			s = b.reopen(t, s)
			requireSnapshot(t, s, 5, at5)
			require.Equal(t, []string{snapshotBlob(5)}, blobs(t, s), "a blob never installed is dropped at open")
			_, err = s.InstallSnapshot(4, confState(1), at8)
			require.ErrorIs(t, err, ErrSnapOutOfDate)

			_, err = s.CreateSnapshot(9, confState(1), at9)
			require.NoError(t, err)
			require.Equal(t, []string{snapshotBlob(9)}, blobs(t, s), "the data of the snapshot replaced is gone")
			s = b.reopen(t, s)
			requireSnapshot(t, s, 9, at9)
		})
	}
}

// A snapshot from a leader is stored as a blob too, and replaces a
// snapshot of this store's own.
func TestSnapshotFromALeaderIsABlob(t *testing.T) {
	for _, b := range backends() {
		t.Run(b.name, func(t *testing.T) {
			s := b.open(t)
			require.NoError(t, s.Save(Update{HardState: hardState(1, 1, 3), Entries: ents(1, 1, 1, 1), MustSync: true}))
			_, err := s.CreateSnapshot(2, confState(1), []byte("own"))
			require.NoError(t, err)
			fromLeader := snapshotBytes(snapshotBlobPiece+1, 40)
			require.NoError(t, s.Save(Update{HardState: hardState(2, 1, 40), Snapshot: snapshotAt(40, 2, fromLeader)}))
			require.Equal(t, []string{snapshotBlob(40)}, blobs(t, s))
			s = b.reopen(t, s)
			requireSnapshot(t, s, 40, fromLeader)
		})
	}
}

// Data written by a version before blobs, in the log's engine, is read,
// and dropped by the next snapshot stored.
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
	_, err = s.CreateSnapshot(3, confState(1), []byte("a blob"))
	require.NoError(t, err)
	value, err := s.engine.get(keySnapshotData)
	require.NoError(t, err)
	require.Nil(t, value, "the whole value of the earlier version is left behind")
}

// A snapshot whose blob is cut short, damaged or gone does not open.
func TestDamagedSnapshotBlobIsCorrupt(t *testing.T) {
	for _, damage := range []struct {
		name string
		do   func(blob []byte) []byte
	}{
		{"cut short", func(blob []byte) []byte { return blob[:len(blob)-100] }},
		{"a bit flipped", func(blob []byte) []byte { blob[len(blob)/2] ^= 1; return blob }},
		{"gone", func([]byte) []byte { return nil }},
	} {
		t.Run(damage.name, func(t *testing.T) {
			d := NewDisk()
			s, err := OpenMem(d)
			require.NoError(t, err)
			require.NoError(t, s.Save(Update{HardState: hardState(1, 1, 8), Entries: ents(1, 1, 1, 1, 1, 1, 1, 1, 1), MustSync: true}))
			_, err = s.CreateSnapshot(7, confState(1), snapshotBytes(5000, 7))
			require.NoError(t, err)
			if blob := damage.do(d.blobs[snapshotBlob(7)]); blob != nil {
				d.blobs[snapshotBlob(7)] = blob
			} else {
				delete(d.blobs, snapshotBlob(7))
			}
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
	data := snapshotBytes(4*snapshotBlobPiece, 1)
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
		staged = s.StageSnapshot(150, snapshotBytes(8*snapshotBlobPiece, 2))
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

// holdingFS holds the first write to the first temporary snapshot file
// it creates until release is closed, and closes writing when it starts.
type holdingFS struct {
	vfs.FS
	created          atomic.Bool
	writing, release chan struct{}
}

func (fs *holdingFS) Create(name string, category vfs.DiskWriteCategory) (vfs.File, error) {
	f, err := fs.FS.Create(name, category)
	if err != nil || !strings.HasSuffix(name, ".snap.tmp") || !fs.created.CompareAndSwap(false, true) {
		return f, err
	}
	return &holdingFile{File: f, fs: fs}, nil
}

type holdingFile struct {
	vfs.File
	fs   *holdingFS
	once sync.Once
}

func (f *holdingFile) Write(p []byte) (int, error) {
	f.once.Do(func() {
		close(f.fs.writing)
		<-f.fs.release
	})
	return f.File.Write(p)
}

// A snapshot from a leader installed while the store's own is being
// staged neither makes the staging fail (its file is not taken from under
// it) nor leaves the staged data behind once it is found overtaken.
func TestStagingOvertakenByALeadersSnapshot(t *testing.T) {
	fs := &holdingFS{FS: vfs.NewMem(), writing: make(chan struct{}), release: make(chan struct{})}
	s, err := OpenPebble("db", fs)
	require.NoError(t, err)
	require.NoError(t, s.Save(Update{HardState: hardState(1, 1, 5), Entries: ents(1, 1, 1, 1, 1, 1), MustSync: true}))
	own := snapshotBytes(3*snapshotBlobPiece, 5)
	staged := make(chan error, 1)
	go func() { staged <- s.StageSnapshot(5, own) }()
	<-fs.writing
	require.NoError(t, s.Save(Update{HardState: hardState(2, 1, 40), Snapshot: snapshotAt(40, 2, []byte("from the leader"))}))
	close(fs.release)
	require.NoError(t, <-staged, "a staging overtaken by a leader's snapshot failed, which stops the node")
	_, err = s.InstallSnapshot(5, confState(1), own)
	require.ErrorIs(t, err, ErrSnapOutOfDate)
	require.Equal(t, []string{snapshotBlob(40)}, blobs(t, s), "the overtaken snapshot's data stays")
	require.NoError(t, s.Save(Update{HardState: hardState(2, 1, 41), Entries: ents(41, 2), MustSync: true}))
	requireSnapshot(t, s, 40, []byte("from the leader"))
	require.NoError(t, s.Close())
}
