package node

import (
	"fmt"
	"slices"
	"time"

	metadatav1 "github.com/dmq-project/metadata/gen/dmq/metadata/v1"
	"github.com/dmq-project/metadata/internal/planted"
	"github.com/dmq-project/metadata/seedwire"
	"github.com/dmq-project/metadata/statemachine"
)

// controller is the active controller's soft state. None of it is
// replicated: a new leader starts it afresh, which is what gives brokers a
// full session timeout of grace after a failover.
type controller struct {
	// lastSeen is the last heartbeat (or registration, or the start of this
	// leadership) of each broker.
	lastSeen map[int32]time.Time
	pushes   map[int32]*pushTarget
	// brokerOp marks a fence, unfence or shutdown proposal in flight.
	brokerOp map[int32]bool
	// unfenceTarget is the version a returning fenced broker must reach.
	unfenceTarget map[int32]int64
	// reported is the version each broker's last heartbeat reported (what
	// the console shows for a service that takes no pushes).
	reported      map[int32]int64
	nextRebalance time.Time
	rebalancing   bool
	// planning: a balancing plan the controller started itself is being
	// computed (on joining, or to finish a decommission); nextDrainPlan
	// is the earliest time to plan again for a decommission.
	planning      bool
	nextDrainPlan time.Time
	// joinsWaiting are the brokers that joined while a plan was starting
	// its moves or being computed, in the order they joined.
	joinsWaiting []int32
	// planElected is the version of the last balancing plan whose moves
	// this controller saw all started, movingSeen the partitions moving
	// when it last looked, and nextPlanElection the earliest time for the
	// next election electAfterPlan calls.
	planElected      int64
	movingSeen       int32
	nextPlanElection time.Time
	// changed: a record applied in this Ready changed the metadata.
	changed bool
	// fullState caches the full state of one version: every target that
	// needs a full push at that version shares it (building it is linear
	// in the metadata, and pushes are per broker).
	fullState *metadatav1.ClusterState
	// deltas caches, for the version deltasVersion, the delta from each
	// version a target held: a thousand services at one version share one
	// delta (and the pusher encodes a shared update once).
	deltas        map[int64]*metadatav1.MetadataDelta
	deltasVersion int64
	// pushCursor is the broker a pass over the push targets stopped at
	// (PushWorkMax), 0 when the last pass went to the end.
	pushCursor int32
}

func (c *controller) reset() {
	*c = controller{
		lastSeen:      map[int32]time.Time{},
		pushes:        map[int32]*pushTarget{},
		brokerOp:      map[int32]bool{},
		unfenceTarget: map[int32]int64{},
		reported:      map[int32]int64{},
	}
}

type pushTarget struct {
	// known is the receiver's version as last reported, -1 if unknown.
	known int64
	// full forces a full state (the receiver diverged or rejected a delta).
	full bool
	// repairFrom is the version of a receiver ahead of this controller's
	// commit index, 0 if none: its full state is sent as a repair.
	repairFrom int64
	// inFlight is the version of the push awaiting its result, 0 if none.
	inFlight int64
	retryAt  time.Time
	backoff  time.Duration
	// failing: the last push failed (said once, until one succeeds).
	failing bool
	// seed: the receiver speaks the seed's protocol. toldEpoch is the
	// controller epoch it was last told of (CONTROLLER_CHANGED), and
	// tellingEpoch the one the push in flight tells it, 0 if none.
	seed                    bool
	toldEpoch, tellingEpoch uint64
	// resyncAt is when a seed receiver next gets a full state regardless
	// (Config.SeedResyncInterval); resyncPending: it is due one (kept until
	// one is sent, whatever push results arrive meanwhile); fullInFlight:
	// the push in flight is one; fullKnown: the version of the last full
	// state it accepted (a fenced seed receiver is unfenced on it).
	resyncAt      time.Time
	resyncPending bool
	fullInFlight  bool
	fullKnown     int64
	// abandoned: the push in flight was sent before the target was
	// forgotten; its outcome says nothing of what the receiver holds.
	abandoned bool
}

