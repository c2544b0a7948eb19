package storage

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"slices"
	"strings"
	"sync"

	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"
)

// Bounds of the in-memory entry cache: the newest entries, which raft reads
// back to send to followers and to apply, never go to the engine.
const (
	cacheEntriesMax = 16_384
	cacheBytesMax   = 64 << 20
)

// Store implements Storage over an engine. The log logic — truncation,
// compaction, snapshots, checksums, recovery checks — is written once and
// runs on Pebble in production and on the simulated disk in simulation.
type Store struct {
	engine engine
	// hardState is nil until the first Save with a non-empty one.
	hardState *raftpb.HardState
	snapshot  *raftpb.Snapshot
	// truncatedIndex/Term describe the entry just before the first one held:
	// the compaction point (or the snapshot received from a leader).
	truncatedIndex, truncatedTerm uint64
	lastIndex                     uint64
	// cache holds entries [cacheFirst, lastIndex]; cacheFirst is
	// lastIndex+1 - len(cache). cacheBytes is their encoded size.
	cache      []*raftpb.Entry
	cacheBytes int
	// cacheEntriesMax bounds the cache; a field so that tests can exercise
	// reads that miss it.
	cacheEntriesMax int
	// mu guards what StageSnapshot, the one method called off the owner's
	// goroutine, shares with the others: failed, closed, and staging,
	// the stagings under way, which Close waits for.
	mu      sync.Mutex
	failed  error
	closed  bool
	staging sync.WaitGroup
	// identity is set once the directory is formatted.
	identity  Identity
	formatted bool
}

var _ Storage = (*Store)(nil)

// open loads and checks the stored state: every record's checksum, the log's
// contiguity after the compaction point, and the hard state against the log.
func open(e engine) (*Store, error) {
	s := &Store{engine: e, snapshot: &raftpb.Snapshot{Metadata: raftpb.EnsureSnapshotMetadata(nil)},
		cacheEntriesMax: cacheEntriesMax}
	if err := s.load(); err != nil {
		_ = e.close()
		return nil, err
	}
	return s, nil
}

func (s *Store) load() error {
	if payload, err := s.getSealed(keyIdentity); err != nil {
		return err
	} else if payload != nil {
		id, err := decodeIdentity(payload)
		if err != nil {
			return err
		}
		s.identity, s.formatted = id, true
	}
	if payload, err := s.getSealed(keyHardState); err != nil {
		return err
	} else if payload != nil {
		s.hardState = &raftpb.HardState{}
		if err := proto.Unmarshal(payload, s.hardState); err != nil {
			return fmt.Errorf("%w: hard state: %v", ErrCorrupt, err)
		}
	}
	if payload, err := s.getSealed(keySnapshotMeta); err != nil {
		return err
	} else if payload != nil {
		meta := &raftpb.SnapshotMetadata{}
		if err := proto.Unmarshal(payload, meta); err != nil {
			return fmt.Errorf("%w: snapshot metadata: %v", ErrCorrupt, err)
		}
		data, err := s.snapshotData(meta.GetIndex())
		if err != nil {
			return err
		}
		s.snapshot = &raftpb.Snapshot{Metadata: meta, Data: data}
	}
	if payload, err := s.getSealed(keyTruncated); err != nil {
		return err
	} else if payload != nil {
		if len(payload) != 16 {
			return fmt.Errorf("%w: truncated state of %d bytes", ErrCorrupt, len(payload))
		}
		s.truncatedIndex = binary.BigEndian.Uint64(payload)
		s.truncatedTerm = binary.BigEndian.Uint64(payload[8:])
	}
	s.lastIndex = s.truncatedIndex
	var prevTerm = s.truncatedTerm
	err := s.engine.scan(logKey(s.truncatedIndex+1), logEnd, func(key, value []byte) error {
		entry, err := decodeEntry(key, value)
		if err != nil {
			return err
		}
		if entry.GetIndex() != s.lastIndex+1 {
			return fmt.Errorf("%w: log has entry %d after %d", ErrCorrupt, entry.GetIndex(), s.lastIndex)
		}
		if entry.GetTerm() < prevTerm {
			return fmt.Errorf("%w: entry %d has term %d after term %d", ErrCorrupt, entry.GetIndex(), entry.GetTerm(), prevTerm)
		}
		prevTerm = entry.GetTerm()
		s.lastIndex = entry.GetIndex()
		s.cacheAppend(entry)
		return nil
	})
	if err != nil {
		return err
	}
	snapIndex := s.snapshot.GetMetadata().GetIndex()
	// A crash may have left the data of a snapshot staged and never
	// installed, or of one replaced.
	s.dropOtherSnapshots(snapIndex, true)
	if snapIndex < s.truncatedIndex {
		return fmt.Errorf("%w: log compacted to %d beyond the snapshot at %d", ErrCorrupt, s.truncatedIndex, snapIndex)
	}
	if commit := s.hardState.GetCommit(); commit > s.lastIndex && commit > snapIndex {
		return fmt.Errorf("%w: hard state commits %d, the log ends at %d", ErrCorrupt, commit, s.lastIndex)
	}
	return nil
}

