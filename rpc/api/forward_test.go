package api

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptrace"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"connectrpc.com/connect"
	metadatav1 "github.com/dmq-project/metadata/gen/dmq/metadata/v1"
	"github.com/dmq-project/metadata/gen/dmq/metadata/v1/metadatav1connect"
	"github.com/dmq-project/metadata/wire"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// refusingController answers every CreateTopic "not the controller",
// naming leader (id 1) at leaderURL, and counts the calls it saw.
type refusingController struct {
	metadatav1connect.UnimplementedMetadataServiceHandler
	leaderURL string
	calls     atomic.Int32
	forwarded atomic.Value // the last call's wire.ForwardedByHeader
	token     atomic.Value // the last call's Authorization
}

func (c *refusingController) CreateTopic(_ context.Context, req *connect.Request[metadatav1.CreateTopicRequest]) (*connect.Response[metadatav1.CreateTopicResponse], error) {
	c.calls.Add(1)
	c.forwarded.Store(req.Header().Get(wire.ForwardedByHeader))
	c.token.Store(req.Header().Get("Authorization"))
	return nil, wire.NewError(metadatav1.ErrorCode_NOT_CONTROLLER, "not the controller", 1, c.leaderURL)
}

// answeringLeader creates every topic it is asked for at version 7.
type answeringLeader struct {
	refusingController
}

func (l *answeringLeader) CreateTopic(_ context.Context, req *connect.Request[metadatav1.CreateTopicRequest]) (*connect.Response[metadatav1.CreateTopicResponse], error) {
	l.calls.Add(1)
	l.forwarded.Store(req.Header().Get(wire.ForwardedByHeader))
	l.token.Store(req.Header().Get("Authorization"))
	if req.Msg.GetName() == "taken" {
		return nil, wire.NewError(metadatav1.ErrorCode_TOPIC_ALREADY_EXISTS, "topic taken exists", 0, "")
	}
	return connect.NewResponse(&metadatav1.CreateTopicResponse{Topic: &metadatav1.Topic{Name: req.Msg.GetName()}, MetadataVersion: 7}), nil
}

// follower serves a refusing controller (id 2) behind a Forwarder.
// forwardResults are the results a Forwarder observed.
type forwardResults struct {
	mu   sync.Mutex
	seen []string
}

func (r *forwardResults) add(result string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.seen = append(r.seen, result)
}

func (r *forwardResults) get() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.seen)
}

func follower(t *testing.T, leaderURL string) (*refusingController, metadatav1connect.MetadataServiceClient, *forwardResults) {
	impl := &refusingController{leaderURL: leaderURL}
	results := &forwardResults{}
	fwd := &Forwarder{Self: 2, ClusterID: "c1", Client: wire.NewHTTPClient(nil), Observe: results.add}
	path, handler := metadatav1connect.NewMetadataServiceHandler(impl, connect.WithInterceptors(fwd))
	mux := http.NewServeMux()
	mux.Handle(path, handler)
	return impl, metadatav1connect.NewMetadataServiceClient(wire.NewHTTPClient(nil), serveH2C(t, mux)), results
}

// serveH2C serves handler as a controller does (HTTP/1.1 and h2c).
func serveH2C(t *testing.T, handler http.Handler) string {
	listener, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	srv := wire.NewHTTPServer(listener.Addr().String(), handler)
	go func() { _ = srv.Serve(listener) }()
	t.Cleanup(func() { _ = srv.Close() })
	return "http://" + listener.Addr().String()
}

func serve(t *testing.T, impl metadatav1connect.MetadataServiceHandler, options ...connect.HandlerOption) string {
	path, handler := metadatav1connect.NewMetadataServiceHandler(impl, options...)
	mux := http.NewServeMux()
	mux.Handle(path, handler)
	return serveH2C(t, mux)
}

