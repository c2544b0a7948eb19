package sim

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/dmq-project/metadata/client"
	metadatav1 "github.com/dmq-project/metadata/gen/dmq/metadata/v1"
	"github.com/dmq-project/metadata/node"
	"github.com/dmq-project/metadata/statemachine"
	"github.com/dmq-project/metadata/wire"
)

// caller makes the calls of one simulated client process (an operator's
// client, or a storage service's agent) with the production client's
// deciding logic: client.Retrier chooses each attempt's controller and the
// wait before it, and a write runs under one request id of a
// client.SessionPool session until client.JudgeWrite gives its verdict,
// exactly as client.Client does. Only the call itself is simulated: an
// attempt is a request to a node over the simulated network, answered or
// lost (then it times out as a Connect call's attempt does).
type caller struct {
	sim      *Sim
	from     uint64 // the caller's address on the simulated network
	clientID string
	leader   *client.LeaderGuess
	sessions client.SessionPool
}

// attemptReply is a controller's answer to one attempt: a value, or its
// refusal and the leader it names.
type attemptReply[T any] struct {
	value  T
	err    *statemachine.Error
	leader uint64
}

// callEnd is how a call ended: the value of its successful attempt, or the
// last attempt's failure; attempts counts the attempts; gaveUp says the
// deadline ended the retries.
type callEnd[T any] struct {
	value    T
	failure  *client.Failure
	attempts int
	gaveUp   bool
}

func endpointOf(id uint64) string { return "node-" + strconv.FormatUint(id, 10) }

func nodeOf(endpoint string) uint64 {
	id, err := strconv.ParseUint(strings.TrimPrefix(endpoint, "node-"), 10, 64)
	if err != nil {
		panic(fmt.Sprintf("sim: endpoint %q", endpoint))
	}
	return id
}

// endpoints are the controllers a caller knows: every member not retired,
// as an operator keeps the client's endpoint list up to date.
func (s *Sim) endpoints() []string {
	var out []string
	for _, n := range s.nodes {
		if !n.retired {
			out = append(out, endpointOf(n.id))
		}
	}
	return out
}

func newCaller(s *Sim, from uint64, clientID string) *caller {
	return &caller{sim: s, from: from, clientID: clientID, leader: client.NewLeaderGuess(endpointOf(uint64(1 + s.rng.IntN(s.opts.Nodes))))}
}

// call runs one logical call until an attempt succeeds, the retrier gives
// up, or deadline (a simulated time) passes, as client's call does. handle
// runs an attempt on the controller. first, if set, is where the first
// attempt goes instead of the believed leader.
//
// procedure names the call for the forwarding rule (wire.Forwards): a
// controller that refuses an attempt NOT_CONTROLLER passes it to the
// leader, as api.Forwarder does, unless it is a heartbeat; anyCall is any
// other.
func call[T any](c *caller, deadline time.Duration, first, procedure string,
	handle func(n *node.Node, reply func(attemptReply[T])), done func(callEnd[T])) {
	s := c.sim
	retrier := client.NewRetrier(s.endpoints(), c.leader, clientBackoffMin, clientBackoffMax)
	if first != "" {
		retrier.StartAt(first)
	}
	end := callEnd[T]{}
	var attempt func()
	failed := func(f client.Failure) {
		end.failure = &f
		// Told also when the deadline has passed: see client.Retrier.Next.
		again, wait := retrier.Next(f, func(n int64) int64 { return s.rng.Int64N(n + 1) })
		if !again {
			done(end) // a definite answer, even at the deadline
			return
		}
		if s.now >= deadline {
			end.gaveUp = true
			done(end)
			return
		}
		s.schedule(wait, evClientStart, c.from, 1, func() {
			if s.now >= deadline {
				end.gaveUp = true
				done(end)
				return
			}
			attempt()
		})
	}
	attempt = func() {
		end.attempts++
		var none T
		end.value = none
		endpoint := retrier.Endpoint()
		// An attempt is bounded by the attempt timeout and the deadline.
		timeout := min(clientTimeout, max(deadline-s.now, time.Millisecond))
		ends := s.now + timeout
		s.rpcWithin(timeout, nodeOf(endpoint), c.from, func(n *node.Node, reply func(func())) {
			answer := func(r attemptReply[T]) {
				reply(func() {
					if r.err != nil {
						// A refusal may carry a value too: the per-item
						// answers of an atomic batch.
						end.value = r.value
						leaderURL := ""
						if r.leader != 0 {
							leaderURL = endpointOf(r.leader)
						}
						failed(client.FailureOf(r.err.Code, leaderURL))
						return
					}
					retrier.Succeeded()
					end.value, end.failure = r.value, nil
					done(end)
				})
			}
			handle(n, func(r attemptReply[T]) {
				if r.err != nil && wire.Forwards(procedure, r.err.Code, n.ID(), r.leader, false) {
					forward(s, n.ID(), r.leader, ends-s.now, handle, answer, r)
					return
				}
				answer(r)
			})
		}, func() { failed(client.TimedOut()) })
	}
	attempt()
}