func (s *Store) getSealed(key []byte) ([]byte, error) {
	value, err := s.engine.get(key)
	if err != nil || value == nil {
		return nil, err
	}
	return unseal(key, value)
}

func decodeEntry(key, value []byte) (*raftpb.Entry, error) {
	index, err := indexOfLogKey(key)
	if err != nil {
		return nil, err
	}
	payload, err := unseal(key, value)
	if err != nil {
		return nil, err
	}
	entry := &raftpb.Entry{}
	if err := proto.Unmarshal(payload, entry); err != nil {
		return nil, fmt.Errorf("%w: entry %d: %v", ErrCorrupt, index, err)
	}
	if entry.GetIndex() != index {
		return nil, fmt.Errorf("%w: key of entry %d holds entry %d", ErrCorrupt, index, entry.GetIndex())
	}
	return entry, nil
}

// InitialState implements raft.Storage.
func (s *Store) InitialState() (*raftpb.HardState, *raftpb.ConfState, error) {
	if s.closed {
		return nil, nil, ErrClosed
	}
	var hs *raftpb.HardState
	if s.hardState != nil {
		hs = proto.CloneOf(s.hardState)
	}
	return hs, proto.CloneOf(raftpb.EnsureConfState(s.snapshot.GetMetadata().GetConfState())), nil
}

// FirstIndex implements raft.Storage.
func (s *Store) FirstIndex() (uint64, error) { return s.truncatedIndex + 1, nil }

// LastIndex implements raft.Storage.
func (s *Store) LastIndex() (uint64, error) { return s.lastIndex, nil }

// Term implements raft.Storage.
func (s *Store) Term(i uint64) (uint64, error) {
	switch {
	case i < s.truncatedIndex:
		return 0, ErrCompacted
	case i == s.truncatedIndex:
		return s.truncatedTerm, nil
	case i > s.lastIndex:
		return 0, ErrUnavailable
	}
	entry, err := s.entry(i)
	if err != nil {
		return 0, err
	}
	return entry.GetTerm(), nil
}

// Entries implements raft.Storage.
func (s *Store) Entries(lo, hi, maxSize uint64) ([]*raftpb.Entry, error) {
	if lo <= s.truncatedIndex {
		return nil, ErrCompacted
	}
	if hi > s.lastIndex+1 {
		panic(fmt.Sprintf("storage: Entries(%d, %d) beyond the last index %d", lo, hi, s.lastIndex))
	}
	if s.lastIndex == s.truncatedIndex {
		return nil, ErrUnavailable
	}
	if lo >= hi {
		return nil, nil
	}
	var out []*raftpb.Entry
	var size uint64
	take := func(e *raftpb.Entry) bool {
		size += uint64(proto.Size(e))
		if len(out) > 0 && size > maxSize {
			return false
		}
		out = append(out, e)
		return true
	}
	cacheFirst := s.lastIndex + 1 - uint64(len(s.cache))
	if lo < cacheFirst {
		stop := errors.New("stop")
		err := s.engine.scan(logKey(lo), logKey(min(hi, cacheFirst)), func(key, value []byte) error {
			entry, err := decodeEntry(key, value)
			if err != nil {
				return err
			}
			if entry.GetIndex() != lo+uint64(len(out)) {
				return fmt.Errorf("%w: log has a gap before entry %d", ErrCorrupt, entry.GetIndex())
			}
			if !take(entry) {
				return stop
			}
			return nil
		})
		if errors.Is(err, stop) {
			return out, nil
		}
		if err != nil {
			return nil, err
		}
		if uint64(len(out)) != min(hi, cacheFirst)-lo {
			return nil, fmt.Errorf("%w: log is missing entries in [%d, %d)", ErrCorrupt, lo, min(hi, cacheFirst))
		}
	}
	for i := max(lo, cacheFirst); i < hi; i++ {
		if !take(s.cache[i-cacheFirst]) {
			break
		}
	}
	return out, nil
}

