package peer_test

import (
	"context"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/dmq-project/metadata/node"
	"github.com/dmq-project/metadata/node/runner"
	"github.com/dmq-project/metadata/rpc/peer"
	"github.com/dmq-project/metadata/storage"
	"github.com/dmq-project/metadata/wire"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"
)

// snapshotReport is one outcome the transport reported to Raft.
type snapshotReport struct {
	to        uint64
	delivered bool
	// installed: whether the receiver had installed the snapshot when the
	// sender reported it.
	installed bool
}

// reportLog records what a transport reports to Raft.
type reportLog struct {
	mu          sync.Mutex
	unreachable []uint64
	congested   []uint64
	snapshots   []snapshotReport
	// installed, if set, says whether the receiver has installed the
	// snapshot.
	installed func() bool
	reported  chan struct{}
}

func newReportLog() *reportLog { return &reportLog{reported: make(chan struct{}, 16)} }

func (l *reportLog) ReportUnreachable(id uint64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.unreachable = append(l.unreachable, id)
}

func (l *reportLog) ReportCongested(id uint64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.congested = append(l.congested, id)
}

func (l *reportLog) ReportSnapshot(id uint64, delivered bool) {
	l.mu.Lock()
	r := snapshotReport{to: id, delivered: delivered}
	if l.installed != nil {
		r.installed = l.installed()
	}
	l.snapshots = append(l.snapshots, r)
	l.mu.Unlock()
	select {
	case l.reported <- struct{}{}:
	default:
	}
}

func (l *reportLog) snapshotReports() []snapshotReport {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]snapshotReport(nil), l.snapshots...)
}

func (l *reportLog) unreachableReports() []uint64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]uint64(nil), l.unreachable...)
}

func snapshotMessage(from, to uint64) *raftpb.Message {
	return &raftpb.Message{Type: raftpb.MessageType_MsgSnap.Enum(), From: proto.Uint64(from), To: proto.Uint64(to),
		Term: proto.Uint64(3), Snapshot: &raftpb.Snapshot{Metadata: &raftpb.SnapshotMetadata{Index: proto.Uint64(10), Term: proto.Uint64(3)}}}
}

// sender is controller 1's transport, reporting to a log.
func sender(t *testing.T) (*peer.Transport, *reportLog) {
	transport := peer.NewTransport(1, "c", wire.NewHTTPClient(nil), slog.New(slog.DiscardHandler), peer.TransportOptions{})
	reports := newReportLog()
	transport.Attach(reports)
	t.Cleanup(transport.Close)
	return transport, reports
}

// TestSnapshotToAPeerWithoutAddressFails: a snapshot for a controller the
// transport has no URL for is reported failed, and the peer unreachable;
// Raft, which waits for the outcome of every snapshot, used to wait
// forever (the follower stuck in StateSnapshot).
func TestSnapshotToAPeerWithoutAddressFails(t *testing.T) {
	transport, reports := sender(t)
	transport.Send([]*raftpb.Message{snapshotMessage(1, 2)})
	require.Eventually(t, func() bool { return len(reports.snapshotReports()) == 1 }, 5*time.Second, time.Millisecond,
		"the snapshot's outcome is reported")
	assert.Equal(t, snapshotReport{to: 2, delivered: false}, reports.snapshotReports()[0])
	assert.Contains(t, reports.unreachableReports(), uint64(2))
}

// installingStepper stands for a receiving node: a snapshot handed over
// by StepSnapshot is installed once the test releases it; one merely
// queued by Step never is (as when the node's inbound queue is full).
type installingStepper struct {
	entered   chan struct{}
	release   chan struct{}
	installed atomic.Bool
	calls     atomic.Int64
}

func newInstallingStepper() *installingStepper {
	return &installingStepper{entered: make(chan struct{}, 16), release: make(chan struct{})}
}

func (s *installingStepper) Step(*raftpb.Message) bool { return true }

func (s *installingStepper) StepSnapshot(ctx context.Context, _ *raftpb.Message) error {
	s.calls.Add(1)
	s.entered <- struct{}{}
	select {
	case <-s.release:
	case <-ctx.Done():
		return ctx.Err()
	}
	s.installed.Store(true)
	return nil
}

// TestSnapshotDeliveredMeansInstalled: the sender reports a snapshot
// delivered only once the receiver has installed it, not when the
// receiver queued it.
func TestSnapshotDeliveredMeansInstalled(t *testing.T) {
	stepper := newInstallingStepper()
	base, _, _ := servePeer(t, 2, stepper, true)
	transport, reports := sender(t)
	reports.installed = stepper.installed.Load
	transport.SetPeer(2, base)
	transport.Send([]*raftpb.Message{snapshotMessage(1, 2)})
	select {
	case <-stepper.entered:
		close(stepper.release)
	case <-reports.reported:
	case <-time.After(10 * time.Second):
		t.Fatal("the snapshot neither reached the receiver nor was reported")
	}
	require.Eventually(t, func() bool { return len(reports.snapshotReports()) == 1 }, 10*time.Second, time.Millisecond)
	assert.Equal(t, snapshotReport{to: 2, delivered: true, installed: true}, reports.snapshotReports()[0],
		"reported delivered, and installed by then")
}

