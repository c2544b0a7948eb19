package statemachine

import (
	"slices"

	metadatav1 "github.com/dmq-project/metadata/gen/dmq/metadata/v1"
)

// Reassignments (Kafka's KIP-455). While a partition moves to a target
// replica list, its replicas are the target followed by the replicas
// leaving (the union); the adding replicas join the ISR as its leader
// reports them caught up (AlterPartition); once every target replica is in
// the ISR, the move completes in that same apply: leadership moves to the
// target if it must, and the leaving replicas go. Everything is decided at
// apply from the record and the state, so every controller moves alike.
//
// A target has exactly the topic's replication factor of replicas: a topic
// has one factor (changing it is not a reassignment here).

// move is a partition's reassignment in progress: the replicas it started
// from (a cancellation goes back to them, in their order), and what joins
// and leaves on the way to the target.
type move struct {
	original, adding, removing []int32
}

// newMove is the move from original to target, nil when the two hold the
// same replicas (only the order changes: no data moves).
func newMove(original, target []int32) *move {
	m := &move{original: slices.Clone(original), adding: without(target, original), removing: without(original, target)}
	if len(m.adding) == 0 && len(m.removing) == 0 {
		return nil
	}
	return m
}

// movingOf is the move of a topic's partition, or nil.
func (t *topic) movingOf(index int32) *move {
	if t.moving == nil {
		return nil
	}
	return t.moving[index]
}

func (t *topic) setMoving(index int32, m *move) {
	if m == nil {
		delete(t.moving, index)
		if len(t.moving) == 0 {
			t.moving = nil
		}
		return
	}
	if t.moving == nil {
		t.moving = map[int32]*move{}
	}
	t.moving[index] = m
}

// setMoving sets a partition's move (after its replicas), counting the
// partitions moving; a move that ends makes room for the balancing plan's
// next, and may leave a replica on a broker being decommissioned.
func (s *StateMachine) setMoving(t *topic, index int32, m *move) {
	s.mustBeWritable(t)
	was := t.movingOf(index) != nil
	t.setMoving(index, m)
	switch {
	case was && m == nil:
		s.movingCount--
		s.moveEnded(t.partitions[index].replicas)
	case !was && m != nil:
		s.movingCount++
	}
}

// target is the replica list a moving partition goes to: its replicas
// without the leaving tail.
func (p *partition) target(m *move) []int32 { return p.replicas[:len(p.replicas)-len(m.removing)] }

func without(ids, remove []int32) []int32 {
	out := make([]int32, 0, len(ids))
	for _, id := range ids {
		if !slices.Contains(remove, id) {
			out = append(out, id)
		}
	}
	return out
}

func within(ids, keep []int32) []int32 {
	out := make([]int32, 0, len(ids))
	for _, id := range ids {
		if slices.Contains(keep, id) {
			out = append(out, id)
		}
	}
	return out
}

func (s *StateMachine) alterPartitionReassignments(r *metadatav1.AlterPartitionReassignmentsRecord, c *change) Result {
	if len(r.Reassignments) == 0 || len(r.Reassignments) > TopicsPerBatchMax {
		return fail(errorf(metadatav1.ErrorCode_INVALID_REQUEST, "a reassignment names 1-%d partitions, not %d",
			TopicsPerBatchMax, len(r.Reassignments)))
	}
	items := make([]ItemResult, len(r.Reassignments))
	for i, ra := range r.Reassignments {
		items[i].Err = s.reassign(ra, c)
	}
	// A cancellation may have made room for the balancing plan's next.
	s.advanceBalance(c)
	return Result{Items: items}
}

// ValidateReassignment checks what a reassignment can be checked for
// without the state.
func ValidateReassignment(ra *metadatav1.PartitionReassignment) *Error {
	if err := ValidateTopicName(ra.GetTopic()); err != nil {
		return err
	}
	if len(ra.GetReplicas()) > ReplicationFactorMax {
		return errorf(metadatav1.ErrorCode_INVALID_REPLICA_ASSIGNMENT, "%d replicas: at most %d", len(ra.GetReplicas()), ReplicationFactorMax)
	}
	for i, id := range ra.GetReplicas() {
		if id < BrokerIDMin || slices.Contains(ra.GetReplicas()[:i], id) {
			return errorf(metadatav1.ErrorCode_INVALID_REPLICA_ASSIGNMENT, "replicas %v: broker ids from %d, each once", ra.GetReplicas(), BrokerIDMin)
		}
	}
	return nil
}