func (s *Store) entry(i uint64) (*raftpb.Entry, error) {
	cacheFirst := s.lastIndex + 1 - uint64(len(s.cache))
	if i >= cacheFirst {
		return s.cache[i-cacheFirst], nil
	}
	key := logKey(i)
	value, err := s.engine.get(key)
	if err != nil {
		return nil, err
	}
	if value == nil {
		return nil, fmt.Errorf("%w: entry %d is missing", ErrCorrupt, i)
	}
	return decodeEntry(key, value)
}

// snapshotData reads the data of the stored snapshot at index: its blob,
// or the value an earlier version wrote in the log's engine.
func (s *Store) snapshotData(index uint64) ([]byte, error) {
	name := snapshotBlob(index)
	blob, err := s.engine.getBlob(name)
	if err != nil {
		return nil, err
	}
	if blob == nil {
		data, err := s.getSealed(keySnapshotData)
		if err == nil && data == nil {
			err = fmt.Errorf("%w: the data of the snapshot at %d is missing", ErrCorrupt, index)
		}
		return data, err
	}
	return unseal([]byte(name), blob)
}

// putSnapshotData writes the snapshot's data as its blob, sealed.
func (s *Store) putSnapshotData(index uint64, data []byte) error {
	name := snapshotBlob(index)
	sum := crc32.Update(crc32.Checksum([]byte(name), castagnoli), castagnoli, data)
	if err := s.engine.putBlob(name, data, binary.LittleEndian.AppendUint32(nil, sum)); err != nil {
		s.mu.Lock()
		defer s.mu.Unlock()
		s.failed = fmt.Errorf("%w: %w", ErrFailed, err)
		return s.failed
	}
	return nil
}

// dropOtherSnapshots deletes the data of every snapshot but the one at
// index: the one it replaced, one staged and never installed. With
// partial, it deletes what a staging interrupted by a crash left too; only
// at open, where no staging runs: a staging under way has its own
// temporary file, which its rename needs (a leader's snapshot installed
// meanwhile must not make it fail). A blob that stays (a failed removal,
// a crash) is removed by a later call.
func (s *Store) dropOtherSnapshots(index uint64, partial bool) {
	names, err := s.engine.blobNames()
	if err != nil {
		return
	}
	for _, name := range names {
		if name == snapshotBlob(index) {
			continue
		}
		// A finished blob ends in .snap, a staging's temporary file in
		// .snap.tmp (putBlob).
		if partial || strings.HasSuffix(name, ".snap") {
			_ = s.engine.deleteBlob(name)
		}
	}
}

// Snapshot implements raft.Storage. The data is shared, never modified.
func (s *Store) Snapshot() (*raftpb.Snapshot, error) {
	return &raftpb.Snapshot{Metadata: proto.CloneOf(s.snapshot.GetMetadata()), Data: s.snapshot.GetData()}, nil
}

func (s *Store) checkWritable() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return ErrClosed
	}
	return s.failed
}

// commit writes the batch; a failure poisons the store for good.
func (s *Store) commit(b *batch, sync bool) error {
	if err := s.engine.write(b, sync); err != nil {
		s.mu.Lock()
		defer s.mu.Unlock()
		s.failed = fmt.Errorf("%w: %w", ErrFailed, err)
		return s.failed
	}
	return nil
}

