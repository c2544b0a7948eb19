package storage

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"sort"
	"sync"
	"time"
)

// Disk is the simulator's disk: an in-memory engine with an explicit fault
// model, deterministic for a given sequence of calls.
//
// Fault model (what the simulator may do to it, and what survives):
//
//   - Writes are atomic batches, ordered, as in Pebble's WAL. An unsynced
//     batch is visible to reads at once (the page cache) but durable only
//     once a later synced write (or its own sync) completes.
//   - Crash drops every unsynced batch. With a torn tail, the first unsynced
//     batch survives as a prefix of its bytes; recovery finds it fails its
//     checksum and discards it with everything after it, exactly as a WAL
//     replay does. Nothing synced is ever lost.
//   - A sync can be made to fail (FailSyncs). The failed write returns an
//     error and its batch stays unsynced: the store must refuse further
//     writes and the node must crash and recover, never retry.
//   - A sync can be made slow (SyncLatency): the latency accrues, and the
//     simulator takes it (TakeLatency) to delay the node's next step.
//   - A stored value can be corrupted (Corrupt): one bit flips, durably,
//     until the key is written again. The store's per-record checksum turns
//     the read into ErrCorrupt: bad data is never served.
//
// A Store opened on a Disk is abandoned at a crash: its later calls fail.
type Disk struct {
	// mu serialises the engine's calls: a store stages snapshots from
	// another goroutine (StageSnapshot). The simulator runs on one.
	mu      sync.Mutex
	durable map[string][]byte
	visible map[string][]byte
	// pending are the encoded unsynced batches, oldest first.
	pending [][]byte
	// corrupt maps a key to the byte whose bit is flipped.
	corrupt map[string]int
	// blobs are durable as soon as written (putBlob syncs).
	blobs map[string][]byte
	// generation increments at each crash, invalidating engines.
	generation int

	// FailSyncs makes the next n syncs fail.
	FailSyncs int
	// SyncLatency is the simulated time each successful sync takes.
	SyncLatency time.Duration
	latency     time.Duration

	// Counters for the simulator's report.
	Writes, Syncs, FailedSyncs, Crashes int
}

// ErrInjectedSync is the error of a sync failed on purpose.
var ErrInjectedSync = errors.New("storage: injected fsync failure")

// NewDisk returns an empty disk.
func NewDisk() *Disk {
	return &Disk{durable: map[string][]byte{}, visible: map[string][]byte{}, corrupt: map[string]int{}, blobs: map[string][]byte{}}
}

// OpenMem opens a Store on the disk, recovering what it holds.
func OpenMem(d *Disk) (*Store, error) {
	return open(&diskEngine{disk: d, generation: d.generation})
}

// Crash loses every unsynced write. If tornBytes > 0 and a write was
// unsynced, that many bytes of it reach the disk first (a torn write) and
// recovery must discard them.
func (d *Disk) Crash(tornBytes int) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.Crashes++
	d.generation++
	var tail []byte
	if tornBytes > 0 && len(d.pending) > 0 {
		first := d.pending[0]
		tail = first[:min(tornBytes, len(first)-1)]
	}
	d.pending = nil
	d.visible = cloneMap(d.durable)
	if tail != nil {
		if _, err := decodeRecord(tail); err == nil {
			panic("storage: a torn record passed its checksum")
		}
	}
	d.latency = 0
}

// TakeLatency returns the sync latency accrued since the last call.
func (d *Disk) TakeLatency() time.Duration {
	d.mu.Lock()
	defer d.mu.Unlock()
	l := d.latency
	d.latency = 0
	return l
}

// Corrupt flips one bit of the stored value of the n-th key (modulo the
// number of keys, in key order), at byte position at (modulo its length).
// It returns the key, or nil if the disk is empty.
func (d *Disk) Corrupt(n, at int) []byte {
	d.mu.Lock()
	defer d.mu.Unlock()
	keys := sortedKeys(d.visible, "", "\xff\xff")
	if len(keys) == 0 {
		return nil
	}
	key := keys[n%len(keys)]
	value := d.visible[key]
	if len(value) == 0 {
		return nil
	}
	d.corrupt[key] = at % len(value)
	return []byte(key)
}

// read returns the value as the disk would: with its flipped bit, if any.
func (d *Disk) read(key string) []byte {
	value, ok := d.visible[key]
	if !ok {
		return nil
	}
	out := append([]byte(nil), value...)
	if at, bad := d.corrupt[key]; bad {
		out[at] ^= 0x10
	}
	return out
}

