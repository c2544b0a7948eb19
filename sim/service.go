package sim

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/dmq-project/metadata/client"
	metadatav1 "github.com/dmq-project/metadata/gen/dmq/metadata/v1"
	"github.com/dmq-project/metadata/gen/dmq/metadata/v1/metadatav1connect"
	"github.com/dmq-project/metadata/node"
	"github.com/dmq-project/metadata/seedwire"
	"github.com/dmq-project/metadata/wire"
	"google.golang.org/protobuf/proto"
)

// service is a fake storage service (a broker). Its agent is the production
// client.AgentCore, driven as client.StorageAgent drives it: register, then
// heartbeat, every interval, through a caller (the production client's
// retries and sessions); pushes applied or refused by the core's rules.
// Beside it the service acts as a partition leader (AlterPartition), shuts
// down in a controlled way, restarts as a new incarnation, and watches. It
// checks what any storage service must be able to rely on: its metadata
// version never goes backwards, it never takes a push from an older
// controller epoch after a newer one, and what it holds at version V is
// what the controllers hold at V.
type service struct {
	sim         *Sim
	id          int32
	incarnation int
	agent       *client.AgentCore
	// seed: the service is one of the Java system's (Options.SeedServices):
	// it takes the seed's pushes into view, heartbeats without a body, and
	// neither watches, changes ISRs nor shuts down in a controlled way.
	seed   bool
	view   *seedView
	caller *caller
	// waiting, watching and altering: a beat (registration and
	// heartbeat), a watch, an ISR change in flight.
	waiting, watching, altering bool

	silentUntil               time.Duration
	silentForever             bool
	restartWithNewIncarnation bool
	// shutdownFirst: the next restart is preceded by a controlled shutdown.
	shutdownFirst bool
	// shutdownDeadline, while a controlled shutdown runs, is when the
	// process stops without the controllers' confirmation.
	shutdownDeadline time.Duration
}

func newService(s *Sim, id int32) *service {
	v := &service{sim: s, id: id, seed: s.opts.SeedServices && id%2 == 0}
	v.start()
	return v
}

// start starts the service's process: a new incarnation with an empty view.
func (v *service) start() {
	v.incarnation++
	incarnation := fmt.Sprintf("inc-%d", v.incarnation)
	if v.seed {
		incarnation = "" // the seed's storage services register without one
	}
	v.agent = client.NewAgentCore(client.AgentConfig{BrokerID: v.id, Host: fmt.Sprintf("storage-%d.sim", v.id), Port: 9092,
		Rack: fmt.Sprintf("rack-%d", v.id%3), IncarnationID: incarnation})
	v.caller = newCaller(v.sim, uint64(v.id), fmt.Sprintf("storage-%d-inc-%d", v.id, v.incarnation))
	if v.seed {
		v.view = newSeedView()
	}
}

func (v *service) silent() bool { return v.silentForever || v.silentUntil > v.sim.now }

// version is the metadata version the service holds.
func (v *service) version() int64 {
	if v.seed {
		return v.view.version
	}
	return v.agent.Version()
}