// Save implements Storage.
func (s *Store) Save(u Update) error {
	if err := s.checkWritable(); err != nil {
		return err
	}
	b := &batch{}
	truncatedIndex, truncatedTerm, lastIndex := s.truncatedIndex, s.truncatedTerm, s.lastIndex
	var snapshot *raftpb.Snapshot
	if u.Snapshot != nil && !isEmptySnapshot(u.Snapshot) {
		meta := u.Snapshot.GetMetadata()
		if meta.GetIndex() <= s.snapshot.GetMetadata().GetIndex() {
			return ErrSnapOutOfDate
		}
		snapshot = proto.CloneOf(u.Snapshot)
		snapshot.Metadata.ConfState = raftpb.EnsureConfState(meta.GetConfState())
		// The data first, durably: the metadata in the batch below makes
		// it the stored snapshot.
		if err := s.putSnapshotData(meta.GetIndex(), snapshot.GetData()); err != nil {
			return err
		}
		putSnapshotMeta(b, snapshot)
		// NB: the whole log goes, not only the prefix the snapshot covers:
		// entries after it may conflict with the leader's log (as in raft's
		// MemoryStorage.ApplySnapshot).
		b.deleteRange(logKey(0), logEnd)
		truncatedIndex, truncatedTerm, lastIndex = meta.GetIndex(), meta.GetTerm(), meta.GetIndex()
		b.put(keyTruncated, seal(keyTruncated, truncatedBytes(truncatedIndex, truncatedTerm)))
	}
	entries := u.Entries
	if len(entries) > 0 && entries[0].GetIndex() <= truncatedIndex {
		skip := truncatedIndex + 1 - entries[0].GetIndex()
		entries = entries[min(skip, uint64(len(entries))):]
	}
	if len(entries) > 0 {
		first := entries[0].GetIndex()
		if first > lastIndex+1 {
			panic(fmt.Sprintf("storage: appending entry %d after the last index %d leaves a gap", first, lastIndex))
		}
		for i, e := range entries {
			if e.GetIndex() != first+uint64(i) {
				panic(fmt.Sprintf("storage: entries are not contiguous: %d at position %d after %d", e.GetIndex(), i, first))
			}
			payload, err := proto.Marshal(e)
			if err != nil {
				return fmt.Errorf("storage: encoding entry %d: %w", e.GetIndex(), err)
			}
			key := logKey(e.GetIndex())
			b.put(key, seal(key, payload))
		}
		newLast := first + uint64(len(entries)) - 1
		if newLast < lastIndex {
			// The old suffix beyond the new last entry conflicts: drop it.
			b.deleteRange(logKey(newLast+1), logEnd)
		}
		lastIndex = newLast
	}
	var hardState *raftpb.HardState
	if u.HardState != nil && !isEmptyHardState(u.HardState) {
		hardState = proto.CloneOf(u.HardState)
		payload, err := proto.Marshal(hardState)
		if err != nil {
			return fmt.Errorf("storage: encoding hard state: %w", err)
		}
		b.put(keyHardState, seal(keyHardState, payload))
	}
	if b.empty() {
		return nil
	}
	// NB: a received snapshot is synced even when Raft does not ask: its
	// index is acknowledged to the leader, which from then on sends commit
	// indexes up to it; losing it in a crash would leave a node whose log
	// is behind what it promised (seed 7294).
	if err := s.commit(b, u.MustSync || snapshot != nil); err != nil {
		return err
	}
	// The batch is written: only now does memory follow.
	if snapshot != nil {
		s.snapshot = snapshot
		s.cache, s.cacheBytes = nil, 0
		s.dropOtherSnapshots(snapshot.GetMetadata().GetIndex(), false)
	}
	s.truncatedIndex, s.truncatedTerm = truncatedIndex, truncatedTerm
	if len(entries) > 0 {
		s.cacheTruncate(entries[0].GetIndex())
		s.lastIndex = entries[0].GetIndex() - 1
		for _, e := range entries {
			s.lastIndex = e.GetIndex()
			s.cacheAppend(e)
		}
	} else {
		s.lastIndex = lastIndex
	}
	if hardState != nil {
		s.hardState = hardState
	}
	return nil
}

