package sim

import (
	"fmt"
	"maps"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/anishathalye/porcupine"
	metadatav1 "github.com/dmq-project/metadata/gen/dmq/metadata/v1"
	"github.com/dmq-project/metadata/linearizability"
)

// checkLiveness runs at the end of the heal phase: the cluster must have
// an active controller, every live controller the same state, every
// answering storage service registered and unfenced, every silent one
// fenced, and no client operation outstanding.
func (s *Sim) checkLiveness() {
	leader := s.leaderNode()
	if leader == nil {
		s.violate("liveness: no active controller %v after the heal\n%s", s.opts.Duration-s.opts.HealAfter, s.describe())
		return
	}
	sm := leader.node.StateMachine()
	if s.growing {
		s.violate("liveness: the cluster founded on one controller has not grown to %d voters after the heal\n%s", s.opts.Nodes, s.describe())
	}
	for _, n := range s.nodes {
		if n.retired {
			continue
		}
		if !n.member {
			s.violate("liveness: node %d was not added to the cluster after the heal", n.id)
			continue
		}
		if n.node == nil {
			s.violate("liveness: node %d is down after the heal (corrupted: %v, replace: %d, membership phase %d target %d)\n%s",
				n.id, n.corrupted, s.replace, s.membership.phase, s.membership.target, s.describe())
			continue
		}
		other := n.node.StateMachine()
		if other.AppliedIndex() != sm.AppliedIndex() || other.Hash() != sm.Hash() {
			s.violate("liveness: node %d applied %d (hash %x), the leader %d applied %d (hash %x)\n%s",
				n.id, other.AppliedIndex(), other.Hash(), leader.id, sm.AppliedIndex(), sm.Hash(), s.describe())
		}
	}
	for _, svc := range s.services {
		b := sm.Broker(svc.id)
		switch {
		case svc.silentForever:
			if b != nil && !b.Fenced {
				s.violate("liveness: storage service %d has been silent since the heal but is not fenced", svc.id)
			}
		case b == nil:
			s.violate("liveness: storage service %d is not registered after the heal", svc.id)
		case b.Fenced || b.InControlledShutdown:
			s.violate("liveness: storage service %d answers but is fenced after the heal", svc.id)
		case svc.seed && svc.view.unsynced:
			s.violate("liveness: seed service %d still holds what a deposed controller's push left: no full state repaired it", svc.id)
		case svc.version() < sm.Version()-int64(5) && svc.version() != sm.Version():
			// Pushes follow every change; a service far behind was forgotten.
			s.violate("liveness: storage service %d holds version %d, the controller %d", svc.id, svc.version(), sm.Version())
		}
	}
	s.checkPreferredLeaders(leader)
	s.checkFinalPlan(leader, s.admin)
	for _, c := range s.clients {
		if c.op != nil {
			s.violate("liveness: client %d's %v is still outstanding at the end", c.id, c.op.input.Kind)
		}
	}
}

// checkLinearizability checks the client history with porcupine.
func (s *Sim) checkLinearizability() {
	result, _ := linearizability.Check(s.history, 30*time.Second)
	switch result {
	case porcupine.Illegal:
		s.violate("linearizability: the client history of %d operations is not linearizable", len(s.history))
	case porcupine.Unknown:
		s.violate("linearizability: the checker timed out on %d operations", len(s.history))
	}
}

// Verdict is the one-line summary of a run.
func (r Result) Verdict() string {
	status := "ok"
	if !r.OK() {
		status = "FAIL"
	}
	faults := 0
	for _, n := range r.Faults { // determinism: a sum does not depend on order
		faults += n
	}
	speed := 0.0
	if r.Wall > 0 {
		speed = r.Simulated.Seconds() / r.Wall.Seconds()
	}
	return fmt.Sprintf("seed=%d %s simulated=%v events=%d ops=%d faults=%d trace=%016x speed=%.0fx",
		r.Options.Seed, status, r.Simulated, r.Events, r.Operations, faults, r.TraceHash, speed)
}

