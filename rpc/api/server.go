package api

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"connectrpc.com/connect"
	metadatav1 "github.com/dmq-project/metadata/gen/dmq/metadata/v1"
	"github.com/dmq-project/metadata/gen/dmq/metadata/v1/metadatav1connect"
	"github.com/dmq-project/metadata/node"
	"github.com/dmq-project/metadata/node/runner"
	"github.com/dmq-project/metadata/rpc/auth"
	"github.com/dmq-project/metadata/rpc/metrics"
	"github.com/dmq-project/metadata/statemachine"
	"github.com/dmq-project/metadata/wire"
)

// Server implements MetadataService and QuorumService over a node runner.
// Handlers are thin: validate the envelope, hand the request to the node's
// goroutine, translate the outcome. Every decision is the node's.
type Server struct {
	runner *runner.Runner
	// requestTimeout bounds a request that the caller's context does not.
	requestTimeout time.Duration
	metrics        *metrics.Metrics
	// https: the cluster serves TLS, so leader hints name https:// URLs.
	https bool
	// askIdentity asks a controller at a URL who it is (its identity
	// endpoint): an added controller's directory is recorded with it.
	askIdentity func(ctx context.Context, p node.Peer) (node.FoundingAnswer, error)
	// seedClusterView: see ServerConfig.SeedClusterView.
	seedClusterView bool
	// probes answers health checks, which anyone may send, from at most
	// one node call per probeFreshness.
	probes probeCache
	// watches serves the WatchMetadata streams.
	watches *watchHub
}

var (
	_ metadatav1connect.MetadataServiceHandler = (*Server)(nil)
	_ metadatav1connect.QuorumServiceHandler   = (*Server)(nil)
)

// ServerConfig is what a Server needs besides the node.
type ServerConfig struct {
	// Metrics counts proposals and heartbeats.
	Metrics *metrics.Metrics
	// HTTPS says the cluster serves TLS, so that leader hints name
	// https:// URLs.
	HTTPS bool
	// AskIdentity, if set, asks a controller at a URL who it is (its
	// identity endpoint): AddVoter and AddLearner record the added
	// controller's directory with it. Without it, a controller is added
	// without its directory.
	AskIdentity func(ctx context.Context, p node.Peer) (node.FoundingAnswer, error)
	// SeedClusterView makes GET /api/v1/metadata/cluster answer in the
	// seed's shape (GetSeedClusterMetadata) unless asked ?view=dmq; else
	// it answers GetClusterMetadata unless asked ?view=seed.
	SeedClusterView bool
}

// NewServer serves the node run by r.
func NewServer(r *runner.Runner, cfg ServerConfig) *Server {
	return &Server{runner: r, requestTimeout: 10 * time.Second, metrics: cfg.Metrics, https: cfg.HTTPS, askIdentity: cfg.AskIdentity,
		seedClusterView: cfg.SeedClusterView, watches: newWatchHub(r)}
}

func (s *Server) context(ctx context.Context) (context.Context, context.CancelFunc) {
	if _, ok := ctx.Deadline(); ok {
		return context.WithCancel(ctx)
	}
	return context.WithTimeout(ctx, s.requestTimeout)
}

// result is what a request's completion carries back from the node's
// goroutine: the outcome, the leader hint, and whatever the handler read
// from the state at that moment.
type result[T any] struct {
	err       *statemachine.Error
	leaderID  uint64
	leaderURL string
	value     T
}

// callNode runs start on the node goroutine and waits for its completion.
func callNode[T any](s *Server, ctx context.Context, start func(n *node.Node, done func(result[T]))) (result[T], error) {
	ctx, cancel := s.context(ctx)
	defer cancel()
	return callNodeIn(ctx, s, start)
}