// putSnapshotMeta adds to b the snapshot's metadata, which makes the data
// stored under its index the stored snapshot, and the removal of the data
// an earlier version kept in the log's engine.
func putSnapshotMeta(b *batch, snapshot *raftpb.Snapshot) {
	meta, err := proto.Marshal(snapshot.GetMetadata())
	if err != nil {
		panic(fmt.Sprintf("storage: encoding snapshot metadata: %v", err))
	}
	b.put(keySnapshotMeta, seal(keySnapshotMeta, meta))
	b.deleteRange(keySnapshotData, append(slices.Clone(keySnapshotData), 0))
}

func truncatedBytes(index, term uint64) []byte {
	out := binary.BigEndian.AppendUint64(nil, index)
	return binary.BigEndian.AppendUint64(out, term)
}

// CreateSnapshot implements Storage.
func (s *Store) CreateSnapshot(index uint64, confState *raftpb.ConfState, data []byte) (*raftpb.Snapshot, error) {
	if err := s.checkWritable(); err != nil {
		return nil, err
	}
	if index <= s.snapshot.GetMetadata().GetIndex() {
		return nil, ErrSnapOutOfDate
	}
	if err := s.StageSnapshot(index, data); err != nil {
		return nil, err
	}
	return s.InstallSnapshot(index, confState, data)
}

// StageSnapshot implements Storage. The data goes to a blob of its own,
// outside the engine's log: in the log, a sync of the owner's (a Raft
// Save) would have to flush the megabytes written before it.
func (s *Store) StageSnapshot(index uint64, data []byte) error {
	s.mu.Lock()
	if s.closed || s.failed != nil {
		s.mu.Unlock()
		return s.checkWritable()
	}
	s.staging.Add(1)
	s.mu.Unlock()
	defer s.staging.Done()
	return s.putSnapshotData(index, data)
}

// InstallSnapshot implements Storage.
func (s *Store) InstallSnapshot(index uint64, confState *raftpb.ConfState, data []byte) (*raftpb.Snapshot, error) {
	if err := s.checkWritable(); err != nil {
		return nil, err
	}
	if stored := s.snapshot.GetMetadata().GetIndex(); index <= stored {
		if index < stored {
			// Overtaken (a leader's snapshot came meanwhile): its data
			// goes. (At the stored index the file is the stored one's.)
			_ = s.engine.deleteBlob(snapshotBlob(index))
		}
		return nil, ErrSnapOutOfDate
	}
	if index > s.lastIndex {
		panic(fmt.Sprintf("storage: snapshot at %d beyond the last index %d", index, s.lastIndex))
	}
	term, err := s.Term(index)
	if err != nil {
		return nil, err
	}
	snapshot := &raftpb.Snapshot{
		Metadata: &raftpb.SnapshotMetadata{
			Index: new(index), Term: new(term), ConfState: proto.CloneOf(raftpb.EnsureConfState(confState)),
		},
		Data: data,
	}
	b := &batch{}
	putSnapshotMeta(b, snapshot)
	// NB: synced, because Compact may delete the entries this snapshot
	// replaces; the snapshot must be durable first.
	if err := s.commit(b, true); err != nil {
		return nil, err
	}
	s.snapshot = snapshot
	s.dropOtherSnapshots(index, false)
	return s.Snapshot()
}

// Compact implements Storage.
func (s *Store) Compact(compactIndex uint64) error {
	if err := s.checkWritable(); err != nil {
		return err
	}
	if compactIndex <= s.truncatedIndex {
		return ErrCompacted
	}
	if snapIndex := s.snapshot.GetMetadata().GetIndex(); compactIndex > snapIndex {
		panic(fmt.Sprintf("storage: compacting to %d beyond the snapshot at %d would lose committed entries", compactIndex, snapIndex))
	}
	term, err := s.Term(compactIndex)
	if err != nil {
		return err
	}
	b := &batch{}
	b.deleteRange(logKey(0), logKey(compactIndex+1))
	b.put(keyTruncated, seal(keyTruncated, truncatedBytes(compactIndex, term)))
	if err := s.commit(b, true); err != nil {
		return err
	}
	s.truncatedIndex, s.truncatedTerm = compactIndex, term
	if cacheFirst := s.lastIndex + 1 - uint64(len(s.cache)); compactIndex >= cacheFirst {
		drop := compactIndex + 1 - cacheFirst
		for _, e := range s.cache[:drop] {
			s.cacheBytes -= proto.Size(e)
		}
		s.cache = append([]*raftpb.Entry(nil), s.cache[drop:]...)
	}
	return nil
}

