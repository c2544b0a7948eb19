package client

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"connectrpc.com/connect"
	metadatav1 "github.com/dmq-project/metadata/gen/dmq/metadata/v1"
	"github.com/dmq-project/metadata/gen/dmq/metadata/v1/metadatav1connect"
	"github.com/dmq-project/metadata/wire"
)

// ErrUnknownOutcome says a write may or may not have been applied: its
// session's retry horizon passed, or the controllers refused a retry
// because the session had expired. Read the state to learn what happened.
var ErrUnknownOutcome = errors.New("the write may or may not have been applied")

// Session is a client session of the controllers: one write at a time,
// its requests numbered 1, 2, 3, ...
type Session struct {
	ID      uint64
	Timeout time.Duration
	// Sequence is the last sequence number used.
	Sequence uint64
	// ActiveSince is a time at or before the session's last activity on
	// the controllers: the first send of the last write they answered.
	ActiveSince time.Time
}

// Horizon is when a retry stops being worth sending: half the timeout past
// the last activity the client knows of. The other half absorbs a leader
// whose clock runs ahead of this client's, which expires sessions early.
func (s *Session) Horizon() time.Time { return s.ActiveSince.Add(s.Timeout / 2) }

// NextRequestID numbers the session's next write.
func (s *Session) NextRequestID(clientID string) *metadatav1.RequestId {
	s.Sequence++
	return &metadatav1.RequestId{ClientId: clientID, SessionId: s.ID, Sequence: s.Sequence}
}

// SessionPool holds the sessions not in use. A write takes one (or opens
// one) and gives it back, so there are as many sessions as concurrent
// writes. It is safe for concurrent use.
type SessionPool struct {
	mu   sync.Mutex
	free []*Session
}

// Take returns a free session whose horizon is far enough away to carry a
// write through a failover, or nil: then open one. Far enough is attempt
// (one attempt's timeout) and a quarter of the session's timeout, whichever
// is longer: a session whose horizon came during the retries would end a
// write that nothing proposed in an unknown outcome.
func (p *SessionPool) Take(now time.Time, attempt time.Duration) *Session {
	p.mu.Lock()
	defer p.mu.Unlock()
	for len(p.free) > 0 {
		s := p.free[len(p.free)-1]
		p.free = p.free[:len(p.free)-1]
		if now.Add(max(attempt, s.Timeout/4)).Before(s.Horizon()) {
			return s
		}
		// Too close to expiry to carry a write through its retries.
	}
	return nil
}

// Drain drops every free session: they are likely as stale as one just
// found expired (a leader's clock ran ahead, or the table was flooded).
func (p *SessionPool) Drain() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.free = nil
}

// Give returns a session to the pool.
func (p *SessionPool) Give(s *Session) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.free = append(p.free, s)
}

// SessionOpened makes a Session of a controller's answer to OpenSession
// sent at sent.
func SessionOpened(resp *metadatav1.OpenSessionResponse, sent time.Time) (*Session, error) {
	if resp.GetSessionId() == 0 || resp.GetTimeoutMs() <= 0 {
		return nil, fmt.Errorf("opening a client session: the controller answered session %d with timeout %d ms",
			resp.GetSessionId(), resp.GetTimeoutMs())
	}
	return &Session{ID: resp.GetSessionId(), Timeout: time.Duration(resp.GetTimeoutMs()) * time.Millisecond, ActiveSince: sent}, nil
}

// OpenSession opens a client session. Writes open and reuse sessions on
// their own; this is for callers that number their own request ids.
func (c *Client) OpenSession(ctx context.Context) (*metadatav1.OpenSessionResponse, error) {
	return meta(ctx, c, &metadatav1.OpenSessionRequest{ClientId: c.cfg.ClientID}, metadatav1connect.MetadataServiceClient.OpenSession)
}

func (c *Client) session(ctx context.Context) (*Session, error) {
	if s := c.sessions.Take(time.Now(), c.cfg.AttemptTimeout); s != nil {
		return s, nil
	}
	sent := time.Now()
	resp, err := c.OpenSession(ctx)
	if err != nil {
		return nil, fmt.Errorf("opening a client session: %w", err)
	}
	return SessionOpened(resp, sent)
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
// JudgeWrite decides which.
func write[Req, Resp any](ctx context.Context, c *Client, id **metadatav1.RequestId, req *Req,
	method func(metadatav1connect.MetadataServiceClient, context.Context, *connect.Request[Req]) (*connect.Response[Resp], error)) (*Resp, error) {
	if *id != nil {
		resp, err := meta(ctx, c, req, method)
		if wire.ErrorCodeOf(err) == metadatav1.ErrorCode_SESSION_EXPIRED {
			// The session is gone: an earlier send of this request may
			// have been applied before, or not.
			return nil, fmt.Errorf("%w: %w", ErrUnknownOutcome, err)
		}
		return resp, err
	}
	for reopened := false; ; reopened = true {
		s, err := c.session(ctx)
		if err != nil {
			return nil, err
		}
		*id = s.NextRequestID(c.cfg.ClientID)
		horizonCtx, cancel := context.WithDeadline(ctx, s.Horizon())
		sent := time.Now()
		end := WriteEnd{Reopened: reopened}
		var last error
		resp, err := call(horizonCtx, c, &end.Attempts, func(ctx context.Context, endpoint string) (*Resp, error) {
			r, err := method(c.metadataClient(endpoint), ctx, connect.NewRequest(req))
			if err != nil {
				last = err
				return nil, err
			}
			return r.Msg, nil
		})
		if errors.Is(err, ErrNoLeader) {
			// The deadline, the caller's or the horizon, ended the retries.
			end.CallerGaveUp = ctx.Err() != nil
			end.HorizonPassed = !end.CallerGaveUp
		}
		cancel()
		if err != nil {
			f := c.failureOf(last)
			end.Last = &f
		}
		verdict, keep := JudgeWrite(end)
		if keep {
			if err == nil {
				s.ActiveSince = sent
			}
			c.sessions.Give(s)
		}
		switch verdict {
		case WriteAnswered:
			return resp, err
		case WriteResend:
			c.sessions.Drain()
			continue
		case WriteUnknown:
			if end.HorizonPassed {
				return nil, fmt.Errorf("%w: no answer before the retry horizon of session %d (%v after its last known activity); last error: %v",
					ErrUnknownOutcome, s.ID, s.Timeout/2, err)
			}
			return nil, fmt.Errorf("%w: %w", ErrUnknownOutcome, err)
		}
		panic(fmt.Sprintf("client: write verdict %d", verdict))
	}
}