func (n *Node) becomeActive() {
	now := n.env.Clock.Now()
	n.active = true
	n.activeAt = now
	n.emit(Event{Kind: EventBecameActive, Leader: n.cfg.ID})
	n.controller.nextRebalance = now.Add(n.cfg.RebalanceInterval)
	n.controller.planElected = n.sm.BalanceStatus().GetSinceVersion()
	// The leadership's marker in the metadata log; nothing waits on it.
	n.propose(&metadatav1.Record{Body: &metadatav1.Record_NoOp{NoOp: &metadatav1.NoOpRecord{LeaderId: n.cfg.ID, Term: n.term}}},
		func(Outcome) {})
}

// sessionStart is when a broker's session last began or was refreshed.
func (n *Node) sessionStart(id int32) time.Time {
	seen, ok := n.controller.lastSeen[id]
	if planted.On(planted.NoFailoverGrace) {
		return seen
	}
	if ok && seen.After(n.activeAt) {
		return seen
	}
	return n.activeAt
}

func (n *Node) sessionLive(id int32, now time.Time) bool {
	return now.Sub(n.sessionStart(id)) <= n.cfg.SessionTimeout
}

// afterApply keeps the controller's soft state in step with applied
// records, on every node (so that a future leader needs no catch-up), and
// marks the metadata changed.
func (n *Node) afterApply(record *metadatav1.Record, _ statemachine.Result, joined bool) {
	if _, noop := record.Body.(*metadatav1.Record_NoOp); noop {
		return
	}
	n.controller.changed = true
	if !n.active {
		return
	}
	now := n.env.Clock.Now()
	switch body := record.Body.(type) {
	case *metadatav1.Record_RegisterBroker:
		id := body.RegisterBroker.GetBrokerId()
		n.controller.lastSeen[id] = now
		delete(n.controller.unfenceTarget, id)
		// A new incarnation holds nothing it is known to hold.
		n.forgetTarget(id)
		if joined && n.cfg.RebalanceOnJoin {
			n.rebalanceOnJoin(id)
		}
	case *metadatav1.Record_UnregisterBroker:
		id := body.UnregisterBroker.GetBrokerId()
		delete(n.controller.lastSeen, id)
		delete(n.controller.reported, id)
		n.forgetTarget(id)
		delete(n.controller.unfenceTarget, id)
	case *metadatav1.Record_UnfenceBroker:
		delete(n.controller.unfenceTarget, body.UnfenceBroker.GetBrokerId())
		n.emit(Event{Kind: EventBrokerUnfenced, Broker: body.UnfenceBroker.GetBrokerId(), Epoch: body.UnfenceBroker.GetBrokerEpoch()})
	case *metadatav1.Record_FenceBroker:
		n.emit(Event{Kind: EventBrokerFenced, Broker: body.FenceBroker.GetBrokerId(), Epoch: body.FenceBroker.GetBrokerEpoch()})
	}
}

// controllerTick runs the active controller's timed duties.
func (n *Node) controllerTick(now time.Time) {
	n.expireSessions(now)
	n.pushPass(sortedKeys(n.controller.pushes), func(id int32) bool {
		t := n.controller.pushes[id]
		n.resyncDue(t, now)
		if t.inFlight == 0 && !now.Before(t.retryAt) && n.pushNeeded(t) {
			n.sendPush(id, t, now)
			return true
		}
		return false
	})
	n.electAfterPlan(now)
	if len(n.controller.joinsWaiting) > 0 && n.cfg.RebalanceOnJoin {
		n.rebalanceOnJoin(0)
	}
	if n.cfg.RebalanceInterval > 0 && !now.Before(n.controller.nextRebalance) && !n.controller.rebalancing {
		n.controller.nextRebalance = now.Add(n.cfg.RebalanceInterval)
		if targets := n.sm.ImbalancedPartitions(n.cfg.RebalanceElectionsMax); len(targets) > 0 && !planted.On(planted.NoRebalance) {
			n.controller.rebalancing = true
			n.propose(&metadatav1.Record{Body: &metadatav1.Record_ElectLeaders{ElectLeaders: &metadatav1.ElectLeadersRecord{Targets: targets, SkipMissing: true}}},
				func(Outcome) { n.controller.rebalancing = false })
		}
	}
	n.finishDrain(now)
}

