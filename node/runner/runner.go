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
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dmq-project/metadata/node"
	"go.etcd.io/raft/v3/raftpb"
)

// Bounds of the runner's queues. A full inbound queue drops Raft messages
// (Raft retransmits); a full request queue makes callers wait or time out,
// and refuses snapshots (StepSnapshot). Reports have no queue bound of
// their own: see Report.
const (
	InboundQueueMax = 4096
	RequestQueueMax = 4096
	// batchMax is how many queued events are handled before one Ready, so
	// that concurrent proposals share one fsync.
	batchMax = 256
)

// ErrStopped is returned for work submitted after the runner stopped.
var ErrStopped = errors.New("runner: stopped")

// ErrBusy is returned by StepSnapshot when the request queue is full.
var ErrBusy = errors.New("runner: the request queue is full")

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

	// Reports (see Report) wait here for the loop, which wake tells that
	// there are some.
	reportsMu   sync.Mutex
	reports     []func(*node.Node)
	unreachable []uint64
	congested   []uint64
	wake        chan struct{}

	// persisted are the StepSnapshot callers to answer once the Readies
	// that follow their snapshot are handled. Loop goroutine only.
	persisted []chan<- error

	// applied is closed, and replaced, when the node's applied version
	// moves (see Applied); version is the version it was last closed at
	// (loop goroutine only).
	appliedMu sync.Mutex
	applied   chan struct{}
	version   int64

	// longestPause is the longest the loop has been busy with one event
	// and the Readies it made, in nanoseconds; longPauses counts those
	// over LongPause. Every request waits out such a pause.
	longestPause atomic.Int64
	longPauses   atomic.Int64
}

// LongPause is the pause of the node's loop that Pauses counts: longer
// delays every request noticeably (a snapshot of a big state, a slow
// fsync).
const LongPause = 10 * time.Millisecond

// Pauses returns the longest the node's loop has been busy in one go since
// it started (handling one event and the Readies that followed: requests
// queued meanwhile wait), and how many times it was busy longer than
// LongPause.
func (r *Runner) Pauses() (longest time.Duration, long int64) {
	return time.Duration(r.longestPause.Load()), r.longPauses.Load()
}

func (r *Runner) notePause(d time.Duration) {
	if d > LongPause {
		r.longPauses.Add(1)
	}
	for {
		longest := r.longestPause.Load()
		if int64(d) <= longest || r.longestPause.CompareAndSwap(longest, int64(d)) {
			return
		}
	}
}

// Start runs the node in a new goroutine, ticking every tickInterval.
func Start(n *node.Node, tickInterval time.Duration) *Runner {
	r := &Runner{
		node: n, tickInterval: tickInterval,
		requests: make(chan func(*node.Node), RequestQueueMax),
		inbound:  make(chan *raftpb.Message, InboundQueueMax),
		stop:     make(chan struct{}),
		stopped:  make(chan struct{}),
		wake:     make(chan struct{}, 1),
		applied:  make(chan struct{}),
		version:  n.StateMachine().Version(),
	}
	go r.loop() // determinism: ok — the runner is outside the core
	return r
}

func (r *Runner) loop() {
	defer close(r.stopped)
	ticker := time.NewTicker(r.tickInterval) // determinism: ok — the runner is outside the core
	defer ticker.Stop()
	for {
		var began time.Time
		select { // determinism: ok — the runner is outside the core
		case <-r.stop:
			return
		case <-ticker.C:
			began = time.Now() // determinism: ok — the runner is outside the core
			r.node.Tick()
		case fn := <-r.requests:
			began = time.Now() // determinism: ok — the runner is outside the core
			fn(r.node)
		case m := <-r.inbound:
			began = time.Now() // determinism: ok — the runner is outside the core
			_ = r.node.Step(m)
		case <-r.wake:
			began = time.Now() // determinism: ok — the runner is outside the core
			r.runReports()
		}
		r.drain()
		for r.node.HasReady() {
			if err := r.node.HandleReady(); err != nil {
				// Storage failed: the node's state can no longer be trusted
				// in memory. Stop; the process must restart from disk.
				// Waiting StepSnapshot callers learn it from stopped.
				r.err = err
				return
			}
		}
		if version := r.node.StateMachine().Version(); version != r.version {
			r.version = version
			r.appliedMu.Lock()
			close(r.applied)
			r.applied = make(chan struct{})
			r.appliedMu.Unlock()
		}
		// Every Ready is handled: the snapshots stepped so far are
		// persisted and applied (or were not installed at all).
		for _, done := range r.persisted {
			done <- nil
		}
		clear(r.persisted)
		r.persisted = r.persisted[:0]
		r.notePause(time.Since(began)) // determinism: ok — the runner is outside the core
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
		case <-r.wake:
			r.runReports()
		default:
			return
		}
	}
}

// runReports hands the node the reports made since the last call.
func (r *Runner) runReports() {
	r.reportsMu.Lock()
	reports, unreachable, congested := r.reports, r.unreachable, r.congested
	r.reports, r.unreachable, r.congested = nil, nil, nil
	r.reportsMu.Unlock()
	for _, id := range unreachable {
		r.node.ReportUnreachable(id)
	}
	for _, id := range congested {
		r.node.ReportCongested(id)
	}
	for _, fn := range reports {
		fn(r.node)
	}
}

