package client

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"time"

	"connectrpc.com/connect"
	metadatav1 "github.com/dmq-project/metadata/gen/dmq/metadata/v1"
	"github.com/dmq-project/metadata/gen/dmq/metadata/v1/metadatav1connect"
	"github.com/dmq-project/metadata/wire"
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
	// OnUpdate, if set, is called after each accepted push or watched
	// update (full says whether it was a full state), outside the agent's
	// lock.
	OnUpdate func(version int64, full bool, state *metadatav1.ClusterState)
	// OnVersion, if set, is called with the view's version after each
	// accepted push or watched update, outside the agent's lock; unlike
	// OnUpdate, it copies nothing.
	OnVersion func(version int64)
	// Watch: the agent also follows the controllers' WatchMetadata stream
	// while it runs, for a service the controllers cannot reach with
	// pushes (no push URL in services.json, or behind a firewall). Its
	// heartbeats report the version it watched to, which unfences it.
	Watch bool
}

// StorageAgent is the part of a storage service that talks to the
// controllers: it registers its broker, heartbeats with its metadata
// version and partition count (on a StorageHeartbeats stream, see
// HeartbeatStream), and serves StorageSyncService, applying pushes in
// version order and refusing older controller epochs. It keeps the local
// metadata view, with its version. Its decisions are an
// AgentCore's, which the simulator runs too.
type StorageAgent struct {
	cfg        AgentConfig
	client     *Client
	heartbeats *HeartbeatStream

	mu     sync.Mutex
	core   *AgentCore
	silent bool
	// A watching agent whose view stood still for staleWatchBeats
	// heartbeats while the leader's version was ahead restarts its watch
	// (staleWatch): its controller may be cut off from the others or
	// frozen, with its stream still open. heldAtBeat is the view's version
	// at the last heartbeat, stillBeats how many heartbeats found it so.
	heldAtBeat int64
	stillBeats int
	staleWatch chan struct{}
}

// staleWatchBeats is how many heartbeats a watching agent's view may stand
// still behind the leader's version before it watches elsewhere.
const staleWatchBeats = 3

// NewStorageAgent returns an agent that reaches the controllers through c.
func NewStorageAgent(c *Client, cfg AgentConfig) (*StorageAgent, error) {
	if cfg.HeartbeatInterval == 0 {
		cfg.HeartbeatInterval = time.Second
	}
	// What the agent itself needs; the registration it sends is the
	// controllers' to judge (AgentCore.RegistrationRefused).
	if cfg.BrokerID < 1 {
		return nil, fmt.Errorf("broker id %d: a storage agent needs its broker's id, 1 or more", cfg.BrokerID)
	}
	if cfg.HeartbeatInterval < 0 {
		return nil, fmt.Errorf("heartbeat interval %v is negative", cfg.HeartbeatInterval)
	}
	return &StorageAgent{cfg: cfg, client: c, heartbeats: c.NewHeartbeatStream(), core: NewAgentCore(cfg),
		staleWatch: make(chan struct{}, 1)}, nil
}

// Handler serves StorageSyncService for the controllers' pushes. Build it
// once: each handler holds its own pool of compressors.
func (a *StorageAgent) Handler() (string, http.Handler) {
	return metadatav1connect.NewStorageSyncServiceHandler(a, connect.WithCompressMinBytes(wire.CompressMinBytes))
}

// Version is the metadata version of the local view.
func (a *StorageAgent) Version() int64 {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.core.Version()
}

// State is a copy of the local view.
func (a *StorageAgent) State() *metadatav1.ClusterState {
	a.mu.Lock()
	defer a.mu.Unlock()
	return proto.CloneOf(a.core.State())
}

// Fenced says whether the last heartbeat found the broker fenced.
func (a *StorageAgent) Fenced() bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.core.Fenced()
}

// PushesUnconfigured says whether the controllers answered that they have
// no push URL for this service (it learns metadata only by heartbeats and
// watches): a misconfiguration an operator wants to hear of.
func (a *StorageAgent) PushesUnconfigured() bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.core.PushesUnconfigured()
}

// Epoch is the broker epoch of the registration, 0 before it.
func (a *StorageAgent) Epoch() int64 {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.core.Epoch()
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
	resp, full := a.core.ApplyPush(req.Msg)
	var state *metadatav1.ClusterState
	if resp.GetAccepted() && a.cfg.OnUpdate != nil {
		state = proto.CloneOf(a.core.State())
	}
	a.mu.Unlock()
	if state != nil {
		a.cfg.OnUpdate(resp.GetMetadataVersion(), full, state)
	}
	if resp.GetAccepted() && a.cfg.OnVersion != nil {
		a.cfg.OnVersion(resp.GetMetadataVersion())
	}
	return connect.NewResponse(resp), nil
}

