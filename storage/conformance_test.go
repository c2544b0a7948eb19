package storage

import (
	"fmt"
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"
)

// backend opens stores on one persistent medium: reopen closes the given
// store and opens the medium again, as a clean restart does.
type backend struct {
	name   string
	open   func(t *testing.T) *Store
	reopen func(t *testing.T, s *Store) *Store
}

func backends() []backend {
	return []backend{
		{
			name: "pebble",
			open: func(t *testing.T) *Store {
				fs := vfs.NewMem()
				s, err := OpenPebble("db", fs)
				require.NoError(t, err)
				pebbleFS[s] = fs
				return s
			},
			reopen: func(t *testing.T, s *Store) *Store {
				fs := pebbleFS[s]
				require.NoError(t, s.Close())
				reopened, err := OpenPebble("db", fs)
				require.NoError(t, err)
				pebbleFS[reopened] = fs
				return reopened
			},
		},
		{
			name: "memdisk",
			open: func(t *testing.T) *Store {
				d := NewDisk()
				s, err := OpenMem(d)
				require.NoError(t, err)
				disks[s] = d
				return s
			},
			reopen: func(t *testing.T, s *Store) *Store {
				d := disks[s]
				require.NoError(t, s.Close())
				reopened, err := OpenMem(d)
				require.NoError(t, err)
				disks[reopened] = d
				return reopened
			},
		},
	}
}

var (
	pebbleFS = map[*Store]vfs.FS{}
	disks    = map[*Store]*Disk{}
)

func ent(index, term uint64) *raftpb.Entry {
	return &raftpb.Entry{Index: new(index), Term: new(term), Type: raftpb.EntryNormal.Enum(),
		Data: []byte(fmt.Sprintf("entry %d/%d", index, term))}
}

func ents(first uint64, terms ...uint64) []*raftpb.Entry {
	out := make([]*raftpb.Entry, len(terms))
	for i, term := range terms {
		out[i] = ent(first+uint64(i), term)
	}
	return out
}

func hardState(term, vote, commit uint64) *raftpb.HardState {
	return &raftpb.HardState{Term: new(term), Vote: new(vote), Commit: new(commit)}
}

func confState(voters ...uint64) *raftpb.ConfState { return &raftpb.ConfState{Voters: voters} }

func requireEntries(t *testing.T, s *Store, lo, hi uint64, want []*raftpb.Entry) {
	t.Helper()
	got, err := s.Entries(lo, hi, ^uint64(0))
	require.NoError(t, err)
	require.Len(t, got, len(want))
	for i := range want {
		require.True(t, proto.Equal(want[i], got[i]), "entry %d: want %v got %v", i, want[i], got[i])
	}
}

func requireBounds(t *testing.T, s *Store, first, last uint64) {
	t.Helper()
	f, err := s.FirstIndex()
	require.NoError(t, err)
	l, err := s.LastIndex()
	require.NoError(t, err)
	require.Equal(t, first, f, "first index")
	require.Equal(t, last, l, "last index")
}

