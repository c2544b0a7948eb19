package sim

import (
	"fmt"
	"time"

	"github.com/anishathalye/porcupine"
	"github.com/dmq-project/metadata/client"
	metadatav1 "github.com/dmq-project/metadata/gen/dmq/metadata/v1"
	"github.com/dmq-project/metadata/linearizability"
	"github.com/dmq-project/metadata/node"
	"github.com/dmq-project/metadata/statemachine"
	"github.com/dmq-project/metadata/wire"
)

var (
	simTopics  = []string{"orders", "payments", "audit-log", "clicks", "users", "events"}
	simBrokers = []int32{100, 101, 102}
)

// operator is an operator's client: it issues one operation at a time through
// a caller (the production client's retry and session logic) with a
// deadline, and records each logical operation once in the history: from
// its start to its final answer, or pending forever when the outcome stayed
// unknown.
type operator struct {
	sim    *Sim
	id     int
	caller *caller
	op     *clientOp
}

type clientOp struct {
	input linearizability.Input
	call  time.Duration
}

// sessionOutlivesFailover is the shortest client session that must carry
// a write through a failover after the heal (an election and a client
// timeout or two): shorter ones, drawn to make retries meet expiry during
// the chaos, may end a write in an unknown outcome there too, which is
// what they are for.
const sessionOutlivesFailover = 10 * time.Second

func newClient(s *Sim, id int) *operator {
	return &operator{sim: s, id: id, caller: newCaller(s, uint64(1000+id), fmt.Sprintf("client-%d", id))}
}

// writesStopAt is when clients and storage services stop starting writes,
// so that every write can finish and every controller apply it before the
// run ends and the liveness checks compare them.
func (s *Sim) writesStopAt() time.Duration {
	return s.opts.Duration - callerPatience - time.Second
}

func (c *operator) start() {
	s := c.sim
	if s.now >= s.writesStopAt() {
		return
	}
	in := linearizability.Input{Topic: simTopics[s.rng.IntN(len(simTopics))]}
	switch r := s.rng.IntN(100); {
	case r < 22:
		in.Kind, in.Count = linearizability.CreateTopic, int32(1+s.rng.IntN(4))
	case r < 34:
		in.Kind = linearizability.DeleteTopic
	case r < 46:
		in.Kind, in.Count = linearizability.CreatePartitions, int32(2+s.rng.IntN(6))
	case r < 76:
		in.Kind = linearizability.DescribeTopic
	case r < 84:
		in.Kind, in.Broker = linearizability.RegisterBroker, simBrokers[s.rng.IntN(len(simBrokers))]
	case r < 90:
		in.Kind, in.Broker = linearizability.UnregisterBroker, simBrokers[s.rng.IntN(len(simBrokers))]
	default:
		in.Kind, in.Broker = linearizability.DescribeBroker, simBrokers[s.rng.IntN(len(simBrokers))]
	}
	op := &clientOp{input: in, call: s.now}
	c.op = op
	deadline := s.now + callerPatience
	if in.Kind == linearizability.DescribeTopic || in.Kind == linearizability.DescribeBroker {
		first := ""
		if s.rng.Float64() < s.opts.FollowerReads {
			// A client whose endpoint list starts at a follower.
			first = endpointOf(s.randomNodeID())
		}
		call(c.caller, deadline, first, func(n *node.Node, reply func(attemptReply[linearizability.Output])) {
			c.read(n, in, reply)
		}, func(e callEnd[linearizability.Output]) {
			if e.failure != nil {
				// A read without an answer did nothing: it has no place
				// in the history.
				c.finish(op, linearizability.Output{Unknown: true}, false, 0)
				return
			}
			c.finish(op, e.value, true, 0)
		})
		return
	}
	c.caller.write(deadline, func(n *node.Node, id *metadatav1.RequestId, reply func(attemptReply[node.Outcome])) {
		c.handleWrite(n, in, id, func(o node.Outcome) { reply(attemptReply[node.Outcome]{value: o, err: o.Err, leader: o.LeaderID}) })
	}, func(e writeEnd) {
		switch {
		case e.requestID == nil:
			// No session could be opened: nothing was sent.
			c.finish(op, linearizability.Output{Unknown: true}, false, 0)
		case e.verdict == client.WriteUnknown:
			c.finish(op, linearizability.Output{Unknown: true}, true, e.sessionTimeout)
		case e.failure == nil:
			s.golden.checkAnswer(s, e.requestID, metadatav1.ErrorCode_NONE)
			c.finish(op, linearizability.Output{Code: metadatav1.ErrorCode_NONE}, true, e.sessionTimeout)
		case definite(e.failure.ErrorCode):
			s.golden.checkAnswer(s, e.requestID, e.failure.ErrorCode)
			c.finish(op, linearizability.Output{Code: e.failure.ErrorCode}, true, e.sessionTimeout)
		default:
			// Refused before it was proposed, the client says: it must
			// never be applied.
			s.golden.checkNotApplied(s, e.requestID, *e.failure)
			c.finish(op, linearizability.Output{NotApplied: true}, true, e.sessionTimeout)
		}
	})
}

