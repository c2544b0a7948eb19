package node

import (
	"fmt"
	"slices"
	"testing"

	metadatav1 "github.com/dmq-project/metadata/gen/dmq/metadata/v1"
	"github.com/dmq-project/metadata/storage"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.etcd.io/raft/v3/raftpb"
)

// TestSnapshotsAreTakenOffTheLoop: a snapshot is encoded and written by
// the worker while the node goes on applying; the stored snapshot is the
// state at the index it was taken at, not at the one it was stored at;
// TakeSnapshot callers are answered once it is stored, one asking while it
// is under way by a later snapshot that holds what it applied; and a
// restart from the snapshot and the log converges.
func TestSnapshotsAreTakenOffTheLoop(t *testing.T) {
	c := newCluster(t, 3, func(cfg *Config) { cfg.MaxLogEntries = 1000; cfg.LogTailEntries = 2; cfg.VerifySnapshots = true })
	leader := c.elect(1)
	require.Nil(t, c.do(func(done func(Outcome)) { leader.RegisterBroker(registerReq(1), done) }).Err)
	require.Nil(t, c.do(func(done func(Outcome)) { leader.CreateTopic(createTopicReq("before", 8, 1), done) }).Err)

	c.holdWork = true
	frozenAt := leader.StateMachine().AppliedIndex()
	frozen := leader.StateMachine().Snapshot()
	var first, second []uint64
	leader.TakeSnapshot(func(index uint64, _ int, err error) { require.NoError(t, err); first = append(first, index) })
	require.Len(t, c.held, 1, "the snapshot went to the worker")

	// The node goes on: every kind of change to the topic the view holds.
	require.Nil(t, c.do(func(done func(Outcome)) { leader.CreateTopic(createTopicReq("after", 4, 1), done) }).Err)
	require.Nil(t, c.do(func(done func(Outcome)) {
		leader.CreatePartitions(&metadatav1.CreatePartitionsRequest{Topic: "before", Count: 12}, done)
	}).Err)
	require.Nil(t, c.do(func(done func(Outcome)) { leader.DeleteTopic(&metadatav1.DeleteTopicRequest{Name: "after"}, done) }).Err)
	askedAt := leader.StateMachine().AppliedIndex()
	leader.TakeSnapshot(func(index uint64, _ int, err error) { require.NoError(t, err); second = append(second, index) })
	require.Len(t, c.held, 1, "one snapshot at a time")
	stored, err := c.nodes[1].store.Snapshot()
	require.NoError(t, err)
	assert.Less(t, stored.GetMetadata().GetIndex(), frozenAt, "stored before the worker wrote it")
	assert.Empty(t, first)

	c.runHeld(0)
	assert.Equal(t, []uint64{frozenAt}, first)
	assert.Empty(t, second, "answered by a snapshot that misses its writes")
	stored, err = c.nodes[1].store.Snapshot()
	require.NoError(t, err)
	require.Equal(t, frozenAt, stored.GetMetadata().GetIndex())
	_, _, _, smBytes, err := decodeSnapshot(stored.GetData())
	require.NoError(t, err)
	require.Equal(t, frozen, smBytes, "the stored snapshot is the state at its index")

	require.Len(t, c.held, 1, "the second caller's snapshot is under way")
	c.releaseWork()
	require.Len(t, second, 1)
	assert.GreaterOrEqual(t, second[0], askedAt)

	c.holdWork = false
	c.crash(1)
	c.restart(1)
	c.tick(30)
	c.requireConverged()
	restarted := c.nodes[1].StateMachine()
	assert.Nil(t, restarted.Topic("after"))
	assert.Len(t, restarted.Topic("before").GetPartitions(), 12)
}

