package node

import (
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"time"

	metadatav1 "github.com/dmq-project/metadata/rpc/gen/dmq/metadata/v1"
	"github.com/dmq-project/metadata/statemachine"
	"github.com/dmq-project/metadata/storage"
	"go.etcd.io/raft/v3"
	"go.etcd.io/raft/v3/raftpb"
	"go.etcd.io/raft/v3/tracker"
	"google.golang.org/protobuf/proto"
)

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

type read struct {
	serve    func(*statemachine.StateMachine, *statemachine.Error)
	deadline uint64
	// batch is the ReadIndex request the read waits on, 0 while queued.
	batch uint64
	// index is the commit index ReadIndex confirmed; valid once known.
	index uint64
	known bool
}

// Node is one controller. It is an event-driven core: every input is a
// method call (Tick, Step, a request), every output goes through Env or a
// callback, and the caller must call HandleReady after each input until
// HasReady is false. It is not safe for concurrent use and never blocks.
type Node struct {
	cfg   Config
	env   Env
	rn    *raft.RawNode
	store storage.Storage
	sm    *statemachine.StateMachine

	confState *raftpb.ConfState
	peers     map[uint64]string
	// stampBaseMs and stampFrom date this leadership's records (see
	// leaderTimeMs).
	stampBaseMs int64
	stampFrom   time.Time
	// directories records each member's directory id, where known: a
	// controller votes and campaigns only as the directory the membership
	// names for it (see mayVote).
	directories map[uint64]uint64
	directoryID uint64
	// removedIDs were members once: Raft state of theirs may still be in
	// flight, so an id is never reused.
	removedIDs    map[uint64]bool
	snapshotIndex uint64
	// snapshotBytes is the size of the last snapshot, and loggedBytes the
	// size of the entries applied since: see Config.MaxLogEntries.
	snapshotBytes int
	loggedBytes   int
	// snapshotForNewMember: a member was added. A node joining with an empty
	// log can only start from a snapshot whose conf state names it (Raft
	// refuses any other), so every node snapshots after such a change.
	snapshotForNewMember bool

	term   uint64
	leader uint64
	// durableTerm and durableVote are the term and vote on disk: a message
	// may leave before its Ready is persisted only if it does not announce
	// a term or vote that a crash could take back (see HandleReady).
	durableTerm uint64
	durableVote uint64
	isLeader    bool
	// active: a leader that has applied an entry of its own term, so its
	// state machine holds everything any earlier leader acknowledged.
	active   bool
	activeAt time.Time
	removed  bool

	// ticks is the node's own time, for request deadlines.
	ticks uint64
	// heardAt is the tick at which a message from each peer last arrived:
	// who is active, for the strict reconfiguration check. Raft's own
	// RecentActive will not do: with CheckQuorum the leader clears it at
	// every election timeout, and a change proposed just after found no
	// follower active (seed 20562: a lost voter could never be removed).
	heardAt   map[uint64]uint64
	nextSeq   uint64
	proposals map[uint64]*proposal
	reads     map[uint64]*read
	// readBatch is the ReadIndex request in flight (0: none) and
	// readBatchDeadline when it is given up. Reads that arrive meanwhile
	// queue for the next one: one heartbeat round serves a whole batch, and
	// a read is only ever served by a ReadIndex issued after it arrived.
	readBatch         uint64
	readBatchDeadline uint64
	// readsQueued: reads wait for the next ReadIndex. It is issued by the
	// next HandleReady, not by each Read, so that the reads that arrive
	// between two Readies share one heartbeat round.
	readsQueued bool
	// life tells this process's ReadIndex requests from those of its
	// earlier lives: the batch numbers restart at 1 with every process,
	// and a leader's answer to a request of the previous life (queued for
	// this controller while it was down) would otherwise resolve a read of
	// this one at an older commit index.
	life uint64
	// confChangeSeq is the pending membership change's sequence, or 0, and
	// confChangeTerm the term it was proposed in (see proposal.term).
	confChangeSeq  uint64
	confChangeTerm uint64
	confChangeDone func(error)
	// confChangeDeadline is when a pending change is given up: an entry
	// Raft dropped never applies, and the next change must not wait on it.
	confChangeDeadline uint64
	// promotion is a voter being added, a learner until it catches up.
	promotion *promotion
	transfer  *transfer

	controller controller

	logger raft.Logger
	// strangerMessages counts messages refused for coming from outside the
	// configuration.
	strangerMessages uint64
	// refusedVotes counts vote requests refused by the vote rule.
	refusedVotes uint64
	// lostLogs are followers whose log went back below what they
	// acknowledged (see ErrLostLog); soft state of the leader.
	lostLogs map[uint64]int
	// addedInLog maps an id added by a conf change in the log, not yet
	// applied, to the index of that entry (see mayStepFrom).
	addedInLog map[uint64]uint64
}