// electAfterPlan brings the next preferred-leader election forward when a
// balancing plan has started its last move, and as its moves end (at most
// once a second): the plan balanced preferred leaders, and they should
// lead now, not a rebalance interval later.
func (n *Node) electAfterPlan(now time.Time) {
	status := n.sm.BalanceStatus()
	c := &n.controller
	ended := status.GetMoving() < c.movingSeen
	c.movingSeen = max(c.movingSeen, status.GetMoving())
	if status.GetSinceVersion() == 0 || status.GetPending() > 0 || now.Before(c.nextPlanElection) ||
		status.GetSinceVersion() == c.planElected && !ended {
		return
	}
	c.planElected, c.movingSeen = status.GetSinceVersion(), status.GetMoving()
	c.nextPlanElection = now.Add(time.Second)
	c.nextRebalance = now
}

// expireSessions fences every unfenced broker silent past the timeout.
func (n *Node) expireSessions(now time.Time) {
	for _, id := range n.sm.BrokerIDs() {
		status := n.sm.BrokerStatus(id)
		if status.Fenced || n.controller.brokerOp[id] || n.sessionLive(id, now) {
			continue
		}
		n.proposeBrokerOp(id, &metadatav1.Record{Body: &metadatav1.Record_FenceBroker{
			FenceBroker: &metadatav1.FenceBrokerRecord{BrokerId: id, BrokerEpoch: status.Epoch}}})
	}
}

// proposeBrokerOp proposes a controller-initiated broker record, one at a
// time per broker.
func (n *Node) proposeBrokerOp(id int32, record *metadatav1.Record) {
	n.controller.brokerOp[id] = true
	n.propose(record, func(Outcome) { delete(n.controller.brokerOp, id) })
}

// Heartbeat handles a storage service's heartbeat on the active controller.
// It refreshes the broker's session, schedules a push if the service lags
// or diverged, starts a controlled shutdown when asked, and unfences a
// returning broker once it has caught up. It never writes the heartbeat to
// the log.
func (n *Node) Heartbeat(req *metadatav1.StorageHeartbeatRequest) (*metadatav1.StorageHeartbeatResponse, *statemachine.Error) {
	if !n.isLeader {
		return nil, n.errNotController()
	}
	if !n.active {
		return nil, unavailable("controller %d was just elected and is applying earlier entries; retry shortly", n.cfg.ID)
	}
	id, err := statemachine.ParseServiceID(req.GetServiceId())
	if err != nil {
		return nil, err
	}
	if req.GetMetadataVersion() < 0 || req.GetPartitionCount() < 0 {
		return nil, &statemachine.Error{Code: metadatav1.ErrorCode_INVALID_REQUEST, Message: "metadataVersion and partitionCount must not be negative"}
	}
	version := n.sm.Version()
	resp := &metadatav1.StorageHeartbeatResponse{
		MetadataVersion: version, ControllerEpoch: n.term, LeaderId: n.cfg.ID, LeaderUrl: n.peers[n.cfg.ID],
		PushesConfigured: n.env.Pusher.Protocol(id) != PushNone,
	}
	status := n.sm.BrokerStatus(id)
	if !status.Registered {
		resp.ErrorCode = metadatav1.ErrorCode_BROKER_NOT_REGISTERED.Enum()
		return resp, nil
	}
	if req.GetBrokerEpoch() != 0 && req.GetBrokerEpoch() != status.Epoch {
		return nil, &statemachine.Error{Code: metadatav1.ErrorCode_STALE_BROKER_EPOCH,
			Message: fmt.Sprintf("broker %d is registered with epoch %d, the heartbeat names %d: register again", id, status.Epoch, req.GetBrokerEpoch())}
	}
	now := n.env.Clock.Now()
	n.controller.lastSeen[id] = now
	resp.Registered, resp.Success = true, true
	resp.ErrorCode = metadatav1.ErrorCode_NONE.Enum()
	resp.Fenced, resp.InControlledShutdown = status.Fenced, status.ShuttingDown

	reported := req.GetMetadataVersion()
	n.controller.reported[id] = reported
	t := n.target(id)
	if t != nil {
		if t.inFlight == 0 {
			// Never lowered: a heartbeat that arrives late reports an older
			// version than a push since delivered. (A service that lost its
			// state registers again, which starts its target afresh; and a
			// push it cannot apply is rejected with its version.)
			t.known = max(t.known, reported)
		}
		if reported > version {
			// Ahead of this controller's state: a full state brings it
			// back in line if it is behind after all (a push since).
			t.full = true
			if n.beyondCommit(reported) {
				// Ahead of everything committed (the commit index is at
				// least the applied version, so only asked here): it holds
				// metadata no quorum committed (a controller restored from
				// an older backup, or a bug). Only a repair replaces it.
				t.repairFrom = reported
			}
		}
		if n.pushNeeded(t) {
			resp.PushScheduled = true
			if t.inFlight == 0 && !now.Before(t.retryAt) {
				n.sendPush(id, t, now)
			}
		}
	}
	if req.IsAlive != nil && !req.GetIsAlive() && !status.Fenced && !status.ShuttingDown && !n.controller.brokerOp[id] {
		n.proposeBrokerOp(id, &metadatav1.Record{Body: &metadatav1.Record_BeginControlledShutdown{
			BeginControlledShutdown: &metadatav1.BeginControlledShutdownRecord{BrokerId: id, BrokerEpoch: status.Epoch}}})
	}
	if status.Fenced && (req.IsAlive == nil || req.GetIsAlive()) {
		target, ok := n.controller.unfenceTarget[id]
		if !ok {
			// Caught up means: has the metadata as of its return.
			target = version
			n.controller.unfenceTarget[id] = target
		}
		if planted.On(planted.UnfenceAtOnce) {
			target, reported = 0, 0
		}
		// What the service holds: what it reports, or what it accepted in
		// pushes. A seed storage service reports nothing, and takes any
		// push a deposed controller still had on the wire: it is
		// unfenced on a full state it accepted since its return.
		held := reported
		switch {
		case t != nil && t.seed:
			if !ok {
				t.resyncPending = true
				if t.inFlight == 0 && !now.Before(t.retryAt) {
					n.sendPush(id, t, now)
				}
			}
			held = t.fullKnown
		case t != nil && t.inFlight == 0:
			held = max(held, t.known)
		}
		if held >= target && held <= version && !n.controller.brokerOp[id] {
			n.proposeBrokerOp(id, &metadatav1.Record{Body: &metadatav1.Record_UnfenceBroker{
				UnfenceBroker: &metadatav1.UnfenceBrokerRecord{BrokerId: id, BrokerEpoch: status.Epoch}}})
		}
	}
	return resp, nil
}

