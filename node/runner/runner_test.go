package runner

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/dmq-project/metadata/node"
	metadatav1 "github.com/dmq-project/metadata/rpc/gen/dmq/metadata/v1"
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

func (p *recordingPusher) CanPush(int32) bool { return true }

func (p *recordingPusher) Push(_ int32, req *metadatav1.PushMetadataRequest) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.pushes = append(p.pushes, req)
}

func startSingle(t *testing.T, dir string) (*Runner, *recordingPusher, storage.Storage) {
	store, err := storage.OpenPebble(dir, vfs.Default)
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
