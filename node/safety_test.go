package node

import (
	"testing"

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
	out := c.do(func(done func(Outcome)) { leader.RegisterBroker(registerReq(7, "c", 1), done) })
	require.Nil(t, out.Err)
	out = c.do(func(done func(Outcome)) { leader.CreateTopic(createTopicReq("orders", 1, 1, "c", 2), done) })
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

func changeMembership(c *cluster, leader *Node, change MembershipChange) error {
	var result error
	done := false
	leader.ChangeMembership(change, func(err error) { result, done = err, true })
	for i := 0; i < 100 && !done; i++ {
		c.process()
		if !done {
			c.tick(1)
		}
	}
	require.True(c.t, done, "the membership change never completed")
	return result
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
	out := c.do(func(done func(Outcome)) { next.RegisterBroker(registerReq(7, "c", 1), done) })
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
	leader.RegisterBroker(registerReq(7, "c", 1), func(Outcome) {})
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

// A new voter must vote before its snapshot arrives. Voters {1,2} add 4
// (a quorum of 2 of 3); leader 1 is lost for good before 4 holds anything.
// 2 holds every committed entry and needs 4's vote. When controllers
// without a configuration refused votes, no leader was ever elected
// (found by review).
func TestJoinerVotesBeforeItsSnapshot(t *testing.T) {
	c := newCluster(t, 3, nil)
	leader := c.elect(1)
	c.crash(3)
	c.tick(25)
	require.NoError(t, changeMembership(c, leader, MembershipChange{Kind: RemoveVoter, NodeID: 3}))
	c.addEmpty(4)
	c.partition(1, 4) // 4 gets nothing from 1 before 1 dies (slow link / snapshot in flight)
	var err error = errPending
	leader.ChangeMembership(MembershipChange{Kind: AddVoter, NodeID: 4, URL: peerURL(4)}, func(e error) { err = e })
	for i := 0; i < 20 && err == errPending; i++ {
		c.tick(1)
	}
	require.NoError(t, err)
	require.Equal(t, []uint64{1, 2, 4}, voters(c.nodes[2]))
	c.crash(1) // disk lost: never comes back
	c.heal()
	refusedBefore := c.nodes[4].Status().StrangerMessages
	var sawVote bool
	c.onSend = func(from *Node, m *raftpb.Message) {
		if m.GetTo() == 4 && (m.GetType() == raftpb.MsgPreVote || m.GetType() == raftpb.MsgVote) {
			sawVote = true
		}
	}
	for i := 0; i < 300 && c.leader() == 0; i++ {
		c.tick(1)
	}
	t.Logf("2 asked 4 for a vote: %v; 4 refused %d messages; leader=%d; 2 term=%d",
		sawVote, c.nodes[4].Status().StrangerMessages-refusedBefore, c.leader(), c.nodes[2].Term())
	require.NotZero(t, c.leader(), "{2,4} is a quorum of {1,2,4} and 2 holds every committed entry, yet no leader in 300 ticks")
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
	c.addEmpty(4)
	require.NoError(t, changeMembership(c, leader, MembershipChange{Kind: AddLearner, NodeID: 4, URL: peerURL(4)}))
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
