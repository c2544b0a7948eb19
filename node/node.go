package node

import (
	"errors"
	"fmt"
	"slices"
	"time"

	metadatav1 "github.com/dmq-project/metadata/gen/dmq/metadata/v1"
	"github.com/dmq-project/metadata/statemachine"
	"github.com/dmq-project/metadata/storage"
	"go.etcd.io/raft/v3"
	"go.etcd.io/raft/v3/raftpb"
)

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
	// plansInFlight counts the balancing plans handed to the worker whose
	// results have not come back.
	plansInFlight int

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
	// snapshotting: a snapshot is being encoded and staged off the loop
	// (startSnapshot). snapshotWaiters are the TakeSnapshot callers
	// waiting for a snapshot.
	snapshotting    bool
	snapshotWaiters []snapshotWaiter
	// snapshotForMembers: the snapshot under way was taken for members
	// just added, which refuse the stored one (see raftStorage).
	snapshotForMembers bool
	// storageErr is a storage failure met off the loop's own writes (a
	// snapshot's staging): HandleReady returns it, as its own.
	storageErr error

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
	heardAt map[uint64]uint64
	// unreachable: peers reported unreachable and not heard from since
	// (EventPeerUnreachable is said once per streak).
	unreachable map[uint64]bool
	// seedInFlight is, per seed receiver, the version of this node's push
	// on the wire, kept across leaderships (a new one waits for it).
	seedInFlight map[int32]int64
	// committedAtStart is the commit index of the HardState this node
	// started from: entries up to it are a replay, announced (membership
	// events) by the run that first applied them.
	committedAtStart uint64
	nextSeq          uint64
	proposals        map[uint64]*proposal
	reads            map[uint64]*read
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
		sm:           statemachine.New(),
		peers:        map[uint64]string{},
		directories:  map[uint64]uint64{},
		removedIDs:   map[uint64]bool{},
		proposals:    map[uint64]*proposal{},
		reads:        map[uint64]*read{},
		heardAt:      map[uint64]uint64{},
		unreachable:  map[uint64]bool{},
		seedInFlight: map[int32]int64{},
		life:         env.Rand.Uint64(),
		addedInLog:   map[uint64]uint64{},
		lostLogs:     map[uint64]int{},
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
		Storage:                   raftStorage{Storage: store, n: n},
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
	n.committedAtStart = hs.GetCommit()
	if err := n.rememberAddsInLog(snap.GetMetadata().GetIndex()); err != nil {
		return nil, err
	}
	if n.mayVote() && n.soleVoter() {
		// No one else votes: waiting an election timeout (a second or two
		// by default) would only keep a lone controller unavailable.
		// Raft itself refuses while configuration changes wait to be
		// applied, exactly as when the timeout fires.
		if err := rn.Campaign(); err != nil {
			return nil, fmt.Errorf("node: campaigning alone: %w", err)
		}
	} else if n.mayVote() && n.hasConfiguration() {
		// A restart, or a start: Raft's election clock stands at zero,
		// and a cluster restarted as a whole would wait a whole randomised
		// election timeout (1-2 s by default) before anyone campaigns.
		// The clock is advanced to one tick short of the timeout's lower
		// bound, as etcd does (initial-election-tick-advance): the first
		// campaign comes within the random part. A leader that exists
		// loses nothing: the pre-vote asks peers that hear from it, and
		// they refuse (CheckQuorum's lease).
		for range n.cfg.ElectionTicks - 1 {
			rn.Tick()
		}
	}
	return n, nil
}

// soleVoter says whether Raft's configuration has this controller as its
// only voter.
func (n *Node) soleVoter() bool {
	voters := n.rn.Status().Config.Voters.IDs()
	_, self := voters[n.cfg.ID]
	return len(voters) == 1 && self
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

// Campaign starts an election now (tests and operators).
func (n *Node) Campaign() error { return n.rn.Campaign() }

// HasReady says whether HandleReady has work.
func (n *Node) HasReady() bool { return n.rn.HasReady() || n.readsWaiting() || n.storageErr != nil }