type transfer struct {
	target   uint64
	deadline uint64
	done     func(error)
}

// errNotController builds the NOT_CONTROLLER error.
func (n *Node) errNotController() *statemachine.Error {
	if n.leader == 0 {
		return &statemachine.Error{Code: metadatav1.ErrorCode_NOT_CONTROLLER,
			Message: fmt.Sprintf("controller %d is not the leader and no leader is known: an election is in progress", n.cfg.ID)}
	}
	return &statemachine.Error{Code: metadatav1.ErrorCode_NOT_CONTROLLER,
		Message: fmt.Sprintf("controller %d is not the leader: controller %d is", n.cfg.ID, n.leader)}
}

func unavailable(format string, args ...any) *statemachine.Error {
	return &statemachine.Error{Code: metadatav1.ErrorCode_UNAVAILABLE, Message: fmt.Sprintf(format, args...)}
}

func unknownOutcome(why string) *statemachine.Error {
	return &statemachine.Error{Code: metadatav1.ErrorCode_UNKNOWN_OUTCOME,
		Message: why + ": the request may or may not be applied; retry with the same request id to learn which"}
}

// Format gives an unformatted directory its identity: the cluster, the
// controller, and a random directory id drawn from rand. A directory
// already formatted keeps its identity, which must name the same cluster
// and controller: a directory of another controller or cluster is refused
// with both named, before anything is read from it.
func Format(store storage.Storage, clusterID string, controllerID uint64, rand Rand) (storage.Identity, error) {
	id, ok, err := store.Identity()
	if err != nil {
		return storage.Identity{}, err
	}
	if ok {
		return id, checkIdentity(id, clusterID, controllerID)
	}
	id = storage.Identity{ClusterID: clusterID, ControllerID: controllerID}
	for id.DirectoryID == 0 {
		id.DirectoryID = rand.Uint64()
	}
	return id, store.Format(id)
}

func checkIdentity(id storage.Identity, clusterID string, controllerID uint64) error {
	if id.ControllerID != controllerID {
		return fmt.Errorf("node: the data directory holds controller %d, not controller %d: give each controller its own directory", id.ControllerID, controllerID)
	}
	if clusterID != "" && id.ClusterID != clusterID {
		return fmt.Errorf("node: the data directory belongs to cluster %q, not cluster %q", id.ClusterID, clusterID)
	}
	return nil
}

// Bootstrap founds a new cluster on a formatted, empty store: a snapshot
// at index 1 whose conf state names the voters and whose membership
// records each voter's directory. Every founding controller bootstraps
// with the same peers and so writes the same snapshot. A store that
// already holds state is left alone. A store whose directory is not the
// one the founding peers name for this controller is refused: it is a
// directory formatted after the cluster was founded (the one it replaces
// was lost), and founding again would let it vote with an empty log.
func Bootstrap(store storage.Storage, peers []Peer) error {
	identity, formatted, err := store.Identity()
	if err != nil {
		return err
	}
	if !formatted {
		return errors.New("node: bootstrap needs a formatted directory")
	}
	last, err := store.LastIndex()
	if err != nil {
		return err
	}
	snap, err := store.Snapshot()
	if err != nil {
		return err
	}
	if last != 0 || snap.GetMetadata().GetIndex() != 0 {
		return nil
	}
	if len(peers) == 0 {
		return errors.New("node: bootstrap needs at least one peer")
	}
	urls := map[uint64]string{}
	directories := map[uint64]uint64{}
	voters := make([]uint64, 0, len(peers))
	for _, p := range peers {
		if p.ID == 0 {
			return errors.New("node: peer id 0 is reserved")
		}
		if _, dup := urls[p.ID]; dup {
			return fmt.Errorf("node: peer %d listed twice", p.ID)
		}
		urls[p.ID] = p.URL
		if p.DirectoryID != 0 {
			directories[p.ID] = p.DirectoryID
		}
		voters = append(voters, p.ID)
	}
	if own, listed := directories[identity.ControllerID]; listed && own != identity.DirectoryID && !planted(BugForgetDirectories) {
		return fmt.Errorf("%w: the founding voters name directory %x for controller %d, this directory is %x",
			ErrNotFoundingDirectory, own, identity.ControllerID, identity.DirectoryID)
	}
	slices.Sort(voters)
	sm := statemachine.New()
	sm.Advance(1)
	return store.Save(storage.Update{
		HardState: &raftpb.HardState{Term: new(uint64(1)), Commit: new(uint64(1))},
		Snapshot: &raftpb.Snapshot{
			Metadata: &raftpb.SnapshotMetadata{Index: new(uint64(1)), Term: new(uint64(1)), ConfState: &raftpb.ConfState{Voters: voters}},
			Data:     encodeSnapshot(urls, directories, nil, sm.Snapshot()),
		},
		MustSync: true,
	})
}