func (s *StateMachine) reassign(ra *metadatav1.PartitionReassignment, c *change) *Error {
	if err := ValidateReassignment(ra); err != nil {
		return err
	}
	t, ok := s.topics[ra.Topic]
	if !ok {
		return errorf(metadatav1.ErrorCode_UNKNOWN_TOPIC, "topic %q does not exist", ra.Topic)
	}
	if ra.Partition < 0 || int(ra.Partition) >= len(t.partitions) {
		return errorf(metadatav1.ErrorCode_UNKNOWN_PARTITION, "topic %q has no partition %d", ra.Topic, ra.Partition)
	}
	t = s.writableTopic(t)
	p := &t.partitions[ra.Partition]
	m := t.movingOf(ra.Partition)
	if len(ra.ExpectedReplicas) > 0 && (m != nil || !slices.Equal(p.replicas, ra.ExpectedReplicas)) {
		return errorf(metadatav1.ErrorCode_INVALID_REPLICA_ASSIGNMENT, "%s-%d has replicas %v (moving: %v), not the expected %v",
			ra.Topic, ra.Partition, p.replicas, m != nil, ra.ExpectedReplicas)
	}
	original := p.replicas
	if m != nil {
		original = m.original
	}
	if len(ra.Replicas) == 0 {
		if m == nil {
			return errorf(metadatav1.ErrorCode_NO_REASSIGNMENT_IN_PROGRESS, "%s-%d is not being reassigned", ra.Topic, ra.Partition)
		}
		return s.moveTo(t, ra.Partition, original, nil, c, "cancel")
	}
	if len(ra.Replicas) != int(t.replicationFactor) {
		return errorf(metadatav1.ErrorCode_INVALID_REPLICA_ASSIGNMENT,
			"%d replicas for a topic of replication factor %d", len(ra.Replicas), t.replicationFactor)
	}
	for _, id := range ra.Replicas {
		b, ok := s.brokers[id]
		switch {
		case !ok:
			return errorf(metadatav1.ErrorCode_INVALID_REPLICA_ASSIGNMENT, "broker %d is not registered", id)
		case !slices.Contains(original, id) && !b.eligible():
			return errorf(metadatav1.ErrorCode_INVALID_REPLICA_ASSIGNMENT, "broker %d would join but is fenced or shutting down", id)
		case !slices.Contains(original, id) && s.draining(id):
			return errorf(metadatav1.ErrorCode_INVALID_REPLICA_ASSIGNMENT,
				"broker %d would join but is being decommissioned (dmqctl rebalance status); a plan without it ends that", id)
		}
	}
	next := newMove(original, ra.Replicas)
	if next == nil {
		// The same replicas, perhaps in another order: no data moves.
		return s.moveTo(t, ra.Partition, ra.Replicas, nil, c, "reorder")
	}
	return s.moveTo(t, ra.Partition, append(slices.Clone(ra.Replicas), next.removing...), next, c, "reassign")
}

// moveTo sets a partition's replicas (and its move, nil for none): the ISR
// keeps its members among them, the leader stays if it is one, else the
// first eligible of them in the ISR leads. Refused when no ISR member
// would be left. A move whose target is already in the ISR completes.
func (s *StateMachine) moveTo(t *topic, index int32, replicas []int32, m *move, c *change, what string) *Error {
	s.mustBeWritable(t)
	p := &t.partitions[index]
	isr := within(p.isr, replicas)
	if len(isr) == 0 {
		return errorf(metadatav1.ErrorCode_INVALID_REPLICA_ASSIGNMENT,
			"%s of %s-%d to %v refused: no member of its ISR %v would be left", what, t.name, index, replicas, p.isr)
	}
	dropped := len(without(p.replicas, replicas)) > 0
	old := p.isr
	p.replicas, p.isr = slices.Clone(replicas), isr
	s.setMoving(t, index, m)
	s.isrChanged(t, index, old)
	switch {
	case !slices.Contains(replicas, p.leader):
		s.setLeader(t, index, s.pickLeader(p, NoLeader))
	case dropped:
		// A replica leaves: a new leader epoch fences its log.
		p.leaderEpoch++
	}
	p.partitionEpoch++
	c.partitions = append(c.partitions, partitionKey{topic: t.name, index: index})
	s.completeMove(t, index, c)
	return nil
}

// setLeader changes a partition's leader, keeping the offline index.
func (s *StateMachine) setLeader(t *topic, index int32, leader int32) {
	s.mustBeWritable(t)
	p := &t.partitions[index]
	if leader == p.leader {
		return
	}
	key := partitionKey{topic: t.name, index: index}
	if leader == NoLeader {
		s.offline[key] = struct{}{}
	} else {
		delete(s.offline, key)
	}
	p.leader = leader
	p.leaderEpoch++
}

