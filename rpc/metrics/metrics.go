package metrics

import (
	"context"
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
	}
	m.Registry.MustRegister(m.term, m.leader, m.commit, m.applied, m.isLeader, m.brokers, m.offline, m.partitions,
		m.proposals, m.heartbeats, m.pushes, m.pushLag, m.strangers, m.mayVote, m.peerRefused, m.SaveSeconds,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
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
		}
		select {
		case <-ctx.Done():
			return
		case <-ticker.C:
		}
	}
}