// ErrNotFoundingDirectory refuses to found a cluster on a directory that
// is not the one the founding voters name: it must wait to be added.
var ErrNotFoundingDirectory = errors.New("node: this directory is not a founding voter's")

// New starts a controller on store, recovering from it: the state machine
// is restored from the latest snapshot and Raft replays the log after it.
// A store that was never bootstrapped makes a node that waits to be added
// to a cluster (it learns everything from the leader).
func New(cfg Config, store storage.Storage, env Env) (*Node, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	if env.Transport == nil || env.Clock == nil || env.Rand == nil || env.Pusher == nil {
		return nil, errors.New("node: the environment needs a transport, a clock, a random source and a pusher")
	}
	n := &Node{
		cfg: cfg, env: env, store: store,
		sm:          statemachine.New(),
		peers:       map[uint64]string{},
		directories: map[uint64]uint64{},
		removedIDs:  map[uint64]bool{},
		proposals:   map[uint64]*proposal{},
		reads:       map[uint64]*read{},
		heardAt:     map[uint64]uint64{},
		life:        env.Rand.Uint64(),
		addedInLog:  map[uint64]uint64{},
		lostLogs:    map[uint64]int{},
	}
	n.controller.reset()
	identity, formatted, err := store.Identity()
	if err != nil {
		return nil, err
	}
	if !formatted {
		return nil, errors.New("node: the data directory is not formatted (node.Format)")
	}
	if err := checkIdentity(identity, cfg.ClusterID, cfg.ID); err != nil {
		return nil, err
	}
	n.directoryID = identity.DirectoryID
	snap, err := store.Snapshot()
	if err != nil {
		return nil, err
	}
	if err := n.restoreSnapshot(snap); err != nil {
		return nil, err
	}
	logger := cfg.Logger
	if logger == nil {
		logger = discardLogger{}
	}
	n.logger = logger
	rn, err := raft.NewRawNode(&raft.Config{
		ID:                        cfg.ID,
		ElectionTick:              cfg.ElectionTicks,
		HeartbeatTick:             cfg.HeartbeatTicks,
		Storage:                   store,
		Applied:                   snap.GetMetadata().GetIndex(),
		MaxSizePerMsg:             maxSizePerMsg,
		MaxInflightMsgs:           maxInflightMsgs,
		MaxUncommittedEntriesSize: 64 << 20,
		CheckQuorum:               true,
		PreVote:                   true,
		ReadOnlyOption:            raft.ReadOnlySafe,
		DisableProposalForwarding: true,
		StepDownOnRemoval:         true,
		Logger:                    logger,
	})
	if err != nil {
		return nil, fmt.Errorf("node: starting raft: %w", err)
	}
	n.rn = rn
	hs, _, err := store.InitialState()
	if err != nil {
		return nil, err
	}
	n.term = hs.GetTerm()
	n.durableTerm, n.durableVote = hs.GetTerm(), hs.GetVote()
	if err := n.rememberAddsInLog(snap.GetMetadata().GetIndex()); err != nil {
		return nil, err
	}
	return n, nil
}