// callNodeIn is callNode under the caller's context alone, which must be
// bounded (the messages of a stream are bounded by the stream: no timer
// per heartbeat).
func callNodeIn[T any](ctx context.Context, s *Server, start func(n *node.Node, done func(result[T]))) (result[T], error) {
	r, err := runner.Call(ctx, s.runner, start)
	if err != nil {
		if errors.Is(err, context.DeadlineExceeded) {
			return r, connect.NewError(connect.CodeDeadlineExceeded,
				errors.New("the request did not complete in time; a write may still be applied: retry with the same request id"))
		}
		if errors.Is(err, runner.ErrStopped) {
			return r, connect.NewError(connect.CodeUnavailable, errors.New("this controller is shutting down"))
		}
		return r, connect.NewError(connect.CodeCanceled, err)
	}
	if r.err != nil {
		if s.https {
			r.leaderURL = wire.HTTPSURL(r.leaderURL)
		}
		return r, toConnectError(r.err, r.leaderID, r.leaderURL)
	}
	return r, nil
}

// propose runs a write and, on success, reads what the response needs from
// the state right after the write applied.
func propose[T any](s *Server, ctx context.Context, kind string, start func(n *node.Node, done func(node.Outcome)), read func(n *node.Node, o node.Outcome) T) (result[T], node.Outcome, error) {
	var outcome node.Outcome
	r, err := callNode(s, ctx, func(n *node.Node, done func(result[T])) {
		start(n, func(o node.Outcome) {
			outcome = o
			r := result[T]{err: o.Err, leaderID: o.LeaderID, leaderURL: n.PeerURL(o.LeaderID)}
			if o.Err == nil && read != nil {
				r.value = read(n, o)
			}
			done(r)
		})
	})
	s.metrics.ObserveProposal(kind, err)
	return r, outcome, err
}

// readState serves a read: linearizable (ReadIndex) unless stale is allowed.
func readState[T any](s *Server, ctx context.Context, stale bool, read func(sm *statemachine.StateMachine) (T, *statemachine.Error)) (T, error) {
	return readNodeState(s, ctx, stale, func(_ *node.Node, sm *statemachine.StateMachine) (T, *statemachine.Error) { return read(sm) })
}

// readNodeState is readState for a reader that also asks the node (its
// leader, its term), on the node's goroutine.
func readNodeState[T any](s *Server, ctx context.Context, stale bool, read func(n *node.Node, sm *statemachine.StateMachine) (T, *statemachine.Error)) (T, error) {
	r, err := callNode(s, ctx, func(n *node.Node, done func(result[T])) {
		serve := func(sm *statemachine.StateMachine, err *statemachine.Error) {
			r := result[T]{err: err, leaderID: n.Leader(), leaderURL: n.PeerURL(n.Leader())}
			if err == nil {
				r.value, r.err = read(n, sm)
			}
			done(r)
		}
		if stale {
			n.ReadStale(func(sm *statemachine.StateMachine) { serve(sm, nil) })
		} else {
			n.Read(serve)
		}
	})
	return r.value, err
}

func unknownTopic(name string) *statemachine.Error {
	return &statemachine.Error{Code: metadatav1.ErrorCode_UNKNOWN_TOPIC, Message: fmt.Sprintf("topic %q does not exist", name)}
}

func unknownBroker(id int32) *statemachine.Error {
	return &statemachine.Error{Code: metadatav1.ErrorCode_UNKNOWN_BROKER, Message: fmt.Sprintf("broker %d is not registered", id)}
}

// RegisterBroker implements MetadataService.
func (s *Server) RegisterBroker(ctx context.Context, req *connect.Request[metadatav1.RegisterBrokerRequest]) (*connect.Response[metadatav1.RegisterBrokerResponse], error) {
	r, o, err := propose(s, ctx, "register_broker", func(n *node.Node, done func(node.Outcome)) { n.RegisterBroker(req.Msg, done) },
		func(n *node.Node, o node.Outcome) *metadatav1.Broker {
			// The broker as it is now, with the epoch of this very
			// registration: a retry answered from the session table must
			// not hand the caller another registration's epoch (or none).
			b := n.StateMachine().Broker(req.Msg.GetId())
			if b == nil || b.GetBrokerEpoch() != o.BrokerEpoch {
				b = &metadatav1.Broker{Id: req.Msg.GetId(), Host: req.Msg.GetHost(), Port: req.Msg.GetPort(), Rack: req.Msg.GetRack(),
					BrokerEpoch: o.BrokerEpoch}
			}
			return b
		})
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&metadatav1.RegisterBrokerResponse{Broker: r.value, Success: true,
		ErrorCode: metadatav1.ErrorCode_NONE.Enum(), MetadataVersion: o.Version}), nil
}

