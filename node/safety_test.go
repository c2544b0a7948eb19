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
