package api

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptrace"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"connectrpc.com/connect"
	metadatav1 "github.com/dmq-project/metadata/gen/dmq/metadata/v1"
	"github.com/dmq-project/metadata/wire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
)

// forwardTimeoutMax bounds a forwarded call that carries no deadline of
// its own (a curl without --max-time): the leader answers a write within
// its request timeout, so a longer wait means it never will.
const forwardTimeoutMax = 30 * time.Second

// forwardClientsMax bounds the cached clients (one per leader URL and
// procedure): leaders change rarely, and a cache past the bound starts
// over rather than grow with every address ever named.
const forwardClientsMax = 512

// Forwarder passes unary calls a follower refused NOT_CONTROLLER to the
// leader the refusal names, once, and answers with the leader's answer, so
// that a client that reaches any controller (curl against the one port it
// knows, a client outside the controllers' network that cannot reach the
// leader's address) gets its call served. wire.Forwards decides which
// calls go; wire.ForwardFailed what a failed forward answers.
//
// The call goes as the client sent it (its message and Authorization; its
// deadline as Connect's timeout header), marked with
// wire.ForwardedByHeader, over the controller's peer client (its TLS
// certificate, the peer CA). The leader authenticates and authorises it
// again; streams (WatchMetadata, StorageHeartbeats) and heartbeats are
// never forwarded.
type Forwarder struct {
	// Self is this controller's id; ClusterID its cluster's.
	Self      uint64
	ClusterID string
	// Client dials the leader: the peer HTTP client.
	Client *http.Client
	// HTTPS: the leader's URL (a peer URL, possibly http://) is dialled
	// over TLS.
	HTTPS bool
	// Observe, if set, counts each forward by result.
	Observe func(result string)

	mu      sync.Mutex
	clients map[string]*connect.Client[forwardedMessage, forwardedMessage]
}

// Results of a forward, as counted.
const (
	ForwardAnswered = "answered"
	ForwardUnsent   = "unsent"
	ForwardUnknown  = "unknown_outcome"
)

// forwardedMessage carries any request or response message through a
// client typed once for every procedure: its pointer is a proto.Message
// (ProtoReflect is the carried message's), which is all the codecs need.
type forwardedMessage struct{ proto.Message }

// WrapUnary forwards a refused call; everything else passes untouched.
func (f *Forwarder) WrapUnary(next connect.UnaryFunc) connect.UnaryFunc {
	return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
		forwarded := req.Header().Get(wire.ForwardedByHeader) != ""
		if cluster := req.Header().Get(wire.ForwardedClusterHeader); forwarded && cluster != "" && cluster != f.ClusterID {
			// The forwarder's leader address answers for another cluster
			// now (an address reused): nothing may run here.
			return nil, wire.NewError(metadatav1.ErrorCode_UNAVAILABLE, fmt.Sprintf(
				"controller %s of cluster %q forwarded this call to controller %d of cluster %q: its leader address is stale; nothing was done",
				req.Header().Get(wire.ForwardedByHeader), cluster, f.Self, f.ClusterID), 0, "")
		}
		res, err := next(ctx, req)
		if err == nil || req.Spec().IsClient {
			return res, err
		}
		leaderID, leaderURL, ok := wire.LeaderOf(err)
		if !ok || leaderURL == "" || !wire.Forwards(req.Spec().Procedure, wire.ErrorCodeOf(err), f.Self, leaderID, forwarded) {
			return res, err
		}
		return f.forward(ctx, req, leaderID, leaderURL, err)
	}
}

// WrapStreamingClient is not used on the server side.
func (f *Forwarder) WrapStreamingClient(next connect.StreamingClientFunc) connect.StreamingClientFunc {
	return next
}

// WrapStreamingHandler leaves streams alone: a watch is served by any
// controller from its applied state.
func (f *Forwarder) WrapStreamingHandler(next connect.StreamingHandlerFunc) connect.StreamingHandlerFunc {
	return next
}

