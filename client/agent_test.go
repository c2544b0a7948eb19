package client_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/dmq-project/metadata/client"
	metadatav1 "github.com/dmq-project/metadata/gen/dmq/metadata/v1"
	"github.com/dmq-project/metadata/gen/dmq/metadata/v1/metadatav1connect"
	"github.com/dmq-project/metadata/rpc/rpctest"
	"github.com/dmq-project/metadata/wire"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func fullPush(epoch uint64, version, repairFrom int64) *connect.Request[metadatav1.PushMetadataRequest] {
	return connect.NewRequest(&metadatav1.PushMetadataRequest{ControllerId: 1, ControllerEpoch: epoch, MetadataVersion: version,
		RepairFromVersion: repairFrom,
		Update:            &metadatav1.PushMetadataRequest_FullState{FullState: &metadatav1.ClusterState{MetadataVersion: version}}})
}

// A storage service ahead of every controller (it holds metadata no quorum
// committed) is repaired by a full state marked as a repair of its very
// version, once per controller epoch; every other push still may not take
// it back.
func TestAgentGoesBackOnlyForARepairOfItsVersion(t *testing.T) {
	c, err := client.New(client.Config{Endpoints: []string{"http://127.0.0.1:1"}})
	require.NoError(t, err)
	agent, err := client.NewStorageAgent(c, client.AgentConfig{BrokerID: 1, Host: "localhost", Port: 9092, IncarnationID: "a"})
	require.NoError(t, err)
	push := func(req *connect.Request[metadatav1.PushMetadataRequest]) *metadatav1.PushMetadataResponse {
		resp, err := agent.PushMetadata(context.Background(), req)
		require.NoError(t, err)
		return resp.Msg
	}
	require.True(t, push(fullPush(3, 500, 0)).GetAccepted())

	assert.False(t, push(fullPush(4, 300, 0)).GetAccepted(), "an ordinary push never takes a service back")
	assert.False(t, push(fullPush(4, 300, 499)).GetAccepted(), "a repair of another version")
	assert.False(t, push(fullPush(2, 300, 500)).GetAccepted(), "a repair from an older epoch")
	repaired := push(fullPush(4, 300, 500))
	require.True(t, repaired.GetAccepted())
	assert.Equal(t, int64(300), repaired.GetMetadataVersion())

	// The service moves on to 500 again, legitimately; the same repair
	// delivered late must not take it back.
	require.True(t, push(fullPush(4, 500, 0)).GetAccepted())
	late := push(fullPush(4, 300, 500))
	assert.False(t, late.GetAccepted())
	assert.Equal(t, int64(500), late.GetMetadataVersion())
}

// An agent whose registration the controllers refuse for what it says (an
// invalid host here) stops with their error instead of retrying forever:
// one set of registration rules, the replicated one, judges it.
func TestAgentWithAnInvalidEndpointStopsWithTheControllersError(t *testing.T) {
	cluster := rpctest.Start(t, 1, nil)
	cluster.WaitLeader(t)
	c, err := client.New(client.Config{Endpoints: []string{cluster[0].URL()}})
	require.NoError(t, err)
	agent, err := client.NewStorageAgent(c, client.AgentConfig{BrokerID: 1, Host: "not a host name", Port: 9092,
		IncarnationID: "a", HeartbeatInterval: 50 * time.Millisecond})
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err = agent.Run(ctx)
	require.Error(t, err)
	assert.NotErrorIs(t, err, context.DeadlineExceeded, "Run kept retrying a registration no retry can fix")
	assert.Equal(t, connect.CodeInvalidArgument, connect.CodeOf(err))
	assert.Equal(t, metadatav1.ErrorCode_INVALID_BROKER_ENDPOINT, wire.ErrorCodeOf(err))
	assert.Contains(t, err.Error(), "broker 1")
}

