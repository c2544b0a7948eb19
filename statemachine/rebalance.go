package statemachine

import (
	"fmt"
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
	if r.ExpectedSince != nil {
		since := int64(0)
		if s.balance != nil {
			since = s.balance.since
		}
		if since != *r.ExpectedSince {
			return fail(errorf(metadatav1.ErrorCode_INVALID_REQUEST,
				"a plan computed against the plan of version %d, but the last plan is of version %d", *r.ExpectedSince, since))
		}
	}
	s.balance = &balanceRun{pending: slices.Clone(r.Moves), maxMoving: r.MaxMoving, planned: int32(len(r.Moves)),
		drain: slices.Clone(r.Drain), since: int64(s.appliedIndex)}
	if len(r.Drain) > 0 {
		s.balance.leftBehind = s.drainLeavesBehind(r.Moves)
	}
	s.advanceBalance(c)
	return Result{}
}

// holdBalance holds the plan's next moves back until the function it
// returns is called, which starts them. A loop that changes partitions one
// by one in a map's order holds them: a move that ends in it would start
// the next, which may change a partition the loop visits before or after
// it (one broker visited leads it, or one offline comes back), and two
// controllers, ranging in different orders, would part (found by
// TestPropertyViewsHoldTheirVersion, whose records include plans).
func (s *StateMachine) holdBalance(c *change) (release func()) {
	run := s.balance
	if run == nil || run.advancing {
		return func() {}
	}
	run.advancing = true
	return func() {
		run.advancing = false
		s.advanceBalance(c)
	}
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
			// A partition moving ends its move later (moveEnded looks
			// then); one that stays as it is may keep a drained replica.
			if t, ok := s.topics[next.Topic]; ok && next.Partition >= 0 && int(next.Partition) < len(t.partitions) && t.movingOf(next.Partition) == nil {
				s.moveEnded(t.partitions[next.Partition].replicas)
			}
		} else {
			run.started++
			// A target keeping a drained broker (a reorder, where nothing
			// could take its replica) leaves it behind.
			s.moveEnded(next.Replicas)
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

// drainingNote qualifies a count of brokers that may take replicas when
// some are being decommissioned (they take none).
func (s *StateMachine) drainingNote() string {
	if s.balance == nil || len(s.balance.drain) == 0 {
		return ""
	}
	return fmt.Sprintf(" (besides %v, being decommissioned)", s.balance.drain)
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
	// The replica may have left since (an operator's reassignment): then
	// there is nothing to plan. Linear, but only while the mark is set.
	for _, id := range run.drain {
		if s.replicasOn(id) > 0 {
			return slices.Clone(run.drain)
		}
	}
	return nil
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

// HasInSync says whether a partition has an in-sync replica: a move of
// one that has none is refused (its replicas would learn nothing).
func (s *StateMachine) HasInSync(topic string, index int32) bool {
	t, ok := s.topics[topic]
	return ok && index >= 0 && int(index) < len(t.partitions) && len(t.partitions[index].isr) > 0
}

// moveEnded notes a move that ended with these replicas: if the plan
// drains one of them, it left a replica behind.
func (s *StateMachine) moveEnded(replicas []int32) {
	if run := s.balance; run != nil && slices.ContainsFunc(replicas, s.draining) {
		run.leftBehind = true
	}
}

// PlanInputs is what a balancing plan reads of the partitions: those not
// moving and with every replica on a registered broker (a move keeping a
// replica on a broker that unregistered could never complete), in topic
// order, their replica lists packed into one array. Flat, with no pointer
// but the topic names: gathering a million partitions on the node's
// goroutine is a copy (BenchmarkPlanInputs), not a million slice headers
// for the garbage collector to scan.
type PlanInputs struct {
	Topics []string
	// Refs[i] names the i-th partition: its topic's position in Topics
	// and its index.
	Refs []PartitionRef
	IDs  []int32
	// Ends[i] is where the i-th partition's replicas end in IDs.
	Ends []int32
}

// PartitionRef names a partition of PlanInputs.
type PartitionRef struct{ Topic, Index int32 }

// Replicas is the i-th partition's replica list (shared: not to change).
func (in *PlanInputs) Replicas(i int) []int32 {
	from := int32(0)
	if i > 0 {
		from = in.Ends[i-1]
	}
	return in.IDs[from:in.Ends[i]:in.Ends[i]]
}

// PlanInputs gathers the partitions a balancing plan moves.
func (s *StateMachine) PlanInputs() *PlanInputs {
	n := s.PartitionCount()
	in := &PlanInputs{Refs: make([]PartitionRef, 0, n), IDs: make([]int32, 0, 3*n), Ends: make([]int32, 0, n)}
	registered := s.registeredSet()
	for _, name := range s.sortedTopicNames() {
		t := s.topics[name]
		topic := int32(-1)
		for i := range t.partitions {
			replicas := t.partitions[i].replicas
			if t.movingOf(int32(i)) != nil || slices.ContainsFunc(replicas, func(id int32) bool { return !registered(id) }) {
				continue
			}
			if topic < 0 {
				in.Topics = append(in.Topics, name)
				topic = int32(len(in.Topics) - 1)
			}
			in.Refs = append(in.Refs, PartitionRef{Topic: topic, Index: int32(i)})
			in.IDs = append(in.IDs, replicas...)
			in.Ends = append(in.Ends, int32(len(in.IDs)))
		}
	}
	return in
}

// registeredSet is a fast membership test of the registered brokers: a
// table by id where the ids are small, as they are in practice.
func (s *StateMachine) registeredSet() func(int32) bool {
	largest := int32(0)
	for id := range s.brokers { // determinism: a maximum
		largest = max(largest, id)
	}
	if largest >= 1<<20 {
		return func(id int32) bool { _, ok := s.brokers[id]; return ok }
	}
	table := make([]bool, largest+1)
	for id := range s.brokers { // determinism: a set
		table[id] = true
	}
	return func(id int32) bool { return id >= 0 && id <= largest && table[id] }
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
