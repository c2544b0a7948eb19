package statemachine

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"hash/fnv"
	"math"
	"slices"
	"strings"

	metadatav1 "github.com/dmq-project/metadata/gen/dmq/metadata/v1"
)

// Snapshot format, version 3. Everything is a varint (signed values zigzag)
// or a length-prefixed string, in a fixed order with brokers sorted by id,
// topics by name, partitions by index and sessions from the least to the
// most recently active, so equal
// states give equal bytes. The last four bytes are the CRC-32C of the rest.
//
//	magic "DMQSNAP1" | format | appliedIndex
//	brokers:  count, then id host port rack incarnation epoch flags
//	topics:   count, then name id rf config sources partitions(count, then
//	          replicas(count, ids) isr(count, ids) leader leaderEpoch partitionEpoch)
//	          moves(count, then index original(count, ids))
//	          elrs(count, then index ids)
//	departed brokers: count, then ids (oldest first)
//	cluster config: count, then key value (keys in ConfigKeys order)
//	balancing plan: 0, or 1 (2 if it left replicas on a drained broker) then
//	          pending(count, then topic partition replicas expectedReplicas)
//	          maxMoving planned started skipped drain(count, ids) since
//	nowMs
//	sessions: count, then id clientID timeoutMs lastActiveMs lastSequence result
//	          (version code message brokerEpoch topicID elected
//	          items(count, then code message topicID))
//	crc32c
//
// Version 2 is version 3 without the items of a result, the topics' config
// sources and moves, the departed brokers and the cluster config (it predates batches and config changes),
// and is read as such: its topics' values are all taken for defaults.
// Version 1 held a request table where version 2 holds the clock and the
// sessions. It is refused: replaying the log after it without the table
// would apply again retries that the table had answered, and controllers
// restored from snapshots of different indexes would diverge.
const (
	snapshotMagic         = "DMQSNAP1"
	snapshotFormatVersion = 3
	// snapshotFormatNoItems is the last format whose results hold no batch
	// items.
	snapshotFormatNoItems = 2
)

// ErrCorruptSnapshot is returned (wrapped) for snapshot bytes that fail the
// checksum or do not decode.
var ErrCorruptSnapshot = errors.New("statemachine: corrupt snapshot")

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

type encoder struct{ buf []byte }

func (e *encoder) uvarint(v uint64) { e.buf = binary.AppendUvarint(e.buf, v) }
func (e *encoder) varint(v int64)   { e.buf = binary.AppendVarint(e.buf, v) }
func (e *encoder) str(s string)     { e.uvarint(uint64(len(s))); e.buf = append(e.buf, s...) }
func (e *encoder) ids(ids []int32) {
	e.uvarint(uint64(len(ids)))
	for _, id := range ids {
		e.varint(int64(id))
	}
}

// Snapshot encodes the replicated state (not the soft change history).
func (s *StateMachine) Snapshot() []byte { return s.view().Snapshot() }

