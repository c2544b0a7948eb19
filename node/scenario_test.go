package node

import (
	"fmt"
	"slices"
	"testing"
	"time"

	metadatav1 "github.com/dmq-project/metadata/gen/dmq/metadata/v1"
	"github.com/dmq-project/metadata/seedwire"
	"github.com/dmq-project/metadata/statemachine"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.etcd.io/raft/v3/raftpb"
)

func TestFirstElection(t *testing.T) {
	c := newCluster(t, 3, nil)
	leader := c.waitLeader(100)
	c.tick(2)
	for _, id := range c.ids() {
		assert.Equal(t, leader.ID(), c.nodes[id].Leader(), "node %d's view of the leader", id)
		assert.Equal(t, leader.Term(), c.nodes[id].Term())
	}
	assert.Equal(t, []uint64{1, 2, 3}, voters(leader))
	// The new controller marks its epoch in the metadata log.
	c.requireConverged()
	assert.Greater(t, leader.StateMachine().Version(), int64(1))
}

func TestReplicationAndCommit(t *testing.T) {
	c := newCluster(t, 3, nil)
	leader := c.elect(1)
	out := c.do(func(done func(Outcome)) { leader.RegisterBroker(registerReq(1), done) })
	require.Nil(t, out.Err)
	appliedAtAck := false
	out = c.do(func(done func(Outcome)) {
		leader.CreateTopic(createTopicReq("orders", 3, 1), func(o Outcome) {
			appliedAtAck = leader.StateMachine().Topic("orders") != nil
			done(o)
		})
	})
	require.Nil(t, out.Err)
	assert.NotEmpty(t, out.TopicID)
	assert.True(t, appliedAtAck, "a write is acknowledged only once applied on the leader")
	c.tick(2)
	c.requireConverged()
	for _, id := range c.ids() {
		topic := c.nodes[id].StateMachine().Topic("orders")
		require.NotNil(t, topic, "node %d", id)
		assert.Len(t, topic.Partitions, 3)
	}
}

func TestLeaderCrashAndReelection(t *testing.T) {
	c := newCluster(t, 3, nil)
	leader := c.elect(1)
	out := c.do(func(done func(Outcome)) { leader.RegisterBroker(registerReq(1), done) })
	require.Nil(t, out.Err)
	c.crash(1)
	next := c.waitLeader(200)
	assert.NotEqual(t, uint64(1), next.ID())
	assert.NotNil(t, next.StateMachine().Broker(1), "an acknowledged write survives the leader's crash")
	out = c.do(func(done func(Outcome)) { next.CreateTopic(createTopicReq("after", 1, 1), done) })
	require.Nil(t, out.Err)

	c.restart(1)
	c.tick(30)
	c.requireConverged()
	assert.NotNil(t, c.nodes[1].StateMachine().Topic("after"), "the restarted node catches up")
}

// The leader's appends leave before its own write (its fsync runs in
// parallel with the followers'), while an acknowledgement or a vote leaves
// only once what it announces is on the sender's disk.
func TestOnlyTheLeadersAppendsLeaveBeforeItsWrite(t *testing.T) {
	c := newCluster(t, 3, nil)
	appendsAhead, acks, votes := 0, 0, 0
	c.onSend = func(from *Node, m *raftpb.Message) {
		stored, err := from.store.LastIndex()
		require.NoError(t, err)
		hs, _, err := from.store.InitialState()
		require.NoError(t, err)
		switch m.GetType() {
		case raftpb.MsgApp:
			if n := len(m.GetEntries()); n > 0 && m.GetEntries()[n-1].GetIndex() > stored {
				appendsAhead++
			}
		case raftpb.MsgAppResp:
			if !m.GetReject() {
				acks++
				require.LessOrEqual(t, m.GetIndex(), stored, "controller %d acknowledged index %d with %d on disk", from.ID(), m.GetIndex(), stored)
			}
		case raftpb.MsgVoteResp:
			if !m.GetReject() {
				votes++
				require.Equal(t, m.GetTo(), hs.GetVote(), "controller %d granted a vote it had not stored", from.ID())
				require.Equal(t, m.GetTerm(), hs.GetTerm(), "controller %d voted in a term it had not stored", from.ID())
			}
		}
	}
	leader := c.elect(1)
	for seq := uint64(1); seq <= 5; seq++ {
		out := c.do(func(done func(Outcome)) { leader.RegisterBroker(registerReq(int32(seq)), done) })
		require.Nil(t, out.Err)
	}
	assert.Positive(t, votes)
	assert.GreaterOrEqual(t, acks, 10, "both followers acknowledge every write")
	assert.GreaterOrEqual(t, appendsAhead, 5, "every write's append leaves the leader before its own fsync")
}

// A leader whose fsync fails after its appends left has acknowledged
// nothing: the followers may still commit the entry in a later term (it
// was never promised), and the leader, restarted with a shorter log,
// catches up.
func TestLeaderFsyncFailsAfterItsAppendsLeft(t *testing.T) {
	c := newCluster(t, 3, nil)
	leader := c.elect(1)
	out := c.do(func(done func(Outcome)) { leader.RegisterBroker(registerReq(1), done) })
	require.Nil(t, out.Err)

	acknowledged := false
	leader.CreateTopic(createTopicReq("unsynced", 1, 1), func(o Outcome) { acknowledged = true })
	c.disks[1].FailSyncs = 1
	require.Error(t, leader.HandleReady(), "the leader's fsync fails")
	require.NotEmpty(t, c.queue, "the append left before the fsync")
	c.crash(1)

	next := c.waitLeader(200)
	require.NotEqual(t, uint64(1), next.ID())
	assert.False(t, acknowledged, "a write whose leader never persisted it is not acknowledged")
	assert.NotNil(t, next.StateMachine().Topic("unsynced"),
		"both followers stored the entry, so the next leader commits it (never promised, but not lost either)")

	c.restart(1)
	c.tick(30)
	c.requireConverged()
	assert.NotNil(t, c.nodes[1].StateMachine().Topic("unsynced"), "the restarted leader catches up past its lost tail")
}

