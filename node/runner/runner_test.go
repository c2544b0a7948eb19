package runner

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	metadatav1 "github.com/dmq-project/metadata/gen/dmq/metadata/v1"
	"github.com/dmq-project/metadata/node"
	"github.com/dmq-project/metadata/statemachine"
	"github.com/dmq-project/metadata/storage"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.etcd.io/raft/v3/raftpb"
)

type loneTransport struct{}

func (loneTransport) Send([]*raftpb.Message) {}
func (loneTransport) SetPeer(uint64, string) {}
func (loneTransport) RemovePeer(uint64)      {}

type recordingPusher struct {
	mu     sync.Mutex
	pushes []*metadatav1.PushMetadataRequest
}

func (p *recordingPusher) Protocol(int32) node.PushProtocol { return node.PushConnect }

func (p *recordingPusher) Push(_ int32, push node.Push) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.pushes = append(p.pushes, push.Request)
}

func startSingle(t *testing.T, dir string) (*Runner, *recordingPusher, storage.Storage) {
	store, err := storage.OpenPebble(dir, vfs.Default)
	require.NoError(t, err)
	_, err = node.Format(store, "test", 1, NewRand())
	require.NoError(t, err)
	require.NoError(t, node.Bootstrap(store, []node.Peer{{ID: 1, URL: "http://127.0.0.1:8080"}}))
	pusher := &recordingPusher{}
	n, err := node.New(node.Config{ID: 1, ElectionTicks: 10, HeartbeatTicks: 1}, store,
		node.Env{Transport: loneTransport{}, Clock: WallClock{}, Rand: NewRand(), Pusher: pusher})
	require.NoError(t, err)
	r := Start(n, 5*time.Millisecond)
	t.Cleanup(func() { _ = r.Stop(); _ = store.Close() })
	return r, pusher, store
}

func waitActive(t *testing.T, r *Runner) {
	require.Eventually(t, func() bool {
		active, err := Call(context.Background(), r, func(n *node.Node, done func(bool)) { done(n.IsActive()) })
		return err == nil && active
	}, 10*time.Second, 10*time.Millisecond)
}

// TestSingleNodeOnPebble runs a one-controller cluster for real: Pebble in a
// directory, a real ticker, concurrent callers; then restarts it from disk.
func TestSingleNodeOnPebble(t *testing.T) {
	dir := t.TempDir()
	r, pusher, store := startSingle(t, dir)
	waitActive(t, r)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	var wg sync.WaitGroup
	errs := make(chan error, 20)
	for i := int32(1); i <= 20; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			out, err := Call(ctx, r, func(n *node.Node, done func(node.Outcome)) {
				n.RegisterBroker(&metadatav1.RegisterBrokerRequest{Id: i, Host: "localhost", Port: 9000 + i}, done)
			})
			if err == nil && out.Err != nil {
				err = out.Err
			}
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
	out, err := Call(ctx, r, func(n *node.Node, done func(node.Outcome)) {
		n.CreateTopic(&metadatav1.CreateTopicRequest{Name: "test-topic", Partitions: 3, ReplicationFactor: 2}, done)
	})
	require.NoError(t, err)
	require.Nil(t, out.Err)

	var topic *metadatav1.Topic
	readErr, err := Call(ctx, r, func(n *node.Node, done func(*statemachine.Error)) {
		n.Read(func(sm *statemachine.StateMachine, err *statemachine.Error) {
			if err == nil {
				topic = sm.Topic("test-topic")
			}
			done(err)
		})
	})
	require.NoError(t, err)
	require.Nil(t, readErr)
	require.NotNil(t, topic)
	assert.Len(t, topic.Partitions, 3)
	pusher.mu.Lock()
	assert.NotEmpty(t, pusher.pushes, "registered brokers get pushes")
	pusher.mu.Unlock()

	require.NoError(t, r.Stop())
	require.NoError(t, store.Close())
	r2, _, _ := startSingle(t, dir)
	waitActive(t, r2)
	var brokers, topics int
	_, err = Call(ctx, r2, func(n *node.Node, done func(bool)) {
		brokers, topics = len(n.StateMachine().Brokers()), n.StateMachine().TopicCount()
		done(true)
	})
	require.NoError(t, err)
	assert.Equal(t, 20, brokers, "everything acknowledged survives a restart")
	assert.Equal(t, 1, topics)
}