// beat runs every heartbeat interval, as StorageAgent.Run does: register
// if needed, then heartbeat, within three intervals.
func (v *service) beat() {
	s := v.sim
	s.schedule(heartbeatInterval, evServiceBeat, uint64(v.id), 0, v.beat)
	if v.silent() || v.waiting {
		return
	}
	if v.restartWithNewIncarnation && (v.shutdownDeadline == 0 || v.agent.ShutDownConfirmed() || s.now >= v.shutdownDeadline) {
		// After a controlled shutdown, only once a controller confirmed it
		// (or the operator's patience ran out), as StorageAgent.ShutDown.
		v.restartWithNewIncarnation, v.shutdownDeadline = false, 0
		v.start()
	}
	if v.shutdownFirst && v.seed {
		v.shutdownFirst = false // the seed's services have no controlled shutdown
	}
	if v.shutdownFirst {
		// A controlled shutdown before the restart: leadership moves away
		// first, then the process goes (and comes back as a new one).
		v.shutdownFirst = false
		v.restartWithNewIncarnation = true
		v.shutdownDeadline = s.now + 10*heartbeatInterval
		v.agent.ShutDown()
		s.fault("controlled-shutdown")
	}
	deadline := s.now + 3*heartbeatInterval
	v.waiting = true
	agent := v.agent
	if req := agent.RegisterRequest(); req != nil {
		v.caller.brokerWrite(deadline, metadatav1connect.MetadataServiceRegisterBrokerProcedure, func(n *node.Node, id *metadatav1.RequestId, reply func(attemptReply[node.Outcome])) {
			sent := proto.CloneOf(req)
			sent.RequestId = id
			n.RegisterBroker(sent, func(o node.Outcome) { reply(attemptReply[node.Outcome]{value: o, err: o.Err, leader: o.LeaderID}) })
		}, func(e writeEnd) {
			if v.agent != agent {
				return // from an earlier incarnation
			}
			if e.requestID == nil || e.verdict != client.WriteAnswered || e.failure != nil {
				v.waiting = false
				return
			}
			agent.OnRegistered(&metadatav1.RegisterBrokerResponse{Broker: &metadatav1.Broker{Id: v.id, BrokerEpoch: e.outcome.BrokerEpoch}})
			v.heartbeat(deadline)
		})
		return
	}
	// Beside the heartbeats, as a storage service's other parts do: watch
	// now and then, and change ISRs as a partition leader.
	if !v.watching && !v.seed && s.rng.IntN(4) == 0 {
		v.watch(s.randomNodeID())
	}
	settling := s.now >= s.writesStopAt()
	if quiet := s.now >= s.opts.Duration-settlingQuiet; !v.altering && !v.seed && !quiet && (settling || s.rng.IntN(5) == 0) {
		// Once the writes stop, only changes a follower's state calls
		// for, at every beat: the ISRs settle, and moves whose targets
		// catch up end; none in the last seconds, which the controllers
		// need to agree for the final checks.
		v.alterISR(deadline, settling)
	}
	v.heartbeat(deadline)
}

// heartbeat sends the agent's heartbeat, as StorageAgent's beat does.
func (v *service) heartbeat(deadline time.Duration) {
	agent := v.agent
	req := agent.HeartbeatRequest()
	if v.seed {
		// POST /api/v1/metadata/heartbeat/{brokerId}, without a body.
		req = &metadatav1.StorageHeartbeatRequest{ServiceId: strconv.Itoa(int(v.id))}
	}
	procedure := metadatav1connect.MetadataServiceStorageHeartbeatProcedure
	if v.seed {
		procedure = metadatav1connect.MetadataServiceBrokerHeartbeatProcedure
	}
	call(v.caller, deadline, "", procedure, func(n *node.Node, reply func(attemptReply[*metadatav1.StorageHeartbeatResponse])) {
		resp, err := n.Heartbeat(req)
		reply(attemptReply[*metadatav1.StorageHeartbeatResponse]{value: resp, err: err, leader: n.Leader()})
	}, func(e callEnd[*metadatav1.StorageHeartbeatResponse]) {
		if v.agent != agent {
			return
		}
		v.waiting = false
		if e.failure != nil {
			agent.OnHeartbeat(nil, e.failure.ErrorCode)
			return
		}
		agent.OnHeartbeat(e.value, metadatav1.ErrorCode_NONE)
	})
}

