// Package runner is the production wrapper around the deterministic core:
// one goroutine owns a node.Node and feeds it ticks from a real ticker,
// messages from peers and requests from the RPC handlers. It is outside the
// core by design; nothing in node depends on it.
package runner

import (
	"context"
	cryptorand "crypto/rand"
	"encoding/binary"
	"errors"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/dmq-project/metadata/node"
	"go.etcd.io/raft/v3/raftpb"
)

// Bounds of the runner's queues. A full inbound queue drops Raft messages
// (Raft retransmits); a full request queue makes callers wait or time out.
const (
	inboundQueueMax = 4096
	requestQueueMax = 4096
	// batchMax is how many queued events are handled before one Ready, so
	// that concurrent proposals share one fsync.
	batchMax = 256
)

// ErrStopped is returned for work submitted after the runner stopped.
var ErrStopped = errors.New("runner: stopped")

// Runner owns one node.
type Runner struct {
	node         *node.Node
	tickInterval time.Duration
	requests     chan func(*node.Node)
	inbound      chan *raftpb.Message
	stop         chan struct{}
	stopped      chan struct{}
	stopOnce     sync.Once
	err          error
}

// Start runs the node in a new goroutine, ticking every tickInterval.
func Start(n *node.Node, tickInterval time.Duration) *Runner {
	r := &Runner{
		node: n, tickInterval: tickInterval,
		requests: make(chan func(*node.Node), requestQueueMax),
		inbound:  make(chan *raftpb.Message, inboundQueueMax),
		stop:     make(chan struct{}),
		stopped:  make(chan struct{}),
	}
	go r.loop() // determinism: ok — the runner is outside the core
	return r
}

func (r *Runner) loop() {
	defer close(r.stopped)
	ticker := time.NewTicker(r.tickInterval) // determinism: ok — the runner is outside the core
	defer ticker.Stop()
	for {
		select { // determinism: ok — the runner is outside the core
		case <-r.stop:
			return
		case <-ticker.C:
			r.node.Tick()
		case fn := <-r.requests:
			fn(r.node)
		case m := <-r.inbound:
			_ = r.node.Step(m)
		}
		r.drain()
		for r.node.HasReady() {
			if err := r.node.HandleReady(); err != nil {
				// Storage failed: the node's state can no longer be trusted
				// in memory. Stop; the process must restart from disk.
				r.err = err
				return
			}
		}
	}
}

// drain handles queued events without blocking, up to batchMax.
func (r *Runner) drain() {
	for i := 0; i < batchMax; i++ {
		select { // determinism: ok — the runner is outside the core
		case fn := <-r.requests:
			fn(r.node)
		case m := <-r.inbound:
			_ = r.node.Step(m)
		default:
			return
		}
	}
}

// Step queues a message from a peer; it drops the message if the queue is
// full (Raft retransmits). It returns false once the runner has stopped.
func (r *Runner) Step(m *raftpb.Message) bool {
	select { // determinism: ok — the runner is outside the core
	case <-r.stopped:
		return false
	default:
	}
	select { // determinism: ok — the runner is outside the core
	case r.inbound <- m:
	default:
	}
	return true
}

// Do runs fn on the node's goroutine. It returns once fn is queued.
func (r *Runner) Do(ctx context.Context, fn func(*node.Node)) error {
	select { // determinism: ok — the runner is outside the core
	case r.requests <- fn:
		return nil
	case <-r.stopped:
		return ErrStopped
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Call runs start on the node's goroutine and waits for the completion it
// reports through done, or for ctx. The node calls done exactly once; if
// ctx ends first, the late completion is discarded.
func Call[T any](ctx context.Context, r *Runner, start func(n *node.Node, done func(T))) (T, error) {
	result := make(chan T, 1)
	var zero T
	if err := r.Do(ctx, func(n *node.Node) { start(n, func(v T) { result <- v }) }); err != nil {
		return zero, err
	}
	select { // determinism: ok — the runner is outside the core
	case v := <-result:
		return v, nil
	case <-r.stopped:
		return zero, ErrStopped
	case <-ctx.Done():
		return zero, ctx.Err()
	}
}

// Stop ends the loop and waits for it. It returns the storage error that
// stopped the node, if one did.
func (r *Runner) Stop() error {
	r.stopOnce.Do(func() { close(r.stop) })
	<-r.stopped
	return r.err
}

// Done is closed when the loop ends, by Stop or by a storage failure.
func (r *Runner) Done() <-chan struct{} { return r.stopped }

// Err is the storage error that ended the loop, once Done is closed.
func (r *Runner) Err() error {
	select { // determinism: ok — the runner is outside the core
	case <-r.stopped:
		return r.err
	default:
		return nil
	}
}

// WallClock is the production Clock.
type WallClock struct{}

func (WallClock) Now() time.Time { return time.Now() } // determinism: ok — the runner is outside the core

// NewRand returns a ChaCha8 source seeded from the system's randomness, for
// the node's goroutine only (it is not safe for concurrent use).
func NewRand() node.Rand {
	var seed [32]byte
	if _, err := cryptorand.Read(seed[:]); err != nil {
		binary.LittleEndian.PutUint64(seed[:], uint64(time.Now().UnixNano())) // determinism: ok — the runner is outside the core
	}
	return rand.NewChaCha8(seed)
}
