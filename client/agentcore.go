package client

import (
	"fmt"

	"github.com/dmq-project/metadata/internal/planted"

	metadatav1 "github.com/dmq-project/metadata/gen/dmq/metadata/v1"
	"github.com/dmq-project/metadata/wire"
)

// AgentCore is the deciding part of a storage agent, without I/O, locks or
// clocks: the local metadata view and the rules for changing it, and the
// broker's registration. StorageAgent runs it behind Connect; the simulator
// runs the same code behind simulated calls.
//
// Its rules: a push from an older controller epoch is refused; a delta
// applies only on the version it starts from; the version never goes back,
// except for a full state that repairs exactly the version held (the
// service held metadata no quorum committed), once per controller epoch.
type AgentCore struct {
	cfg      AgentConfig
	state    *metadatav1.ClusterState
	maxEpoch uint64
	// lastRepairEpoch is the controller epoch of the last repair applied.
	lastRepairEpoch uint64
	epoch           int64
	registered      bool
	fenced          bool
	shuttingDown    bool
	// shutDownConfirmed: a heartbeat answer said the controlled shutdown
	// is under way (or the broker is fenced: nothing left to move).
	shutDownConfirmed bool
	// heardPushes: a heartbeat answered; pushesConfigured: it said the
	// controllers know this service's push URL.
	heardPushes, pushesConfigured bool
}

// NewAgentCore returns a core with an empty view. The controllers, not the
// agent, judge the registration cfg describes (RegistrationRefused): one
// set of rules, the replicated one.
func NewAgentCore(cfg AgentConfig) *AgentCore {
	return &AgentCore{cfg: cfg, state: &metadatav1.ClusterState{}}
}

// State is the local view. It is the core's own: callers copy it to keep it.
func (a *AgentCore) State() *metadatav1.ClusterState { return a.state }

// Version is the metadata version of the local view.
func (a *AgentCore) Version() int64 { return a.state.GetMetadataVersion() }

// MaxEpoch is the highest controller epoch of an accepted push.
func (a *AgentCore) MaxEpoch() uint64 { return a.maxEpoch }

// Epoch is the broker epoch of the registration, 0 before it.
func (a *AgentCore) Epoch() int64 { return a.epoch }

// Registered says whether the broker is registered, as far as it knows.
func (a *AgentCore) Registered() bool { return a.registered }

// Fenced says whether the last heartbeat found the broker fenced.
func (a *AgentCore) Fenced() bool { return a.fenced }

// ApplyPush applies a push or refuses it, and returns the answer for the
// controller; full says an accepted push replaced the whole view. A delta
// is applied in place: a caller that shares the view copies it first.
func (a *AgentCore) ApplyPush(msg *metadatav1.PushMetadataRequest) (resp *metadatav1.PushMetadataResponse, full bool) {
	current := a.state.GetMetadataVersion()
	reject := func(reason string) (*metadatav1.PushMetadataResponse, bool) {
		return &metadatav1.PushMetadataResponse{MetadataVersion: current, Reason: reason}, false
	}
	if msg.GetControllerEpoch() < a.maxEpoch && !planted.On(planted.AcceptStalePush) {
		return reject(fmt.Sprintf("stale controller epoch %d: epoch %d seen", msg.GetControllerEpoch(), a.maxEpoch))
	}
	repair := false
	if msg.GetMetadataVersion() < current && !planted.On(planted.AcceptStalePush) {
		// Going back only as a repair of this very state, once per epoch:
		// a repair delivered twice, or late, must not undo what followed.
		_, isFull := msg.Update.(*metadatav1.PushMetadataRequest_FullState)
		repair = isFull && msg.GetRepairFromVersion() == current && msg.GetControllerEpoch() > a.lastRepairEpoch
		if !repair {
			return reject(fmt.Sprintf("version %d is older than the version held, %d", msg.GetMetadataVersion(), current))
		}
	}
	switch u := msg.Update.(type) {
	case *metadatav1.PushMetadataRequest_FullState:
		a.state, full = u.FullState, true
	case *metadatav1.PushMetadataRequest_Delta:
		if u.Delta.GetFromVersion() != current {
			return reject(fmt.Sprintf("delta base mismatch: from %d, version held %d", u.Delta.GetFromVersion(), current))
		}
		wire.ApplyDeltaInPlace(a.state, u.Delta)
	default:
		return reject("empty push")
	}
	a.maxEpoch = max(a.maxEpoch, msg.GetControllerEpoch())
	if repair {
		a.lastRepairEpoch = msg.GetControllerEpoch()
	}
	return &metadatav1.PushMetadataResponse{Accepted: true, MetadataVersion: a.state.GetMetadataVersion()}, full
}