// alterISR acts as a partition leader does: for a partition it leads (as
// its metadata says), it asks to expand the ISR by a follower that fetches
// again (a service that answers) or to shrink it by one that stopped,
// naming the epochs it holds; a share of changes is random, as lag spikes
// make them. Stale epochs are refused, which is the point: the controllers
// decide. With plannedOnly, no change is by chance. It returns false if the
// service leads nothing to change.
func (v *service) alterISR(deadline time.Duration, plannedOnly bool) bool {
	s := v.sim
	fetching := func(r int32) bool { return int(r) <= len(s.services) && !s.services[r-1].silent() }
	type change struct {
		topic   string
		p       *metadatav1.Partition
		isr     []int32
		expand  bool
		planned bool // a follower's state calls for it, not chance
	}
	var changes []change
	for _, t := range v.agent.State().GetTopics() {
		for _, p := range t.GetPartitions() {
			if p.GetLeader() != v.id || len(p.GetReplicas()) < 2 {
				continue
			}
			isr := p.GetIsr()
			for _, r := range p.GetReplicas() {
				in := slices.Contains(isr, r)
				switch {
				case !in && fetching(r):
					changes = append(changes, change{t.GetName(), p, append(slices.Clone(isr), r), true, true})
				case in && r != v.id && !fetching(r):
					changes = append(changes, change{t.GetName(), p, slices.DeleteFunc(slices.Clone(isr), func(x int32) bool { return x == r }), false, true})
				case in && r != v.id && !plannedOnly && s.rng.IntN(8) == 0:
					changes = append(changes, change{t.GetName(), p, slices.DeleteFunc(slices.Clone(isr), func(x int32) bool { return x == r }), false, false})
				}
			}
		}
	}
	if len(changes) == 0 {
		return false
	}
	pick := changes[s.rng.IntN(len(changes))]
	if planned := slices.DeleteFunc(slices.Clone(changes), func(c change) bool { return !c.planned }); len(planned) > 0 && s.rng.IntN(4) != 0 {
		pick = planned[s.rng.IntN(len(planned))]
	}
	if pick.expand {
		s.fault("isr-expand")
	} else {
		s.fault("isr-shrink")
	}
	isr := pick.isr
	agent := v.agent
	req := &metadatav1.AlterPartitionRequest{BrokerId: v.id, BrokerEpoch: agent.Epoch(), Topic: pick.topic, Partition: pick.p.GetPartition(),
		LeaderEpoch: pick.p.GetLeaderEpoch(), PartitionEpoch: pick.p.GetPartitionEpoch(), NewIsr: isr}
	v.caller.brokerWrite(deadline, metadatav1connect.MetadataServiceAlterPartitionProcedure, func(n *node.Node, id *metadatav1.RequestId, reply func(attemptReply[node.Outcome])) {
		sent := proto.CloneOf(req)
		sent.RequestId = id
		n.AlterPartition(sent, func(o node.Outcome) { reply(attemptReply[node.Outcome]{value: o, err: o.Err, leader: o.LeaderID}) })
	}, func(writeEnd) { v.altering = false })
	v.altering = true
	return true
}

// receivePush hands a push to the agent and checks what it did.
func (v *service) receivePush(req *metadatav1.PushMetadataRequest) (*metadatav1.PushMetadataResponse, error) {
	s := v.sim
	if v.silent() {
		return nil, fmt.Errorf("storage service %d is not answering", v.id)
	}
	if req.Update == nil {
		s.violate("controller %d pushed nothing to service %d", req.GetControllerId(), v.id)
	}
	// The controller shares one full state, and one delta from each
	// version, among its pushes; a real receiver gets its own copy off the
	// wire, and applies a delta in place.
	req = proto.CloneOf(req)
	before, epochBefore := v.agent.Version(), v.agent.MaxEpoch()
	resp, _ := v.agent.ApplyPush(req)
	if !resp.GetAccepted() {
		return resp, nil
	}
	after := v.agent.Version()
	if after != req.GetMetadataVersion() {
		s.violate("push to service %d says version %d but carries %d", v.id, req.GetMetadataVersion(), after)
	}
	if req.GetControllerEpoch() < epochBefore {
		s.violate("service %d accepted a push from controller epoch %d after epoch %d", v.id, req.GetControllerEpoch(), epochBefore)
	}
	if after < before {
		// Even as a repair: a service holds only committed metadata here.
		s.violate("service %d moved its metadata version back from %d to %d (repair of %d)", v.id, before, after, req.GetRepairFromVersion())
	}
	if digest, ok := s.pushedStates[after]; ok && digest != stateDigest(v.agent.State()) {
		s.violate("service %d holds other metadata at version %d than the controllers", v.id, after)
	}
	return resp, nil
}