// completeMove ends a move whose every target replica is in the ISR: the
// leaving replicas go, and leadership moves to the first eligible target
// replica in the ISR if the leader is leaving. A move whose target has no
// eligible replica to lead waits.
func (s *StateMachine) completeMove(t *topic, index int32, c *change) {
	m := t.movingOf(index)
	if m == nil {
		return
	}
	s.mustBeWritable(t)
	p := &t.partitions[index]
	target := p.target(m)
	for _, id := range target {
		if !slices.Contains(p.isr, id) {
			return
		}
	}
	leader := p.leader
	if !slices.Contains(target, leader) {
		leader = NoLeader
		for _, id := range target {
			if b, ok := s.brokers[id]; ok && b.eligible() {
				leader = id
				break
			}
		}
		if leader == NoLeader {
			return
		}
	}
	old := p.isr
	p.replicas = slices.Clone(target)
	p.isr = within(p.isr, target)
	s.setMoving(t, index, nil)
	s.isrChanged(t, index, old)
	if leader == p.leader {
		// The leaving replicas go: a new leader epoch fences their logs.
		p.leaderEpoch++
	}
	s.setLeader(t, index, leader)
	p.partitionEpoch++
	c.partitions = append(c.partitions, partitionKey{topic: t.name, index: index})
	s.advanceBalance(c)
}

// Reassignments lists the reassignments in progress, by topic and
// partition.
func (s *StateMachine) Reassignments() []*metadatav1.OngoingReassignment {
	var out []*metadatav1.OngoingReassignment
	for _, name := range s.sortedTopicNames() {
		t := s.topics[name]
		if t.moving == nil {
			continue
		}
		for i := range t.partitions {
			if m := t.movingOf(int32(i)); m != nil {
				out = append(out, &metadatav1.OngoingReassignment{Topic: name, Partition: int32(i),
					Replicas: slices.Clone(t.partitions[i].replicas), AddingReplicas: slices.Clone(m.adding),
					RemovingReplicas: slices.Clone(m.removing)})
			}
		}
	}
	return out
}

// checkMove checks a moving partition's shape: the replicas are the
// target followed by the leaving ones; the adding ones are in the target,
// not leaving; the target has the topic's factor.
func (t *topic) checkMove(index int32) *Error {
	m := t.movingOf(index)
	if m == nil {
		return nil
	}
	p := &t.partitions[index]
	if len(m.original) != int(t.replicationFactor) {
		return errorf(metadatav1.ErrorCode_INVALID_RECORD, "%s-%d moves from %v, not %d replicas", t.name, index, m.original, t.replicationFactor)
	}
	for i, id := range m.original {
		if id < BrokerIDMin || slices.Contains(m.original[:i], id) {
			return errorf(metadatav1.ErrorCode_INVALID_RECORD, "%s-%d moves from %v: ids from %d, each once", t.name, index, m.original, BrokerIDMin)
		}
	}
	if len(m.adding) == 0 && len(m.removing) == 0 || len(p.replicas) != int(t.replicationFactor)+len(m.removing) {
		return errorf(metadatav1.ErrorCode_INVALID_RECORD, "%s-%d moves with replicas %v adding %v removing %v", t.name, index, p.replicas, m.adding, m.removing)
	}
	target := p.target(m)
	if want := newMove(m.original, target); want == nil || !slices.Equal(want.adding, m.adding) || !slices.Equal(want.removing, m.removing) {
		return errorf(metadatav1.ErrorCode_INVALID_RECORD, "%s-%d: a move from %v to %v adds %v and removes %v", t.name, index, m.original, target, m.adding, m.removing)
	}
	if !slices.Equal(p.replicas[len(target):], m.removing) {
		return errorf(metadatav1.ErrorCode_INVALID_RECORD, "%s-%d: replicas %v do not end with the leaving %v", t.name, index, p.replicas, m.removing)
	}
	for _, id := range m.adding {
		if !slices.Contains(target, id) {
			return errorf(metadatav1.ErrorCode_INVALID_RECORD, "%s-%d: adding %d is not in the target %v", t.name, index, id, target)
		}
	}
	for _, id := range m.removing {
		if slices.Contains(target, id) {
			return errorf(metadatav1.ErrorCode_INVALID_RECORD, "%s-%d: removing %d is in the target %v", t.name, index, id, target)
		}
	}
	return nil
}
