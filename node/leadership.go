package node

import (
	"fmt"

	"go.etcd.io/raft/v3"
)

// Leadership: what the node does when it gains or loses the leadership,
// and the leader's clock carried in records.

type transfer struct {
	target   uint64
	deadline uint64
	done     func(error)
}

// observeGainedLeadership takes up leadership before a Ready's entries are
// applied, so that the entry of the new term activates the controller.
func (n *Node) observeGainedLeadership() {
	status := n.rn.BasicStatus()
	if status.RaftState != raft.StateLeader || n.isLeader {
		return
	}
	n.failUnindexedReads(unavailable("leadership changed before the read was confirmed; retry"))
	n.term, n.leader, n.isLeader = status.GetTerm(), status.Lead, true
	n.emit(Event{Kind: EventLeaderChanged, Leader: status.Lead})
	n.active = false
	n.controller.reset()
	n.stampBaseMs, n.stampFrom = n.sm.ClockMs(), n.env.Clock.Now()
}

// leaderTimeMs is the stamp of a record this leader proposes: the state
// machine's clock when it took over plus the time elapsed since on its own
// clock. Not its wall clock: a leader whose clock is minutes ahead would
// expire every client session at once, and one behind would stop expiry.
func (n *Node) leaderTimeMs() int64 {
	return n.stampBaseMs + max(n.env.Clock.Now().Sub(n.stampFrom).Milliseconds(), 0)
}

// observeLeadership reacts to term and leader changes after a Ready's
// entries are applied (so that what committed completes first).
func (n *Node) observeLeadership() {
	status := n.rn.BasicStatus()
	term, leader := status.GetTerm(), status.Lead
	isLeader := status.RaftState == raft.StateLeader
	if term == n.term && leader == n.leader && isLeader == n.isLeader {
		return
	}
	lostLeadership := n.isLeader && (!isLeader || term != n.term)
	if lostLeadership || term != n.term {
		n.failProposals(unknownOutcome(fmt.Sprintf("leadership changed (term %d, leader %d)", term, leader)))
		n.failUnindexedReads(unavailable("leadership changed before the read was confirmed; retry"))
		if n.confChangeDone != nil {
			done := n.confChangeDone
			n.confChangeSeq, n.confChangeDone = 0, nil
			done(unknownOutcome("leadership changed during the membership change"))
		}
		if p := n.promotion; p != nil {
			n.promotion = nil
			p.done(unknownOutcome(fmt.Sprintf("leadership changed while learner %d caught up: it may be a learner still; promote it", p.id)))
		}
	}
	if lostLeadership {
		n.active = false
		n.controller.reset()
	}
	changed := term != n.term || leader != n.leader
	n.term, n.leader, n.isLeader = term, leader, isLeader
	if changed {
		n.emit(Event{Kind: EventLeaderChanged, Term: term, Leader: leader})
	}
	if n.transfer != nil && leader == n.transfer.target {
		t := n.transfer
		n.transfer = nil
		t.done(nil)
	}
}
