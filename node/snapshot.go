package node

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"maps"

	"github.com/dmq-project/metadata/statemachine"
	"github.com/dmq-project/metadata/storage"
	"go.etcd.io/raft/v3"
	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"
)

// The node's snapshot payload wraps the state machine's snapshot with what
// the log's conf-change entries carried and compaction drops: the peer URLs
// and directory ids of the membership and the ids removed from it (never
// to be reused):
//
//	magic "DMQNODE2" | peers count | (id, url, directory)* sorted by id |
//	removed count | id* sorted | state machine bytes | crc32c
//
// "DMQNODE1" payloads, without directories, are still read.
const (
	nodeSnapshotMagic   = "DMQNODE2"
	nodeSnapshotMagicV1 = "DMQNODE1"
)

var errCorruptNodeSnapshot = errors.New("node: corrupt snapshot payload")

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Peer is a controller, where its peers reach it, and the directory that
// holds it (0: not recorded, for members of an earlier version).
type Peer struct {
	ID          uint64
	URL         string
	DirectoryID uint64
}

func encodeSnapshot(peers map[uint64]string, directories map[uint64]uint64, removed map[uint64]bool, stateMachine []byte) []byte {
	return appendSnapshotTo(nil, peers, directories, removed, func(out []byte) []byte { return append(out, stateMachine...) })
}

// appendSnapshotTo is encodeSnapshot appending to out, with the state
// machine's bytes appended in place by appendStateMachine.
func appendSnapshotTo(out []byte, peers map[uint64]string, directories map[uint64]uint64, removed map[uint64]bool, appendStateMachine func([]byte) []byte) []byte {
	ids := sortedKeys(peers)
	out = append(out, nodeSnapshotMagic...)
	out = binary.AppendUvarint(out, uint64(len(ids)))
	for _, id := range ids {
		out = binary.AppendUvarint(out, id)
		out = binary.AppendUvarint(out, uint64(len(peers[id])))
		out = append(out, peers[id]...)
		out = binary.AppendUvarint(out, directories[id])
	}
	gone := sortedKeys(removed)
	out = binary.AppendUvarint(out, uint64(len(gone)))
	for _, id := range gone {
		out = binary.AppendUvarint(out, id)
	}
	out = appendStateMachine(out)
	return binary.LittleEndian.AppendUint32(out, crc32.Checksum(out, castagnoli))
}

func decodeSnapshot(data []byte) (map[uint64]string, map[uint64]uint64, map[uint64]bool, []byte, error) {
	if len(data) < len(nodeSnapshotMagic)+4 {
		return nil, nil, nil, nil, fmt.Errorf("%w: bad header", errCorruptNodeSnapshot)
	}
	withDirectories := string(data[:len(nodeSnapshotMagic)]) == nodeSnapshotMagic
	if !withDirectories && string(data[:len(nodeSnapshotMagicV1)]) != nodeSnapshotMagicV1 {
		return nil, nil, nil, nil, fmt.Errorf("%w: bad header", errCorruptNodeSnapshot)
	}
	body := data[:len(data)-4]
	if crc32.Checksum(body, castagnoli) != binary.LittleEndian.Uint32(data[len(data)-4:]) {
		return nil, nil, nil, nil, fmt.Errorf("%w: checksum mismatch", errCorruptNodeSnapshot)
	}
	rest := body[len(nodeSnapshotMagic):]
	next := func() (uint64, bool) {
		v, n := binary.Uvarint(rest)
		if n <= 0 {
			return 0, false
		}
		rest = rest[n:]
		return v, true
	}
	count, ok := next()
	if !ok || count > uint64(len(rest)) {
		return nil, nil, nil, nil, fmt.Errorf("%w: peer count", errCorruptNodeSnapshot)
	}
	peers := make(map[uint64]string, count)
	directories := make(map[uint64]uint64, count)
	for i := uint64(0); i < count; i++ {
		id, ok1 := next()
		length, ok2 := next()
		if !ok1 || !ok2 || length > uint64(len(rest)) {
			return nil, nil, nil, nil, fmt.Errorf("%w: peer %d", errCorruptNodeSnapshot, i)
		}
		peers[id] = string(rest[:length])
		rest = rest[length:]
		if withDirectories {
			directory, ok := next()
			if !ok {
				return nil, nil, nil, nil, fmt.Errorf("%w: peer %d directory", errCorruptNodeSnapshot, i)
			}
			if directory != 0 {
				directories[id] = directory
			}
		}
	}
	count, ok = next()
	if !ok || count > uint64(len(rest)) {
		return nil, nil, nil, nil, fmt.Errorf("%w: removed count", errCorruptNodeSnapshot)
	}
	removed := make(map[uint64]bool, count)
	for i := uint64(0); i < count; i++ {
		id, ok := next()
		if !ok {
			return nil, nil, nil, nil, fmt.Errorf("%w: removed id %d", errCorruptNodeSnapshot, i)
		}
		removed[id] = true
	}
	return peers, directories, removed, rest, nil
}

