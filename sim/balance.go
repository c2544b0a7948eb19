package sim

import (
	"fmt"
	"maps"
	"slices"
	"time"

	"github.com/dmq-project/metadata/client"
	metadatav1 "github.com/dmq-project/metadata/gen/dmq/metadata/v1"
	"github.com/dmq-project/metadata/node"
	"google.golang.org/protobuf/proto"
)

// decommissionBeforeHeal is how long before the heal the admin's last plan
// decommissions a broker: its moves run through the last faults.
const decommissionBeforeHeal = 10 * time.Second

// finalPlan is the admin's last balancing plan. A decommission, issued
// under faults, must end with the broker empty; a rebalance, issued once
// the clients' writes stop (the partitions then stay put), must end with
// the cluster balanced. Both are checked at the end (checkFinalPlan).
type finalPlan struct {
	drain int32 // the broker decommissioned; 0 for a rebalance
	// alive are the brokers the controllers count as alive when the plan
	// is asked for: a rebalance balances over them.
	alive []int32
	// stuckBefore are the partitions moving when a rebalance is asked for
	// (moves that cannot end): the plan leaves them out.
	stuckBefore map[string]bool
	acked       bool
	// requestIDs are the ids its attempts were sent under (one per
	// session it ran in).
	requestIDs []*metadatav1.RequestId
}

// drainList is what the plan drains, as a plan record names it.
func (p *finalPlan) drainList() []int32 {
	if p.drain == 0 {
		return nil
	}
	return []int32{p.drain}
}

func (p *finalPlan) String() string {
	if p == nil {
		return "not issued"
	}
	if p.drain != 0 {
		return fmt.Sprintf("decommission %d (acknowledged %v)", p.drain, p.acked)
	}
	return fmt.Sprintf("rebalance over %v (acknowledged %v)", p.alive, p.acked)
}

// decommission asks, once, for a broker to be emptied, retrying within
// the caller's patience; the admin then moves nothing more.
func (a *admin) decommission() {
	s := a.sim
	plan := &finalPlan{drain: s.services[s.rng.IntN(len(s.services))].id}
	a.final = plan
	s.fault("decommission")
	// A few at once: moves stuck for good (to brokers that never fetch)
	// take slots too.
	a.issue(&metadatav1.RebalanceRequest{MaxMoving: int32(6 + s.rng.IntN(6)), Decommission: []int32{plan.drain}})
}

// rebalanceLast asks for a rebalance once no move that can end is underway
// (the clients' last reassignments end soon after their writes stop) and
// the brokers registered by clients, with no process behind them, are
// fenced (a session timeout after their registration): a plan that moved
// replicas to them would wait for good. A few seconds before the end at
// the latest.
func (a *admin) rebalanceLast() {
	s := a.sim
	if a.final != nil {
		return
	}
	if s.movesUnderway() || a.writing || s.processlessBrokerAlive() {
		if s.now+8*time.Second < s.opts.Duration {
			s.schedule(200*time.Millisecond, evClientStart, 999, 1, a.rebalanceLast)
		}
		return
	}
	plan := &finalPlan{stuckBefore: map[string]bool{}}
	for _, m := range s.golden.sm.Reassignments() {
		plan.stuckBefore[fmt.Sprintf("%s-%d", m.GetTopic(), m.GetPartition())] = true
	}
	for _, id := range s.golden.sm.BrokerIDs() {
		if b := s.golden.sm.Broker(id); b.GetIsAlive() {
			plan.alive = append(plan.alive, id)
		}
	}
	a.final = plan
	a.issue(&metadatav1.RebalanceRequest{MaxMoving: 100})
}

func (a *admin) issue(req *metadatav1.RebalanceRequest) {
	s := a.sim
	a.write(s.now+callerPatience, func(n *node.Node, id *metadatav1.RequestId, reply func(attemptReply[node.Outcome])) {
		sent := proto.CloneOf(req)
		sent.RequestId = id
		if !slices.ContainsFunc(a.final.requestIDs, func(seen *metadatav1.RequestId) bool { return proto.Equal(seen, id) }) {
			a.final.requestIDs = append(a.final.requestIDs, proto.CloneOf(id))
		}
		n.Rebalance(sent, func(o node.Outcome, _ []*metadatav1.PartitionReassignment) {
			reply(attemptReply[node.Outcome]{value: o, err: o.Err, leader: o.LeaderID})
		})
	}, func(e writeEnd) {
		a.final.acked = e.failure == nil && e.verdict == client.WriteAnswered
	})
}

