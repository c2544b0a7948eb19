package rpc

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"time"

	"connectrpc.com/connect"
	"connectrpc.com/grpchealth"
	"connectrpc.com/grpcreflect"
	"connectrpc.com/vanguard"
	metadatav1 "github.com/dmq-project/metadata/gen/dmq/metadata/v1"
	"github.com/dmq-project/metadata/gen/dmq/metadata/v1/metadatav1connect"
	"github.com/dmq-project/metadata/gen/dmq/raft/v1/raftv1connect"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// Security holds the controller's defences against its clients: rate and
// size limits, and the audit log.
type Security struct {
	// RateLimit is per client; zero PerSecond disables it.
	RateLimit RateLimit
	// MaxRequestBytes bounds an API request; 0 means 4 MiB. The peer
	// transport has its own, larger bound (snapshots).
	MaxRequestBytes int
	// Audit, if set, receives one JSON line per mutating request.
	Audit io.Writer
	// Auth, if set, requires a bearer token on every call and authorises
	// it by role; nil leaves the controller open.
	Auth *Authenticator
	// PeerToken is sent to peer controllers (a CONTROLLER token).
	PeerToken string
	// peerTLS, set when the controller serves TLS, admits to the Raft
	// transport only callers with the cluster's client certificate.
	peerTLS *tlsMaterial
}

// peerTokenMinBytes is the shortest peer token accepted (as for the tokens
// file's).
const peerTokenMinBytes = 16

// maxPeerMessageBytes bounds a message on the peer transport (a snapshot is
// the largest legitimate one).
const maxPeerMessageBytes = 256 << 20

// compressMinBytes is the smallest response worth compressing.
const compressMinBytes = 4 << 10

// NewHandler mounts every endpoint of a controller on one handler:
// MetadataService and QuorumService over Connect, gRPC and gRPC-Web, and
// over REST/JSON at the seed's paths (vanguard, from the protos'
// google.api.http annotations); the peer transport; gRPC health and server
// reflection; Prometheus metrics at /metrics.
func NewHandler(srv *Server, raft *RaftHandler, metrics *Metrics, logger *slog.Logger, security Security) (http.Handler, error) {
	if security.MaxRequestBytes == 0 {
		security.MaxRequestBytes = 4 << 20
	}
	interceptors := []connect.Interceptor{loggingInterceptor(logger)}
	if security.Audit != nil {
		interceptors = append(interceptors, auditInterceptor(newAuditLog(security.Audit), security.Auth))
	}
	if security.Auth != nil {
		interceptors = append(interceptors, authInterceptor{auth: security.Auth})
	}
	if security.RateLimit.PerSecond > 0 {
		interceptors = append(interceptors, newRateLimitInterceptor(security.RateLimit))
	}
	options := []connect.HandlerOption{
		connect.WithInterceptors(interceptors...),
		connect.WithReadMaxBytes(security.MaxRequestBytes),
		// Gzip of a few hundred bytes costs more CPU than it saves on a
		// network (it was 18% of a loaded controller's CPU).
		connect.WithCompressMinBytes(compressMinBytes),
		connect.WithCodec(strictJSON{}),
	}
	metadataPath, metadataHandler := metadatav1connect.NewMetadataServiceHandler(srv, options...)
	quorumPath, quorumHandler := metadatav1connect.NewQuorumServiceHandler(srv, options...)
	transcoder, err := vanguard.NewTranscoder([]*vanguard.Service{
		vanguard.NewService(metadataPath, metadataHandler),
		vanguard.NewService(quorumPath, quorumHandler),
	}, vanguard.WithCodec(func(resolver vanguard.TypeResolver) vanguard.Codec {
		// The seed's JSON omits unset fields ({"broker":{...},"success":true,
		// "errorCode":"NONE"}); presence-tracked fields still appear.
		codec := vanguard.NewJSONCodec(resolver)
		codec.MarshalOptions.EmitUnpopulated = false
		// A misspelt field is an error, not a silent default.
		codec.UnmarshalOptions.DiscardUnknown = false
		return codec
	}))
	if err != nil {
		return nil, err
	}
	mux := http.NewServeMux()
	// The Raft transport logs and counts what it refuses.
	raft.refusals = newPeerRefusals(logger, metrics.peerRefused)
	raftOptions := []connect.HandlerOption{connect.WithReadMaxBytes(maxPeerMessageBytes)}
	admitPeers, err := peerAdmission(security, raft.refusals)
	if err != nil {
		return nil, err
	}
	framesHandler := admitPeers(http.HandlerFunc(raft.ServeFrames))
	if security.Auth != nil {
		peers := peerAuth{auth: security.Auth, peerToken: security.PeerToken, refusals: raft.refusals}
		raftOptions = append(raftOptions, connect.WithInterceptors(peers))
	}
	raftPath, raftHandler := raftv1connect.NewRaftTransportServiceHandler(raft, raftOptions...)
	if security.peerTLS != nil {
		raftHandler = security.peerTLS.requirePeerCertificate(raftHandler, raft.refusals)
	}
	// Connect, gRPC and gRPC-Web calls go straight to their handlers: the
	// transcoder would pass them through anyway, at a cost on every call
	// (3% of a loaded leader's CPU). It serves the REST paths.
	handleProcedures(mux, metadataPath, metadatav1.File_dmq_metadata_v1_metadata_service_proto, metadataHandler)
	handleProcedures(mux, quorumPath, metadatav1.File_dmq_metadata_v1_quorum_service_proto, quorumHandler)
	mux.Handle(raftPath, raftHandler)
	mux.Handle(framesPath, framesHandler)
	services := []string{metadatav1connect.MetadataServiceName, metadatav1connect.QuorumServiceName}
	mux.Handle(grpchealth.NewHandler(grpchealth.NewStaticChecker(services...)))
	reflector := grpcreflect.NewStaticReflector(services...)
	mux.Handle(grpcreflect.NewHandlerV1(reflector))
	mux.Handle(grpcreflect.NewHandlerV1Alpha(reflector))
	mux.Handle("/metrics", promhttp.HandlerFor(metrics.Registry, promhttp.HandlerOpts{}))
	// Profiles show memory and cost CPU: with authentication on, for
	// admins only. Metrics stay open to scrapers (they hold counts, not
	// metadata).
	debug := func(h http.HandlerFunc) http.Handler { return adminOnly(security.Auth, h) }
	mux.Handle("/debug/pprof/", debug(pprof.Index))
	mux.Handle("/debug/pprof/profile", debug(pprof.Profile))
	mux.Handle("/debug/pprof/trace", debug(pprof.Trace))
	mux.Handle("/", transcoder)
	return mux, nil
}

