package node

import (
	"encoding/binary"
	"fmt"
	"slices"

	metadatav1 "github.com/dmq-project/metadata/gen/dmq/metadata/v1"
	"github.com/dmq-project/metadata/statemachine"
	"go.etcd.io/raft/v3"
	"go.etcd.io/raft/v3/raftpb"
	"go.etcd.io/raft/v3/tracker"
	"google.golang.org/protobuf/proto"
)

// MembershipChangeKind names a change of the controller quorum.
type MembershipChangeKind int

const (
	AddVoter MembershipChangeKind = iota + 1
	RemoveVoter
	AddLearner
	PromoteLearner
)

func (k MembershipChangeKind) String() string {
	switch k {
	case AddVoter:
		return "add-voter"
	case RemoveVoter:
		return "remove-voter"
	case AddLearner:
		return "add-learner"
	case PromoteLearner:
		return "promote-learner"
	}
	return fmt.Sprintf("membership-change(%d)", int(k))
}

// MembershipChange is one change; URL is where peers reach an added node,
// and DirectoryID the data directory it runs on (0: not recorded).
type MembershipChange struct {
	Kind        MembershipChangeKind
	NodeID      uint64
	URL         string
	DirectoryID uint64
}

// The conf change context carries the proposer's tag, the added node's
// directory id and its URL: a 0 byte (no uvarint proposer id starts with
// one, ids being non-zero) | uvarint proposer | uvarint sequence | uvarint
// directory | url bytes. Contexts of an earlier version lack the leading
// 0 and the directory.
func encodeConfContext(proposer, seq, directory uint64, url string) []byte {
	out := []byte{0}
	out = binary.AppendUvarint(out, proposer)
	out = binary.AppendUvarint(out, seq)
	out = binary.AppendUvarint(out, directory)
	return append(out, url...)
}

func decodeConfContext(data []byte) (proposer, seq, directory uint64, url string) {
	withDirectory := len(data) > 0 && data[0] == 0
	if withDirectory {
		data = data[1:]
	}
	proposer, n := binary.Uvarint(data)
	if n <= 0 {
		return 0, 0, 0, ""
	}
	data = data[n:]
	seq, n = binary.Uvarint(data)
	if n <= 0 {
		return 0, 0, 0, ""
	}
	data = data[n:]
	if withDirectory {
		directory, n = binary.Uvarint(data)
		if n <= 0 {
			return 0, 0, 0, ""
		}
		data = data[n:]
	}
	return proposer, seq, directory, string(data)
}

