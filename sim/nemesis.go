package sim

import (
	"time"

	"github.com/dmq-project/metadata/node"
	"github.com/dmq-project/metadata/storage"
	"go.etcd.io/raft/v3/raftpb"
)

// scheduleNemeses starts one recurring fault process per enabled kind.
func (s *Sim) scheduleNemeses() {
	every := func(mean time.Duration, fault func()) {
		if mean <= 0 {
			return
		}
		var next func()
		next = func() {
			if s.healed {
				return
			}
			fault()
			s.schedule(s.exp(mean), evNemesis, 0, 0, next)
		}
		s.schedule(s.exp(mean), evNemesis, 0, 0, next)
	}
	every(s.opts.PartitionEvery, s.partition)
	every(s.opts.CrashEvery, func() {
		if n := s.randomLiveNode(); n != nil {
			s.fault("crash")
			s.crash(n, 0)
		}
	})
	every(s.opts.PauseEvery, func() {
		if n := s.randomLiveNode(); n != nil && n.pausedUntil <= s.now {
			s.fault("pause")
			n.pausedUntil = s.now + s.between(time.Second, 4*time.Second)
		}
	})
	every(s.opts.SlowNodeEvery, func() {
		if n := s.randomLiveNode(); n != nil && n.slowUntil <= s.now {
			s.fault("slow-node")
			n.slowUntil = s.now + s.between(time.Second, 5*time.Second)
		}
	})
	every(s.opts.ClockJumpEvery, func() {
		if n := s.randomLiveNode(); n != nil {
			s.fault("clock-jump")
			n.clockOffset += s.between(-2*time.Second, 2*time.Second)
			n.jumped = true
		}
	})
	every(s.opts.ServiceSilenceEvery, func() {
		svc := s.services[s.rng.IntN(len(s.services))]
		s.fault("service-silence")
		svc.silentUntil = s.now + s.between(time.Second, 2*sessionTimeout)
		switch s.rng.IntN(6) {
		case 0, 1:
			svc.restartWithNewIncarnation = true
		case 2:
			// A controlled shutdown first: it goes silent after it.
			svc.silentUntil = 0
			svc.shutdownFirst = true
		}
	})
	every(s.opts.TransferLeaderEvery, func() {
		leader := s.leaderNode()
		if leader == nil {
			return
		}
		s.fault("transfer-leader")
		leader.node.TransferLeader(0, func(error) {})
		leader.process()
	})
	every(s.opts.MembershipChangeEvery, s.membershipStep)
	every(s.opts.StrangerEvery, s.stranger)
	// One lost disk at a time: two of three lost disks lose the data,
	// which no system can recover from and which proves nothing.
	mayLoseADisk := func() bool {
		if s.membership.phase != 0 || s.replace != 0 || s.growing {
			return false
		}
		for _, other := range s.nodes {
			if (other.corrupted || other.wiped) && !other.retired {
				return false
			}
		}
		return true
	}
	every(s.opts.WipeEvery, func() {
		if !mayLoseADisk() {
			return
		}
		n := s.randomLiveNode()
		if n == nil {
			return
		}
		// The disk is lost and replaced by an empty one: the controller
		// restarts under its id on a directory it must format, and may
		// neither found the cluster again nor vote as the voter it was.
		s.fault("disk-wipe")
		s.crash(n, 0)
		n.disk = storage.NewDisk()
		n.disk.SyncLatency = s.opts.SlowSync
		n.wiped = true
		// What the lost disk promised is lost with it (that is what the
		// directory ids are for).
		n.promises = promises{}
	})
	every(s.opts.CorruptEvery, func() {
		if !mayLoseADisk() {
			return
		}
		n := s.randomLiveNode()
		if n == nil {
			return
		}
		s.fault("disk-corruption")
		s.crash(n, 0)
		// A member added moments ago may have nothing on disk yet: no bit
		// flips, and its restart must then succeed, not "detect" anything.
		n.corruptedKey = n.disk.Corrupt(s.rng.IntN(1<<20), s.rng.IntN(1<<20))
		n.corrupted = n.corruptedKey != nil
	})
}

func (s *Sim) randomLiveNode() *simNode {
	var live []*simNode
	for _, n := range s.nodes {
		if n.node != nil {
			live = append(live, n)
		}
	}
	if len(live) == 0 {
		return nil
	}
	return live[s.rng.IntN(len(live))]
}

