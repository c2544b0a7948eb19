package node

import (
	"math/rand/v2"
	"testing"
	"time"

	metadatav1 "github.com/dmq-project/metadata/gen/dmq/metadata/v1"
	"github.com/dmq-project/metadata/storage"

	"github.com/dmq-project/metadata/statemachine"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.etcd.io/raft/v3/raftpb"
)

// A ReadIndex response that outlives its requester's crash must not serve
// a read of the requester's next life. The follower's first read asks the
// leader for the commit index; the follower crashes before the answer
// arrives; a write commits; the restarted follower reads again and the
// old answer, with the old commit index, arrives first. Before the read
// context named the life, both reads had context 1 and the new read was
// served without the acknowledged write.
func TestReadIndexAnswerFromAnEarlierLifeIsIgnored(t *testing.T) {
	c := newCluster(t, 3, nil)
	leader := c.elect(1)

	c.nodes[2].Read(func(*statemachine.StateMachine, *statemachine.Error) {})
	var held []*raftpb.Message
	c.onSend = func(from *Node, m *raftpb.Message) {
		if m.GetType() == raftpb.MsgReadIndexResp && m.GetTo() == 2 {
			held = append(held, m)
		}
	}
	require.NoError(t, c.nodes[2].HandleReady())
	c.process()
	require.Len(t, held, 1, "the leader answered the first read")
	c.queue = removeMessages(c.queue, raftpb.MsgReadIndexResp)
	c.onSend = nil

	c.crash(2)
	out := c.do(func(done func(Outcome)) { leader.RegisterBroker(registerReq(7), done) })
	require.Nil(t, out.Err)
	out = c.do(func(done func(Outcome)) { leader.CreateTopic(createTopicReq("orders", 1, 1), done) })
	require.Nil(t, out.Err)
	c.restart(2)
	// The restarted follower learns who leads from a heartbeat, but not
	// yet the entries it missed.
	c.queue = nil
	leader.Tick()
	require.NoError(t, leader.HandleReady())
	for _, m := range c.queue {
		if m.GetType() == raftpb.MsgHeartbeat && m.GetTo() == 2 {
			require.NoError(t, c.nodes[2].Step(m))
		}
	}
	c.queue = nil
	for c.nodes[2].HasReady() {
		require.NoError(t, c.nodes[2].HandleReady())
	}
	c.queue = nil
	require.Equal(t, uint64(1), c.nodes[2].Leader())
	require.Nil(t, c.nodes[2].StateMachine().Topic("orders"), "the follower has not applied the write yet")

	follower := c.nodes[2]
	var served, sawTopic bool
	follower.Read(func(sm *statemachine.StateMachine, err *statemachine.Error) {
		served = err == nil
		sawTopic = err == nil && sm.Topic("orders") != nil
	})
	require.NoError(t, follower.HandleReady())
	require.NoError(t, follower.Step(held[0]))
	for follower.HasReady() {
		require.NoError(t, follower.HandleReady())
	}
	assert.False(t, served && !sawTopic, "a read of the new life was served by the old life's ReadIndex, without an acknowledged write")
	c.process()
	assert.True(t, served && sawTopic, "the new read is served once its own ReadIndex returns")
}

func removeMessages(queue []*raftpb.Message, kind raftpb.MessageType) []*raftpb.Message {
	var kept []*raftpb.Message
	for _, m := range queue {
		if m.GetType() != kind {
			kept = append(kept, m)
		}
	}
	return kept
}