func (v *View) encode(e *encoder, format uint64) {
	e.buf = append(e.buf, snapshotMagic...)
	e.uvarint(format)
	e.uvarint(v.appliedIndex)
	e.uvarint(uint64(len(v.brokers)))
	for i := range v.brokers {
		b := &v.brokers[i]
		e.varint(int64(b.id))
		e.str(b.host)
		e.varint(int64(b.port))
		e.str(b.rack)
		e.str(b.incarnationID)
		e.varint(b.epoch)
		var flags uint64
		if b.fenced {
			flags |= 1
		}
		if b.shuttingDown {
			flags |= 2
		}
		e.uvarint(flags)
	}
	topics := slices.SortedFunc(slices.Values(v.topics), func(a, b *topic) int { return strings.Compare(a.name, b.name) })
	e.uvarint(uint64(len(topics)))
	for _, t := range topics {
		e.str(t.name)
		e.str(t.id)
		e.varint(int64(t.replicationFactor))
		e.varint(t.config.RetentionMs)
		e.varint(t.config.RetentionBytes)
		e.varint(int64(t.config.SegmentBytes))
		e.str(t.config.CompressionType)
		e.varint(int64(t.config.MinInsyncReplicas))
		if t.config.UncleanLeaderElectionEnable {
			e.uvarint(1)
		} else {
			e.uvarint(0)
		}
		if format > snapshotFormatNoItems {
			e.uvarint(uint64(t.sources))
		}
		e.uvarint(uint64(len(t.partitions)))
		for i := range t.partitions {
			p := &t.partitions[i]
			e.ids(p.replicas)
			e.ids(p.isr)
			e.varint(int64(p.leader))
			e.varint(int64(p.leaderEpoch))
			e.varint(int64(p.partitionEpoch))
		}
		if format > snapshotFormatNoItems {
			e.uvarint(uint64(len(t.moving)))
			for i := range t.partitions {
				if m := t.movingOf(int32(i)); m != nil {
					e.uvarint(uint64(i))
					e.ids(m.original)
				}
			}
			e.uvarint(uint64(len(t.elr)))
			for i := range t.partitions {
				if elr := t.elrOf(int32(i)); elr != nil {
					e.uvarint(uint64(i))
					e.ids(elr)
				}
			}
		}
	}
	if format > snapshotFormatNoItems {
		e.ids(v.departed)
		e.uvarint(uint64(len(v.clusterConfig)))
		for _, key := range ConfigKeys {
			if value, ok := v.clusterConfig[key]; ok {
				e.str(key)
				e.str(value)
			}
		}
		if run := v.balance; run == nil {
			e.uvarint(0)
		} else {
			if run.leftBehind {
				e.uvarint(2)
			} else {
				e.uvarint(1)
			}
			e.uvarint(uint64(len(run.pending)))
			for _, ra := range run.pending {
				e.str(ra.Topic)
				e.varint(int64(ra.Partition))
				e.ids(ra.Replicas)
				e.ids(ra.ExpectedReplicas)
			}
			e.varint(int64(run.maxMoving))
			e.varint(int64(run.planned))
			e.varint(int64(run.started))
			e.varint(int64(run.skipped))
			e.ids(run.drain)
			e.varint(run.since)
		}
	}
	e.varint(v.nowMs)
	e.uvarint(uint64(len(v.sessions)))
	for i := range v.sessions {
		ss := &v.sessions[i]
		e.uvarint(ss.id)
		e.str(ss.clientID)
		e.varint(ss.timeoutMs)
		e.varint(ss.lastActiveMs)
		e.uvarint(ss.lastSequence)
		e.result(ss.result, format > snapshotFormatNoItems)
	}
}

func (e *encoder) result(r Result, withItems bool) {
	e.varint(r.Version)
	if r.Err != nil {
		e.uvarint(uint64(r.Err.Code))
		e.str(r.Err.Message)
	} else {
		e.uvarint(0)
		e.str("")
	}
	e.varint(r.BrokerEpoch)
	e.str(r.TopicID)
	e.varint(int64(r.Elected))
	if !withItems {
		return
	}
	e.uvarint(uint64(len(r.Items)))
	for _, item := range r.Items {
		if item.Err != nil {
			e.uvarint(uint64(item.Err.Code))
			e.str(item.Err.Message)
		} else {
			e.uvarint(0)
			e.str("")
		}
		e.str(item.TopicID)
	}
}

// Hash is a 64-bit digest of the replicated state, equal on two nodes
// exactly when their snapshots are byte-identical (up to collisions).
func (s *StateMachine) Hash() uint64 {
	e := &encoder{buf: make([]byte, 0, 64+32*s.PartitionCount())}
	s.view().encode(e, snapshotFormatVersion)
	h := fnv.New64a()
	h.Write(e.buf)
	return h.Sum64()
}

type decoder struct {
	buf []byte
	err error
}

func (d *decoder) fail(format string, args ...any) {
	if d.err == nil {
		d.err = fmt.Errorf("%w: %s", ErrCorruptSnapshot, fmt.Sprintf(format, args...))
	}
}

func (d *decoder) uvarint() uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.buf)
	if n <= 0 {
		d.fail("bad uvarint")
		return 0
	}
	d.buf = d.buf[n:]
	return v
}

func (d *decoder) varint() int64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Varint(d.buf)
	if n <= 0 {
		d.fail("bad varint")
		return 0
	}
	d.buf = d.buf[n:]
	return v
}

