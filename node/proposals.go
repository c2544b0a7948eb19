package node

import (
	"fmt"
	"github.com/dmq-project/metadata/internal/planted"

	metadatav1 "github.com/dmq-project/metadata/gen/dmq/metadata/v1"
	"github.com/dmq-project/metadata/statemachine"
	"google.golang.org/protobuf/proto"
)

// Proposals: a record proposed with a done callback, completed exactly
// once, by its committed entry's result or by an error (leadership lost,
// deadline passed).

// Outcome completes a proposal: the state machine's result, or an error
// from the node (NOT_CONTROLLER with the leader's id, UNAVAILABLE,
// UNKNOWN_OUTCOME).
type Outcome struct {
	statemachine.Result
	// LeaderID is the leader this node knows of, 0 if none; set on every
	// outcome so that NOT_CONTROLLER can name it.
	LeaderID uint64
}

type proposal struct {
	done     func(Outcome)
	deadline uint64
	// term is the term the proposal was made in: its entry carries it. A
	// restarted node counts sequences from 1 again, and an entry of its
	// previous life with the same sequence may still commit; the term tells
	// them apart (seed 3987).
	term uint64
}

func (n *Node) failProposals(err *statemachine.Error) {
	for _, seq := range sortedKeys(n.proposals) {
		p := n.proposals[seq]
		delete(n.proposals, seq)
		p.done(Outcome{Result: statemachine.Result{Err: err}, LeaderID: n.leader})
	}
}

// expireRequests completes requests past their deadline.
func (n *Node) expireRequests() {
	for _, seq := range sortedKeys(n.proposals) {
		if p := n.proposals[seq]; p.deadline <= n.ticks {
			delete(n.proposals, seq)
			p.done(Outcome{Result: statemachine.Result{Err: unknownOutcome("the proposal did not commit in time")}, LeaderID: n.leader})
		}
	}
	for _, seq := range sortedKeys(n.reads) {
		if r := n.reads[seq]; r.deadline <= n.ticks {
			delete(n.reads, seq)
			r.serve(nil, unavailable("the read could not be confirmed by a quorum in time"))
		}
	}
	if n.readBatch != 0 && n.readBatchDeadline <= n.ticks {
		n.requeueReads()
	}
	if n.confChangeDone != nil && n.confChangeDeadline <= n.ticks {
		done := n.confChangeDone
		n.confChangeSeq, n.confChangeDone = 0, nil
		done(unknownOutcome("the membership change did not apply in time"))
	}
	if n.transfer != nil && n.transfer.deadline <= n.ticks {
		t := n.transfer
		n.transfer = nil
		t.done(unavailable("leadership did not move to %d in time", t.target))
	}
}

// propose sends a record through consensus; done runs when it is applied,
// or fails. Records proposed here carry this node's tag.
func (n *Node) propose(record *metadatav1.Record, done func(Outcome)) {
	if !n.isLeader || n.removed {
		done(Outcome{Result: statemachine.Result{Err: n.errNotController()}, LeaderID: n.leader})
		return
	}
	if err := statemachine.ValidateRequestID(record.GetRequestId()); err != nil {
		done(Outcome{Result: statemachine.Result{Err: err}, LeaderID: n.leader})
		return
	}
	if first, ok := n.sm.LookupRequest(record.GetRequestId()); ok {
		// Already applied: answering from the table is answering with a
		// committed fact, and saves a round of consensus.
		done(Outcome{Result: first, LeaderID: n.leader})
		return
	}
	n.nextSeq++
	seq := n.nextSeq
	record.ProposerId, record.ProposalSeq = n.cfg.ID, seq
	record.LeaderTimeMs = n.leaderTimeMs()
	data, err := proto.Marshal(record)
	if err != nil {
		panic(fmt.Sprintf("node: encoding a record: %v", err))
	}
	if err := n.rn.Propose(data); err != nil {
		done(Outcome{Result: statemachine.Result{Err: unavailable("raft dropped the proposal (%v): retry", err)}, LeaderID: n.leader})
		return
	}
	if planted.On(planted.AckBeforeCommit) {
		done(Outcome{Result: statemachine.Result{Version: n.sm.Version()}, LeaderID: n.leader})
		return
	}
	n.proposals[seq] = &proposal{done: done, deadline: n.ticks + uint64(n.cfg.RequestTimeoutTicks), term: n.term}
}