// A message from an id outside the configuration is refused: not stepped,
// so it can raise no term and append nothing. Before, a forged append from
// id 99 with a higher term was stepped, and the follower applied an entry
// no leader wrote.
func TestMessageFromAStrangerIsRefused(t *testing.T) {
	c := newCluster(t, 3, nil)
	c.elect(1)
	follower := c.nodes[2]
	last := follower.Status().LastIndex
	lastTerm, err := c.nodes[2].store.Term(last)
	require.NoError(t, err)
	termBefore := follower.Term()
	forged := &raftpb.Message{
		Type: raftpb.MsgApp.Enum(), From: new(uint64(99)), To: new(uint64(2)), Term: new(termBefore + 1),
		Index: new(last), LogTerm: new(lastTerm), Commit: new(last + 1),
		Entries: []*raftpb.Entry{{Type: raftpb.EntryNormal.Enum(), Term: new(termBefore + 1), Index: new(last + 1), Data: []byte("forged")}},
	}
	assert.ErrorIs(t, follower.Step(forged), ErrNotMember)
	for follower.HasReady() {
		require.NoError(t, follower.HandleReady())
	}
	assert.Equal(t, termBefore, follower.Term(), "a stranger raised the term")
	assert.Equal(t, last, follower.StateMachine().AppliedIndex(), "a stranger's entry was applied")
	assert.Equal(t, uint64(1), follower.Status().StrangerMessages)

	// A removed controller is a stranger too, once its removal is applied.
	require.NoError(t, changeMembership(c, c.nodes[1], MembershipChange{Kind: RemoveVoter, NodeID: 3}))
	late := &raftpb.Message{Type: raftpb.MsgHeartbeat.Enum(), From: new(uint64(3)), To: new(uint64(2)), Term: new(follower.Term() + 5)}
	require.ErrorIs(t, follower.Step(late), ErrNotMember)
	c.process()
	assert.Equal(t, uint64(1), follower.Leader(), "the removed controller's message changed nothing")
}

// Removing the leader itself must not wedge the cluster. Before, the
// removed leader went on sending heartbeats (Raft lets a leader outside
// the configuration lead) while refusing every write as removed, and the
// remaining voters, hearing a leader, never elected another. Now the
// leader steps down as it applies its removal (and the others refuse a
// removed controller's messages).
func TestRemovingTheLeaderHandsLeadershipOver(t *testing.T) {
	c := newCluster(t, 3, nil)
	leader := c.elect(1)
	require.NoError(t, changeMembership(c, leader, MembershipChange{Kind: RemoveVoter, NodeID: 1}))
	assert.False(t, leader.IsLeader(), "the removed controller still leads once its removal is applied")
	next := c.waitNewLeader(1, 60)
	assert.Equal(t, []uint64{2, 3}, voters(next))
	out := c.do(func(done func(Outcome)) { next.RegisterBroker(registerReq(7), done) })
	assert.Nil(t, out.Err, "the remaining voters accept writes")
}

// A membership change proposed by a new leader that has not yet applied
// the entries of earlier terms is turned by Raft into an empty entry. It
// was then never completed: the change, and every later one ("still in
// progress"), hung until the next leader change. Now a leader takes
// membership changes only once it is the active controller, and a pending
// change has a deadline.
func TestMembershipChangeRightAfterAnElection(t *testing.T) {
	c := newCluster(t, 3, nil)
	leader := c.elect(1)
	// Node 2 gets a write that does not commit; node 3 does not get it.
	c.drop = func(m *raftpb.Message) bool {
		return (m.GetFrom() == 1 && m.GetTo() == 3 && m.GetType() == raftpb.MsgApp) ||
			(m.GetFrom() == 2 && m.GetTo() == 1 && m.GetType() == raftpb.MsgAppResp)
	}
	leader.RegisterBroker(registerReq(7), func(Outcome) {})
	c.process()
	c.isolate(1)
	// Node 2 wins, but its appends (with the uncommitted write) are not
	// acknowledged yet.
	c.drop = func(m *raftpb.Message) bool { return m.GetFrom() == 3 && m.GetType() == raftpb.MsgAppResp }
	next := c.nodes[2]
	for i := 0; i < 60 && !next.IsLeader(); i++ {
		c.tick(1)
	}
	require.True(t, next.IsLeader(), "only node 2 holds the write: only it can win")
	st := next.Status()
	require.False(t, next.IsActive(), "the new leader has not applied the earlier write: %+v", st)

	var first error = errPending
	next.ChangeMembership(MembershipChange{Kind: RemoveVoter, NodeID: 1}, func(err error) { first = err })
	// Refused at once, not proposed: Raft would turn it into an empty
	// entry and say nothing (the pending change's deadline is the second
	// line of defence, which the rest of this test would also accept).
	require.Error(t, first)
	assert.Contains(t, first.Error(), "just elected")
	c.drop = nil
	for i := 0; i < 80 && first == errPending; i++ {
		c.tick(1)
	}
	require.NotEqual(t, errPending, first, "the change neither completed nor failed")
	if first != nil {
		// Refused clearly: a retry on the active controller goes through.
		for i := 0; i < 30 && !next.IsActive(); i++ {
			c.tick(1)
		}
		require.True(t, next.IsActive())
		require.NoError(t, changeMembership(c, next, MembershipChange{Kind: RemoveVoter, NodeID: 1}))
	}
	assert.Equal(t, []uint64{2, 3}, voters(next))
}

