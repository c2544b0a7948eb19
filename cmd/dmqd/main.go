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
	"strings"
	"syscall"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/dmq-project/metadata/node"
	"github.com/dmq-project/metadata/node/runner"
	"github.com/dmq-project/metadata/rpc"
	"github.com/dmq-project/metadata/rpc/auth"
	"github.com/dmq-project/metadata/storage"
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
	if len(args) > 0 && args[0] == "restore" {
		return restore(args[1:])
	}
	if len(args) > 0 && args[0] == "probe" {
		return probeCommand(args[1:])
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
	pushURLs, seedPush := map[int32]string{}, map[int32]bool{}
	if services != nil {
		for _, e := range services.Services.StorageServices {
			pushURLs[int32(e.ID)] = e.Endpoint()
			seedPush[int32(e.ID)] = e.Protocol == ProtocolSeedREST
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
	if authenticator != nil {
		authenticator.RequireJWTClaims(cfg.Security.JWTIssuer, cfg.Security.JWTAudience)
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
			SeedResyncInterval:       seedResyncInterval(cfg.Services.SeedResyncIntervalMs),
			ClientSessionTimeout:     time.Duration(cfg.Metadata.ClientSessionTimeoutMs) * time.Millisecond,
			DefaultReplicationFactor: cfg.Replication.DefaultReplicationFactor,
			DefaultMinISR:            cfg.Replication.MinISR,
			RebalanceInterval:        node.DefaultRebalanceInterval,
			RebalanceOnJoin:          cfg.Replication.RebalanceOnJoin,
		},
		ClusterID:           cfg.Metadata.ClusterID,
		DataDir:             cfg.Metadata.DataDir,
		Peers:               peers,
		Join:                cfg.Metadata.Join,
		InitialClusterState: initialState,
		PushURLs:            pushURLs,
		SeedPush:            seedPush,
		SeedClusterView:     cfg.Server.ClusterView == "seed",
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

// restore is `dmqd restore --from FILE [configuration]`: disaster
// recovery. It founds a new cluster on this controller's empty data
// directory from a backup (dmqctl snapshot save), with the configured
// controllers (metadata-services) as its voters, and exits; start dmqd
// with the same configuration afterwards. Every controller of the new
// cluster restores the same backup (as etcd's snapshot restore does).
// Metadata versions continue from the backup's.
func restore(args []string) error {
	var from string
	rest := make([]string, 0, len(args))
	for i := 0; i < len(args); i++ {
		switch {
		case args[i] == "--from" && i+1 < len(args):
			from = args[i+1]
			i++
		case strings.HasPrefix(args[i], "--from="):
			from = strings.TrimPrefix(args[i], "--from=")
		default:
			rest = append(rest, args[i])
		}
	}
	if from == "" {
		return errors.New("restore: --from FILE names the backup (dmqctl snapshot save FILE)")
	}
	file, err := os.ReadFile(from)
	if err != nil {
		return fmt.Errorf("restore: %w", err)
	}
	backup, err := node.DecodeBackup(file)
	if err != nil {
		return fmt.Errorf("restore: %s: %w", from, err)
	}
	cfg, err := loadConfig(rest, os.Getenv)
	if err != nil {
		return err
	}
	var services *Services
	if cfg.Services.ConfigPath != "none" {
		if services, err = loadServices(cfg.Services.ConfigPath, cfg.Services.ConfigPath != defaultConfig().Services.ConfigPath); err != nil {
			return fmt.Errorf("loading services: %w", err)
		}
	}
	peers, self, err := resolvePeers(&cfg, services)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(cfg.Metadata.DataDir, 0o755); err != nil {
		return err
	}
	store, err := storage.OpenPebble(cfg.Metadata.DataDir, vfs.Default)
	if err != nil {
		return err
	}
	defer store.Close()
	last, err := store.LastIndex()
	if err != nil {
		return err
	}
	if snap, err := store.Snapshot(); err != nil || last != 0 || snap.GetMetadata().GetIndex() != 0 {
		return fmt.Errorf("restore: %s holds a controller's state already: restore into an empty data directory", cfg.Metadata.DataDir)
	}
	if _, err := node.Format(store, cfg.Metadata.ClusterID, self, runner.NewRand()); err != nil {
		return fmt.Errorf("restore: %w", err)
	}
	if err := node.Restore(store, peers, backup); err != nil {
		return fmt.Errorf("restore: %w", err)
	}
	fmt.Printf("restored the backup at index %d into %s as controller %d of %d: start dmqd with the same configuration\n",
		backup.Index, cfg.Metadata.DataDir, self, len(peers))
	return nil
}

// seedResyncInterval is services.seed-resync-interval-ms for the node,
// where 0 turns the resync off (the node reads 0 as its default).
func seedResyncInterval(ms int) time.Duration {
	if ms == 0 {
		return -1
	}
	return time.Duration(ms) * time.Millisecond
}
