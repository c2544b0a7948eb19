package sim

import (
	"fmt"
	"slices"
	"time"

	"github.com/dmq-project/metadata/node"
	metadatav1 "github.com/dmq-project/metadata/rpc/gen/dmq/metadata/v1"
	"github.com/dmq-project/metadata/statemachine"
	"google.golang.org/protobuf/proto"
)

// service is a fake storage service (a broker). It registers, heartbeats to
// the controller it believes leads, applies pushes, and checks what any
// storage service must be able to rely on: its metadata version never
// goes backwards, it never takes a push from an older controller epoch
// after a newer one, and what it holds at version V is what the controllers
// hold at V.
type service struct {
	sim         *Sim
	id          int32
	incarnation int
	registered  bool
	epoch       int64
	seq         uint64
	leaderGuess uint64
	waiting     bool

	state    *metadatav1.ClusterState
	version  int64
	maxEpoch uint64

	silentUntil               time.Duration
	silentForever             bool
	restartWithNewIncarnation bool
	// shutdownFirst: the next restart is preceded by a controlled shutdown.
	shutdownFirst bool
}

// alterISR acts as a partition leader does: for a partition it leads (as
// its metadata says), it asks to shrink the ISR by one follower or to
// expand it by one replica, naming the epochs it holds. Stale epochs are
// refused, which is the point: the controllers decide. It returns false
// if the service leads nothing to change.
func (v *service) alterISR(target uint64) bool {
	s := v.sim
	type led struct {
		topic string
		p     *metadatav1.Partition
	}
	var leads []led
	for _, t := range v.state.GetTopics() {
		for _, p := range t.GetPartitions() {
			if p.GetLeader() == v.id && len(p.GetReplicas()) > 1 {
				leads = append(leads, led{t.GetName(), p})
			}
		}
	}
	if len(leads) == 0 {
		return false
	}
	pick := leads[s.rng.IntN(len(leads))]
	isr := append([]int32(nil), pick.p.GetIsr()...)
	var outside []int32
	for _, r := range pick.p.GetReplicas() {
		if !slices.Contains(isr, r) {
			outside = append(outside, r)
		}
	}
	if len(outside) > 0 && (len(isr) == 1 || s.rng.IntN(2) == 0) {
		isr = append(isr, outside[s.rng.IntN(len(outside))])
		s.fault("isr-expand")
	} else {
		var followers []int32
		for _, r := range isr {
			if r != v.id {
				followers = append(followers, r)
			}
		}
		if len(followers) == 0 {
			return false
		}
		drop := followers[s.rng.IntN(len(followers))]
		isr = slices.DeleteFunc(isr, func(r int32) bool { return r == drop })
		s.fault("isr-shrink")
	}
	req := &metadatav1.AlterPartitionRequest{BrokerId: v.id, BrokerEpoch: v.epoch, Topic: pick.topic, Partition: pick.p.GetPartition(),
		LeaderEpoch: pick.p.GetLeaderEpoch(), PartitionEpoch: pick.p.GetPartitionEpoch(), NewIsr: isr}
	s.rpc(target, uint64(v.id), func(n *node.Node, reply func(func())) {
		n.AlterPartition(req, func(o node.Outcome) {
			reply(func() {
				v.waiting = false
				if o.Err != nil && o.Err.Code == metadatav1.ErrorCode_NOT_CONTROLLER {
					v.follow(o.LeaderID)
				}
			})
		})
	}, func() { v.waiting = false; v.pickAnother() })
	return true
}

func newService(s *Sim, id int32) *service {
	return &service{sim: s, id: id, incarnation: 1, leaderGuess: uint64(1 + s.rng.IntN(s.opts.Nodes)),
		state: &metadatav1.ClusterState{}}
}

func (v *service) silent() bool { return v.silentForever || v.silentUntil > v.sim.now }

