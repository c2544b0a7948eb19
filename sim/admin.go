package sim

import (
	"fmt"
	"time"

	"github.com/dmq-project/metadata/client"
	metadatav1 "github.com/dmq-project/metadata/gen/dmq/metadata/v1"
	"github.com/dmq-project/metadata/node"
)

// stableTopics are created once, early, by the admin, and never deleted:
// the clients' topics come and go within seconds, and only partitions that
// live through the chaos see leaders move away and come back, which the
// preferred-leader check and the rebalance it guards need.
var stableTopics = []string{"ledger", "inventory"}

// admin creates the stable topics, retrying each until it exists, then
// moves their partitions between brokers (reassignments, a few seconds
// apart, some cancelled), through every fault: partitions that live long
// enough for moves to complete. Its writes are not in the client history:
// no client operation names these topics; the golden replica checks the
// moves.
type admin struct {
	sim    *Sim
	caller *caller
	next   int
	// final is the admin's last plan, which the cluster must carry out by
	// the end (finalPlan); nil until it is issued, after which the admin
	// moves nothing.
	final *finalPlan
	// writing: a write is in flight.
	writing bool
	// movableAt: the moves able to end a few seconds before the end, by
	// partition, with their leader epochs (noteMovable).
	movableAt map[string]int32
	// decommissionLast: the last plan decommissions a broker, under
	// faults; otherwise it rebalances the cluster once writes stop.
	decommissionLast bool
}

func newAdmin(s *Sim) *admin {
	a := &admin{sim: s, caller: newCaller(s, 999, "admin"), decommissionLast: s.rng.IntN(2) == 0}
	if !a.decommissionLast {
		s.schedule(s.writesStopAt()+time.Second, evClientStart, 999, 1, a.rebalanceLast)
	}
	s.schedule(s.opts.Duration-settlingQuiet-3*time.Second, evClientStart, 999, 2, a.noteMovable)
	return a
}

func (a *admin) start() {
	s := a.sim
	if s.now >= s.writesStopAt() || a.final != nil {
		return
	}
	if a.next >= len(stableTopics) {
		if a.decommissionLast && s.now >= s.opts.HealAfter-decommissionBeforeHeal {
			a.decommission()
			return
		}
		if s.rng.IntN(4) == 0 {
			a.rebalance()
		} else {
			a.reassign()
		}
		return
	}
	name := stableTopics[a.next]
	a.write(s.now+callerPatience, func(n *node.Node, id *metadatav1.RequestId, reply func(attemptReply[node.Outcome])) {
		// With three replicas or more, min.insync.replicas 2: ISRs that
		// shrink below it leave eligible leader replicas behind.
		rf := max(s.opts.ReplicationFactor, 1)
		configs := map[string]string{}
		if rf >= 3 {
			configs["min.insync.replicas"] = "2"
		}
		n.CreateTopic(&metadatav1.CreateTopicRequest{Name: name, Partitions: 3, ReplicationFactor: rf, Configs: configs, RequestId: id},
			func(o node.Outcome) { reply(attemptReply[node.Outcome]{value: o, err: o.Err, leader: o.LeaderID}) })
	}, func(e writeEnd) {
		done := e.failure == nil && e.verdict == client.WriteAnswered ||
			e.failure != nil && e.failure.ErrorCode == metadatav1.ErrorCode_TOPIC_ALREADY_EXISTS
		if done {
			a.next++
		}
		s.schedule(time.Second, evClientStart, 999, 0, a.start)
	})
}

func (a *admin) String() string {
	return fmt.Sprintf("admin (%d of %d stable topics, last plan %v)", a.next, len(stableTopics), a.final)
}

// reassign moves a random partition of a stable topic to a random target,
// or cancels its move, then waits a few seconds.
func (a *admin) reassign() {
	s := a.sim
	ra := &metadatav1.PartitionReassignment{Topic: stableTopics[s.rng.IntN(len(stableTopics))], Partition: int32(s.rng.IntN(3))}
	if s.rng.IntN(5) != 0 {
		ra.Replicas = parseTarget(s.randomTarget())
	}
	a.write(s.now+callerPatience, func(n *node.Node, id *metadatav1.RequestId, reply func(attemptReply[node.Outcome])) {
		n.AlterPartitionReassignments(&metadatav1.AlterPartitionReassignmentsRequest{RequestId: id,
			Reassignments: []*metadatav1.PartitionReassignment{ra}},
			func(o node.Outcome) { reply(attemptReply[node.Outcome]{value: o, err: o.Err, leader: o.LeaderID}) })
	}, func(writeEnd) {
		s.schedule(s.between(2*time.Second, 6*time.Second), evClientStart, 999, 0, a.start)
	})
}

// rebalance has the controllers plan and run a balancing of the cluster,
// a few partitions moving at once, then waits a few seconds.
func (a *admin) rebalance() {
	s := a.sim
	maxMoving := int32(1 + s.rng.IntN(3))
	a.write(s.now+callerPatience, func(n *node.Node, id *metadatav1.RequestId, reply func(attemptReply[node.Outcome])) {
		n.Rebalance(&metadatav1.RebalanceRequest{RequestId: id, MaxMoving: maxMoving},
			func(o node.Outcome, _ []*metadatav1.PartitionReassignment) {
				reply(attemptReply[node.Outcome]{value: o, err: o.Err, leader: o.LeaderID})
			})
	}, func(writeEnd) {
		s.fault("rebalance")
		s.schedule(s.between(2*time.Second, 6*time.Second), evClientStart, 999, 0, a.start)
	})
}

// write runs a write as the caller does, noting that it is in flight.
func (a *admin) write(deadline time.Duration, handle func(n *node.Node, id *metadatav1.RequestId, reply func(attemptReply[node.Outcome])),
	done func(writeEnd)) {
	a.writing = true
	a.caller.write(deadline, handle, func(e writeEnd) {
		a.writing = false
		done(e)
	})
}
