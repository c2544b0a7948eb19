package node

import (
	"testing"

	metadatav1 "github.com/dmq-project/metadata/gen/dmq/metadata/v1"
	"github.com/dmq-project/metadata/statemachine"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func codesOf(items []statemachine.ItemResult) []metadatav1.ErrorCode {
	out := make([]metadatav1.ErrorCode, len(items))
	for i, item := range items {
		out[i] = item.Err.GetCode()
	}
	return out
}

const (
	none       = metadatav1.ErrorCode_NONE
	badName    = metadatav1.ErrorCode_INVALID_TOPIC_NAME
	exists     = metadatav1.ErrorCode_TOPIC_ALREADY_EXISTS
	tooFew     = metadatav1.ErrorCode_INVALID_REPLICATION_FACTOR
	badConfig  = metadatav1.ErrorCode_INVALID_CONFIG
	aborted    = metadatav1.ErrorCode_BATCH_ABORTED
	unknownTop = metadatav1.ErrorCode_UNKNOWN_TOPIC
)

// A batch's items fail one by one where they can be checked without the
// state (a bad name, a bad config) and where only the state can tell (an
// existing name, too few brokers); the answer follows the request's order
// whichever check refused an item, on the first attempt, on a retry, and
// in a dry run that a follower answers.
func TestCreateTopicsAnswersInRequestOrder(t *testing.T) {
	c := newCluster(t, 3, nil)
	leader := c.elect(1)
	for id := int32(1); id <= 2; id++ {
		require.Nil(t, c.do(func(done func(Outcome)) { leader.RegisterBroker(registerReq(id), done) }).Err)
	}
	require.Nil(t, c.do(func(done func(Outcome)) { leader.CreateTopic(createTopicReq("old", 1, 1), done) }).Err)
	topics := []*metadatav1.CreateTopicRequest{
		createTopicReq("new-a", 2, 2),
		createTopicReq("bad name", 1, 1),
		createTopicReq("old", 1, 1),
		{Name: "bad-config", Partitions: 1, ReplicationFactor: 1, Configs: map[string]string{"retention.ms": "soon"}},
		createTopicReq("wide", 1, 3),
		createTopicReq("new-b", 1, 0),
	}
	want := []metadatav1.ErrorCode{none, badName, exists, badConfig, tooFew, none}
	session := c.openSession(leader)
	req := &metadatav1.CreateTopicsRequest{Topics: topics}

	// The dry run, on a follower, before and after: the same answer, and
	// nothing created.
	dry := &metadatav1.CreateTopicsRequest{Topics: topics, ValidateOnly: true}
	out := c.do(func(done func(Outcome)) { c.nodes[2].CreateTopics(dry, done) })
	require.Nil(t, out.Err)
	assert.Equal(t, want, codesOf(out.Items))
	assert.Nil(t, leader.StateMachine().Topic("new-a"), "a dry run created a topic")

	req.RequestId = &metadatav1.RequestId{SessionId: session, Sequence: 1, ClientId: "test"}
	first := c.do(func(done func(Outcome)) { leader.CreateTopics(req, done) })
	require.Nil(t, first.Err)
	assert.Equal(t, want, codesOf(first.Items))
	assert.NotEmpty(t, first.Items[0].TopicID)
	assert.Equal(t, first.Items[0].TopicID, leader.StateMachine().Topic("new-a").TopicId)
	assert.NotNil(t, leader.StateMachine().Topic("new-b"), "replication factor 0 takes the default")

	retry := c.do(func(done func(Outcome)) { leader.CreateTopics(req, done) })
	assert.True(t, retry.Duplicate)
	assert.Equal(t, first.Items, retry.Items, "a retry is answered with the first items, in the same order")

	again := c.do(func(done func(Outcome)) { c.nodes[3].CreateTopics(dry, done) })
	assert.Equal(t, []metadatav1.ErrorCode{exists, badName, exists, badConfig, tooFew, exists}, codesOf(again.Items))
	c.requireConverged()
}

func TestAtomicBatchRefusedWithoutTheStateChangesNothing(t *testing.T) {
	c := newCluster(t, 1, nil)
	leader := c.elect(1)
	require.Nil(t, c.do(func(done func(Outcome)) { leader.RegisterBroker(registerReq(1), done) }).Err)
	version := leader.StateMachine().Version()
	req := &metadatav1.CreateTopicsRequest{Atomic: true, Topics: []*metadatav1.CreateTopicRequest{
		createTopicReq("fine", 1, 1), createTopicReq("..", 1, 1)}}
	out := c.do(func(done func(Outcome)) { leader.CreateTopics(req, done) })
	require.NotNil(t, out.Err)
	assert.Equal(t, badName, out.Err.Code)
	assert.Equal(t, []metadatav1.ErrorCode{aborted, badName}, codesOf(out.Items))
	assert.Equal(t, version, leader.StateMachine().Version(), "nothing was proposed")

	del := &metadatav1.DeleteTopicsRequest{Atomic: true, Names: []string{"fine", "missing"}}
	out = c.do(func(done func(Outcome)) { leader.DeleteTopics(del, done) })
	require.NotNil(t, out.Err)
	assert.Equal(t, unknownTop, out.Err.Code)
	assert.Equal(t, []metadatav1.ErrorCode{unknownTop, unknownTop}, codesOf(out.Items))
}

func TestBatchRequestsAreCheckedAsAWhole(t *testing.T) {
	c := newCluster(t, 1, nil)
	leader := c.elect(1)
	for name, req := range map[string]*metadatav1.CreateTopicsRequest{
		"empty":      {},
		"duplicate":  {Topics: []*metadatav1.CreateTopicRequest{createTopicReq("a", 1, 1), createTopicReq("a", 2, 1)}},
		"request id": {Topics: []*metadatav1.CreateTopicRequest{{Name: "a", Partitions: 1, RequestId: &metadatav1.RequestId{SessionId: 1, Sequence: 1}}}},
	} {
		out := c.do(func(done func(Outcome)) { leader.CreateTopics(req, done) })
		require.NotNil(t, out.Err, name)
		assert.Equal(t, metadatav1.ErrorCode_INVALID_REQUEST, out.Err.Code, name)
		assert.Nil(t, out.Items, name)
	}
	out := c.do(func(done func(Outcome)) {
		leader.DeleteTopics(&metadatav1.DeleteTopicsRequest{Names: []string{"a", "a"}}, done)
	})
	assert.Equal(t, metadatav1.ErrorCode_INVALID_REQUEST, out.Err.GetCode())
}