// TestConformance runs the same semantics against both engines, reopening
// after each step to check that what was synced is exactly what comes back.
func TestConformance(t *testing.T) {
	for _, b := range backends() {
		t.Run(b.name, func(t *testing.T) {
			t.Run("empty", func(t *testing.T) {
				s := b.open(t)
				hs, cs, err := s.InitialState()
				require.NoError(t, err)
				assert.Nil(t, hs)
				assert.Empty(t, cs.GetVoters())
				requireBounds(t, s, 1, 0)
				term, err := s.Term(0)
				require.NoError(t, err)
				assert.Zero(t, term)
				_, err = s.Term(1)
				assert.ErrorIs(t, err, ErrUnavailable)
				_, err = s.Entries(1, 1, 100)
				assert.ErrorIs(t, err, ErrUnavailable)
				snap, err := s.Snapshot()
				require.NoError(t, err)
				assert.Zero(t, snap.GetMetadata().GetIndex())
				s = b.reopen(t, s)
				requireBounds(t, s, 1, 0)
			})

			t.Run("append, overwrite, hard state", func(t *testing.T) {
				s := b.open(t)
				require.NoError(t, s.Save(Update{HardState: hardState(3, 1, 2), Entries: ents(1, 1, 1, 2, 2, 3), MustSync: true}))
				requireBounds(t, s, 1, 5)
				requireEntries(t, s, 1, 6, ents(1, 1, 1, 2, 2, 3))
				for i, want := range []uint64{0, 1, 1, 2, 2, 3} {
					term, err := s.Term(uint64(i))
					require.NoError(t, err)
					assert.Equal(t, want, term, "term of %d", i)
				}
				_, err := s.Term(6)
				assert.ErrorIs(t, err, ErrUnavailable)
				assert.Panics(t, func() { _, _ = s.Entries(1, 7, 100) }, "hi beyond last+1 is a caller bug")

				// maxSize returns at least one entry, then stops before exceeding.
				one, err := s.Entries(2, 6, 1)
				require.NoError(t, err)
				assert.Len(t, one, 1)
				size := uint64(proto.Size(ent(2, 1)) + proto.Size(ent(3, 2)))
				two, err := s.Entries(2, 6, size)
				require.NoError(t, err)
				assert.Len(t, two, 2)

				// A new leader's entries from index 3 replace the old suffix.
				require.NoError(t, s.Save(Update{HardState: hardState(4, 2, 2), Entries: ents(3, 4, 4), MustSync: true}))
				requireBounds(t, s, 1, 4)
				requireEntries(t, s, 1, 5, append(ents(1, 1, 1), ents(3, 4, 4)...))

				assert.Panics(t, func() { _ = s.Save(Update{Entries: ents(7, 4)}) }, "a gap after the last entry")

				s = b.reopen(t, s)
				requireBounds(t, s, 1, 4)
				requireEntries(t, s, 1, 5, append(ents(1, 1, 1), ents(3, 4, 4)...))
				hs, _, err := s.InitialState()
				require.NoError(t, err)
				assert.True(t, proto.Equal(hardState(4, 2, 2), hs))

				// Appending at the next index after a reopen continues the log.
				require.NoError(t, s.Save(Update{Entries: ents(5, 4), MustSync: true}))
				requireBounds(t, s, 1, 5)
			})

			t.Run("snapshot and compaction", func(t *testing.T) {
				s := b.open(t)
				require.NoError(t, s.Save(Update{HardState: hardState(2, 1, 6), Entries: ents(1, 1, 1, 1, 2, 2, 2), MustSync: true}))
				assert.Panics(t, func() { _ = s.Compact(3) }, "compaction beyond the snapshot loses entries")

				snap, err := s.CreateSnapshot(4, confState(1, 2, 3), []byte("state@4"))
				require.NoError(t, err)
				assert.EqualValues(t, 4, snap.GetMetadata().GetIndex())
				assert.EqualValues(t, 2, snap.GetMetadata().GetTerm())
				_, err = s.CreateSnapshot(4, confState(1), nil)
				assert.ErrorIs(t, err, ErrSnapOutOfDate)
				_, err = s.CreateSnapshot(3, confState(1), nil)
				assert.ErrorIs(t, err, ErrSnapOutOfDate)

				require.NoError(t, s.Compact(3))
				requireBounds(t, s, 4, 6)
				term, err := s.Term(3)
				require.NoError(t, err)
				assert.EqualValues(t, 1, term, "the term at the compaction point is kept")
				_, err = s.Term(2)
				assert.ErrorIs(t, err, ErrCompacted)
				_, err = s.Entries(3, 5, 100)
				assert.ErrorIs(t, err, ErrCompacted)
				assert.ErrorIs(t, s.Compact(3), ErrCompacted)
				assert.ErrorIs(t, s.Compact(2), ErrCompacted)
				requireEntries(t, s, 4, 7, ents(4, 2, 2, 2))

				// Entries from before the compaction point are skipped on append.
				require.NoError(t, s.Save(Update{Entries: ents(2, 1, 1, 2, 2, 2, 3), MustSync: true}))
				requireBounds(t, s, 4, 7)
				requireEntries(t, s, 4, 8, ents(4, 2, 2, 2, 3))

				s = b.reopen(t, s)
				requireBounds(t, s, 4, 7)
				_, cs, err := s.InitialState()
				require.NoError(t, err)
				assert.Equal(t, []uint64{1, 2, 3}, cs.GetVoters())
				got, err := s.Snapshot()
				require.NoError(t, err)
				assert.Equal(t, []byte("state@4"), got.GetData())
				term, err = s.Term(3)
				require.NoError(t, err)
				assert.EqualValues(t, 1, term)
			})

			t.Run("snapshot from the leader replaces the log", func(t *testing.T) {
				s := b.open(t)
				require.NoError(t, s.Save(Update{HardState: hardState(1, 1, 3), Entries: ents(1, 1, 1, 1, 1, 1), MustSync: true}))
				received := &raftpb.Snapshot{
					Metadata: &raftpb.SnapshotMetadata{Index: new(uint64(10)), Term: new(uint64(5)), ConfState: confState(1, 2)},
					Data:     []byte("state@10"),
				}
				require.NoError(t, s.Save(Update{HardState: hardState(5, 0, 10), Snapshot: received, Entries: ents(11, 5), MustSync: true}))
				requireBounds(t, s, 11, 11)
				term, err := s.Term(10)
				require.NoError(t, err)
				assert.EqualValues(t, 5, term)
				_, err = s.Entries(5, 6, 100)
				assert.ErrorIs(t, err, ErrCompacted)
				assert.ErrorIs(t, s.Save(Update{Snapshot: received, MustSync: true}), ErrSnapOutOfDate)

				s = b.reopen(t, s)
				requireBounds(t, s, 11, 11)
				requireEntries(t, s, 11, 12, ents(11, 5))
				got, err := s.Snapshot()
				require.NoError(t, err)
				assert.True(t, proto.Equal(received, got))
				// The older snapshot arriving late is refused.
				assert.ErrorIs(t, s.Save(Update{Snapshot: received}), ErrSnapOutOfDate)
			})

			t.Run("reads that miss the cache", func(t *testing.T) {
				s := b.open(t)
				s.cacheEntriesMax = 4
				terms := make([]uint64, 40)
				for i := range terms {
					terms[i] = uint64(i/10 + 1)
				}
				for i := 0; i < 40; i += 5 {
					require.NoError(t, s.Save(Update{Entries: ents(uint64(i+1), terms[i:i+5]...), MustSync: i%10 == 0}))
				}
				assert.LessOrEqual(t, len(s.cache), 4)
				requireEntries(t, s, 1, 41, ents(1, terms...))
				requireEntries(t, s, 7, 12, ents(7, terms[6:11]...))
				term, err := s.Term(2)
				require.NoError(t, err)
				assert.EqualValues(t, 1, term)
				// Overwrite inside the uncached part.
				require.NoError(t, s.Save(Update{Entries: ents(3, 9, 9), MustSync: true}))
				requireBounds(t, s, 1, 4)
				requireEntries(t, s, 1, 5, append(ents(1, 1, 1), ents(3, 9, 9)...))
			})

			t.Run("entries are owned by the caller", func(t *testing.T) {
				s := b.open(t)
				require.NoError(t, s.Save(Update{Entries: ents(1, 1, 1, 1), MustSync: true}))
				got, err := s.Entries(1, 3, ^uint64(0))
				require.NoError(t, err)
				_ = append(got, ent(99, 9))
				requireEntries(t, s, 1, 4, ents(1, 1, 1, 1))
			})

			t.Run("closed", func(t *testing.T) {
				s := b.open(t)
				require.NoError(t, s.Close())
				assert.ErrorIs(t, s.Save(Update{Entries: ents(1, 1)}), ErrClosed)
				_, _, err := s.InitialState()
				assert.ErrorIs(t, err, ErrClosed)
			})
		})
	}
}