func TestFollowerCatchUpBySnapshot(t *testing.T) {
	c := newCluster(t, 3, func(cfg *Config) { cfg.MaxLogEntries = 10; cfg.LogTailEntries = 2 })
	leader := c.elect(1)
	c.isolate(3)
	for i := 0; i < 40; i++ {
		out := c.do(func(done func(Outcome)) {
			leader.RegisterBroker(registerReq(int32(i+1)), done)
		})
		require.Nil(t, out.Err)
	}
	first, err := leader.store.FirstIndex()
	require.NoError(t, err)
	require.Greater(t, first, c.nodes[3].StateMachine().AppliedIndex()+1, "the leader compacted past the follower")
	c.heal()
	c.tick(20)
	c.requireConverged()
	assert.Len(t, c.nodes[3].StateMachine().Brokers(), 40)
	assert.Positive(t, c.nodes[3].snapshotIndex, "the follower caught up from a snapshot")

	// And it restarts from that snapshot plus its log.
	c.crash(3)
	c.restart(3)
	c.tick(5)
	c.requireConverged()
}

// TestSnapshotsScaleWithTheState: once the state is large, a snapshot waits
// for writes adding up to its size (the default SnapshotLogRatio), not just
// MaxLogEntries entries, so that writes do not re-encode a large state
// every few entries.
func TestSnapshotsScaleWithTheState(t *testing.T) {
	c := newCluster(t, 1, func(cfg *Config) { cfg.MaxLogEntries = 10; cfg.LogTailEntries = 2 })
	leader := c.elect(1)
	out := c.do(func(done func(Outcome)) { leader.RegisterBroker(registerReq(1), done) })
	require.Nil(t, out.Err)
	for i := 0; i < 5; i++ {
		out := c.do(func(done func(Outcome)) {
			leader.CreateTopic(createTopicReq(fmt.Sprintf("big-%d", i), 1000, 1), done)
		})
		require.Nil(t, out.Err)
	}
	_, snapshotBytes, err := takeSnapshot(t, leader)
	require.NoError(t, err)
	require.Greater(t, snapshotBytes, 20_000, "5,000 partitions make a large state")
	start := leader.snapshotIndex

	// Small writes: each a registration of a hundred-odd bytes.
	entries := 0
	for id := int32(2); leader.snapshotIndex == start; id++ {
		out := c.do(func(done func(Outcome)) { leader.RegisterBroker(registerReq(id), done) })
		require.Nil(t, out.Err)
		entries++
		require.Less(t, entries, 2_000, "no snapshot at all")
	}
	t.Logf("snapshot of %d bytes, next after %d registrations", snapshotBytes, entries)
	// A registration logs about 50 bytes: the snapshot's size in writes is
	// about 700 of them (a quarter of it, 180; MaxLogEntries alone, 10).
	assert.Greater(t, entries, 500, "the next snapshot waits for writes adding up to the last one's size")
}

func TestAddAndRemoveVoter(t *testing.T) {
	c := newCluster(t, 3, nil)
	leader := c.elect(1)
	c.addEmpty(4)
	var err error = errPending
	leader.ChangeMembership(MembershipChange{Kind: AddVoter, NodeID: 4, URL: peerURL(4), DirectoryID: c.directory(4)}, func(e error) { err = e })
	c.tick(20)
	require.NoError(t, err)
	assert.Equal(t, []uint64{1, 2, 3, 4}, voters(leader))
	assert.Equal(t, peerURL(4), leader.PeerURL(4))
	c.requireConverged()
	assert.Equal(t, []uint64{1, 2, 3, 4}, voters(c.nodes[4]), "the new voter learned the membership")

	// One change at a time.
	err = errPending
	leader.ChangeMembership(MembershipChange{Kind: RemoveVoter, NodeID: 2}, func(e error) { err = e })
	var second error = errPending
	leader.ChangeMembership(MembershipChange{Kind: RemoveVoter, NodeID: 3}, func(e error) { second = e })
	require.Error(t, second)
	c.tick(20)
	require.NoError(t, err)
	assert.Equal(t, []uint64{1, 3, 4}, voters(leader))
	var last error = errPending
	leader.ChangeMembership(MembershipChange{Kind: RemoveVoter, NodeID: 9}, func(e error) { last = e })
	require.Error(t, last, "removing a non-member is refused")
	last = errPending
	leader.ChangeMembership(MembershipChange{Kind: AddVoter, NodeID: 2, URL: peerURL(2), DirectoryID: 2}, func(e error) { last = e })
	require.ErrorContains(t, last, "never reused", "a removed id may still have messages in flight")

	// A learner is added, then promoted.
	c.addEmpty(5)
	err = errPending
	leader.ChangeMembership(MembershipChange{Kind: AddLearner, NodeID: 5, URL: peerURL(5), DirectoryID: c.directory(5)}, func(e error) { err = e })
	c.tick(20)
	require.NoError(t, err)
	assert.Contains(t, leader.confState.GetLearners(), uint64(5))
	err = errPending
	leader.ChangeMembership(MembershipChange{Kind: PromoteLearner, NodeID: 5}, func(e error) { err = e })
	c.tick(20)
	require.NoError(t, err)
	assert.Equal(t, []uint64{1, 3, 4, 5}, voters(leader))
}

var errPending = &statemachine.Error{Code: metadatav1.ErrorCode_UNAVAILABLE, Message: "still pending"}

func TestLeaderTransfer(t *testing.T) {
	c := newCluster(t, 3, nil)
	leader := c.elect(1)
	var err error = errPending
	leader.TransferLeader(3, func(e error) { err = e })
	c.tick(20)
	require.NoError(t, err)
	assert.Equal(t, uint64(3), c.leader())
	assert.True(t, c.nodes[3].IsActive())

	err = errPending
	c.nodes[3].TransferLeader(9, func(e error) { err = e })
	require.Error(t, err, "only voters can lead")
	err = errPending
	c.nodes[2].TransferLeader(1, func(e error) { err = e })
	require.Error(t, err, "only the leader transfers")
}

