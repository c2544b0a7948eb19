package sim

import (
	"fmt"
	"time"

	"github.com/anishathalye/porcupine"
	"github.com/dmq-project/metadata/linearizability"
	"github.com/dmq-project/metadata/node"
	metadatav1 "github.com/dmq-project/metadata/rpc/gen/dmq/metadata/v1"
	"github.com/dmq-project/metadata/statemachine"
)

var (
	simTopics  = []string{"orders", "payments", "audit-log", "clicks", "users", "events"}
	simBrokers = []int32{100, 101, 102}
)

// client issues one operation at a time, retrying with the same request id
// after timeouts and "not the leader" answers, and records each logical
// operation once in the history: from its first attempt to its final
// answer, or pending forever when the outcome stayed unknown. Its writes
// run in a client session, as client.Client's do: opened through the log,
// reopened when it nears its horizon or a first attempt finds it expired.
type client struct {
	sim         *Sim
	id          int
	leaderGuess uint64
	op          *clientOp
	// session is 0 until one is open; seq is its last sequence used;
	// activeSince is at or before its last activity on the controllers.
	session        uint64
	sessionTimeout time.Duration
	seq            uint64
	activeSince    time.Duration
	// opening counts session opens, so that a late answer to an
	// abandoned open is ignored.
	opening int
}

type clientOp struct {
	input     linearizability.Input
	requestID *metadatav1.RequestId
	call      time.Duration
	// attempt counts sends; firstInSession is the first send under the
	// current request id.
	attempt        int
	firstInSession int
	maybeApplied   bool
	// expired: a retry met its session expired (the outcome is unknown).
	expired bool
}

// sessionOutlivesFailover is the shortest client session that must carry
// a write through a failover after the heal (an election and a client
// timeout or two): shorter ones, drawn to make retries meet expiry during
// the chaos, may end a write in an unknown outcome there too, which is
// what they are for.
const sessionOutlivesFailover = 10 * time.Second

// stopIssuingAt is when clients stop starting operations, so that every
// operation can finish before the run ends.
func (c *client) stopIssuingAt() time.Duration { return c.sim.writesStopAt() }

// writesStopAt is when clients and storage services stop starting writes,
// so that every write can finish and every controller apply it before the
// run ends and the liveness checks compare them.
func (s *Sim) writesStopAt() time.Duration {
	return s.opts.Duration - clientTimeout*clientAttemptsMax - time.Second
}