func cloneMap(m map[string][]byte) map[string][]byte {
	out := make(map[string][]byte, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

func sortedKeys(m map[string][]byte, lo, hi string) []string {
	var keys []string
	for k := range m {
		if k >= lo && k < hi {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	return keys
}

// Records: [ops uvarint] then per op [kind][key][end or value] with
// length-prefixed byte strings, then a CRC-32C of everything before.
func encodeRecord(b *batch) []byte {
	var out []byte
	out = binary.AppendUvarint(out, uint64(len(b.ops)))
	appendBytes := func(p []byte) {
		out = binary.AppendUvarint(out, uint64(len(p)))
		out = append(out, p...)
	}
	for _, o := range b.ops {
		out = append(out, byte(o.kind))
		appendBytes(o.key)
		if o.kind == opDeleteRange {
			appendBytes(o.end)
		} else {
			appendBytes(o.value)
		}
	}
	return binary.LittleEndian.AppendUint32(out, crc32.Checksum(out, castagnoli))
}

func decodeRecord(record []byte) (*batch, error) {
	if len(record) < 5 {
		return nil, fmt.Errorf("%w: record of %d bytes", ErrCorrupt, len(record))
	}
	body := record[:len(record)-4]
	if crc32.Checksum(body, castagnoli) != binary.LittleEndian.Uint32(record[len(record)-4:]) {
		return nil, fmt.Errorf("%w: record checksum", ErrCorrupt)
	}
	r := bytes.NewReader(body)
	readBytes := func() ([]byte, error) {
		n, err := binary.ReadUvarint(r)
		if err != nil || n > uint64(r.Len()) {
			return nil, fmt.Errorf("%w: record field", ErrCorrupt)
		}
		p := make([]byte, n)
		_, _ = r.Read(p)
		return p, nil
	}
	count, err := binary.ReadUvarint(r)
	if err != nil {
		return nil, fmt.Errorf("%w: record header", ErrCorrupt)
	}
	b := &batch{}
	for i := uint64(0); i < count; i++ {
		kind, err := r.ReadByte()
		if err != nil {
			return nil, fmt.Errorf("%w: record op", ErrCorrupt)
		}
		key, err := readBytes()
		if err != nil {
			return nil, err
		}
		second, err := readBytes()
		if err != nil {
			return nil, err
		}
		switch opKind(kind) {
		case opPut:
			b.put(key, second)
		case opDeleteRange:
			b.deleteRange(key, second)
		default:
			return nil, fmt.Errorf("%w: op kind %d", ErrCorrupt, kind)
		}
	}
	return b, nil
}

func (d *Disk) applyTo(m map[string][]byte, b *batch, clearCorruption bool) {
	for _, o := range b.ops {
		switch o.kind {
		case opPut:
			m[string(o.key)] = append([]byte(nil), o.value...)
			if clearCorruption {
				delete(d.corrupt, string(o.key))
			}
		case opDeleteRange:
			for _, k := range sortedKeys(m, string(o.key), string(o.end)) {
				delete(m, k)
				if clearCorruption {
					delete(d.corrupt, k)
				}
			}
		}
	}
}

type diskEngine struct {
	disk       *Disk
	generation int
	closed     bool
}

func (e *diskEngine) alive() error {
	if e.closed {
		return ErrClosed
	}
	if e.generation != e.disk.generation {
		return errors.New("storage: the disk crashed under this store")
	}
	return nil
}

func (e *diskEngine) get(key []byte) ([]byte, error) {
	e.disk.mu.Lock()
	defer e.disk.mu.Unlock()
	if err := e.alive(); err != nil {
		return nil, err
	}
	return e.disk.read(string(key)), nil
}

func (e *diskEngine) scan(lo, hi []byte, visit func(key, value []byte) error) error {
	e.disk.mu.Lock()
	defer e.disk.mu.Unlock()
	if err := e.alive(); err != nil {
		return err
	}
	for _, k := range sortedKeys(e.disk.visible, string(lo), string(hi)) {
		if err := visit([]byte(k), e.disk.read(k)); err != nil {
			return err
		}
	}
	return nil
}

func (e *diskEngine) write(b *batch, sync bool) error {
	e.disk.mu.Lock()
	defer e.disk.mu.Unlock()
	if err := e.alive(); err != nil {
		return err
	}
	d := e.disk
	d.Writes++
	record := encodeRecord(b)
	d.pending = append(d.pending, record)
	d.applyTo(d.visible, b, true)
	if !sync {
		return nil
	}
	if err := d.takeSync(); err != nil {
		return err
	}
	for _, r := range d.pending {
		pb, err := decodeRecord(r)
		if err != nil {
			panic("storage: the disk cannot decode its own record: " + err.Error())
		}
		d.applyTo(d.durable, pb, false)
	}
	d.pending = nil
	return nil
}

// takeSync is one sync: it fails while FailSyncs says so, else it counts
// and takes SyncLatency.
func (d *Disk) takeSync() error {
	if d.FailSyncs > 0 {
		d.FailSyncs--
		d.FailedSyncs++
		return ErrInjectedSync
	}
	d.Syncs++
	d.latency += d.SyncLatency
	return nil
}

// putBlob is a synced write: an injected sync failure (FailSyncs) fails
// it, leaving the blob as it was.
func (e *diskEngine) putBlob(name string, parts ...[]byte) error {
	e.disk.mu.Lock()
	defer e.disk.mu.Unlock()
	if err := e.alive(); err != nil {
		return err
	}
	d := e.disk
	d.Writes++
	if err := d.takeSync(); err != nil {
		return err
	}
	d.blobs[name] = bytes.Join(parts, nil)
	return nil
}

func (e *diskEngine) getBlob(name string) ([]byte, error) {
	e.disk.mu.Lock()
	defer e.disk.mu.Unlock()
	if err := e.alive(); err != nil {
		return nil, err
	}
	blob, ok := e.disk.blobs[name]
	if !ok {
		return nil, nil
	}
	return bytes.Clone(blob), nil
}

func (e *diskEngine) blobNames() ([]string, error) {
	e.disk.mu.Lock()
	defer e.disk.mu.Unlock()
	if err := e.alive(); err != nil {
		return nil, err
	}
	return sortedKeys(e.disk.blobs, "", "\xff"), nil
}

func (e *diskEngine) deleteBlob(name string) error {
	e.disk.mu.Lock()
	defer e.disk.mu.Unlock()
	if err := e.alive(); err != nil {
		return err
	}
	delete(e.disk.blobs, name)
	return nil
}

func (e *diskEngine) close() error {
	e.disk.mu.Lock()
	defer e.disk.mu.Unlock()
	e.closed = true
	return nil
}