func TestReadIndexOnLeaderAndFollower(t *testing.T) {
	c := newCluster(t, 3, nil)
	leader := c.elect(1)
	out := c.do(func(done func(Outcome)) { leader.RegisterBroker(registerReq(7), done) })
	require.Nil(t, out.Err)
	for _, id := range []uint64{1, 2} {
		var seen *metadatav1.Broker
		require.Nil(t, c.read(c.nodes[id], func(sm *statemachine.StateMachine) { seen = sm.Broker(7) }), "read on %d", id)
		require.NotNil(t, seen, "a linearizable read on %d sees the acknowledged write", id)
	}

	// A leader cut off from the quorum cannot confirm reads: they fail
	// rather than serve possibly stale state.
	c.isolate(1)
	var served, failed bool
	leader.Read(func(_ *statemachine.StateMachine, err *statemachine.Error) {
		served, failed = err == nil, err != nil
	})
	c.tick(40)
	assert.False(t, served, "an isolated leader served a read it could not confirm")
	assert.True(t, failed, "the read must complete with an error, not hang")
}

// Reads that arrive between two Readies share one ReadIndex: one
// heartbeat round confirms them all, and a read that arrives while a round
// is in flight waits for the next one (a round that began before it cannot
// vouch for it).
func TestReadsShareAHeartbeatRound(t *testing.T) {
	c := newCluster(t, 3, nil)
	leader := c.elect(1)
	rounds := 0
	c.onSend = func(from *Node, m *raftpb.Message) {
		if from.ID() == 1 && m.GetType() == raftpb.MsgHeartbeat && len(m.GetContext()) > 0 && m.GetTo() == 2 {
			rounds++
		}
	}
	served := 0
	read := func() {
		leader.Read(func(_ *statemachine.StateMachine, err *statemachine.Error) {
			require.Nil(t, err)
			served++
		})
	}
	for i := 0; i < 5; i++ {
		read()
	}
	c.process()
	require.Equal(t, 5, served)
	assert.Equal(t, 1, rounds, "five reads, one round")

	read()
	require.NoError(t, leader.HandleReady())
	require.Equal(t, 2, rounds)
	read()
	c.process()
	assert.Equal(t, 7, served)
	assert.Equal(t, 3, rounds, "the read that arrived during a round had one of its own")
}

func TestProposalOnFollower(t *testing.T) {
	c := newCluster(t, 3, nil)
	c.elect(2)
	out := c.do(func(done func(Outcome)) { c.nodes[1].RegisterBroker(registerReq(1), done) })
	require.NotNil(t, out.Err)
	assert.Equal(t, metadatav1.ErrorCode_NOT_CONTROLLER, out.Err.Code)
	assert.Equal(t, uint64(2), out.LeaderID)
	assert.Contains(t, out.Err.Message, "controller 2")
	_, herr := c.nodes[1].Heartbeat(&metadatav1.StorageHeartbeatRequest{ServiceId: "1"})
	require.NotNil(t, herr)
	assert.Equal(t, metadatav1.ErrorCode_NOT_CONTROLLER, herr.Code)
}

func TestRetryAfterLeaderChangeAppliesOnce(t *testing.T) {
	c := newCluster(t, 3, nil)
	leader := c.elect(1)
	require.Nil(t, c.do(func(done func(Outcome)) { leader.RegisterBroker(registerReq(1), done) }).Err)

	// The proposal reaches the followers' logs, but the leader is cut off
	// before it learns the commit: the client sees an unknown outcome.
	req := createTopicReq("once", 1, 1)
	req.RequestId = &metadatav1.RequestId{SessionId: c.openSession(leader), Sequence: 1}
	var first *Outcome
	leader.CreateTopic(req, func(o Outcome) { first = &o })
	for _, id := range c.ids() {
		for c.nodes[id].HasReady() {
			require.NoError(t, c.nodes[id].HandleReady())
		}
	}
	// Deliver the append to the followers only, then cut the leader off.
	queue := c.queue
	c.queue = nil
	for _, m := range queue {
		if m.GetFrom() == 1 {
			require.NoError(t, c.nodes[m.GetTo()].Step(m))
		}
	}
	c.isolate(1)
	c.process()
	c.tick(40)
	require.NotNil(t, first)
	require.NotNil(t, first.Err)
	assert.Equal(t, metadatav1.ErrorCode_UNKNOWN_OUTCOME, first.Err.Code)

	next := c.waitNewLeader(1, 100)
	retry := c.do(func(done func(Outcome)) { next.CreateTopic(req, done) })
	require.Nil(t, retry.Err)
	assert.True(t, retry.Duplicate, "the first attempt committed under the new leader; the retry returns its result")
	c.heal()
	c.tick(20)
	c.requireConverged()
	assert.Len(t, next.StateMachine().Topics(), 1)
}

func heartbeat(t *testing.T, n *Node, id string, version int64) *metadatav1.StorageHeartbeatResponse {
	t.Helper()
	resp, err := n.Heartbeat(&metadatav1.StorageHeartbeatRequest{ServiceId: id, MetadataVersion: version})
	require.Nil(t, err)
	return resp
}