func (c *client) start() {
	s := c.sim
	if s.now >= c.stopIssuingAt() {
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
	c.op = &clientOp{input: in, call: s.now}
	c.sendInSession()
}

// sendInSession numbers a new write in the session, opening one first if
// there is none or it is too close to its horizon to carry the write.
func (c *client) sendInSession() {
	s := c.sim
	if c.isRead() {
		c.send()
		return
	}
	if c.session == 0 || s.now-c.activeSince >= c.sessionTimeout/2 {
		c.session = 0
		c.openSession()
		return
	}
	c.seq++
	c.op.firstInSession = c.op.attempt + 1
	c.op.requestID = &metadatav1.RequestId{ClientId: fmt.Sprintf("client-%d", c.id), SessionId: c.session, Sequence: c.seq}
	c.send()
}

// openSession opens a session through the log, retrying until one opens;
// the waiting operation is then sent in it.
func (c *client) openSession() {
	s := c.sim
	c.opening++
	opening := c.opening
	sent := s.now
	s.rpc(c.leaderGuess, uint64(1000+c.id), func(n *node.Node, reply func(func())) {
		n.OpenSession(&metadatav1.OpenSessionRequest{ClientId: fmt.Sprintf("client-%d", c.id)}, func(o node.Outcome) {
			timeout := n.ClientSessionTimeout()
			reply(func() { c.opened(opening, sent, o, timeout) })
		})
	}, func() {
		if c.opening == opening {
			c.leaderGuess = s.randomNodeID()
			s.schedule(100*time.Millisecond, evClientStart, uint64(c.id), 2, c.openSession)
		}
	})
}

func (c *client) opened(opening int, sent time.Duration, o node.Outcome, timeout time.Duration) {
	s := c.sim
	if c.opening != opening || c.op == nil {
		return
	}
	c.opening++
	if o.Err != nil {
		if o.Err.Code == metadatav1.ErrorCode_NOT_CONTROLLER && o.LeaderID != 0 {
			c.leaderGuess = o.LeaderID
		} else {
			c.leaderGuess = s.randomNodeID()
		}
		s.schedule(100*time.Millisecond, evClientStart, uint64(c.id), 2, c.openSession)
		return
	}
	c.session, c.sessionTimeout, c.seq, c.activeSince = uint64(o.Version), timeout, 0, sent
	c.sendInSession()
}

func (c *client) isRead() bool {
	k := c.op.input.Kind
	return k == linearizability.DescribeTopic || k == linearizability.DescribeBroker
}

func (c *client) send() {
	s := c.sim
	op := c.op
	op.attempt++
	attempt := op.attempt
	target := c.leaderGuess
	if c.isRead() && s.rng.Float64() < s.opts.FollowerReads {
		target = s.randomNodeID()
	}
	s.rpc(target, uint64(1000+c.id), func(n *node.Node, reply func(func())) {
		c.handle(n, op, func(out linearizability.Output, err *statemachine.Error, leader uint64) {
			reply(func() { c.answer(op, attempt, out, err, leader) })
		})
	}, func() {
		if c.op == op && op.attempt == attempt {
			if !c.isRead() {
				op.maybeApplied = true
			}
			c.leaderGuess = s.randomNodeID()
			c.retry(0)
		}
	})
}

// handle runs on the controller: the operation through the node's API.
func (c *client) handle(n *node.Node, op *clientOp, done func(linearizability.Output, *statemachine.Error, uint64)) {
	in := op.input
	write := func(o node.Outcome) { done(linearizability.Output{Code: o.Err.GetCode()}, o.Err, o.LeaderID) }
	switch in.Kind {
	case linearizability.CreateTopic:
		n.CreateTopic(&metadatav1.CreateTopicRequest{Name: in.Topic, Partitions: in.Count, ReplicationFactor: max(c.sim.opts.ReplicationFactor, 1), RequestId: op.requestID}, write)
	case linearizability.DeleteTopic:
		n.DeleteTopic(&metadatav1.DeleteTopicRequest{Name: in.Topic, RequestId: op.requestID}, write)
	case linearizability.CreatePartitions:
		n.CreatePartitions(&metadatav1.CreatePartitionsRequest{Topic: in.Topic, Count: in.Count, RequestId: op.requestID}, write)
	case linearizability.RegisterBroker:
		n.RegisterBroker(&metadatav1.RegisterBrokerRequest{Id: in.Broker, Host: fmt.Sprintf("client-broker-%d.sim", in.Broker),
			Port: 9092, IncarnationId: "client", RequestId: op.requestID}, write)
	case linearizability.UnregisterBroker:
		n.UnregisterBroker(&metadatav1.UnregisterBrokerRequest{Id: in.Broker, RequestId: op.requestID}, write)
	case linearizability.DescribeTopic, linearizability.DescribeBroker:
		leader := n.Leader()
		n.Read(func(sm *statemachine.StateMachine, err *statemachine.Error) {
			if err != nil {
				done(linearizability.Output{}, err, leader)
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
			done(out, nil, leader)
		})
	}
}

// answer handles a reply to one attempt of one operation; a late reply to
// an earlier operation or attempt is dropped.
func (c *client) answer(op *clientOp, attempt int, out linearizability.Output, err *statemachine.Error, leader uint64) {
	s := c.sim
	if c.op != op || op.attempt != attempt {
		return
	}
	if err != nil {
		switch err.Code {
		case metadatav1.ErrorCode_NOT_CONTROLLER:
			if leader != 0 {
				c.leaderGuess = leader
			} else {
				c.leaderGuess = s.randomNodeID()
			}
			c.retry(50 * time.Millisecond)
			return
		case metadatav1.ErrorCode_UNAVAILABLE:
			c.retry(200 * time.Millisecond)
			return
		case metadatav1.ErrorCode_UNKNOWN_OUTCOME:
			op.maybeApplied = true
			c.retry(100 * time.Millisecond)
			return
		case metadatav1.ErrorCode_SESSION_EXPIRED:
			c.session = 0
			if op.attempt == op.firstInSession && !op.maybeApplied {
				// No attempt of it was applied: send it in a new session.
				c.sendInSession()
				return
			}
			op.maybeApplied, op.expired = true, true
			c.finish(linearizability.Output{Unknown: true})
			return
		}
	}
	if !c.isRead() {
		// Answered from the log: the session was active since the call.
		c.activeSince = max(c.activeSince, op.call)
	}
	c.finish(out)
}

func (c *client) retry(after time.Duration) {
	s := c.sim
	op := c.op
	// A client gives up after clientAttemptsMax attempts, but not before
	// an election could have ended: quick refusals ("no leader known")
	// during one would otherwise use up every attempt in a second (seed
	// 1040 gave up while a leader removed after the heal handed over).
	if op.attempt >= clientAttemptsMax && s.now-op.call >= clientPatience {
		c.finish(linearizability.Output{Unknown: true})
		return
	}
	s.schedule(after, evClientStart, uint64(c.id), 1, func() {
		if c.op == op {
			c.send()
		}
	})
}

// finish records the operation and schedules the next one.
func (c *client) finish(out linearizability.Output) {
	s := c.sim
	op := c.op
	c.op = nil
	ret := int64(s.now)
	record := true
	if out.Unknown {
		ret = linearizability.PendingForever
		// A read that never answered, or a write no attempt of which can
		// have been applied, did nothing: it has no place in the history.
		record = !c.isReadKind(op.input.Kind) && op.maybeApplied
		shortSession := op.expired && c.sessionTimeout < sessionOutlivesFailover
		if s.healed && op.call > s.opts.HealAfter+5*time.Second && !shortSession {
			s.violate("client %d's %v %s started after the heal and never completed\n%s", c.id, op.input.Kind, op.input.Topic, s.describe())
		}
	}
	if !out.Unknown && !c.isReadKind(op.input.Kind) {
		s.golden.checkAnswer(s, op.requestID, out.Code)
	}
	if record {
		s.history = append(s.history, porcupine.Operation{
			ClientId: c.id, Input: op.input, Call: int64(op.call), Output: out, Return: ret,
		})
	}
	s.clientOpsDone++
	s.schedule(s.between(10*time.Millisecond, 300*time.Millisecond), evClientStart, uint64(c.id), 0, c.start)
}

func (c *client) isReadKind(k linearizability.Kind) bool {
	return k == linearizability.DescribeTopic || k == linearizability.DescribeBroker
}
