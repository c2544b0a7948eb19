package client

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"connectrpc.com/connect"
	"github.com/dmq-project/metadata/rpc"
	metadatav1 "github.com/dmq-project/metadata/rpc/gen/dmq/metadata/v1"
	"github.com/dmq-project/metadata/rpc/gen/dmq/metadata/v1/metadatav1connect"
	"github.com/dmq-project/metadata/statemachine"
)

// ErrUnknownOutcome says a write may or may not have been applied: its
// session's retry horizon passed, or the controllers refused a retry
// because the session had expired. Read the state to learn what happened.
var ErrUnknownOutcome = errors.New("the write may or may not have been applied")

// session is a client session of the controllers: one write at a time, its
// requests numbered 1, 2, 3, ...
type session struct {
	id      uint64
	timeout time.Duration
	// sequence is the last sequence number used.
	sequence uint64
	// activeSince is a time at or before the session's last activity on
	// the controllers: the first send of the last write they answered.
	activeSince time.Time
}

// horizon is when a retry stops being worth sending: half the timeout past
// the last activity the client knows of. The other half absorbs a leader
// whose clock runs ahead of this client's, which expires sessions early.
func (s *session) horizon() time.Time { return s.activeSince.Add(s.timeout / 2) }

// sessionPool holds the sessions not in use. A write takes one (or opens
// one) and gives it back, so there are as many sessions as concurrent
// writes.
type sessionPool struct {
	mu   sync.Mutex
	free []*session
}

// take returns a free session whose horizon is at least budget away.
func (p *sessionPool) take(now time.Time, budget time.Duration) *session {
	p.mu.Lock()
	defer p.mu.Unlock()
	for len(p.free) > 0 {
		s := p.free[len(p.free)-1]
		p.free = p.free[:len(p.free)-1]
		if now.Add(budget).Before(s.horizon()) {
			return s
		}
		// Too close to expiry to carry a write through its retries.
	}
	return nil
}

// drain drops every free session: they are likely as stale as one just
// found expired (a leader's clock ran ahead, or the table was flooded).
func (p *sessionPool) drain() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.free = nil
}

func (p *sessionPool) give(s *session) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.free = append(p.free, s)
}

// OpenSession opens a client session. Writes open and reuse sessions on
// their own; this is for callers that number their own request ids.
func (c *Client) OpenSession(ctx context.Context) (*metadatav1.OpenSessionResponse, error) {
	return meta(ctx, c, &metadatav1.OpenSessionRequest{ClientId: c.cfg.ClientID}, metadatav1connect.MetadataServiceClient.OpenSession)
}

func (c *Client) session(ctx context.Context) (*session, error) {
	if s := c.sessions.take(time.Now(), c.cfg.AttemptTimeout); s != nil {
		return s, nil
	}
	sent := time.Now()
	resp, err := c.OpenSession(ctx)
	if err != nil {
		return nil, fmt.Errorf("opening a client session: %w", err)
	}
	if resp.GetSessionId() == 0 || resp.GetTimeoutMs() <= 0 {
		return nil, fmt.Errorf("opening a client session: the controller answered session %d with timeout %d ms",
			resp.GetSessionId(), resp.GetTimeoutMs())
	}
	return &session{id: resp.GetSessionId(), timeout: time.Duration(resp.GetTimeoutMs()) * time.Millisecond, activeSince: sent}, nil
}

// refusedBeforeProposal says whether a single attempt's error proves that
// the write was not proposed: refused by authentication, by the request
// checks, or by a controller that is not the leader.
func refusedBeforeProposal(err error) bool {
	if rpc.ErrorCodeOf(err) == metadatav1.ErrorCode_NOT_CONTROLLER {
		return true
	}
	switch connect.CodeOf(err) {
	case connect.CodeUnauthenticated, connect.CodePermissionDenied, connect.CodeInvalidArgument,
		connect.CodeResourceExhausted, connect.CodeUnimplemented:
		return true
	}
	return false
}

// write runs a mutating call under a request id of a client session, so
// that its retries apply it at most once. A caller that set its own request
// id gets plain retries under that id. The write stops retrying at its
// session's horizon and reports ErrUnknownOutcome, as it does when the
// controllers refuse a retry with SESSION_EXPIRED; a first attempt refused
// that way was applied by no attempt, and is sent again in a new session.
// Any other failure after an attempt that may have been proposed is an
// unknown outcome too (wrapping the last error); the request keeps its id,
// so that the caller's resend of it is a retry, applied at most once.
func write[Req, Resp any](ctx context.Context, c *Client, id **metadatav1.RequestId, req *Req,
	method func(metadatav1connect.MetadataServiceClient, context.Context, *connect.Request[Req]) (*connect.Response[Resp], error)) (*Resp, error) {
	if *id != nil {
		return meta(ctx, c, req, method)
	}
	for reopened := false; ; reopened = true {
		s, err := c.session(ctx)
		if err != nil {
			return nil, err
		}
		s.sequence++
		*id = &metadatav1.RequestId{ClientId: c.cfg.ClientID, SessionId: s.id, Sequence: s.sequence}
		horizonCtx, cancel := context.WithDeadline(ctx, s.horizon())
		sent := time.Now()
		attempts := 0
		resp, err := call(horizonCtx, c, func(ctx context.Context, endpoint string) (*Resp, error) {
			attempts++
			r, err := method(c.metadataClient(endpoint), ctx, connect.NewRequest(req))
			if err != nil {
				return nil, err
			}
			return r.Msg, nil
		})
		horizonPassed := ctx.Err() == nil && errors.Is(horizonCtx.Err(), context.DeadlineExceeded)
		cancel()
		code := rpc.ErrorCodeOf(err)
		switch {
		case err == nil:
			s.activeSince = sent
			c.sessions.give(s)
			return resp, nil
		case code == metadatav1.ErrorCode_SESSION_EXPIRED:
			// The session is gone; it is not given back.
			if attempts == 1 && !reopened {
				c.sessions.drain()
				continue
			}
			return nil, fmt.Errorf("%w: %v", ErrUnknownOutcome, err)
		case code != metadatav1.ErrorCode_NONE && statemachine.ClassOf(code) != statemachine.ClassUnavailable:
			// A definite answer. It refreshes the session only if it came
			// from the log, which the client cannot tell from a check made
			// before proposing: the horizon stays where it was.
		case horizonPassed:
			return nil, fmt.Errorf("%w: no answer before the retry horizon of session %d (%v after its last known activity); last error: %v",
				ErrUnknownOutcome, s.id, s.timeout/2, err)
		}
		// Any later request of the session makes this one's retries stale,
		// so the session can carry the next write whatever happened.
		c.sessions.give(s)
		if code == metadatav1.ErrorCode_NONE || statemachine.ClassOf(code) == statemachine.ClassUnavailable {
			if attempts > 1 || !refusedBeforeProposal(err) {
				// An attempt may have been proposed and may yet commit:
				// the caller must not take this for "not applied". The
				// request keeps its id, so sending it again is a retry.
				return nil, fmt.Errorf("%w: %w", ErrUnknownOutcome, err)
			}
		}
		return nil, err
	}
}