// fakeController answers RegisterBroker with refusals of its choosing, and
// everything an agent needs besides.
type fakeController struct {
	metadatav1connect.UnimplementedMetadataServiceHandler
	mu       sync.Mutex
	refusals []error // answered to the first registrations, in order
	slow     int     // the attempt (from 1) that takes longer than the client waits
	attempts int
}

func (f *fakeController) OpenSession(context.Context, *connect.Request[metadatav1.OpenSessionRequest]) (*connect.Response[metadatav1.OpenSessionResponse], error) {
	return connect.NewResponse(&metadatav1.OpenSessionResponse{SessionId: 7, TimeoutMs: 120000}), nil
}

func (f *fakeController) RegisterBroker(_ context.Context, req *connect.Request[metadatav1.RegisterBrokerRequest]) (*connect.Response[metadatav1.RegisterBrokerResponse], error) {
	f.mu.Lock()
	f.attempts++
	attempt := f.attempts
	f.mu.Unlock()
	if attempt == f.slow {
		time.Sleep(200 * time.Millisecond)
	}
	if attempt <= len(f.refusals) && f.refusals[attempt-1] != nil {
		return nil, f.refusals[attempt-1]
	}
	return connect.NewResponse(&metadatav1.RegisterBrokerResponse{Success: true,
		Broker: &metadatav1.Broker{Id: req.Msg.GetId(), BrokerEpoch: 3}}), nil
}

func (f *fakeController) StorageHeartbeat(context.Context, *connect.Request[metadatav1.StorageHeartbeatRequest]) (*connect.Response[metadatav1.StorageHeartbeatResponse], error) {
	return connect.NewResponse(&metadatav1.StorageHeartbeatResponse{Registered: true}), nil
}

// Only a refusal of what the registration says stops the agent: an
// InvalidArgument without the controllers' error code (a proxy's, or a
// newer client's field an older controller's codec refuses mid-upgrade)
// and a retry's answer after an attempt with an unknown outcome are
// retried, as every other failure (found by review).
func TestAgentRetriesInvalidArgumentsThatAreNotARefusal(t *testing.T) {
	fake := &fakeController{refusals: []error{
		connect.NewError(connect.CodeInvalidArgument, errors.New("unknown field \"newField\"")),
		connect.NewError(connect.CodeUnavailable, errors.New("no leader")),
		connect.NewError(connect.CodeInvalidArgument, errors.New("proxy says no")),
		connect.NewError(connect.CodeUnavailable, errors.New("slow, then unavailable: the outcome is unknown")),
		// The retry of an attempt whose outcome is unknown.
		connect.NewError(connect.CodeInvalidArgument, errors.New("proxy says no, after an attempt that may have applied")),
	}, slow: 4}
	c := clientOf(t, fake, client.Config{AttemptTimeout: 100 * time.Millisecond, BackoffMin: time.Millisecond, BackoffMax: 5 * time.Millisecond})
	agent, err := client.NewStorageAgent(c, client.AgentConfig{BrokerID: 1, Host: "localhost", Port: 9092,
		IncarnationID: "a", HeartbeatInterval: 10 * time.Millisecond})
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	stopped := make(chan error, 1)
	go func() { stopped <- agent.Run(ctx) }()
	require.Eventually(t, func() bool {
		select {
		case err := <-stopped:
			require.NoError(t, err, "the agent gave up on a registration that was never refused")
		default:
		}
		return agent.Epoch() == 3
	}, 10*time.Second, 5*time.Millisecond, "the agent never registered")
	cancel()
	assert.ErrorIs(t, <-stopped, context.Canceled)
}

