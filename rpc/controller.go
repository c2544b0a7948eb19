package rpc

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/dmq-project/metadata/node"
	"github.com/dmq-project/metadata/node/runner"
	"github.com/dmq-project/metadata/rpc/api"
	"github.com/dmq-project/metadata/rpc/auth"
	"github.com/dmq-project/metadata/rpc/metrics"
	"github.com/dmq-project/metadata/rpc/peer"
	"github.com/dmq-project/metadata/rpc/push"
	"github.com/dmq-project/metadata/storage"
	"github.com/dmq-project/metadata/wire"
	"github.com/prometheus/client_golang/prometheus"
)

// ControllerConfig is everything needed to run one controller process.
type ControllerConfig struct {
	Node      node.Config
	ClusterID string
	DataDir   string
	// FS is the file system of the data directory; vfs.Default if nil.
	FS vfs.FS
	// Peers are the founding members, used to bootstrap an empty store and
	// to reach the peers.
	Peers []node.Peer
	// Join starts an empty store without bootstrapping it: the controller
	// waits to be added (AddLearner, AddVoter) and receives the state from
	// the leader. A store that has state ignores it.
	Join bool
	// InitialClusterState says how an empty store starts: the founding
	// handshake (auto, the default), founding at once (new), or waiting to
	// be added (existing, as Join).
	InitialClusterState InitialClusterState
	// PushURLs maps broker ids to their push endpoints: StorageSyncService,
	// or the seed's /api/v1/storage/metadata for those in SeedPush.
	PushURLs map[int32]string
	SeedPush map[int32]bool
	// SeedClusterView: GET /api/v1/metadata/cluster answers in the seed's
	// shape by default (api.ServerConfig.SeedClusterView).
	SeedClusterView bool
	Tick            time.Duration
	Listener        net.Listener
	Logger          *slog.Logger
	Security        Security
	// TLS, if enabled, serves every API over TLS and the peer transport
	// over mutual TLS; otherwise the controller serves cleartext HTTP/2.
	TLS auth.TLS
}

// Controller is a running controller: its store, node, runner, transport
// and HTTP server.
type Controller struct {
	cfg       ControllerConfig
	store     storage.Storage
	runner    *runner.Runner
	transport *peer.Transport
	raft      *peer.RaftHandler
	server    *http.Server
	gate      *gate
	identity  *identityService
	metrics   *metrics.Metrics
	cancel    context.CancelFunc
	served    chan error
}

