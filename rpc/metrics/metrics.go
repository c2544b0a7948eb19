package metrics

import (
	"context"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"connectrpc.com/connect"
	"github.com/dmq-project/metadata/node"
	"github.com/dmq-project/metadata/node/runner"
	"github.com/dmq-project/metadata/wire"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// Metrics are the controller's Prometheus metrics, on their own registry.
type Metrics struct {
	Registry   *prometheus.Registry
	term       prometheus.Gauge
	leader     prometheus.Gauge
	commit     prometheus.Gauge
	applied    prometheus.Gauge
	isLeader   prometheus.Gauge
	brokers    *prometheus.GaugeVec
	offline    prometheus.Gauge
	partitions prometheus.Gauge
	proposals  *prometheus.CounterVec
	heartbeats prometheus.Counter
	pushes     *prometheus.CounterVec
	pushLag    prometheus.Gauge
	// strangers and mayVote come from the node's status (see node.Status).
	strangers prometheus.Gauge
	mayVote   prometheus.Gauge
	// peerRefused counts what the Raft transport refuses, by reason (see
	// the peer package's refusals).
	peerRefused *prometheus.CounterVec
	// SaveSeconds is the latency of persisting one Ready (the fsync).
	SaveSeconds prometheus.Histogram
	// SnapshotPersistSeconds is the time to write a snapshot to the store.
	SnapshotPersistSeconds prometheus.Histogram

	requests     *prometheus.CounterVec
	restRefused  *prometheus.CounterVec
	forwarded    *prometheus.CounterVec
	latency      *prometheus.HistogramVec
	authFailures *prometheus.CounterVec
	rateLimited  *prometheus.CounterVec
	watchStreams prometheus.Gauge
	leaderChange prometheus.Counter
	becameActive prometheus.Counter
	snapshots    *prometheus.CounterVec
	snapshotSize prometheus.Gauge
	peerMatch    *prometheus.GaugeVec
	peerLag      *prometheus.GaugeVec
	buildInfo    *prometheus.GaugeVec

	mu         sync.Mutex
	lastLeader uint64 // the last known leader, for leaderChange

	// longestPause (nanoseconds) and longPauses are the runner's Pauses,
	// as Poll last read them.
	longestPause, longPauses atomic.Int64
}

// New registers every metric on a new registry.
func New() *Metrics {
	m := &Metrics{
		Registry: prometheus.NewRegistry(),
		term:     prometheus.NewGauge(prometheus.GaugeOpts{Name: "dmq_raft_term", Help: "Current Raft term (the controller epoch)."}),
		leader:   prometheus.NewGauge(prometheus.GaugeOpts{Name: "dmq_raft_leader_id", Help: "The leader this controller knows of, 0 if none."}),
		commit:   prometheus.NewGauge(prometheus.GaugeOpts{Name: "dmq_raft_commit_index", Help: "Raft commit index."}),
		applied:  prometheus.NewGauge(prometheus.GaugeOpts{Name: "dmq_raft_applied_index", Help: "Applied index: the metadata version."}),
		isLeader: prometheus.NewGauge(prometheus.GaugeOpts{Name: "dmq_controller_active", Help: "1 on the active controller."}),
		brokers: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "dmq_brokers", Help: "Registered brokers by state."},
			[]string{"state"}),
		offline:    prometheus.NewGauge(prometheus.GaugeOpts{Name: "dmq_offline_partitions", Help: "Partitions without a leader."}),
		partitions: prometheus.NewGauge(prometheus.GaugeOpts{Name: "dmq_partitions", Help: "Partitions in the metadata."}),
		proposals: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "dmq_proposals_total", Help: "Write requests by kind and result code."},
			[]string{"kind", "code"}),
		heartbeats: prometheus.NewCounter(prometheus.CounterOpts{Name: "dmq_storage_heartbeats_total", Help: "Storage heartbeats received."}),
		pushes: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "dmq_pushes_total", Help: "Pushes to storage services by result."},
			[]string{"result"}),
		pushLag: prometheus.NewGauge(prometheus.GaugeOpts{Name: "dmq_push_lag_versions",
			Help: "On the active controller: the most versions a storage service is known to lag."}),
		strangers: prometheus.NewGauge(prometheus.GaugeOpts{Name: "dmq_raft_non_member_messages",
			Help: "Raft messages refused since this process started because their sender is not in the configuration."}),
		mayVote: prometheus.NewGauge(prometheus.GaugeOpts{Name: "dmq_controller_may_vote",
			Help: "1 if the membership names this controller's data directory, so it may vote; 0 while it waits to be added or after its directory was replaced."}),
		peerRefused: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "dmq_peer_messages_refused_total",
			Help: "Raft transport requests, streams and messages refused, by reason."}, []string{"reason"}),
		SaveSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "dmq_storage_save_seconds",
			Help: "Time to persist one Raft Ready, fsync included.", Buckets: prometheus.ExponentialBuckets(0.0001, 2, 16)}),
		SnapshotPersistSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "dmq_snapshot_persist_seconds",
			Help: "Time to write one snapshot to the store.", Buckets: prometheus.ExponentialBuckets(0.0001, 2, 18)}),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "dmq_rpc_requests_total",
			Help: "API calls (Connect, gRPC, gRPC-Web, REST) by procedure and Connect code."}, []string{"procedure", "code"}),
		restRefused: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "dmq_rest_refused_total",
			Help: "REST requests refused before reaching a procedure (so not in dmq_rpc_requests_total), by HTTP status."}, []string{"status"}),
		forwarded: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "dmq_forwarded_requests_total",
			Help: "Calls refused NOT_CONTROLLER here and passed on to the leader, by result: answered (the leader's answer relayed), unsent (the leader not reached; the refusal stands), unknown_outcome."}, []string{"result"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "dmq_rpc_request_duration_seconds",
			Help:    "Latency of unary API calls by procedure, from the first interceptor to the answer.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 2, 18)}, []string{"procedure"}),
		authFailures: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "dmq_auth_failures_total",
			Help: "API calls refused by authentication or authorisation, by reason."}, []string{"reason"}),
		rateLimited: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "dmq_rate_limited_total",
			Help: "API calls refused by a rate limit: a client's bucket, or an address's failed authentications."}, []string{"limit"}),
		watchStreams: prometheus.NewGauge(prometheus.GaugeOpts{Name: "dmq_watch_streams",
			Help: "WatchMetadata streams open on this controller."}),
		leaderChange: prometheus.NewCounter(prometheus.CounterOpts{Name: "dmq_raft_leader_changes_total",
			Help: "Changes to a known leader other than the last one this controller knew."}),
		becameActive: prometheus.NewCounter(prometheus.CounterOpts{Name: "dmq_controller_elections_won_total",
			Help: "Times this controller became the active controller."}),
		snapshots: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "dmq_snapshots_total",
			Help: "Snapshots taken here or installed from a leader."}, []string{"kind"}),
		snapshotSize: prometheus.NewGauge(prometheus.GaugeOpts{Name: "dmq_snapshot_bytes",
			Help: "Size of the latest snapshot taken or installed."}),
		peerMatch: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "dmq_raft_peer_match_index",
			Help: "On the leader: each member's highest log index known replicated."}, []string{"peer"}),
		peerLag: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "dmq_raft_peer_lag_entries",
			Help: "On the leader: each member's entries behind the leader's log."}, []string{"peer"}),
		buildInfo: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "dmq_build_info",
			Help: "Always 1: the build of this dmqd, in its labels."}, []string{"version", "revision", "goversion"}),
	}
	build := wire.Build()
	m.buildInfo.WithLabelValues(build.Version, build.Revision, build.Go).Set(1)
	m.Registry.MustRegister(
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "dmq_node_longest_pause_seconds",
			Help: "The longest the node's loop was busy in one go (an event and the Readies it made) since the start: every request waited that long."},
			func() float64 { return time.Duration(m.longestPause.Load()).Seconds() }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "dmq_node_long_pauses_total",
			Help: fmt.Sprintf("Times the node's loop was busy longer than %v in one go.", runner.LongPause)},
			func() float64 { return float64(m.longPauses.Load()) }))
	m.Registry.MustRegister(m.term, m.leader, m.commit, m.applied, m.isLeader, m.brokers, m.offline, m.partitions,
		m.proposals, m.heartbeats, m.pushes, m.pushLag, m.strangers, m.mayVote, m.peerRefused, m.SaveSeconds,
		m.SnapshotPersistSeconds, m.requests, m.restRefused, m.forwarded, m.latency, m.authFailures, m.rateLimited, m.watchStreams,
		m.leaderChange, m.becameActive, m.snapshots, m.snapshotSize, m.peerMatch, m.peerLag, m.buildInfo,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// ObserveCall counts one API call by procedure and code, and its latency
// (unary calls; a stream's duration is its life, not a latency).
func (m *Metrics) ObserveCall(procedure string, err error, seconds float64, unary bool) {
	code := "ok"
	if err != nil {
		code = connect.CodeOf(err).String()
	}
	m.requests.WithLabelValues(procedure, code).Inc()
	if unary {
		m.latency.WithLabelValues(procedure).Observe(seconds)
	}
}

// ObserveRESTRefused counts a REST request refused before it reached a
// procedure (a body over the limit, an unknown encoding or query
// parameter), by HTTP status.
func (m *Metrics) ObserveRESTRefused(httpStatus int) {
	m.restRefused.WithLabelValues(strconv.Itoa(httpStatus)).Inc()
}

// ObserveForward counts a call passed on to the leader, by result.
func (m *Metrics) ObserveForward(result string) { m.forwarded.WithLabelValues(result).Inc() }

// ObserveAuthFailure counts a call refused by authentication
// ("unauthenticated") or authorisation ("permission_denied").
func (m *Metrics) ObserveAuthFailure(reason string) { m.authFailures.WithLabelValues(reason).Inc() }

// ObserveRateLimited counts a call refused by a rate limit ("client": its
// bucket; "failed_auth": its address failed authentication too often).
func (m *Metrics) ObserveRateLimited(limit string) { m.rateLimited.WithLabelValues(limit).Inc() }

// WatchOpened and WatchClosed track the open WatchMetadata streams.
func (m *Metrics) WatchOpened() { m.watchStreams.Inc() }
func (m *Metrics) WatchClosed() { m.watchStreams.Dec() }

// Event counts what the node's events say (node.Events).
func (m *Metrics) Event(e node.Event) {
	switch e.Kind {
	case node.EventLeaderChanged:
		// A change to a known leader other than the last known one, as
		// etcd counts: an election's "no leader" step, or a follower that
		// loses and finds the same leader again, is no change.
		m.mu.Lock()
		if e.Leader != 0 && e.Leader != m.lastLeader {
			m.lastLeader = e.Leader
			m.leaderChange.Inc()
		}
		m.mu.Unlock()
	case node.EventBecameActive:
		m.becameActive.Inc()
	case node.EventSnapshotTaken:
		m.snapshots.WithLabelValues("taken").Inc()
		m.snapshotSize.Set(float64(e.Bytes))
	case node.EventSnapshotInstalled:
		m.snapshots.WithLabelValues("installed").Inc()
		m.snapshotSize.Set(float64(e.Bytes))
	}
}

// ObserveProposal counts one write request of the given kind by its
// outcome: "ok", the seed's error code, or else the Connect code.
func (m *Metrics) ObserveProposal(kind string, err error) {
	code := "ok"
	if err != nil {
		code = connect.CodeOf(err).String()
		if ec := wire.ErrorCodeOf(err); ec != 0 {
			code = ec.String()
		}
	}
	m.proposals.WithLabelValues(kind, code).Inc()
}

// ObserveHeartbeat counts one storage heartbeat received.
func (m *Metrics) ObserveHeartbeat() { m.heartbeats.Inc() }

// ObservePush counts one push to a storage service by its result
// ("accepted", "rejected" or "error").
func (m *Metrics) ObservePush(result string) { m.pushes.WithLabelValues(result).Inc() }

// PeerRefused counts what the Raft transport refuses, by reason: the
// counter a peer.Refusals counts in.
func (m *Metrics) PeerRefused() *prometheus.CounterVec { return m.peerRefused }

// Poll updates the gauges from the node every interval until ctx ends.
func (m *Metrics) Poll(ctx context.Context, r *runner.Runner, interval time.Duration) {
	ticker := time.NewTicker(interval)
	defer ticker.Stop()
	for {
		type snapshot struct {
			st                                      node.Status
			alive, fenced, shutdown, offline, parts int
		}
		snap, err := runner.Call(ctx, r, func(n *node.Node, done func(snapshot)) {
			sm := n.StateMachine()
			s := snapshot{st: n.Status(), offline: sm.OfflinePartitionCount(), parts: sm.PartitionCount()}
			for _, b := range sm.Brokers() {
				switch {
				case b.GetFenced():
					s.fenced++
				case b.GetInControlledShutdown():
					s.shutdown++
				default:
					s.alive++
				}
			}
			done(s)
		})
		longest, long := r.Pauses()
		m.longestPause.Store(int64(longest))
		m.longPauses.Store(long)
		if err == nil {
			m.term.Set(float64(snap.st.Term))
			m.leader.Set(float64(snap.st.Leader))
			m.commit.Set(float64(snap.st.Commit))
			m.applied.Set(float64(snap.st.Applied))
			active := 0.0
			if snap.st.Active {
				active = 1
			}
			m.isLeader.Set(active)
			m.brokers.WithLabelValues("alive").Set(float64(snap.alive))
			m.brokers.WithLabelValues("fenced").Set(float64(snap.fenced))
			m.brokers.WithLabelValues("shutting_down").Set(float64(snap.shutdown))
			m.offline.Set(float64(snap.offline))
			m.partitions.Set(float64(snap.parts))
			m.pushLag.Set(float64(snap.st.PushLagMax))
			m.strangers.Set(float64(snap.st.StrangerMessages))
			mayVote := 0.0
			if snap.st.MayVote {
				mayVote = 1
			}
			m.mayVote.Set(mayVote)
			// Only the leader knows its peers' progress: elsewhere the
			// series go away rather than show zeros that look healthy.
			m.peerMatch.Reset()
			m.peerLag.Reset()
			if snap.st.Leader == snap.st.ID && snap.st.ID != 0 {
				for _, member := range snap.st.Members {
					peer := strconv.FormatUint(member.ID, 10)
					m.peerMatch.WithLabelValues(peer).Set(float64(member.Match))
					m.peerLag.WithLabelValues(peer).Set(float64(member.Lag))
				}
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-ticker.C:
		}
	}
}