func createTopic(name string) *connect.Request[metadatav1.CreateTopicRequest] {
	req := connect.NewRequest(&metadatav1.CreateTopicRequest{Name: name, Partitions: 1})
	req.Header().Set("Authorization", "Bearer t0ken")
	return req
}

func TestForwardRelaysTheLeadersAnswer(t *testing.T) {
	leader := &answeringLeader{}
	impl, c, results := follower(t, serve(t, leader))
	res, err := c.CreateTopic(context.Background(), createTopic("orders"))
	require.NoError(t, err)
	assert.Equal(t, "orders", res.Msg.GetTopic().GetName())
	assert.Equal(t, int64(7), res.Msg.GetMetadataVersion())
	assert.Equal(t, int32(1), impl.calls.Load())
	assert.Equal(t, int32(1), leader.calls.Load())
	assert.Equal(t, "2", leader.forwarded.Load(), "the leader learns who forwarded")
	assert.Equal(t, "Bearer t0ken", leader.token.Load(), "the leader authenticates the client's own token")

	// The leader's refusal is the answer, with its code.
	_, err = c.CreateTopic(context.Background(), createTopic("taken"))
	assert.Equal(t, connect.CodeAlreadyExists, connect.CodeOf(err))
	assert.Equal(t, metadatav1.ErrorCode_TOPIC_ALREADY_EXISTS, wire.ErrorCodeOf(err))
	assert.Equal(t, []string{ForwardAnswered, ForwardAnswered}, results.get())
}

func TestForwardedCallIsNotForwardedAgain(t *testing.T) {
	// Two controllers naming each other the leader: the call goes once,
	// and the second one's refusal comes back.
	second := &refusingController{}
	secondURL := serve(t, second)
	impl, c, results := follower(t, secondURL)
	second.leaderURL = "http://127.0.0.1:1" // it names another leader in turn
	_, err := c.CreateTopic(context.Background(), createTopic("orders"))
	assert.Equal(t, metadatav1.ErrorCode_NOT_CONTROLLER, wire.ErrorCodeOf(err))
	assert.Equal(t, int32(1), impl.calls.Load())
	assert.Equal(t, int32(1), second.calls.Load())
	assert.Equal(t, []string{ForwardAnswered}, results.get())

	// A call marked forwarded is refused where it lands, not passed on.
	req := createTopic("orders")
	req.Header().Set(wire.ForwardedByHeader, "3")
	_, err = c.CreateTopic(context.Background(), req)
	assert.Equal(t, metadatav1.ErrorCode_NOT_CONTROLLER, wire.ErrorCodeOf(err))
	id, url, ok := wire.LeaderOf(err)
	require.True(t, ok)
	assert.Equal(t, uint64(1), id)
	assert.Equal(t, secondURL, url, "the refusal names the leader as this controller knows it")
	assert.Equal(t, int32(2), impl.calls.Load())
	assert.Equal(t, int32(1), second.calls.Load())
}

func TestForwardToAnUnreachableLeaderLeavesTheRefusal(t *testing.T) {
	// Nothing listens: nothing reached a leader, so the write was proposed
	// nowhere and the client may send it elsewhere as it stands.
	listener, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	closed := "http://" + listener.Addr().String()
	require.NoError(t, listener.Close())
	_, c, results := follower(t, closed)
	_, err = c.CreateTopic(context.Background(), createTopic("orders"))
	assert.Equal(t, metadatav1.ErrorCode_NOT_CONTROLLER, wire.ErrorCodeOf(err))
	_, url, _ := wire.LeaderOf(err)
	assert.Equal(t, closed, url)
	assert.Equal(t, []string{ForwardUnsent}, results.get())
}