// target returns the push state of a broker, or nil if it has no push
// endpoint.
func (n *Node) target(id int32) *pushTarget {
	protocol := n.env.Pusher.Protocol(id)
	if protocol == PushNone {
		return nil
	}
	t, ok := n.controller.pushes[id]
	if !ok {
		t = &pushTarget{known: -1, seed: protocol == PushSeed}
		if version := n.seedInFlight[id]; version != 0 && t.seed {
			// This controller's push of an earlier leadership is still on
			// the wire: a seed receiver would take the two in any order.
			t.inFlight, t.abandoned = version, true
		}
		n.controller.pushes[id] = t
	}
	return t
}

func (n *Node) pushNeeded(t *pushTarget) bool {
	return t.full || t.resyncPending || t.known < n.sm.Version()
}

// forgetTarget forgets what a broker's storage service holds. A push in
// flight to a seed receiver is waited for: that receiver takes pushes in
// any order, so two in flight could leave it with the older.
func (n *Node) forgetTarget(id int32) {
	if t, ok := n.controller.pushes[id]; ok && t.seed && t.inFlight != 0 {
		n.controller.pushes[id] = &pushTarget{known: -1, seed: true, inFlight: t.inFlight, abandoned: true}
		return
	}
	delete(n.controller.pushes, id)
}

// resyncDue marks a seed receiver due for its periodic full state.
func (n *Node) resyncDue(t *pushTarget, now time.Time) {
	if t.seed && n.cfg.SeedResyncInterval > 0 && !t.resyncAt.IsZero() && !now.Before(t.resyncAt) {
		t.resyncPending = true
	}
}