func TestCallAfterStop(t *testing.T) {
	r, _, _ := startSingle(t, t.TempDir())
	require.NoError(t, r.Stop())
	_, err := Call(context.Background(), r, func(n *node.Node, done func(bool)) { done(true) })
	assert.ErrorIs(t, err, ErrStopped)
}

// jam keeps the node's goroutine busy and fills the request queue behind
// it; the returned function (also run at cleanup) lets it go.
func jam(t *testing.T, r *Runner) (release func()) {
	entered, gate := make(chan struct{}), make(chan struct{})
	require.NoError(t, r.Do(context.Background(), func(*node.Node) { close(entered); <-gate }))
	<-entered
	for range RequestQueueMax {
		require.NoError(t, r.Do(context.Background(), func(*node.Node) {}))
	}
	var once sync.Once
	release = func() { once.Do(func() { close(gate) }) }
	// Registered after startSingle's cleanup, so it runs before the Stop
	// that would otherwise wait for the jammed loop.
	t.Cleanup(release)
	return release
}

// TestReportArrivesThroughAFullQueue: a report made while the node is busy
// and its request queue full returns at once and still reaches the node.
// (The transport used to queue reports like requests, giving up after a
// second: a lost push result left a broker never pushed again, a lost
// snapshot outcome left Raft waiting for it forever.)
func TestReportArrivesThroughAFullQueue(t *testing.T) {
	r, _, _ := startSingle(t, t.TempDir())
	release := jam(t, r)
	returned, arrived := make(chan struct{}), make(chan struct{})
	go func() {
		r.Report(func(*node.Node) { close(arrived) })
		close(returned)
	}()
	require.Eventually(t, func() bool { return isClosed(returned) }, 10*time.Second, time.Millisecond,
		"Report returned while the node was busy")
	release()
	require.Eventually(t, func() bool { return isClosed(arrived) }, 10*time.Second, time.Millisecond,
		"the report reached the node once it was free")
}

func isClosed(c chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}

// TestStepSnapshotRefusedWhenBusy: a snapshot the node cannot queue is
// refused at once, never dropped in silence, so that its sender reports it
// failed and Raft sends it again.
func TestStepSnapshotRefusedWhenBusy(t *testing.T) {
	r, _, _ := startSingle(t, t.TempDir())
	jam(t, r)
	result := make(chan error, 1)
	go func() {
		result <- r.StepSnapshot(context.Background(), &raftpb.Message{Type: raftpb.MessageType_MsgSnap.Enum(),
			From: new(uint64(2)), To: new(uint64(1)), Term: new(uint64(99))})
	}()
	var err error
	require.Eventually(t, func() bool {
		select {
		case err = <-result:
			return true
		default:
			return false
		}
	}, 10*time.Second, time.Millisecond, "StepSnapshot answered while the node was busy")
	assert.ErrorIs(t, err, ErrBusy)
}

// gatedStore holds back the Save of a snapshot until released.
type gatedStore struct {
	storage.Storage
	entered, release chan struct{}
}

func (s gatedStore) Save(u storage.Update) error {
	if u.Snapshot != nil && u.Snapshot.GetMetadata().GetIndex() != 0 {
		close(s.entered)
		<-s.release
	}
	return s.Storage.Save(u)
}

