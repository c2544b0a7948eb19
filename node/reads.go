package node

import (
	"encoding/binary"
	"github.com/dmq-project/metadata/internal/planted"

	"github.com/dmq-project/metadata/statemachine"
	"go.etcd.io/raft/v3"
)

// Linearizable reads: batched ReadIndex requests, each answered once the
// state machine has applied the read index of the same leadership.

type read struct {
	serve    func(*statemachine.StateMachine, *statemachine.Error)
	deadline uint64
	// batch is the ReadIndex request the read waits on, 0 while queued.
	batch uint64
	// index is the commit index ReadIndex confirmed; valid once known.
	index uint64
	known bool
}

// readsWaiting says whether reads wait for a ReadIndex that can be issued.
func (n *Node) readsWaiting() bool { return n.readsQueued && n.readBatch == 0 }

func (n *Node) failUnindexedReads(err *statemachine.Error) {
	n.readBatch = 0
	for _, seq := range sortedKeys(n.reads) {
		if r := n.reads[seq]; !r.known {
			delete(n.reads, seq)
			r.serve(nil, err)
		}
	}
}

// Read serves a linearizable read: serve runs with the state machine once
// it reflects every write acknowledged before the call (ReadIndex), on the
// leader or a follower, or with an error.
func (n *Node) Read(serve func(*statemachine.StateMachine, *statemachine.Error)) {
	if n.removed {
		serve(nil, n.errNotController())
		return
	}
	if planted.On(planted.ReadWithoutReadIndex) {
		serve(n.sm, nil)
		return
	}
	n.nextSeq++
	seq := n.nextSeq
	n.reads[seq] = &read{serve: serve, deadline: n.ticks + uint64(n.cfg.RequestTimeoutTicks)}
	n.readsQueued = true
}

// issueReads sends one ReadIndex for every queued read, unless one is in
// flight (then they wait for the next).
func (n *Node) issueReads() {
	if n.readBatch != 0 {
		return
	}
	n.readsQueued = false
	var queued []*read
	for _, seq := range sortedKeys(n.reads) {
		if r := n.reads[seq]; r.batch == 0 {
			queued = append(queued, r)
		}
	}
	if len(queued) == 0 {
		return
	}
	n.nextSeq++
	batch := n.nextSeq
	for _, r := range queued {
		r.batch = batch
	}
	n.readBatch, n.readBatchDeadline = batch, n.ticks+uint64(n.cfg.ElectionTicks)
	n.rn.ReadIndex(binary.BigEndian.AppendUint64(binary.BigEndian.AppendUint64(nil, n.life), batch))
}

// requeueReads gives up the ReadIndex in flight (lost with a leader, or
// dropped by a node without one) and issues a fresh one for its reads.
func (n *Node) requeueReads() {
	for _, seq := range sortedKeys(n.reads) {
		if r := n.reads[seq]; !r.known && r.batch == n.readBatch {
			r.batch = 0
		}
	}
	n.readBatch = 0
	n.readsQueued = true
}

// ReadStale serves a read from the local state at once; the caller reports
// the version it reflects (StateMachine.Version).
func (n *Node) ReadStale(serve func(*statemachine.StateMachine)) { serve(n.sm) }

// resolveRead records the commit index a ReadIndex confirmed. A context
// that is not one of this life's requests is ignored: it answers a read
// of an earlier process, whose reads were failed when it died.
func (n *Node) resolveRead(rs raft.ReadState) {
	if len(rs.RequestCtx) != 16 || binary.BigEndian.Uint64(rs.RequestCtx) != n.life {
		return
	}
	batch := binary.BigEndian.Uint64(rs.RequestCtx[8:])
	for _, seq := range sortedKeys(n.reads) {
		if r := n.reads[seq]; r.batch == batch {
			r.index, r.known = rs.Index, true
		}
	}
	if batch == n.readBatch {
		n.readBatch = 0
	}
}

func (n *Node) serveReads() {
	applied := n.sm.AppliedIndex()
	for _, seq := range sortedKeys(n.reads) {
		if r := n.reads[seq]; r.known && r.index <= applied {
			delete(n.reads, seq)
			r.serve(n.sm, nil)
		}
	}
}
