package api

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
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

// readiness asks the node whether it is ready, and why not.
func (s *Server) readiness(ctx context.Context) (bool, string) {
	ctx, cancel := context.WithTimeout(ctx, probeTimeout)
	defer cancel()
	st, err := runner.Call(ctx, s.runner, func(n *node.Node, done func(node.Status)) { done(n.Status()) })
	if err != nil {
		return false, "the node is not answering: " + err.Error()
	}
	return st.Ready()
}

// liveness asks whether the node's loop still runs: a stopped loop (a
// storage failure) or one stuck past the probe's timeout is not alive.
func (s *Server) liveness(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, probeTimeout)
	defer cancel()
	_, err := runner.Call(ctx, s.runner, func(_ *node.Node, done func(struct{})) { done(struct{}{}) })
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
