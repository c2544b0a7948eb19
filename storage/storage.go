package storage

import (
	"errors"

	"go.etcd.io/raft/v3"
	"go.etcd.io/raft/v3/raftpb"
)

// The sentinel errors. ErrCompacted, ErrUnavailable and ErrSnapOutOfDate are
// raft's own, so that raft recognises them; the others are ours.
var (
	// ErrCompacted: the requested index is at or before the compaction point.
	ErrCompacted = raft.ErrCompacted
	// ErrUnavailable: the requested index is after the last entry.
	ErrUnavailable = raft.ErrUnavailable
	// ErrSnapOutOfDate: a snapshot is not newer than the one held.
	ErrSnapOutOfDate = raft.ErrSnapOutOfDate
	// ErrCorrupt: a stored record failed its checksum or does not decode, or
	// the stored state is inconsistent. Its data is never served.
	ErrCorrupt = errors.New("storage: corrupt record")
	// ErrFailed: an earlier write or sync failed. The store refuses every
	// further write: the only safe continuation is to crash and reopen,
	// because after a failed fsync the kernel may have dropped the dirty
	// pages and a retried fsync can report success for lost data.
	ErrFailed = errors.New("storage: write failed; the store refuses writes until the node restarts")
	// ErrClosed: the store was closed.
	ErrClosed = errors.New("storage: closed")
)

// Update is everything one raft.Ready asks to persist. It is written as one
// atomic batch: after a crash, either all of it is there or none of it.
type Update struct {
	// HardState replaces the stored hard state unless nil or empty.
	HardState *raftpb.HardState
	// Entries are appended to the log. An entry at an index the log already
	// holds replaces it and discards every entry after it (a conflicting
	// suffix from an old leader); entries at or before the compaction point
	// are ignored. Entries must be contiguous and must not leave a gap after
	// the last stored entry.
	Entries []*raftpb.Entry
	// Snapshot, unless nil or empty, replaces the log: it is stored, every
	// entry is discarded, and the log continues after the snapshot's index.
	// It must be newer than the stored snapshot (else ErrSnapOutOfDate).
	Snapshot *raftpb.Snapshot
	// MustSync makes Save return only once the batch is durable (raft's
	// Ready.MustSync). Without it the batch is ordered but may be lost in a
	// crash, together with every unsynced batch after it, never alone.
	// A batch with a Snapshot is always synced, whatever MustSync says:
	// Raft's MustSync ignores snapshots, yet the follower acknowledges the
	// snapshot's index to the leader as soon as Save returns.
	MustSync bool
}

// Storage is the Raft log, hard state and snapshots of one controller. The
// read half is raft.Storage, with its ranges and sentinels:
//
//   - InitialState returns the stored hard state (nil before the first
//     Save) and the conf state of the latest snapshot (empty if none).
//   - Entries(lo, hi, maxSize) returns entries [lo, hi), at least one if
//     any, at most maxSize bytes beyond the first. ErrCompacted if lo is at
//     or before the compaction point, ErrUnavailable if the log holds no
//     entries; hi beyond LastIndex()+1 is a caller bug and panics. The
//     caller owns the returned slice but must not modify the entries.
//   - Term(i) is defined on [FirstIndex()-1, LastIndex()]: ErrCompacted
//     before it, ErrUnavailable after it.
//   - FirstIndex is the compaction point + 1; LastIndex the last entry's
//     index, or the compaction point when the log is empty.
//   - Snapshot returns the latest snapshot (empty before the first).
//
// Every method returns ErrCorrupt for a record that fails its checksum.
// After a write error, every write returns ErrFailed. A Storage is owned by
// one goroutine: it is not safe for concurrent use, but for StageSnapshot.
type Storage interface {
	raft.Storage
	// Save persists one Ready's hard state, entries and snapshot as one
	// atomic batch, synced when u.MustSync.
	Save(u Update) error
	// CreateSnapshot stores a state-machine snapshot taken at index (in
	// (Snapshot().Index, LastIndex()]) with the conf state at that index,
	// durably. It does not compact; ErrSnapOutOfDate if not newer. It is
	// StageSnapshot then InstallSnapshot.
	CreateSnapshot(index uint64, confState *raftpb.ConfState, data []byte) (*raftpb.Snapshot, error)
	// StageSnapshot writes a snapshot's data durably, without making it
	// the stored snapshot. It is the one method that may run on another
	// goroutine while the owner goes on using the store (it writes only
	// the data's own keys, and Close waits for it), so that writing
	// megabytes holds nobody up. A staged snapshot never installed is
	// dropped by the next snapshot stored.
	StageSnapshot(index uint64, data []byte) error
	// InstallSnapshot makes the snapshot staged at index, with data and
	// the conf state at that index, the stored one, durably; as
	// CreateSnapshot otherwise. A staged snapshot not newer than the
	// stored one (ErrSnapOutOfDate) is dropped.
	InstallSnapshot(index uint64, confState *raftpb.ConfState, data []byte) (*raftpb.Snapshot, error)
	// Compact discards the entries up to and including compactIndex, which
	// must not pass the stored snapshot's index (so nothing unrecoverable is
	// lost); ErrCompacted if already compacted that far.
	Compact(compactIndex uint64) error
	// Identity is the directory's identity, written once when it was
	// formatted; ok is false for a directory never formatted.
	Identity() (id Identity, ok bool, err error)
	// Format writes the identity of a directory, durably. It refuses a
	// directory already formatted. (A directory of an earlier version
	// holds Raft state and no identity: it is formatted in place.)
	Format(id Identity) error
	// Close releases the store. Unsynced writes may be lost.
	Close() error
}

// Identity names a data directory: the cluster it belongs to, the
// controller it holds, and a random id drawn when it was formatted. A
// voter is a controller id and a directory id (as in Kafka's KIP-853): a
// directory that was lost and formatted again is not the voter it
// replaces, even under the same controller id.
type Identity struct {
	ClusterID    string
	ControllerID uint64
	DirectoryID  uint64
}