// Close implements Storage.
// Identity implements Storage.
func (s *Store) Identity() (Identity, bool, error) { return s.identity, s.formatted, nil }

// Format implements Storage.
func (s *Store) Format(id Identity) error {
	if err := s.checkWritable(); err != nil {
		return err
	}
	if s.formatted {
		return fmt.Errorf("storage: the directory is already formatted for controller %d of cluster %q", s.identity.ControllerID, s.identity.ClusterID)
	}
	if id.ControllerID == 0 || id.DirectoryID == 0 || id.ClusterID == "" {
		return fmt.Errorf("storage: incomplete identity %+v", id)
	}
	b := &batch{}
	b.put(keyIdentity, seal(keyIdentity, encodeIdentity(id)))
	if err := s.commit(b, true); err != nil {
		return err
	}
	s.identity, s.formatted = id, true
	return nil
}

// identity record: uvarint controller | uvarint directory | cluster bytes.
func encodeIdentity(id Identity) []byte {
	out := binary.AppendUvarint(nil, id.ControllerID)
	out = binary.AppendUvarint(out, id.DirectoryID)
	return append(out, id.ClusterID...)
}

func decodeIdentity(data []byte) (Identity, error) {
	controller, n := binary.Uvarint(data)
	if n <= 0 {
		return Identity{}, fmt.Errorf("%w: identity controller id", ErrCorrupt)
	}
	data = data[n:]
	directory, n := binary.Uvarint(data)
	if n <= 0 {
		return Identity{}, fmt.Errorf("%w: identity directory id", ErrCorrupt)
	}
	return Identity{ClusterID: string(data[n:]), ControllerID: controller, DirectoryID: directory}, nil
}

func (s *Store) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	s.mu.Unlock()
	s.staging.Wait()
	return s.engine.close()
}

// cacheTruncate drops cached entries at index from and after (a conflicting
// suffix being replaced). Cached entries are never modified, only dropped:
// raft may still hold them.
func (s *Store) cacheTruncate(from uint64) {
	cacheFirst := s.lastIndex + 1 - uint64(len(s.cache))
	if from > s.lastIndex {
		return
	}
	if from <= cacheFirst {
		s.cache, s.cacheBytes = nil, 0
		return
	}
	keep := from - cacheFirst
	for _, e := range s.cache[keep:] {
		s.cacheBytes -= proto.Size(e)
	}
	s.cache = s.cache[:keep:keep]
}

// cacheAppend adds the entry at lastIndex (already set) and evicts the
// oldest entries beyond the bounds.
func (s *Store) cacheAppend(e *raftpb.Entry) {
	s.cache = append(s.cache, e)
	s.cacheBytes += proto.Size(e)
	if len(s.cache) <= s.cacheEntriesMax && s.cacheBytes <= cacheBytesMax {
		return
	}
	// Evict down to three quarters of the bounds, so that the copy below
	// happens once per many appends.
	evict := 0
	for len(s.cache)-evict > s.cacheEntriesMax*3/4 || (s.cacheBytes > cacheBytesMax*3/4 && len(s.cache)-evict > 1) {
		s.cacheBytes -= proto.Size(s.cache[evict])
		evict++
	}
	s.cache = append([]*raftpb.Entry(nil), s.cache[evict:]...)
}

func isEmptyHardState(hs *raftpb.HardState) bool {
	return hs.GetTerm() == 0 && hs.GetVote() == 0 && hs.GetCommit() == 0
}

func isEmptySnapshot(sn *raftpb.Snapshot) bool { return sn.GetMetadata().GetIndex() == 0 }