// restoreSnapshot replaces the state machine and membership with a
// snapshot's (at start, or when a leader sends one).
func (n *Node) restoreSnapshot(snap *raftpb.Snapshot) error {
	meta := snap.GetMetadata()
	n.confState = proto.CloneOf(raftpb.EnsureConfState(meta.GetConfState()))
	n.snapshotIndex = meta.GetIndex()
	n.snapshotBytes, n.loggedBytes = len(snap.GetData()), 0
	if meta.GetIndex() == 0 {
		return nil
	}
	peers, directories, removed, smBytes, err := decodeSnapshot(snap.GetData())
	if err != nil {
		return fmt.Errorf("node: snapshot at %d: %w", meta.GetIndex(), err)
	}
	sm, err := statemachine.Restore(smBytes)
	if err != nil {
		return fmt.Errorf("node: snapshot at %d: %w", meta.GetIndex(), err)
	}
	if sm.AppliedIndex() != meta.GetIndex() {
		panic(fmt.Sprintf("node: snapshot at index %d holds a state machine at %d", meta.GetIndex(), sm.AppliedIndex()))
	}
	n.sm = sm
	for _, id := range sortedKeys(n.peers) {
		if _, ok := peers[id]; !ok {
			n.env.Transport.RemovePeer(id)
		}
	}
	n.peers, n.directories, n.removedIDs = peers, directories, removed
	// The removal entry is covered by the snapshot: learn it from here.
	n.removed = n.removed || removed[n.cfg.ID]
	for _, id := range sortedKeys(peers) {
		if id != n.cfg.ID {
			n.env.Transport.SetPeer(id, peers[id])
		}
	}
	return nil
}