// partition cuts the network in one of four shapes for a while.
func (s *Sim) partition() {
	ids := make([]uint64, len(s.nodes))
	for i := range ids {
		ids[i] = uint64(i + 1)
	}
	s.rng.Shuffle(len(ids), func(i, j int) { ids[i], ids[j] = ids[j], ids[i] })
	cutBoth := func(a, b uint64) {
		s.cut[[2]uint64{a, b}] = true
		s.cut[[2]uint64{b, a}] = true
	}
	switch s.rng.IntN(4) {
	case 0: // random halves
		s.fault("partition-halves")
		split := 1 + s.rng.IntN(len(ids)-1)
		for _, a := range ids[:split] {
			for _, b := range ids[split:] {
				cutBoth(a, b)
			}
		}
	case 1: // the leader isolated
		s.fault("partition-leader")
		leader := s.leaderNode()
		if leader == nil {
			return
		}
		for _, b := range ids {
			if b != leader.id {
				cutBoth(leader.id, b)
			}
		}
	case 2: // one way: a node hears nobody, but is heard
		s.fault("partition-one-way")
		for _, b := range ids[1:] {
			s.cut[[2]uint64{b, ids[0]}] = true
		}
	case 3: // a bridge: two halves that only one node connects
		s.fault("partition-bridge")
		if len(ids) < 3 {
			return
		}
		bridge, rest := ids[0], ids[1:]
		split := 1 + s.rng.IntN(len(rest)-1)
		for _, a := range rest[:split] {
			for _, b := range rest[split:] {
				cutBoth(a, b)
			}
		}
		_ = bridge
	}
	s.schedule(s.between(time.Second, 6*time.Second), evNemesis, 0, 1, func() {
		s.cut = map[[2]uint64]bool{}
	})
}

// membershipOp removes a voter, retires its process and disk, and adds a
// new controller with a fresh id and an empty disk in its place (ids are
// never reused: messages to the old process may still be in flight). Each
// step reconciles with the leader's committed membership, because a leader
// that crashes takes its pending callbacks with it.
type membershipOp struct {
	phase  int // 0 idle, 1 removing, 2 removed, 3 adding
	target uint64
	since  time.Duration
}

const membershipStepTimeout = 5 * time.Second

func (s *Sim) membershipStep() {
	leader := s.leaderNode()
	if fresh := s.freshLeader(); fresh != nil && s.rng.IntN(2) == 0 {
		// Right after an election, before the new leader applied the
		// entries of earlier terms (Raft drops conf changes then).
		leader = fresh
	}
	if leader == nil {
		return
	}
	op := &s.membership
	isMember, isVoter := false, false
	for _, m := range leader.node.Status().Members {
		isMember = isMember || m.ID == op.target
		isVoter = isVoter || (m.ID == op.target && !m.Learner)
	}
	switch op.phase {
	case 0:
		if s.replace != 0 {
			// A controller whose disk is lost: remove it, then add a new one.
			op.target, op.phase, op.since = s.replace, 1, s.now
			s.replace = 0
			s.fault("remove-lost-voter")
			leader.node.ChangeMembership(node.MembershipChange{Kind: node.RemoveVoter, NodeID: op.target}, func(error) {})
			leader.process()
			return
		}
		if s.healed || s.growing {
			return
		}
		// A removal shrinks the quorum's margin: with a member down or its
		// disk lost, one more failure would leave no quorum at all, which
		// is outside what three (or five) voters tolerate.
		for _, other := range s.nodes {
			if !other.retired && other.member && (other.node == nil || other.corrupted || other.wiped) {
				return
			}
		}
		var candidates []uint64
		members := leader.node.Status().Members
		for _, m := range members {
			if m.ID != leader.id && !m.Learner {
				candidates = append(candidates, m.ID)
			}
		}
		if s.rng.IntN(3) == 0 {
			// The leader removes itself: it must hand leadership over.
			candidates = []uint64{leader.id}
			s.fault("remove-leader")
		}
		if len(candidates) == 0 || len(members) < 3 {
			return
		}
		op.target, op.phase, op.since = candidates[s.rng.IntN(len(candidates))], 1, s.now
		s.fault("remove-voter")
		leader.node.ChangeMembership(node.MembershipChange{Kind: node.RemoveVoter, NodeID: op.target}, func(error) {})
		leader.process()
	case 1:
		if !isMember {
			// Removed by a committed change: only now may the process stop,
			// or a quorum could be left short.
			n := s.nodes[op.target-1]
			n.member, n.retired = false, true
			n.node, n.store = nil, nil
			n.incarnation++
			// The replacement: a new id, an empty disk.
			replacement := &simNode{sim: s, id: uint64(len(s.nodes) + 1), disk: storage.NewDisk(), tickInterval: n.tickInterval}
			replacement.disk.SyncLatency = s.opts.SlowSync
			s.nodes = append(s.nodes, replacement)
			s.schedule(s.between(0, replacement.tickInterval), evTick, replacement.id, 0, replacement.tick)
			op.target, op.phase, op.since = replacement.id, 2, s.now
		} else if s.now-op.since > membershipStepTimeout {
			// Proposed again, never abandoned: a removal that answered
			// late may still commit, and a new operation on another
			// target would then leave this one neither member nor
			// retired (seed 804).
			op.since = s.now
			leader.node.ChangeMembership(node.MembershipChange{Kind: node.RemoveVoter, NodeID: op.target}, func(error) {})
			leader.process()
		}
	case 2:
		s.addBack(leader)
	case 3:
		// Added is not enough: until the new member is a voter with its
		// first snapshot it holds nothing, and losing another disk
		// meanwhile would leave no quorum with the data (seed 555).
		// Nor is the leader's word that it is a voter: a promotion the
		// leader saw committed may not be known committed by any other
		// voter, which then elects with the old configuration, where the
		// lost disk's voter is still needed (seed 1835: voters 1 and 3,
		// 1 promoted 4 and lost its disk; 3 could never win again). The
		// replacement is done when every member has applied it.
		if n := s.nodes[op.target-1]; isVoter && n.node != nil && n.node.StateMachine().AppliedIndex() > 0 && s.everyMemberSeesVoter(op.target) {
			op.phase = 0
		} else if s.now-op.since > membershipStepTimeout {
			op.phase = 2
		}
	}
}

