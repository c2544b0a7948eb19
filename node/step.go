package node

import (
	"errors"
	"fmt"
	"github.com/dmq-project/metadata/internal/planted"
	"slices"

	"go.etcd.io/raft/v3"
	"go.etcd.io/raft/v3/raftpb"
	"go.etcd.io/raft/v3/tracker"
	"google.golang.org/protobuf/proto"
)

// Admission of peer messages: what the node steps into Raft and what it
// refuses (strangers, votes a directory may not give, a follower's log gone
// below what it acknowledged), and the peer reports a runner passes on.

// ErrNotMember refuses a message whose sender is not in this controller's
// configuration: a stranger, a removed controller, or one added by a
// change this controller has not applied yet (it learns of it from the
// leader). The message is dropped, as if lost.
var ErrNotMember = errors.New("node: the sender is not a member of the configuration")

// Step hands a message from a peer to Raft. A message from outside the
// configuration is refused with ErrNotMember, unless this controller has
// no configuration yet (it waits to be added, and learns everything from
// whoever leads).
func (n *Node) Step(m *raftpb.Message) error {
	if m.GetType() == raftpb.MsgProp {
		// Proposal forwarding is off: a peer never sends one.
		return fmt.Errorf("node: proposal from peer %d refused", m.GetFrom())
	}
	if from := m.GetFrom(); !n.mayStepFrom(from, m) {
		n.strangerMessages++
		if n.strangerMessages&(n.strangerMessages-1) == 0 {
			// Said at powers of two: a flood costs a few lines.
			n.emit(Event{Kind: EventStrangerRefused, Peer: from,
				Detail: fmt.Sprintf("%v (%d refused so far)", m.GetType(), n.strangerMessages)})
		}
		n.answerRefusedAppend(m)
		return fmt.Errorf("%w: %v from %d", ErrNotMember, m.GetType(), from)
	}
	if n.directoryReplaced() {
		// This directory replaced a lost one the membership still names.
		// Silent: acknowledging appends would make the leader count it as
		// active (for the strict reconfiguration check, for a learner's
		// promotion) though it may never vote again under this id.
		n.refusedVotes++
		if n.refusedVotes&(n.refusedVotes-1) == 0 {
			n.logger.Warningf("controller %d refused a %v from %d: %s (%d refused so far)", n.cfg.ID, m.GetType(), m.GetFrom(), n.whyNoVote(), n.refusedVotes)
		}
		return fmt.Errorf("%w: %s", ErrMayNotVote, n.whyNoVote())
	}
	switch m.GetType() {
	case raftpb.MsgVote, raftpb.MsgPreVote, raftpb.MsgTimeoutNow:
		if !n.mayVote() {
			n.refusedVotes++
			if n.refusedVotes&(n.refusedVotes-1) == 0 {
				n.logger.Warningf("controller %d (directory %x) refused a %v from %d: %s (%d refused so far)",
					n.cfg.ID, n.directoryID, m.GetType(), m.GetFrom(), n.whyNoVote(), n.refusedVotes)
			}
			return fmt.Errorf("%w: %s", ErrMayNotVote, n.whyNoVote())
		}
	}
	if m.GetType() == raftpb.MsgAppResp && m.GetReject() && n.isLeader && n.rejectsBelowMatch(m) {
		return fmt.Errorf("%w: controller %d rejects appends at index %d below the %d it acknowledged", ErrLostLog, m.GetFrom(), m.GetRejectHint(), n.matchOf(m.GetFrom()))
	}
	n.heardAt[m.GetFrom()] = n.ticks
	if n.unreachable[m.GetFrom()] {
		delete(n.unreachable, m.GetFrom())
		n.emit(Event{Kind: EventPeerBack, Peer: m.GetFrom()})
	}
	err := n.rn.Step(m)
	if errors.Is(err, raft.ErrStepPeerNotFound) || errors.Is(err, raft.ErrStepLocalMsg) {
		return nil
	}
	return err
}

// mayStepFrom says whether a message from id may be stepped. A member's
// may. So may, from an id this controller has not seen added yet, a
// message that shows the id's membership: an append whose entries add it,
// a snapshot whose configuration names it, or anything once an entry that
// adds it is in this controller's log. Without this a controller that
// lags behind a new member's addition could never hear that member lead,
// and so never catch up. A removed controller's messages never may.
//
// A controller with no configuration waits to be added: it accepts only
// what cannot change its state until a leader's snapshot makes it a
// member (appends that cannot match its empty log, and heartbeats that
// commit nothing: it answers them, and the leader then sends the
// snapshot) and a snapshot that names it.
func (n *Node) mayStepFrom(id uint64, m *raftpb.Message) bool {
	if planted.On(planted.StepStrangers) {
		return true
	}
	if n.removedIDs[id] {
		return false
	}
	if n.isMember(id) || n.addedInLog[id] != 0 {
		return true
	}
	switch m.GetType() {
	case raftpb.MsgSnap:
		cs := m.GetSnapshot().GetMetadata().GetConfState()
		return slices.Contains(cs.GetVoters(), id) && (slices.Contains(cs.GetVoters(), n.cfg.ID) || slices.Contains(cs.GetLearners(), n.cfg.ID))
	case raftpb.MsgApp:
		if !n.hasConfiguration() {
			// The joiner's log is empty: an append after index 0 cannot
			// match it and is rejected (the leader then sends a
			// snapshot); one after index 0 would be taken, so only
			// those without entries, which commit nothing, are.
			return m.GetIndex() > 0 || len(m.GetEntries()) == 0
		}
		for _, e := range m.GetEntries() {
			if slices.Contains(confChangeAdds(e), id) {
				return true
			}
		}
	case raftpb.MsgHeartbeat:
		return !n.hasConfiguration() && m.GetCommit() == 0
	}
	return false
}