// startRunner runs a lone controller id on Pebble, as the receiving end
// of a peer transport.
func startRunner(t *testing.T, id uint64) *runner.Runner {
	store, err := storage.OpenPebble(t.TempDir(), vfs.Default)
	require.NoError(t, err)
	_, err = node.Format(store, "test", id, runner.NewRand())
	require.NoError(t, err)
	require.NoError(t, node.Bootstrap(store, []node.Peer{{ID: id, URL: "http://127.0.0.1:1"}}))
	n, err := node.New(node.Config{ID: id, ElectionTicks: 10, HeartbeatTicks: 1}, store,
		node.Env{Transport: nowhere{}, Clock: runner.WallClock{}, Rand: runner.NewRand(), Pusher: nowhere{}})
	require.NoError(t, err)
	r := runner.Start(n, 10*time.Millisecond)
	t.Cleanup(func() { _ = r.Stop(); _ = store.Close() })
	return r
}

// nowhere is a node's transport and pusher that deliver nothing.
type nowhere struct{}

func (nowhere) Send([]*raftpb.Message)           {}
func (nowhere) SetPeer(uint64, string)           {}
func (nowhere) RemovePeer(uint64)                {}
func (nowhere) Protocol(int32) node.PushProtocol { return node.PushNone }
func (nowhere) Push(int32, node.Push)            {}

// overload keeps a runner's goroutine busy and fills both its queues,
// until the returned function (also run at cleanup) lets it go.
func overload(t *testing.T, r *runner.Runner) (release func()) {
	entered, gate := make(chan struct{}), make(chan struct{})
	require.NoError(t, r.Do(context.Background(), func(*node.Node) { close(entered); <-gate }))
	<-entered
	for range runner.RequestQueueMax {
		require.NoError(t, r.Do(context.Background(), func(*node.Node) {}))
	}
	// Proposals, which a node refuses from peers: harmless once stepped.
	for range runner.InboundQueueMax {
		require.True(t, r.Step(&raftpb.Message{Type: raftpb.MessageType_MsgProp.Enum(), From: proto.Uint64(1), To: proto.Uint64(2)}))
	}
	var once sync.Once
	release = func() { once.Do(func() { close(gate) }) }
	t.Cleanup(release) // before the runner's Stop, which waits for the loop
	return release
}

// TestSnapshotToABusyReceiverFails: a receiver too busy to queue a
// snapshot answers an error, and the sender reports the snapshot failed
// (Raft sends it again later). The receiver used to drop it in silence
// and answer success: the leader believed it delivered.
func TestSnapshotToABusyReceiverFails(t *testing.T) {
	receiver := startRunner(t, 2)
	overload(t, receiver)
	base, _, _ := servePeer(t, 2, receiver, true)
	transport, reports := sender(t)
	transport.SetPeer(2, base)
	transport.Send([]*raftpb.Message{snapshotMessage(1, 2)})
	require.Eventually(t, func() bool { return len(reports.snapshotReports()) == 1 }, 10*time.Second, time.Millisecond,
		"the snapshot's outcome is reported")
	assert.Equal(t, snapshotReport{to: 2, delivered: false}, reports.snapshotReports()[0])
}

// TestSnapshotsQueuedForAReplacedPeerFail: snapshots still queued for a
// peer whose URL changes (or that is removed) are reported failed; they
// used to vanish with the old peer's queue, unreported.
func TestSnapshotsQueuedForAReplacedPeerFail(t *testing.T) {
	stepper := newInstallingStepper()
	oldBase, _, _ := servePeer(t, 2, stepper, true)
	newBase, _, _, _ := peerServer(t, true)
	transport, reports := sender(t)
	transport.SetPeer(2, oldBase)
	transport.Send([]*raftpb.Message{snapshotMessage(1, 2)})
	select {
	case <-stepper.entered:
	case <-time.After(10 * time.Second):
		t.Fatal("the first snapshot never reached the receiver")
	}
	// The first is in flight; the second waits behind it when the peer
	// moves.
	transport.Send([]*raftpb.Message{snapshotMessage(1, 2)})
	transport.SetPeer(2, newBase)
	close(stepper.release)
	require.Eventually(t, func() bool { return len(reports.snapshotReports()) == 2 }, 10*time.Second, time.Millisecond,
		"both snapshots' outcomes are reported")
	assert.ElementsMatch(t, []snapshotReport{{to: 2, delivered: true}, {to: 2, delivered: false}}, reports.snapshotReports())
	assert.EqualValues(t, 1, stepper.calls.Load(), "the queued snapshot does not go to the old address")
}
