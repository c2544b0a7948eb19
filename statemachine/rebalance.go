package statemachine

import (
	"slices"

	metadatav1 "github.com/dmq-project/metadata/gen/dmq/metadata/v1"
)

// Balancing plans: a RebalanceRecord carries the moves a controller
// planned (package balance); apply starts them as reassignments, in order,
// at most maxMoving partitions moving at once, and starts the next as a
// move ends (completed or cancelled), in that same apply. A move refused
// when its turn comes (a broker gone, the partition deleted, or moving
// since the plan was made) is skipped.

// Bounds on a plan.
const (
	RebalanceMovesMax    = 100_000
	RebalanceMovingMax   = 10_000
	RebalanceMovingFirst = 100 // the default of a request that names none
)

type balanceRun struct {
	pending                   []*metadatav1.PartitionReassignment
	maxMoving                 int32
	planned, started, skipped int32
	drain                     []int32
	since                     int64
	// leftBehind: a move skipped or ended left a replica on a drained
	// broker (UnfinishedDrain).
	leftBehind bool
	// advancing guards against starting moves from inside a start.
	advancing bool
}

// ValidateRebalance checks a plan's bounds.
func ValidateRebalance(moves, maxMoving int) *Error {
	if moves > RebalanceMovesMax {
		return errorf(metadatav1.ErrorCode_INVALID_REQUEST, "a plan of %d moves: at most %d", moves, RebalanceMovesMax)
	}
	if maxMoving < 1 || maxMoving > RebalanceMovingMax {
		return errorf(metadatav1.ErrorCode_INVALID_REQUEST, "max moving %d is outside 1-%d", maxMoving, RebalanceMovingMax)
	}
	return nil
}

func (s *StateMachine) rebalance(r *metadatav1.RebalanceRecord, c *change) Result {
	if err := ValidateRebalance(len(r.Moves), int(r.MaxMoving)); err != nil {
		return fail(err)
	}
	s.balance = &balanceRun{pending: slices.Clone(r.Moves), maxMoving: r.MaxMoving, planned: int32(len(r.Moves)),
		drain: slices.Clone(r.Drain), since: int64(s.appliedIndex)}
	if len(r.Drain) > 0 {
		s.balance.leftBehind = s.drainLeavesBehind(r.Moves)
	}
	s.advanceBalance(c)
	return Result{}
}

// advanceBalance starts the plan's next moves while there is room.
func (s *StateMachine) advanceBalance(c *change) {
	run := s.balance
	if run == nil || run.advancing {
		return
	}
	run.advancing = true
	for len(run.pending) > 0 && s.movingCount < int(run.maxMoving) {
		next := run.pending[0]
		run.pending = run.pending[1:]
		// A plan's move names the replicas it was planned from: a
		// partition moved since, or moving, is left alone.
		if err := s.reassign(next, c); err != nil {
			run.skipped++
			if t, ok := s.topics[next.Topic]; ok && next.Partition >= 0 && int(next.Partition) < len(t.partitions) {
				s.moveEnded(t.partitions[next.Partition].replicas)
			}
		} else {
			run.started++
		}
	}
	run.advancing = false
}

// BalanceStatus is the progress of the last balancing plan.
func (s *StateMachine) BalanceStatus() *metadatav1.BalanceStatus {
	out := &metadatav1.BalanceStatus{Moving: int32(s.movingCount)}
	if run := s.balance; run != nil {
		out.Planned, out.Started, out.Skipped, out.Pending = run.planned, run.started, run.skipped, int32(len(run.pending))
		out.MaxMoving, out.Draining, out.SinceVersion = run.maxMoving, slices.Clone(run.drain), run.since
	}
	return out
}

// draining says whether the running plan decommissions broker id.
func (s *StateMachine) draining(id int32) bool {
	return s.balance != nil && slices.Contains(s.balance.drain, id)
}

// UnfinishedDrain returns the brokers the last plan decommissions, once it
// has started every move, if it left a replica on one of them: a move
// skipped (the partition was moving when its turn came) or a move that
// ended with a drained broker still among the replicas (cancelled, say).
// The active controller plans again for them. Nil otherwise.
func (s *StateMachine) UnfinishedDrain() []int32 {
	run := s.balance
	if run == nil || !run.leftBehind || len(run.pending) > 0 {
		return nil
	}
	return slices.Clone(run.drain)
}

// drainLeavesBehind says whether a partition the plan does not move, and
// that is not moving (moveEnded looks at those when they end), holds a
// drained broker: one whose move ended while the plan was computed, say.
func (s *StateMachine) drainLeavesBehind(moves []*metadatav1.PartitionReassignment) bool {
	planned := make(map[partitionKey]bool, len(moves))
	for _, m := range moves {
		planned[partitionKey{topic: m.Topic, index: m.Partition}] = true
	}
	for _, t := range s.topics { // determinism: an existence test
		for i := range t.partitions {
			if !planned[partitionKey{topic: t.name, index: int32(i)}] && t.movingOf(int32(i)) == nil &&
				slices.ContainsFunc(t.partitions[i].replicas, s.draining) {
				return true
			}
		}
	}
	return false
}

// KeepsInSync says whether moving a partition to target would keep one of
// its in-sync replicas (a move that keeps none is refused: it would lose
// the committed records).
func (s *StateMachine) KeepsInSync(topic string, index int32, target []int32) bool {
	t, ok := s.topics[topic]
	if !ok || index < 0 || int(index) >= len(t.partitions) {
		return false
	}
	return slices.ContainsFunc(t.partitions[index].isr, func(id int32) bool { return slices.Contains(target, id) })
}

// moveEnded notes a move that ended with these replicas: if the plan
// drains one of them, it left a replica behind.
func (s *StateMachine) moveEnded(replicas []int32) {
	if run := s.balance; run != nil && slices.ContainsFunc(replicas, s.draining) {
		run.leftBehind = true
	}
}

// EachPartition calls fn for every partition, by topic name and index,
// with its replicas (fn must not keep or change them) and whether it is
// moving: what a balancing plan is computed from.
func (s *StateMachine) EachPartition(fn func(topic string, index int32, replicas []int32, moving bool)) {
	for _, name := range s.sortedTopicNames() {
		t := s.topics[name]
		for i := range t.partitions {
			fn(name, int32(i), t.partitions[i].replicas, t.movingOf(int32(i)) != nil)
		}
	}
}

// replicasOn counts the replicas a broker holds.
func (s *StateMachine) replicasOn(id int32) int {
	n := 0
	for _, t := range s.topics { // determinism: a sum
		for i := range t.partitions {
			if slices.Contains(t.partitions[i].replicas, id) {
				n++
			}
		}
	}
	return n
}