// answerRefusedAppend answers an append refused from an id this
// controller does not know (not one it saw removed) with a rejection that
// names its last index, without stepping anything. If the sender is a
// member added by a change this controller has not received yet, and
// leads, the rejection makes it send the entries from there on (they
// include that change) or a snapshot (which names it): both are accepted,
// and the lagging controller catches up. A rejection never advances what a
// leader believes replicated, so answering a stranger this way is
// harmless.
func (n *Node) answerRefusedAppend(m *raftpb.Message) {
	if n.removedIDs[m.GetFrom()] || m.GetTerm() < n.term || !n.hasConfiguration() {
		return
	}
	if m.GetType() == raftpb.MsgHeartbeat {
		// A leader in raft v3.7 probes a follower again only when a
		// heartbeat is answered: without this, one lost probe left the
		// lagging controller unprobed for as long as that member led. No
		// context: it would count as confirming a ReadIndex.
		n.env.Transport.Send([]*raftpb.Message{{
			Type: raftpb.MsgHeartbeatResp.Enum(), From: new(n.cfg.ID), To: new(m.GetFrom()), Term: new(m.GetTerm()),
		}})
		return
	}
	if m.GetType() != raftpb.MsgApp {
		return
	}
	last, err := n.store.LastIndex()
	if err != nil {
		return
	}
	hint := min(last, m.GetIndex())
	hintTerm, err := n.store.Term(hint)
	if err != nil {
		return // compacted: the leader finds out from the next probe
	}
	n.env.Transport.Send([]*raftpb.Message{{
		Type: raftpb.MsgAppResp.Enum(), From: new(n.cfg.ID), To: new(m.GetFrom()), Term: new(m.GetTerm()),
		Index: new(m.GetIndex()), Reject: new(true), RejectHint: new(hint), LogTerm: new(hintTerm),
	}})
}

// confChangeAdds lists the ids a conf change entry adds (nil for any other
// entry, or one that does not decode).
func confChangeAdds(e *raftpb.Entry) []uint64 {
	var cc raftpb.ConfChangeI
	switch e.GetType() {
	case raftpb.EntryConfChange:
		v1 := &raftpb.ConfChange{}
		if proto.Unmarshal(e.GetData(), v1) != nil {
			return nil
		}
		cc = v1
	case raftpb.EntryConfChangeV2:
		v2 := &raftpb.ConfChangeV2{}
		if proto.Unmarshal(e.GetData(), v2) != nil {
			return nil
		}
		cc = v2
	default:
		return nil
	}
	var ids []uint64
	for _, c := range cc.AsV2().GetChanges() {
		if t := c.GetType(); t == raftpb.ConfChangeAddNode || t == raftpb.ConfChangeAddLearnerNode {
			ids = append(ids, c.GetNodeId())
		}
	}
	return ids
}

// noteAddedInLog remembers the ids that conf changes among appended
// entries add, until those entries are applied.
func (n *Node) noteAddedInLog(entries []*raftpb.Entry) {
	for _, e := range entries {
		for _, id := range confChangeAdds(e) {
			n.addedInLog[id] = max(n.addedInLog[id], e.GetIndex())
		}
	}
}

// rememberAddsInLog rebuilds addedInLog at start from the entries after
// the snapshot: a restart must not forget a member whose addition is in
// the log but not yet applied.
func (n *Node) rememberAddsInLog(snapshotIndex uint64) error {
	last, err := n.store.LastIndex()
	if err != nil {
		return err
	}
	for lo := snapshotIndex + 1; lo <= last; {
		entries, err := n.store.Entries(lo, last+1, maxSizePerMsg)
		if err != nil {
			return err
		}
		if len(entries) == 0 {
			panic(fmt.Sprintf("node: the log holds no entry at %d though its last index is %d", lo, last))
		}
		n.noteAddedInLog(entries)
		lo = entries[len(entries)-1].GetIndex() + 1
	}
	return nil
}

// forgetAppliedAdds drops the ids whose adding entries are applied: they
// are members now, or were removed since.
func (n *Node) forgetAppliedAdds() {
	applied := n.sm.AppliedIndex()
	for _, id := range sortedKeys(n.addedInLog) {
		if n.addedInLog[id] <= applied {
			delete(n.addedInLog, id)
		}
	}
}