// A watched update moves the view only forward and only from the version
// held: a delta from another version, or an older full state, is left.
func TestAgentAppliesWatchedUpdatesInOrder(t *testing.T) {
	core := client.NewAgentCore(client.AgentConfig{BrokerID: 1})
	full := func(v int64, topics ...string) *metadatav1.WatchMetadataResponse {
		state := &metadatav1.ClusterState{MetadataVersion: v}
		for _, name := range topics {
			state.Topics = append(state.Topics, &metadatav1.Topic{Name: name})
		}
		return &metadatav1.WatchMetadataResponse{Update: &metadatav1.WatchMetadataResponse_FullState{FullState: state}}
	}
	delta := func(from, to int64, topic string) *metadatav1.WatchMetadataResponse {
		return &metadatav1.WatchMetadataResponse{Update: &metadatav1.WatchMetadataResponse_Delta{Delta: &metadatav1.MetadataDelta{
			FromVersion: from, ToVersion: to, UpsertedTopics: []*metadatav1.Topic{{Name: topic}}}}}
	}
	require.True(t, core.ApplyWatch(full(5, "a")))
	assert.False(t, core.ApplyWatch(delta(4, 6, "x")), "a delta from another version")
	assert.False(t, core.ApplyWatch(full(5, "y")), "a full state not newer")
	require.True(t, core.ApplyWatch(delta(5, 7, "b")))
	assert.Equal(t, int64(7), core.Version())
	var names []string
	for _, topic := range core.State().GetTopics() {
		names = append(names, topic.GetName())
	}
	assert.ElementsMatch(t, []string{"a", "b"}, names)
	assert.Equal(t, int64(7), core.HeartbeatRequest().GetMetadataVersion(), "heartbeats report the watched version")
}

// streamingController counts how heartbeats arrive, and ends the first
// heartbeat stream with an error after a few.
type streamingController struct {
	fakeController
	unary, streams, streamed atomic.Int64
	// frozen: streams take heartbeats and never answer, as a controller
	// whose disk stalled (its HTTP/2 server still answers pings).
	frozen bool
}

func (f *streamingController) StorageHeartbeat(context.Context, *connect.Request[metadatav1.StorageHeartbeatRequest]) (*connect.Response[metadatav1.StorageHeartbeatResponse], error) {
	f.unary.Add(1)
	return connect.NewResponse(&metadatav1.StorageHeartbeatResponse{Registered: true}), nil
}

func (f *streamingController) StorageHeartbeats(ctx context.Context, stream *connect.BidiStream[metadatav1.StorageHeartbeatRequest, metadatav1.StorageHeartbeatResponse]) error {
	first := f.streams.Add(1) == 1
	for i := 0; ; i++ {
		if _, err := stream.Receive(); err != nil {
			return nil
		}
		if f.frozen {
			<-ctx.Done()
			return nil
		}
		if first && i == 5 {
			return connect.NewError(connect.CodeUnavailable, errors.New("leader changed"))
		}
		f.streamed.Add(1)
		if err := stream.Send(&metadatav1.StorageHeartbeatResponse{Registered: true}); err != nil {
			return nil
		}
	}
}

// An agent's heartbeats after the first travel on one stream: a call per
// heartbeat per second would bound how many services a leader keeps alive.
// A stream that fails is replaced after one heartbeat goes as a call.
func TestAgentHeartbeatsOnOneStream(t *testing.T) {
	fake := &streamingController{}
	cancel, stopped := runHeartbeatingAgent(t, fake)
	require.Eventually(t, func() bool { return fake.streamed.Load() >= 30 }, 10*time.Second, 5*time.Millisecond)
	cancel()
	require.ErrorIs(t, <-stopped, context.Canceled)
	// A call goes first, and after each stream that failed (the one
	// ended here, and any a slow machine timed out); the rest stream.
	assert.GreaterOrEqual(t, fake.streams.Load(), int64(2), "the failed stream was replaced")
	assert.Greater(t, fake.streamed.Load(), 5*fake.unary.Load(), "most heartbeats went on streams")
}