// anyCall is the procedure of a call that is not a broker's about itself:
// every such call is forwarded alike.
const anyCall = ""

// forwardConnectTimeout is how long a forward tries to reach a leader it
// has no way to (the production forwarder's connect timeout).
const forwardConnectTimeout = time.Second

// forward passes an attempt the controller from refused NOT_CONTROLLER
// to the leader it names, as api.Forwarder does: over the controllers'
// network (loss and partitions apply), the leader's answer relayed by
// from if the same process still runs there. A link cut as the forward
// starts is a leader that cannot be connected to: the refusal stands
// (wire.ForwardFailed(false)) after the connect timeout. Otherwise the
// call is on its way, and no answer within the client's time left (less
// wire.ForwardTimeout's margin) is an unknown outcome
// (wire.ForwardFailed(true)). Whichever answer the client got, a call
// answered "not sent" must never be taken by the leader.
func forward[T any](s *Sim, from, leader uint64, left time.Duration, handle func(n *node.Node, reply func(attemptReply[T])),
	answer func(attemptReply[T]), refusal attemptReply[T]) {
	timeout := wire.ForwardTimeout(left)
	forwarder := s.node(from)
	if timeout <= 0 || forwarder == nil {
		answer(refusal)
		return
	}
	s.forwards++
	incarnation := forwarder.incarnation
	relay := func(r attemptReply[T]) {
		if n := s.node(from); n != nil && n.incarnation == incarnation && n.pausedUntil <= s.now {
			answer(r)
		}
	}
	if s.cut[[2]uint64{from, leader}] {
		s.forwardsUnanswered++
		s.schedule(min(timeout, forwardConnectTimeout), evClientTimeout, from, leader, func() {
			r := refusal
			r.err = &statemachine.Error{Code: wire.ForwardFailed(false), Message: refusal.err.Message}
			relay(r)
		})
		return
	}
	reached, answeredUnsent := false, false
	s.peerRPC(timeout, leader, from, func(n *node.Node, reply func(func())) {
		reached = true
		if answeredUnsent {
			s.violate("controller %d answered NOT_CONTROLLER to a call it forwarded to controller %d, which took it", from, leader)
		}
		handle(n, func(r attemptReply[T]) { reply(func() { relay(r) }) })
	}, func() {
		s.forwardsUnanswered++
		code := wire.ForwardFailed(true)
		if code == metadatav1.ErrorCode_NOT_CONTROLLER {
			answeredUnsent = true
			if reached {
				s.violate("controller %d answered NOT_CONTROLLER to a call it forwarded to controller %d, which took it", from, leader)
			}
		}
		relay(attemptReply[T]{err: &statemachine.Error{Code: code,
			Message: fmt.Sprintf("forwarded to controller %d, which did not answer", leader)}})
	})
}

