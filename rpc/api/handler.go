package api

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"time"

	"connectrpc.com/connect"
	"connectrpc.com/grpchealth"
	"connectrpc.com/grpcreflect"
	"connectrpc.com/vanguard"
	metadatav1 "github.com/dmq-project/metadata/gen/dmq/metadata/v1"
	"github.com/dmq-project/metadata/gen/dmq/metadata/v1/metadatav1connect"
	"github.com/dmq-project/metadata/rpc/auth"
	"github.com/dmq-project/metadata/rpc/metrics"
	"github.com/dmq-project/metadata/wire"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// maxRequestBytesDefault bounds an API request when MountConfig does not.
const maxRequestBytesDefault = 4 << 20

// MountConfig is how the API defends itself against its clients.
type MountConfig struct {
	// Logger receives a line per call (debug; warnings for internal
	// errors).
	Logger *slog.Logger
	// Auth, if set, requires a bearer token on every call and authorises
	// it by role; nil leaves the API open.
	Auth *auth.Authenticator
	// RateLimit is per client; zero PerSecond disables it.
	RateLimit auth.RateLimit
	// MaxRequestBytes bounds a request; 0 means 4 MiB.
	MaxRequestBytes int
	// Audit, if set, receives one JSON line per mutating request.
	Audit io.Writer
	// Metrics, if set, counts every call by procedure and code, times the
	// unary ones, and counts refusals and open watch streams.
	Metrics *metrics.Metrics
	// Forward, if set, passes unary calls refused NOT_CONTROLLER to the
	// leader (innermost: after authentication and the rate limit).
	Forward *Forwarder
}

// Mount serves srv on mux: MetadataService and QuorumService over
// Connect, gRPC and gRPC-Web, and over REST/JSON at the seed's paths
// (vanguard, from the protos' google.api.http annotations, at "/"); gRPC
// health and server reflection. Every call passes, in order, the logging,
// audit, authentication, rate-limit and forwarding interceptors that cfg
// enables.
func Mount(mux *http.ServeMux, srv *Server, cfg MountConfig) error {
	if cfg.MaxRequestBytes == 0 {
		cfg.MaxRequestBytes = maxRequestBytesDefault
	}
	var interceptors []connect.Interceptor
	if cfg.Metrics != nil {
		interceptors = append(interceptors, metricsInterceptor{cfg.Metrics})
	}
	interceptors = append(interceptors, loggingInterceptor(cfg.Logger))
	if cfg.Audit != nil {
		interceptors = append(interceptors, auth.NewAuditInterceptor(cfg.Audit, cfg.Auth))
	}
	if cfg.Auth != nil {
		interceptors = append(interceptors, auth.NewInterceptor(cfg.Auth))
	}
	if cfg.RateLimit.PerSecond > 0 {
		interceptors = append(interceptors, auth.NewRateLimitInterceptor(cfg.RateLimit))
	}
	if cfg.Forward != nil {
		interceptors = append(interceptors, cfg.Forward)
	}
	options := []connect.HandlerOption{
		connect.WithInterceptors(interceptors...),
		connect.WithReadMaxBytes(cfg.MaxRequestBytes),
		connect.WithCompressMinBytes(wire.CompressMinBytes),
		connect.WithCodec(strictJSON{}),
	}
	metadataPath, metadataHandler := metadatav1connect.NewMetadataServiceHandler(srv, options...)
	quorumPath, quorumHandler := metadatav1connect.NewQuorumServiceHandler(srv, options...)
	// The handlers take Protobuf from the transcoder: had they taken JSON,
	// vanguard would pass their Connect JSON through untouched, and the REST
	// codec below (defaults emitted) would never run.
	// Request bodies are bounded before the transcoder (limitREST); its own
	// buffer bound would apply to responses too, which a large metadata
	// state legitimately exceeds.
	protoOnly := vanguard.WithTargetCodecs(vanguard.CodecProto)
	transcoder, err := vanguard.NewTranscoder([]*vanguard.Service{
		vanguard.NewService(metadataPath, metadataHandler, protoOnly),
		vanguard.NewService(quorumPath, quorumHandler, protoOnly),
	}, vanguard.WithCodec(newRESTCodec))
	if err != nil {
		return err
	}
	// Connect, gRPC and gRPC-Web calls go straight to their handlers: the
	// transcoder would pass them through anyway, at a cost on every call
	// (3% of a loaded leader's CPU). It serves the REST paths.
	handleProcedures(mux, metadataPath, metadatav1.File_dmq_metadata_v1_metadata_service_proto, metadataHandler)
	handleProcedures(mux, quorumPath, metadatav1.File_dmq_metadata_v1_quorum_service_proto, quorumHandler)
	services := []string{metadatav1connect.MetadataServiceName, metadatav1connect.QuorumServiceName}
	mux.Handle(grpchealth.NewHandler(healthChecker{srv: srv, services: services}))
	mountProbes(mux, srv)
	reflector := grpcreflect.NewStaticReflector(services...)
	mux.Handle(grpcreflect.NewHandlerV1(reflector))
	mux.Handle(grpcreflect.NewHandlerV1Alpha(reflector))
	routes := restRoutes(metadatav1.File_dmq_metadata_v1_metadata_service_proto, metadatav1.File_dmq_metadata_v1_quorum_service_proto)
	refused := func(int) {}
	if cfg.Metrics != nil {
		refused = cfg.Metrics.ObserveRESTRefused
	}
	rest := checkQueryParameters(routes, refused, limitREST(cfg.MaxRequestBytes, refused, transcoder))
	mux.Handle("/", chooseClusterView(srv.seedClusterView, refused, rest))
	return nil
}