// everyMemberSeesVoter says whether every member is running and has
// applied the configuration in which id is a voter (a crashed one may hold
// the promotion uncommitted, as the voter in seed 1835 did).
func (s *Sim) everyMemberSeesVoter(id uint64) bool {
	for _, n := range s.nodes {
		if !n.member || n.retired || n.awaitingAdd {
			continue
		}
		if n.node == nil {
			return false
		}
		voter := false
		for _, m := range n.node.Status().Members {
			voter = voter || (m.ID == id && !m.Learner)
		}
		if !voter {
			return false
		}
	}
	return true
}

// addBack starts the replacement empty and proposes it as a voter.
func (s *Sim) addBack(leader *simNode) {
	op := &s.membership
	n := s.nodes[op.target-1]
	if n.node == nil {
		n.member = true
		store, err := storage.OpenMem(n.disk)
		if err != nil {
			s.violate("node %d cannot open a fresh disk: %v", op.target, err)
			return
		}
		if _, err := node.Format(store, simClusterID, n.id, n); err != nil {
			s.violate("node %d cannot format a fresh disk: %v", op.target, err)
			return
		}
		n.start(store)
	}
	op.phase, op.since = 3, s.now
	s.fault("add-voter")
	leader.node.ChangeMembership(node.MembershipChange{Kind: node.AddVoter, NodeID: op.target,
		URL: controllerURL(op.target), DirectoryID: n.node.Status().DirectoryID}, func(error) {})
	leader.process()
}

// grow adds the controllers of a cluster founded on one (GrowFromOne), one
// at a time, as an operator does: as a learner, then promoted once caught
// up; the next once every member sees the last a voter. It runs every half
// second, faults or not, until every one is a voter.
func (s *Sim) grow() {
	leader := s.leaderNode()
	if leader == nil {
		s.schedule(500*time.Millisecond, evNemesis, 0, 3, s.grow)
		return
	}
	members := leader.node.Status().Members
	role := func(id uint64) (member, learner bool) {
		for _, m := range members {
			if m.ID == id {
				return true, m.Learner
			}
		}
		return false, false
	}
	for id := uint64(2); id <= uint64(s.opts.Nodes); id++ {
		member, learner := role(id)
		if member && !learner {
			if !s.everyMemberSeesVoter(id) {
				break // the last promotion is not known everywhere yet
			}
			continue
		}
		n := s.nodes[id-1]
		n.awaitingAdd = !member
		if n.node == nil {
			break // down: wait for its restart
		}
		if !member {
			s.fault("grow-add-learner")
			leader.node.ChangeMembership(node.MembershipChange{Kind: node.AddLearner, NodeID: id, URL: controllerURL(id),
				DirectoryID: n.node.Status().DirectoryID}, func(error) {})
		} else {
			// Refused while the learner lags: asked again next time.
			s.fault("grow-promote")
			leader.node.ChangeMembership(node.MembershipChange{Kind: node.PromoteLearner, NodeID: id}, func(error) {})
		}
		leader.process()
		s.schedule(500*time.Millisecond, evNemesis, 0, 3, s.grow)
		return
	}
	for id := uint64(2); id <= uint64(s.opts.Nodes); id++ {
		if member, learner := role(id); !member || learner || !s.everyMemberSeesVoter(id) {
			s.schedule(500*time.Millisecond, evNemesis, 0, 3, s.grow)
			return
		}
	}
	s.growing = false
}