// checkFinalPlan runs at the end: the admin's last plan, if the cluster
// recorded it, has run to completion. A move can only end when its
// partition has a leader that reports ISR changes (a storage service of
// this project's, answering) and its targets fetch (services answering):
// a move to a broker registered by a client, with no process behind it,
// waits for good, as it would in Kafka, until an operator cancels it. Such
// stuck moves, and the plan's moves waiting behind them for a slot, are
// excused; nothing else. A decommissioned broker then holds no replica,
// unless too few other brokers are alive to take it. After a rebalance
// every broker it balanced over holds, within one, as many replicas as the
// others (of its rack, where every partition spans every rack) and as many
// preferred leaderships.
func (s *Sim) checkFinalPlan(leader *simNode, admin *admin) {
	plan := admin.final
	if plan == nil {
		return
	}
	// The admin's plan is the one applied under its request id; the last
	// one applied must be it or a plan the controller made of itself
	// keeping its drain.
	var ours, last *appliedPlan
	for i := range s.golden.plans {
		p := &s.golden.plans[i]
		if p.requestID != nil && slices.ContainsFunc(plan.requestIDs, func(id *metadatav1.RequestId) bool { return proto.Equal(id, p.requestID) }) {
			ours = p
		}
		last = p
	}
	if ours == nil {
		if plan.acked {
			s.violate("balancing: the admin's %v was acknowledged but never applied", plan)
		}
		return
	}
	if last != ours && (last.requestID != nil || !slices.Equal(last.drain, plan.drainList())) {
		if last.requestID == nil {
			s.violate("balancing: the admin's %v was replaced by a plan of the controller's draining %v", plan, last.drain)
		}
		return // an earlier request of the admin's, applied late, replaced it
	}
	sm := leader.node.StateMachine()
	status := sm.BalanceStatus()
	state := sm.ClusterState()
	// A move counts as able to end if it could, under the same leader
	// epoch, a few seconds before the end already (noteMovable): leaders
	// stop reporting ISR changes in the last seconds.
	stuck, moving := 0, 0
	var couldEnd []string
	for _, t := range state.GetTopics() {
		for _, p := range t.GetPartitions() {
			if len(p.GetAddingReplicas())+len(p.GetRemovingReplicas()) > 0 {
				moving++
				key := fmt.Sprintf("%s-%d", t.GetName(), p.GetPartition())
				if epoch, ok := admin.movableAt[key]; !ok || epoch != p.GetLeaderEpoch() || !s.canMove(t.GetName(), p) {
					stuck++
				} else {
					couldEnd = append(couldEnd, fmt.Sprintf("%s-%d", t.GetName(), p.GetPartition()))
				}
			}
		}
	}
	if moving > stuck {
		s.violate("balancing: the plan recorded at version %d (%v ago) has moves that could end still moving at the end (%v): %v; moving: %s",
			status.GetSinceVersion(), s.now-last.at, couldEnd, status, describeMoving(state))
		return
	}
	// Moves still to start wait for a slot only behind stuck moves.
	blocked := status.GetPending() > 0 && stuck >= int(status.GetMaxMoving())
	if status.GetPending() > 0 && !blocked {
		s.violate("balancing: the plan recorded at version %d has moves waiting with room to start them: %v; moving: %s",
			status.GetSinceVersion(), status, describeMoving(state))
		return
	}
	if plan.drain != 0 {
		s.checkDrained(state, plan, status, blocked)
		return
	}
	if status.GetSkipped() > 0 {
		return // moves refused (a late client reassignment): not a balance to check
	}
	for _, t := range state.GetTopics() {
		for _, p := range t.GetPartitions() {
			if key := fmt.Sprintf("%s-%d", t.GetName(), p.GetPartition()); len(p.GetAddingReplicas())+len(p.GetRemovingReplicas()) > 0 && !plan.stuckBefore[key] {
				return // the plan's own move is stuck (to a broker that never fetches)
			}
		}
	}
	for _, b := range state.GetBrokers() {
		if slices.Contains(plan.alive, b.GetId()) != b.GetIsAlive() {
			return // a broker fenced or back since: the plan may have seen either
		}
	}
	s.fault("final-rebalance-checked")
	s.checkBalanced(state, plan.alive, plan.stuckBefore)
}