// definite says whether an error code is an answer about the operation
// itself rather than about the controllers' availability.
func definite(code metadatav1.ErrorCode) bool {
	return wire.Definite(code)
}

// handleWrite runs on the controller: the write through the node's API.
func (c *operator) handleWrite(n *node.Node, in linearizability.Input, id *metadatav1.RequestId, done func(node.Outcome)) {
	switch in.Kind {
	case linearizability.CreateTopic:
		n.CreateTopic(&metadatav1.CreateTopicRequest{Name: in.Topic, Partitions: in.Count, ReplicationFactor: max(c.sim.opts.ReplicationFactor, 1), RequestId: id}, done)
	case linearizability.DeleteTopic:
		n.DeleteTopic(&metadatav1.DeleteTopicRequest{Name: in.Topic, RequestId: id}, done)
	case linearizability.CreatePartitions:
		n.CreatePartitions(&metadatav1.CreatePartitionsRequest{Topic: in.Topic, Count: in.Count, RequestId: id}, done)
	case linearizability.RegisterBroker:
		n.RegisterBroker(&metadatav1.RegisterBrokerRequest{Id: in.Broker, Host: fmt.Sprintf("client-broker-%d.sim", in.Broker),
			Port: 9092, IncarnationId: "client", RequestId: id}, done)
	case linearizability.UnregisterBroker:
		n.UnregisterBroker(&metadatav1.UnregisterBrokerRequest{Id: in.Broker, RequestId: id}, done)
	default:
		panic(fmt.Sprintf("sim: %v is not a write", in.Kind))
	}
}

// read runs on the controller: a linearizable read through the node's API.
func (c *operator) read(n *node.Node, in linearizability.Input, reply func(attemptReply[linearizability.Output])) {
	leader := n.Leader()
	n.Read(func(sm *statemachine.StateMachine, err *statemachine.Error) {
		if err != nil {
			reply(attemptReply[linearizability.Output]{err: err, leader: leader})
			return
		}
		var out linearizability.Output
		if in.Kind == linearizability.DescribeTopic {
			if t := sm.Topic(in.Topic); t != nil {
				out.Exists, out.Partitions = true, int32(len(t.Partitions))
			}
		} else {
			out.Exists = sm.Broker(in.Broker) != nil
		}
		reply(attemptReply[linearizability.Output]{value: out})
	})
}

// finish records the operation, if record says it belongs in the history
// (a write sent, a read answered), and schedules the next one.
// sessionTimeout is that of the session a write ran in.
func (c *operator) finish(op *clientOp, out linearizability.Output, record bool, sessionTimeout time.Duration) {
	s := c.sim
	if c.op != op {
		panic("sim: a client finished an operation it is not running")
	}
	c.op = nil
	ret := int64(s.now)
	if out.Unknown {
		ret = linearizability.PendingForever
		shortSession := sessionTimeout > 0 && sessionTimeout < sessionOutlivesFailover
		if s.healed && op.call > s.opts.HealAfter+5*time.Second && !shortSession {
			s.violate("client %d's %v %s started after the heal and never completed\n%s", c.id, op.input.Kind, op.input.Topic, s.describe())
		}
	}
	if record {
		s.history = append(s.history, porcupine.Operation{
			ClientId: c.id, Input: op.input, Call: int64(op.call), Output: out, Return: ret,
		})
	}
	s.clientOpsDone++
	s.schedule(s.between(10*time.Millisecond, 300*time.Millisecond), evClientStart, uint64(c.id), 0, c.start)
}
