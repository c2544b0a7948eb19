// Command dmqd is a DMQ metadata controller: it serves the metadata API
// (Connect, gRPC, REST at the seed's paths) and replicates the metadata
// with its peers through Raft, on Pebble.
//
// With no configuration it runs a single-node controller on port 8080 with
// its data in ./data/metadata.
package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/debug"
	"strconv"
	"syscall"
	"time"

	"github.com/dmq-project/metadata/node"
	"github.com/dmq-project/metadata/rpc"
	"github.com/dmq-project/metadata/rpc/auth"
	"github.com/dmq-project/metadata/wire"
	"gopkg.in/natefinch/lumberjack.v2"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "dmqd:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	for _, arg := range args {
		if arg == "--version" || arg == "-version" {
			fmt.Println("dmqd", wire.Build())
			return nil
		}
	}
	cfg, err := loadConfig(args, os.Getenv)
	if err != nil {
		return err
	}
	logger := newLogger(cfg.Log.Level)
	gcPercent := os.Getenv("GOGC")
	if gcPercent == "" {
		debug.SetGCPercent(cfg.Runtime.GCPercent)
		gcPercent = strconv.Itoa(cfg.Runtime.GCPercent)
	}
	var services *Services
	if cfg.Services.ConfigPath != "none" {
		services, err = loadServices(cfg.Services.ConfigPath, cfg.Services.ConfigPath != defaultConfig().Services.ConfigPath)
		if err != nil {
			return fmt.Errorf("loading services: %w", err)
		}
	}
	peers, self, err := resolvePeers(&cfg, services)
	if err != nil {
		return err
	}
	pushURLs := map[int32]string{}
	if services != nil {
		for _, e := range services.Services.StorageServices {
			pushURLs[int32(e.ID)] = e.Endpoint()
		}
	}

	if err := os.MkdirAll(cfg.Metadata.DataDir, 0o755); err != nil {
		return err
	}
	auditPath := cfg.Security.AuditLog
	if auditPath == "" {
		auditPath = filepath.Join(cfg.Metadata.DataDir, "audit.log")
	}
	// Rotated by size, a bounded number kept: the audit log cannot fill the
	// disk the Raft log needs.
	audit := &lumberjack.Logger{Filename: auditPath, MaxSize: cfg.Security.AuditLogMaxMB,
		MaxBackups: cfg.Security.AuditLogKeep, LocalTime: false}
	if _, err := audit.Write(nil); err != nil { // opens it now: an unwritable path stops dmqd at start
		return fmt.Errorf("opening the audit log: %w", err)
	}
	defer audit.Close()
	authenticator, err := auth.NewAuthenticator(cfg.Security.TokensFile, []byte(cfg.Security.JWTSecret))
	if err != nil {
		return fmt.Errorf("loading tokens: %w", err)
	}
	addr := net.JoinHostPort(cfg.Server.Host, strconv.Itoa(cfg.Server.Port))
	listener, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	initialState, err := rpc.ParseInitialClusterState(cfg.Metadata.InitialClusterState)
	if err != nil {
		return err
	}
	// A signal also ends the wait for the founding peers.
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	controller, err := rpc.StartController(ctx, rpc.ControllerConfig{
		Node: node.Config{
			ID:                       self,
			ElectionTicks:            cfg.electionTicks(),
			HeartbeatTicks:           cfg.ticksPerHeartbeat(),
			RequestTimeoutTicks:      cfg.requestTimeoutTicks(),
			MaxLogEntries:            cfg.Raft.MaxLogEntries,
			SessionTimeout:           time.Duration(cfg.Services.HeartbeatTimeoutMs) * time.Millisecond,
			ClientSessionTimeout:     time.Duration(cfg.Metadata.ClientSessionTimeoutMs) * time.Millisecond,
			DefaultReplicationFactor: cfg.Replication.DefaultReplicationFactor,
			DefaultMinISR:            cfg.Replication.MinISR,
			RebalanceInterval:        node.DefaultRebalanceInterval,
		},
		ClusterID:           cfg.Metadata.ClusterID,
		DataDir:             cfg.Metadata.DataDir,
		Peers:               peers,
		Join:                cfg.Metadata.Join,
		InitialClusterState: initialState,
		PushURLs:            pushURLs,
		Tick:                cfg.tick(),
		Listener:            listener,
		Logger:              logger,
		Security: rpc.Security{
			RateLimit:       auth.RateLimit{PerSecond: float64(cfg.Security.RateLimitRPS), Burst: cfg.Security.RateLimitBurst},
			MaxRequestBytes: cfg.Security.MaxRequestBytes,
			Audit:           audit,
			Auth:            authenticator,
			PeerToken:       cfg.Security.PeerToken,
		},
		TLS: auth.TLS(cfg.Security.TLS),
	})
	if err != nil {
		_ = listener.Close()
		if ctx.Err() != nil {
			logger.Info("stopped before the controller started", "reason", err)
			return nil
		}
		return err
	}
	logger.Info("dmqd started", "id", self, "cluster", cfg.Metadata.ClusterID, "listen", listener.Addr().String(),
		"data", cfg.Metadata.DataDir, "tls", auth.TLS(cfg.Security.TLS).Enabled(), "join", cfg.Metadata.Join, "initial_cluster_state", initialState, "gogc", gcPercent, "audit", auditPath, "peers", len(peers), "storage_services", len(pushURLs),
		"election_timeout_ms", cfg.Raft.ElectionTimeoutMs, "heartbeat_interval_ms", cfg.Raft.HeartbeatIntervalMs)
	switch {
	case !auth.TLS(cfg.Security.TLS).Enabled() && authenticator == nil:
		logger.Warn("serving plaintext HTTP/2 (h2c) without authentication: anyone who reaches this port can change " +
			"the metadata and send Raft messages; keep it on a trusted network, or set security.tls.* and " +
			"security.tokens-file or security.jwt-secret")
	case !auth.TLS(cfg.Security.TLS).Enabled():
		logger.Warn("serving plaintext HTTP/2 (h2c): bearer tokens travel in the clear and peers are not " +
			"authenticated by certificate; set security.tls.* to serve TLS and mutual TLS between controllers")
	case authenticator == nil:
		logger.Warn("serving TLS without authentication: any client can change the metadata " +
			"(security.tokens-file or security.jwt-secret turns authentication on)")
	}

	var failure error
	select {
	case <-ctx.Done():
		logger.Info("shutting down")
	case err := <-controller.Served():
		failure = fmt.Errorf("serving: %w", err)
	case <-controller.Done():
		failure = fmt.Errorf("the controller stopped: %w (restart to recover from disk)", controller.Err())
	}
	if err := controller.Stop(); err != nil && failure == nil {
		failure = err
	}
	if failure != nil && !errors.Is(failure, http.ErrServerClosed) {
		return failure
	}
	logger.Info("stopped")
	return nil
}

