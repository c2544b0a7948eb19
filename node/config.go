package node

import (
	"errors"
	"fmt"
	"time"

	"github.com/dmq-project/metadata/statemachine"
	"go.etcd.io/raft/v3"
)

// Config tunes one controller. Zero values take the defaults below.
type Config struct {
	// ID is this controller's Raft id, non-zero.
	ID uint64
	// ClusterID, if set, must be the cluster the data directory was
	// formatted for.
	ClusterID string
	// ElectionTicks and HeartbeatTicks are Raft's, in Ticks.
	ElectionTicks  int
	HeartbeatTicks int
	// MaxLogEntries is the number of applied entries between snapshots
	// (the seed's raft.max-log-entries), at least: a snapshot also waits
	// until the entries applied since the last one add up to
	// 1/SnapshotLogRatio of its size, so that the cost of snapshotting a
	// large state stays proportional to the writes instead of to the state
	// (1,000 entries against a 10 MB state would re-encode the state for
	// every few hundred kilobytes written).
	MaxLogEntries uint64
	// SnapshotLogRatio trades the CPU every controller spends on snapshots
	// (each logged byte costs SnapshotLogRatio bytes of snapshot, encoded
	// and written) against the log a restarting controller replays (at most
	// 1/SnapshotLogRatio of the state's size). The default, 1, snapshots
	// when the log has grown as large as the state. At 1M partitions that
	// is up to 11 MB of log: about 1.4 s to replay if all of it were small
	// topic creations (the costliest entries per byte), against 0.16 s to
	// load the snapshot; a restart is rare and the other controllers serve
	// meanwhile, while snapshots were a fifth of all controllers' CPU under
	// writes with a ratio of 4.
	SnapshotLogRatio uint64
	// LogTailEntries is how many entries a compaction keeps behind the
	// snapshot, so that a follower slightly behind catches up from the log
	// instead of a snapshot.
	LogTailEntries uint64
	// SessionTimeout fences a broker silent for longer
	// (services.heartbeat-timeout-ms).
	SessionTimeout time.Duration
	// ClientSessionTimeout is the timeout this controller writes into the
	// client sessions it opens while it leads: a session with no request
	// applied for that long expires (metadata.client-session-timeout-ms).
	ClientSessionTimeout time.Duration
	// DefaultReplicationFactor and DefaultMinISR fill requests that leave
	// them out (replication.default-replication-factor, replication.min-ISR).
	DefaultReplicationFactor int32
	DefaultMinISR            int32
	// RequestTimeoutTicks bounds how long a proposal or read may wait before
	// it completes with UNKNOWN_OUTCOME or UNAVAILABLE.
	RequestTimeoutTicks int
	// RebalanceInterval is how often the active controller moves leadership
	// back to preferred replicas; 0 disables it. RebalanceElectionsMax
	// bounds the partitions moved per pass.
	RebalanceInterval     time.Duration
	RebalanceElectionsMax int
	// RebalanceOnJoin has the active controller plan and run a balancing
	// (package balance) when a broker registers for the first time.
	RebalanceOnJoin bool
	// PushBackoffMin and PushBackoffMax bound the retry delay of a push.
	PushBackoffMin time.Duration
	PushBackoffMax time.Duration
	// SeedResyncInterval is how often a storage service speaking the
	// seed's protocol gets a full state although nothing says it needs
	// one: its receiver checks neither epochs nor versions, so a push of a
	// deposed controller that arrives after the new leader's undoes it
	// unseen. 0 means the default; negative disables it.
	SeedResyncInterval time.Duration
	// Logger receives Raft's log; nil discards it.
	Logger raft.Logger
	// VerifySnapshots has the node encode each snapshot on its goroutine
	// too, and panic unless the encoding made off it from the state
	// machine's view is the same (the simulator sets it; it doubles a
	// snapshot's cost).
	VerifySnapshots bool
}