// ChangeMembership proposes one membership change through ConfChangeV2;
// done runs once it is applied (or fails). One change at a time. Adding a
// voter adds a learner, then promotes it once it has caught up: done runs
// when the promotion is applied.
func (n *Node) ChangeMembership(change MembershipChange, done func(error)) {
	if !n.isLeader {
		done(n.errNotController())
		return
	}
	if !n.active {
		// Raft turns a conf change into an empty entry while the leader
		// has entries of earlier terms to apply, and says nothing.
		done(unavailable("controller %d was just elected and is applying earlier entries; retry the membership change shortly", n.cfg.ID))
		return
	}
	if n.confChangeDone != nil || n.promotion != nil {
		done(unavailable("a membership change is still in progress"))
		return
	}
	if change.NodeID == 0 {
		done(invalid("node id must be non-zero"))
		return
	}
	if n.removedIDs[change.NodeID] && (change.Kind == AddVoter || change.Kind == AddLearner) {
		done(invalid(fmt.Sprintf("controller id %d was removed from this cluster and is never reused: "+
			"messages to its old process may still arrive; give the new controller a new id", change.NodeID)))
		return
	}
	isVoter := slices.Contains(n.confState.GetVoters(), change.NodeID)
	isLearner := slices.Contains(n.confState.GetLearners(), change.NodeID)
	var kind raftpb.ConfChangeType
	switch change.Kind {
	case AddVoter, AddLearner:
		if change.Kind == AddVoter && isLearner {
			change.Kind = PromoteLearner
			n.ChangeMembership(change, done)
			return
		}
		if change.URL == "" {
			done(invalid("an added node needs the URL its peers reach it at"))
			return
		}
		if change.DirectoryID == 0 {
			// A member without a recorded directory could vote again
			// after its directory is lost (see mayVote).
			done(invalid(fmt.Sprintf("controller %d is added with its data directory id (it serves it at its identity endpoint)", change.NodeID)))
			return
		}
		if isVoter || (isLearner && change.Kind == AddLearner) {
			done(&statemachine.Error{Code: metadatav1.ErrorCode_INVALID_REQUEST, Message: fmt.Sprintf("node %d is already a member", change.NodeID)})
			return
		}
		// A new voter joins as a learner and is promoted once it holds the
		// state: until then it could not vote (it has no configuration),
		// and a quorum that counted it could be lost to one more failure.
		kind = raftpb.ConfChangeAddLearnerNode
		if change.Kind == AddVoter {
			id, voterDone := change.NodeID, done
			done = func(err error) {
				if err != nil {
					voterDone(err)
					return
				}
				n.promotion = &promotion{id: id, done: voterDone, deadline: n.ticks + uint64(promotionTimeoutTicks(n.cfg))}
			}
		}
	case PromoteLearner:
		if !isLearner {
			done(invalid(fmt.Sprintf("node %d is not a learner", change.NodeID)))
			return
		}
		if lag, ok := n.learnerLag(change.NodeID); !ok {
			done(unavailable("learner %d has not caught up: it lags %d entries behind the leader's log; promote it once it has", change.NodeID, lag))
			return
		}
		kind = raftpb.ConfChangeAddNode
		change.URL, change.DirectoryID = n.peers[change.NodeID], n.directories[change.NodeID]
	case RemoveVoter:
		if !isVoter && !isLearner {
			done(invalid(fmt.Sprintf("node %d is not a member", change.NodeID)))
			return
		}
		if isVoter && len(n.confState.GetVoters()) == 1 {
			done(invalid("the last voter cannot be removed"))
			return
		}
		kind = raftpb.ConfChangeRemoveNode
	default:
		done(invalid("unknown membership change"))
		return
	}
	if err := n.checkQuorumAfter(change, kind); err != nil {
		done(err)
		return
	}
	n.nextSeq++
	seq := n.nextSeq
	cc := &raftpb.ConfChangeV2{
		Changes: []*raftpb.ConfChangeSingle{{Type: kind.Enum(), NodeId: new(change.NodeID)}},
		Context: encodeConfContext(n.cfg.ID, seq, change.DirectoryID, change.URL),
	}
	if err := n.rn.ProposeConfChange(cc); err != nil {
		done(unavailable("raft dropped the membership change (%v): retry", err))
		return
	}
	n.confChangeSeq, n.confChangeTerm, n.confChangeDone = seq, n.term, done
	n.confChangeDeadline = n.ticks + uint64(n.cfg.RequestTimeoutTicks)
}

func (n *Node) applyConfChange(entry *raftpb.Entry) {
	var cc raftpb.ConfChangeI
	if entry.GetType() == raftpb.EntryConfChange {
		v1 := &raftpb.ConfChange{}
		if err := proto.Unmarshal(entry.GetData(), v1); err != nil {
			panic(fmt.Sprintf("node: committed conf change %d does not decode: %v", entry.GetIndex(), err))
		}
		cc = v1
	} else {
		v2 := &raftpb.ConfChangeV2{}
		if err := proto.Unmarshal(entry.GetData(), v2); err != nil {
			panic(fmt.Sprintf("node: committed conf change %d does not decode: %v", entry.GetIndex(), err))
		}
		cc = v2
	}
	n.confState = n.rn.ApplyConfChange(cc)
	n.sm.Advance(entry.GetIndex())
	v2 := cc.AsV2()
	proposer, seq, directory, url := decodeConfContext(v2.GetContext())
	replayed := entry.GetIndex() <= n.committedAtStart
	for _, c := range v2.GetChanges() {
		id := c.GetNodeId()
		switch c.GetType() {
		case raftpb.ConfChangeAddNode, raftpb.ConfChangeAddLearnerNode:
			detail := "added as a voter"
			if c.GetType() == raftpb.ConfChangeAddLearnerNode {
				detail = "added as a learner"
			}
			if !replayed {
				n.emit(Event{Kind: EventMembershipChanged, Peer: id, Index: entry.GetIndex(), Detail: detail})
			}
			n.snapshotForNewMember = true
			if url != "" {
				n.peers[id] = url
			}
			if directory != 0 {
				n.directories[id] = directory
			}
			if id != n.cfg.ID {
				n.env.Transport.SetPeer(id, n.peers[id])
			}
		case raftpb.ConfChangeRemoveNode:
			if !replayed {
				n.emit(Event{Kind: EventMembershipChanged, Peer: id, Index: entry.GetIndex(), Detail: "removed"})
			}
			delete(n.peers, id)
			delete(n.directories, id)
			delete(n.heardAt, id)
			delete(n.unreachable, id)
			n.removedIDs[id] = true
			if id == n.cfg.ID {
				n.removed = true
				n.emit(Event{Kind: EventRemoved, Index: entry.GetIndex()})
			} else {
				n.env.Transport.RemovePeer(id)
			}
		}
	}
	if proposer == n.cfg.ID && seq == n.confChangeSeq && entry.GetTerm() == n.confChangeTerm && n.confChangeDone != nil {
		done := n.confChangeDone
		n.confChangeSeq, n.confChangeDone = 0, nil
		done(nil)
	}
}

