package statemachine

import (
	"slices"

	metadatav1 "github.com/dmq-project/metadata/gen/dmq/metadata/v1"
)

// Balancing plans: a RebalanceRecord carries the moves a controller
// planned (package balance); apply starts them as reassignments, in order,
// at most maxMoving partitions moving at once, and starts the next as a
// move ends (completed or cancelled), in that same apply. A move refused
// when its turn comes (a broker gone, the partition deleted) is skipped.

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
		if err := s.reassign(next, c); err != nil {
			run.skipped++
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