// receiveSeedPush applies the seed's updates of one push in order, as the
// seed's receiver does, and checks that the view it ends with is what the
// controllers hold at the push's version.
func (v *service) receiveSeedPush(from uint64, push node.Push) (*metadatav1.PushMetadataResponse, error) {
	s := v.sim
	if v.silent() {
		return nil, fmt.Errorf("storage service %d is not answering", v.id)
	}
	if len(push.SeedUpdates) == 0 {
		s.violate("controller %d pushed no seed update to service %d", from, v.id)
	}
	before := v.view.version
	if term := push.SeedUpdates[0].ControllerTerm; uint64(term) < s.newestPushTerm {
		// A deposed controller's push, sent or arriving after its
		// successor began to push: the seed's receiver takes it. Its
		// protocol cannot refuse it; the controllers repair it with a full
		// state within their resync interval, which the liveness check
		// holds them to.
		s.fault("seed-stale-push")
		for _, u := range push.SeedUpdates {
			v.view.apply(u)
		}
		v.view.unsynced = true
		return &metadatav1.PushMetadataResponse{Accepted: true, MetadataVersion: push.Version}, nil
	}
	if n := len(push.SeedUpdates); n > 1 && !s.healed && s.rng.IntN(20) == 0 {
		// The connection breaks between two updates: the receiver holds
		// the first ones, and claims their version. The controller retries
		// the push, whose updates are idempotent; the next push it gets is
		// checked as any other.
		s.fault("seed-push-broken-off")
		for _, u := range push.SeedUpdates[:1+s.rng.IntN(n-1)] {
			v.view.apply(u)
		}
		return nil, fmt.Errorf("connection to seed service %d reset between two updates", v.id)
	}
	for _, u := range push.SeedUpdates {
		v.view.apply(u)
		if u.UpdateType == seedwire.FullSnapshot {
			v.view.unsynced = false
		}
	}
	if v.view.unsynced {
		return &metadatav1.PushMetadataResponse{Accepted: true, MetadataVersion: push.Version}, nil
	}
	if v.view.version < before {
		s.violate("controller %d moved seed service %d back from version %d to %d", from, v.id, before, v.view.version)
	}
	// A process that has heard of no controller found it itself (the
	// seed's services ask GET /api/v1/metadata/controller at start);
	// one that has, was told of each new leader by its first push.
	if told := v.view.controller; told.id != 0 && (told.id != int32(from) || told.term != push.SeedUpdates[0].ControllerTerm) {
		s.violate("seed service %d took a push from controller %d (term %d) but was told of controller %d (term %d): every new leader says so first",
			v.id, from, push.SeedUpdates[0].ControllerTerm, v.view.controller.id, v.view.controller.term)
	}
	if digest, ok := s.seedStates[v.view.version]; ok && digest != v.view.digest() {
		s.violate("seed service %d holds other metadata at version %d than the controllers (after %s)",
			v.id, v.view.version, seedTypes(push.SeedUpdates))
	}
	return &metadatav1.PushMetadataResponse{Accepted: true, MetadataVersion: push.Version}, nil
}

func seedTypes(updates []seedwire.MetadataUpdateRequest) string {
	types := make([]string, len(updates))
	for i, u := range updates {
		types[i] = string(u.UpdateType)
	}
	return strings.Join(types, ", ")
}

// rpc sends a request to a controller over the simulated network. handle
// runs on the controller if the request arrives; it calls reply with the
// caller-side continuation, which runs when the answer arrives. If either
// leg is lost, lost runs after the caller's timeout.
func (s *Sim) rpc(target, from uint64, handle func(n *node.Node, reply func(func())), lost func()) {
	s.rpcWithin(clientTimeout, target, from, handle, lost)
}