// checkQuorumAfter refuses a voter change that would leave the new
// configuration without a quorum of voters the leader has heard from
// within an election timeout (the strict reconfiguration check of etcd):
// removing a healthy voter while another is down, or adding a voter while
// one is down, would stop the cluster. A learner being promoted counts
// once it has caught up; adding a learner changes no quorum.
func (n *Node) checkQuorumAfter(change MembershipChange, kind raftpb.ConfChangeType) *statemachine.Error {
	if kind == raftpb.ConfChangeAddLearnerNode {
		return nil
	}
	voters := map[uint64]bool{}
	for _, id := range n.confState.GetVoters() {
		voters[id] = true
	}
	if kind == raftpb.ConfChangeRemoveNode {
		if !voters[change.NodeID] {
			return nil // removing a learner changes no quorum
		}
		delete(voters, change.NodeID)
	} else {
		voters[change.NodeID] = true
	}
	active := 0
	for _, id := range sortedKeys(voters) {
		recent := n.heardRecently(id)
		if id == change.NodeID && kind == raftpb.ConfChangeAddNode {
			// A learner being promoted counts once it has caught up (the
			// promotion is refused before): a lone controller can grow.
			recent = recent && slices.Contains(n.confState.GetLearners(), id)
		} else if id == change.NodeID {
			recent = false
		}
		if id == n.cfg.ID || recent {
			active++
		}
	}
	if quorum := len(voters)/2 + 1; active < quorum {
		return &statemachine.Error{Code: metadatav1.ErrorCode_UNAVAILABLE, Message: fmt.Sprintf(
			"%v %d would leave %d of %d voters active, below a quorum of %d: bring the missing voters back (or remove them) first",
			change.Kind, change.NodeID, active, len(voters), quorum)}
	}
	return nil
}

// TransferLeader asks the leader to hand leadership to target (0: the most
// up-to-date voter); done runs when this node sees target lead, or fails.
func (n *Node) TransferLeader(target uint64, done func(error)) {
	if !n.isLeader {
		done(n.errNotController())
		return
	}
	if target == 0 {
		target = n.mostCaughtUpVoter()
		if target == 0 {
			done(unavailable("no other voter to transfer leadership to"))
			return
		}
	}
	if !slices.Contains(n.confState.GetVoters(), target) {
		done(invalid(fmt.Sprintf("node %d is not a voter", target)))
		return
	}
	if target == n.cfg.ID {
		done(nil)
		return
	}
	if n.transfer != nil {
		done(unavailable("a leadership transfer to %d is in progress", n.transfer.target))
		return
	}
	n.transfer = &transfer{target: target, deadline: n.ticks + uint64(2*n.cfg.ElectionTicks), done: done}
	n.rn.TransferLeader(target)
}

func (n *Node) mostCaughtUpVoter() uint64 {
	var best, bestMatch uint64
	n.rn.WithProgress(func(id uint64, typ raft.ProgressType, pr tracker.Progress) {
		if id == n.cfg.ID || typ != raft.ProgressTypePeer || !slices.Contains(n.confState.GetVoters(), id) {
			return
		}
		if best == 0 || pr.Match > bestMatch || (pr.Match == bestMatch && id < best) {
			best, bestMatch = id, pr.Match
		}
	})
	return best
}

// Member is one quorum member as DescribeQuorum shows it.
type Member struct {
	ID          uint64
	URL         string
	DirectoryID uint64
	Learner     bool
	Match       uint64
	Lag         uint64
	IsLeader    bool
	// RecentActive: the leader heard from it within an election timeout
	// (known on the leader only).
	RecentActive bool
}

// heardRecently says whether a message from peer id arrived within an
// election timeout. (Raft's Progress.RecentActive will not do: with
// CheckQuorum the leader clears it at every election timeout, and a peer
// that answers every heartbeat reads inactive just after.)
func (n *Node) heardRecently(id uint64) bool {
	heard, ok := n.heardAt[id]
	return ok && n.ticks-heard <= uint64(n.cfg.ElectionTicks)
}