// beyondCommit says whether a receiver's version is past this leader's
// commit index. Once active, the leader has applied every entry committed
// before its term, and entries of its term it commits first: no push or
// watch of any controller can have carried such a version in this log's
// history. (Past its applied version alone is not enough: a follower may
// apply, and serve a watch, before the leader.)
func (n *Node) beyondCommit(version int64) bool {
	return n.active && version > 0 && uint64(version) > n.rn.BasicStatus().GetCommit()
}

// pushAll schedules a push to every registered broker with a live session.
func (n *Node) pushAll(now time.Time) {
	n.pushPass(n.sm.BrokerIDs(), func(id int32) bool {
		if !n.sessionLive(id, now) {
			return false
		}
		if t := n.target(id); t != nil && t.inFlight == 0 && !now.Before(t.retryAt) && n.pushNeeded(t) {
			n.sendPush(id, t, now)
			return true
		}
		return false
	})
}

// PushWorkMax bounds the time one pass over the push targets spends
// building pushes (a delta walks the history from its receiver's version):
// the targets left wait for the next tick, whose pass starts where this one
// stopped. In a registration storm, thousands of services at scattered
// versions held the leader's loop for seconds (it lost its leadership).
// The simulator's clock stands still within a pass, so there every pass
// goes to the end, in broker order.
const PushWorkMax = 5 * time.Millisecond

// pushPass calls push for the ids in order, from the one after the id the
// last pass stopped at (from the first after a pass that went to the end),
// until PushWorkMax has passed on the node's clock after a push was sent.
func (n *Node) pushPass(ids []int32, push func(id int32) bool) {
	start := 0
	if after := n.controller.pushCursor; after != 0 {
		start, _ = slices.BinarySearch(ids, after+1)
	}
	deadline := n.env.Clock.Now().Add(PushWorkMax)
	for k := range ids {
		id := ids[(start+k)%len(ids)]
		if push(id) && n.env.Clock.Now().After(deadline) {
			n.controller.pushCursor = id
			return
		}
	}
	n.controller.pushCursor = 0
}

// sendPush sends the newest metadata: a delta from the receiver's version
// when the history still has it, else the full state.
func (n *Node) sendPush(id int32, t *pushTarget, now time.Time) {
	version := n.sm.Version()
	req := &metadatav1.PushMetadataRequest{ControllerId: n.cfg.ID, ControllerEpoch: n.term, MetadataVersion: version}
	if planted.On(planted.PushOldEpoch) {
		req.ControllerEpoch--
	}
	var delta *metadatav1.MetadataDelta
	ok := false
	if !t.full && !(t.seed && t.resyncPending) && t.known >= 0 {
		delta, ok = n.deltaSince(t.known)
		// A seed receiver gets a full state as a leader's first push: it
		// checks no delta's base, and a push of another controller may
		// have reached it since this one last knew its version. And it
		// deletes a topic by key prefix, taking the partitions of "a-b"
		// with "a": such a deletion goes as a full state too.
		ok = ok && !(t.seed && (t.toldEpoch != req.GetControllerEpoch() || seedwire.NeedsFullState(delta, n.sm)))
	}
	if ok {
		req.Update = &metadatav1.PushMetadataRequest_Delta{Delta: delta}
	} else {
		req.Update = &metadatav1.PushMetadataRequest_FullState{FullState: n.fullStateNow()}
		if t.repairFrom > version {
			req.RepairFromVersion = t.repairFrom
		}
	}
	t.inFlight, t.fullInFlight = version, !ok
	if !t.seed {
		n.env.Pusher.Push(id, Push{Version: version, Request: req})
		return
	}
	if !ok {
		t.resyncPending = false
	}
	n.seedInFlight[id] = version
	// The seed's receiver learns the controller only from CONTROLLER_CHANGED:
	// every new leader's first push tells it, with the leader's term, and
	// so does every full state (which repairs what a deposed controller's
	// push may have undone, the controller it names included).
	tell := t.toldEpoch != req.GetControllerEpoch() || !ok
	t.tellingEpoch = 0
	if tell {
		t.tellingEpoch = req.GetControllerEpoch()
	}
	controller := seedwire.Controller{ID: int32(n.cfg.ID), URL: n.peers[n.cfg.ID], Term: int64(req.GetControllerEpoch()), NowMs: now.UnixMilli()}
	// The seed's receiver never removes a broker: a full state lists as
	// not alive the brokers that departed (replicated, so that any leader
	// knows them), and those still named as replicas.
	var gone []int32
	if !ok {
		candidates := map[int32]bool{}
		for _, id := range n.sm.DepartedBrokers() {
			candidates[id] = true
		}
		for _, t := range req.GetFullState().GetTopics() {
			for _, p := range t.GetPartitions() {
				for _, r := range p.GetReplicas() {
					candidates[r] = true
				}
			}
		}
		for _, b := range sortedKeys(candidates) {
			if !n.sm.BrokerStatus(b).Registered {
				gone = append(gone, b)
			}
		}
	}
	n.env.Pusher.Push(id, Push{Version: version, SeedUpdates: seedwire.Updates(req, controller, tell, n.sm, gone)})
}

