package peer

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"

	"connectrpc.com/connect"
	"github.com/dmq-project/metadata/gen/dmq/raft/v1/raftv1connect"
	"github.com/dmq-project/metadata/rpc/auth"
)

// peerTokenMinBytes is the shortest peer token accepted (as for the tokens
// file's).
const peerTokenMinBytes = 16

// Admission is who the transport admits before it looks at a request
// (cluster, receiver, sender: RaftHandler's own checks). The zero value
// admits anyone: a cleartext cluster without authentication.
type Admission struct {
	// Auth, if set, admits only controllers: PeerToken or a CONTROLLER
	// token of the tokens file, never a JWT
	// (auth.Authenticator.AuthenticateController).
	Auth *auth.Authenticator
	// PeerToken is this cluster's peer token (security.peer-token), which
	// every controller presents; empty if not set.
	PeerToken string
	// TLS, set when the controller serves TLS, admits only callers with
	// the cluster's client certificate, and binds a certificate that names
	// a controller (controller-<id>) to that controller's sender id.
	TLS *auth.TLSMaterial
}

// Wrapper returns what admits a caller to a plain HTTP endpoint of the
// peer transport (the Raft frame stream, the identity): the cluster's
// client certificate under TLS, then a controller's token when
// authentication is on. It refuses a peer token too short to be one.
func (a Admission) Wrapper(refusals *Refusals) (func(http.Handler) http.Handler, error) {
	if a.Auth != nil && a.PeerToken != "" && len(a.PeerToken) < peerTokenMinBytes {
		// It names a controller to every peer: as hard to guess as a
		// token of the tokens file.
		return nil, fmt.Errorf("the peer token is shorter than %d characters", peerTokenMinBytes)
	}
	return func(h http.Handler) http.Handler {
		if a.Auth != nil {
			h = controllerAuth{auth: a.Auth, peerToken: a.PeerToken, refusals: refusals}.requireController(h)
		}
		if a.TLS != nil {
			h = requirePeerCertificate(a.TLS, h, refusals)
		}
		return h
	}, nil
}

// Mount serves the transport on mux behind admission: the Connect stream
// (snapshots, and peers without the frame stream) and the frame stream.
// What admission refuses is logged and counted by the handler's refusals.
func (h *RaftHandler) Mount(mux *http.ServeMux, admission Admission) error {
	raftOptions := []connect.HandlerOption{connect.WithReadMaxBytes(maxMessageBytes)}
	admit, err := admission.Wrapper(h.refusals)
	if err != nil {
		return err
	}
	framesHandler := admit(http.HandlerFunc(h.ServeFrames))
	if admission.Auth != nil {
		controllers := controllerAuth{auth: admission.Auth, peerToken: admission.PeerToken, refusals: h.refusals}
		raftOptions = append(raftOptions, connect.WithInterceptors(controllers))
	}
	raftPath, raftHandler := raftv1connect.NewRaftTransportServiceHandler(h, raftOptions...)
	if admission.TLS != nil {
		raftHandler = requirePeerCertificate(admission.TLS, raftHandler, h.refusals)
	}
	mux.Handle(raftPath, raftHandler)
	mux.Handle(framesPath, framesHandler)
	return nil
}

// controllerAuth admits callers of the Raft transport (the Connect stream
// and the frame stream) when authentication is on: only a controller, known
// by the cluster's peer token or a CONTROLLER token of the tokens file.
// Under TLS the caller's certificate is checked too, before this
// (requirePeerCertificate).
type controllerAuth struct {
	auth *auth.Authenticator
	// peerToken is this cluster's peer token (security.peer-token), which
	// every controller presents; empty if not set.
	peerToken string
	refusals  *Refusals
}

// check returns the controller an Authorization header names, or the
// reason and the error to refuse it with.
func (a controllerAuth) check(header string) (auth.Principal, string, error) {
	p, err := a.auth.AuthenticateController(header, a.peerToken)
	switch {
	case err == nil:
		return p, "", nil
	case errors.Is(err, auth.ErrControllerJWT):
		return auth.Principal{}, refusedControllerJWT, err
	case connect.CodeOf(err) == connect.CodePermissionDenied:
		return auth.Principal{}, refusedNotController, err
	default:
		return auth.Principal{}, refusedUnauthenticated, err
	}
}

func (a controllerAuth) WrapUnary(next connect.UnaryFunc) connect.UnaryFunc {
	return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
		p, reason, err := a.check(req.Header().Get("Authorization"))
		if err != nil {
			a.refusals.Refuse(reason, req.Peer().Addr, "", "", err)
			return nil, err
		}
		return next(auth.WithPrincipal(ctx, p), req)
	}
}

func (a controllerAuth) WrapStreamingClient(next connect.StreamingClientFunc) connect.StreamingClientFunc {
	return next
}

func (a controllerAuth) WrapStreamingHandler(next connect.StreamingHandlerFunc) connect.StreamingHandlerFunc {
	return func(ctx context.Context, conn connect.StreamingHandlerConn) error {
		p, reason, err := a.check(conn.RequestHeader().Get("Authorization"))
		if err != nil {
			a.refusals.Refuse(reason, conn.Peer().Addr, "", "", err)
			return err
		}
		return next(auth.WithPrincipal(ctx, p), conn)
	}
}

// requireController admits only controllers to the Raft frame stream,
// which is plain HTTP until it is upgraded.
func (a controllerAuth) requireController(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p, reason, err := a.check(r.Header.Get("Authorization"))
		if err != nil {
			a.refusals.RefuseRequest(reason, r, err)
			status := http.StatusForbidden
			if connect.CodeOf(err) == connect.CodeUnauthenticated {
				status = http.StatusUnauthorized
			}
			http.Error(w, err.Error(), status)
			return
		}
		next.ServeHTTP(w, r.WithContext(auth.WithPrincipal(r.Context(), p)))
	})
}

// requirePeerCertificate lets through only callers whose TLS client
// certificate chains to the cluster's CA: a process without the cluster's
// certificate cannot send Raft messages, whatever token it holds.
func requirePeerCertificate(m *auth.TLSMaterial, next http.Handler, refusals *Refusals) http.Handler {
	errorWriter := connect.NewErrorWriter()
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := m.VerifyPeer(r.TLS); err != nil {
			refusals.RefuseRequest(refusedCertificate, r, err)
			_ = errorWriter.Write(w, r, connect.NewError(connect.CodePermissionDenied, err))
			return
		}
		if id, ok := certifiedController(r.TLS.PeerCertificates[0]); ok {
			r = r.WithContext(context.WithValue(r.Context(), certifiedControllerKey{}, id))
		}
		next.ServeHTTP(w, r)
	})
}

// certifiedControllerKey is the context key of the controller id a peer's
// certificate names.
type certifiedControllerKey struct{}

// certifiedController is the controller a cluster certificate names: its
// common name is controller-<id>. A certificate shared by the controllers
// (any other name) names none.
func certifiedController(cert *x509.Certificate) (uint64, bool) {
	digits, ok := strings.CutPrefix(cert.Subject.CommonName, "controller-")
	if !ok {
		return 0, false
	}
	id, err := strconv.ParseUint(digits, 10, 64)
	return id, err == nil && id > 0
}

// senderCertified checks a Raft sender's id against the controller its
// certificate names, if it names one: a controller cannot send under
// another's id.
func senderCertified(ctx context.Context, from uint64) error {
	if id, ok := ctx.Value(certifiedControllerKey{}).(uint64); ok && id != from {
		return fmt.Errorf("the certificate of controller %d may not send as controller %d", id, from)
	}
	return nil
}
