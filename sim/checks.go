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

// preferredMark is what the active controller held imbalanced some time
// before the end: partitions whose preferred replica could lead but does
// not, with their partition epochs.
type preferredMark struct {
	leader, term uint64
	partitions   map[string]int32
}

// markPreferred notes the imbalanced partitions a rebalance interval and a
// margin before the end, for checkPreferredLeaders.
func (s *Sim) markPreferred() {
	if leader := s.leaderNode(); leader != nil {
		s.preferred = &preferredMark{leader: leader.id, term: leader.node.Term(),
			partitions: imbalanced(leader.node.StateMachine().ClusterState())}
	}
}

// checkPreferredLeaders: preferred leaders come back. A partition whose
// preferred replica was in the ISR and eligible, but not leading, both at
// the mark and at the end, under the same partition epoch, was left alone by
// a controller that led throughout, though its rebalance ran in between.
func (s *Sim) checkPreferredLeaders(leader *simNode) {
	mark := s.preferred
	if mark == nil || mark.leader != leader.id || mark.term != leader.node.Term() {
		return
	}
	now := imbalanced(leader.node.StateMachine().ClusterState())
	for _, key := range slices.Sorted(maps.Keys(now)) {
		if was, ok := mark.partitions[key]; ok && was == now[key] {
			epoch := now[key]
			s.violate("preferred leaders come back: %s has kept partition epoch %d for %v with its preferred replica eligible and in the ISR",
				key, epoch, s.now-(s.opts.Duration-rebalanceInterval-3*time.Second))
			return
		}
	}
}

// imbalanced computes, from the cluster state alone, the partitions whose
// first replica is eligible (unfenced, not shutting down) and in the ISR
// but not the leader, with their partition epochs.
func imbalanced(state *metadatav1.ClusterState) map[string]int32 {
	eligible := map[int32]bool{}
	for _, b := range state.GetBrokers() {
		eligible[b.GetId()] = !b.GetFenced() && !b.GetInControlledShutdown()
	}
	out := map[string]int32{}
	for _, t := range state.GetTopics() {
		for _, p := range t.GetPartitions() {
			replicas := p.GetReplicas()
			if len(replicas) == 0 {
				continue
			}
			preferred := replicas[0]
			if p.GetLeader() != preferred && slices.Contains(p.GetIsr(), preferred) && eligible[preferred] {
				out[fmt.Sprintf("%s-%d", t.GetName(), p.GetPartition())] = p.GetPartitionEpoch()
			}
		}
	}
	return out
}