func TestForwardWithoutAnAnswerIsAnUnknownOutcome(t *testing.T) {
	// The leader takes the call and never answers: it may have applied
	// it. The answer must not be NOT_CONTROLLER, which a client takes for
	// "not applied" (client.JudgeWrite), but an unknown outcome.
	release := make(chan struct{})
	hanging := serveH2C(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		<-release
	}))
	t.Cleanup(func() { close(release) })
	_, c, results := follower(t, hanging)
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	_, err := c.CreateTopic(ctx, createTopic("orders"))
	require.True(t, connect.IsWireError(err), "the follower answers before the client's deadline: %v", err)
	assert.Equal(t, connect.CodeUnavailable, connect.CodeOf(err))
	assert.Equal(t, metadatav1.ErrorCode_UNKNOWN_OUTCOME, wire.ErrorCodeOf(err))
	require.Eventually(t, func() bool { return len(results.get()) == 1 }, 5*time.Second, 10*time.Millisecond)
	assert.Equal(t, []string{ForwardUnknown}, results.get())
}

func (c *refusingController) BrokerHeartbeat(context.Context, *connect.Request[metadatav1.BrokerHeartbeatRequest]) (*connect.Response[metadatav1.StorageHeartbeatResponse], error) {
	c.calls.Add(1)
	return nil, wire.NewError(metadatav1.ErrorCode_NOT_CONTROLLER, "not the controller", 1, c.leaderURL)
}

func TestHeartbeatsAreNotForwarded(t *testing.T) {
	// A broker that reaches only a follower must not look alive to the
	// leader: it follows the hint instead.
	leader := &answeringLeader{}
	impl, c, results := follower(t, serve(t, leader))
	_, err := c.BrokerHeartbeat(context.Background(), connect.NewRequest(&metadatav1.BrokerHeartbeatRequest{BrokerId: 7}))
	assert.Equal(t, metadatav1.ErrorCode_NOT_CONTROLLER, wire.ErrorCodeOf(err))
	assert.Equal(t, int32(1), impl.calls.Load())
	assert.Equal(t, int32(0), leader.calls.Load())
	assert.Empty(t, results.get())
}

func TestForwardsOnlyNotControllerNamingAnother(t *testing.T) {
	create := metadatav1connect.MetadataServiceCreateTopicProcedure
	assert.True(t, wire.Forwards(create, metadatav1.ErrorCode_NOT_CONTROLLER, 2, 1, false))
	assert.False(t, wire.Forwards(create, metadatav1.ErrorCode_NOT_CONTROLLER, 2, 1, true), "already forwarded")
	assert.False(t, wire.Forwards(create, metadatav1.ErrorCode_NOT_CONTROLLER, 2, 0, false), "no leader known")
	assert.False(t, wire.Forwards(create, metadatav1.ErrorCode_NOT_CONTROLLER, 2, 2, false), "names itself")
	assert.False(t, wire.Forwards(create, metadatav1.ErrorCode_UNKNOWN_OUTCOME, 2, 1, false), "may have been proposed here")
	assert.False(t, wire.Forwards(metadatav1connect.MetadataServiceStorageHeartbeatProcedure, metadatav1.ErrorCode_NOT_CONTROLLER, 2, 1, false))
	assert.Equal(t, metadatav1.ErrorCode_NOT_CONTROLLER, wire.ForwardFailed(false))
	assert.Equal(t, metadatav1.ErrorCode_UNKNOWN_OUTCOME, wire.ForwardFailed(true))
}

func (c *refusingController) RegisterBroker(context.Context, *connect.Request[metadatav1.RegisterBrokerRequest]) (*connect.Response[metadatav1.RegisterBrokerResponse], error) {
	c.calls.Add(1)
	return nil, wire.NewError(metadatav1.ErrorCode_NOT_CONTROLLER, "not the controller", 1, c.leaderURL)
}

func TestBrokerRegistrationIsNotForwarded(t *testing.T) {
	// Registering refreshes the broker's session and may give it back
	// leaderships: a broker that reaches only a follower must not.
	leader := &answeringLeader{}
	impl, c, results := follower(t, serve(t, leader))
	_, err := c.RegisterBroker(context.Background(), connect.NewRequest(&metadatav1.RegisterBrokerRequest{Id: 7, Host: "h", Port: 1}))
	assert.Equal(t, metadatav1.ErrorCode_NOT_CONTROLLER, wire.ErrorCodeOf(err))
	assert.Equal(t, int32(1), impl.calls.Load())
	assert.Equal(t, int32(0), leader.calls.Load())
	assert.Empty(t, results.get())
}