// Report runs fn on the node's goroutine, soon. Unlike Do it never blocks
// and never drops fn (until the runner stops: then there is no node to
// report to): it is for outcomes the node waits for, which must arrive
// however busy the request queue is. A lost push result leaves a broker
// never pushed again (the node waits for the in-flight push's result); a
// lost snapshot outcome leaves Raft waiting for it forever.
//
// The queue behind it has no bound of its own; its callers bound it. What
// reaches it are the results of pushes (the node has at most one push in
// flight per broker in a leadership, and each ends within its timeout)
// and the outcomes of snapshots (one per snapshot the transport was given,
// and Raft sends a peer no new snapshot until it hears how the last one
// ended), and balancing plans computed off the loop (Worker: one per
// Rebalance call in flight, one the controller starts itself); unreachable
// peers go through ReportUnreachable, coalesced per peer. The loop empties the queue on every turn.
func (r *Runner) Report(fn func(*node.Node)) {
	r.reportsMu.Lock()
	if r.isStopped() {
		r.reportsMu.Unlock()
		return
	}
	r.reports = append(r.reports, fn)
	r.reportsMu.Unlock()
	r.wakeUp()
}

// ReportUnreachable tells Raft, soon, that a peer could not be reached; it
// never blocks. Reports for a peer that arrive before the loop takes them
// are one report: Raft only needs to know that the peer failed since it
// last heard, so the queue holds at most one entry per peer.
func (r *Runner) ReportUnreachable(id uint64) { r.reportPeer(&r.unreachable, id) }

// ReportCongested tells Raft, soon, that messages to a peer were dropped
// on a full queue (node.Node.ReportCongested); it never blocks, and
// reports of one peer made before the node hears coalesce.
func (r *Runner) ReportCongested(id uint64) { r.reportPeer(&r.congested, id) }

// reportPeer queues a report of a peer on one of the runner's lists,
// unless one is queued already, and wakes the loop.
func (r *Runner) reportPeer(queue *[]uint64, id uint64) {
	r.reportsMu.Lock()
	if r.isStopped() || slices.Contains(*queue, id) {
		r.reportsMu.Unlock()
		return
	}
	*queue = append(*queue, id)
	r.reportsMu.Unlock()
	r.wakeUp()
}

// ReportSnapshot tells Raft, soon, whether a snapshot reached a peer (see
// Report); it never blocks.
func (r *Runner) ReportSnapshot(id uint64, delivered bool) {
	r.Report(func(n *node.Node) { n.ReportSnapshot(id, delivered) })
}

func (r *Runner) wakeUp() {
	select { // determinism: ok — the runner is outside the core
	case r.wake <- struct{}{}:
	default:
		// A wake-up is pending already; the loop takes every report then.
	}
}

func (r *Runner) isStopped() bool {
	select { // determinism: ok — the runner is outside the core
	case <-r.stopped:
		return true
	default:
		return false
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

// StepSnapshot hands a snapshot message (MsgSnap) from a peer to the node
// and returns once the node has stepped it and handled the Readies that
// follow, which persist and apply the snapshot if Raft installs it: the
// sender may then report it delivered. Unlike Step it never drops the
// message silently: a full request queue is ErrBusy at once (the sender
// reports the snapshot failed, and Raft sends it again later), and a
// message the node refuses is an error.
func (r *Runner) StepSnapshot(ctx context.Context, m *raftpb.Message) error {
	if r.isStopped() {
		return ErrStopped
	}
	done := make(chan error, 1)
	fn := func(n *node.Node) {
		if err := n.Step(m); err != nil {
			done <- fmt.Errorf("the node refused the snapshot: %w", err)
			return
		}
		r.persisted = append(r.persisted, done)
	}
	select { // determinism: ok — the runner is outside the core
	case r.requests <- fn:
	default:
		return ErrBusy
	}
	select { // determinism: ok — the runner is outside the core
	case err := <-done:
		return err
	case <-r.stopped:
		// The loop may have answered just before it stopped.
		select { // determinism: ok — the runner is outside the core
		case err := <-done:
			return err
		default:
		}
		if r.err != nil {
			return r.err
		}
		return ErrStopped
	case <-ctx.Done():
		return ctx.Err()
	}
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

// Applied returns a channel closed once the node's applied version moves
// past what it is when Applied is called: a watcher takes it, then reads
// the node, then waits on it, and misses no version.
func (r *Runner) Applied() <-chan struct{} {
	r.appliedMu.Lock()
	defer r.appliedMu.Unlock()
	return r.applied
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

// Worker is node.Worker for production: each computation runs on a
// goroutine of its own, and what it returns reaches the node through the
// runner's reports (never dropped while the runner runs). Computations
// finished before Attach wait for it. What it runs is bounded by its
// callers: a balancing plan per Rebalance call in flight, and at most one
// the active controller starts itself.
type Worker struct {
	mu      sync.Mutex
	report  func(func(*node.Node))
	waiting []func(*node.Node)
}

// Attach sets how continuations reach the node (Runner.Report) and hands
// over those that finished before.
func (w *Worker) Attach(report func(fn func(*node.Node))) {
	w.mu.Lock()
	w.report = report
	waiting := w.waiting
	w.waiting = nil
	w.mu.Unlock()
	for _, fn := range waiting {
		report(fn)
	}
}

// Run implements node.Worker.
func (w *Worker) Run(work func() func()) {
	go func() { // determinism: ok — the runner is outside the core; the node gets the result through Report
		then := work()
		fn := func(*node.Node) { then() }
		w.mu.Lock()
		report := w.report
		if report == nil {
			w.waiting = append(w.waiting, fn)
		}
		w.mu.Unlock()
		if report != nil {
			report(fn)
		}
	}()
}
