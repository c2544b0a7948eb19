package statemachine

import (
	"fmt"
	"slices"
)

// CheckInvariants verifies what must hold after every applied record. The
// simulator calls it after each apply, Restore on every snapshot, and
// Apply itself after every record in builds with the invariants tag.
// It returns the first violation found, in a deterministic order.
func (s *StateMachine) CheckInvariants() error {
	for _, id := range s.sortedBrokerIDs() {
		b := s.brokers[id]
		if b.id != id || b.id < BrokerIDMin {
			return fmt.Errorf("broker key %d holds broker %d", id, b.id)
		}
		if b.epoch <= 0 || uint64(b.epoch) > s.appliedIndex {
			return fmt.Errorf("broker %d has epoch %d outside (0, %d]", id, b.epoch, s.appliedIndex)
		}
	}
	offline := 0
	for _, name := range s.sortedTopicNames() {
		t := s.topics[name]
		if err := s.checkTopic(name, t); err != nil {
			return err
		}
		for i := range t.partitions {
			_, indexed := s.offline[partitionKey{topic: name, index: int32(i)}]
			if (t.partitions[i].leader == NoLeader) != indexed {
				return fmt.Errorf("%s-%d has leader %d but the offline index says %v", name, i, t.partitions[i].leader, indexed)
			}
			if indexed {
				offline++
				// Offline only while no ISR or ELR member may lead: a
				// partition must not stay offline beside an eligible
				// in-sync or eligible leader replica.
				for _, id := range append(slices.Clone(t.partitions[i].isr), t.elrOf(int32(i))...) {
					if b, ok := s.brokers[id]; ok && b.eligible() {
						return fmt.Errorf("%s-%d is offline though ISR or ELR member %d is eligible", name, i, id)
					}
				}
			}
		}
	}
	moving := 0
	for _, t := range s.topics { // determinism: a sum
		moving += len(t.moving)
	}
	if moving != s.movingCount {
		return fmt.Errorf("%d partitions move, the count says %d", moving, s.movingCount)
	}
	if offline != len(s.offline) {
		return fmt.Errorf("the offline index holds %d partitions, %d are offline", len(s.offline), offline)
	}
	return nil
}

func (s *StateMachine) checkTopic(name string, t *topic) error {
	if t.name != name || ValidateTopicName(name) != nil {
		return fmt.Errorf("topic key %q holds invalid topic %q", name, t.name)
	}
	if s.topicsByCollisionKey[collisionKey(name)] != name || s.topicIDs[t.id] != name {
		return fmt.Errorf("topic %q is missing from the name or id index", name)
	}
	if ValidateTopicID(t.id) != nil {
		return fmt.Errorf("topic %q has invalid id %q", name, t.id)
	}
	if err := validateTopicConfig(t.config, t.replicationFactor); err != nil {
		return fmt.Errorf("topic %q: %v", name, err)
	}
	if len(t.partitions) == 0 {
		return fmt.Errorf("topic %q has no partitions", name)
	}
	for i := range t.partitions {
		p := &t.partitions[i]
		where := partitionName{name, i}
		if err := t.checkMove(int32(i)); err != nil {
			return fmt.Errorf("%s: %v", where, err.Message)
		}
		if m := t.movingOf(int32(i)); m == nil && len(p.replicas) != int(t.replicationFactor) {
			return fmt.Errorf("%s has %d replicas, the topic's factor is %d", where, len(p.replicas), t.replicationFactor)
		}
		for j, id := range p.replicas {
			if slices.Contains(p.replicas[:j], id) {
				return fmt.Errorf("%s repeats broker %d in replicas %v", where, id, p.replicas)
			}
		}
		if len(p.isr) == 0 || len(p.isr) > len(p.replicas) {
			return fmt.Errorf("%s has an ISR of %d members for %d replicas", where, len(p.isr), len(p.replicas))
		}
		for j, id := range p.isr {
			if slices.Contains(p.isr[:j], id) || !slices.Contains(p.replicas, id) {
				return fmt.Errorf("%s has ISR %v that repeats a broker or is not within replicas %v", where, p.isr, p.replicas)
			}
		}
		if elr := t.elrOf(int32(i)); elr != nil {
			if len(p.isr) >= int(t.config.MinInsyncReplicas) {
				return fmt.Errorf("%s has ELR %v with an ISR %v of at least min.insync.replicas %d", where, elr, p.isr, t.config.MinInsyncReplicas)
			}
			for j, id := range elr {
				if slices.Contains(elr[:j], id) || slices.Contains(p.isr, id) || !slices.Contains(p.replicas, id) {
					return fmt.Errorf("%s has ELR %v that repeats a broker, overlaps the ISR %v or is not within replicas %v", where, elr, p.isr, p.replicas)
				}
			}
		}
		if p.leaderEpoch < 0 || p.partitionEpoch < p.leaderEpoch {
			return fmt.Errorf("%s has leader epoch %d and partition epoch %d", where, p.leaderEpoch, p.partitionEpoch)
		}
		if p.leader == NoLeader {
			continue
		}
		if !slices.Contains(p.isr, p.leader) {
			return fmt.Errorf("%s is led by %d, which is not in its ISR %v", where, p.leader, p.isr)
		}
		b, ok := s.brokers[p.leader]
		if !ok || b.fenced {
			return fmt.Errorf("%s is led by broker %d, which is unregistered or fenced", where, p.leader)
		}
		if len(p.isr) > 1 {
			for _, id := range p.isr {
				if member, ok := s.brokers[id]; !ok || member.fenced {
					return fmt.Errorf("%s has fenced or unregistered broker %d in a multi-member ISR %v", where, id, p.isr)
				}
			}
		}
	}
	return nil
}

// partitionName formats as topic-index only when an error is printed, so the
// check of a million partitions allocates nothing.
type partitionName struct {
	topic string
	index int
}

func (p partitionName) String() string { return fmt.Sprintf("%s-%d", p.topic, p.index) }
