package client

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"time"

	"connectrpc.com/connect"
	"github.com/dmq-project/metadata/rpc"
	metadatav1 "github.com/dmq-project/metadata/rpc/gen/dmq/metadata/v1"
	"github.com/dmq-project/metadata/rpc/gen/dmq/metadata/v1/metadatav1connect"
	"github.com/dmq-project/metadata/statemachine"
	"google.golang.org/protobuf/proto"
)

// AgentConfig describes the storage service an agent stands for.
type AgentConfig struct {
	BrokerID      int32
	Host          string
	Port          int32
	Rack          string
	IncarnationID string
	// HeartbeatInterval defaults to 1 s; keep it well under the
	// controllers' session timeout.
	HeartbeatInterval time.Duration
	// OnUpdate, if set, is called after each accepted push (full says
	// whether it was a full state), outside the agent's lock.
	OnUpdate func(version int64, full bool, state *metadatav1.ClusterState)
}

// StorageAgent is the part of a storage service that talks to the
// controllers: it registers its broker, heartbeats with its metadata
// version and partition count, and serves StorageSyncService, applying
// pushes in version order and refusing older controller epochs. It keeps
// the local metadata view, with its version.
type StorageAgent struct {
	cfg    AgentConfig
	client *Client

	mu       sync.Mutex
	state    *metadatav1.ClusterState
	maxEpoch uint64
	// lastRepairEpoch is the controller epoch of the last repair applied.
	lastRepairEpoch uint64
	epoch           int64
	registered      bool
	fenced          bool
	silent          bool
}

// NewStorageAgent returns an agent that reaches the controllers through c.
func NewStorageAgent(c *Client, cfg AgentConfig) (*StorageAgent, error) {
	if err := statemachine.ValidateBrokerRegistration(cfg.BrokerID, cfg.Host, cfg.Port, cfg.Rack, cfg.IncarnationID); err != nil {
		return nil, err
	}
	if cfg.HeartbeatInterval == 0 {
		cfg.HeartbeatInterval = time.Second
	}
	return &StorageAgent{cfg: cfg, client: c, state: &metadatav1.ClusterState{}}, nil
}

// Handler serves StorageSyncService for the controllers' pushes.
func (a *StorageAgent) Handler() (string, http.Handler) {
	return metadatav1connect.NewStorageSyncServiceHandler(a)
}

// Version is the metadata version of the local view.
func (a *StorageAgent) Version() int64 {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.state.GetMetadataVersion()
}

// State is a copy of the local view.
func (a *StorageAgent) State() *metadatav1.ClusterState {
	a.mu.Lock()
	defer a.mu.Unlock()
	return proto.CloneOf(a.state)
}

// Fenced says whether the last heartbeat found the broker fenced.
func (a *StorageAgent) Fenced() bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.fenced
}

// Epoch is the broker epoch of the registration, 0 before it.
func (a *StorageAgent) Epoch() int64 {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.epoch
}

// SetSilent stops (true) or resumes (false) heartbeats and push handling,
// as a storage service that stalls would: for tests and drills.
func (a *StorageAgent) SetSilent(silent bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.silent = silent
}

// PushMetadata implements StorageSyncService.
func (a *StorageAgent) PushMetadata(_ context.Context, req *connect.Request[metadatav1.PushMetadataRequest]) (*connect.Response[metadatav1.PushMetadataResponse], error) {
	a.mu.Lock()
	if a.silent {
		a.mu.Unlock()
		return nil, connect.NewError(connect.CodeUnavailable, errors.New("storage service is not answering"))
	}
	current := a.state.GetMetadataVersion()
	reject := func(reason string) (*connect.Response[metadatav1.PushMetadataResponse], error) {
		a.mu.Unlock()
		return connect.NewResponse(&metadatav1.PushMetadataResponse{MetadataVersion: current, Reason: reason}), nil
	}
	msg := req.Msg
	if msg.GetControllerEpoch() < a.maxEpoch {
		return reject(fmt.Sprintf("stale controller epoch %d: epoch %d seen", msg.GetControllerEpoch(), a.maxEpoch))
	}
	repair := false
	if msg.GetMetadataVersion() < current {
		// Going back only as a repair of this very state, once per epoch:
		// a repair delivered twice, or late, must not undo what followed.
		_, isFull := msg.Update.(*metadatav1.PushMetadataRequest_FullState)
		repair = isFull && msg.GetRepairFromVersion() == current && msg.GetControllerEpoch() > a.lastRepairEpoch
		if !repair {
			return reject(fmt.Sprintf("version %d is older than the version held, %d", msg.GetMetadataVersion(), current))
		}
	}
	full := false
	switch u := msg.Update.(type) {
	case *metadatav1.PushMetadataRequest_FullState:
		a.state, full = u.FullState, true
	case *metadatav1.PushMetadataRequest_Delta:
		if u.Delta.GetFromVersion() != current {
			return reject(fmt.Sprintf("delta base mismatch: from %d, version held %d", u.Delta.GetFromVersion(), current))
		}
		statemachine.ApplyDeltaInPlace(a.state, u.Delta)
	default:
		return reject("empty push")
	}
	a.maxEpoch = msg.GetControllerEpoch()
	if repair {
		a.lastRepairEpoch = msg.GetControllerEpoch()
	}
	version, state := a.state.GetMetadataVersion(), proto.CloneOf(a.state)
	a.mu.Unlock()
	if a.cfg.OnUpdate != nil {
		a.cfg.OnUpdate(version, full, state)
	}
	return connect.NewResponse(&metadatav1.PushMetadataResponse{Accepted: true, MetadataVersion: version}), nil
}

func (a *StorageAgent) partitionCount() int32 {
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

// Run registers the broker and heartbeats until ctx ends. Errors of single
// heartbeats are retried at the next interval; it returns ctx's error.
func (a *StorageAgent) Run(ctx context.Context) error {
	ticker := time.NewTicker(a.cfg.HeartbeatInterval)
	defer ticker.Stop()
	for {
		a.beat(ctx)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-ticker.C:
		}
	}
}

func (a *StorageAgent) beat(ctx context.Context) {
	a.mu.Lock()
	silent, registered := a.silent, a.registered
	a.mu.Unlock()
	if silent {
		return
	}
	callCtx, cancel := context.WithTimeout(ctx, a.cfg.HeartbeatInterval*3)
	defer cancel()
	if !registered {
		resp, err := a.client.RegisterBroker(callCtx, &metadatav1.RegisterBrokerRequest{Id: a.cfg.BrokerID, Host: a.cfg.Host,
			Port: a.cfg.Port, Rack: a.cfg.Rack, IncarnationId: a.cfg.IncarnationID})
		if err != nil {
			return
		}
		a.mu.Lock()
		a.registered, a.epoch = true, resp.GetBroker().GetBrokerEpoch()
		a.mu.Unlock()
	}
	a.mu.Lock()
	req := &metadatav1.StorageHeartbeatRequest{ServiceId: fmt.Sprintf("storage-%d", a.cfg.BrokerID),
		MetadataVersion: a.state.GetMetadataVersion(), PartitionCount: a.partitionCount(), BrokerEpoch: a.epoch}
	a.mu.Unlock()
	resp, err := a.client.StorageHeartbeat(callCtx, req)
	if err != nil {
		if rpc.ErrorCodeOf(err) == metadatav1.ErrorCode_STALE_BROKER_EPOCH {
			a.mu.Lock()
			a.registered = false
			a.mu.Unlock()
		}
		return
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if !resp.GetRegistered() {
		a.registered = false
		return
	}
	a.fenced = resp.GetFenced()
}
