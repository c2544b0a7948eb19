package api

import (
	"context"
	"slices"
	"sync"
	"time"

	metadatav1 "github.com/dmq-project/metadata/gen/dmq/metadata/v1"
	"github.com/dmq-project/metadata/node"
	"github.com/dmq-project/metadata/node/runner"
)

// watchHub serves a controller's WatchMetadata streams with one node call
// per round, whatever their number: the watchers waiting at a round are
// grouped by the version they hold, and those at the same version share
// one update (one delta, built once). A call per watcher per applied
// version cost the node goroutine ten thousand calls per version with ten
// thousand watchers, and stalled a registration storm. What each watcher
// is sent is node.WatchUpdate's decision; the hub only delivers it.
//
// Rounds that follow each other closely are spaced by the time their
// sends cost (roundGapPerWatcher for each watcher served): during a burst
// of versions each watcher then gets one delta covering many, instead of
// every watcher getting every version. The first change after a quiet
// spell goes out at once.
type watchHub struct {
	runner *runner.Runner
	start  sync.Once

	mu      sync.Mutex
	waiting map[int64][]watcher
	// arrived tells the hub that a watcher is waiting (capacity 1: one
	// signal covers every arrival until the hub looks).
	arrived chan struct{}
}

// roundGapPerWatcher is, per watcher served in a round, how long the next
// round waits after it: about what sending one update costs a controller.
const roundGapPerWatcher = 20 * time.Microsecond

// roundGapMax bounds the gap: a watcher learns of a change this late at
// worst, however many there are.
const roundGapMax = 200 * time.Millisecond

// watcher is a stream waiting for its next update; its context ends when
// the stream does.
type watcher struct {
	ctx    context.Context
	update chan<- *metadatav1.WatchMetadataResponse
}

func newWatchHub(r *runner.Runner) *watchHub {
	return &watchHub{runner: r, waiting: map[int64][]watcher{}, arrived: make(chan struct{}, 1)}
}

// next waits for what changed after since: the update node.WatchUpdate
// gives once there is one.
func (h *watchHub) next(ctx context.Context, since int64) (*metadatav1.WatchMetadataResponse, error) {
	h.start.Do(func() { go h.run() })
	// Buffered: the hub never waits for a watcher that has gone.
	update := make(chan *metadatav1.WatchMetadataResponse, 1)
	h.mu.Lock()
	h.waiting[since] = append(h.waiting[since], watcher{ctx: ctx, update: update})
	h.mu.Unlock()
	select {
	case h.arrived <- struct{}{}:
	default:
	}
	select {
	case u := <-update:
		return u, nil
	case <-ctx.Done():
		// Gone before the next version: leave no channel behind (watchers
		// that come and go while nothing changes would pile up).
		h.mu.Lock()
		h.waiting[since] = slices.DeleteFunc(h.waiting[since], func(w watcher) bool { return w.update == update })
		if len(h.waiting[since]) == 0 {
			delete(h.waiting, since)
		}
		h.mu.Unlock()
		return nil, ctx.Err()
	case <-h.runner.Done():
		return nil, runner.ErrStopped
	}
}

// run is the hub's loop: a round answers every watcher waiting, and
// those with nothing new wait for the next applied version.
func (h *watchHub) run() {
	for {
		// Taken before the node is read: a version applied after the
		// read closes it.
		applied := h.runner.Applied()
		h.mu.Lock()
		waiting := h.waiting
		h.waiting = map[int64][]watcher{}
		h.mu.Unlock()
		served := 0
		if len(waiting) > 0 {
			versions := make([]int64, 0, len(waiting))
			for since := range waiting {
				versions = append(versions, since)
			}
			slices.Sort(versions)
			updates, err := runner.Call(context.Background(), h.runner, func(n *node.Node, done func([]*metadatav1.WatchMetadataResponse)) {
				updates := make([]*metadatav1.WatchMetadataResponse, len(versions))
				for i, since := range versions {
					updates[i] = n.WatchUpdate(since)
				}
				done(updates)
			})
			if err != nil {
				return // stopped: the watchers learn it from the runner
			}
			h.mu.Lock()
			for i, since := range versions {
				for _, w := range waiting[since] {
					switch {
					case w.ctx.Err() != nil:
						// Gone while the round ran: dropped here, as
						// next drops those gone between rounds.
					case updates[i] == nil:
						h.waiting[since] = append(h.waiting[since], w)
					default:
						w.update <- updates[i]
						served++
					}
				}
			}
			h.mu.Unlock()
		}
		if served > 0 {
			// The watchers served come back once their sends are done;
			// versions applied meanwhile wait for them.
			select {
			case <-time.After(min(time.Duration(served)*roundGapPerWatcher, roundGapMax)):
			case <-h.runner.Done():
				return
			}
		}
		select {
		case <-applied:
		case <-h.arrived:
		case <-h.runner.Done():
			return
		}
	}
}
