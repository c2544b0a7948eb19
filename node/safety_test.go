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