func (d *decoder) int32() int32 {
	v := d.varint()
	if v < math.MinInt32 || v > math.MaxInt32 {
		d.fail("value %d does not fit 32 bits", v)
		return 0
	}
	return int32(v)
}

// count reads a collection length, refusing lengths the remaining bytes
// cannot hold (each element takes at least one byte).
func (d *decoder) count() int {
	n := d.uvarint()
	if n > uint64(len(d.buf)) {
		d.fail("count %d exceeds the %d bytes left", n, len(d.buf))
		return 0
	}
	return int(n)
}

func (d *decoder) str() string {
	n := d.count()
	if d.err != nil {
		return ""
	}
	s := string(d.buf[:n])
	d.buf = d.buf[n:]
	return s
}

func (d *decoder) result(withItems bool) Result {
	r := Result{Version: d.varint(), Err: d.errorValue()}
	r.BrokerEpoch, r.TopicID, r.Elected = d.varint(), d.str(), d.int32()
	if !withItems {
		return r
	}
	n := d.count()
	if n > TopicsPerBatchMax {
		d.fail("a result of %d batch items", n)
		return r
	}
	if n > 0 {
		r.Items = make([]ItemResult, n)
	}
	for i := range r.Items {
		r.Items[i] = ItemResult{Err: d.errorValue(), TopicID: d.str()}
	}
	return r
}

// errorValue decodes an error code and message; code 0 is no error.
func (d *decoder) errorValue() *Error {
	code, message := d.uvarint(), d.str()
	if code == 0 {
		return nil
	}
	return &Error{Code: metadatav1.ErrorCode(code), Message: message}
}

// idsInto decodes an id list into arena, returning the list (capped at its
// length) and the rest of the arena.
func (d *decoder) idsInto(arena []int32) ([]int32, []int32) {
	n := d.count()
	if n > 2*ReplicationFactorMax {
		// A moving partition's replicas are its target and the leaving
		// ones: up to twice the largest factor.
		d.fail("a replica list of %d brokers", n)
		return nil, arena
	}
	if n > len(arena) {
		arena = make([]int32, n)
	}
	out := arena[:n:n]
	for i := range out {
		out[i] = d.int32()
	}
	return out, arena[n:]
}