// peerAdmission returns what admits a caller to a plain HTTP endpoint of
// the peer transport (the Raft frame stream, the identity): the cluster's
// client certificate under TLS, then a controller's token when
// authentication is on.
func peerAdmission(security Security, refusals *peerRefusals) (func(http.Handler) http.Handler, error) {
	if security.Auth != nil && security.PeerToken != "" && len(security.PeerToken) < peerTokenMinBytes {
		// It names a controller to every peer: as hard to guess as a
		// token of the tokens file.
		return nil, fmt.Errorf("the peer token is shorter than %d characters", peerTokenMinBytes)
	}
	return func(h http.Handler) http.Handler {
		if security.Auth != nil {
			h = peerAuth{auth: security.Auth, peerToken: security.PeerToken, refusals: refusals}.requireController(h)
		}
		if security.peerTLS != nil {
			h = security.peerTLS.requirePeerCertificate(h, refusals)
		}
		return h
	}, nil
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

// adminOnly requires an ADMIN bearer token when auth is set.
func adminOnly(auth *Authenticator, next http.Handler) http.Handler {
	if auth == nil {
		return next
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p, err := auth.Authenticate(r.Header.Get("Authorization"))
		switch {
		case err != nil:
			http.Error(w, err.Error(), http.StatusUnauthorized)
		case p.Role != RoleAdmin:
			http.Error(w, fmt.Sprintf("%s %q may not read profiles", p.Role, p.Name), http.StatusForbidden)
		default:
			next.ServeHTTP(w, r)
		}
	})
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

// NewHTTPServer serves handler on addr over HTTP/1.1 and HTTP/2: cleartext
// (h2c) from Serve, over TLS from ServeTLS.
func NewHTTPServer(addr string, handler http.Handler) *http.Server {
	var protocols http.Protocols
	protocols.SetHTTP1(true)
	protocols.SetUnencryptedHTTP2(true)
	protocols.SetHTTP2(true)
	return &http.Server{Addr: addr, Handler: handler, Protocols: &protocols, ReadHeaderTimeout: 10 * time.Second}
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

// connReadBufferBytes is the read buffer of each accepted connection.
const connReadBufferBytes = 8 << 10

// bufferedListener buffers the reads of every accepted connection. Go's
// HTTP/2 server reads cleartext connections frame by frame straight from
// the socket, two read syscalls per frame (header, then payload); under
// load the socket holds many frames, and one read then serves them all.
// (TLS connections are buffered by their record layer already.)
type bufferedListener struct{ net.Listener }

func (l bufferedListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &bufferedConn{Conn: c, reader: bufio.NewReaderSize(c, connReadBufferBytes)}, nil
}

type bufferedConn struct {
	net.Conn
	reader *bufio.Reader
}

func (c *bufferedConn) Read(p []byte) (int, error) { return c.reader.Read(p) }