// An added voter counts in the quorum only once it holds the state.
// Voters {1,2} add 4 while 4 cannot hear 1. Had 4 become a voter at once,
// {1,2,4} would need 4's vote after losing 1, and 4, which has no
// configuration yet, may not vote (it could be a lost disk): no leader
// ever (found by review). Now 4 joins as a learner, the addition fails
// with its lag when it cannot catch up, and it is promoted once it has.
func TestAddedVoterCountsOnceCaughtUp(t *testing.T) {
	c := newCluster(t, 3, nil)
	leader := c.elect(1)
	c.crash(3)
	c.tick(25)
	require.NoError(t, changeMembership(c, leader, MembershipChange{Kind: RemoveVoter, NodeID: 3}))
	c.addEmpty(4)
	c.partition(1, 4)
	var err error = errPending
	leader.ChangeMembership(MembershipChange{Kind: AddVoter, NodeID: 4, URL: peerURL(4), DirectoryID: c.directory(4)}, func(e error) { err = e })
	for i := 0; i < 200 && err == errPending; i++ {
		c.tick(1)
	}
	require.Error(t, err, "4 cannot catch up: the addition fails")
	assert.Contains(t, err.Error(), "lags")
	assert.Equal(t, []uint64{1, 2}, voters(leader), "4 is not counted before it holds the state")

	c.heal()
	c.tick(10)
	require.NoError(t, changeMembership(c, leader, MembershipChange{Kind: AddVoter, NodeID: 4}))
	assert.Equal(t, []uint64{1, 2, 4}, voters(leader))
	c.tick(5)
	assert.True(t, c.nodes[4].Status().MayVote, "the promoted voter votes")
}

// A lone controller grows by adding learners and promoting them. The
// strict reconfiguration check never counted the new voter as active, so
// promoting the first learner of a one-controller cluster ("1 of 2 voters
// active") was always refused.
func TestLoneControllerGrows(t *testing.T) {
	c := newCluster(t, 1, nil)
	leader := c.elect(1)
	for _, id := range []uint64{2, 3} {
		c.addLearner(leader, id)
		c.tick(5)
		require.NoError(t, changeMembership(c, leader, MembershipChange{Kind: PromoteLearner, NodeID: id}), "promoting %d", id)
	}
	assert.Equal(t, []uint64{1, 2, 3}, voters(leader))
	out := c.do(func(done func(Outcome)) { leader.RegisterBroker(registerReq(7), done) })
	require.Nil(t, out.Err)
	c.requireConverged()
}

// A learner that has not caught up is not promoted: the refusal names its
// lag. With a voter of four dead, promoting a learner that lags would
// leave a quorum that cannot commit until it catches up.
func TestPromoteRefusesALaggingLearner(t *testing.T) {
	c := newCluster(t, 3, nil)
	leader := c.elect(1)
	c.addLearner(leader, 4)
	c.isolate(4)
	for i := int32(1); i <= 5; i++ {
		out := c.do(func(done func(Outcome)) { leader.RegisterBroker(registerReq(i), done) })
		require.Nil(t, out.Err)
	}
	err := changeMembership(c, leader, MembershipChange{Kind: PromoteLearner, NodeID: 4})
	require.Error(t, err)
	assert.Contains(t, err.Error(), "lags")
	assert.Equal(t, []uint64{1, 2, 3}, voters(leader))
}

