package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/dmq-project/metadata/node"
	"github.com/dmq-project/metadata/rpc"
	"github.com/dmq-project/metadata/statemachine"
	"go.yaml.in/yaml/v3"
)

// Config holds the seed's configuration keys. Precedence, lowest first:
// defaults, the YAML file (--config), DMQ_* environment variables, flags.
type Config struct {
	Server struct {
		Port int `yaml:"port"`
		// Host is the address to listen on (all interfaces by default).
		Host string `yaml:"host"`
		// ClusterView is the shape of GET /api/v1/metadata/cluster when
		// the caller does not ask (?view=): dmq (GetClusterMetadata) or
		// seed (the Java service's, which its storage services parse).
		ClusterView string `yaml:"cluster-view"`
	} `yaml:"server"`
	Metadata struct {
		ClusterID string `yaml:"cluster-id"`
		DataDir   string `yaml:"data-dir"`
		NodeID    uint64 `yaml:"node-id"`
		// Join starts an empty controller that waits to be added to a
		// running cluster instead of founding one.
		Join bool `yaml:"join"`
		// InitialClusterState is how an empty data directory starts: auto
		// (the founding handshake), new (found at once) or existing (wait
		// to be added, as join).
		InitialClusterState string `yaml:"initial-cluster-state"`
		// ClientSessionTimeoutMs is how long a client session lives
		// without a request applied; clients stop retrying before it.
		ClientSessionTimeoutMs int `yaml:"client-session-timeout-ms"`
	} `yaml:"metadata"`
	Raft struct {
		ElectionTimeoutMs   int    `yaml:"election-timeout-ms"`
		HeartbeatIntervalMs int    `yaml:"heartbeat-interval-ms"`
		MaxLogEntries       uint64 `yaml:"max-log-entries"`
	} `yaml:"raft"`
	Replication struct {
		DefaultReplicationFactor int32 `yaml:"default-replication-factor"`
		MinISR                   int32 `yaml:"min-ISR"`
		// RebalanceOnJoin: a broker registering for the first time gets
		// its share through a balancing plan.
		RebalanceOnJoin bool `yaml:"rebalance-on-join"`
	} `yaml:"replication"`
	Services struct {
		ConfigPath         string `yaml:"config-path"`
		HeartbeatTimeoutMs int    `yaml:"heartbeat-timeout-ms"`
		// SeedResyncIntervalMs: how often a seed-rest storage service gets
		// a full state regardless (0: never).
		SeedResyncIntervalMs int `yaml:"seed-resync-interval-ms"`
	} `yaml:"services"`
	Log struct {
		Level string `yaml:"level"`
	} `yaml:"log"`
	Runtime struct {
		// GCPercent is Go's GOGC for dmqd: the heap may grow this many
		// percent over the live data before a collection. The metadata's
		// live heap is small (about 90 bytes per partition), and at the
		// runtime's default of 100 garbage collection took a quarter of a
		// loaded controller's CPU. A GOGC environment variable wins.
		GCPercent int `yaml:"gc-percent"`
	} `yaml:"runtime"`
	Security struct {
		// RateLimitRPS and RateLimitBurst bound each client's API requests.
		RateLimitRPS   int `yaml:"rate-limit-rps"`
		RateLimitBurst int `yaml:"rate-limit-burst"`
		// MaxRequestBytes bounds one API request.
		MaxRequestBytes int `yaml:"max-request-bytes"`
		// AuditLog is the audit log's file; empty: audit.log in the data
		// directory.
		AuditLog string `yaml:"audit-log"`
		// AuditLogMaxMB rotates the audit log at this size; AuditLogKeep
		// rotated files are kept (the oldest go first).
		AuditLogMaxMB int `yaml:"audit-log-max-mb"`
		AuditLogKeep  int `yaml:"audit-log-keep"`
		// TokensFile and JWTSecret turn authentication on (either or both);
		// PeerToken is the CONTROLLER token this controller sends to peers.
		TokensFile string `yaml:"tokens-file"`
		JWTSecret  string `yaml:"jwt-secret"`
		// JWTIssuer and JWTAudience, when set, must be every JWT's iss
		// and one of its aud.
		JWTIssuer   string `yaml:"jwt-issuer"`
		JWTAudience string `yaml:"jwt-audience"`
		PeerToken   string `yaml:"peer-token"`
		// TLS serves every API over TLS and the peer transport over mutual
		// TLS; without CertFile the controller serves cleartext h2c.
		TLS TLSConfig `yaml:"tls"`
	} `yaml:"security"`
}