// restoreSnapshot replaces the state machine and membership with a
// snapshot's (at start, or when a leader sends one).
func (n *Node) restoreSnapshot(snap *raftpb.Snapshot) error {
	meta := snap.GetMetadata()
	n.confState = proto.CloneOf(raftpb.EnsureConfState(meta.GetConfState()))
	n.snapshotIndex = meta.GetIndex()
	// The snapshot names every member added up to its index.
	n.snapshotForNewMember = false
	n.snapshotBytes, n.loggedBytes = len(snap.GetData()), 0
	if meta.GetIndex() == 0 {
		return nil
	}
	peers, directories, removed, smBytes, err := decodeSnapshot(snap.GetData())
	if err != nil {
		return fmt.Errorf("node: snapshot at %d: %w", meta.GetIndex(), err)
	}
	sm, err := statemachine.Restore(smBytes)
	if err != nil {
		return fmt.Errorf("node: snapshot at %d: %w", meta.GetIndex(), err)
	}
	if sm.AppliedIndex() != meta.GetIndex() {
		panic(fmt.Sprintf("node: snapshot at index %d holds a state machine at %d", meta.GetIndex(), sm.AppliedIndex()))
	}
	n.sm = sm
	for _, id := range sortedKeys(n.peers) {
		if _, ok := peers[id]; !ok {
			n.env.Transport.RemovePeer(id)
		}
	}
	n.peers, n.directories, n.removedIDs = peers, directories, removed
	// The removal entry is covered by the snapshot: learn it from here.
	n.removed = n.removed || removed[n.cfg.ID]
	for _, id := range sortedKeys(peers) {
		if id != n.cfg.ID {
			n.env.Transport.SetPeer(id, peers[id])
		}
	}
	return nil
}

// maybeSnapshot starts a snapshot when MaxLogEntries entries and
// 1/SnapshotLogRatio of the last snapshot's size have been applied since
// it, when a member was added, or when TakeSnapshot callers wait; one at a
// time.
func (n *Node) maybeSnapshot() error {
	if n.storageErr != nil {
		return n.storageErr
	}
	applied := n.sm.AppliedIndex()
	if n.snapshotting || applied <= n.snapshotIndex {
		return nil
	}
	due := applied >= n.snapshotIndex+n.cfg.MaxLogEntries && uint64(n.loggedBytes)*n.cfg.SnapshotLogRatio >= uint64(n.snapshotBytes)
	if !due && !n.snapshotForNewMember && len(n.snapshotWaiters) == 0 {
		return nil
	}
	n.snapshotForMembers = n.snapshotForNewMember
	n.snapshotForNewMember = false
	n.startSnapshot()
	return nil
}

// raftStorage is the store as Raft reads it. While a snapshot taken for
// members just added is under way, the stored snapshot's conf state does
// not name them, and a joiner refuses it: Raft hears that the snapshot is
// temporarily unavailable, and asks again at the next heartbeat response,
// instead of sending megabytes to be dropped.
type raftStorage struct {
	storage.Storage
	n *Node
}

