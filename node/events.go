package node

import "fmt"

// EventKind names something an operator should hear of: the node says
// what happened, as it happens; how it is logged (levels, rate limits) is
// the driver's business (rpc logs it with slog; the simulator ignores it).
type EventKind int

const (
	// EventLeaderChanged: a new term or a new leader (Leader 0: none known).
	EventLeaderChanged EventKind = iota + 1
	// EventBecameActive: this controller leads and has applied every entry
	// of earlier terms; it takes writes.
	EventBecameActive
	// EventPeerUnreachable: a message to Peer could not be delivered; said
	// once until Peer is heard from again (EventPeerBack).
	EventPeerUnreachable
	EventPeerBack
	// EventBrokerFenced and EventBrokerUnfenced, on the active controller.
	EventBrokerFenced
	EventBrokerUnfenced
	// EventPushFailing: pushes to Broker fail (once until one succeeds:
	// EventPushRecovered).
	EventPushFailing
	EventPushRecovered
	// EventMembershipChanged: a configuration change applied (Detail says
	// which, Peer whom).
	EventMembershipChanged
	// EventRemoved: this controller was removed from the configuration.
	EventRemoved
	// EventSnapshotTaken and EventSnapshotInstalled (Index, Bytes).
	EventSnapshotTaken
	EventSnapshotInstalled
	// EventStrangerRefused: a Raft message from Peer, which is not a member,
	// was refused.
	EventStrangerRefused
	// EventRebalance: the active controller planned a balancing when
	// Broker joined (Detail says how many moves).
	EventRebalance
	// EventDrainReplanned: a decommission's plan ran but left replicas on
	// the drained brokers (Broker is the first); the active controller
	// planned again (Detail says how many moves).
	EventDrainReplanned
)

var eventNames = map[EventKind]string{
	EventLeaderChanged: "leader changed", EventBecameActive: "became the active controller",
	EventPeerUnreachable: "peer unreachable", EventPeerBack: "peer reachable again",
	EventBrokerFenced: "broker fenced", EventBrokerUnfenced: "broker unfenced",
	EventPushFailing: "pushes to a storage service failing", EventPushRecovered: "pushes to a storage service recovered",
	EventMembershipChanged: "membership changed", EventRemoved: "this controller was removed from the cluster",
	EventSnapshotTaken: "snapshot taken", EventSnapshotInstalled: "snapshot installed",
	EventStrangerRefused: "message from a non-member refused",
	EventRebalance:       "balancing planned for a broker that joined",
	EventDrainReplanned:  "decommission planned again for replicas left behind",
}

func (k EventKind) String() string {
	if name, ok := eventNames[k]; ok {
		return name
	}
	return fmt.Sprintf("event(%d)", int(k))
}

// Event is one thing that happened; the fields that do not apply are zero.
type Event struct {
	Kind   EventKind
	Term   uint64
	Leader uint64
	Peer   uint64
	Broker int32
	Epoch  int64
	Index  uint64
	Bytes  int
	Detail string
}

// Events receives the node's events. It must not call back into the node.
type Events interface {
	Event(e Event)
}

// emit hands e to the environment's Events, if any, stamped with the term.
func (n *Node) emit(e Event) {
	if n.env.Events == nil {
		return
	}
	if e.Term == 0 {
		e.Term = n.term
	}
	n.env.Events.Event(e)
}