// A controller that lags behind a new member's addition must still catch
// up when that member leads. 3 is cut off while 4 is added (learner,
// promoted) and takes the lead; 4's first probe to 3 is lost. When 3
// refused 4's heartbeats without an answer, 4's probe stayed paused (raft
// v3.7 probes a follower again only when a heartbeat is answered) and 3
// never caught up (found by review). Refused heartbeats are now answered.
func TestLaggingMemberCatchesUpWithANewLeader(t *testing.T) {
	c := newCluster(t, 3, nil)
	leader := c.elect(1)
	c.isolate(3)
	c.addLearner(leader, 4)
	c.tick(5)
	require.NoError(t, changeMembership(c, leader, MembershipChange{Kind: PromoteLearner, NodeID: 4}))
	c.tick(3)
	var err error = errPending
	leader.TransferLeader(4, func(e error) { err = e })
	for i := 0; i < 30 && err == errPending; i++ {
		c.tick(1)
	}
	require.NoError(t, err)
	require.Equal(t, uint64(4), c.leader())
	c.tick(5) // 4 probes 3 once; the probe is lost
	c.heal()
	c.tick(300)
	four := c.nodes[4]
	t.Logf("3: applied %d leader %d refused %d; 4: applied %d, progress of 3 %v",
		c.nodes[3].StateMachine().AppliedIndex(), c.nodes[3].Leader(), c.nodes[3].Status().StrangerMessages,
		four.StateMachine().AppliedIndex(), four.rn.Status().Progress[3])
	require.Equal(t, four.StateMachine().AppliedIndex(), c.nodes[3].StateMachine().AppliedIndex(), "3 never caught up with leader 4")
}

// A controller whose disk was lost must not vote as the voter it was. X
// commits on {1,2} while 3 is cut off; 2's disk is lost and 2 restarts on
// an empty, newly formatted directory; 1 is cut off. Had 2 founded the
// cluster again (as any empty store once did) and voted, 3 would have won
// with 2's vote and a log without X: an acknowledged write lost. Now 2
// may not found (the founding voters name another directory for it) and
// may not vote, so only a leader holding X can be elected.
func TestLostDiskDoesNotVote(t *testing.T) {
	c := newCluster(t, 3, nil)
	leader := c.elect(1)
	c.isolate(3)
	out := c.do(func(done func(Outcome)) { leader.RegisterBroker(registerReq(7), done) })
	require.Nil(t, out.Err, "X is acknowledged")

	c.crash(2)
	c.disks[2] = storage.NewDisk()
	store, err := storage.OpenMem(c.disks[2])
	require.NoError(t, err)
	_, err = Format(store, clusterID, 2, c.rng)
	require.NoError(t, err)
	assert.ErrorIs(t, Bootstrap(store, c.founders), ErrNotFoundingDirectory, "an empty directory founded the cluster again")
	c.start(2, store)
	assert.False(t, c.nodes[2].Status().MayVote)

	c.heal()
	c.isolate(1)
	for i := 0; i < 200; i++ {
		c.tick(1)
		if id := c.leader(); id != 0 && id != 1 && c.nodes[id].IsActive() {
			assert.NotNil(t, c.nodes[id].StateMachine().Broker(7), "controller %d leads without the acknowledged write", id)
			break
		}
	}
	c.heal()
	next := c.waitLeader(200)
	assert.NotNil(t, next.StateMachine().Broker(7), "the acknowledged write survived")
}