// StartController opens the store, formats it if new, serves the identity
// on the listener at once, founds the cluster on an empty store when the
// founding handshake says so (see node.DecideFounding: it may wait for the
// founding peers, until ctx ends), starts the node and serves every API.
func StartController(ctx context.Context, cfg ControllerConfig) (*Controller, error) {
	if cfg.FS == nil {
		cfg.FS = vfs.Default
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.FS == vfs.Default {
		if err := os.MkdirAll(cfg.DataDir, 0o755); err != nil {
			return nil, err
		}
	}
	store, err := storage.OpenPebble(cfg.DataDir, cfg.FS)
	if err != nil {
		return nil, err
	}
	c := &Controller{cfg: cfg, store: store, metrics: metrics.New(), served: make(chan error, 1)}
	if err := c.start(ctx); err != nil {
		_ = store.Close()
		return nil, err
	}
	return c, nil
}

// forwardConnectTimeout bounds connecting to the leader for a forwarded
// call (dial and TLS handshake).
const forwardConnectTimeout = time.Second

func (c *Controller) start(ctx context.Context) error {
	cfg := c.cfg
	cfg.Node.ClusterID = cfg.ClusterID
	// The directory id is persisted before anyone is told it: every
	// founder then records the same directory for this controller.
	identity, err := node.Format(c.store, cfg.ClusterID, cfg.Node.ID, runner.NewRand())
	if err != nil {
		return err
	}
	peerClient, pushClient := wire.NewHTTPClient(nil), wire.NewHTTPClient(nil)
	var seedPushTLS *tls.Config
	// material is nil unless the controller serves TLS; its peer client
	// configuration is the transport's, and every peer endpoint asks for
	// the cluster's certificate.
	var material *auth.TLSMaterial
	var peerTLS *tls.Config
	if cfg.TLS.Enabled() {
		if material, err = auth.LoadTLS(cfg.TLS); err != nil {
			return fmt.Errorf("TLS: %w", err)
		}
		peerTLS = material.PeerClient()
		peerClient, pushClient = wire.NewHTTPClient(peerTLS), wire.NewHTTPClient(material.PushClient())
		seedPushTLS = material.PushClient()
	}

	// The listener serves the identity before the node exists (the
	// founding peers ask it of each other), and the rest once it runs.
	refusals := peer.NewRefusals(cfg.Logger, c.metrics.PeerRefused())
	admitPeers, err := cfg.Security.peerAdmission(material).Wrapper(refusals)
	if err != nil {
		return err
	}
	c.identity = &identityService{identity: identity}
	c.gate = &gate{self: cfg.Node.ID, identity: c.identity.handler(admitPeers, refusals)}
	c.server = wire.NewHTTPServer(cfg.Listener.Addr().String(), c.gate)
	// Failed TLS handshakes (a stranger's certificate, a cleartext
	// client) belong in the structured log, not on stderr.
	c.server.ErrorLog = slog.NewLogLogger(cfg.Logger.Handler(), slog.LevelWarn)
	listener := bufferedListener{cfg.Listener}
	if material != nil {
		c.server.TLSConfig = material.Server()
		go func() { c.served <- c.server.ServeTLS(listener, "", "") }()
	} else {
		go func() { c.served <- c.server.Serve(listener) }()
	}
	stopServing := func() { _ = c.server.Close() }

	asker := foundingAsker{self: identity, client: peerClient, https: material != nil, peerToken: cfg.Security.PeerToken}
	founding, err := c.found(ctx, asker)
	if err != nil {
		stopServing()
		return err
	}

	c.transport = peer.NewTransport(cfg.Node.ID, cfg.ClusterID, peerClient, cfg.Logger,
		peer.TransportOptions{PeerToken: cfg.Security.PeerToken, TLS: peerTLS})
	for _, p := range cfg.Peers {
		c.transport.SetPeer(p.ID, p.URL)
		if p.ID == cfg.Node.ID {
			c.transport.Advertise(p.URL)
		}
	}
	targets := map[int32]push.Target{}
	for id, url := range cfg.PushURLs {
		targets[id] = push.Target{URL: url, Seed: cfg.SeedPush[id]}
	}
	pusher := push.New(pushClient, seedPushTLS, targets, c.metrics)
	worker := &runner.Worker{}
	if cfg.Node.Logger == nil {
		cfg.Node.Logger = newRaftLogger(cfg.Logger)
	}
	n, err := node.New(cfg.Node, timedStorage{Storage: c.store, seconds: c.metrics.SaveSeconds,
		snapshotSeconds: c.metrics.SnapshotPersistSeconds}, node.Env{
		Transport: c.transport, Clock: runner.WallClock{}, Rand: runner.NewRand(), Pusher: pusher,
		Events: bothEvents{newEventLog(cfg.Logger), c.metrics}, Worker: worker,
	})
	if err != nil {
		c.transport.Close()
		stopServing()
		return err
	}
	if founding == nil {
		// A snapshot at index 1 is the founding one (founded earlier, or
		// received from a leader that never compacted): its voters are
		// the founding voters a late founder needs.
		if st := n.Status(); st.SnapshotIndex == 1 {
			for _, m := range st.Members {
				if !m.Learner {
					founding = append(founding, node.Peer{ID: m.ID, URL: m.URL, DirectoryID: m.DirectoryID})
				}
			}
		}
	}
	c.runner = runner.Start(n, cfg.Tick)
	c.identity.running(c.runner, founding)
	// Outcomes the node waits for (snapshots, pushes) reach it however
	// busy it is: reports never block and are never dropped.
	c.transport.Attach(c.runner)
	pusher.Attach(c.runner.Report)
	worker.Attach(c.runner.Report)
	server := api.NewServer(c.runner, api.ServerConfig{Metrics: c.metrics, HTTPS: material != nil, AskIdentity: asker.ask,
		SeedClusterView: cfg.SeedClusterView})
	// The Raft handler logs and counts its refusals apart from the
	// identity's: each reason is logged once per interval on each.
	c.raft = peer.NewRaftHandler(cfg.ClusterID, cfg.Node.ID, c.runner, peer.NewRefusals(cfg.Logger, c.metrics.PeerRefused()))
	c.raft.LearnAddresses(c.transport)
	// Forwarded calls get a client of their own: they never queue behind
	// the Raft messages on the transport's connections. A leader that
	// cannot be reached at all leaves the refusal standing within a
	// second, rather than holding the call to its deadline.
	forwardClient := wire.NewHTTPClient(peerTLS)
	if transport, ok := forwardClient.Transport.(*http.Transport); ok {
		transport.DialContext = (&net.Dialer{Timeout: forwardConnectTimeout}).DialContext
		transport.TLSHandshakeTimeout = forwardConnectTimeout
	}
	forward := &api.Forwarder{Self: cfg.Node.ID, ClusterID: cfg.ClusterID, Client: forwardClient, HTTPS: material != nil,
		Observe: c.metrics.ObserveForward}
	handler, err := NewHandler(server, c.raft, c.metrics, cfg.Logger, cfg.Security, material, forward)
	if err != nil {
		_ = c.runner.Stop()
		c.transport.Close()
		stopServing()
		return err
	}
	pollCtx, cancel := context.WithCancel(context.Background())
	c.cancel = cancel
	go c.metrics.Poll(pollCtx, c.runner, time.Second)
	c.gate.open(handler)
	return nil
}

// found founds the cluster on an empty store when it should, and returns
// the founding voters it founded with (nil if it did not found: the store
// holds state already, or the controller waits to be added).
func (c *Controller) found(ctx context.Context, asker foundingAsker) ([]node.Peer, error) {
	cfg, logger := c.cfg, c.cfg.Logger
	last, err := c.store.LastIndex()
	if err != nil {
		return nil, err
	}
	snap, err := c.store.Snapshot()
	if err != nil {
		return nil, err
	}
	if last != 0 || snap.GetMetadata().GetIndex() != 0 {
		return nil, nil
	}
	state := cfg.InitialClusterState
	if state == "" {
		state = ClusterStateAuto
	}
	if cfg.Join && state == ClusterStateNew {
		return nil, errors.New("a controller told to join a running cluster cannot also found a new one (initial cluster state new)")
	}
	var voters []node.Peer
	switch {
	case cfg.Join || state == ClusterStateExisting:
		logger.Info("the data directory is empty: waiting to be added to a running cluster", "directory", fmt.Sprintf("%x", asker.self.DirectoryID))
		return nil, nil
	case state == ClusterStateNew:
		voters = c.foundingPeers()
		logger.Warn("founding a new cluster without asking the founding peers (initial cluster state new): their directories are not recorded",
			"peers", len(voters))
	case state == ClusterStateAuto:
		d, err := asker.awaitFounding(ctx, cfg.Peers, logger)
		if err != nil {
			return nil, err
		}
		switch d.Outcome {
		case node.WaitToBeAdded:
			level := slog.LevelWarn
			if d.Replaced {
				// The operator must act: remove the lost voter and add this
				// controller back under a new id.
				level = slog.LevelError
			}
			logger.Log(ctx, level, "not founding the cluster: this controller waits to be added and does not vote",
				"directory", fmt.Sprintf("%x", asker.self.DirectoryID), "reason", d.Reason)
			return nil, nil
		case node.Found:
			voters = d.Voters
			logger.Info("founding the cluster", "voters", describeFounders(voters), "reason", d.Reason)
		default:
			return nil, fmt.Errorf("founding handshake: unexpected outcome %v", d.Outcome)
		}
	default:
		return nil, fmt.Errorf("unknown initial cluster state %q", state)
	}
	if err := node.Bootstrap(c.store, voters); err != nil {
		return nil, fmt.Errorf("bootstrapping: %w", err)
	}
	return voters, nil
}

func describeFounders(voters []node.Peer) []string {
	out := make([]string, 0, len(voters))
	for _, p := range voters {
		out = append(out, fmt.Sprintf("%d:%x", p.ID, p.DirectoryID))
	}
	return out
}

// Addr is where the controller listens.
func (c *Controller) Addr() net.Addr { return c.cfg.Listener.Addr() }

// Done is closed when the node stops on its own (a storage failure).
func (c *Controller) Done() <-chan struct{} { return c.runner.Done() }

// Err is why the node stopped, once Done is closed.
func (c *Controller) Err() error { return c.runner.Err() }

// Served reports the HTTP server's exit.
func (c *Controller) Served() <-chan error { return c.served }

// Stop shuts the controller down gracefully: the HTTP server drains, the
// node stops, the store closes. It returns a storage failure if the node
// had stopped on one.
func (c *Controller) Stop() error {
	c.cancel()
	// The node stops first: requests still waiting on it end with
	// "shutting down" (clients retry elsewhere), and peer streams end at
	// their next message, so the server drains quickly.
	err := c.runner.Stop()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if c.server.Shutdown(ctx) != nil {
		// Streams that stayed open: cut them, so that peers reconnect to
		// whoever listens next.
		_ = c.server.Close()
	}
	c.raft.Close()
	c.transport.Close()
	if cerr := c.store.Close(); cerr != nil && err == nil && !errors.Is(cerr, storage.ErrClosed) {
		err = cerr
	}
	return err
}

// timedStorage measures each Save: the fsync latency the metrics report.
type timedStorage struct {
	storage.Storage
	seconds         prometheus.Histogram
	snapshotSeconds prometheus.Histogram
}

// StageSnapshot measures the write of a snapshot's data (off the node's
// goroutine).
func (s timedStorage) StageSnapshot(index uint64, data []byte) error {
	started := time.Now()
	err := s.Storage.StageSnapshot(index, data)
	s.snapshotSeconds.Observe(time.Since(started).Seconds())
	return err
}

func (s timedStorage) Save(u storage.Update) error {
	started := time.Now()
	err := s.Storage.Save(u)
	s.seconds.Observe(time.Since(started).Seconds())
	return err
}

// foundingPeers are the configured peers, with this controller's own
// directory recorded when it founds a cluster alone (initial cluster state
// new: the peers' directories are unknown).
func (c *Controller) foundingPeers() []node.Peer {
	peers := append([]node.Peer(nil), c.cfg.Peers...)
	if len(peers) == 1 && peers[0].ID == c.cfg.Node.ID {
		if identity, ok, err := c.store.Identity(); err == nil && ok {
			peers[0].DirectoryID = identity.DirectoryID
		}
	}
	return peers
}