// TLSConfig is security.tls: the files of auth.TLS.
type TLSConfig struct {
	CertFile          string `yaml:"cert-file"`
	KeyFile           string `yaml:"key-file"`
	PeerCAFile        string `yaml:"peer-ca-file"`
	ClientCAFile      string `yaml:"client-ca-file"`
	RequireClientCert bool   `yaml:"require-client-cert"`
}

func defaultConfig() Config {
	var c Config
	c.Server.Port = 8080
	c.Server.ClusterView = "dmq"
	c.Metadata.ClusterID = "dmq-cluster-1"
	c.Metadata.DataDir = "./data/metadata"
	c.Metadata.InitialClusterState = string(rpc.ClusterStateAuto)
	c.Metadata.ClientSessionTimeoutMs = int(node.DefaultClientSessionTimeout.Milliseconds())
	c.Raft.ElectionTimeoutMs = 1000
	c.Raft.HeartbeatIntervalMs = 100
	c.Raft.MaxLogEntries = 1000
	c.Replication.DefaultReplicationFactor = 1
	c.Replication.MinISR = 1
	c.Replication.RebalanceOnJoin = true
	c.Services.ConfigPath = "config/services.json"
	c.Services.HeartbeatTimeoutMs = 30000
	c.Services.SeedResyncIntervalMs = int(node.DefaultSeedResyncInterval / time.Millisecond)
	c.Log.Level = "info"
	c.Runtime.GCPercent = 400
	c.Security.RateLimitRPS = 2000
	c.Security.RateLimitBurst = 4000
	c.Security.MaxRequestBytes = 4 << 20
	c.Security.AuditLogMaxMB = 100
	c.Security.AuditLogKeep = 5
	return c
}

// setting binds one key to its YAML-loaded value, its environment
// variable and its flag.
type setting struct {
	key   string
	env   string
	usage string
	apply func(string) error
}

func intSetting[T int | int32 | uint64](key, usage string, target *T) setting {
	return setting{key: key, usage: usage, apply: func(v string) error {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < 0 {
			return fmt.Errorf("%s=%q: want a non-negative integer", key, v)
		}
		*target = T(n)
		return nil
	}}
}

func stringSetting(key, usage string, target *string) setting {
	return setting{key: key, usage: usage, apply: func(v string) error { *target = v; return nil }}
}

func boolSetting(key, usage string, target *bool) setting {
	return setting{key: key, usage: usage, apply: func(v string) error {
		b, err := strconv.ParseBool(v)
		if err != nil {
			return fmt.Errorf("%s=%q: want true or false", key, v)
		}
		*target = b
		return nil
	}}
}

