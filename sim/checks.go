package sim

import (
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/anishathalye/porcupine"
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
		case svc.version < sm.Version()-int64(5) && svc.version != sm.Version():
			// Pushes follow every change; a service far behind was forgotten.
			s.violate("liveness: storage service %d holds version %d, the controller %d", svc.id, svc.version, sm.Version())
		}
	}
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
	for _, n := range r.Faults {
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
	for k := range r.Faults {
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