// fullStateNow is the full state at the applied version, built once per
// version for every push and watch that needs it.
func (n *Node) fullStateNow() *metadatav1.ClusterState {
	if n.controller.fullState == nil || n.controller.fullState.GetMetadataVersion() != n.sm.Version() {
		n.controller.fullState = n.sm.ClusterState()
	}
	return n.controller.fullState
}

// deltaSince is sm.DeltaSince, shared by the targets that held the same
// version.
func (n *Node) deltaSince(since int64) (*metadatav1.MetadataDelta, bool) {
	version := n.sm.Version()
	if n.controller.deltasVersion != version || n.controller.deltas == nil {
		n.controller.deltas, n.controller.deltasVersion = map[int64]*metadatav1.MetadataDelta{}, version
	}
	if delta, ok := n.controller.deltas[since]; ok {
		return delta, true
	}
	delta, ok := n.sm.DeltaSince(since)
	if ok {
		n.controller.deltas[since] = delta
	}
	return delta, ok
}

// OnPushResult reports how a push of version to a broker ended: the
// receiver's answer, or a delivery error (then it is retried with backoff).
func (n *Node) OnPushResult(id int32, version int64, resp *metadatav1.PushMetadataResponse, err error) {
	if n.seedInFlight[id] == version {
		delete(n.seedInFlight, id)
	}
	t, ok := n.controller.pushes[id]
	if !ok || t.inFlight != version || !n.active {
		return // from an earlier leadership or an abandoned push
	}
	t.inFlight = 0
	now := n.env.Clock.Now()
	if t.abandoned {
		t.abandoned = false
		if !n.sm.BrokerStatus(id).Registered {
			delete(n.controller.pushes, id)
			return
		}
		if n.pushNeeded(t) && n.sessionLive(id, now) {
			n.sendPush(id, t, now)
		}
		return
	}
	if err != nil {
		if !t.failing {
			t.failing = true
			n.emit(Event{Kind: EventPushFailing, Broker: id, Detail: err.Error()})
		}
		n.backOff(t, now)
		return
	}
	if t.failing {
		t.failing = false
		n.emit(Event{Kind: EventPushRecovered, Broker: id})
	}
	t.known = resp.GetMetadataVersion()
	t.full = t.known > n.sm.Version()
	t.repairFrom = 0
	if n.beyondCommit(t.known) {
		t.repairFrom = t.known
	}
	if !resp.GetAccepted() {
		// A delta that did not fit the receiver's version, or a receiver
		// that has seen a newer controller epoch (then this controller is
		// deposed and will learn it): try a full state, after a backoff.
		t.full = true
		n.backOff(t, now)
		return
	}
	t.backoff = 0
	if t.tellingEpoch != 0 {
		t.toldEpoch, t.tellingEpoch = t.tellingEpoch, 0
	}
	if t.seed && t.fullInFlight {
		t.resyncAt = now.Add(n.cfg.SeedResyncInterval)
		t.fullKnown = version
	}
	if spacing := n.pushSpacing(); spacing > 0 {
		// Many services: the next push to this one waits its turn (the
		// tick sends it), and carries every version applied meanwhile.
		t.retryAt = now.Add(spacing)
		return
	}
	if n.pushNeeded(t) && n.sessionLive(id, now) {
		n.sendPush(id, t, now)
	}
}