// resolvePeers picks this controller's id and the founding peers: the
// metadata services of services.json, or this controller alone.
func resolvePeers(cfg *Config, services *Services) ([]node.Peer, uint64, error) {
	if services == nil || len(services.Services.MetadataServices) == 0 {
		id := cfg.Metadata.NodeID
		if id == 0 {
			id = 1
		}
		host := cfg.Server.Host
		if host == "" {
			host = "localhost"
		}
		return []node.Peer{{ID: id, URL: fmt.Sprintf("http://%s:%d", host, cfg.Server.Port)}}, id, nil
	}
	var peers []node.Peer
	var selfEntry *ServiceEntry
	for i, e := range services.Services.MetadataServices {
		peers = append(peers, node.Peer{ID: uint64(e.ID), URL: e.Endpoint()})
		if uint64(e.ID) == cfg.Metadata.NodeID {
			selfEntry = &services.Services.MetadataServices[i]
		}
	}
	if cfg.Metadata.NodeID == 0 {
		return nil, 0, fmt.Errorf("%s lists %d controllers: say which one this is with --id", cfg.Services.ConfigPath, len(peers))
	}
	if selfEntry == nil {
		return nil, 0, fmt.Errorf("--id %d is not among the metadata services of %s", cfg.Metadata.NodeID, cfg.Services.ConfigPath)
	}
	if selfEntry.Port != 0 && cfg.Server.Port == defaultConfig().Server.Port {
		cfg.Server.Port = selfEntry.Port
	}
	return peers, cfg.Metadata.NodeID, nil
}

func newLogger(level string) *slog.Logger {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		l = slog.LevelInfo
	}
	return slog.New(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: l}))
}