// A restarted leader numbers its proposals from 1 again; an entry of its
// previous life that commits late must not complete a new request with
// its result. (Seed 3987 found this once; it no longer reaches it, so this
// test is the reproduction.) Write A is appended on 1 alone and 1 crashes;
// 1 restarts and leads again; C and B are proposed before A commits, B
// with A's proposal number. Without the term check B completed with A's
// outcome before B itself was applied.
func TestEntryOfAnEarlierLifeDoesNotCompleteANewProposal(t *testing.T) {
	c := newCluster(t, 3, nil)
	leader := c.elect(1)
	c.drop = func(m *raftpb.Message) bool { return m.GetFrom() == 1 && m.GetType() == raftpb.MsgApp }
	leader.RegisterBroker(registerReq(7), func(Outcome) {})
	c.process()
	c.crash(1)
	c.restart(1)
	// 1 holds A, the others do not, and they cannot elect each other; no
	// append of the new term is acknowledged yet.
	c.drop = func(m *raftpb.Message) bool { return m.GetType() == raftpb.MsgAppResp }
	c.partition(2, 3)
	for i := 0; i < 100 && !c.nodes[1].IsLeader(); i++ {
		c.tick(1)
	}
	require.True(t, c.nodes[1].IsLeader())
	leader = c.nodes[1]
	require.False(t, leader.IsActive(), "A has not committed yet")
	var outB *Outcome
	leader.CreateTopic(createTopicReq("c-topic", 1, 1), func(Outcome) {})
	leader.RegisterBroker(registerReq(8), func(o Outcome) { outB = &o })
	c.drop = nil
	c.process()
	c.tick(3)
	require.NotNil(t, outB)
	require.Nil(t, outB.Err)
	b := c.nodes[1].StateMachine().Broker(8)
	require.NotNil(t, b, "B was acknowledged: it must be applied")
	assert.Equal(t, b.GetBrokerEpoch(), outB.BrokerEpoch, "B completed with another entry's result")
}

// A removed controller that restarts from a snapshot taken after its
// removal still knows it was removed (it was told only by applying the
// removal entry, which the snapshot covers).
func TestRemovedControllerRestartedFromASnapshotKnows(t *testing.T) {
	c := newCluster(t, 3, nil)
	leader := c.elect(1)
	require.NoError(t, changeMembership(c, leader, MembershipChange{Kind: RemoveVoter, NodeID: 3}))
	c.tick(3)
	require.True(t, c.nodes[3].Status().Removed)
	_, _, err := takeSnapshot(t, c.nodes[3])
	require.NoError(t, err)
	c.crash(3)
	c.restart(3)
	assert.True(t, c.nodes[3].Status().Removed, "the restarted controller forgot it was removed")
}

// A late heartbeat must not lower the version the controller records for
// a storage service (it would push what the service already holds).
func TestLateHeartbeatDoesNotLowerTheKnownVersion(t *testing.T) {
	c := newCluster(t, 3, nil)
	leader := c.elect(1)
	out := c.do(func(done func(Outcome)) { leader.RegisterBroker(registerReq(1), done) })
	require.Nil(t, out.Err)
	c.process()
	version := leader.StateMachine().Version()
	for _, p := range c.pushesTo(1) {
		leader.OnPushResult(1, p.request.GetMetadataVersion(), &metadatav1.PushMetadataResponse{Accepted: true, MetadataVersion: p.request.GetMetadataVersion()}, nil)
	}
	require.Equal(t, version, c.pushesTo(1)[len(c.pushesTo(1))-1].request.GetMetadataVersion())
	resp, herr := leader.Heartbeat(&metadatav1.StorageHeartbeatRequest{ServiceId: "1", MetadataVersion: version, BrokerEpoch: out.BrokerEpoch})
	require.Nil(t, herr)
	require.False(t, resp.GetPushScheduled(), "the service is up to date")
	resp, herr = leader.Heartbeat(&metadatav1.StorageHeartbeatRequest{ServiceId: "1", MetadataVersion: version - 2, BrokerEpoch: out.BrokerEpoch})
	require.Nil(t, herr)
	assert.False(t, resp.GetPushScheduled(), "a late heartbeat made the controller push again")
}