// PushRateMax bounds the pushes a second the active controller sends once
// it pushes to more than PushPacingFloor services: each service then waits
// services/PushRateMax between the end of one push and the start of the
// next. Without a bound, a burst of versions (ten thousand brokers
// registering) had the leader push every version to every service, as
// fast as its CPU allowed, and its writes timed out (their retries open
// more sessions: a collapse). A change after a quiet spell goes to every
// service at once all the same.
const (
	PushRateMax     = 10000
	PushPacingFloor = 64
)

// pushSpacing is the least time between two pushes to one service.
func (n *Node) pushSpacing() time.Duration {
	targets := len(n.controller.pushes)
	if targets <= PushPacingFloor {
		return 0
	}
	return time.Duration(targets) * time.Second / PushRateMax
}

// backOff delays the next push to a target exponentially, with jitter so
// that many targets failing together do not retry together.
func (n *Node) backOff(t *pushTarget, now time.Time) {
	t.backoff = min(max(2*t.backoff, n.cfg.PushBackoffMin), n.cfg.PushBackoffMax)
	jitter := time.Duration(n.env.Rand.Uint64() % uint64(t.backoff/4+1))
	t.retryAt = now.Add(t.backoff + jitter)
}

// WatchUpdate answers WatchMetadata from this controller's applied state:
// what changed after since, as a delta while the history holds since, or
// else the full state; nil when this controller holds nothing newer. A
// controller behind the watcher answers nil: it once sent its older full
// state, and a watcher moved back (seed 1).
func (n *Node) WatchUpdate(since int64) *metadatav1.WatchMetadataResponse {
	sm := n.sm
	switch {
	case sm.Version() <= since:
		return nil
	case since > 0:
		if delta, ok := n.deltaSince(since); ok {
			return &metadatav1.WatchMetadataResponse{Update: &metadatav1.WatchMetadataResponse_Delta{Delta: delta}}
		}
		fallthrough
	default:
		return &metadatav1.WatchMetadataResponse{Update: &metadatav1.WatchMetadataResponse_FullState{FullState: n.fullStateNow()}}
	}
}

// rebalanceOnJoin has the active controller plan, on its own, the moves
// that give a broker that joined for the first time its share. A
// decommission in progress goes on in the new plan, at its pace. While a
// plan is still starting its moves or being computed, the join waits
// (joinsWaiting): controllerTick plans for it once they are done, with
// every broker that joined meanwhile (id 0: a join waiting). A broker no
// longer alive by then (fenced, or gone) is given no plan: a plan gives
// replicas only to brokers alive, so it would only move the others',
// balancing the partitions not moving as if the moves underway (of the
// plan that made it wait, or of an operator's recorded since) did not
// count, and it would replace the plan that started them.
func (n *Node) rebalanceOnJoin(id int32) {
	c := &n.controller
	if id != 0 && !slices.Contains(c.joinsWaiting, id) {
		c.joinsWaiting = append(c.joinsWaiting, id)
	}
	// A broker gone leaves the list; one fenced or shutting down stays
	// in it (it may come back: a heartbeat unfences it, which is no new
	// registration) but is planned for only once live.
	c.joinsWaiting = slices.DeleteFunc(c.joinsWaiting, func(j int32) bool { return !n.sm.BrokerStatus(j).Registered })
	live := func(j int32) bool { b := n.sm.BrokerStatus(j); return !b.Fenced && !b.ShuttingDown }
	id = 0
	for _, j := range c.joinsWaiting {
		if live(j) {
			id = j // the last to join that is live
		}
	}
	if id == 0 {
		return
	}
	status := n.sm.BalanceStatus()
	if c.planning || status.GetPending() > 0 {
		return
	}
	// The plan gives every live broker its share.
	c.joinsWaiting = slices.DeleteFunc(c.joinsWaiting, live)
	var drain []int32
	for _, d := range status.GetDraining() {
		if n.sm.BrokerStatus(d).Registered {
			drain = append(drain, d)
		}
	}
	maxMoving := int32(statemachine.RebalanceMovingFirst)
	if len(drain) > 0 {
		maxMoving = status.GetMaxMoving()
	}
	n.controllerPlan(drain, maxMoving, nil, func(moves int) {
		n.emit(Event{Kind: EventRebalance, Broker: id, Detail: fmt.Sprintf("%d moves", moves)})
	}, func() {})
}