// TestStepSnapshotReturnsOnceInstalled: StepSnapshot returns only once
// the node has persisted and applied the snapshot, so that a sender told
// "delivered" knows the receiver holds it (the leader then moves on
// from the snapshot, and a receiver that had merely queued it could lose
// it to a full queue or a crash).
func TestStepSnapshotReturnsOnceInstalled(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// Controller 1, alone, adds controller 2 as a learner (its messages to
	// 2 go nowhere), registers brokers, and snapshots.
	leader, _, leaderStore := startSingle(t, t.TempDir())
	waitActive(t, leader)
	added, err := Call(ctx, leader, func(n *node.Node, done func(error)) {
		n.ChangeMembership(node.MembershipChange{Kind: node.AddLearner, NodeID: 2, URL: "http://127.0.0.1:8082", DirectoryID: 2}, done)
	})
	require.NoError(t, err)
	require.NoError(t, added)
	for id := int32(1); id <= 3; id++ {
		out, err := Call(ctx, leader, func(n *node.Node, done func(node.Outcome)) {
			n.RegisterBroker(&metadatav1.RegisterBrokerRequest{Id: id, Host: "localhost", Port: 9000 + id}, done)
		})
		require.NoError(t, err)
		require.Nil(t, out.Err)
	}
	type snapshotAt struct {
		snap *raftpb.Snapshot
		term uint64
		err  error
	}
	taken, err := Call(ctx, leader, func(n *node.Node, done func(snapshotAt)) {
		n.TakeSnapshot(func(_ uint64, _ int, err error) {
			if err != nil {
				done(snapshotAt{err: err})
				return
			}
			snap, err := leaderStore.Snapshot()
			done(snapshotAt{snap: snap, term: n.Term(), err: err})
		})
	})
	require.NoError(t, err)
	require.NoError(t, taken.err)

	// Controller 2 starts empty, waiting to be added, on a disk that holds
	// the snapshot's write back.
	store, err := storage.OpenPebble(t.TempDir(), vfs.Default)
	require.NoError(t, err)
	_, err = node.Format(store, "test", 2, NewRand())
	require.NoError(t, err)
	gated := gatedStore{Storage: store, entered: make(chan struct{}), release: make(chan struct{})}
	n, err := node.New(node.Config{ID: 2, ElectionTicks: 10, HeartbeatTicks: 1}, gated,
		node.Env{Transport: loneTransport{}, Clock: WallClock{}, Rand: NewRand(), Pusher: &recordingPusher{}})
	require.NoError(t, err)
	follower := Start(n, 5*time.Millisecond)
	t.Cleanup(func() { _ = follower.Stop(); _ = store.Close() })
	var releaseOnce sync.Once
	release := func() { releaseOnce.Do(func() { close(gated.release) }) }
	t.Cleanup(release) // before Stop, which waits for a held-back Save

	result := make(chan error, 1)
	go func() {
		result <- follower.StepSnapshot(ctx, &raftpb.Message{Type: raftpb.MessageType_MsgSnap.Enum(),
			From: new(uint64(1)), To: new(uint64(2)), Term: new(taken.term), Snapshot: taken.snap})
	}()
	select {
	case <-gated.entered:
	case <-ctx.Done():
		t.Fatal("the snapshot was never saved")
	}
	select {
	case err := <-result:
		t.Fatalf("StepSnapshot returned (%v) before the snapshot was persisted", err)
	default:
	}
	release()
	require.NoError(t, <-result)
	brokers, err := Call(ctx, follower, func(n *node.Node, done func(int)) { done(len(n.StateMachine().Brokers())) })
	require.NoError(t, err)
	assert.Equal(t, 3, brokers, "once StepSnapshot returns, the snapshot's state is applied")
}

// Applied wakes a watcher once a version is applied after it looked: the
// channel taken before a change is closed by it.
func TestAppliedClosesOnceTheVersionMoves(t *testing.T) {
	r, _, _ := startSingle(t, t.TempDir())
	waitActive(t, r)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for i := int32(1); i <= 3; i++ {
		applied := r.Applied()
		out, err := Call(ctx, r, func(n *node.Node, done func(node.Outcome)) {
			n.RegisterBroker(&metadatav1.RegisterBrokerRequest{Id: i, Host: "localhost", Port: 9000 + i}, done)
		})
		require.NoError(t, err)
		require.Nil(t, out.Err)
		select {
		case <-applied:
		case <-ctx.Done():
			t.Fatalf("registration %d was applied and Applied's channel is still open", i)
		}
		assert.NotEqual(t, applied, r.Applied(), "a new channel for the next version")
	}
}

// The loop's pauses are measured from the event that starts one to the
// end of the Readies it made: a request that holds the node 30 ms is a
// long pause of at least that.
func TestPausesCountTheLoopBusy(t *testing.T) {
	r, _, _ := startSingle(t, t.TempDir())
	waitActive(t, r)
	_, before := r.Pauses()
	_, err := Call(context.Background(), r, func(_ *node.Node, done func(bool)) {
		time.Sleep(30 * time.Millisecond)
		done(true)
	})
	require.NoError(t, err)
	require.Eventually(t, func() bool { _, long := r.Pauses(); return long > before }, 5*time.Second, time.Millisecond)
	longest, _ := r.Pauses()
	assert.GreaterOrEqual(t, longest, 30*time.Millisecond)
}