func (s raftStorage) Snapshot() (*raftpb.Snapshot, error) {
	if s.n.snapshotForMembers || s.n.snapshotForNewMember {
		// (The second: a member added while another snapshot was under
		// way, whose own has not started yet.)
		return nil, raft.ErrSnapshotTemporarilyUnavailable
	}
	return s.Storage.Snapshot()
}

// startSnapshot snapshots the state machine at the applied index. The
// encoding and the write of megabytes run off the node's goroutine
// (Env.Worker), from a view of the state machine frozen at that index,
// while the node goes on; the snapshot is installed, and the log compacted
// behind it, back on the node's goroutine (snapshotStaged).
func (n *Node) startSnapshot() {
	index := n.sm.AppliedIndex()
	peers, directories, removed := maps.Clone(n.peers), maps.Clone(n.directories), maps.Clone(n.removedIDs)
	confState := proto.CloneOf(n.confState)
	logged := n.loggedBytes
	view := n.sm.View()
	var want []byte
	if n.cfg.VerifySnapshots {
		want = n.sm.Snapshot()
	}
	store := n.store
	// Room for a snapshot a little larger than the last (see
	// View.AppendSnapshot).
	room := n.snapshotBytes + n.snapshotBytes/8 + 64<<10
	n.snapshotting = true
	n.offload(func() func() {
		var smBytes []byte
		data := appendSnapshotTo(make([]byte, 0, room), peers, directories, removed, func(out []byte) []byte {
			start := len(out)
			out = view.AppendSnapshot(out)
			smBytes = out[start:]
			return out
		})
		err := store.StageSnapshot(index, data)
		return func() {
			n.snapshotting, n.snapshotForMembers = false, false
			view.Release()
			if want != nil && !bytes.Equal(want, smBytes) {
				panic(fmt.Sprintf("node %d: the snapshot at %d encoded off the loop differs from the state at %d", n.cfg.ID, index, index))
			}
			if err == nil {
				err = n.snapshotStaged(index, confState, data, logged)
			}
			if err == nil {
				err = n.maybeSnapshot()
			}
			if err != nil {
				n.storageErr = err
				n.answerSnapshotWaiters(err)
			}
		}
	})
}

// snapshotStaged installs the snapshot staged at index, unless a leader's
// newer one came meanwhile, compacts the log behind it and answers the
// TakeSnapshot callers it satisfies. logged is the size of the entries
// applied before index since the last snapshot.
func (n *Node) snapshotStaged(index uint64, confState *raftpb.ConfState, data []byte, logged int) error {
	if _, err := n.store.InstallSnapshot(index, confState, data); errors.Is(err, storage.ErrSnapOutOfDate) {
		// A leader's newer snapshot was installed meanwhile: the store
		// drops this one.
		n.answerSnapshotWaiters(nil)
		return nil
	} else if err != nil {
		return err
	}
	n.snapshotIndex = index
	n.snapshotBytes, n.loggedBytes = len(data), max(n.loggedBytes-logged, 0)
	n.emit(Event{Kind: EventSnapshotTaken, Index: index, Bytes: len(data)})
	first, err := n.store.FirstIndex()
	if err != nil {
		return err
	}
	if index > n.cfg.LogTailEntries && index-n.cfg.LogTailEntries >= first {
		if err := n.store.Compact(index - n.cfg.LogTailEntries); err != nil && !errors.Is(err, storage.ErrCompacted) {
			return err
		}
	}
	n.answerSnapshotWaiters(nil)
	return nil
}

// partitionSnapshotBytes is about what a partition takes in a snapshot at
// replication factor 3 (docs/BENCHMARKS.md): the weight of a partition an
// entry changed, in the bytes that make a snapshot due.
const partitionSnapshotBytes = 12

type snapshotWaiter struct {
	atLeast uint64
	done    func(index uint64, size int, err error)
}

// answerSnapshotWaiters answers the TakeSnapshot callers whose index the
// stored snapshot reaches, or all with err. An answer may call
// TakeSnapshot again: the list is taken first, and that call's waiter
// joins the new one.
func (n *Node) answerSnapshotWaiters(err error) {
	waiters := n.snapshotWaiters
	n.snapshotWaiters = nil
	for _, w := range waiters {
		switch {
		case err != nil:
			w.done(0, 0, err)
		case w.atLeast <= n.snapshotIndex:
			w.done(n.snapshotIndex, n.snapshotBytes, nil)
		default:
			n.snapshotWaiters = append(n.snapshotWaiters, w)
		}
	}
}