// UnregisterBroker implements MetadataService.
func (s *Server) UnregisterBroker(ctx context.Context, req *connect.Request[metadatav1.UnregisterBrokerRequest]) (*connect.Response[metadatav1.UnregisterBrokerResponse], error) {
	_, o, err := propose[struct{}](s, ctx, "unregister_broker", func(n *node.Node, done func(node.Outcome)) { n.UnregisterBroker(req.Msg, done) }, nil)
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&metadatav1.UnregisterBrokerResponse{Success: true, ErrorCode: metadatav1.ErrorCode_NONE.Enum(), MetadataVersion: o.Version}), nil
}

// OpenSession implements MetadataService.
func (s *Server) OpenSession(ctx context.Context, req *connect.Request[metadatav1.OpenSessionRequest]) (*connect.Response[metadatav1.OpenSessionResponse], error) {
	r, o, err := propose(s, ctx, "open_session", func(n *node.Node, done func(node.Outcome)) { n.OpenSession(req.Msg, done) },
		func(n *node.Node, _ node.Outcome) time.Duration { return n.ClientSessionTimeout() })
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&metadatav1.OpenSessionResponse{
		SessionId: uint64(o.Version), TimeoutMs: r.value.Milliseconds(), MetadataVersion: o.Version}), nil
}

// ListBrokers implements MetadataService.
func (s *Server) ListBrokers(ctx context.Context, req *connect.Request[metadatav1.ListBrokersRequest]) (*connect.Response[metadatav1.ListBrokersResponse], error) {
	resp, err := readState(s, ctx, req.Msg.GetAllowStale(), func(sm *statemachine.StateMachine) (*metadatav1.ListBrokersResponse, *statemachine.Error) {
		return &metadatav1.ListBrokersResponse{Brokers: sm.Brokers(), MetadataVersion: sm.Version()}, nil
	})
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(resp), nil
}

// DescribeBroker implements MetadataService.
func (s *Server) DescribeBroker(ctx context.Context, req *connect.Request[metadatav1.DescribeBrokerRequest]) (*connect.Response[metadatav1.DescribeBrokerResponse], error) {
	resp, err := readState(s, ctx, req.Msg.GetAllowStale(), func(sm *statemachine.StateMachine) (*metadatav1.DescribeBrokerResponse, *statemachine.Error) {
		b := sm.Broker(req.Msg.GetId())
		if b == nil {
			return nil, unknownBroker(req.Msg.GetId())
		}
		return &metadatav1.DescribeBrokerResponse{Broker: b, MetadataVersion: sm.Version()}, nil
	})
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(resp), nil
}

// StorageHeartbeat implements MetadataService.
func (s *Server) StorageHeartbeat(ctx context.Context, req *connect.Request[metadatav1.StorageHeartbeatRequest]) (*connect.Response[metadatav1.StorageHeartbeatResponse], error) {
	ctx, cancel := s.context(ctx)
	defer cancel()
	resp, err := s.heartbeat(ctx, req.Msg)
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(resp), nil
}

// StorageHeartbeats implements MetadataService: StorageHeartbeat, one
// response per request, on one stream, until the first error.
func (s *Server) StorageHeartbeats(ctx context.Context, stream *connect.BidiStream[metadatav1.StorageHeartbeatRequest, metadatav1.StorageHeartbeatResponse]) error {
	procedure := stream.Spec().Procedure
	for {
		req, err := stream.Receive()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		// The stream was authenticated when it opened; each heartbeat must
		// still be the principal's own.
		if p, ok := auth.PrincipalOf(ctx); ok {
			if err := auth.Authorize(p, procedure, req); err != nil {
				return connect.NewError(connect.CodePermissionDenied, err)
			}
		}
		resp, err := s.heartbeat(ctx, req)
		if err != nil {
			return err
		}
		if err := stream.Send(resp); err != nil {
			return err
		}
	}
}