func (c *Config) settings() []setting {
	list := []setting{
		intSetting("server.port", "port to serve every API and the peer transport on", &c.Server.Port),
		stringSetting("server.host", "address to listen on", &c.Server.Host),
		stringSetting("server.cluster-view", "shape of GET /api/v1/metadata/cluster when not asked (?view=): dmq or seed", &c.Server.ClusterView),
		stringSetting("metadata.cluster-id", "cluster id; peers from another cluster are refused", &c.Metadata.ClusterID),
		stringSetting("metadata.data-dir", "directory of this controller's Pebble store", &c.Metadata.DataDir),
		intSetting("metadata.node-id", "this controller's id among services.metadata-services", &c.Metadata.NodeID),
		boolSetting("metadata.join", "start empty and wait to be added to a running cluster (dmqctl quorum add-learner)", &c.Metadata.Join),
		stringSetting("metadata.initial-cluster-state", "how an empty data directory starts: auto (found once every founding peer has answered), new (found at once, without asking the peers) or existing (wait to be added)", &c.Metadata.InitialClusterState),
		intSetting("metadata.client-session-timeout-ms", "a client session with no request applied this long expires (its retries are refused)", &c.Metadata.ClientSessionTimeoutMs),
		intSetting("raft.election-timeout-ms", "Raft election timeout", &c.Raft.ElectionTimeoutMs),
		intSetting("raft.heartbeat-interval-ms", "Raft heartbeat interval (the Raft tick is a tenth of it)", &c.Raft.HeartbeatIntervalMs),
		intSetting("raft.max-log-entries", "applied entries between snapshots", &c.Raft.MaxLogEntries),
		intSetting("replication.default-replication-factor", "replication factor of topics that do not say", &c.Replication.DefaultReplicationFactor),
		intSetting("replication.min-ISR", "default min.insync.replicas", &c.Replication.MinISR),
		boolSetting("replication.rebalance-on-join", "a broker registering for the first time gets its share of replicas and leaders (a balancing plan)", &c.Replication.RebalanceOnJoin),
		stringSetting("services.config-path", "services.json naming peers and storage services (none: a lone controller)", &c.Services.ConfigPath),
		intSetting("services.heartbeat-timeout-ms", "session timeout after which a silent broker is fenced", &c.Services.HeartbeatTimeoutMs),
		intSetting("services.seed-resync-interval-ms", "how often a seed-rest storage service gets a full state regardless (0: never)", &c.Services.SeedResyncIntervalMs),
		stringSetting("log.level", "debug, info, warn or error", &c.Log.Level),
		intSetting("runtime.gc-percent", "Go's GOGC for this process (the GOGC environment variable wins)", &c.Runtime.GCPercent),
		intSetting("security.rate-limit-rps", "API requests per second per client (0: no limit)", &c.Security.RateLimitRPS),
		intSetting("security.rate-limit-burst", "API requests a client may make at once", &c.Security.RateLimitBurst),
		intSetting("security.max-request-bytes", "the largest API request accepted", &c.Security.MaxRequestBytes),
		stringSetting("security.tokens-file", "static bearer tokens with roles (turns authentication on)", &c.Security.TokensFile),
		stringSetting("security.jwt-secret", "HS256 secret for JWT bearer tokens (turns authentication on)", &c.Security.JWTSecret),
		stringSetting("security.jwt-issuer", "the iss every JWT must carry (none required when empty)", &c.Security.JWTIssuer),
		stringSetting("security.jwt-audience", "an aud every JWT must carry (none required when empty)", &c.Security.JWTAudience),
		stringSetting("security.peer-token", "CONTROLLER token sent to peer controllers", &c.Security.PeerToken),
		stringSetting("security.tls.cert-file", "PEM certificate served to clients and presented to peers (turns TLS on)", &c.Security.TLS.CertFile),
		stringSetting("security.tls.key-file", "PEM key of security.tls.cert-file", &c.Security.TLS.KeyFile),
		stringSetting("security.tls.peer-ca-file", "PEM CA of the cluster: peers' certificates must chain to it, both ways", &c.Security.TLS.PeerCAFile),
		stringSetting("security.tls.client-ca-file", "PEM CA of API clients' certificates (optional)", &c.Security.TLS.ClientCAFile),
		boolSetting("security.tls.require-client-cert", "refuse API clients without a certificate", &c.Security.TLS.RequireClientCert),
		stringSetting("security.audit-log", "file of the audit log, one JSON line per mutating request (default: audit.log in the data directory)", &c.Security.AuditLog),
		intSetting("security.audit-log-max-mb", "rotate the audit log at this many MiB", &c.Security.AuditLogMaxMB),
		intSetting("security.audit-log-keep", "rotated audit log files kept", &c.Security.AuditLogKeep),
	}
	for i := range list {
		list[i].env = "DMQ_" + strings.NewReplacer(".", "_", "-", "_").Replace(strings.ToUpper(list[i].key))
	}
	return list
}

// loadConfig builds the configuration from args and the environment.
func loadConfig(args []string, getenv func(string) string) (Config, error) {
	c := defaultConfig()
	fs := flag.NewFlagSet("dmqd", flag.ContinueOnError)
	configPath := fs.String("config", "", "YAML configuration file with the seed's keys")
	id := fs.Uint64("id", 0, "this controller's id (same as metadata.node-id)")
	settings := c.settings()
	flagValues := map[string]*string{}
	for _, s := range settings {
		flagValues[s.key] = fs.String(s.key, "", s.usage+" (env "+s.env+")")
	}
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	if *configPath != "" {
		data, err := os.ReadFile(*configPath)
		if err != nil {
			return c, fmt.Errorf("reading the configuration: %w", err)
		}
		decoder := yaml.NewDecoder(strings.NewReader(string(data)))
		decoder.KnownFields(true)
		if err := decoder.Decode(&c); err != nil {
			return c, fmt.Errorf("%s: %w", *configPath, err)
		}
	}
	for _, s := range settings {
		if v := getenv(s.env); v != "" {
			if err := s.apply(v); err != nil {
				return c, fmt.Errorf("environment %s: %w", s.env, err)
			}
		}
	}
	for _, s := range settings {
		if v := *flagValues[s.key]; v != "" {
			if err := s.apply(v); err != nil {
				return c, fmt.Errorf("flag --%s: %w", s.key, err)
			}
		}
	}
	if *id != 0 {
		c.Metadata.NodeID = *id
	}
	return c, c.validate()
}

