package client

import (
	"github.com/dmq-project/metadata/internal/planted"
	"slices"
	"sync"
	"time"

	"connectrpc.com/connect"
	metadatav1 "github.com/dmq-project/metadata/gen/dmq/metadata/v1"
	"github.com/dmq-project/metadata/wire"
)

// The deciding logic of a call, without I/O, clocks or randomness of its
// own: Client drives it with Connect calls and the wall clock, and the
// simulator drives the very same code with simulated calls and time.

// Failure is what the retry logic knows of a failed attempt: its Connect
// code, the service's error code (NONE when the answer carried none, as
// for a timeout) and the leader's URL when the answer named one.
type Failure struct {
	Code      connect.Code
	ErrorCode metadatav1.ErrorCode
	LeaderURL string
	// FromServer says the error came from a controller's answer, not from
	// the client's side of the call (a timeout, a connection lost, an
	// answer too large or undecodable).
	FromServer bool
}

// failureOf reads a Failure from the error of a Connect call.
func (c *Client) failureOf(err error) Failure {
	f := Failure{Code: connect.CodeOf(err), ErrorCode: wire.ErrorCodeOf(err)}
	f.FromServer = connect.IsWireError(err)
	if _, url, ok := wire.LeaderOf(err); ok && url != "" {
		if c.cfg.TLS != nil {
			url = wire.HTTPSURL(url)
		}
		f.LeaderURL = url
	}
	return f
}

// retryable says whether an attempt that failed so is worth another.
func (f Failure) retryable() bool {
	if f.ErrorCode != metadatav1.ErrorCode_NONE {
		return wire.CodeOf(f.ErrorCode) == connect.CodeUnavailable
	}
	switch f.Code {
	case connect.CodeUnavailable, connect.CodeDeadlineExceeded, connect.CodeUnknown, connect.CodeAborted, connect.CodeCanceled:
		return true
	}
	return false
}

// refusedBeforeProposal says whether a single attempt's failure proves that
// the write was not proposed: refused, in a controller's own answer, by
// authentication, by the request checks, or for not being the leader. The
// same codes raised on the client's side (an answer too large to read, say)
// prove nothing: the write may have been applied.
func (f Failure) refusedBeforeProposal() bool {
	if !f.FromServer {
		return false
	}
	if f.ErrorCode == metadatav1.ErrorCode_NOT_CONTROLLER {
		return true
	}
	switch f.Code {
	case connect.CodeUnauthenticated, connect.CodePermissionDenied, connect.CodeInvalidArgument,
		connect.CodeResourceExhausted, connect.CodeUnimplemented:
		return true
	}
	return false
}

// LeaderGuess is where a client's calls start: the endpoint that last
// answered, or, after an attempt that failed, the one its Retrier would try
// next. It is safe for concurrent use.
type LeaderGuess struct {
	mu       sync.Mutex
	endpoint string
}

// NewLeaderGuess starts at endpoint.
func NewLeaderGuess(endpoint string) *LeaderGuess { return &LeaderGuess{endpoint: endpoint} }

// Endpoint is the guess.
func (g *LeaderGuess) Endpoint() string {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.endpoint
}

func (g *LeaderGuess) set(endpoint string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.endpoint = endpoint
}

// Retrier decides, for one call, where each attempt goes and how long to
// wait before it: the guessed leader first, a leader hint at once (but not
// twice in a row, so that two controllers naming each other cannot make a
// busy loop), else the next endpoint after a backoff with jitter. It moves
// the client's LeaderGuess as it learns.
type Retrier struct {
	endpoints []string
	guess     *LeaderGuess
	endpoint  string
	// rotation is the index of the last configured endpoint tried (-1
	// before any): after a hint outside the list (a leader's peer URL the
	// client may not reach) the rotation goes on from there.
	rotation               int
	backoff, min, max      time.Duration
	followedHint, finished bool
}

// NewRetrier starts a call at the guessed leader, one of endpoints.
func NewRetrier(endpoints []string, guess *LeaderGuess, backoffMin, backoffMax time.Duration) *Retrier {
	if len(endpoints) == 0 || backoffMin <= 0 || backoffMax < backoffMin {
		panic("client: a retrier needs endpoints and 0 < backoffMin <= backoffMax")
	}
	r := &Retrier{endpoints: endpoints, guess: guess, rotation: -1, backoff: backoffMin, min: backoffMin, max: backoffMax}
	r.moveTo(guess.Endpoint())
	return r
}

// StartAt sends the first attempt to endpoint instead of the guessed
// leader (a read meant for a follower, say).
func (r *Retrier) StartAt(endpoint string) { r.moveTo(endpoint) }

// moveTo makes endpoint the next attempt's target, and the rotation's
// place if it is a configured one.
func (r *Retrier) moveTo(endpoint string) {
	r.endpoint = endpoint
	if i := slices.Index(r.endpoints, endpoint); i >= 0 {
		r.rotation = i
	}
}

// following is the next configured endpoint in the rotation.
func (r *Retrier) following() string {
	return r.endpoints[(r.rotation+1)%len(r.endpoints)]
}