// A wiped voter (its old directory recorded, so it may not vote) must not
// count as active for the strict reconfiguration check. It acknowledged
// appends once a new leader sent it a snapshot, the check counted it, and
// the leader could be removed, leaving {wiped, other}, which can never
// elect (found by review). It is now silent: it refuses every message.
func TestWipedVoterDoesNotCountAsActive(t *testing.T) {
	c := newCluster(t, 3, nil)
	c.elect(1)
	c.wipe(2)
	c.crash(1)
	c.restart(1)
	leader := c.waitLeader(200) // a new term: progress of 2 starts at 0, 2 gets a snapshot
	c.tick(25)                  // past an election timeout: what the check calls recent
	require.False(t, c.nodes[2].Status().MayVote)
	err := changeMembership(c, leader, MembershipChange{Kind: RemoveVoter, NodeID: leader.ID()})
	require.ErrorContains(t, err, "below a quorum", "the check counted wiped 2 as active")
	assert.Equal(t, []uint64{1, 2, 3}, voters(leader))
	require.NoError(t, changeMembership(c, leader, MembershipChange{Kind: RemoveVoter, NodeID: 2}), "removing the wiped voter is how to recover")
	assert.Equal(t, []uint64{1, 3}, voters(leader))
}

// A learner whose disk is lost must not be promoted: once a new leader had
// sent it a snapshot it caught up, was promoted, and became a voter that
// may not vote: {1,2} could never elect again after 1 restarted (found by
// review).
func TestWipedLearnerIsNotPromoted(t *testing.T) {
	c := newCluster(t, 1, nil)
	leader := c.elect(1)
	c.addLearner(leader, 2)
	c.tick(3)
	c.wipe(2)
	c.crash(1)
	c.restart(1)
	leader = c.elect(1)
	c.tick(5)
	require.False(t, c.nodes[2].Status().MayVote)
	require.Error(t, changeMembership(c, leader, MembershipChange{Kind: AddVoter, NodeID: 2}), "the wiped learner was promoted")
	require.Equal(t, []uint64{1}, voters(leader))
}

// A storage service ahead of every controller's commit index holds
// metadata no quorum committed: it gets a full state marked as a repair of
// that version, the only push it may go back for. A service merely ahead of
// the leader's applied state (a follower applied first) gets none.
func TestServiceAheadOfTheCommitIndexIsSentARepair(t *testing.T) {
	c := newCluster(t, 3, nil)
	leader := c.elect(1)
	require.Nil(t, c.do(func(done func(Outcome)) { leader.RegisterBroker(registerReq(1), done) }).Err)
	first := c.pushesTo(1)
	require.NotEmpty(t, first)
	last := first[len(first)-1].request
	leader.OnPushResult(1, last.GetMetadataVersion(), &metadatav1.PushMetadataResponse{Accepted: true, MetadataVersion: last.GetMetadataVersion()}, nil)

	version := leader.StateMachine().Version()
	c.pushes = nil
	ahead := version + 1000
	resp := heartbeat(t, leader, "1", ahead)
	assert.True(t, resp.PushScheduled)
	pushes := c.pushesTo(1)
	require.Len(t, pushes, 1)
	repair := pushes[0].request
	require.NotNil(t, repair.GetFullState())
	assert.Equal(t, ahead, repair.GetRepairFromVersion())
	assert.Equal(t, version, repair.GetMetadataVersion())

	// Its answer (it went back) ends the repair.
	leader.OnPushResult(1, version, &metadatav1.PushMetadataResponse{Accepted: true, MetadataVersion: version}, nil)
	c.pushes = nil
	require.Nil(t, c.do(func(done func(Outcome)) { leader.CreateTopic(createTopicReq("t", 1, 1), done) }).Err)
	for _, p := range c.pushesTo(1) {
		assert.Zero(t, p.request.GetRepairFromVersion(), "a repaired service gets ordinary pushes")
	}
}

func TestServiceAheadOnlyOfTheLeadersAppliedStateIsNotRepaired(t *testing.T) {
	c := newCluster(t, 3, nil)
	leader := c.elect(1)
	require.Nil(t, c.do(func(done func(Outcome)) { leader.RegisterBroker(registerReq(1), done) }).Err)
	// The commit index is what a follower may have applied and served.
	commit := int64(leader.Status().Commit)
	require.Equal(t, commit, leader.StateMachine().Version())
	assert.False(t, leader.beyondCommit(commit))
	assert.True(t, leader.beyondCommit(commit+1))
}