// roundTripFunc is an http.RoundTripper.
type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

func TestForwardOnAConnectionIsAnUnknownOutcome(t *testing.T) {
	// A connection to the leader was had, and the call failed while its
	// headers were being written: with an empty body (TransferLeader, a
	// REST {}) the headers alone are the whole call, and the leader may
	// run it. Only a failure to connect at all leaves the refusal.
	impl := &refusingController{leaderURL: "http://leader.invalid:8080"}
	results := &forwardResults{}
	connected := roundTripFunc(func(r *http.Request) (*http.Response, error) {
		if trace := httptrace.ContextClientTrace(r.Context()); trace != nil && trace.GotConn != nil {
			trace.GotConn(httptrace.GotConnInfo{})
		}
		return nil, errors.New("connection reset while the headers were written")
	})
	fwd := &Forwarder{Self: 2, ClusterID: "c1", Client: &http.Client{Transport: connected}, Observe: results.add}
	path, handler := metadatav1connect.NewMetadataServiceHandler(impl, connect.WithInterceptors(fwd))
	mux := http.NewServeMux()
	mux.Handle(path, handler)
	c := metadatav1connect.NewMetadataServiceClient(wire.NewHTTPClient(nil), serveH2C(t, mux))
	_, err := c.CreateTopic(context.Background(), createTopic("orders"))
	assert.Equal(t, metadatav1.ErrorCode_UNKNOWN_OUTCOME, wire.ErrorCodeOf(err))
	assert.Equal(t, []string{ForwardUnknown}, results.get())
}

func TestRelayedRefusalKeepsTheLeaderHint(t *testing.T) {
	// The controller forwarded to is no longer the leader: its refusal,
	// relayed, still names the leader in headers (REST and seed clients
	// read those) as well as in details.
	second := &refusingController{leaderURL: "http://controller-3:8080"}
	_, c, _ := follower(t, serve(t, second))
	_, err := c.CreateTopic(context.Background(), createTopic("orders"))
	require.Equal(t, metadatav1.ErrorCode_NOT_CONTROLLER, wire.ErrorCodeOf(err))
	_, url, ok := wire.LeaderOf(err)
	require.True(t, ok)
	assert.Equal(t, "http://controller-3:8080", url)
	var ce *connect.Error
	require.True(t, errors.As(err, &ce))
	assert.Equal(t, "http://controller-3:8080", ce.Meta().Get(wire.LeaderURLHeader))
	assert.Equal(t, "1", ce.Meta().Get(wire.SeedLeaderHeader))
}

func TestForwardToAURLWithATrailingSlash(t *testing.T) {
	leader := &answeringLeader{}
	_, c, results := follower(t, serve(t, leader)+"/")
	_, err := c.CreateTopic(context.Background(), createTopic("orders"))
	require.NoError(t, err)
	assert.Equal(t, []string{ForwardAnswered}, results.get())
}

func TestForwardToAnotherClusterIsRefused(t *testing.T) {
	// The leader's address now answers for another cluster (an address
	// reused): it refuses the call before running it.
	leader := &answeringLeader{}
	other := &Forwarder{Self: 1, ClusterID: "c2", Client: wire.NewHTTPClient(nil)}
	_, c, _ := follower(t, serve(t, leader, connect.WithInterceptors(other)))
	_, err := c.CreateTopic(context.Background(), createTopic("orders"))
	require.Error(t, err)
	assert.Equal(t, metadatav1.ErrorCode_UNAVAILABLE, wire.ErrorCodeOf(err), "another attempt may reach the leader")
	assert.Contains(t, err.Error(), `cluster "c2"`)
	assert.Equal(t, int32(0), leader.calls.Load())
}
