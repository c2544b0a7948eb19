// Package rpctest starts real controllers for tests: Pebble in temporary
// directories, Connect over loopback on ephemeral ports, the production
// runner and transport.
package rpctest

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	metadatav1 "github.com/dmq-project/metadata/gen/dmq/metadata/v1"
	"github.com/dmq-project/metadata/gen/dmq/metadata/v1/metadatav1connect"
	"github.com/dmq-project/metadata/node"
	"github.com/dmq-project/metadata/rpc"
	"github.com/dmq-project/metadata/rpc/auth"
	"github.com/dmq-project/metadata/wire"
	"github.com/stretchr/testify/require"
)

// Controller is one controller of a test cluster.
type Controller struct {
	ID uint64
	// ClusterID defaults to "test-cluster".
	ClusterID string
	Addr      string
	Dir       string
	Peers     []node.Peer
	// Join starts the controller empty, waiting to be added.
	Join bool
	// InitialClusterState is how an empty directory starts (default: the
	// founding handshake).
	InitialClusterState rpc.InitialClusterState
	PushURLs            map[int32]string
	// SessionTimeout defaults to a minute, so brokers in tests that do not
	// heartbeat stay unfenced.
	SessionTimeout time.Duration
	Security       rpc.Security
	// ProbeToken is the bearer token WaitLeader uses when Security.Auth
	// is set.
	ProbeToken string
	// TLS, if enabled, serves TLS and mutual TLS between controllers;
	// ProbeTLS is then how WaitLeader dials.
	TLS      auth.TLS
	ProbeTLS *tls.Config
	// Logger, if set, receives the controller's logs.
	Logger *slog.Logger
	c      *rpc.Controller
}

// URL is the controller's base URL.
func (tc *Controller) URL() string {
	if tc.TLS.Enabled() {
		return "https://" + tc.Addr
	}
	return "http://" + tc.Addr
}

// Running says whether the controller is up.
func (tc *Controller) Running() bool { return tc.c != nil }

// Start starts (or restarts, from its directory) the controller. On an
// empty directory it returns once the founding handshake is settled: the
// controller founded the cluster or waits to be added.
func (tc *Controller) Start(t testing.TB) {
	require.NoError(t, tc.start())
}

func (tc *Controller) start() error {
	var listener net.Listener
	var err error
	for attempt := 0; attempt < 50; attempt++ {
		if listener, err = net.Listen("tcp", tc.Addr); err == nil {
			break
		}
		time.Sleep(100 * time.Millisecond) // a restarted controller's old socket is closing
	}
	if err != nil {
		return err
	}
	timeout := tc.SessionTimeout
	if timeout == 0 {
		timeout = time.Minute
	}
	cluster := tc.ClusterID
	if cluster == "" {
		cluster = "test-cluster"
	}
	// The founding handshake waits for the founding peers; a test that
	// never starts them fails here rather than hanging.
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c, err := rpc.StartController(ctx, rpc.ControllerConfig{
		Node:      node.Config{ID: tc.ID, ElectionTicks: 10, HeartbeatTicks: 1, SessionTimeout: timeout},
		ClusterID: cluster, DataDir: tc.Dir, Peers: tc.Peers, PushURLs: tc.PushURLs,
		Tick: 20 * time.Millisecond, Listener: listener, Security: tc.Security, TLS: tc.TLS, Join: tc.Join,
		InitialClusterState: tc.InitialClusterState, Logger: tc.Logger,
	})
	if err != nil {
		_ = listener.Close()
		return fmt.Errorf("controller %d: %w", tc.ID, err)
	}
	tc.c = c
	return nil
}

// Stop stops the controller gracefully.
func (tc *Controller) Stop(t testing.TB) {
	if tc.c != nil {
		require.NoError(t, tc.c.Stop())
		tc.c = nil
	}
}

// Cluster is a set of controllers that know each other.
type Cluster []*Controller

// Start starts count controllers on loopback ephemeral ports, each with
// its own Pebble directory; configure may adjust each before it starts.
func Start(t testing.TB, count int, configure func(*Controller)) Cluster {
	var cluster Cluster
	var peers []node.Peer
	for id := uint64(1); id <= uint64(count); id++ {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		require.NoError(t, err)
		addr := l.Addr().String()
		require.NoError(t, l.Close())
		cluster = append(cluster, &Controller{ID: id, Addr: addr, Dir: t.TempDir()})
		peers = append(peers, node.Peer{ID: id, URL: "http://" + addr})
	}
	for _, tc := range cluster {
		tc.Peers = peers
		if configure != nil {
			configure(tc)
		}
	}
	t.Cleanup(func() {
		for _, tc := range cluster {
			tc.Stop(t)
		}
	})
	// Together, as a cluster's processes start: each founding controller
	// waits for the others to answer the founding handshake.
	errs := make([]error, len(cluster))
	var wg sync.WaitGroup
	for i, tc := range cluster {
		wg.Go(func() { errs[i] = tc.start() })
	}
	wg.Wait()
	require.NoError(t, errors.Join(errs...))
	return cluster
}

// URLs are the controllers' base URLs.
func (c Cluster) URLs() []string {
	var out []string
	for _, tc := range c {
		out = append(out, tc.URL())
	}
	return out
}

// WaitLeader waits until a running controller reports itself the leader.
func (c Cluster) WaitLeader(t testing.TB) *Controller {
	var leader *Controller
	require.Eventually(t, func() bool {
		for _, tc := range c {
			if !tc.Running() {
				continue
			}
			var opts []connect.ClientOption
			if tc.ProbeToken != "" {
				opts = append(opts, wire.BearerToken(tc.ProbeToken))
			}
			client := metadatav1connect.NewQuorumServiceClient(wire.NewHTTPClient(tc.ProbeTLS), tc.URL(), opts...)
			resp, err := client.DescribeQuorum(context.Background(), connect.NewRequest(&metadatav1.DescribeQuorumRequest{}))
			if err == nil && resp.Msg.GetLeaderId() == tc.ID {
				leader = tc
				return true
			}
		}
		return false
	}, 15*time.Second, 20*time.Millisecond)
	return leader
}