// A new leader whose clock is an hour ahead of the last one's does not
// expire every client session at once: records are stamped with the state
// machine's clock at takeover plus the time elapsed since.
func TestLeaderWithAClockAheadDoesNotExpireSessions(t *testing.T) {
	c := newCluster(t, 3, nil)
	leader := c.elect(1)
	require.Nil(t, c.do(func(done func(Outcome)) { leader.RegisterBroker(registerReq(1), done) }).Err)
	session := c.openSession(leader)
	c.now = c.now.Add(time.Hour)
	c.isolate(1)
	next := c.waitNewLeader(1, 100)
	req := createTopicReq("kept", 1, 1)
	req.RequestId = &metadatav1.RequestId{SessionId: session, Sequence: 1}
	out := c.do(func(done func(Outcome)) { next.CreateTopic(req, done) })
	require.Nil(t, out.Err, "the session expired with the new leader's clock")
}

// Disaster recovery: a backup taken after a linearizable read holds every
// acknowledged write; a new cluster restored from it on empty disks holds
// the same metadata, continues its versions, and takes writes.
func TestRestoreFoundsANewClusterFromABackup(t *testing.T) {
	old := newCluster(t, 3, nil)
	leader := old.elect(1)
	for id := int32(1); id <= 3; id++ {
		require.Nil(t, old.do(func(done func(Outcome)) { leader.RegisterBroker(registerReq(id), done) }).Err)
	}
	require.Nil(t, old.do(func(done func(Outcome)) { leader.CreateTopic(createTopicReq("orders", 4, 3), done) }).Err)
	var backup Backup
	require.Nil(t, old.read(leader, func(*statemachine.StateMachine) {
		var err error
		backup, err = takeBackup(t, leader)
		require.NoError(t, err)
	}))
	want := leader.StateMachine().ClusterState()
	require.Equal(t, uint64(want.GetMetadataVersion()), backup.Index, "the backup holds every applied write")

	restored := newClusterFoundedBy(t, 3, nil, func(store storage.Storage, peers []Peer) error {
		return Restore(store, peers, backup)
	})
	// The harness draws topic ids from one seeded source: give the new
	// cluster another, as production's crypto-seeded sources are.
	restored.rng = rand.New(rand.NewPCG(8, 12))
	next := restored.elect(2)
	got := next.StateMachine().ClusterState()
	assert.Equal(t, want.GetBrokers(), got.GetBrokers())
	assert.Equal(t, want.GetTopics(), got.GetTopics())
	assert.Greater(t, got.GetMetadataVersion(), want.GetMetadataVersion(), "versions continue past the backup's")
	out := restored.do(func(done func(Outcome)) { next.CreateTopic(createTopicReq("after", 1, 3), done) })
	require.Nil(t, out.Err)
	assert.Greater(t, out.Version, int64(backup.Index))
	restored.requireConverged()

	// The file round-trips; a damaged one is refused as it is read.
	decoded, err := DecodeBackup(backup.Encode())
	require.NoError(t, err)
	assert.Equal(t, backup, decoded)
	file := backup.Encode()
	file[len(file)-3] ^= 0xff
	_, err = DecodeBackup(file)
	assert.ErrorContains(t, err, "damaged")

	// A damaged backup founds nothing.
	store, err := storage.OpenMem(storage.NewDisk())
	require.NoError(t, err)
	_, err = Format(store, clusterID, 1, restored.rng)
	require.NoError(t, err)
	damaged := Backup{Index: backup.Index, Data: append([]byte(nil), backup.Data...)}
	damaged.Data[len(damaged.Data)/2] ^= 0xff
	require.Error(t, Restore(store, restored.founders, damaged))
	last, err := store.LastIndex()
	require.NoError(t, err)
	snap, err := store.Snapshot()
	require.NoError(t, err)
	assert.Zero(t, last+snap.GetMetadata().GetIndex(), "a refused restore wrote nothing")
}