// beat runs every heartbeat interval: register if needed, else heartbeat.
func (v *service) beat() {
	s := v.sim
	s.schedule(heartbeatInterval, evServiceBeat, uint64(v.id), 0, v.beat)
	if v.silent() || v.waiting {
		return
	}
	if v.restartWithNewIncarnation {
		// The process restarted: a new incarnation, an empty view.
		v.restartWithNewIncarnation = false
		v.incarnation++
		v.registered, v.epoch = false, 0
		v.state, v.version, v.maxEpoch = &metadatav1.ClusterState{}, 0, 0
	}
	target := v.leaderGuess
	v.waiting = true
	if !v.registered {
		v.seq++
		req := &metadatav1.RegisterBrokerRequest{Id: v.id, Host: fmt.Sprintf("storage-%d.sim", v.id), Port: 9092,
			Rack: fmt.Sprintf("rack-%d", v.id%3), IncarnationId: fmt.Sprintf("inc-%d", v.incarnation)}
		s.rpc(target, uint64(v.id), func(n *node.Node, reply func(func())) {
			n.RegisterBroker(req, func(o node.Outcome) { reply(func() { v.onRegistered(o) }) })
		}, func() { v.waiting = false; v.pickAnother() })
		return
	}
	if v.shutdownFirst {
		// A controlled shutdown before the restart: leadership moves away
		// first, then the process goes (and comes back as a new one).
		v.shutdownFirst = false
		v.restartWithNewIncarnation = true
		alive := false
		req := &metadatav1.StorageHeartbeatRequest{ServiceId: fmt.Sprintf("storage-%d", v.id), MetadataVersion: v.version,
			PartitionCount: v.partitionCount(), BrokerEpoch: v.epoch, IsAlive: &alive}
		s.fault("controlled-shutdown")
		s.rpc(target, uint64(v.id), func(n *node.Node, reply func(func())) {
			resp, err := n.Heartbeat(req)
			reply(func() { v.onHeartbeat(resp, err, n.Leader()) })
		}, func() { v.waiting = false; v.pickAnother() })
		return
	}
	if s.rng.IntN(4) == 0 {
		v.watch(target)
		return
	}
	if s.now < s.writesStopAt() && s.rng.IntN(5) == 0 && v.alterISR(target) {
		return
	}
	req := &metadatav1.StorageHeartbeatRequest{ServiceId: fmt.Sprintf("storage-%d", v.id), MetadataVersion: v.version,
		PartitionCount: v.partitionCount(), BrokerEpoch: v.epoch}
	s.rpc(target, uint64(v.id), func(n *node.Node, reply func(func())) {
		resp, err := n.Heartbeat(req)
		reply(func() { v.onHeartbeat(resp, err, n.Leader()) })
	}, func() { v.waiting = false; v.pickAnother() })
}

func (v *service) pickAnother() { v.leaderGuess = v.sim.randomNodeID() }

func (v *service) follow(leader uint64) {
	if leader != 0 {
		v.leaderGuess = leader
	} else {
		v.pickAnother()
	}
}

func (v *service) onRegistered(o node.Outcome) {
	v.waiting = false
	switch {
	case o.Err == nil:
		v.registered, v.epoch = true, o.BrokerEpoch
	case o.Err.Code == metadatav1.ErrorCode_NOT_CONTROLLER:
		v.follow(o.LeaderID)
	}
}

func (v *service) onHeartbeat(resp *metadatav1.StorageHeartbeatResponse, err *statemachine.Error, leader uint64) {
	v.waiting = false
	if err != nil {
		switch err.Code {
		case metadatav1.ErrorCode_NOT_CONTROLLER:
			v.follow(leader)
		case metadatav1.ErrorCode_STALE_BROKER_EPOCH:
			v.registered = false
		}
		return
	}
	if !resp.GetRegistered() {
		v.registered = false
	}
}

func (v *service) partitionCount() int32 {
	n := 0
	for _, t := range v.state.GetTopics() {
		for _, p := range t.GetPartitions() {
			for _, r := range p.GetReplicas() {
				if r == v.id {
					n++
				}
			}
		}
	}
	return int32(n)
}