func TestSessionTimeline(t *testing.T) {
	c := newCluster(t, 3, nil) // session timeout 3 s = 30 ticks
	leader := c.elect(1)
	for id := int32(1); id <= 3; id++ {
		require.Nil(t, c.do(func(done func(Outcome)) { leader.RegisterBroker(registerReq(id), done) }).Err)
	}
	require.Nil(t, c.do(func(done func(Outcome)) { leader.CreateTopic(createTopicReq("t", 6, 2), done) }).Err)
	led := func(broker int32) int {
		count := 0
		for _, p := range leader.StateMachine().Topic("t").Partitions {
			if p.Leader == broker {
				count++
			}
		}
		return count
	}
	require.Positive(t, led(3))

	// Brokers 1 and 2 heartbeat; broker 3 falls silent.
	for i := 0; i < 50; i++ {
		v := leader.StateMachine().Version()
		heartbeat(t, leader, "1", v)
		heartbeat(t, leader, "storage-2", v)
		c.tick(1)
	}
	b3 := leader.StateMachine().Broker(3)
	assert.True(t, b3.Fenced, "silent past the session timeout: fenced")
	assert.False(t, leader.StateMachine().Broker(1).Fenced)
	assert.Zero(t, led(3), "the fenced broker's partitions moved")

	// Broker 3 returns with old metadata: still fenced, and a push goes out.
	resp := heartbeat(t, leader, "storage-3", 2)
	assert.True(t, resp.Fenced)
	assert.True(t, resp.PushScheduled)
	c.tick(1)
	assert.True(t, leader.StateMachine().Broker(3).Fenced, "not unfenced before it catches up")
	// Caught up: unfenced.
	heartbeat(t, leader, "storage-3", leader.StateMachine().Version())
	c.tick(2)
	assert.False(t, leader.StateMachine().Broker(3).Fenced)
	assert.True(t, leader.StateMachine().Broker(3).IsAlive)

	// Heartbeats from unknown or stale services change nothing.
	resp = heartbeat(t, leader, "storage-42", 0)
	assert.False(t, resp.Registered)
	assert.Equal(t, metadatav1.ErrorCode_BROKER_NOT_REGISTERED, resp.GetErrorCode())
	_, err := leader.Heartbeat(&metadatav1.StorageHeartbeatRequest{ServiceId: "3", BrokerEpoch: 1})
	require.NotNil(t, err)
	assert.Equal(t, metadatav1.ErrorCode_STALE_BROKER_EPOCH, err.Code)
	_, err = leader.Heartbeat(&metadatav1.StorageHeartbeatRequest{ServiceId: "broker-x"})
	require.NotNil(t, err)
	assert.Equal(t, metadatav1.ErrorCode_INVALID_REQUEST, err.Code)

	// isAlive=false asks for a controlled shutdown.
	_, err = leader.Heartbeat(&metadatav1.StorageHeartbeatRequest{ServiceId: "1", MetadataVersion: leader.StateMachine().Version(), IsAlive: new(false)})
	require.Nil(t, err)
	c.tick(1)
	assert.True(t, leader.StateMachine().Broker(1).InControlledShutdown)
	for _, p := range leader.StateMachine().Topic("t").Partitions {
		if p.Leader == 1 {
			assert.Equal(t, []int32{1}, p.Isr, "broker 1 keeps only partitions no one else can take")
		}
	}
}

// TestTicksFinerThanHeartbeats: with ten ticks per heartbeat (as dmqd
// runs), sessions still expire on time, checked once per heartbeat, and a
// new leader is elected after the old one dies.
func TestTicksFinerThanHeartbeats(t *testing.T) {
	c := newCluster(t, 3, func(cfg *Config) {
		cfg.ElectionTicks, cfg.HeartbeatTicks, cfg.RequestTimeoutTicks = 100, 10, 300
	})
	c.tickDuration = 10 * time.Millisecond
	leader := c.elect(1)
	for id := int32(1); id <= 2; id++ {
		require.Nil(t, c.do(func(done func(Outcome)) { leader.RegisterBroker(registerReq(id), done) }).Err)
	}
	silentSince := c.now
	for leader.StateMachine().Broker(2).IsAlive {
		heartbeat(t, leader, "1", leader.StateMachine().Version())
		c.tick(1)
		require.Less(t, c.now.Sub(silentSince), 10*time.Second, "the silent broker was never fenced")
	}
	fencedAfter := c.now.Sub(silentSince)
	assert.GreaterOrEqual(t, fencedAfter, 3*time.Second, "not before the session timeout")
	assert.Less(t, fencedAfter, 3*time.Second+500*time.Millisecond, "within a few heartbeats of it")
	assert.True(t, leader.StateMachine().Broker(1).IsAlive)

	c.crash(1)
	next := c.waitLeader(1000)
	require.NotEqual(t, uint64(1), next.cfg.ID)
	require.Nil(t, c.do(func(done func(Outcome)) { next.CreateTopic(createTopicReq("after", 1, 1), done) }).Err)
}

func TestFailoverGrace(t *testing.T) {
	c := newCluster(t, 3, nil)
	leader := c.elect(1)
	for id := int32(1); id <= 2; id++ {
		require.Nil(t, c.do(func(done func(Outcome)) { leader.RegisterBroker(registerReq(id), done) }).Err)
	}
	// 2.5 s of heartbeats from broker 1 only.
	for i := 0; i < 25; i++ {
		heartbeat(t, leader, "1", leader.StateMachine().Version())
		c.tick(1)
	}
	// Broker 2 has been silent 2.5 s of its 3 s when the leader dies. The
	// election takes a while; the new leader must not count it against 2.
	c.crash(1)
	next := c.waitLeader(200)
	for i := 0; i < 20; i++ {
		heartbeat(t, next, "1", next.StateMachine().Version())
		heartbeat(t, next, "2", next.StateMachine().Version())
		c.tick(1)
	}
	assert.False(t, next.StateMachine().Broker(2).Fenced, "no broker is fenced for the silence of a failover")
	// But silence under the new leader still fences.
	for i := 0; i < 40; i++ {
		heartbeat(t, next, "1", next.StateMachine().Version())
		c.tick(1)
	}
	assert.True(t, next.StateMachine().Broker(2).Fenced)
}