// A directory is formatted once: its identity survives restarts and a
// second format is refused. A directory of an earlier version (Raft state,
// no identity) is formatted in place, keeping its state.
func TestIdentity(t *testing.T) {
	for _, b := range backends() {
		t.Run(b.name, func(t *testing.T) {
			s := b.open(t)
			_, ok, err := s.Identity()
			require.NoError(t, err)
			require.False(t, ok, "a new directory is not formatted")
			id := Identity{ClusterID: "dmq-1", ControllerID: 2, DirectoryID: 0xfeed}
			require.Error(t, s.Format(Identity{ClusterID: "dmq-1", ControllerID: 2}), "a directory id is required")
			require.NoError(t, s.Format(id))
			require.Error(t, s.Format(Identity{ClusterID: "dmq-1", ControllerID: 2, DirectoryID: 7}))
			s = b.reopen(t, s)
			got, ok, err := s.Identity()
			require.NoError(t, err)
			require.True(t, ok)
			assert.Equal(t, id, got)

			other := b.open(t)
			require.NoError(t, other.Save(Update{HardState: hardState(3, 1, 0), MustSync: true}))
			require.NoError(t, other.Format(id))
			hs, _, err := other.InitialState()
			require.NoError(t, err)
			assert.Equal(t, uint64(3), hs.GetTerm())
		})
	}
}