// restCodec is the JSON of the REST paths. Seed clients read fields that
// exist: partition 0's "partition", a fenced broker's "isAlive": false, an
// empty "isr": []. Scalars with their default values and empty lists and
// maps are emitted; unset messages stay absent (not null); 64-bit integers
// are numbers, as the Java service wrote them (appendRESTJSON). A misspelt
// field is an error, not a silent default, and a body that does not decode
// is the caller's error (InvalidArgument, HTTP 400), not the server's.
type restCodec struct{ *vanguard.JSONCodec }

func newRESTCodec(resolver vanguard.TypeResolver) vanguard.Codec {
	codec := vanguard.NewJSONCodec(resolver)
	codec.MarshalOptions.EmitUnpopulated = false
	codec.MarshalOptions.EmitDefaultValues = true
	codec.UnmarshalOptions.DiscardUnknown = false
	return restCodec{codec}
}

// MarshalAppend writes 64-bit integers as JSON numbers (appendRESTJSON).
func (c restCodec) MarshalAppend(base []byte, msg proto.Message) ([]byte, error) {
	return marshalREST(base, msg)
}

func (c restCodec) Unmarshal(data []byte, msg proto.Message) error {
	if err := c.JSONCodec.Unmarshal(data, msg); err != nil {
		return connect.NewError(connect.CodeInvalidArgument, err)
	}
	return nil
}

func (c restCodec) UnmarshalField(data []byte, msg proto.Message, field protoreflect.FieldDescriptor) error {
	if err := c.JSONCodec.UnmarshalField(data, msg, field); err != nil {
		return connect.NewError(connect.CodeInvalidArgument, err)
	}
	return nil
}

// handleProcedures routes every procedure of the service served at path
// (its "/package.Service/" prefix) to handler by its exact path, and the
// rest of the prefix there too (unknown procedures get Connect's answer).
// ServeMux allocates for each request a prefix pattern matches, and not
// for an exact one.
func handleProcedures(mux *http.ServeMux, path string, file protoreflect.FileDescriptor, handler http.Handler) {
	mux.Handle(path, handler)
	services := file.Services()
	for i := range services.Len() {
		service := services.Get(i)
		if "/"+string(service.FullName())+"/" != path {
			continue
		}
		methods := service.Methods()
		for j := range methods.Len() {
			mux.Handle(path+string(methods.Get(j).Name()), handler)
		}
		return
	}
	panic(fmt.Sprintf("rpc: %s declares no service at %s", file.Path(), path))
}

// loggingInterceptor logs every call with its procedure, code and duration.
func loggingInterceptor(logger *slog.Logger) connect.UnaryInterceptorFunc {
	return func(next connect.UnaryFunc) connect.UnaryFunc {
		return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
			started := time.Now()
			resp, err := next(ctx, req)
			level, code := slog.LevelDebug, "ok"
			if err == nil && !logger.Enabled(ctx, level) {
				// The common case costs no allocation.
				return resp, err
			}
			if err != nil {
				code = connect.CodeOf(err).String()
				if connect.CodeOf(err) == connect.CodeInternal || connect.CodeOf(err) == connect.CodeUnknown {
					level = slog.LevelWarn
				}
			}
			logger.Log(ctx, level, "rpc", "procedure", req.Spec().Procedure, "peer", req.Peer().Addr,
				"code", code, "duration", time.Since(started), "error", err)
			return resp, err
		}
	}
}

// strictJSON is Connect's JSON codec refusing unknown fields: a misspelt
// field in a request is an error, never a silent default.
type strictJSON struct{}

func (strictJSON) Name() string { return "json" }

func (strictJSON) Marshal(msg any) ([]byte, error) {
	m, ok := msg.(proto.Message)
	if !ok {
		return nil, fmt.Errorf("%T is not a protobuf message", msg)
	}
	return protojson.MarshalOptions{}.Marshal(m)
}

func (strictJSON) Unmarshal(data []byte, msg any) error {
	m, ok := msg.(proto.Message)
	if !ok {
		return fmt.Errorf("%T is not a protobuf message", msg)
	}
	if len(data) == 0 {
		data = []byte("{}")
	}
	return protojson.UnmarshalOptions{DiscardUnknown: false}.Unmarshal(data, m)
}