func TestPushDeltaVersusFull(t *testing.T) {
	c := newCluster(t, 3, nil)
	leader := c.elect(1)
	c.pushes = nil
	require.Nil(t, c.do(func(done func(Outcome)) { leader.RegisterBroker(registerReq(1), done) }).Err)

	// A service that never reported a version gets the full state.
	pushes := c.pushesTo(1)
	require.Len(t, pushes, 1)
	first := pushes[0].request
	assert.NotNil(t, first.GetFullState(), "nothing known of the receiver: full state")
	assert.Equal(t, leader.Term(), first.GetControllerEpoch())
	assert.Equal(t, leader.StateMachine().Version(), first.GetMetadataVersion())
	assert.Equal(t, leader.ID(), first.GetControllerId())
	resp := heartbeat(t, leader, "1", 0)
	assert.True(t, resp.PushScheduled, "it lags")
	assert.Len(t, c.pushesTo(1), 1, "one push in flight per target")
	leader.OnPushResult(1, first.GetMetadataVersion(), &metadatav1.PushMetadataResponse{Accepted: true, MetadataVersion: first.GetMetadataVersion()}, nil)

	assert.Zero(t, leader.Status().PushLagMax, "the service acknowledged the current version")

	// A change is pushed as a delta from the acknowledged version.
	c.pushes = nil
	require.Nil(t, c.do(func(done func(Outcome)) { leader.CreateTopic(createTopicReq("t", 2, 1), done) }).Err)
	pushes = c.pushesTo(1)
	require.Len(t, pushes, 1)
	delta := pushes[0].request.GetDelta()
	require.NotNil(t, delta, "a receiver within the history gets a delta")
	assert.Equal(t, first.GetMetadataVersion(), delta.GetFromVersion())
	require.Len(t, delta.GetUpsertedTopics(), 1)
	assert.Equal(t, "t", delta.GetUpsertedTopics()[0].GetName())

	// A newer change waits for the push in flight, then goes coalesced.
	version := pushes[0].request.GetMetadataVersion()
	c.pushes = nil
	require.Nil(t, c.do(func(done func(Outcome)) { leader.CreateTopic(createTopicReq("u", 1, 1), done) }).Err)
	require.Nil(t, c.do(func(done func(Outcome)) { leader.CreateTopic(createTopicReq("v", 1, 1), done) }).Err)
	assert.Empty(t, c.pushesTo(1), "a push is in flight: the next waits")
	assert.Positive(t, leader.Status().PushLagMax, "the service lags until the push lands")
	leader.OnPushResult(1, version, &metadatav1.PushMetadataResponse{Accepted: true, MetadataVersion: version}, nil)
	pushes = c.pushesTo(1)
	require.Len(t, pushes, 1, "the result releases one coalesced push")
	assert.Equal(t, leader.StateMachine().Version(), pushes[0].request.GetMetadataVersion())
	assert.Len(t, pushes[0].request.GetDelta().GetUpsertedTopics(), 2)

	// A delivery error is retried after a backoff, not at once.
	c.pushes = nil
	leader.OnPushResult(1, pushes[0].request.GetMetadataVersion(), nil, assert.AnError)
	assert.Empty(t, c.pushesTo(1))
	c.tick(10)
	retried := c.pushesTo(1)
	require.Len(t, retried, 1, "retried after the backoff")
	leader.OnPushResult(1, retried[0].request.GetMetadataVersion(),
		&metadatav1.PushMetadataResponse{Accepted: true, MetadataVersion: retried[0].request.GetMetadataVersion()}, nil)

	// A receiver ahead of the controller (divergent) gets the full state.
	c.pushes = nil
	resp = heartbeat(t, leader, "1", leader.StateMachine().Version()+100)
	require.True(t, resp.PushScheduled)
	pushes = c.pushesTo(1)
	require.Len(t, pushes, 1)
	assert.NotNil(t, pushes[0].request.GetFullState())
}

func TestStalePushEpoch(t *testing.T) {
	c := newCluster(t, 3, nil)
	leader := c.elect(1)
	require.Nil(t, c.do(func(done func(Outcome)) { leader.RegisterBroker(registerReq(1), done) }).Err)
	heartbeat(t, leader, "1", 0)
	old := c.pushesTo(1)
	require.NotEmpty(t, old)
	oldEpoch := old[len(old)-1].request.GetControllerEpoch()

	c.isolate(1)
	next := c.waitNewLeader(1, 200)
	c.pushes = nil
	heartbeat(t, next, "1", 0)
	fresh := c.pushesTo(1)
	require.NotEmpty(t, fresh)
	assert.Greater(t, fresh[0].request.GetControllerEpoch(), oldEpoch, "a new controller pushes with a higher epoch")

	// The receiver's rejection of a stale-epoch push sends the deposed
	// leader to a backoff, not into a loop.
	c.pushes = nil
	leader.OnPushResult(1, old[len(old)-1].request.GetMetadataVersion(),
		&metadatav1.PushMetadataResponse{Accepted: false, MetadataVersion: 5, Reason: "stale controller epoch"}, nil)
	assert.Empty(t, c.pushesTo(1))
}

func TestPreferredLeaderRebalancing(t *testing.T) {
	c := newCluster(t, 3, func(cfg *Config) { cfg.RebalanceInterval = 2 * time.Second; cfg.RebalanceElectionsMax = 1 })
	leader := c.elect(1)
	for id := int32(1); id <= 2; id++ {
		require.Nil(t, c.do(func(done func(Outcome)) { leader.RegisterBroker(registerReq(id), done) }).Err)
	}
	require.Nil(t, c.do(func(done func(Outcome)) { leader.CreateTopic(createTopicReq("t", 4, 2), done) }).Err)
	beat := func(k int) {
		for i := 0; i < k; i++ {
			heartbeat(t, leader, "1", leader.StateMachine().Version())
			heartbeat(t, leader, "2", leader.StateMachine().Version())
			c.tick(1)
		}
	}
	// Broker 1 is fenced and comes back: its partitions moved to 2.
	require.Nil(t, c.do(func(done func(Outcome)) {
		leader.propose(&metadatav1.Record{Body: &metadatav1.Record_FenceBroker{FenceBroker: &metadatav1.FenceBrokerRecord{BrokerId: 1}}}, done)
	}).Err)
	beat(3)
	require.False(t, leader.StateMachine().Broker(1).Fenced)
	// The leaders put broker 1 back into their ISRs.
	for _, p := range leader.StateMachine().Topic("t").Partitions {
		if slices.Contains(p.Isr, 1) {
			continue
		}
		epoch, _ := leader.StateMachine().BrokerEpoch(p.Leader)
		require.Nil(t, c.do(func(done func(Outcome)) {
			leader.AlterPartition(&metadatav1.AlterPartitionRequest{BrokerId: p.Leader, BrokerEpoch: epoch, Topic: "t",
				Partition: p.Partition, LeaderEpoch: p.LeaderEpoch, PartitionEpoch: p.PartitionEpoch, NewIsr: []int32{p.Leader, 1}}, done)
		}).Err)
	}
	imbalanced := func() int {
		n := 0
		for _, tp := range leader.StateMachine().ImbalancedPartitions(100) {
			n += len(tp.Partitions)
		}
		return n
	}
	before := imbalanced()
	require.Equal(t, 2, before, "two partitions prefer broker 1")
	beat(25)
	assert.Equal(t, before-1, imbalanced(), "one pass moves at most RebalanceElectionsMax partitions")
	beat(25)
	assert.Zero(t, imbalanced())
}