// TakeSnapshot snapshots now (QuorumService.Snapshot), unless the stored
// snapshot holds every entry applied, and calls done with the snapshot's
// index and size once it is stored; err is a storage failure.
func (n *Node) TakeSnapshot(done func(index uint64, size int, err error)) {
	if n.storageErr != nil {
		done(0, 0, n.storageErr)
		return
	}
	applied := n.sm.AppliedIndex()
	if applied <= n.snapshotIndex {
		done(n.snapshotIndex, n.snapshotBytes, nil)
		return
	}
	n.snapshotWaiters = append(n.snapshotWaiters, snapshotWaiter{atLeast: applied, done: done})
	if err := n.maybeSnapshot(); err != nil {
		n.storageErr = err
		n.answerSnapshotWaiters(err)
	}
}

// Backup is a consistent copy of the metadata for disaster recovery: the
// state machine as of Index (every write acknowledged before the backup was
// asked for, when taken after a linearizable read), in the node snapshot
// encoding. Restore founds a new cluster from it.
type Backup struct {
	Index uint64
	Data  []byte
}

// TakeBackup snapshots now and calls done with the snapshot as a Backup.
func (n *Node) TakeBackup(done func(Backup, error)) {
	n.TakeSnapshot(func(_ uint64, _ int, err error) {
		if err != nil {
			done(Backup{}, err)
			return
		}
		snap, err := n.store.Snapshot()
		if err != nil {
			done(Backup{}, err)
			return
		}
		done(Backup{Index: snap.GetMetadata().GetIndex(), Data: snap.GetData()}, nil)
	})
}

// Restore founds a new cluster on a formatted, empty store from a backup:
// the metadata as the backup holds it, at the backup's index (metadata
// versions continue where they were, so storage services' versions stay
// meaningful), with peers as the voters. Every founding controller restores
// the same backup with the same peers (etcd's snapshot restore does the
// same). The members the backup's cluster had, and the ids it removed,
// are not carried over: the new cluster is its peers.
func Restore(store storage.Storage, peers []Peer, backup Backup) error {
	if backup.Index == 0 {
		return errors.New("node: a backup at index 0 holds nothing")
	}
	_, _, _, smData, err := decodeSnapshot(backup.Data)
	if err != nil {
		return fmt.Errorf("node: the backup does not decode: %w", err)
	}
	sm, err := statemachine.Restore(smData)
	if err != nil {
		return fmt.Errorf("node: the backup's metadata does not restore: %w", err)
	}
	if sm.AppliedIndex() != backup.Index {
		return fmt.Errorf("node: the backup says index %d, its metadata is at %d", backup.Index, sm.AppliedIndex())
	}
	return found(store, peers, backup.Index, smData)
}

// backupMagic opens a backup file: the format and its version.
const backupMagic = "dmq-backup v1\n"

// Encode is the backup as a file: backupMagic, the index (8 bytes, big
// endian), the node snapshot encoding (which carries its own checksum).
func (b Backup) Encode() []byte {
	out := make([]byte, 0, len(backupMagic)+8+len(b.Data))
	out = append(out, backupMagic...)
	out = binary.BigEndian.AppendUint64(out, b.Index)
	return append(out, b.Data...)
}

// DecodeBackup reads a backup file written by Encode.
func DecodeBackup(file []byte) (Backup, error) {
	rest, ok := bytes.CutPrefix(file, []byte(backupMagic))
	if !ok || len(rest) < 8 {
		return Backup{}, errors.New("node: not a DMQ backup (it does not start with \"dmq-backup v1\")")
	}
	b := Backup{Index: binary.BigEndian.Uint64(rest[:8]), Data: rest[8:]}
	if _, _, _, _, err := decodeSnapshot(b.Data); err != nil {
		return Backup{}, fmt.Errorf("node: the backup is damaged: %w", err)
	}
	return b, nil
}