// FaultSummary lists the faults injected, by kind, in name order.
func (r Result) FaultSummary() string {
	kinds := make([]string, 0, len(r.Faults))
	for k := range r.Faults { // determinism: collected, then sorted
		kinds = append(kinds, k)
	}
	sort.Strings(kinds)
	var parts []string
	for _, k := range kinds {
		parts = append(parts, fmt.Sprintf("%s=%d", k, r.Faults[k]))
	}
	if len(parts) == 0 {
		return "none"
	}
	return strings.Join(parts, " ")
}

// preferredMark is what was imbalanced at a moment after the heal, in the
// golden replica's state (the newest): partitions whose preferred replica
// could lead but does not, with their leader epochs and preferred replicas.
type preferredMark struct {
	at           time.Duration
	leader, term uint64
	partitions   map[string]imbalance
}

type imbalance struct {
	leaderEpoch int32
	preferred   int32
}

// preferredWindow is how long after a mark it is checked: a rebalance
// interval and a margin.
const preferredWindow = rebalanceInterval + 3*time.Second

// markPreferred checks the marks a window old, then notes a new one, once a
// second from two seconds after the heal until a window before the end:
// every mark is a chance to see a partition left alone.
func (s *Sim) markPreferred() {
	if leader := s.leaderNode(); leader != nil {
		s.checkPreferredLeaders(leader)
		s.preferred = append(s.preferred, &preferredMark{at: s.now, leader: leader.id, term: leader.node.Term(),
			partitions: imbalanced(s.golden.sm.ClusterState())})

	}
	if s.now+time.Second+preferredWindow <= s.opts.Duration {
		s.schedule(time.Second, evHeal, 0, 1, s.markPreferred)
	}
}

// checkPreferredLeaders: preferred leaders come back. A partition whose
// preferred replica stayed in the ISR and eligible from a mark to a window
// later (no record took it out in between), but did not lead at either,
// under the same leader epoch, was left alone by a controller that led
// throughout (the same term at both), though its rebalance ran in between.
func (s *Sim) checkPreferredLeaders(leader *simNode) {
	var now map[string]imbalance
	for len(s.preferred) > 0 && s.preferred[0].at+preferredWindow <= s.now {
		mark := s.preferred[0]
		s.preferred = s.preferred[1:]
		if mark.leader != leader.id || mark.term != leader.node.Term() || s.golden.off {
			continue
		}
		if now == nil {
			now = imbalanced(s.golden.sm.ClusterState())
		}
		for _, key := range slices.Sorted(maps.Keys(now)) {
			was, ok := mark.partitions[key]
			if !ok || was != now[key] {
				continue
			}
			if out, dropped := s.golden.preferredOutAt[key]; dropped && out >= mark.at {
				continue
			}
			if out, dropped := s.golden.brokerOutAt[was.preferred]; dropped && out >= mark.at {
				continue
			}
			s.violate("preferred leaders come back: %s has kept leader epoch %d for %v with its preferred replica %d eligible and in the ISR",
				key, was.leaderEpoch, s.now-mark.at, was.preferred)
			return
		}
	}
}

// preferredKey names a partition of a topic incarnation.
func preferredKey(t *metadatav1.Topic, p *metadatav1.Partition) string {
	return fmt.Sprintf("%s-%d (%s)", t.GetName(), p.GetPartition(), t.GetTopicId())
}

// imbalanced computes, from the cluster state alone, the partitions whose
// first replica is eligible (unfenced, not shutting down) and in the ISR
// but not the leader.
func imbalanced(state *metadatav1.ClusterState) map[string]imbalance {
	eligible := map[int32]bool{}
	for _, b := range state.GetBrokers() {
		eligible[b.GetId()] = !b.GetFenced() && !b.GetInControlledShutdown()
	}
	out := map[string]imbalance{}
	for _, t := range state.GetTopics() {
		for _, p := range t.GetPartitions() {
			replicas := p.GetReplicas()
			if len(replicas) == 0 {
				continue
			}
			preferred := replicas[0]
			if p.GetLeader() != preferred && slices.Contains(p.GetIsr(), preferred) && eligible[preferred] {
				out[preferredKey(t, p)] = imbalance{leaderEpoch: p.GetLeaderEpoch(), preferred: preferred}
			}
		}
	}
	return out
}
