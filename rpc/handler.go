package rpc

import (
	"bufio"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"

	"github.com/dmq-project/metadata/rpc/api"
	"github.com/dmq-project/metadata/rpc/auth"
	"github.com/dmq-project/metadata/rpc/metrics"
	"github.com/dmq-project/metadata/rpc/peer"
	"github.com/dmq-project/metadata/ui"
	"github.com/dmq-project/metadata/wire"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Security holds the controller's defences against its clients: rate and
// size limits, and the audit log.
type Security struct {
	// RateLimit is per client; zero PerSecond disables it.
	RateLimit auth.RateLimit
	// MaxRequestBytes bounds an API request; 0 means 4 MiB. The peer
	// transport has its own, larger bound (snapshots).
	MaxRequestBytes int
	// Audit, if set, receives one JSON line per mutating request.
	Audit io.Writer
	// Auth, if set, requires a bearer token on every call and authorises
	// it by role; nil leaves the controller open.
	Auth *auth.Authenticator
	// PeerToken is sent to peer controllers (a CONTROLLER token).
	PeerToken string
}

// peerAdmission is who the peer transport admits: controllers only when
// authentication is on, and under TLS (peerTLS not nil) only callers with
// the cluster's client certificate.
func (s Security) peerAdmission(peerTLS *auth.TLSMaterial) peer.Admission {
	return peer.Admission{Auth: s.Auth, PeerToken: s.PeerToken, TLS: peerTLS}
}

// NewHandler mounts every endpoint of a controller on one handler:
// MetadataService and QuorumService over Connect, gRPC and gRPC-Web, and
// over REST/JSON at the seed's paths, gRPC health and server reflection
// (api.Mount); the peer transport, behind its admission
// (peer.RaftHandler.Mount); Prometheus metrics at /metrics; profiles at
// /debug/pprof; the build at /version. peerTLS, set when the controller serves TLS, admits to the
// peer transport only callers with the cluster's client certificate.
// forward, if set, passes calls refused NOT_CONTROLLER to the leader.
func NewHandler(srv *api.Server, raft *peer.RaftHandler, m *metrics.Metrics, logger *slog.Logger, security Security, peerTLS *auth.TLSMaterial,
	forward *api.Forwarder) (http.Handler, error) {
	mux := http.NewServeMux()
	err := api.Mount(mux, srv, api.MountConfig{Logger: logger, Metrics: m, Auth: security.Auth, RateLimit: security.RateLimit,
		MaxRequestBytes: security.MaxRequestBytes, Audit: security.Audit, Forward: forward})
	if err != nil {
		return nil, err
	}
	if err := raft.Mount(mux, security.peerAdmission(peerTLS)); err != nil {
		return nil, err
	}
	mux.Handle("/metrics", promhttp.HandlerFor(m.Registry, promhttp.HandlerOpts{}))
	// The console's files hold no metadata: open to anyone who reaches
	// the port, like the metrics; every call the page makes is authorised
	// as any other (the page asks for a token when refused).
	mux.Handle(ui.Path, ui.Handler())
	mux.Handle("GET /ui", http.RedirectHandler(ui.Path, http.StatusMovedPermanently))
	// The build, like the metrics (dmq_build_info), is open to anyone who
	// reaches the port: it tells an operator which binary answers.
	build, err := json.Marshal(wire.Build())
	if err != nil {
		return nil, err
	}
	mux.HandleFunc("GET "+wire.VersionPath, func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(build)
	})
	// Profiles show memory and cost CPU: with authentication on, for
	// admins only. Metrics stay open to scrapers (they hold counts, not
	// metadata).
	debug := func(h http.HandlerFunc) http.Handler { return auth.AdminOnly(security.Auth, h) }
	// A backup is the whole metadata: admins only, like the profiles.
	mux.Handle(api.BackupPath, debug(api.BackupHandler(srv).ServeHTTP))
	mux.Handle("/debug/pprof/", debug(pprof.Index))
	mux.Handle("/debug/pprof/profile", debug(pprof.Profile))
	mux.Handle("/debug/pprof/trace", debug(pprof.Trace))
	return trustForwarded(mux, peerTLS), nil
}

// trustForwarded takes a forwarded call's client address
// (wire.ForwardedForHeader) for the caller's own, for rate limits and the
// audit log, only from a caller presenting the cluster's certificate (a
// controller); from anyone else it drops that header, and under TLS the
// forwarding marks too, which only controllers may set. Without TLS a
// forwarded call counts as its forwarder's (no caller can be told for a
// controller), and the forwarded-by mark stays a claim, which serves only
// to stop a second forward.
func trustForwarded(next http.Handler, peerTLS *auth.TLSMaterial) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get(wire.ForwardedForHeader) != "" || r.Header.Get(wire.ForwardedByHeader) != "" {
			switch {
			case peerTLS != nil && r.TLS != nil && peerTLS.VerifyPeer(r.TLS) == nil:
				if addr := r.Header.Get(wire.ForwardedForHeader); addr != "" {
					r.RemoteAddr = addr
				}
			case peerTLS != nil:
				r.Header.Del(wire.ForwardedForHeader)
				r.Header.Del(wire.ForwardedByHeader)
				r.Header.Del(wire.ForwardedClusterHeader)
			default:
				r.Header.Del(wire.ForwardedForHeader)
			}
		}
		next.ServeHTTP(w, r)
	})
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