// heal stops every fault: the network mends, paused nodes resume, crashed
// nodes restart, clocks are corrected and a removed member is added back.
// From here the cluster must converge within the liveness bounds.
func (s *Sim) heal() {
	s.healed = true
	s.cut = map[[2]uint64]bool{}
	for _, n := range s.nodes {
		n.pausedUntil, n.slowUntil = 0, 0
		if n.clockOffset != 0 {
			// Correcting the clock is a jump too (seed 1834).
			n.clockOffset = 0
			n.jumped = true
		}
		n.disk.FailSyncs = 0
		n.disk.SyncLatency = 0
		if n.node == nil && n.member {
			s.restart(n)
		}
	}
	for _, svc := range s.services {
		svc.silentUntil = 0
	}
	if s.opts.SilentAtHeal {
		s.services[0].silentForever = true
	}
	if s.now+2*time.Second+preferredWindow <= s.opts.Duration {
		s.schedule(2*time.Second, evHeal, 0, 1, s.markPreferred)
	}
	s.reconcileMembership()
}

// randomNodeID names a controller that has not been retired, as a client
// that knows the current membership would pick one.
func (s *Sim) randomNodeID() uint64 {
	var ids []uint64
	for _, n := range s.nodes {
		if !n.retired {
			ids = append(ids, n.id)
		}
	}
	return ids[s.rng.IntN(len(ids))]
}

// reconcileMembership drives a pending membership change (a removal, a
// replacement) to its end, every half second, faults or not.
func (s *Sim) reconcileMembership() {
	if s.reconciling {
		return
	}
	s.reconciling = true
	var step func()
	step = func() {
		if s.membership.phase == 0 && s.replace == 0 {
			s.reconciling = false
			return
		}
		s.membershipStep()
		s.schedule(500*time.Millisecond, evNemesis, 0, 2, step)
	}
	step()
}

// strangerID is the id a stranger forges when no controller was retired.
const strangerID = 99

// stranger forges Raft messages from outside the configuration (an unknown
// id, or a retired controller's) with a higher term: an append that
// extends the target's log and commits it, and a vote request. A
// controller must refuse both; had it stepped them, it would apply an
// entry no leader wrote (caught by the applied-entry check) or be
// disrupted by the term.
func (s *Sim) stranger() {
	n := s.randomLiveNode()
	if n == nil {
		return
	}
	// A retired controller is a stranger only once the target applied its
	// removal; before that, forging its id is forging a member's, which
	// only authentication can refuse.
	from := uint64(strangerID)
	for _, other := range s.nodes {
		if other.retired && !n.isMemberHere(other.id) && s.rng.IntN(2) == 0 {
			from = other.id
		}
	}
	st := n.node.Status()
	lastTerm, err := n.store.Term(st.LastIndex)
	if err != nil {
		return // compacted to the last index: nothing to append to
	}
	s.fault("stranger")
	term := st.Term + 1 + uint64(s.rng.IntN(3))
	forged := []*raftpb.Message{
		{Type: raftpb.MsgApp.Enum(), From: new(from), To: new(n.id), Term: new(term), Index: new(st.LastIndex),
			LogTerm: new(lastTerm), Commit: new(st.LastIndex + 1),
			Entries: []*raftpb.Entry{{Type: raftpb.EntryNormal.Enum(), Term: new(term), Index: new(st.LastIndex + 1), Data: []byte("forged")}}},
		{Type: raftpb.MsgVote.Enum(), From: new(from), To: new(n.id), Term: new(term), Index: new(st.LastIndex + 10), LogTerm: new(term)},
	}
	for _, m := range forged {
		s.schedule(s.latency(), evDeliver, from, n.id, func() { s.deliver(from, 0, n.id, m) })
	}
}

// freshLeader is a leader that is not active yet: elected, still applying
// the entries of earlier terms. Nil if none.
func (s *Sim) freshLeader() *simNode {
	for _, n := range s.nodes {
		if n.node != nil && n.node.IsLeader() && !n.node.IsActive() && n.pausedUntil <= s.now {
			return n
		}
	}
	return nil
}
