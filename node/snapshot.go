package node

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"

	"github.com/dmq-project/metadata/statemachine"
	"github.com/dmq-project/metadata/storage"
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
	ids := sortedKeys(peers)
	out := append([]byte(nil), nodeSnapshotMagic...)
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
	out = append(out, stateMachine...)
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

// maybeSnapshot snapshots the state machine when MaxLogEntries entries and
// 1/SnapshotLogRatio of the last snapshot's size have been applied since
// it, and compacts the log behind it, keeping LogTailEntries.
func (n *Node) maybeSnapshot() error {
	applied := n.sm.AppliedIndex()
	due := applied >= n.snapshotIndex+n.cfg.MaxLogEntries && uint64(n.loggedBytes)*n.cfg.SnapshotLogRatio >= uint64(n.snapshotBytes)
	if !due && !(n.snapshotForNewMember && applied > n.snapshotIndex) {
		return nil
	}
	n.snapshotForNewMember = false
	_, err := n.snapshotNow()
	return err
}

// snapshotNow writes a snapshot at the applied index and compacts.
func (n *Node) snapshotNow() (*raftpb.Snapshot, error) {
	applied := n.sm.AppliedIndex()
	snap, err := n.store.CreateSnapshot(applied, n.confState, encodeSnapshot(n.peers, n.directories, n.removedIDs, n.sm.Snapshot()))
	if err != nil {
		return nil, err
	}
	n.snapshotIndex = applied
	n.snapshotBytes, n.loggedBytes = len(snap.GetData()), 0
	n.emit(Event{Kind: EventSnapshotTaken, Index: applied, Bytes: len(snap.GetData())})
	first, err := n.store.FirstIndex()
	if err != nil {
		return nil, err
	}
	if applied > n.cfg.LogTailEntries && applied-n.cfg.LogTailEntries >= first {
		if err := n.store.Compact(applied - n.cfg.LogTailEntries); err != nil && !errors.Is(err, storage.ErrCompacted) {
			return nil, err
		}
	}
	return snap, nil
}

// TakeSnapshot snapshots now (QuorumService.Snapshot). It returns the
// snapshot's index and size.
func (n *Node) TakeSnapshot() (uint64, int, error) {
	if n.sm.AppliedIndex() <= n.snapshotIndex {
		snap, err := n.store.Snapshot()
		if err != nil {
			return 0, 0, err
		}
		return snap.GetMetadata().GetIndex(), len(snap.GetData()), nil
	}
	snap, err := n.snapshotNow()
	if err != nil {
		return 0, 0, err
	}
	return snap.GetMetadata().GetIndex(), len(snap.GetData()), nil
}

// Backup is a consistent copy of the metadata for disaster recovery: the
// state machine as of Index (every write acknowledged before the backup was
// asked for, when taken after a linearizable read), in the node snapshot
// encoding. Restore founds a new cluster from it.
type Backup struct {
	Index uint64
	Data  []byte
}

// TakeBackup snapshots now and returns the snapshot as a Backup.
func (n *Node) TakeBackup() (Backup, error) {
	if _, _, err := n.TakeSnapshot(); err != nil {
		return Backup{}, err
	}
	snap, err := n.store.Snapshot()
	if err != nil {
		return Backup{}, err
	}
	return Backup{Index: snap.GetMetadata().GetIndex(), Data: snap.GetData()}, nil
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