// ErrLostLog refuses a follower's rejection that puts its log below what
// it acknowledged: stale, or its disk was lost and it restarted empty
// under its id. Raft assumes a log never shrinks below an acknowledgement
// and would probe it again at once, for ever. The follower is left alone
// (it may not vote either: see mayVote) until it is removed and added back
// under a new id.
var ErrLostLog = errors.New("node: a follower's log went back below what it acknowledged")

// rejectsBelowMatch says whether a rejection names a last index below the
// follower's acknowledged match. Dropping it is always safe: a stale
// rejection (delayed, duplicated) is outdated anyway, and one from a
// follower that lost its log could only be probed again for ever. A
// follower that keeps sending them has lost its data, and is logged once.
func (n *Node) rejectsBelowMatch(m *raftpb.Message) bool {
	match := n.matchOf(m.GetFrom())
	if m.GetRejectHint() >= match {
		return false
	}
	n.lostLogs[m.GetFrom()]++
	if n.lostLogs[m.GetFrom()] == lostLogRejectionsMin {
		n.logger.Warningf("controller %d keeps answering with its log at index %d, below the %d it acknowledged: its data was lost; remove it and add it back under a new id",
			m.GetFrom(), m.GetRejectHint(), match)
	}
	return true
}

// lostLogRejectionsMin is how many rejections below the acknowledged match
// tell a lost log from stale rejections.
const lostLogRejectionsMin = 3

func (n *Node) matchOf(id uint64) uint64 {
	var match uint64
	n.rn.WithProgress(func(pid uint64, _ raft.ProgressType, pr tracker.Progress) {
		if pid == id {
			match = pr.Match
		}
	})
	return match
}

// ErrMayNotVote refuses a vote request (or a leadership hand-over) to a
// controller that may not vote: see mayVote.
var ErrMayNotVote = errors.New("node: this controller may not vote")

// mayVote says whether this controller may vote and campaign: it must be
// in a configuration, and the membership must name this directory for it
// (or name none, for a member of an earlier version). A controller whose
// directory was lost and formatted again has forgotten its votes and the
// entries it acknowledged; voting as the voter it replaces could elect a
// leader without a committed entry. It waits, an observer, until it is
// removed and added back under a new id.
func (n *Node) mayVote() bool {
	if !n.hasConfiguration() {
		return false
	}
	named, recorded := n.directories[n.cfg.ID]
	return !recorded || named == n.directoryID || planted.On(planted.ForgetDirectories)
}

// directoryReplaced says whether the membership names another directory
// for this controller: its data was lost and this directory replaced it.
func (n *Node) directoryReplaced() bool {
	named, recorded := n.directories[n.cfg.ID]
	return n.hasConfiguration() && recorded && named != n.directoryID && !planted.On(planted.ForgetDirectories)
}

func (n *Node) whyNoVote() string {
	if !n.hasConfiguration() {
		return "it has no configuration yet (it waits to be added)"
	}
	return fmt.Sprintf("the membership names directory %x for it, not this directory %x: its data was lost; remove it and add it back under a new id",
		n.directories[n.cfg.ID], n.directoryID)
}

// isMember says whether id is in the configuration, as a voter or a
// learner, incoming or outgoing.
func (n *Node) isMember(id uint64) bool {
	cs := n.confState
	return slices.Contains(cs.GetVoters(), id) || slices.Contains(cs.GetLearners(), id) ||
		slices.Contains(cs.GetVotersOutgoing(), id) || slices.Contains(cs.GetLearnersNext(), id)
}

func (n *Node) hasConfiguration() bool {
	return len(n.confState.GetVoters()) > 0 || len(n.confState.GetVotersOutgoing()) > 0
}

// ReportUnreachable tells Raft a peer could not be reached.
func (n *Node) ReportUnreachable(id uint64) {
	n.rn.ReportUnreachable(id)
	if !n.unreachable[id] && n.isMember(id) {
		n.unreachable[id] = true
		n.emit(Event{Kind: EventPeerUnreachable, Peer: id})
	}
}

// ReportCongested tells Raft that messages to a peer were dropped because
// its send queue was full: Raft probes instead of streaming into the void,
// as for an unreachable peer, but the operator is not told the peer is
// unreachable: it answers, only slower than the leader sends, and saying
// "unreachable" then "back" at every burst made the log flap under load.
func (n *Node) ReportCongested(id uint64) {
	n.rn.ReportUnreachable(id)
}

// ReportSnapshot tells Raft whether a snapshot reached a peer.
func (n *Node) ReportSnapshot(id uint64, delivered bool) {
	status := raft.SnapshotFinish
	if !delivered {
		status = raft.SnapshotFailure
	}
	n.rn.ReportSnapshot(id, status)
}

// SentBy says whether message m may arrive on a stream of controller
// from, as the peer transport admits it: m is from that controller, or is
// a request Raft relays with its requester as the sender (a follower
// passes a read index request or a leadership transfer it got on to the
// leader it knows, keeping m.From: etcd raft's stepFollower).
func SentBy(m *raftpb.Message, from uint64) bool {
	switch m.GetType() {
	case raftpb.MessageType_MsgReadIndex, raftpb.MessageType_MsgTransferLeader:
		return m.GetFrom() != 0
	}
	return m.GetFrom() == from
}