// TestSnapshotOverlappedByALeadersIsDropped: a follower whose own snapshot
// is under way when a leader's newer one installs keeps the leader's.
func TestSnapshotOverlappedByALeadersIsDropped(t *testing.T) {
	c := newCluster(t, 3, func(cfg *Config) { cfg.MaxLogEntries = 5; cfg.LogTailEntries = 1; cfg.VerifySnapshots = true })
	leader := c.elect(1)
	require.Nil(t, c.do(func(done func(Outcome)) { leader.RegisterBroker(registerReq(1), done) }).Err)
	c.isolate(3)
	c.holdWork = true
	var own uint64
	c.nodes[3].TakeSnapshot(func(index uint64, _ int, err error) { require.NoError(t, err); own = index })
	ownAt := c.nodes[3].StateMachine().AppliedIndex()
	// The others go on, snapshot and compact past what 3 holds.
	for i := range 20 {
		require.Nil(t, c.do(func(done func(Outcome)) { leader.CreateTopic(createTopicReq(fmt.Sprintf("t%d", i), 1, 1), done) }).Err)
		for k := 0; k < len(c.held); {
			if c.held[k].node == c.nodes[3] {
				k++
				continue
			}
			c.runHeld(k)
		}
		c.process()
	}
	first, err := c.nodes[1].store.FirstIndex()
	require.NoError(t, err)
	require.Greater(t, first, ownAt+1, "the leader compacted what 3 would need")
	c.heal()
	c.tick(20)
	require.Greater(t, c.nodes[3].snapshotIndex, ownAt, "3 took the leader's snapshot")
	held := c.nodes[3].snapshotIndex
	c.holdWork = false
	c.releaseWork()
	assert.Equal(t, held, own, "the caller hears of the newer snapshot, which holds what it asked for")
	stored, err := c.nodes[3].store.Snapshot()
	require.NoError(t, err)
	assert.Equal(t, held, stored.GetMetadata().GetIndex(), "the older snapshot replaced the leader's")
	c.tick(10)
	c.requireConverged()
}

// TestFailedSnapshotWriteStopsTheNode: a staging whose sync fails is a
// storage failure like any other: the node stops, and callers hear it.
func TestFailedSnapshotWriteStopsTheNode(t *testing.T) {
	c := newCluster(t, 1, nil)
	leader := c.elect(1)
	require.Nil(t, c.do(func(done func(Outcome)) { leader.RegisterBroker(registerReq(1), done) }).Err)
	c.holdWork = true
	var answer error
	leader.TakeSnapshot(func(_ uint64, _ int, err error) { answer = err })
	c.disks[1].FailSyncs = 1
	h := c.held[0]
	c.held = nil
	h.work()()
	require.ErrorIs(t, answer, storage.ErrFailed)
	require.True(t, leader.HasReady())
	require.ErrorIs(t, leader.HandleReady(), storage.ErrFailed)
	var again error
	leader.TakeSnapshot(func(_ uint64, _ int, err error) { again = err })
	require.ErrorIs(t, again, storage.ErrFailed)
}

// TestJoinerWaitsForASnapshotNamingIt: a member added while the log is
// compacted needs a snapshot whose conf state names it (it refuses any
// other). While that snapshot is under way off the loop, the leader sends
// none rather than the stored one; once stored, it goes, and the joiner
// catches up.
func TestJoinerWaitsForASnapshotNamingIt(t *testing.T) {
	c := newCluster(t, 3, func(cfg *Config) { cfg.MaxLogEntries = 5; cfg.LogTailEntries = 1 })
	leader := c.elect(1)
	require.Nil(t, c.do(func(done func(Outcome)) { leader.RegisterBroker(registerReq(1), done) }).Err)
	for i := range 12 {
		require.Nil(t, c.do(func(done func(Outcome)) { leader.CreateTopic(createTopicReq(fmt.Sprintf("t%d", i), 1, 1), done) }).Err)
	}
	first, err := c.nodes[1].store.FirstIndex()
	require.NoError(t, err)
	require.Greater(t, first, uint64(1), "the log is compacted: a joiner needs a snapshot")

	var snapshots []*sentSnapshot
	c.onSend = func(from *Node, m *raftpb.Message) {
		if m.GetType() == raftpb.MsgSnap && m.GetTo() == 4 {
			snapshots = append(snapshots, &sentSnapshot{index: m.GetSnapshot().GetMetadata().GetIndex(),
				namesIt: slices.Contains(m.GetSnapshot().GetMetadata().GetConfState().GetLearners(), 4)})
		}
	}
	c.holdWork = true
	addLearnerWhileHeld(t, c, leader, 4)
	assert.Empty(t, snapshots, "a snapshot the joiner refuses was sent")
	c.holdWork = false
	c.releaseWork()
	c.tick(20)
	require.NotEmpty(t, snapshots)
	for _, s := range snapshots {
		assert.True(t, s.namesIt, "the snapshot at %d does not name the joiner", s.index)
	}
	c.requireConverged()
}

// sentSnapshot is a snapshot sent to the joiner.
type sentSnapshot struct {
	index   uint64
	namesIt bool
}