// receivePush applies a push, or rejects it, and checks the rules.
func (v *service) receivePush(req *metadatav1.PushMetadataRequest) (*metadatav1.PushMetadataResponse, error) {
	s := v.sim
	if v.silent() {
		return nil, fmt.Errorf("storage service %d is not answering", v.id)
	}
	if !s.planted.acceptStalePush {
		if req.GetControllerEpoch() < v.maxEpoch {
			return &metadatav1.PushMetadataResponse{MetadataVersion: v.version, Reason: "stale controller epoch"}, nil
		}
		if req.GetMetadataVersion() < v.version {
			return &metadatav1.PushMetadataResponse{MetadataVersion: v.version, Reason: "older than the version held"}, nil
		}
	}
	var next *metadatav1.ClusterState
	switch update := req.Update.(type) {
	case *metadatav1.PushMetadataRequest_FullState:
		// The controller shares one full state among its pushes; a real
		// receiver gets its own copy off the wire.
		next = proto.CloneOf(update.FullState)
	case *metadatav1.PushMetadataRequest_Delta:
		if update.Delta.GetFromVersion() != v.version {
			return &metadatav1.PushMetadataResponse{MetadataVersion: v.version, Reason: "delta base mismatch"}, nil
		}
		// The service owns its state: apply in place, unless a check
		// below rejects the result (then the copy keeps the old state).
		if s.planted.acceptStalePush {
			next = statemachine.ApplyDelta(v.state, update.Delta)
		} else {
			statemachine.ApplyDeltaInPlace(v.state, update.Delta)
			next = v.state
		}
	default:
		s.violate("controller %d pushed nothing to service %d", req.GetControllerId(), v.id)
		return nil, fmt.Errorf("empty push")
	}
	if next.GetMetadataVersion() != req.GetMetadataVersion() {
		s.violate("push to service %d says version %d but carries %d", v.id, req.GetMetadataVersion(), next.GetMetadataVersion())
	}
	if req.GetControllerEpoch() < v.maxEpoch {
		s.violate("service %d accepted a push from controller epoch %d after epoch %d", v.id, req.GetControllerEpoch(), v.maxEpoch)
	}
	if next.GetMetadataVersion() < v.version {
		s.violate("service %d moved its metadata version back from %d to %d", v.id, v.version, next.GetMetadataVersion())
	}
	if digest, ok := s.pushedStates[next.GetMetadataVersion()]; ok && digest != stateDigest(next) {
		s.violate("service %d holds other metadata at version %d than the controllers", v.id, next.GetMetadataVersion())
	}
	v.state, v.version = next, next.GetMetadataVersion()
	v.maxEpoch = max(v.maxEpoch, req.GetControllerEpoch())
	return &metadatav1.PushMetadataResponse{Accepted: true, MetadataVersion: v.version}, nil
}

// rpc sends a request to a controller over the simulated network. handle
// runs on the controller if the request arrives; it calls reply with the
// caller-side continuation, which runs when the answer arrives. If either
// leg is lost, lost runs after the caller's timeout.
func (s *Sim) rpc(target, from uint64, handle func(n *node.Node, reply func(func())), lost func()) {
	answered := false
	timeout := func() {
		if !answered {
			answered = true
			lost()
		}
	}
	s.schedule(clientTimeout, evClientTimeout, from, target, timeout)
	if s.lossy() {
		return
	}
	s.schedule(s.latency(), evRPC, from, target, func() {
		n := s.node(target)
		if n == nil || n.pausedUntil > s.now {
			return
		}
		handle(n.node, func(continuation func()) {
			if s.lossy() {
				return
			}
			s.schedule(s.latency(), evRPCReply, target, from, func() {
				if !answered {
					answered = true
					continuation()
				}
			})
		})
		n.process()
	})
}

// watch asks a controller (any: watches are served from applied state) for
// what changed after the service's version, as WatchMetadata does, and
// applies it under the same rules as a push: never backwards, deltas only
// on the version they start from, and the content must be the controllers'
// metadata at that version.
func (v *service) watch(target uint64) {
	s := v.sim
	since := v.version
	s.rpc(target, uint64(v.id), func(n *node.Node, reply func(func())) {
		update := n.WatchUpdate(since)
		if update != nil {
			s.recordState(n.ID(), n.StateMachine())
		}
		reply(func() { v.waiting = false; v.applyWatch(since, update) })
	}, func() { v.waiting = false; v.pickAnother() })
}

func (v *service) applyWatch(since int64, update *metadatav1.WatchMetadataResponse) {
	s := v.sim
	if update == nil || v.silent() {
		return
	}
	var next *metadatav1.ClusterState
	if d := update.GetDelta(); d != nil {
		if d.GetFromVersion() != since || d.GetToVersion() <= since {
			s.violate("service %d watched from %d and got a delta from %d to %d", v.id, since, d.GetFromVersion(), d.GetToVersion())
			return
		}
		if d.GetFromVersion() != v.version {
			return // the service moved on since it asked
		}
		next = statemachine.ApplyDelta(v.state, d)
	} else {
		next = update.GetFullState()
		if next.GetMetadataVersion() <= since && since > 0 {
			s.violate("service %d watched from %d and got the full state at %d: a watch must never go back", v.id, since, next.GetMetadataVersion())
			return
		}
		if next.GetMetadataVersion() < v.version {
			return // the service moved on since it asked
		}
	}
	if digest, ok := s.pushedStates[next.GetMetadataVersion()]; ok && digest != stateDigest(next) {
		s.violate("service %d watched other metadata at version %d than the controllers hold", v.id, next.GetMetadataVersion())
	}
	v.state, v.version = next, next.GetMetadataVersion()
}