// Endpoint is where the next attempt goes.
func (r *Retrier) Endpoint() string { return r.endpoint }

// Next is told how the attempt at Endpoint failed, also when the caller
// stops anyway: the client's next call then starts where this one would
// have gone next, not at a controller that just failed to answer (a paused
// or cut-off one could take every call's whole deadline). It says whether
// to try again and after what wait; Endpoint is then the next attempt's
// target. jitter returns a number in [0, n] (the driver's randomness).
func (r *Retrier) Next(f Failure, jitter func(n int64) int64) (again bool, wait time.Duration) {
	if r.finished {
		panic("client: Retrier.Next after it said to stop")
	}
	if !f.retryable() {
		// A definite answer: it came from a controller that leads, or
		// that checked the request as well as the leader would.
		r.finished = true
		return false, 0
	}
	next := r.following()
	if f.ErrorCode != metadatav1.ErrorCode_NONE && f.LeaderURL != "" && f.LeaderURL != r.endpoint {
		next = f.LeaderURL
	}
	hinted := next != r.following()
	r.moveTo(next)
	r.guess.set(next)
	if hinted && !r.followedHint {
		r.followedHint = true
		return true, 0
	}
	r.followedHint = false
	wait = r.backoff + time.Duration(jitter(int64(r.backoff/2)))
	r.backoff = min(2*r.backoff, r.max)
	return true, wait
}

// Succeeded is told that the attempt at Endpoint succeeded: it leads.
func (r *Retrier) Succeeded() {
	r.finished = true
	r.guess.set(r.endpoint)
}

// nextEndpoint is the endpoint after e in endpoints, cyclically (the first
// when e is not among them).
func nextEndpoint(endpoints []string, e string) string {
	for i, x := range endpoints {
		if x == e {
			return endpoints[(i+1)%len(endpoints)]
		}
	}
	return endpoints[0]
}

// WriteVerdict is what becomes of a write once its attempts under one
// request id have ended.
type WriteVerdict int

const (
	// WriteAnswered: an answer, a success or a definite error.
	WriteAnswered WriteVerdict = iota + 1
	// WriteResend: the first attempt found the session expired, so no
	// attempt was applied: send it again in a new session.
	WriteResend
	// WriteUnknown: it may or may not have been applied.
	WriteUnknown
)

// WriteEnd describes how the attempts of a write under one request id ended.
type WriteEnd struct {
	// Last is the last attempt's failure; nil if it succeeded.
	Last *Failure
	// Attempts counts the attempts sent under the request id.
	Attempts int
	// Reopened: the write was already sent again in a new session.
	Reopened bool
	// HorizonPassed: the retries stopped at the session's horizon;
	// CallerGaveUp: they stopped because the caller's deadline came.
	HorizonPassed, CallerGaveUp bool
}

// JudgeWrite decides what a write's attempts amount to, and whether its
// session can carry the next write: after an answer it can (a later
// request of the session makes this one's retries stale); after an
// unknown outcome it cannot, so that the caller may resend the request to
// learn what became of it.
func JudgeWrite(e WriteEnd) (verdict WriteVerdict, keepSession bool) {
	if e.Attempts < 1 {
		panic("client: a write judged before any attempt")
	}
	switch {
	case e.Last == nil:
		return WriteAnswered, true
	case e.Last.ErrorCode == metadatav1.ErrorCode_SESSION_EXPIRED:
		// The session is gone. A first attempt refused so was applied by
		// no attempt; a retry refused so may follow an applied one.
		if e.Attempts == 1 && !e.Reopened && !e.HorizonPassed && !e.CallerGaveUp {
			return WriteResend, false
		}
		return WriteUnknown, false
	case e.HorizonPassed:
		return WriteUnknown, false
	case e.CallerGaveUp && planted.On(planted.GivingUpIsDefinite):
		return WriteAnswered, true
	case e.CallerGaveUp:
		return WriteUnknown, false
	case wire.Definite(e.Last.ErrorCode):
		// A definite answer. It refreshes the session only if it came
		// from the log, which the client cannot tell from a check made
		// before proposing: the session's horizon stays where it was.
		return WriteAnswered, true
	case e.Attempts == 1 && e.Last.refusedBeforeProposal():
		return WriteAnswered, true
	}
	// An attempt may have been proposed and may yet commit: the caller
	// must not take this for "not applied". Nor may the session carry
	// other writes: they would make the caller's resend of this request,
	// which is how it learns the outcome, stale.
	return WriteUnknown, false
}

// FailureOf is the Failure a caller sees for a controller's refusal with
// code (leaderURL is the leader the refusal names, if any): what a Connect
// call answered so would yield.
func FailureOf(code metadatav1.ErrorCode, leaderURL string) Failure {
	f := Failure{Code: wire.CodeOf(code), ErrorCode: code, FromServer: true}
	if code == metadatav1.ErrorCode_NOT_CONTROLLER {
		f.LeaderURL = leaderURL
	}
	return f
}

// TimedOut is the Failure of an attempt that got no answer in time.
func TimedOut() Failure { return Failure{Code: connect.CodeDeadlineExceeded} }