func sortedKeys[K int32 | uint64, V any](m map[K]V) []K {
	keys := make([]K, 0, len(m))
	for k := range m { // determinism: collected, then sorted
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// ID is this controller's id.
func (n *Node) ID() uint64 { return n.cfg.ID }

// Leader is the leader this node knows of, 0 if none.
func (n *Node) Leader() uint64 { return n.leader }

// Term is the current Raft term: the controller epoch.
func (n *Node) Term() uint64 { return n.term }

// IsLeader says whether this node is the Raft leader.
func (n *Node) IsLeader() bool { return n.isLeader }

// IsActive says whether this node is the active controller: the leader,
// caught up with every entry of earlier terms.
func (n *Node) IsActive() bool { return n.active }

// PeerURL is where a controller is reached, if known.
func (n *Node) PeerURL(id uint64) string { return n.peers[id] }

// StateMachine is the local state, possibly stale: for stale reads, metrics
// and checkers. Callers must not modify it.
func (n *Node) StateMachine() *statemachine.StateMachine { return n.sm }

// Tick advances Raft's clock by one tick and runs the controller's timed
// duties (session expiry, push retries, rebalancing) on the Clock's time.
func (n *Node) Tick() {
	n.ticks++
	if n.isLeader || n.mayVote() {
		// A controller that may not vote must not campaign either: as a
		// candidate it would vote for itself.
		n.rn.Tick()
	}
	// Deadlines and the controller's duties (sessions, pushes) are looked
	// at once per heartbeat interval: a tick finer than the heartbeat
	// serves Raft's randomised election timeout, which is drawn in whole
	// ticks, and need not cost a scan of every session.
	if n.ticks%uint64(n.cfg.HeartbeatTicks) != 0 {
		return
	}
	n.expireRequests()
	if n.active {
		n.advancePromotion()
		n.controllerTick(n.env.Clock.Now())
	}
}

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
			// Logged at powers of two: a flood costs a few lines.
			n.logger.Warningf("controller %d refused a %v from %d, which is not a member (%d refused so far)",
				n.cfg.ID, m.GetType(), from, n.strangerMessages)
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
	if planted(BugStepStrangers) {
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
	return !recorded || named == n.directoryID || planted(BugForgetDirectories)
}

// directoryReplaced says whether the membership names another directory
// for this controller: its data was lost and this directory replaced it.
func (n *Node) directoryReplaced() bool {
	named, recorded := n.directories[n.cfg.ID]
	return n.hasConfiguration() && recorded && named != n.directoryID && !planted(BugForgetDirectories)
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
func (n *Node) ReportUnreachable(id uint64) { n.rn.ReportUnreachable(id) }

// ReportSnapshot tells Raft whether a snapshot reached a peer.
func (n *Node) ReportSnapshot(id uint64, delivered bool) {
	status := raft.SnapshotFinish
	if !delivered {
		status = raft.SnapshotFailure
	}
	n.rn.ReportSnapshot(id, status)
}

// Campaign starts an election now (tests and operators).
func (n *Node) Campaign() error { return n.rn.Campaign() }

// HasReady says whether HandleReady has work.
func (n *Node) HasReady() bool { return n.rn.HasReady() || n.readsWaiting() }

// readsWaiting says whether reads wait for a ReadIndex that can be issued.
func (n *Node) readsWaiting() bool { return n.readsQueued && n.readBatch == 0 }

// HandleReady processes one Raft Ready in the order etcd raft requires:
// persist hard state, entries and snapshot (synced when MustSync) before
// sending any message that depends on them; send; apply committed entries
// and complete the proposals and reads they resolve; Advance. A returned
// error is a storage failure: the node must be discarded and restarted
// from its store.
//
// A leader's appends and heartbeats leave before its own write, so that
// the followers' fsyncs run in parallel with the leader's (Raft thesis
// §10.2.1; etcd raft's contract allows messages to be sent while the
// entries of the same Ready are persisted). This is safe because the
// leader's own copy counts towards a commit only once it is durable:
// acknowledgements are stepped after HandleReady returns, and an entry can
// only be acknowledged once its Ready has been handled. Everything else —
// votes, acknowledgements, anything sent with a new term or vote — waits
// for the fsync.
func (n *Node) HandleReady() error {
	if n.readsWaiting() {
		n.issueReads()
	}
	if !n.rn.HasReady() {
		return nil
	}
	rd := n.rn.Ready()
	early, late := n.splitMessages(&rd)
	if len(early) > 0 {
		n.env.Transport.Send(early)
	}
	// NB: persistence before every other message. A vote or an appended
	// entry acknowledged before it is durable could be forgotten by a crash
	// and contradicted after restart.
	if err := n.store.Save(storage.Update{
		HardState: rd.HardState, Entries: rd.Entries, Snapshot: rd.Snapshot, MustSync: rd.MustSync && !planted(BugSkipFsync),
	}); err != nil {
		return err
	}
	if !raft.IsEmptyHardState(rd.HardState) {
		n.durableTerm, n.durableVote = rd.HardState.GetTerm(), rd.HardState.GetVote()
	}
	n.noteAddedInLog(rd.Entries)
	if rd.Snapshot != nil && rd.Snapshot.GetMetadata().GetIndex() != 0 {
		if err := n.restoreSnapshot(rd.Snapshot); err != nil {
			return err
		}
		n.serveReads()
	}
	if len(late) > 0 && !n.directoryReplaced() {
		// (A directory that replaced a lost one stays silent from the
		// snapshot that tells it so: see Step.)
		n.env.Transport.Send(late)
	}
	n.observeGainedLeadership()
	for _, entry := range rd.CommittedEntries {
		n.applyEntry(entry)
	}
	n.observeLeadership()
	if len(n.addedInLog) > 0 {
		n.forgetAppliedAdds()
	}
	for _, rs := range rd.ReadStates {
		n.resolveRead(rs)
	}
	n.serveReads()
	n.rn.Advance(rd)
	if n.controller.changed {
		n.controller.changed = false
		if n.active {
			n.pushAll(n.env.Clock.Now())
		}
	}
	return n.maybeSnapshot()
}

// splitMessages divides a Ready's messages into those that may leave
// before the Ready is persisted (a leader's appends and heartbeats, when
// the Ready changes neither term nor vote and restores no snapshot) and
// those that must wait for it.
func (n *Node) splitMessages(rd *raft.Ready) (early, late []*raftpb.Message) {
	if planted(BugSendBeforePersist) {
		return rd.Messages, nil
	}
	termOrVoteChanges := !raft.IsEmptyHardState(rd.HardState) &&
		(rd.HardState.GetTerm() != n.durableTerm || rd.HardState.GetVote() != n.durableVote)
	if termOrVoteChanges || (rd.Snapshot != nil && rd.Snapshot.GetMetadata().GetIndex() != 0) {
		return nil, rd.Messages
	}
	for _, m := range rd.Messages {
		switch m.GetType() {
		case raftpb.MsgApp, raftpb.MsgHeartbeat:
			early = append(early, m)
		default:
			late = append(late, m)
		}
	}
	return early, late
}

// applyEntry applies one committed entry and completes what waits on it.
func (n *Node) applyEntry(entry *raftpb.Entry) {
	index := entry.GetIndex()
	if index <= n.sm.AppliedIndex() {
		// Covered by a snapshot restored in this same Ready.
		return
	}
	if n.env.Observer != nil {
		n.env.Observer.Applied(entry)
	}
	n.loggedBytes += len(entry.GetData())
	switch entry.GetType() {
	case raftpb.EntryNormal:
		if len(entry.GetData()) == 0 {
			n.sm.Advance(index)
			break
		}
		record := &metadatav1.Record{}
		if err := proto.Unmarshal(entry.GetData(), record); err != nil {
			n.sm.ApplyEntry(index, entry.GetData())
			break
		}
		result := n.sm.Apply(index, record)
		if record.GetProposerId() == n.cfg.ID {
			if p, ok := n.proposals[record.GetProposalSeq()]; ok && p.term == entry.GetTerm() {
				delete(n.proposals, record.GetProposalSeq())
				p.done(Outcome{Result: result, LeaderID: n.leader})
			}
		}
		if result.Err == nil && !result.Duplicate {
			n.afterApply(record, result)
		}
	case raftpb.EntryConfChange, raftpb.EntryConfChangeV2:
		n.applyConfChange(entry)
	default:
		panic(fmt.Sprintf("node: committed entry %d has unknown type %v", index, entry.GetType()))
	}
	if n.isLeader && !n.active && entry.GetTerm() == n.term {
		n.becomeActive()
	}
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
	n.term, n.leader, n.isLeader = term, leader, isLeader
	if n.transfer != nil && leader == n.transfer.target {
		t := n.transfer
		n.transfer = nil
		t.done(nil)
	}
}

func (n *Node) failProposals(err *statemachine.Error) {
	for _, seq := range sortedKeys(n.proposals) {
		p := n.proposals[seq]
		delete(n.proposals, seq)
		p.done(Outcome{Result: statemachine.Result{Err: err}, LeaderID: n.leader})
	}
}

func (n *Node) failUnindexedReads(err *statemachine.Error) {
	n.readBatch = 0
	for _, seq := range sortedKeys(n.reads) {
		if r := n.reads[seq]; !r.known {
			delete(n.reads, seq)
			r.serve(nil, err)
		}
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
	if planted(BugAckBeforeCommit) {
		done(Outcome{Result: statemachine.Result{Version: n.sm.Version()}, LeaderID: n.leader})
		return
	}
	n.proposals[seq] = &proposal{done: done, deadline: n.ticks + uint64(n.cfg.RequestTimeoutTicks), term: n.term}
}

// Read serves a linearizable read: serve runs with the state machine once
// it reflects every write acknowledged before the call (ReadIndex), on the
// leader or a follower, or with an error.
func (n *Node) Read(serve func(*statemachine.StateMachine, *statemachine.Error)) {
	if n.removed {
		serve(nil, n.errNotController())
		return
	}
	if planted(BugReadWithoutReadIndex) {
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

// maybeSnapshot snapshots the state machine when MaxLogEntries entries and
// 1/SnapshotLogRatio of the last snapshot's size have been applied since
// it, and compacts the log behind it, keeping LogTailEntries.
func (n *Node) maybeSnapshot() error {
	applied := n.sm.AppliedIndex()
	due := applied >= n.snapshotIndex+n.cfg.MaxLogEntries && uint64(n.loggedBytes)*n.cfg.SnapshotLogRatio >= uint64(n.snapshotBytes)
	if !due && !(n.snapshotForNewMember && applied > n.snapshotIndex) {
		return nil
	}
	n.snapshotForNewMember = false
	_, err := n.snapshotNow()
	return err
}

// snapshotNow writes a snapshot at the applied index and compacts.
func (n *Node) snapshotNow() (*raftpb.Snapshot, error) {
	applied := n.sm.AppliedIndex()
	snap, err := n.store.CreateSnapshot(applied, n.confState, encodeSnapshot(n.peers, n.directories, n.removedIDs, n.sm.Snapshot()))
	if err != nil {
		return nil, err
	}
	n.snapshotIndex = applied
	n.snapshotBytes, n.loggedBytes = len(snap.GetData()), 0
	first, err := n.store.FirstIndex()
	if err != nil {
		return nil, err
	}
	if applied > n.cfg.LogTailEntries && applied-n.cfg.LogTailEntries >= first {
		if err := n.store.Compact(applied - n.cfg.LogTailEntries); err != nil && !errors.Is(err, storage.ErrCompacted) {
			return nil, err
		}
	}
	return snap, nil
}

// TakeSnapshot snapshots now (QuorumService.Snapshot). It returns the
// snapshot's index and size.
func (n *Node) TakeSnapshot() (uint64, int, error) {
	if n.sm.AppliedIndex() <= n.snapshotIndex {
		snap, err := n.store.Snapshot()
		if err != nil {
			return 0, 0, err
		}
		return snap.GetMetadata().GetIndex(), len(snap.GetData()), nil
	}
	snap, err := n.snapshotNow()
	if err != nil {
		return 0, 0, err
	}
	return snap.GetMetadata().GetIndex(), len(snap.GetData()), nil
}
