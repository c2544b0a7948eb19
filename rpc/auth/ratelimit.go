package auth

import (
	"container/list"
	"context"
	"errors"
	"fmt"
	"math"
	"net"
	"sync"
	"time"

	"connectrpc.com/connect"
	"golang.org/x/time/rate"
)

// RateLimit bounds each client's requests with a token bucket: PerSecond
// sustained, Burst at once. Clients are told apart by who they are when
// authentication is on (the principal, wherever it connects from), else by
// their IP address. Zero PerSecond disables it.
type RateLimit struct {
	PerSecond float64
	Burst     int
}

// ErrRateLimited refuses a call beyond its client's rate limit.
var ErrRateLimited = errors.New("rate limit")

// rateLimitClientsMax bounds the table of buckets; the least recently used
// client's bucket goes first (it refills to full anyway).
const rateLimitClientsMax = 100_000

// limiter holds one token bucket per client in a table bounded by
// clientsMax. Recency is kept in a list so that admitting a new client when
// the table is full costs O(1): a scan of the table under the lock would let
// callers from many addresses (an IPv6 block) stall every call.
type limiter struct {
	cfg        RateLimit
	clientsMax int
	mu         sync.Mutex
	buckets    map[string]*list.Element // of *bucket
	recency    list.List                // front: most recently used
}

type bucket struct {
	client  string
	limiter *rate.Limiter
}

func newLimiter(cfg RateLimit) *limiter {
	return newLimiterOfSize(cfg, rateLimitClientsMax)
}

func newLimiterOfSize(cfg RateLimit, clientsMax int) *limiter {
	if clientsMax < 1 {
		panic(fmt.Sprintf("rate limiter table of %d clients", clientsMax))
	}
	return &limiter{cfg: cfg, clientsMax: clientsMax, buckets: map[string]*list.Element{}}
}

// allow takes a token for client, or says how long until one is there.
func (l *limiter) allow(client string, now time.Time) (bool, time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	e, ok := l.buckets[client]
	if ok {
		l.recency.MoveToFront(e)
	} else {
		if len(l.buckets) >= l.clientsMax {
			oldest := l.recency.Back()
			delete(l.buckets, oldest.Value.(*bucket).client)
			l.recency.Remove(oldest)
		}
		e = l.recency.PushFront(&bucket{client: client, limiter: rate.NewLimiter(rate.Limit(l.cfg.PerSecond), l.cfg.Burst)})
		l.buckets[client] = e
	}
	if len(l.buckets) != l.recency.Len() || len(l.buckets) > l.clientsMax {
		panic(fmt.Sprintf("rate limiter table holds %d clients, recency list %d, bound %d",
			len(l.buckets), l.recency.Len(), l.clientsMax))
	}
	r := e.Value.(*bucket).limiter.ReserveN(now, 1)
	if !r.OK() {
		return false, time.Second
	}
	if delay := r.DelayFrom(now); delay > 0 {
		r.CancelAt(now)
		return false, delay
	}
	return true, 0
}

// rateLimitInterceptor answers ResourceExhausted, with a Retry-After hint in
// seconds, to a client past its budget: a unary call is not processed, and
// a stream ends at the message past the budget (each message received on a
// stream costs a token, as a call does).
type rateLimitInterceptor struct {
	cfg     RateLimit
	limiter *limiter
}

// NewRateLimitInterceptor bounds each client's calls and stream messages
// by cfg (see rateLimitInterceptor).
func NewRateLimitInterceptor(cfg RateLimit) connect.Interceptor {
	return rateLimitInterceptor{cfg: cfg, limiter: newLimiter(cfg)}
}

// check takes a token for the caller: the principal when authentication is
// on, else the peer's IP address.
func (i rateLimitInterceptor) check(ctx context.Context, peerAddr string) error {
	client := "address " + peerAddr
	if host, _, err := net.SplitHostPort(peerAddr); err == nil {
		client = "address " + host
	}
	if p, ok := PrincipalOf(ctx); ok {
		client = "principal " + string(p.Role) + " " + p.Name
	}
	ok, wait := i.limiter.allow(client, time.Now())
	if ok {
		return nil
	}
	seconds := int(math.Ceil(wait.Seconds()))
	err := connect.NewError(connect.CodeResourceExhausted,
		fmt.Errorf("%w: %.0f requests/s (burst %d) exceeded: retry in %d s", ErrRateLimited, i.cfg.PerSecond, i.cfg.Burst, seconds))
	err.Meta().Set("Retry-After", fmt.Sprint(seconds))
	return err
}

func (i rateLimitInterceptor) WrapUnary(next connect.UnaryFunc) connect.UnaryFunc {
	return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
		if err := i.check(ctx, req.Peer().Addr); err != nil {
			return nil, err
		}
		return next(ctx, req)
	}
}

func (i rateLimitInterceptor) WrapStreamingClient(next connect.StreamingClientFunc) connect.StreamingClientFunc {
	return next
}

func (i rateLimitInterceptor) WrapStreamingHandler(next connect.StreamingHandlerFunc) connect.StreamingHandlerFunc {
	return func(ctx context.Context, conn connect.StreamingHandlerConn) error {
		return next(ctx, &limitedConn{StreamingHandlerConn: conn, ctx: ctx, interceptor: i})
	}
}

// limitedConn takes a token for every message received.
type limitedConn struct {
	connect.StreamingHandlerConn
	ctx         context.Context
	interceptor rateLimitInterceptor
}

func (c *limitedConn) Receive(msg any) error {
	if err := c.StreamingHandlerConn.Receive(msg); err != nil {
		return err
	}
	return c.interceptor.check(c.ctx, c.Peer().Addr)
}