// TestStrictReconfiguration: a voter change that would leave the new
// configuration without a quorum of active voters is refused.
func TestStrictReconfiguration(t *testing.T) {
	c := newCluster(t, 3, nil)
	leader := c.elect(1)
	c.crash(3)
	c.tick(25) // longer than an election timeout: 3 is no longer recently active
	var err error = errPending
	leader.ChangeMembership(MembershipChange{Kind: RemoveVoter, NodeID: 2}, func(e error) { err = e })
	require.ErrorContains(t, err, "below a quorum", "removing a healthy voter while another is down stops the cluster")
	err = errPending
	c.addEmpty(4)
	leader.ChangeMembership(MembershipChange{Kind: AddVoter, NodeID: 4, URL: peerURL(4), DirectoryID: c.directory(4)}, func(e error) { err = e })
	for i := 0; i < 30 && err == errPending; i++ {
		c.tick(1)
	}
	require.NoError(t, err, "a fourth voter that has caught up makes three of four active")
	err = errPending
	leader.ChangeMembership(MembershipChange{Kind: RemoveVoter, NodeID: 3}, func(e error) { err = e })
	c.tick(20)
	require.NoError(t, err, "removing the voter that is down is how to recover")
	assert.Equal(t, []uint64{1, 2, 4}, voters(leader))
}

// justAfterTheQuorumCheck is a 3-controller cluster whose leader (1) has
// just cleared Raft's RecentActive of its followers, as CheckQuorum does
// at every election timeout, though they answer every heartbeat.
func justAfterTheQuorumCheck(t *testing.T) (*cluster, *Node) {
	c := newCluster(t, 3, nil)
	leader := c.elect(1)
	c.tick(3)
	forgotten := false
	for i := 0; i < 3*c.nodes[1].cfg.ElectionTicks && !forgotten; i++ {
		leader.Tick()
		forgotten = !leader.rn.Status().Progress[2].RecentActive
		if !forgotten {
			c.process()
		}
	}
	require.True(t, forgotten, "the leader clears RecentActive within an election timeout")
	return c, leader
}

// TestReconfigurationJustAfterTheQuorumCheck: with CheckQuorum, Raft's
// leader forgets which followers are recently active at every election
// timeout; a change proposed at that moment must still see the followers
// it heard from moments ago (seed 20562 retried the removal of a lost voter
// in step with that reset, and was refused for the rest of the run).
func TestReconfigurationJustAfterTheQuorumCheck(t *testing.T) {
	c, leader := justAfterTheQuorumCheck(t)
	var err error = errPending
	leader.ChangeMembership(MembershipChange{Kind: RemoveVoter, NodeID: 3}, func(e error) { err = e })
	c.tick(20)
	require.NoError(t, err, "2 answered within the last election timeout: {1, 2} keeps a quorum")
	assert.Equal(t, []uint64{1, 2}, voters(leader))
}

// The leader's view of who is active (DescribeQuorum, the console) holds
// through Raft's reset of RecentActive at each election timeout: a
// follower heard from moments ago is active.
func TestQuorumActivityHoldsThroughTheQuorumCheck(t *testing.T) {
	_, leader := justAfterTheQuorumCheck(t)
	for _, m := range leader.Status().Members {
		assert.True(t, m.RecentActive, "controller %d answered within the last election timeout", m.ID)
	}
}

// A lone voter campaigns as it starts: no one else votes, and waiting an
// election timeout kept `make run` answering "an election is in progress"
// for its first one or two seconds. Controllers with peers still wait.
func TestLoneControllerElectsItselfAtOnce(t *testing.T) {
	c := newCluster(t, 1, nil)
	c.process()
	assert.True(t, c.nodes[1].IsLeader(), "a lone controller waits for an election timeout")
	c.crash(1)
	c.restart(1)
	c.process()
	assert.True(t, c.nodes[1].IsLeader(), "a restarted lone controller waits for an election timeout")

	three := newCluster(t, 3, nil)
	three.process()
	assert.Zero(t, three.leader(), "a controller with peers campaigned before its election timeout")
}

// eventsOf lists node id's events of kind since index from, as "kind
// detail" strings.
func (c *cluster) eventsOf(id uint64, kind EventKind, from int) []Event {
	var out []Event
	for _, e := range c.events[from:] {
		if e.node == id && e.Kind == kind {
			out = append(out, e.Event)
		}
	}
	return out
}