// ApplyWatch applies an update of the controllers' watch stream
// (Client.Watch) and says whether the view moved: a delta from the version
// held, or a newer full state. Any other (a delta from another version:
// the view moved by a push meanwhile) is left; a watch serves committed
// metadata only, so there is nothing to repair.
func (a *AgentCore) ApplyWatch(update *metadatav1.WatchMetadataResponse) bool {
	if !WatchAdvances(update, a.state.GetMetadataVersion()) {
		return false
	}
	if d := update.GetDelta(); d != nil {
		wire.ApplyDeltaInPlace(a.state, d)
	} else {
		a.state = update.GetFullState()
	}
	return true
}

// RegisterRequest is the registration to send, nil once registered.
func (a *AgentCore) RegisterRequest() *metadatav1.RegisterBrokerRequest {
	if a.registered {
		return nil
	}
	return &metadatav1.RegisterBrokerRequest{Id: a.cfg.BrokerID, Host: a.cfg.Host, Port: a.cfg.Port, Rack: a.cfg.Rack,
		IncarnationId: a.cfg.IncarnationID}
}

// OnRegistered is told of a successful registration. An answer without a
// broker epoch registers nothing (the next beat registers again): epoch 0
// would pass for whatever registration the controllers hold.
func (a *AgentCore) OnRegistered(resp *metadatav1.RegisterBrokerResponse) {
	if epoch := resp.GetBroker().GetBrokerEpoch(); epoch > 0 {
		a.registered, a.epoch = true, epoch
	}
}

// RegistrationRefused says whether a failed registration was refused for
// what it says: the controllers answered with the code of an invalid id,
// host, port, rack or incarnation id. No retry can succeed, and the agent
// stops with their error. Every other failure is retried, InvalidArgument
// without that code included (a proxy's answer, or a field an older
// controller does not know yet, mid-upgrade). The caller passes only a
// definite answer: after an attempt with an unknown outcome, the
// registration may already hold.
func (a *AgentCore) RegistrationRefused(f Failure) bool {
	return f.FromServer && (f.ErrorCode == metadatav1.ErrorCode_INVALID_BROKER_ENDPOINT ||
		f.ErrorCode == metadatav1.ErrorCode_INVALID_REQUEST)
}

// HeartbeatRequest is the heartbeat to send once registered: the view's
// version, the replicas it holds, and, once ShutDown was called, that the
// broker is going away (a controlled shutdown: leaderships move first).
func (a *AgentCore) HeartbeatRequest() *metadatav1.StorageHeartbeatRequest {
	req := &metadatav1.StorageHeartbeatRequest{ServiceId: fmt.Sprintf("storage-%d", a.cfg.BrokerID),
		MetadataVersion: a.state.GetMetadataVersion(), PartitionCount: a.partitionCount(), BrokerEpoch: a.epoch}
	if a.shuttingDown {
		alive := false
		req.IsAlive = &alive
	}
	return req
}

// ShutDown makes every later heartbeat ask for a controlled shutdown.
func (a *AgentCore) ShutDown() { a.shuttingDown = true }

// ShutDownConfirmed says whether the controllers confirmed the controlled
// shutdown: the process may stop.
func (a *AgentCore) ShutDownConfirmed() bool { return a.shutDownConfirmed }

// OnHeartbeat is told how a heartbeat ended: its answer, or the refusal's
// error code (NONE for a failure without one, such as a timeout). A broker
// the controllers no longer know, or know under a newer epoch, registers
// again.
func (a *AgentCore) OnHeartbeat(resp *metadatav1.StorageHeartbeatResponse, refusal metadatav1.ErrorCode) {
	switch {
	case refusal == metadatav1.ErrorCode_STALE_BROKER_EPOCH:
		a.registered = false
	case refusal != metadatav1.ErrorCode_NONE || resp == nil:
	case !resp.GetRegistered():
		a.registered = false
	default:
		a.fenced = resp.GetFenced()
		a.shutDownConfirmed = a.shuttingDown && (resp.GetInControlledShutdown() || resp.GetFenced())
		a.heardPushes, a.pushesConfigured = true, resp.GetPushesConfigured()
	}
}

// PushesUnconfigured says whether the last heartbeat answer said that the
// controllers have no push URL for this service: it will receive no push.
func (a *AgentCore) PushesUnconfigured() bool { return a.heardPushes && !a.pushesConfigured }

func (a *AgentCore) partitionCount() int32 {
	n := int32(0)
	for _, t := range a.state.GetTopics() {
		for _, p := range t.GetPartitions() {
			for _, r := range p.GetReplicas() {
				if r == a.cfg.BrokerID {
					n++
				}
			}
		}
	}
	return n
}