// Run registers the broker and heartbeats until ctx ends. Errors of single
// heartbeats are retried at the next interval; it returns ctx's error, or
// the controllers' refusal of the registration itself (an invalid endpoint:
// no retry can succeed).
func (a *StorageAgent) Run(ctx context.Context) error {
	ticker := time.NewTicker(a.cfg.HeartbeatInterval)
	defer ticker.Stop()
	defer a.heartbeats.Close()
	if a.cfg.Watch {
		ctx, cancel := context.WithCancel(ctx)
		watching := make(chan struct{})
		go func() {
			defer close(watching)
			a.watch(ctx)
		}()
		defer func() { cancel(); <-watching }()
	}
	for {
		if err := a.beat(ctx); err != nil {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-ticker.C:
		}
	}
}

// errResumeWatch ends a watch that the view can no longer follow (a silent
// agent dropped updates): it starts again from the version held.
var errResumeWatch = errors.New("client: resume the watch from the version held")

// watch follows the controllers' watch stream until ctx ends, from the
// version held (a full state first when it holds none).
func (a *StorageAgent) watch(ctx context.Context) {
	for ctx.Err() == nil {
		a.mu.Lock()
		since := a.core.Version()
		a.mu.Unlock()
		// A stale watch ends here and starts again where the client's
		// calls go: the controller that answers its heartbeats.
		watchCtx, cancel := context.WithCancel(ctx)
		go func() {
			select {
			case <-a.staleWatch:
				cancel()
			case <-watchCtx.Done():
			}
		}()
		err := a.client.Watch(watchCtx, since, a.applyWatched)
		cancel()
		if ctx.Err() != nil {
			return
		}
		if !errors.Is(err, errResumeWatch) {
			continue
		}
		a.mu.Lock()
		silent := a.silent
		a.mu.Unlock()
		if silent {
			select {
			case <-ctx.Done():
			case <-time.After(a.cfg.HeartbeatInterval):
			}
		}
	}
}

func (a *StorageAgent) applyWatched(update *metadatav1.WatchMetadataResponse) error {
	a.mu.Lock()
	moved := !a.silent && a.core.ApplyWatch(update)
	version := a.core.Version()
	if !moved {
		a.mu.Unlock()
		to := update.GetFullState().GetMetadataVersion()
		if d := update.GetDelta(); d != nil {
			to = d.GetToVersion()
		}
		if to > version {
			return errResumeWatch
		}
		return nil // a push brought the view there first
	}
	var state *metadatav1.ClusterState
	if a.cfg.OnUpdate != nil {
		state = proto.CloneOf(a.core.State())
	}
	a.mu.Unlock()
	if state != nil {
		a.cfg.OnUpdate(version, update.GetFullState() != nil, state)
	}
	if a.cfg.OnVersion != nil {
		a.cfg.OnVersion(version)
	}
	return nil
}

// ShutDown runs a controlled shutdown: heartbeats now say that the broker
// is going away, so that the controllers move its leaderships first. It
// returns once a controller confirms (then stop the process), with ctx's
// error, or with the controllers' refusal of the registration (as Run).
// Run need not be running.
func (a *StorageAgent) ShutDown(ctx context.Context) error {
	defer a.heartbeats.Close()
	a.mu.Lock()
	a.core.ShutDown()
	a.mu.Unlock()
	for {
		if err := a.beat(ctx); err != nil {
			return err
		}
		a.mu.Lock()
		confirmed := a.core.ShutDownConfirmed()
		a.mu.Unlock()
		if confirmed {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(a.cfg.HeartbeatInterval):
		}
	}
}

// beat registers if needed, then heartbeats, within three intervals. Its
// error is a refused registration; every other failure waits for the next
// beat.
func (a *StorageAgent) beat(ctx context.Context) error {
	a.mu.Lock()
	silent, register := a.silent, a.core.RegisterRequest()
	a.mu.Unlock()
	if silent {
		return nil
	}
	callCtx, cancel := context.WithTimeout(ctx, a.cfg.HeartbeatInterval*3)
	defer cancel()
	if register != nil {
		resp, err := a.client.RegisterBroker(callCtx, register)
		if err != nil {
			if !errors.Is(err, ErrUnknownOutcome) && a.core.RegistrationRefused(a.client.failureOf(err)) {
				return fmt.Errorf("the controllers refused the registration of broker %d: %w", a.cfg.BrokerID, err)
			}
			return nil
		}
		a.mu.Lock()
		a.core.OnRegistered(resp)
		a.mu.Unlock()
	}
	a.mu.Lock()
	req := a.core.HeartbeatRequest()
	a.mu.Unlock()
	resp, err := a.heartbeats.Beat(callCtx, req)
	a.mu.Lock()
	defer a.mu.Unlock()
	if err != nil {
		a.core.OnHeartbeat(nil, wire.ErrorCodeOf(err))
		return nil
	}
	a.core.OnHeartbeat(resp, metadatav1.ErrorCode_NONE)
	if a.cfg.Watch {
		held := a.core.Version()
		if held == a.heldAtBeat && resp.GetMetadataVersion() > held {
			a.stillBeats++
		} else {
			a.stillBeats = 0
		}
		a.heldAtBeat = held
		if a.stillBeats >= staleWatchBeats {
			a.stillBeats = 0
			select {
			case a.staleWatch <- struct{}{}:
			default:
			}
		}
	}
	return nil
}