// finishDrain plans again for a decommission whose plan has started every
// move but left replicas on a drained broker (moves skipped or cancelled),
// keeping the drain and its pace, until the brokers are empty or no move
// can empty them (too few other brokers: then it looks again a rebalance
// interval later). At most one such plan a second.
func (n *Node) finishDrain(now time.Time) {
	if n.controller.planning || now.Before(n.controller.nextDrainPlan) || planted.On(planted.NoDrainReplan) {
		return
	}
	drain := n.sm.UnfinishedDrain()
	if drain == nil {
		return
	}
	n.controller.nextDrainPlan = now.Add(time.Second)
	// Only moves that take a replica off a drained broker, of partitions
	// that have an in-sync replica (apply refuses the others): anything
	// else, planned again and again, would only churn the log.
	keep := func(m *metadatav1.PartitionReassignment) bool {
		return n.sm.HasInSync(m.GetTopic(), m.GetPartition()) && slices.ContainsFunc(m.GetExpectedReplicas(), func(id int32) bool {
			return slices.Contains(drain, id) && !slices.Contains(m.GetReplicas(), id)
		})
	}
	n.controllerPlan(drain, n.sm.BalanceStatus().GetMaxMoving(), keep, func(moves int) {
		n.emit(Event{Kind: EventDrainReplanned, Broker: drain[0], Detail: fmt.Sprintf("%d moves", moves)})
	}, func() {
		n.controller.nextDrainPlan = n.env.Clock.Now().Add(n.cfg.RebalanceInterval)
	})
}

// controllerPlan computes a plan the active controller makes on its own,
// one at a time, and proposes the moves keep keeps (all if nil) against
// the plan it was computed from: apply refuses it if another plan was
// recorded meanwhile (expected_since), so that it never replaces an
// operator's plan committed while it was computed. proposed hears how many
// moves went into the record; none, that there was nothing to propose.
func (n *Node) controllerPlan(drain []int32, maxMoving int32, keep func(*metadatav1.PartitionReassignment) bool, proposed func(int), none func()) {
	n.controller.planning = true
	term, since := n.term, n.sm.BalanceStatus().GetSinceVersion()
	n.planThen(drain, func(moves []*metadatav1.PartitionReassignment) {
		if n.term != term || !n.active {
			return // a leadership since has its own flags
		}
		n.controller.planning = false
		if keep != nil {
			moves = slices.DeleteFunc(moves, func(m *metadatav1.PartitionReassignment) bool { return !keep(m) })
		}
		if n.sm.BalanceStatus().GetSinceVersion() != since {
			return // another plan was recorded: it stands
		}
		if len(moves) == 0 || statemachine.ValidateRebalance(len(moves), int(maxMoving)) != nil {
			none()
			return
		}
		proposed(len(moves))
		n.propose(&metadatav1.Record{Body: &metadatav1.Record_Rebalance{Rebalance: &metadatav1.RebalanceRecord{
			Moves: moves, MaxMoving: maxMoving, Drain: drain, ExpectedSince: &since}}}, func(Outcome) {})
	})
}

// BrokerSessions is the active controller's view of each registered
// broker: since when it is silent, what version it holds, how far pushes
// to it lag (DescribeBrokerSessions). Another controller has no such view.
func (n *Node) BrokerSessions() ([]*metadatav1.BrokerSession, *statemachine.Error) {
	if !n.active {
		return nil, n.errNotController()
	}
	now := n.env.Clock.Now()
	version := n.sm.Version()
	var out []*metadatav1.BrokerSession
	for _, id := range n.sm.BrokerIDs() {
		s := &metadatav1.BrokerSession{BrokerId: id, HeartbeatAgeMs: now.Sub(n.sessionStart(id)).Milliseconds(), HeldVersion: -1}
		if v, ok := n.controller.reported[id]; ok && v > 0 {
			s.HeldVersion, s.Lag = v, max(version-v, 0)
		}
		if t, ok := n.controller.pushes[id]; ok {
			s.PushInFlight, s.PushFailing = t.inFlight != 0, t.failing
			if t.known >= 0 {
				s.HeldVersion, s.Lag = t.known, max(version-t.known, 0)
			}
		}
		out = append(out, s)
	}
	return out, nil
}