// The node says what an operator should hear of, once per occurrence:
// leadership, fencing, peers lost and back, strangers, membership.
func TestEventsTellTheOperator(t *testing.T) {
	c := newCluster(t, 3, nil)
	leader := c.elect(1)
	require.NotEmpty(t, c.eventsOf(1, EventBecameActive, 0))
	changed := c.eventsOf(2, EventLeaderChanged, 0)
	require.NotEmpty(t, changed)
	assert.Equal(t, uint64(1), changed[len(changed)-1].Leader)

	// A broker that never heartbeats is fenced once its session expires.
	out := c.do(func(done func(Outcome)) { leader.RegisterBroker(registerReq(7), done) })
	require.Nil(t, out.Err)
	mark := len(c.events)
	c.tick(40)
	fenced := c.eventsOf(1, EventBrokerFenced, mark)
	require.Len(t, fenced, 1)
	assert.Equal(t, int32(7), fenced[0].Broker)

	// A peer reported unreachable is said once, and once when it is back.
	mark = len(c.events)
	leader.ReportUnreachable(3)
	leader.ReportUnreachable(3)
	assert.Len(t, c.eventsOf(1, EventPeerUnreachable, mark), 1)
	c.tick(2)
	back := c.eventsOf(1, EventPeerBack, mark)
	require.Len(t, back, 1)
	assert.Equal(t, uint64(3), back[0].Peer)

	// A full send queue is congestion, not loss: Raft probes, the operator
	// is not told the peer is gone (it flapped unreachable/back under load).
	mark = len(c.events)
	leader.ReportCongested(2)
	c.tick(2)
	assert.Empty(t, c.eventsOf(1, EventPeerUnreachable, mark))
	assert.Empty(t, c.eventsOf(1, EventPeerBack, mark))

	// A stranger's message.
	mark = len(c.events)
	_ = c.nodes[2].Step(&raftpb.Message{Type: raftpb.MsgHeartbeat.Enum(), From: new(uint64(99)), To: new(uint64(2)), Term: new(c.nodes[2].Term())})
	strangers := c.eventsOf(2, EventStrangerRefused, mark)
	require.Len(t, strangers, 1)
	assert.Equal(t, uint64(99), strangers[0].Peer)

	// Removing a controller: everyone hears of the change, it hears it
	// was removed.
	mark = len(c.events)
	require.NoError(t, changeMembership(c, leader, MembershipChange{Kind: RemoveVoter, NodeID: 3}))
	c.tick(3)
	removal := c.eventsOf(1, EventMembershipChanged, mark)
	require.Len(t, removal, 1)
	assert.Equal(t, "removed", removal[0].Detail)
	assert.Equal(t, uint64(3), removal[0].Peer)
	assert.Len(t, c.eventsOf(3, EventRemoved, mark), 1)

	// A restart replays the committed log: what was announced before is
	// not announced again (every restart repeated the cluster's history).
	// (A later write makes node 2 sync a HardState whose commit covers the
	// removal; a commit index alone is not synced, and what a crash takes
	// back is replayed and announced again.)
	out = c.do(func(done func(Outcome)) { leader.RegisterBroker(registerReq(8), done) })
	require.Nil(t, out.Err)
	c.tick(3)
	mark = len(c.events)
	c.crash(2)
	c.restart(2)
	c.tick(5)
	assert.Empty(t, c.eventsOf(2, EventMembershipChanged, mark))
}

// accepted answers a push as its receiver accepting it.
func accepted(n *Node, p pushCall) {
	n.OnPushResult(p.broker, p.version, &metadatav1.PushMetadataResponse{Accepted: true, MetadataVersion: p.version}, nil)
}

// A seed storage service reports no version and takes any push a deposed
// controller still had on the wire: back from a fence, it is unfenced only
// once it accepted a full state sent after its return, not on the deltas
// it accepted before (found by review: it was unfenced at once on them).
func TestSeedReceiverUnfencedOnAFullStateAfterItsReturn(t *testing.T) {
	c := newCluster(t, 3, nil) // session timeout 3 s = 30 ticks
	c.seedBrokers = map[int32]bool{1: true}
	leader := c.elect(1)
	require.Nil(t, c.do(func(done func(Outcome)) { leader.RegisterBroker(registerReq(1), done) }).Err)
	first := c.pushesTo(1)
	require.Len(t, first, 1)
	assert.Equal(t, []seedwire.UpdateType{seedwire.ControllerChanged, seedwire.FullSnapshot}, first[0].seedTypes(),
		"a leader's first push to a seed receiver tells it the controller, with a full state")
	accepted(leader, first[0])

	// Silent: fenced. The fence is pushed as a delta, which it accepts.
	c.pushes = nil
	c.tick(40)
	require.True(t, leader.StateMachine().BrokerStatus(1).Fenced)
	deltas := c.pushesTo(1)
	require.NotEmpty(t, deltas)
	assert.NotContains(t, deltas[len(deltas)-1].seedTypes(), seedwire.FullSnapshot)
	accepted(leader, deltas[len(deltas)-1])

	// Back: its heartbeat asks for a full state; until it accepts one,
	// it stays fenced.
	c.pushes = nil
	heartbeat(t, leader, "1", 0)
	c.process()
	assert.True(t, leader.StateMachine().BrokerStatus(1).Fenced, "unfenced on deltas a deposed controller's push may have undone")
	full := c.pushesTo(1)
	require.Len(t, full, 1)
	assert.Contains(t, full[0].seedTypes(), seedwire.FullSnapshot)
	accepted(leader, full[0])
	heartbeat(t, leader, "1", 0)
	c.process()
	assert.False(t, leader.StateMachine().BrokerStatus(1).Fenced, "a full state accepted since its return")
}

// A seed receiver's periodic full state is not lost to the push results
// that arrive meanwhile: with a push always in flight at the tick, the
// resync used to be overwritten by the result and never sent (review).
func TestSeedResyncSurvivesAPushInFlight(t *testing.T) {
	c := newCluster(t, 3, func(cfg *Config) { cfg.SeedResyncInterval = time.Second })
	c.seedBrokers = map[int32]bool{1: true}
	leader := c.elect(1)
	require.Nil(t, c.do(func(done func(Outcome)) { leader.RegisterBroker(registerReq(1), done) }).Err)
	accepted(leader, c.pushesTo(1)[0])

	c.pushes = nil
	require.Nil(t, c.do(func(done func(Outcome)) { leader.CreateTopic(createTopicReq("t", 1, 1), done) }).Err)
	inFlight := c.pushesTo(1)
	require.Len(t, inFlight, 1)
	assert.NotContains(t, inFlight[0].seedTypes(), seedwire.FullSnapshot)
	heartbeat(t, leader, "1", 0) // keeps its session
	c.tick(12)                   // the resync falls due while the delta is in flight
	require.Len(t, c.pushesTo(1), 1, "one push in flight")
	require.Nil(t, c.do(func(done func(Outcome)) { leader.CreateTopic(createTopicReq("u", 1, 1), done) }).Err)
	accepted(leader, inFlight[0])
	next := c.pushesTo(1)
	require.Len(t, next, 2)
	assert.Contains(t, next[1].seedTypes(), seedwire.FullSnapshot, "the resync due is sent, not a delta")
}