func (f *Forwarder) forward(ctx context.Context, req connect.AnyRequest, leaderID uint64, leaderURL string, refusal error) (connect.AnyResponse, error) {
	message, ok := req.Any().(proto.Message)
	method, isMethod := req.Spec().Schema.(protoreflect.MethodDescriptor)
	if !ok || !isMethod {
		return nil, refusal
	}
	leaderURL = strings.TrimRight(leaderURL, "/")
	if f.HTTPS {
		leaderURL = wire.HTTPSURL(leaderURL)
	}
	c, err := f.client(leaderURL, req.Spec().Procedure, method)
	if err != nil {
		return nil, refusal
	}
	// The leader gets the client's deadline less a margin, so that the
	// client hears this controller's answer rather than its own timeout.
	timeout := forwardTimeoutMax
	if deadline, has := ctx.Deadline(); has {
		left := time.Until(deadline)
		timeout = min(timeout, wire.ForwardTimeout(left))
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	// Whether any of the call may have reached the leader: from the moment
	// a connection is had, its headers may be on their way, and a call with
	// an empty body is whole in its headers (the HTTP/2 client writes them
	// on a goroutine of its own, which a deadline does not stop).
	var connected atomic.Bool
	ctx = httptrace.WithClientTrace(ctx, &httptrace.ClientTrace{GotConn: func(httptrace.GotConnInfo) { connected.Store(true) }})
	out := connect.NewRequest(&forwardedMessage{message})
	if token := req.Header().Get("Authorization"); token != "" {
		out.Header().Set("Authorization", token)
	}
	out.Header().Set(wire.ForwardedByHeader, strconv.FormatUint(f.Self, 10))
	out.Header().Set(wire.ForwardedClusterHeader, f.ClusterID)
	out.Header().Set(wire.ForwardedForHeader, req.Peer().Addr)
	res, err := c.CallUnary(ctx, out)
	switch {
	case err == nil:
		f.observe(ForwardAnswered)
		return connect.NewResponse(res.Msg), nil
	case connect.IsWireError(err):
		// The leader's own answer, a refusal included (its NOT_CONTROLLER
		// too: it proposed nothing either).
		f.observe(ForwardAnswered)
		return nil, relayed(err)
	case wire.ForwardFailed(connected.Load()) == metadatav1.ErrorCode_NOT_CONTROLLER:
		f.observe(ForwardUnsent)
		return nil, refusal
	default:
		f.observe(ForwardUnknown)
		return nil, wire.NewError(metadatav1.ErrorCode_UNKNOWN_OUTCOME,
			fmt.Sprintf("forwarded to the leader, controller %d at %s, which did not answer (%v): the call may or may not have been applied",
				leaderID, leaderURL, err), 0, "")
	}
}

// relayedHeaders are the headers of the leader's refusal that its relay
// keeps: the leader hint (REST and seed clients read the headers) and when
// to retry.
var relayedHeaders = []string{wire.LeaderIDHeader, wire.LeaderURLHeader, wire.SeedLeaderHeader, "Retry-After"}

// relayed is the leader's refusal as this controller's own: connect does
// not send the headers of an error that came from the wire.
func relayed(err error) error {
	var ce *connect.Error
	if !errors.As(err, &ce) {
		return err
	}
	out := connect.NewError(ce.Code(), errors.New(ce.Message()))
	for _, detail := range ce.Details() {
		out.AddDetail(detail)
	}
	for _, header := range relayedHeaders {
		for _, value := range ce.Meta().Values(header) {
			out.Meta().Add(header, value)
		}
	}
	return out
}

func (f *Forwarder) observe(result string) {
	if f.Observe != nil {
		f.Observe(result)
	}
}

// client is the cached client of one procedure at one leader URL.
func (f *Forwarder) client(leaderURL, procedure string, method protoreflect.MethodDescriptor) (*connect.Client[forwardedMessage, forwardedMessage], error) {
	key := leaderURL + procedure
	f.mu.Lock()
	defer f.mu.Unlock()
	if c, ok := f.clients[key]; ok {
		return c, nil
	}
	output, err := protoregistry.GlobalTypes.FindMessageByName(method.Output().FullName())
	if err != nil {
		return nil, err
	}
	if f.clients == nil || len(f.clients) >= forwardClientsMax {
		f.clients = map[string]*connect.Client[forwardedMessage, forwardedMessage]{}
	}
	c := connect.NewClient[forwardedMessage, forwardedMessage](f.Client, leaderURL+procedure,
		connect.WithSchema(method),
		connect.WithResponseInitializer(func(_ connect.Spec, message any) error {
			message.(*forwardedMessage).Message = output.New().Interface()
			return nil
		}))
	f.clients[key] = c
	return c, nil
}
