package api

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"sync"
	"time"

	"connectrpc.com/connect"
	"connectrpc.com/grpchealth"
	"github.com/dmq-project/metadata/node"
	"github.com/dmq-project/metadata/node/runner"
)

// Probe paths for Kubernetes-style liveness and readiness checks.
const (
	LivezPath  = "/livez"
	ReadyzPath = "/readyz"
)

// probeTimeout bounds how long a probe waits for the node goroutine.
const probeTimeout = 2 * time.Second

// healthChecker answers gRPC health checks from the node's status: SERVING
// only when the controller is ready (node.Status.Ready), for the server as
// a whole ("") and for each service it serves.
type healthChecker struct {
	srv      *Server
	services []string
}

func (h healthChecker) Check(ctx context.Context, req *grpchealth.CheckRequest) (*grpchealth.CheckResponse, error) {
	if req.Service != "" && !slices.Contains(h.services, req.Service) {
		return nil, connect.NewError(connect.CodeNotFound, fmt.Errorf("unknown service %q", req.Service))
	}
	if ready, _ := h.srv.readiness(ctx); !ready {
		return &grpchealth.CheckResponse{Status: grpchealth.StatusNotServing}, nil
	}
	return &grpchealth.CheckResponse{Status: grpchealth.StatusServing}, nil
}

// probeFreshness is how old a probe's answer may be. Probes need no
// authentication and each asks the node goroutine; without a bound a flood
// of them would queue in front of every request.
const probeFreshness = 100 * time.Millisecond

// probeCache holds the last readiness answer. Callers take turns under mu,
// so concurrent probes share one node call.
type probeCache struct {
	mu     sync.Mutex
	at     time.Time
	ready  bool
	reason string
	// calls counts node calls made for probes (tests read it).
	calls int
}

// readiness says whether the node is ready, and why not, from an answer at
// most probeFreshness old.
func (s *Server) readiness(ctx context.Context) (bool, string) {
	c := &s.probes
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.at.IsZero() && time.Since(c.at) < probeFreshness {
		return c.ready, c.reason
	}
	ctx, cancel := context.WithTimeout(ctx, probeTimeout)
	defer cancel()
	c.calls++
	st, err := runner.Call(ctx, s.runner, func(n *node.Node, done func(node.Status)) { done(n.Status()) })
	if err != nil {
		// Not cached: the caller's own context may have ended.
		return false, "the node is not answering: " + err.Error()
	}
	c.ready, c.reason = st.Ready()
	c.at = time.Now()
	return c.ready, c.reason
}

// liveness asks whether the node's loop still runs: a stopped loop (a
// storage failure) or one stuck past the probe's timeout is not alive. A
// readiness answer at most probeFreshness old proves the loop ran.
func (s *Server) liveness(ctx context.Context) error {
	c := &s.probes
	c.mu.Lock()
	fresh := !c.at.IsZero() && time.Since(c.at) < probeFreshness
	c.mu.Unlock()
	if fresh && s.runner.Err() == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, probeTimeout)
	defer cancel()
	_, err := runner.Call(ctx, s.runner, func(_ *node.Node, done func(struct{})) { done(struct{}{}) })
	if err == nil {
		return nil
	}
	if errors.Is(err, runner.ErrStopped) {
		if cause := s.runner.Err(); cause != nil {
			return fmt.Errorf("the node stopped: %w", cause)
		}
	}
	return err
}

// mountProbes serves /livez and /readyz: 200 "ok", or 503 with the reason.
func mountProbes(mux *http.ServeMux, srv *Server) {
	answer := func(w http.ResponseWriter, err error) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Header().Set("Cache-Control", "no-store")
		if err != nil {
			w.WriteHeader(http.StatusServiceUnavailable)
			fmt.Fprintln(w, err)
			return
		}
		fmt.Fprintln(w, "ok")
	}
	mux.HandleFunc("GET "+LivezPath, func(w http.ResponseWriter, r *http.Request) {
		answer(w, srv.liveness(r.Context()))
	})
	mux.HandleFunc("GET "+ReadyzPath, func(w http.ResponseWriter, r *http.Request) {
		if ready, why := srv.readiness(r.Context()); !ready {
			answer(w, errors.New(why))
			return
		}
		answer(w, nil)
	})
}