// A seed receiver never removes a broker: every full state lists the
// brokers gone as not alive. A leader that started from a snapshot taken
// after a broker left knew nothing of it, so its full states left the
// broker alive on the receiver for good (found by simulator seed 229,
// where an unregistered client broker stayed alive on a seed service).
func TestSeedFullStateListsBrokersThatLeftBeforeTheSnapshot(t *testing.T) {
	c := newCluster(t, 3, nil)
	c.seedBrokers = map[int32]bool{1: true}
	leader := c.elect(1)
	for _, id := range []int32{1, 7} {
		require.Nil(t, c.do(func(done func(Outcome)) { leader.RegisterBroker(registerReq(id), done) }).Err)
	}
	require.Nil(t, c.do(func(done func(Outcome)) { leader.UnregisterBroker(&metadatav1.UnregisterBrokerRequest{Id: 7}, done) }).Err)
	c.tick(2)
	for _, id := range []uint64{2, 3} {
		_, _, err := takeSnapshot(t, c.nodes[id])
		require.NoError(t, err)
		c.crash(id)
		c.restart(id)
	}
	c.tick(5)
	c.pushes = nil
	c.crash(1)
	next := c.waitNewLeader(1, 200)
	heartbeat(t, next, "1", 0)
	c.process()
	var full *pushCall
	for _, p := range c.pushesTo(1) {
		if slices.Contains(p.seedTypes(), seedwire.FullSnapshot) {
			full = &p
		}
	}
	require.NotNil(t, full, "the new leader sends the seed receiver a full state")
	gone := false
	for _, u := range full.seed {
		for _, b := range u.Brokers {
			if b.ID == 7 {
				gone = !b.Alive
			}
		}
	}
	assert.True(t, gone, "broker 7 is listed as not alive")
}

// With more services than PushPacingFloor, a service's next push waits
// services/PushRateMax after its last (versions applied meanwhile go in
// one delta), so that a burst of versions costs the leader a bounded rate
// of pushes; after a quiet spell a change goes out at once.
func TestPushesPacedWithManyServices(t *testing.T) {
	c := newCluster(t, 3, nil)
	leader := c.elect(1)
	const services = PushPacingFloor + 36
	ack := registerAcked(t, c, leader, services)
	spacing := time.Duration(services) * time.Second / PushRateMax
	require.Equal(t, spacing, leader.pushSpacing())
	for range 2 { // the pushes due go, and their turns pass
		c.tick(int(2*spacing/c.tickDuration) + 1)
		ack()
	}
	c.tick(int(2*spacing/c.tickDuration) + 1)
	require.Empty(t, c.pushes)
	for id := 1; id <= services; id++ { // live sessions, holding the current version
		heartbeat(t, leader, fmt.Sprint(id), leader.StateMachine().Version())
	}

	// Quiet before it: the change goes to every service at once.
	require.Nil(t, c.do(func(done func(Outcome)) { leader.CreateTopic(createTopicReq("a", 1, 1), done) }).Err)
	require.Len(t, c.pushes, services, "pushed at once after a quiet spell")
	first := c.pushesTo(7)[0].version
	ack()
	// Right after: the next waits for its turn, then carries both.
	require.Nil(t, c.do(func(done func(Outcome)) { leader.CreateTopic(createTopicReq("b", 1, 1), done) }).Err)
	require.Nil(t, c.do(func(done func(Outcome)) { leader.CreateTopic(createTopicReq("c", 1, 1), done) }).Err)
	assert.Empty(t, c.pushesTo(7), "paced")
	c.tick(int(spacing/c.tickDuration) + 1)
	pushes := c.pushesTo(7)
	require.Len(t, pushes, 1, "sent once its turn came")
	assert.Equal(t, first, pushes[0].request.GetDelta().GetFromVersion())
	assert.Len(t, pushes[0].request.GetDelta().GetUpsertedTopics(), 2, "one delta for both versions")
}

// A pass over the push targets stops once PushWorkMax has passed on the
// node's clock, and the next pass starts where it stopped: a burst of
// pushes costs the leader's loop a bounded pause, and every service gets
// its turn.
func TestPushPassesAreBoundedAndFair(t *testing.T) {
	c := newCluster(t, 3, nil)
	leader := c.elect(1)
	const services = 20
	ack := registerAcked(t, c, leader, services)
	for id := 1; id <= services; id++ {
		heartbeat(t, leader, fmt.Sprint(id), leader.StateMachine().Version())
	}
	require.Empty(t, c.pushes)

	// Each reading of the clock finds it 1 ms later: a pass sends the
	// pushes of about PushWorkMax / 1 ms services.
	c.nowStep = time.Millisecond
	require.Nil(t, c.do(func(done func(Outcome)) { leader.CreateTopic(createTopicReq("a", 1, 1), done) }).Err)
	first := len(c.pushes)
	assert.Less(t, first, services, "the pass stopped")
	assert.Positive(t, first)
	got := map[int32]bool{}
	for range services {
		for _, p := range c.pushes {
			got[p.broker] = true
		}
		ack()
		if len(got) == services {
			break
		}
		c.tick(1)
	}
	c.nowStep = 0
	assert.Len(t, got, services, "every service got the change, pass after pass")
}

// registerAcked registers brokers 1 to services on the leader, every push
// to them accepted, and returns what accepts the pushes sent since.
func registerAcked(t *testing.T, c *cluster, leader *Node, services int32) (ack func()) {
	ack = func() {
		for _, p := range c.pushes {
			leader.OnPushResult(p.broker, p.version, &metadatav1.PushMetadataResponse{Accepted: true, MetadataVersion: p.version}, nil)
		}
		c.pushes = nil
	}
	for id := int32(1); id <= services; id++ {
		require.Nil(t, c.do(func(done func(Outcome)) { leader.RegisterBroker(registerReq(id), done) }).Err)
		ack()
	}
	return ack
}
