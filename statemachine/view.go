package statemachine

import (
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"maps"
	"slices"
)

// A View is the replicated state at one version, frozen, so that its
// snapshot can be encoded on another goroutine while the state machine goes
// on applying entries. Taking one costs a copy of what is small (brokers,
// sessions, the cluster config, the balancing plan's counters) and of the
// topic pointers; the topics themselves are shared, copy on write: the
// state machine copies a topic before it first changes one that an open
// view may hold (writableTopic), and changes nothing a topic shares with
// its copy in place (partitions' replica and ISR lists, moves, ELR lists
// and configs are replaced, never written into).
//
// View and Release run on the state machine's goroutine; Snapshot on any.
type View struct {
	sm            *StateMachine
	released      bool
	appliedIndex  uint64
	brokers       []broker
	topics        []*topic
	departed      []int32
	clusterConfig map[string]string
	balance       *balanceRun
	nowMs         int64
	sessions      []session
}

// View freezes the state at its current version. The caller must Release
// it (on the state machine's goroutine) once its snapshot is encoded: until
// then every topic changed is copied first.
func (s *StateMachine) View() *View {
	s.viewGeneration++
	s.viewsOpen++
	return s.view()
}

// view collects the state's parts. Unless View took it, it is valid only
// until the next change: Snapshot and Hash encode it at once.
func (s *StateMachine) view() *View {
	v := &View{
		sm:            s,
		appliedIndex:  s.appliedIndex,
		brokers:       make([]broker, 0, len(s.brokers)),
		topics:        make([]*topic, 0, len(s.topics)),
		departed:      slices.Clone(s.departed),
		clusterConfig: maps.Clone(s.clusterConfig),
		nowMs:         s.nowMs,
	}
	for _, id := range s.sortedBrokerIDs() {
		v.brokers = append(v.brokers, *s.brokers[id])
	}
	for _, t := range s.topics { // determinism: collected, then sorted by the encoder
		v.topics = append(v.topics, t)
	}
	if s.balance != nil {
		run := *s.balance
		v.balance = &run
	}
	if !plantedSnapshotForgetsRequests() {
		sessions := s.sessions.inOrder()
		v.sessions = make([]session, len(sessions))
		for i, ss := range sessions {
			v.sessions[i] = *ss
			v.sessions[i].older, v.sessions[i].newer = nil, nil
		}
	}
	return v
}

// Version is the metadata version the view holds.
func (v *View) Version() int64 { return int64(v.appliedIndex) }

// Snapshot encodes the view: the bytes StateMachine.Snapshot returned at
// its version. It may run on any goroutine, and more than once.
func (v *View) Snapshot() []byte {
	partitions := 0
	for _, t := range v.topics {
		partitions += len(t.partitions)
	}
	// About 11 bytes a partition at RF 3 (docs/BENCHMARKS.md): a little
	// more, so that the buffer is allocated once.
	return v.AppendSnapshot(make([]byte, 0, 1024+14*partitions+64*len(v.sessions)))
}

// AppendSnapshot appends the view's snapshot to dst. A caller that knows
// the size (the last snapshot's) gives dst the room: a buffer of tens of
// megabytes grown by doubling is garbage the collector pays for while the
// controller serves.
func (v *View) AppendSnapshot(dst []byte) []byte {
	start := len(dst)
	e := &encoder{buf: dst}
	v.encode(e, snapshotFormatVersion)
	return binary.LittleEndian.AppendUint32(e.buf, crc32.Checksum(e.buf[start:], castagnoli))
}

// Release ends the view: topics it holds may again change in place once
// no view is open.
func (v *View) Release() {
	if v.released {
		panic("statemachine: a view released twice")
	}
	v.released = true
	if v.sm.viewsOpen <= 0 {
		panic("statemachine: a view released with none open")
	}
	v.sm.viewsOpen--
}

// writableTopic returns the topic to change in place of t: t itself unless
// an open view may hold it, else a copy that replaces it in the state.
// Every change to a topic or its partitions goes through the topic it
// returns; a pointer to the replaced topic must not be kept.
func (s *StateMachine) writableTopic(t *topic) *topic {
	if s.viewsOpen == 0 || t.generation == s.viewGeneration {
		return t
	}
	c := *t
	c.generation = s.viewGeneration
	c.partitions = slices.Clone(t.partitions)
	c.moving = maps.Clone(t.moving)
	c.elr = maps.Clone(t.elr)
	s.topics[c.name] = &c
	return &c
}

// mustBeWritable panics when a change reaches a topic that an open view
// may hold: a path that skipped writableTopic, which would change a
// snapshot being encoded.
func (s *StateMachine) mustBeWritable(t *topic) {
	if s.viewsOpen > 0 && t.generation != s.viewGeneration {
		panic(fmt.Sprintf("statemachine: changing topic %q, which an open view holds, without copying it", t.name))
	}
}