// TestSnapshotsFollowWhatEntriesMake: entries count towards the next
// snapshot by the partitions they make, not only by their bytes. A
// CreateTopic record of a hundred bytes makes thousands of partitions: by
// bytes alone, a follower never snapshotted again and replayed every such
// entry at restart.
func TestSnapshotsFollowWhatEntriesMake(t *testing.T) {
	c := newCluster(t, 3, func(cfg *Config) { cfg.MaxLogEntries = 10; cfg.LogTailEntries = 2 })
	leader := c.elect(1)
	require.Nil(t, c.do(func(done func(Outcome)) { leader.RegisterBroker(registerReq(1), done) }).Err)
	require.Nil(t, c.do(func(done func(Outcome)) { leader.CreateTopic(createTopicReq("first", 2000, 1), done) }).Err)
	for range 12 {
		require.Nil(t, c.do(func(done func(Outcome)) { leader.RegisterBroker(registerReq(1), done) }).Err)
	}
	c.tick(2)
	follower := c.nodes[2]
	first := follower.snapshotIndex
	require.NotZero(t, first, "the follower snapshotted the first topic")
	for i := range 20 {
		require.Nil(t, c.do(func(done func(Outcome)) {
			leader.CreateTopic(createTopicReq(fmt.Sprintf("big-%d", i), 2000, 1), done)
		}).Err)
	}
	c.tick(2)
	assert.Greater(t, follower.snapshotIndex, first, "20 topics of 2,000 partitions, in records of a hundred-odd bytes, made no snapshot")
	assert.Less(t, follower.StateMachine().AppliedIndex()-follower.snapshotIndex, uint64(20), "a restart would replay most of them")
}

// TestJoinerAddedWhileASnapshotIsUnderWay: a member added while a
// routine snapshot is under way (its own waits for that one) is not sent
// the stored snapshot, which does not name it, nor the routine one.
func TestJoinerAddedWhileASnapshotIsUnderWay(t *testing.T) {
	c := newCluster(t, 3, func(cfg *Config) { cfg.MaxLogEntries = 5; cfg.LogTailEntries = 1 })
	leader := c.elect(1)
	require.Nil(t, c.do(func(done func(Outcome)) { leader.RegisterBroker(registerReq(1), done) }).Err)
	for i := range 12 {
		require.Nil(t, c.do(func(done func(Outcome)) { leader.CreateTopic(createTopicReq(fmt.Sprintf("t%d", i), 1, 1), done) }).Err)
	}
	var refused []uint64
	c.onSend = func(from *Node, m *raftpb.Message) {
		if m.GetType() == raftpb.MsgSnap && m.GetTo() == 4 && !slices.Contains(m.GetSnapshot().GetMetadata().GetConfState().GetLearners(), 4) {
			refused = append(refused, m.GetSnapshot().GetMetadata().GetIndex())
		}
	}
	c.holdWork = true
	leader.TakeSnapshot(func(_ uint64, _ int, err error) { require.NoError(t, err) })
	require.True(t, leader.snapshotting, "a routine snapshot is under way")
	addLearnerWhileHeld(t, c, leader, 4)
	assert.Empty(t, refused, "snapshots the joiner refuses were sent")
	c.holdWork = false
	c.releaseWork()
	c.tick(30)
	assert.Empty(t, refused, "snapshots the joiner refuses were sent")
	c.requireConverged()
}

// addLearnerWhileHeld adds an empty learner through leader while the
// nodes' work may be held (changeMembership's loop would wait for it).
func addLearnerWhileHeld(t *testing.T, c *cluster, leader *Node, id uint64) {
	t.Helper()
	c.addEmpty(id)
	added := false
	leader.ChangeMembership(MembershipChange{Kind: AddLearner, NodeID: id, URL: peerURL(id), DirectoryID: c.directory(id)}, func(err error) { require.NoError(t, err); added = true })
	for range 20 {
		c.process()
		c.tick(1)
	}
	require.True(t, added, "the learner was not added")
}

// TestSnapshotCallerAskingAgainIsAnswered: a TakeSnapshot caller whose
// answer asks for another snapshot (a backup tool taking two in a row) is
// answered too, by the snapshot that second call starts.
func TestSnapshotCallerAskingAgainIsAnswered(t *testing.T) {
	c := newCluster(t, 3, nil)
	leader := c.elect(1)
	require.Nil(t, c.do(func(done func(Outcome)) { leader.RegisterBroker(registerReq(1), done) }).Err)
	c.holdWork = true
	var first, second []uint64
	leader.TakeSnapshot(func(index uint64, _ int, err error) {
		require.NoError(t, err)
		first = append(first, index)
		leader.TakeSnapshot(func(index uint64, _ int, err error) { require.NoError(t, err); second = append(second, index) })
	})
	require.Nil(t, c.do(func(done func(Outcome)) { leader.CreateTopic(createTopicReq("after", 1, 1), done) }).Err)
	askedAfter := leader.StateMachine().AppliedIndex()
	c.holdWork = false
	c.releaseWork()
	require.Len(t, first, 1)
	require.Len(t, second, 1, "the second call was never answered")
	assert.GreaterOrEqual(t, second[0], askedAfter)
}