// Restore rebuilds a state machine from Snapshot bytes. Its history starts
// at the snapshot's version. Corrupt bytes or a state that breaks an
// invariant return an error wrapping ErrCorruptSnapshot.
func Restore(data []byte) (*StateMachine, error) {
	if len(data) < len(snapshotMagic)+4 {
		return nil, fmt.Errorf("%w: %d bytes is too short", ErrCorruptSnapshot, len(data))
	}
	body, sum := data[:len(data)-4], binary.LittleEndian.Uint32(data[len(data)-4:])
	if crc32.Checksum(body, castagnoli) != sum {
		return nil, fmt.Errorf("%w: checksum mismatch", ErrCorruptSnapshot)
	}
	if string(body[:len(snapshotMagic)]) != snapshotMagic {
		return nil, fmt.Errorf("%w: bad magic", ErrCorruptSnapshot)
	}
	d := &decoder{buf: body[len(snapshotMagic):]}
	format := d.uvarint()
	if format == 1 {
		return nil, fmt.Errorf("%w: format version 1 predates client sessions: its request table cannot be carried over safely; "+
			"start this build on a new data directory (an in-place upgrade from it is not supported)", ErrCorruptSnapshot)
	}
	if format != snapshotFormatVersion && format != snapshotFormatNoItems {
		return nil, fmt.Errorf("%w: format version %d, this build reads %d", ErrCorruptSnapshot, format, snapshotFormatVersion)
	}
	s := New()
	s.appliedIndex = d.uvarint()
	for i, n := 0, d.count(); i < n && d.err == nil; i++ {
		b := &broker{id: d.int32(), host: d.str(), port: d.int32(), rack: d.str(), incarnationID: d.str(), epoch: d.varint()}
		flags := d.uvarint()
		b.fenced, b.shuttingDown = flags&1 != 0, flags&2 != 0
		if _, dup := s.brokers[b.id]; dup {
			d.fail("broker %d twice", b.id)
		}
		s.brokers[b.id] = b
	}
	for i, n := 0, d.count(); i < n && d.err == nil; i++ {
		t := &topic{name: d.str(), id: d.str(), replicationFactor: d.int32()}
		t.config = &metadatav1.TopicConfig{
			RetentionMs: d.varint(), RetentionBytes: d.varint(), SegmentBytes: d.int32(),
			CompressionType: d.str(), MinInsyncReplicas: d.int32(), UncleanLeaderElectionEnable: d.uvarint() == 1,
		}
		if format > snapshotFormatNoItems {
			sources := d.uvarint()
			t.sources = configSources(sources)
			if sources>>(2*len(ConfigKeys)) != 0 {
				d.fail("topic %q has config sources %#x", t.name, sources)
			}
			for index := range ConfigKeys {
				if t.sources.of(index) > sourceCluster {
					d.fail("topic %q has config sources %#x", t.name, sources)
				}
			}
		}
		parts := d.count()
		if t.replicationFactor < 1 || t.replicationFactor > ReplicationFactorMax {
			d.fail("topic %q has replication factor %d", t.name, t.replicationFactor)
		}
		if d.err != nil {
			break
		}
		rf := int(t.replicationFactor)
		replicaArena := make([]int32, parts*rf)
		isrArena := make([]int32, parts*rf)
		t.partitions = make([]partition, parts)
		for j := range t.partitions {
			p := &t.partitions[j]
			p.replicas, replicaArena = d.idsInto(replicaArena)
			p.isr, isrArena = d.idsInto(isrArena)
			p.leader, p.leaderEpoch, p.partitionEpoch = d.int32(), d.int32(), d.int32()
		}
		if format > snapshotFormatNoItems {
			last := -1
			for j, moves := 0, d.count(); j < moves && d.err == nil; j++ {
				index := int(min(d.uvarint(), uint64(len(t.partitions))))
				if index <= last || index >= len(t.partitions) {
					d.fail("topic %q moves partition %d after %d of %d", t.name, index, last, len(t.partitions))
					break
				}
				last = index
				original, _ := d.idsInto(nil)
				// The target is the first replicationFactor replicas; the
				// invariants check the rest of the shape.
				replicas := t.partitions[index].replicas
				m := newMove(original, replicas[:min(len(replicas), int(t.replicationFactor))])
				if m == nil {
					d.fail("topic %q partition %d moves from %v to its own replicas", t.name, index, original)
					break
				}
				t.setMoving(int32(index), m)
				s.movingCount++
			}
			last = -1
			for j, elrs := 0, d.count(); j < elrs && d.err == nil; j++ {
				index := int(min(d.uvarint(), uint64(len(t.partitions))))
				if index <= last || index >= len(t.partitions) {
					d.fail("topic %q has an ELR for partition %d after %d of %d", t.name, index, last, len(t.partitions))
					break
				}
				last = index
				elr, _ := d.idsInto(nil)
				if len(elr) == 0 {
					d.fail("topic %q has an empty ELR entry", t.name)
					break
				}
				t.setELR(int32(index), elr)
			}
		}
		if _, dup := s.topics[t.name]; dup {
			d.fail("topic %q twice", t.name)
		}
		s.topics[t.name] = t
		s.topicsByCollisionKey[collisionKey(t.name)] = t.name
		s.topicIDs[t.id] = t.name
		for j := range t.partitions {
			if t.partitions[j].leader == NoLeader {
				s.offline[partitionKey{topic: t.name, index: int32(j)}] = struct{}{}
			}
		}
	}
	if format > snapshotFormatNoItems {
		n := d.count()
		if n > DepartedBrokersMax {
			d.fail("%d departed brokers", n)
		}
		for i := 0; i < n && d.err == nil; i++ {
			id := d.int32()
			if _, registered := s.brokers[id]; registered || slices.Contains(s.departed, id) {
				d.fail("departed broker %d registered or twice", id)
			}
			s.departed = append(s.departed, id)
		}
		scratch := DefaultTopicConfig(1, ReplicationFactorMax)
		for i, n := 0, d.count(); i < n && d.err == nil; i++ {
			key, value := d.str(), d.str()
			if _, known := configIndex(key); !known || setConfigValue(scratch, key, value) != nil || configValue(scratch, key) != value {
				d.fail("cluster config %s=%q", key, value)
			}
			s.clusterConfig[key] = value
		}
		if present := d.uvarint(); present == 1 || present == 2 {
			run := &balanceRun{leftBehind: present == 2}
			for i, n := 0, d.count(); i < n && d.err == nil; i++ {
				ra := &metadatav1.PartitionReassignment{Topic: d.str(), Partition: d.int32()}
				ra.Replicas, _ = d.idsInto(nil)
				if len(ra.Replicas) == 0 {
					ra.Replicas = nil
				}
				if ra.ExpectedReplicas, _ = d.idsInto(nil); len(ra.ExpectedReplicas) == 0 {
					ra.ExpectedReplicas = nil
				}
				run.pending = append(run.pending, ra)
			}
			run.maxMoving, run.planned, run.started, run.skipped = d.int32(), d.int32(), d.int32(), d.int32()
			run.drain, _ = d.idsInto(nil)
			if len(run.drain) == 0 {
				run.drain = nil
			}
			run.since = d.varint()
			if ValidateRebalance(len(run.pending), int(run.maxMoving)) != nil || run.planned < 0 || run.started < 0 || run.skipped < 0 ||
				int(run.started)+int(run.skipped)+len(run.pending) != int(run.planned) || run.since < 0 || run.since > int64(s.appliedIndex) {
				d.fail("a balancing plan out of bounds")
			}
			s.balance = run
		} else if present != 0 {
			d.fail("balancing plan flag %d", present)
		}
	}
	s.nowMs = d.varint()
	for i, n := 0, d.count(); i < n && d.err == nil; i++ {
		ss := &session{id: d.uvarint(), clientID: d.str(), timeoutMs: d.varint(), lastActiveMs: d.varint(), lastSequence: d.uvarint()}
		ss.result = d.result(format > snapshotFormatNoItems)
		if d.err != nil {
			break
		}
		if _, dup := s.sessions.byID[ss.id]; dup || s.sessions.len() >= SessionsMax ||
			(s.sessions.newest != nil && s.sessions.newest.lastActiveMs > ss.lastActiveMs) ||
			ss.lastActiveMs > s.nowMs || ss.id == 0 || ss.id > s.appliedIndex ||
			ss.timeoutMs < SessionTimeoutMin || ss.timeoutMs > SessionTimeoutMax || len(ss.clientID) > requestIDClientLengthMax ||
			(ss.lastSequence == 0 && !ss.result.zero()) ||
			(ss.lastSequence != 0 && (ss.result.Version < int64(ss.id) || ss.result.Version > int64(s.appliedIndex))) {
			d.fail("session %d twice, beyond capacity, out of order, active after the clock, opened after the state, "+
				"or with a timeout, client id or result out of bounds", ss.id)
			break
		}
		s.sessions.add(ss)
		if s.sessions.items > SessionItemsMax {
			d.fail("sessions hold %d batch items", s.sessions.items)
		}
	}

	if d.err == nil && len(d.buf) != 0 {
		d.fail("%d trailing bytes", len(d.buf))
	}
	if d.err != nil {
		return nil, d.err
	}
	if len(s.topicsByCollisionKey) != len(s.topics) || len(s.topicIDs) != len(s.topics) {
		return nil, fmt.Errorf("%w: colliding topic names or ids", ErrCorruptSnapshot)
	}
	if err := s.CheckInvariants(); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrCorruptSnapshot, err)
	}
	// Only the canonical encoding of a state is accepted (no overlong
	// varints, no unknown flag bits), so that equal states always have equal
	// bytes and a restored node hashes like the node that wrote it.
	canonical := &encoder{buf: make([]byte, 0, len(body))}
	s.view().encode(canonical, format)
	if string(canonical.buf) != string(body) {
		return nil, fmt.Errorf("%w: not the canonical encoding of the state it holds", ErrCorruptSnapshot)
	}
	s.history = newHistory(int64(s.appliedIndex))
	return s, nil
}
