package statemachine

import metadatav1 "github.com/dmq-project/metadata/gen/dmq/metadata/v1"

// Client sessions (Raft thesis §6.3) make writes exactly-once without a
// window: a session remembers the result of its highest sequence number, so
// a retry returns that result however many other writes were applied
// meanwhile, and a request older than that is refused instead of applied.
// The bounds below are replicated behaviour, hence constants.
const (
	// SessionsMax bounds the table. Opening a session beyond it evicts the
	// least recently active one: its client's next request is refused with
	// SESSION_EXPIRED, never applied twice.
	SessionsMax = 50_000
	// SessionTimeoutMin and SessionTimeoutMax bound the timeout an
	// OpenSession record may carry.
	SessionTimeoutMin = 1_000
	SessionTimeoutMax = 3_600_000
	// SessionItemsMax bounds the batch items the table's results hold in
	// all (each a code and a topic id; their messages are not kept).
	// Storing a result beyond it evicts the least recently active sessions.
	SessionItemsMax = 500_000
)

// session is one client session. Sessions form a list from the least to the
// most recently active; lastActiveMs only grows and is set from the state
// machine's clock, which never goes back, so the list is also ordered by
// lastActiveMs.
type session struct {
	id           uint64
	clientID     string
	timeoutMs    int64
	lastActiveMs int64
	// lastSequence is the highest sequence applied (0 before the first);
	// result is what it answered.
	lastSequence uint64
	result       Result
	older, newer *session
}

func (e *session) expired(nowMs int64) bool { return nowMs-e.lastActiveMs > e.timeoutMs }

// sessionTable holds the live sessions. It is part of the snapshot and of
// the hash: two controllers must agree on what a retry returns.
type sessionTable struct {
	byID map[uint64]*session
	// oldest and newest are the ends of the activity list.
	oldest, newest *session
	// items counts the batch items of the results held.
	items int
}

func newSessionTable() sessionTable {
	return sessionTable{byID: make(map[uint64]*session)}
}

func (t *sessionTable) len() int { return len(t.byID) }

// add appends a session as the most recently active.
func (t *sessionTable) add(e *session) {
	if _, dup := t.byID[e.id]; dup {
		panic("statemachine: session opened twice under one id")
	}
	if t.newest != nil && t.newest.lastActiveMs > e.lastActiveMs {
		panic("statemachine: session activity list out of order")
	}
	t.byID[e.id] = e
	t.items += len(e.result.Items)
	e.older, e.newer = t.newest, nil
	if t.newest != nil {
		t.newest.newer = e
	} else {
		t.oldest = e
	}
	t.newest = e
}

func (t *sessionTable) remove(e *session) {
	if e.older != nil {
		e.older.newer = e.newer
	} else {
		t.oldest = e.newer
	}
	if e.newer != nil {
		e.newer.older = e.older
	} else {
		t.newest = e.older
	}
	e.older, e.newer = nil, nil
	delete(t.byID, e.id)
	t.items -= len(e.result.Items)
}

// remember records r as the answer of e's last request, without the
// messages of its items (a retry gets their codes and topic ids), and
// evicts the least recently active other sessions while the table holds
// more than SessionItemsMax items.
func (t *sessionTable) remember(e *session, r Result) {
	if r.Items != nil {
		items := make([]ItemResult, len(r.Items))
		for i, item := range r.Items {
			items[i] = ItemResult{Err: codeOnly(item.Err), TopicID: item.TopicID}
		}
		r.Items = items
	}
	t.items += len(r.Items) - len(e.result.Items)
	e.result = r
	for t.items > SessionItemsMax && t.oldest != nil && t.oldest != e {
		t.remove(t.oldest)
	}
}

// codeOnly is err without its message.
func codeOnly(err *Error) *Error {
	if err == nil {
		return nil
	}
	return &Error{Code: err.Code}
}

// touch marks a session active at nowMs.
func (t *sessionTable) touch(e *session, nowMs int64) {
	t.remove(e)
	e.lastActiveMs = nowMs
	t.add(e)
}

// live returns the session id unless it is unknown or expired at nowMs.
func (t *sessionTable) live(id uint64, nowMs int64) (*session, bool) {
	e, ok := t.byID[id]
	if !ok || e.expired(nowMs) {
		return nil, false
	}
	return e, true
}

// expire drops expired sessions from the least recently active end. A
// session with a long timeout at that end holds back the ones behind it;
// they are refused all the same (live checks expiry) and SessionsMax bounds
// what they hold.
func (t *sessionTable) expire(nowMs int64) {
	for t.oldest != nil && t.oldest.expired(nowMs) {
		t.remove(t.oldest)
	}
}

// evictionScan bounds how many of the least recently active sessions a
// full table looks through for an expired one before it evicts a live one.
const evictionScan = 64

// victim picks the session a full table gives up for a new one: an
// expired one among the least recently active (a long timeout at the head
// can hold expired sessions behind it), else the least recently active.
func (t *sessionTable) victim(nowMs int64) *session {
	e := t.oldest
	for i := 0; e != nil && i < evictionScan; i, e = i+1, e.newer {
		if e.expired(nowMs) {
			return e
		}
	}
	return t.oldest
}

// inOrder returns the sessions from the least to the most recently active.
func (t *sessionTable) inOrder() []*session {
	out := make([]*session, 0, len(t.byID))
	for e := t.oldest; e != nil; e = e.newer {
		out = append(out, e)
	}
	if len(out) != len(t.byID) {
		panic("statemachine: session list and index disagree")
	}
	return out
}

// sessionOf returns the session part of a request id: ok is false for a
// request without an id, which is applied as it comes, without
// deduplication. A request id without a session is refused by the node
// before it is proposed (ValidateRequestID); Apply treats one found in the
// log as no id, as a log written before sessions existed holds them.
func sessionOf(id *metadatav1.RequestId) (sessionID, sequence uint64, ok bool) {
	if id == nil || id.SessionId == 0 {
		return 0, 0, false
	}
	return id.SessionId, id.Sequence, true
}

// ClockMs is the state machine's clock: the largest record stamp applied.
func (s *StateMachine) ClockMs() int64 { return s.nowMs }