// heartbeat runs one heartbeat under ctx, which bounds it: a unary call
// gives it the request timeout, a stream its own lifetime.
func (s *Server) heartbeat(ctx context.Context, req *metadatav1.StorageHeartbeatRequest) (*metadatav1.StorageHeartbeatResponse, error) {
	r, err := callNodeIn(ctx, s, func(n *node.Node, done func(result[*metadatav1.StorageHeartbeatResponse])) {
		resp, herr := n.Heartbeat(req)
		done(result[*metadatav1.StorageHeartbeatResponse]{err: herr, leaderID: n.Leader(), leaderURL: n.PeerURL(n.Leader()), value: resp})
	})
	s.metrics.ObserveHeartbeat()
	if err != nil {
		return nil, err
	}
	return r.value, nil
}

// CreateTopic implements MetadataService.
func (s *Server) CreateTopic(ctx context.Context, req *connect.Request[metadatav1.CreateTopicRequest]) (*connect.Response[metadatav1.CreateTopicResponse], error) {
	r, o, err := propose(s, ctx, "create_topic", func(n *node.Node, done func(node.Outcome)) { n.CreateTopic(req.Msg, done) },
		func(n *node.Node, _ node.Outcome) *metadatav1.Topic { return n.StateMachine().Topic(req.Msg.GetName()) })
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&metadatav1.CreateTopicResponse{Topic: r.value, Success: true,
		ErrorCode: metadatav1.ErrorCode_NONE.Enum(), MetadataVersion: o.Version}), nil
}

// DeleteTopic implements MetadataService.
func (s *Server) DeleteTopic(ctx context.Context, req *connect.Request[metadatav1.DeleteTopicRequest]) (*connect.Response[metadatav1.DeleteTopicResponse], error) {
	_, o, err := propose[struct{}](s, ctx, "delete_topic", func(n *node.Node, done func(node.Outcome)) { n.DeleteTopic(req.Msg, done) }, nil)
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&metadatav1.DeleteTopicResponse{Success: true, ErrorCode: metadatav1.ErrorCode_NONE.Enum(), MetadataVersion: o.Version}), nil
}

// ListTopics implements MetadataService.
func (s *Server) ListTopics(ctx context.Context, req *connect.Request[metadatav1.ListTopicsRequest]) (*connect.Response[metadatav1.ListTopicsResponse], error) {
	resp, err := readState(s, ctx, req.Msg.GetAllowStale(), func(sm *statemachine.StateMachine) (*metadatav1.ListTopicsResponse, *statemachine.Error) {
		return &metadatav1.ListTopicsResponse{Topics: sm.Topics(), MetadataVersion: sm.Version()}, nil
	})
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(resp), nil
}

// DescribeTopic implements MetadataService.
func (s *Server) DescribeTopic(ctx context.Context, req *connect.Request[metadatav1.DescribeTopicRequest]) (*connect.Response[metadatav1.DescribeTopicResponse], error) {
	if err := statemachine.ValidateTopicName(req.Msg.GetName()); err != nil {
		return nil, toConnectError(err, 0, "")
	}
	resp, err := readState(s, ctx, req.Msg.GetAllowStale(), func(sm *statemachine.StateMachine) (*metadatav1.DescribeTopicResponse, *statemachine.Error) {
		t := sm.Topic(req.Msg.GetName())
		if t == nil {
			return nil, unknownTopic(req.Msg.GetName())
		}
		return &metadatav1.DescribeTopicResponse{Topic: t, Partitions: t.GetPartitions(), MetadataVersion: sm.Version()}, nil
	})
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(resp), nil
}