func (c Config) validate() error {
	switch {
	case c.Server.Port < 1 || c.Server.Port > 65535:
		return fmt.Errorf("server.port %d is outside 1-65535", c.Server.Port)
	case c.Metadata.ClusterID == "":
		return errors.New("metadata.cluster-id is empty")
	case c.Metadata.DataDir == "":
		return errors.New("metadata.data-dir is empty")
	case c.Raft.HeartbeatIntervalMs < 1:
		return errors.New("raft.heartbeat-interval-ms must be at least 1")
	case c.Raft.ElectionTimeoutMs < 2*c.Raft.HeartbeatIntervalMs:
		return fmt.Errorf("raft.election-timeout-ms %d must be at least twice raft.heartbeat-interval-ms %d",
			c.Raft.ElectionTimeoutMs, c.Raft.HeartbeatIntervalMs)
	case c.Raft.MaxLogEntries < 1:
		return errors.New("raft.max-log-entries must be at least 1")
	case c.Replication.DefaultReplicationFactor < 1 || c.Replication.MinISR < 1:
		return errors.New("replication.default-replication-factor and replication.min-ISR must be at least 1")
	case c.Metadata.ClientSessionTimeoutMs < statemachine.SessionTimeoutMin || c.Metadata.ClientSessionTimeoutMs > statemachine.SessionTimeoutMax:
		return fmt.Errorf("metadata.client-session-timeout-ms %d is outside %d-%d",
			c.Metadata.ClientSessionTimeoutMs, statemachine.SessionTimeoutMin, statemachine.SessionTimeoutMax)
	case c.Server.ClusterView != "dmq" && c.Server.ClusterView != "seed":
		return fmt.Errorf("server.cluster-view is %q: want dmq or seed", c.Server.ClusterView)
	case c.Services.SeedResyncIntervalMs < 0:
		return errors.New("services.seed-resync-interval-ms must not be negative (0 turns it off)")
	case c.Services.HeartbeatTimeoutMs < 1:
		return errors.New("services.heartbeat-timeout-ms must be at least 1")
	case c.Security.RateLimitRPS > 0 && c.Security.RateLimitBurst < 1:
		return errors.New("security.rate-limit-burst must be at least 1 when a rate limit is set")
	case c.Runtime.GCPercent < 25:
		return errors.New("runtime.gc-percent must be at least 25")
	case c.Security.MaxRequestBytes < 1024:
		return errors.New("security.max-request-bytes must be at least 1024")
	case c.Security.AuditLogMaxMB < 1:
		return errors.New("security.audit-log-max-mb must be at least 1")
	case (c.Security.JWTIssuer != "" || c.Security.JWTAudience != "") && c.Security.JWTSecret == "":
		return errors.New("security.jwt-issuer and security.jwt-audience need security.jwt-secret: without it no JWT is accepted")
	case c.Security.AuditLogKeep < 1:
		// The rotation library reads 0 as "keep every file": the disk the
		// Raft log needs would fill after all.
		return errors.New("security.audit-log-keep must be at least 1")
	}
	state, err := rpc.ParseInitialClusterState(c.Metadata.InitialClusterState)
	if err != nil {
		return fmt.Errorf("metadata.initial-cluster-state: %w", err)
	}
	if c.Metadata.Join && state == rpc.ClusterStateNew {
		return errors.New("metadata.join and metadata.initial-cluster-state new contradict each other: a joining controller does not found a cluster")
	}
	t := c.Security.TLS
	if t != (TLSConfig{}) && (t.CertFile == "" || t.KeyFile == "" || t.PeerCAFile == "") {
		return errors.New("security.tls needs cert-file, key-file and peer-ca-file together")
	}
	return nil
}