// Status describes the quorum from this node's view. Match and lag are
// known only on the leader.
type Status struct {
	ID, Leader, Term uint64
	Commit, Applied  uint64
	SnapshotIndex    uint64
	Members          []Member
	Active, Removed  bool
	PendingProposals int
	PendingReads     int
	MetadataVersion  int64
	LastIndex        uint64
	// PushLagMax is, on the active controller, the largest number of
	// versions a storage service with a push endpoint is known to lag.
	PushLagMax int64
	// StrangerMessages counts Raft messages refused because their sender
	// is not in the configuration.
	StrangerMessages uint64
	// DirectoryID is this controller's data directory; MayVote says
	// whether the membership lets it vote (see Node.mayVote).
	DirectoryID uint64
	MayVote     bool
	// ClusterID is the cluster this controller's directory belongs to.
	ClusterID string
}

func (n *Node) Status() Status {
	st := n.rn.Status()
	last, _ := n.store.LastIndex()
	s := Status{
		ID: n.cfg.ID, Leader: st.Lead, Term: st.GetTerm(), Commit: st.GetCommit(), Applied: n.sm.AppliedIndex(),
		SnapshotIndex: n.snapshotIndex, Active: n.active, Removed: n.removed,
		PendingProposals: len(n.proposals), PendingReads: len(n.reads),
		MetadataVersion: n.sm.Version(), LastIndex: last, StrangerMessages: n.strangerMessages,
		DirectoryID: n.directoryID, MayVote: n.mayVote(), ClusterID: n.cfg.ClusterID,
	}
	if n.active {
		for _, id := range sortedKeys(n.controller.pushes) {
			if t := n.controller.pushes[id]; t.known >= 0 && n.sm.Version()-t.known > s.PushLagMax {
				s.PushLagMax = n.sm.Version() - t.known
			}
		}
	}
	add := func(id uint64, learner bool) {
		m := Member{ID: id, URL: n.peers[id], DirectoryID: n.directories[id], Learner: learner, IsLeader: id == st.Lead}
		if pr, ok := st.Progress[id]; ok {
			m.Match, m.RecentActive = pr.Match, id == n.cfg.ID || n.heardRecently(id)
			if last > pr.Match {
				m.Lag = last - pr.Match
			}
		}
		s.Members = append(s.Members, m)
	}
	voters := slices.Clone(n.confState.GetVoters())
	slices.Sort(voters)
	for _, id := range voters {
		add(id, false)
	}
	learners := slices.Clone(n.confState.GetLearners())
	slices.Sort(learners)
	for _, id := range learners {
		add(id, true)
	}
	return s
}

// Ready says whether this controller can serve: it is a member, knows a
// leader, and has applied every entry it knows committed. Otherwise it
// says why not, for readiness probes and health checks.
func (s Status) Ready() (bool, string) {
	switch {
	case s.Removed:
		return false, fmt.Sprintf("controller %d was removed from the cluster", s.ID)
	case len(s.Members) == 0:
		return false, fmt.Sprintf("controller %d has no configuration yet: it waits to be added", s.ID)
	case s.Leader == 0:
		return false, "no leader is known: an election is in progress, or no quorum is reachable"
	case s.Applied < s.Commit:
		return false, fmt.Sprintf("applied %d of the %d entries known committed", s.Applied, s.Commit)
	}
	return true, ""
}

// promotion is a voter being added: a learner now, promoted once it has
// caught up.
type promotion struct {
	id       uint64
	done     func(error)
	deadline uint64
}

// promotionTimeoutTicks bounds how long an added voter may take to catch
// up before the addition fails (it stays a learner).
func promotionTimeoutTicks(cfg Config) int { return 2 * cfg.RequestTimeoutTicks }

// learnerLag says how far a learner's log is behind the leader's, and
// whether it has caught up: it holds every entry committed so far and has
// answered recently.
func (n *Node) learnerLag(id uint64) (uint64, bool) {
	st := n.rn.Status()
	pr, ok := st.Progress[id]
	last, _ := n.store.LastIndex()
	if !ok {
		return last, false
	}
	lag := uint64(0)
	if last > pr.Match {
		lag = last - pr.Match
	}
	return lag, pr.Match >= st.GetCommit() && pr.RecentActive
}

// advancePromotion promotes the learner being added once it has caught up,
// or gives up at the deadline (it stays a learner).
func (n *Node) advancePromotion() {
	p := n.promotion
	if p == nil || n.confChangeDone != nil {
		return
	}
	if p.deadline <= n.ticks {
		n.promotion = nil
		lag, _ := n.learnerLag(p.id)
		p.done(unavailable("controller %d was added as a learner but has not caught up (it lags %d entries): promote it once it has", p.id, lag))
		return
	}
	if _, ok := n.learnerLag(p.id); !ok {
		return
	}
	n.promotion = nil
	n.ChangeMembership(MembershipChange{Kind: PromoteLearner, NodeID: p.id}, p.done)
}