// CreatePartitions implements MetadataService.
func (s *Server) CreatePartitions(ctx context.Context, req *connect.Request[metadatav1.CreatePartitionsRequest]) (*connect.Response[metadatav1.CreatePartitionsResponse], error) {
	r, o, err := propose(s, ctx, "create_partitions", func(n *node.Node, done func(node.Outcome)) { n.CreatePartitions(req.Msg, done) },
		func(n *node.Node, _ node.Outcome) *metadatav1.Topic {
			return n.StateMachine().Topic(req.Msg.GetTopic())
		})
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&metadatav1.CreatePartitionsResponse{Topic: r.value, Success: true,
		ErrorCode: metadatav1.ErrorCode_NONE.Enum(), MetadataVersion: o.Version}), nil
}

// AlterPartition implements MetadataService.
func (s *Server) AlterPartition(ctx context.Context, req *connect.Request[metadatav1.AlterPartitionRequest]) (*connect.Response[metadatav1.AlterPartitionResponse], error) {
	r, o, err := propose(s, ctx, "alter_partition", func(n *node.Node, done func(node.Outcome)) { n.AlterPartition(req.Msg, done) },
		func(n *node.Node, _ node.Outcome) *metadatav1.Partition {
			t := n.StateMachine().Topic(req.Msg.GetTopic())
			if t == nil || int(req.Msg.GetPartition()) >= len(t.GetPartitions()) {
				return nil
			}
			return t.GetPartitions()[req.Msg.GetPartition()]
		})
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&metadatav1.AlterPartitionResponse{Partition: r.value, Success: true,
		ErrorCode: metadatav1.ErrorCode_NONE.Enum(), MetadataVersion: o.Version}), nil
}

// ElectLeaders implements MetadataService.
func (s *Server) ElectLeaders(ctx context.Context, req *connect.Request[metadatav1.ElectLeadersRequest]) (*connect.Response[metadatav1.ElectLeadersResponse], error) {
	_, o, err := propose[struct{}](s, ctx, "elect_leaders", func(n *node.Node, done func(node.Outcome)) { n.ElectLeaders(req.Msg, done) }, nil)
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&metadatav1.ElectLeadersResponse{Elected: o.Elected, Success: true,
		ErrorCode: metadatav1.ErrorCode_NONE.Enum(), MetadataVersion: o.Version}), nil
}

// GetClusterMetadata implements MetadataService.
func (s *Server) GetClusterMetadata(ctx context.Context, req *connect.Request[metadatav1.GetClusterMetadataRequest]) (*connect.Response[metadatav1.GetClusterMetadataResponse], error) {
	resp, err := readNodeState(s, ctx, req.Msg.GetAllowStale(),
		func(n *node.Node, sm *statemachine.StateMachine) (*metadatav1.GetClusterMetadataResponse, *statemachine.Error) {
			return &metadatav1.GetClusterMetadataResponse{State: sm.ClusterState(), ControllerEpoch: n.Term(), LeaderId: n.Leader()}, nil
		})
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(resp), nil
}

// WatchMetadata implements MetadataService: it streams what changed after
// since_version (a delta when this controller's history still has it, else
// the full state), then every later change, from this controller's applied
// state.
func (s *Server) WatchMetadata(ctx context.Context, req *connect.Request[metadatav1.WatchMetadataRequest], stream *connect.ServerStream[metadatav1.WatchMetadataResponse]) error {
	since := req.Msg.GetSinceVersion()
	if since < 0 {
		return connect.NewError(connect.CodeInvalidArgument, errors.New("sinceVersion must not be negative"))
	}
	for {
		update, err := s.watches.next(ctx, since)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return connect.NewError(connect.CodeUnavailable, err)
		}
		if err := stream.Send(update); err != nil {
			return err
		}
		if d := update.GetDelta(); d != nil {
			since = d.GetToVersion()
		} else {
			since = update.GetFullState().GetMetadataVersion()
		}
	}
}