// canMove says whether a moving partition's move can end: it has a leader
// that reports ISR changes, and, if topic is given, knows of the move and
// its leadership (a service's view may lag the controllers' by a few
// versions), and every target outside the ISR fetches.
func (s *Sim) canMove(topic string, p *metadatav1.Partition) bool {
	answers := func(id int32) bool {
		return id >= 1 && int(id) <= len(s.services) && !s.services[id-1].silent() && !s.services[id-1].silentForever
	}
	if !answers(p.GetLeader()) || s.services[p.GetLeader()-1].seed || topic != "" && !s.services[p.GetLeader()-1].leadsInView(topic, p) {
		return false
	}
	// It ends when every target (the replicas not leaving) is in the ISR.
	for _, id := range p.GetReplicas() {
		if !slices.Contains(p.GetRemovingReplicas(), id) && !slices.Contains(p.GetIsr(), id) && !answers(id) {
			return false
		}
	}
	return true
}

// checkDrained: a decommissioned broker holds no replica of a partition
// that is not moving, unless too few other brokers are alive to take it,
// another replica is on a broker fenced or gone (a move keeping it waits
// for it), or the plan's moves are blocked behind stuck ones.
func (s *Sim) checkDrained(state *metadatav1.ClusterState, plan *finalPlan, status *metadatav1.BalanceStatus, blocked bool) {
	if blocked {
		return
	}
	s.fault("final-decommission-checked")
	alive, isAlive := 0, map[int32]bool{}
	for _, b := range state.GetBrokers() {
		isAlive[b.GetId()] = b.GetIsAlive()
		if b.GetIsAlive() && b.GetId() != plan.drain {
			alive++
		}
	}
	for _, t := range state.GetTopics() {
		for _, p := range t.GetPartitions() {
			if !slices.Contains(p.GetReplicas(), plan.drain) || len(p.GetReplicas()) > alive ||
				len(p.GetAddingReplicas())+len(p.GetRemovingReplicas()) > 0 {
				continue
			}
			if slices.ContainsFunc(p.GetReplicas(), func(id int32) bool { return id != plan.drain && !isAlive[id] }) {
				continue // a replica on a broker fenced or gone: no move keeping it can complete
			}
			s.violate("balancing: broker %d, decommissioned at version %d, still holds %s-%d (replicas %v, ISR %v, leader %d) at the end (%v); moving: %s",
				plan.drain, status.GetSinceVersion(), t.GetName(), p.GetPartition(), p.GetReplicas(), p.GetIsr(), p.GetLeader(), status, describeMoving(state))
			return
		}
	}
}

// checkBalanced: every broker of alive holds, within one, the replicas and
// preferred leaderships of the others, over the partitions not left out
// (moving when the plan was asked for, or with a replica on a broker that
// is gone); replicas compared within each rack
// where every partition spans every rack (no move changes a rack's total).
func (s *Sim) checkBalanced(state *metadatav1.ClusterState, alive []int32, leftOut map[string]bool) {
	rackOf, registered := map[int32]string{}, map[int32]bool{}
	for _, b := range state.GetBrokers() {
		registered[b.GetId()] = true
		if slices.Contains(alive, b.GetId()) {
			rackOf[b.GetId()] = b.GetRack()
		}
	}
	racks := map[string]bool{}
	replicas, leaders := map[int32]int{}, map[int32]int{}
	for _, id := range alive {
		racks[rackOf[id]] = true
		replicas[id], leaders[id] = 0, 0
	}
	spanning := len(racks) > 1
	for _, t := range state.GetTopics() {
		for _, p := range t.GetPartitions() {
			if leftOut[fmt.Sprintf("%s-%d", t.GetName(), p.GetPartition())] ||
				slices.ContainsFunc(p.GetReplicas(), func(id int32) bool { return !registered[id] }) {
				continue // the plan leaves these alone
			}
			spanning = spanning && len(p.GetReplicas()) >= len(racks)
			for j, id := range p.GetReplicas() {
				if _, ok := replicas[id]; !ok {
					continue
				}
				replicas[id]++
				if j == 0 {
					leaders[id]++
				}
			}
		}
	}
	spread := func(counts map[int32]int, in func(int32) bool) (lo, hi int) {
		lo = -1
		for _, id := range slices.Sorted(maps.Keys(counts)) {
			if !in(id) {
				continue
			}
			if lo < 0 || counts[id] < lo {
				lo = counts[id]
			}
			hi = max(hi, counts[id])
		}
		return lo, hi
	}
	all := func(int32) bool { return true }
	if spanning {
		for _, rack := range slices.Sorted(maps.Keys(racks)) {
			if lo, hi := spread(replicas, func(id int32) bool { return rackOf[id] == rack }); hi-lo > 1 {
				s.violate("balancing: after the rebalance the brokers of %s hold from %d to %d replicas: %v", rack, lo, hi, replicas)
				return
			}
		}
	} else if lo, hi := spread(replicas, all); hi-lo > 1 {
		s.violate("balancing: after the rebalance the brokers hold from %d to %d replicas: %v", lo, hi, replicas)
		return
	}
	if lo, hi := spread(leaders, all); hi-lo > 1 {
		s.violate("balancing: after the rebalance the brokers are preferred leaders of from %d to %d partitions: %v", lo, hi, leaders)
	}
}