// writeEnd is how a write ended: its verdict, the answer, and the request
// id it ran under (nil if no session could be opened: nothing was sent).
type writeEnd struct {
	verdict   client.WriteVerdict
	outcome   node.Outcome
	failure   *client.Failure
	requestID *metadatav1.RequestId
	// sessionTimeout is the timeout of the session it ran in.
	sessionTimeout time.Duration
}

// write runs a write in a session, as client's write does: a free session
// or a new one, one request id through every attempt, retries until the
// deadline or the session's horizon, and client.JudgeWrite's verdict.
// handle runs an attempt on the controller under the request id.
func (c *caller) write(deadline time.Duration, handle func(n *node.Node, id *metadatav1.RequestId, reply func(attemptReply[node.Outcome])),
	done func(writeEnd)) {
	c.writeInSession(deadline, false, anyCall, handle, done)
}

// brokerWrite is write for a broker's call about itself (procedure), which
// controllers do not forward (wire.Forwards).
func (c *caller) brokerWrite(deadline time.Duration, procedure string,
	handle func(n *node.Node, id *metadatav1.RequestId, reply func(attemptReply[node.Outcome])), done func(writeEnd)) {
	c.writeInSession(deadline, false, procedure, handle, done)
}

func (c *caller) writeInSession(deadline time.Duration, reopened bool, procedure string,
	handle func(n *node.Node, id *metadatav1.RequestId, reply func(attemptReply[node.Outcome])), done func(writeEnd)) {
	s := c.sim
	c.session(deadline, func(session *client.Session) {
		if session == nil {
			done(writeEnd{})
			return
		}
		id := session.NextRequestID(c.clientID)
		horizon := session.Horizon().Sub(epoch)
		sent := s.now
		call(c, min(deadline, horizon), "", procedure, func(n *node.Node, reply func(attemptReply[node.Outcome])) {
			handle(n, id, reply)
		}, func(e callEnd[node.Outcome]) {
			judged := client.WriteEnd{Last: e.failure, Attempts: e.attempts, Reopened: reopened}
			if e.gaveUp {
				judged.CallerGaveUp = s.now >= deadline
				judged.HorizonPassed = !judged.CallerGaveUp
			}
			verdict, keep := client.JudgeWrite(judged)
			if keep {
				if e.failure == nil {
					session.ActiveSince = epoch.Add(sent)
				}
				c.sessions.Give(session)
			}
			if verdict == client.WriteResend {
				c.sessions.Drain()
				c.writeInSession(deadline, true, procedure, handle, done)
				return
			}
			done(writeEnd{verdict: verdict, outcome: e.value, failure: e.failure, requestID: id, sessionTimeout: session.Timeout})
		})
	})
}

// session hands a free session, or opens one through the log, to next;
// nil if none could be opened before the deadline.
func (c *caller) session(deadline time.Duration, next func(*client.Session)) {
	s := c.sim
	if session := c.sessions.Take(epoch.Add(s.now), clientTimeout); session != nil {
		next(session)
		return
	}
	sent := epoch.Add(s.now)
	call(c, deadline, "", anyCall, func(n *node.Node, reply func(attemptReply[*metadatav1.OpenSessionResponse])) {
		n.OpenSession(&metadatav1.OpenSessionRequest{ClientId: c.clientID}, func(o node.Outcome) {
			// As the RPC layer answers: the session id is the outcome's version.
			resp := &metadatav1.OpenSessionResponse{SessionId: uint64(o.Version), TimeoutMs: n.ClientSessionTimeout().Milliseconds()}
			reply(attemptReply[*metadatav1.OpenSessionResponse]{value: resp, err: o.Err, leader: o.LeaderID})
		})
	}, func(e callEnd[*metadatav1.OpenSessionResponse]) {
		if e.failure != nil {
			next(nil)
			return
		}
		session, err := client.SessionOpened(e.value, sent)
		if err != nil {
			s.violate("client %s: %v", c.clientID, err)
			next(nil)
			return
		}
		next(session)
	})
}