// ticksPerHeartbeat divides the heartbeat interval into Raft ticks. Raft
// draws its randomised election timeout in whole ticks: with one tick per
// 100 ms heartbeat there were ten possible timeouts between 1 and 2 s, and
// two followers of a dead leader now and then campaigned within a round
// trip of each other, split the vote and waited a second timeout. Ten
// ticks per heartbeat make that a hundred.
func (c Config) ticksPerHeartbeat() int { return min(10, c.Raft.HeartbeatIntervalMs) }

// tick is the Raft tick; at least a millisecond.
func (c Config) tick() time.Duration {
	return time.Duration(c.Raft.HeartbeatIntervalMs) * time.Millisecond / time.Duration(c.ticksPerHeartbeat())
}

func (c Config) electionTicks() int {
	return c.Raft.ElectionTimeoutMs * c.ticksPerHeartbeat() / c.Raft.HeartbeatIntervalMs
}

// requestTimeoutTicks keeps the node's default request timeout (5 s at the
// default tick) in time rather than in ticks.
func (c Config) requestTimeoutTicks() int {
	return int(node.DefaultRequestTimeoutTicks * 100 * time.Millisecond / c.tick())
}

// Services is config/services.json in the seed's format. A key neither
// this service nor the seed knows is an error (a misspelt key would
// otherwise be a silent default); the seed's own settings for its Java
// services (controller, metadata, jwt) are accepted and ignored, so that a
// seed deployment's file works unchanged.
type Services struct {
	Services struct {
		MetadataServices []ServiceEntry `json:"metadata-services"`
		StorageServices  []ServiceEntry `json:"storage-services"`
	} `json:"services"`
	SeedController json.RawMessage `json:"controller,omitempty"`
	SeedMetadata   json.RawMessage `json:"metadata,omitempty"`
	SeedJWT        json.RawMessage `json:"jwt,omitempty"`
}

// ServiceEntry names one service.
type ServiceEntry struct {
	ID   int64  `json:"id"`
	Host string `json:"host"`
	Port int    `json:"port"`
	URL  string `json:"url"`
	// Protocol is how a storage service takes pushes: "connect" (the
	// default: StorageSyncService) or "seed-rest" (the Java service's
	// MetadataUpdateRequests posted to /api/v1/storage/metadata).
	Protocol string `json:"protocol,omitempty"`
	// PairedMetadataServiceID is the seed's, accepted and ignored: every
	// controller pushes to every storage service when it leads.
	PairedMetadataServiceID int64 `json:"pairedMetadataServiceId,omitempty"`
}

// Push protocols a storage-services entry may name.
const (
	ProtocolConnect  = "connect"
	ProtocolSeedREST = "seed-rest"
)

// Endpoint is the entry's URL, or http://host:port.
func (e ServiceEntry) Endpoint() string {
	if e.URL != "" {
		return strings.TrimSuffix(e.URL, "/")
	}
	return fmt.Sprintf("http://%s:%d", e.Host, e.Port)
}

// loadServices reads services.json; a missing file at the default path is
// no error (a lone controller), a missing file named explicitly is.
func loadServices(path string, explicit bool) (*Services, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) && !explicit {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var s Services
	decoder := json.NewDecoder(strings.NewReader(string(data)))
	decoder.DisallowUnknownFields()
	if err := decoder.Decode(&s); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	seen := map[int64]bool{}
	for _, e := range s.Services.MetadataServices {
		if e.ID < 1 || seen[e.ID] {
			return nil, fmt.Errorf("%s: metadata service id %d is not positive or is listed twice", path, e.ID)
		}
		seen[e.ID] = true
	}
	for _, e := range s.Services.StorageServices {
		if e.ID < 1 || e.ID > 1<<31-1 {
			return nil, fmt.Errorf("%s: storage service id %d is not a broker id", path, e.ID)
		}
		if e.Protocol != "" && e.Protocol != ProtocolConnect && e.Protocol != ProtocolSeedREST {
			return nil, fmt.Errorf("%s: storage service %d: protocol %q: want %q (the default) or %q",
				path, e.ID, e.Protocol, ProtocolConnect, ProtocolSeedREST)
		}
	}
	for _, e := range s.Services.MetadataServices {
		if e.Protocol != "" {
			return nil, fmt.Errorf("%s: metadata service %d: protocol applies to storage services only", path, e.ID)
		}
	}
	return &s, nil
}