// describeMoving describes the partitions moving in state.
func describeMoving(state *metadatav1.ClusterState) string {
	var out []string
	for _, t := range state.GetTopics() {
		for _, p := range t.GetPartitions() {
			if len(p.GetAddingReplicas())+len(p.GetRemovingReplicas()) > 0 {
				out = append(out, fmt.Sprintf("%s-%d replicas %v isr %v leader %d adding %v removing %v", t.GetName(), p.GetPartition(),
					p.GetReplicas(), p.GetIsr(), p.GetLeader(), p.GetAddingReplicas(), p.GetRemovingReplicas()))
			}
		}
	}
	var brokers []string
	for _, b := range state.GetBrokers() {
		brokers = append(brokers, fmt.Sprintf("%d(fenced %v)", b.GetId(), b.GetFenced()))
	}
	return fmt.Sprintf("%v; brokers %v", out, brokers)
}

// movesUnderway says whether a partition is moving that can end its move.
func (s *Sim) movesUnderway() bool {
	for _, t := range s.golden.sm.ClusterState().GetTopics() {
		for _, p := range t.GetPartitions() {
			if len(p.GetAddingReplicas())+len(p.GetRemovingReplicas()) > 0 && s.canMove("", p) {
				return true
			}
		}
	}
	return false
}

// processlessBrokerAlive says whether a broker a client registered (no
// storage service behind it) is alive.
func (s *Sim) processlessBrokerAlive() bool {
	for _, id := range s.golden.sm.BrokerIDs() {
		if int(id) > len(s.services) && s.golden.sm.Broker(id).GetIsAlive() {
			return true
		}
	}
	return false
}

// leadsInView says whether the service's view has it lead the partition,
// with the partition's leader epoch and move.
func (v *service) leadsInView(topic string, p *metadatav1.Partition) bool {
	for _, t := range v.agent.State().GetTopics() {
		if t.GetName() != topic || int(p.GetPartition()) >= len(t.GetPartitions()) {
			continue
		}
		seen := t.GetPartitions()[p.GetPartition()]
		return seen.GetLeader() == v.id && seen.GetLeaderEpoch() == p.GetLeaderEpoch() &&
			slices.Equal(seen.GetAddingReplicas(), p.GetAddingReplicas())
	}
	return false
}

// noteMovable notes, a few seconds before the services stop reporting ISR
// changes, the moving partitions whose move can end, with their leader
// epochs (checkFinalPlan).
func (a *admin) noteMovable() {
	s := a.sim
	a.movableAt = map[string]int32{}
	for _, t := range s.golden.sm.ClusterState().GetTopics() {
		for _, p := range t.GetPartitions() {
			if len(p.GetAddingReplicas())+len(p.GetRemovingReplicas()) > 0 && s.canMove(t.GetName(), p) {
				a.movableAt[fmt.Sprintf("%s-%d", t.GetName(), p.GetPartition())] = p.GetLeaderEpoch()
			}
		}
	}
}