// A stream to a controller that takes heartbeats and never answers costs
// an agent half of each heartbeat's time, not all of it: the call after it
// still reaches a controller (found by review: the stream took the whole
// deadline, and a frozen leader kept every broker of its agents from
// heartbeating anywhere).
func TestAgentHeartbeatsPastAFrozenStream(t *testing.T) {
	fake := &streamingController{frozen: true}
	cancel, stopped := runHeartbeatingAgent(t, fake)
	require.Eventually(t, func() bool { return fake.unary.Load() >= 10 }, 10*time.Second, 5*time.Millisecond,
		"heartbeats reach the controller by call once the stream froze")
	cancel()
	require.ErrorIs(t, <-stopped, context.Canceled)
	assert.Zero(t, fake.streamed.Load())
	// Each heartbeat lost on a frozen stream was sent again by call, in
	// time: with the stream holding the whole deadline, about half were.
	assert.GreaterOrEqual(t, fake.unary.Load(), fake.streams.Load(), "a call after every frozen stream")
}

// staleWatchController serves a first watch that stops at version 5 and
// stays open (a controller cut off from the others), later watches up to
// date at 9, and heartbeats that say the leader is at 9.
type staleWatchController struct {
	fakeController
	watches atomic.Int64
}

func (f *staleWatchController) StorageHeartbeat(context.Context, *connect.Request[metadatav1.StorageHeartbeatRequest]) (*connect.Response[metadatav1.StorageHeartbeatResponse], error) {
	return connect.NewResponse(&metadatav1.StorageHeartbeatResponse{Registered: true, MetadataVersion: 9}), nil
}

func (f *staleWatchController) WatchMetadata(ctx context.Context, req *connect.Request[metadatav1.WatchMetadataRequest], stream *connect.ServerStream[metadatav1.WatchMetadataResponse]) error {
	version := int64(9)
	if f.watches.Add(1) == 1 {
		version = 5
	}
	if req.Msg.GetSinceVersion() < version {
		if err := stream.Send(&metadatav1.WatchMetadataResponse{Update: &metadatav1.WatchMetadataResponse_FullState{
			FullState: &metadatav1.ClusterState{MetadataVersion: version}}}); err != nil {
			return err
		}
	}
	<-ctx.Done()
	return nil
}

// A watching agent whose view stands still behind the version its
// heartbeats report watches again, and catches up (found by review: a
// watch on a controller cut off from the others stays open, and the agent
// kept old metadata, fenced for good).
func TestWatchingAgentLeavesAStaleWatch(t *testing.T) {
	fake := &staleWatchController{}
	c := clientOf(t, fake, client.Config{})
	agent, err := client.NewStorageAgent(c, client.AgentConfig{BrokerID: 1, Host: "localhost", Port: 9092,
		IncarnationID: "a", HeartbeatInterval: 10 * time.Millisecond, Watch: true})
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { _ = agent.Run(ctx) }()
	require.Eventually(t, func() bool { return agent.Version() == 9 }, 10*time.Second, 5*time.Millisecond,
		"the agent left the watch that stood still at 5")
}

// clientOf serves handler over HTTP/2 with TLS and returns a client of it
// configured as cfg otherwise.
func clientOf(t *testing.T, handler metadatav1connect.MetadataServiceHandler, cfg client.Config) *client.Client {
	t.Helper()
	mux := http.NewServeMux()
	mux.Handle(metadatav1connect.NewMetadataServiceHandler(handler))
	server := httptest.NewUnstartedServer(mux)
	server.EnableHTTP2 = true
	server.StartTLS()
	t.Cleanup(server.Close)
	cfg.Endpoints, cfg.HTTPClient = []string{server.URL}, server.Client()
	c, err := client.New(cfg)
	require.NoError(t, err)
	return c
}

// runHeartbeatingAgent runs an agent heartbeating every 20 ms to fake
// until cancel; Run's error arrives on stopped.
func runHeartbeatingAgent(t *testing.T, fake *streamingController) (cancel context.CancelFunc, stopped <-chan error) {
	c := clientOf(t, fake, client.Config{})
	agent, err := client.NewStorageAgent(c, client.AgentConfig{BrokerID: 1, Host: "localhost", Port: 9092,
		IncarnationID: "a", HeartbeatInterval: 20 * time.Millisecond})
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	result := make(chan error, 1)
	go func() { result <- agent.Run(ctx) }()
	return cancel, result
}