// rpcWithin is rpc with the caller's timeout given.
func (s *Sim) rpcWithin(timeout time.Duration, target, from uint64, handle func(n *node.Node, reply func(func())), lost func()) {
	s.rpcOver(false, timeout, target, from, handle, lost)
}

// peerRPC is an API call from one controller (from) to another, as a
// forwarded call is: the partitions between controllers cut it too.
func (s *Sim) peerRPC(timeout time.Duration, target, from uint64, handle func(n *node.Node, reply func(func())), lost func()) {
	s.rpcOver(true, timeout, target, from, handle, lost)
}

// rpcOver is rpcWithin; betweenControllers: both ends are controllers,
// and a cut link drops either leg.
func (s *Sim) rpcOver(betweenControllers bool, timeout time.Duration, target, from uint64, handle func(n *node.Node, reply func(func())), lost func()) {
	cut := func(a, b uint64) bool { return betweenControllers && s.cut[[2]uint64{a, b}] }
	answered := false
	s.schedule(timeout, evClientTimeout, from, target, func() {
		if !answered {
			answered = true
			lost()
		}
	})
	if s.lossy() {
		return
	}
	var arrive func()
	arrive = func() {
		n := s.node(target)
		if n == nil || cut(from, target) {
			return
		}
		if n.pausedUntil > s.now {
			// It waits in the runner's request queue, and is handled
			// after the pause, however long the caller has given up.
			n.queueRequest(arrive)
			return
		}
		handle(n.node, func(continuation func()) {
			if s.lossy() {
				return
			}
			s.schedule(s.latency(), evRPCReply, target, from, func() {
				if !answered && !cut(target, from) {
					answered = true
					continuation()
				}
			})
		})
		n.process()
	}
	s.schedule(s.latency(), evRPC, from, target, arrive)
}

// watch asks a controller (any: watches are served from applied state) for
// what changed after the service's version, as WatchMetadata does, and
// checks the answer: never backwards, deltas only from the version asked
// for, and, where client.Client's watch would take it, the content must be
// the controllers' metadata at that version. (The agent's view moves by
// pushes only, as StorageAgent's does.)
func (v *service) watch(target uint64) {
	s := v.sim
	since := v.version()
	base := proto.CloneOf(v.agent.State())
	s.rpc(target, uint64(v.id), func(n *node.Node, reply func(func())) {
		update := n.WatchUpdate(since)
		if update != nil {
			s.recordState(n.ID(), n.StateMachine())
		}
		reply(func() { v.watching = false; v.checkWatch(since, base, update) })
	}, func() { v.watching = false })
	v.watching = true
}

func (v *service) checkWatch(since int64, base *metadatav1.ClusterState, update *metadatav1.WatchMetadataResponse) {
	s := v.sim
	if update == nil {
		return
	}
	if d := update.GetDelta(); d != nil && (d.GetFromVersion() != since || d.GetToVersion() <= since) {
		s.violate("service %d watched from %d and got a delta from %d to %d", v.id, since, d.GetFromVersion(), d.GetToVersion())
		return
	}
	if full := update.GetFullState(); full != nil && full.GetMetadataVersion() <= since && since > 0 {
		s.violate("service %d watched from %d and got the full state at %d: a watch must never go back", v.id, since, full.GetMetadataVersion())
		return
	}
	if !client.WatchAdvances(update, since) {
		s.violate("service %d watched from %d: client.Client's watch refuses what the controller sent", v.id, since)
		return
	}
	next := update.GetFullState()
	if d := update.GetDelta(); d != nil {
		next = wire.ApplyDelta(base, d)
	}
	if digest, ok := s.pushedStates[next.GetMetadataVersion()]; ok && digest != stateDigest(next) {
		s.violate("service %d watched other metadata at version %d than the controllers hold", v.id, next.GetMetadataVersion())
	}
}
