package statemachine

import "slices"

// Eligible leader replicas (Kafka's KIP-966). With acks=all, a record is
// committed only while the ISR has at least min.insync.replicas members: a
// replica that leaves the ISR when it falls below that size holds every
// committed record, since nothing was committed after it left. Such
// replicas are the partition's ELR. When no ISR member can lead, the first
// eligible ELR member does (with an ISR of itself), before the partition is
// declared offline; only unclean.leader.election.enable elects outside ISR
// and ELR.
//
// The ELR is cleared when the ISR is back at min.insync.replicas, loses
// the members that rejoin the ISR, and loses a broker that unregisters. A
// broker's log is taken to survive its restarts, as an ISR member's is (a
// new incarnation keeps its place in both): one whose disk was lost comes
// back under a new id, or is unregistered first.

func (t *topic) elrOf(index int32) []int32 {
	if t.elr == nil {
		return nil
	}
	return t.elr[index]
}

func (t *topic) setELR(index int32, elr []int32) {
	if len(elr) == 0 {
		delete(t.elr, index)
		if len(t.elr) == 0 {
			t.elr = nil
		}
		return
	}
	if t.elr == nil {
		t.elr = map[int32][]int32{}
	}
	t.elr[index] = elr
}

// isrChanged keeps a partition's ELR in step with an ISR change from old:
// members back in the ISR and non-replicas leave it; the members that left
// join it while the ISR is below min.insync.replicas; it empties once the
// ISR is back at that size.
func (s *StateMachine) isrChanged(t *topic, index int32, old []int32) {
	s.mustBeWritable(t)
	p := &t.partitions[index]
	elr := t.elrOf(index)
	if len(p.isr) >= int(t.config.MinInsyncReplicas) {
		t.setELR(index, nil)
		return
	}
	next := make([]int32, 0, len(elr)+len(old))
	for _, id := range elr {
		if !slices.Contains(p.isr, id) && slices.Contains(p.replicas, id) {
			next = append(next, id)
		}
	}
	for _, id := range old {
		_, registered := s.brokers[id]
		if registered && !slices.Contains(p.isr, id) && !slices.Contains(next, id) && slices.Contains(p.replicas, id) {
			next = append(next, id)
		}
	}
	t.setELR(index, next)
}

// pickELRLeader is the first eligible ELR member of a partition, in
// replica order, or NoLeader.
func (s *StateMachine) pickELRLeader(t *topic, index int32) int32 {
	elr := t.elrOf(index)
	if len(elr) == 0 {
		return NoLeader
	}
	for _, id := range t.partitions[index].replicas {
		if !slices.Contains(elr, id) {
			continue
		}
		if b, ok := s.brokers[id]; ok && b.eligible() {
			return id
		}
	}
	return NoLeader
}

// dropFromELRs takes a broker out of every ELR: it unregistered, or came
// back as a new incarnation whose log may be gone.
func (s *StateMachine) dropFromELRs(id int32, c *change) {
	for _, t := range s.topics { // determinism: each partition changes on its own; the change set is sorted where read
		for index, elr := range t.elr { // determinism: as above
			if slices.Contains(elr, id) {
				t = s.writableTopic(t)
				t.setELR(index, without(elr, []int32{id}))
				t.partitions[index].partitionEpoch++
				c.partitions = append(c.partitions, partitionKey{topic: t.name, index: index})
			}
		}
	}
}