// Defaults. The Raft timings assume a 100 ms tick: 1 s election timeout
// (randomised to 1-2 s), 100 ms heartbeats.
const (
	DefaultElectionTicks        = 10
	DefaultHeartbeatTicks       = 1
	DefaultMaxLogEntries        = 1000
	DefaultSnapshotLogRatio     = 1
	DefaultSessionTimeout       = 30 * time.Second
	DefaultClientSessionTimeout = 2 * time.Minute
	DefaultRequestTimeoutTicks  = 50
	DefaultRebalanceInterval    = 5 * time.Minute
	DefaultRebalanceElectionMax = 100
	DefaultPushBackoffMin       = 100 * time.Millisecond
	DefaultPushBackoffMax       = 5 * time.Second
	DefaultSeedResyncInterval   = time.Minute
	maxSizePerMsg               = 1 << 20
	maxInflightMsgs             = 256
)

// withDefaults returns the config with zero values replaced, or an error
// for values that cannot work.
func (c Config) withDefaults() (Config, error) {
	if c.ID == 0 {
		return c, errors.New("node: ID must be non-zero")
	}
	setInt := func(v *int, d int) {
		if *v == 0 {
			*v = d
		}
	}
	setInt(&c.ElectionTicks, DefaultElectionTicks)
	setInt(&c.HeartbeatTicks, DefaultHeartbeatTicks)
	setInt(&c.RequestTimeoutTicks, DefaultRequestTimeoutTicks)
	setInt(&c.RebalanceElectionsMax, DefaultRebalanceElectionMax)
	if c.MaxLogEntries == 0 {
		c.MaxLogEntries = DefaultMaxLogEntries
	}
	if c.SnapshotLogRatio == 0 {
		c.SnapshotLogRatio = DefaultSnapshotLogRatio
	}
	if c.LogTailEntries == 0 {
		c.LogTailEntries = c.MaxLogEntries / 2
	}
	if c.SessionTimeout == 0 {
		c.SessionTimeout = DefaultSessionTimeout
	}
	if c.ClientSessionTimeout == 0 {
		c.ClientSessionTimeout = DefaultClientSessionTimeout
	}
	if ms := c.ClientSessionTimeout.Milliseconds(); ms < statemachine.SessionTimeoutMin || ms > statemachine.SessionTimeoutMax {
		return c, fmt.Errorf("node: client session timeout %v is outside [%v, %v]", c.ClientSessionTimeout,
			time.Duration(statemachine.SessionTimeoutMin)*time.Millisecond, time.Duration(statemachine.SessionTimeoutMax)*time.Millisecond)
	}
	if c.DefaultReplicationFactor == 0 {
		c.DefaultReplicationFactor = 1
	}
	if c.DefaultMinISR == 0 {
		c.DefaultMinISR = 1
	}
	if c.PushBackoffMin == 0 {
		c.PushBackoffMin = DefaultPushBackoffMin
	}
	if c.PushBackoffMax == 0 {
		c.PushBackoffMax = DefaultPushBackoffMax
	}
	if c.SeedResyncInterval == 0 {
		c.SeedResyncInterval = DefaultSeedResyncInterval
	}
	if c.HeartbeatTicks >= c.ElectionTicks {
		return c, fmt.Errorf("node: heartbeat ticks %d must be below election ticks %d", c.HeartbeatTicks, c.ElectionTicks)
	}
	if c.PushBackoffMin > c.PushBackoffMax {
		return c, fmt.Errorf("node: push backoff min %v above max %v", c.PushBackoffMin, c.PushBackoffMax)
	}
	if c.DefaultReplicationFactor < 1 || c.DefaultMinISR < 1 {
		return c, errors.New("node: default replication factor and min ISR must be at least 1")
	}
	return c, nil
}

// discardLogger drops Raft's logging and panics on its fatal calls, which
// Raft makes only for broken invariants.
type discardLogger struct{}

func (discardLogger) Debug(...any)            {}
func (discardLogger) Debugf(string, ...any)   {}
func (discardLogger) Error(...any)            {}
func (discardLogger) Errorf(string, ...any)   {}
func (discardLogger) Info(...any)             {}
func (discardLogger) Infof(string, ...any)    {}
func (discardLogger) Warning(...any)          {}
func (discardLogger) Warningf(string, ...any) {}
func (discardLogger) Fatal(v ...any)          { panic(fmt.Sprint(v...)) }
func (discardLogger) Fatalf(f string, v ...any) {
	panic(fmt.Sprintf(f, v...))
}
func (discardLogger) Panic(v ...any)            { panic(fmt.Sprint(v...)) }
func (discardLogger) Panicf(f string, v ...any) { panic(fmt.Sprintf(f, v...)) }
