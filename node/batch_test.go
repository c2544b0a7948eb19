package node

import (
	"slices"
	"testing"

	metadatav1 "github.com/dmq-project/metadata/gen/dmq/metadata/v1"
	"github.com/dmq-project/metadata/statemachine"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/proto"
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
	assert.Equal(t, codesOf(first.Items), codesOf(retry.Items), "a retry is answered with the first items, in the same order")
	assert.Equal(t, first.Items[0].TopicID, retry.Items[0].TopicID)
	assert.Equal(t, first.Items[1], retry.Items[1], "refused here: the reason is given again")

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

// A retry that reaches a controller configured otherwise (another default
// replication factor, so other items refused before the log) gets the
// first answer, item by item, in the request's order; a request id used
// again for another request is refused, not answered with another's items
// (found by review: the first crashed the node on an index out of range,
// the second answered one topic's result as another's).
func TestBatchRetryOnAControllerConfiguredOtherwise(t *testing.T) {
	c := newCluster(t, 3, nil)
	c.nodes[1].cfg.DefaultReplicationFactor = 3
	c.nodes[2].cfg.DefaultReplicationFactor = 1
	leader := c.elect(1)
	for id := int32(1); id <= 3; id++ {
		require.Nil(t, c.do(func(done func(Outcome)) { leader.RegisterBroker(registerReq(id), done) }).Err)
	}
	session := c.openSession(leader)
	req := &metadatav1.CreateTopicsRequest{RequestId: &metadatav1.RequestId{SessionId: session, Sequence: 1, ClientId: "test"},
		Topics: []*metadatav1.CreateTopicRequest{
			{Name: "a", Partitions: 1, Configs: map[string]string{"min.insync.replicas": "2"}}, // rf 1 on node 2: refused there
			{Name: "b", Partitions: 1, ReplicationFactor: 1},
		}}
	first := c.do(func(done func(Outcome)) { leader.CreateTopics(req, done) })
	require.Nil(t, first.Err)
	require.Equal(t, []metadatav1.ErrorCode{none, none}, codesOf(first.Items))

	c.tick(3)
	next := c.nodes[2]
	leader.TransferLeader(2, func(error) {})
	for i := 0; i < 100 && !next.IsActive(); i++ {
		c.process()
		c.tick(1)
	}
	require.True(t, next.IsActive())
	retry := c.do(func(done func(Outcome)) { next.CreateTopics(req, done) })
	require.Nil(t, retry.Err)
	assert.Equal(t, []metadatav1.ErrorCode{none, none}, codesOf(retry.Items), "the committed answer, not this controller's view")
	assert.Equal(t, first.Items[0].TopicID, retry.Items[0].TopicID)
	assert.Equal(t, first.Items[1].TopicID, retry.Items[1].TopicID)

	atomic := proto.CloneOf(req)
	atomic.Atomic = true
	again := c.do(func(done func(Outcome)) { next.CreateTopics(atomic, done) })
	require.Nil(t, again.Err, "an atomic retry refused here is still the committed success")

	other := &metadatav1.DeleteTopicsRequest{RequestId: req.RequestId, Names: []string{"a"}}
	reused := c.do(func(done func(Outcome)) { next.DeleteTopics(other, done) })
	require.NotNil(t, reused.Err)
	assert.Equal(t, metadatav1.ErrorCode_INVALID_REQUEST, reused.Err.Code)
	assert.Contains(t, reused.Err.Message, "used before")
}

// An atomic batch refused for an item this controller refuses still says,
// for each other item, whether it alone would apply: BATCH_ABORTED only
// for those (found by review: an existing name was called valid).
func TestAtomicBatchRefusedHereChecksTheOthersAgainstTheState(t *testing.T) {
	c := newCluster(t, 1, nil)
	leader := c.elect(1)
	require.Nil(t, c.do(func(done func(Outcome)) { leader.RegisterBroker(registerReq(1), done) }).Err)
	require.Nil(t, c.do(func(done func(Outcome)) { leader.CreateTopic(createTopicReq("taken", 1, 1), done) }).Err)
	req := &metadatav1.CreateTopicsRequest{Atomic: true, Topics: []*metadatav1.CreateTopicRequest{
		createTopicReq("taken", 1, 1), createTopicReq("free", 1, 1), createTopicReq("bad name", 1, 1)}}
	out := c.do(func(done func(Outcome)) { leader.CreateTopics(req, done) })
	require.NotNil(t, out.Err)
	assert.Equal(t, exists, out.Err.Code, "the first failure's code")
	assert.Equal(t, []metadatav1.ErrorCode{exists, aborted, badName}, codesOf(out.Items))
}

// After a broker joins, a rebalance plans moves onto it (a dry run
// changes nothing), then runs them in waves; a decommission empties a
// broker.
func TestRebalancePlansAndRuns(t *testing.T) {
	c := newCluster(t, 1, nil)
	leader := c.elect(1)
	for id := int32(1); id <= 2; id++ {
		require.Nil(t, c.do(func(done func(Outcome)) { leader.RegisterBroker(registerReq(id), done) }).Err)
	}
	for _, name := range []string{"a", "b", "c", "d"} {
		require.Nil(t, c.do(func(done func(Outcome)) { leader.CreateTopic(createTopicReq(name, 2, 1), done) }).Err)
	}
	require.Nil(t, c.do(func(done func(Outcome)) { leader.RegisterBroker(registerReq(3), done) }).Err)
	rebalance := func(req *metadatav1.RebalanceRequest) (Outcome, []*metadatav1.PartitionReassignment) {
		var out *Outcome
		var moves []*metadatav1.PartitionReassignment
		leader.Rebalance(req, func(o Outcome, m []*metadatav1.PartitionReassignment) { out, moves = &o, m })
		for i := 0; i < 50 && out == nil; i++ {
			c.process()
			c.tick(1)
		}
		require.NotNil(t, out)
		return *out, moves
	}
	version := leader.StateMachine().Version()
	out, moves := rebalance(&metadatav1.RebalanceRequest{DryRun: true})
	require.Nil(t, out.Err)
	assert.Len(t, moves, 2, "8 replicas on 3 brokers: 2 move to the new one")
	for _, m := range moves {
		assert.Equal(t, []int32{3}, m.Replicas)
	}
	assert.Equal(t, version, leader.StateMachine().Version(), "a dry run changes nothing")

	out, _ = rebalance(&metadatav1.RebalanceRequest{MaxMoving: 1})
	require.Nil(t, out.Err)
	status := leader.StateMachine().BalanceStatus()
	assert.Equal(t, []int32{2, 1, 1, 1}, []int32{status.Planned, status.Started, status.Pending, status.Moving})

	out, moves = rebalance(&metadatav1.RebalanceRequest{DryRun: true, Decommission: []int32{1}})
	require.Nil(t, out.Err)
	for _, m := range moves {
		assert.NotContains(t, m.Replicas, int32(1))
	}
	out, _ = rebalance(&metadatav1.RebalanceRequest{Decommission: []int32{9}})
	assert.Equal(t, metadatav1.ErrorCode_UNKNOWN_BROKER, out.Err.GetCode())
}

// A broker that registers for the first time gets its share through a
// plan the active controller proposes on its own (RebalanceOnJoin); one
// that comes back does not start another.
func TestBrokerJoiningForTheFirstTimeIsGivenItsShare(t *testing.T) {
	c, leader := joiningCluster(t, 2, []string{"a", "b", "c"}, 2, 2)
	require.Zero(t, leader.StateMachine().BalanceStatus().GetPlanned(), "brokers that join an empty cluster need no move")
	require.Nil(t, c.do(func(done func(Outcome)) { leader.RegisterBroker(registerReq(3), done) }).Err)
	c.process()
	c.tick(2)
	status := leader.StateMachine().BalanceStatus()
	assert.Equal(t, int32(4), status.GetPlanned(), "12 replicas on 3 brokers: 4 move to the new one")
	assert.Contains(t, c.eventsOf(1, EventRebalance, 0)[0].Detail, "4 moves")

	require.Nil(t, c.do(func(done func(Outcome)) { leader.UnregisterBroker(&metadatav1.UnregisterBrokerRequest{Id: 3}, done) }).Err)
	since := status.GetSinceVersion()
	require.Nil(t, c.do(func(done func(Outcome)) { leader.RegisterBroker(registerReq(3), done) }).Err)
	c.process()
	c.tick(2)
	assert.Equal(t, since, leader.StateMachine().BalanceStatus().GetSinceVersion(), "a broker that comes back starts no plan")
}

// An operator's decommission committed while the controller computed a
// plan of its own (for a broker that joined) stands: the controller's
// plan names the plan it was computed against, and apply refuses it
// (found in review).
func TestDecommissionCommittedWhileAJoinPlanIsComputedStands(t *testing.T) {
	c, leader := joiningCluster(t, 2, []string{"a", "b", "c"}, 2, 2)
	c.holdWork = true
	require.Nil(t, c.do(func(done func(Outcome)) { leader.RegisterBroker(registerReq(3), done) }).Err)
	require.Len(t, c.held, 1, "the join's plan is being computed")
	var decommissioned *Outcome
	leader.Rebalance(&metadatav1.RebalanceRequest{Decommission: []int32{2}}, func(o Outcome, _ []*metadatav1.PartitionReassignment) { decommissioned = &o })
	require.Len(t, c.held, 2)
	c.runHeld(1) // the decommission's plan: proposed
	c.runHeld(0) // the join's, before the decommission is applied
	c.process()
	c.tick(2)
	require.NotNil(t, decommissioned)
	require.Nil(t, decommissioned.Err)
	assert.Equal(t, []int32{2}, leader.StateMachine().BalanceStatus().GetDraining(), "the decommission stands")
}

// A broker that joins while a plan is being computed is not forgotten:
// its plan follows once that one is done (found in review).
func TestJoinWhilePlanningIsPlannedAfter(t *testing.T) {
	c, leader := joiningCluster(t, 2, []string{"a", "b", "c", "d"}, 3, 1)
	c.holdWork = true
	require.Nil(t, c.do(func(done func(Outcome)) { leader.RegisterBroker(registerReq(3), done) }).Err)
	require.Nil(t, c.do(func(done func(Outcome)) { leader.RegisterBroker(registerReq(4), done) }).Err)
	require.Len(t, c.held, 1, "one plan at a time")
	c.releaseWork()
	c.tick(2)
	require.Len(t, c.held, 1, "the second join's plan follows")
	c.releaseWork()
	c.tick(2)
	events := c.eventsOf(1, EventRebalance, 0)
	require.Len(t, events, 2)
	assert.Equal(t, int32(4), events[1].Broker)
}

// A broker that joined while a plan was being computed, and is gone by the
// time that plan has started its moves, gets no plan of its own: a plan
// then gives it nothing, and only moves the others' replicas, balancing
// the partitions not moving as if the moves underway did not count, in
// place of the plan that started them (simulator seed 289: an operator's
// rebalance, replaced by the plan for a client's broker unregistered
// since, left a rack's two brokers with 8 and 6 replicas).
func TestJoinWaitingForABrokerGoneSincePlansNothing(t *testing.T) {
	c, leader := joiningCluster(t, 2, []string{"a", "b", "c"}, 2, 2)
	c.holdWork = true
	require.Nil(t, c.do(func(done func(Outcome)) { leader.RegisterBroker(registerReq(3), done) }).Err)
	require.Nil(t, c.do(func(done func(Outcome)) { leader.RegisterBroker(registerReq(4), done) }).Err)
	require.Len(t, c.held, 1, "one plan at a time: broker 4's waits")
	require.Nil(t, c.do(func(done func(Outcome)) { leader.UnregisterBroker(&metadatav1.UnregisterBrokerRequest{Id: 4}, done) }).Err)
	c.holdWork = false
	c.releaseWork() // broker 3's plan: 4 of the 12 replicas move to it
	status := leader.StateMachine().BalanceStatus()
	require.Equal(t, []int32{4, 4, 0}, []int32{status.GetPlanned(), status.GetMoving(), status.GetPending()})
	c.tick(2)
	assert.Len(t, c.eventsOf(1, EventRebalance, 0), 1, "no plan for broker 4, gone")
	assert.Equal(t, status.GetSinceVersion(), leader.StateMachine().BalanceStatus().GetSinceVersion(), "broker 3's plan stands")
	held := 0
	for _, tp := range leader.StateMachine().ClusterState().GetTopics() {
		for _, p := range tp.GetPartitions() {
			if slices.Contains(p.GetReplicas(), 3) && !slices.Contains(p.GetRemovingReplicas(), 3) {
				held++
			}
		}
	}
	assert.Equal(t, 4, held, "broker 3 is to hold its share, 12 replicas over 3 brokers")
}

// A waiting broker that is shutting down (or fenced) is not planned for
// while so, but keeps its place: it may come back live without
// registering again, and must then get its share (found in review: it was
// dropped for good).
func TestJoinWaitingForABrokerShuttingDownKeepsItsPlace(t *testing.T) {
	c, leader := joiningCluster(t, 2, []string{"a", "b", "c"}, 2, 2)
	c.holdWork = true
	require.Nil(t, c.do(func(done func(Outcome)) { leader.RegisterBroker(registerReq(3), done) }).Err)
	require.Nil(t, c.do(func(done func(Outcome)) { leader.RegisterBroker(registerReq(4), done) }).Err)
	require.Len(t, c.held, 1, "one plan at a time: broker 4's waits")
	_, err := leader.Heartbeat(&metadatav1.StorageHeartbeatRequest{ServiceId: "4", MetadataVersion: leader.StateMachine().Version(), IsAlive: new(false)})
	require.Nil(t, err)
	c.tick(2)
	require.True(t, leader.StateMachine().BrokerStatus(4).ShuttingDown)
	c.holdWork = false
	c.releaseWork()
	c.tick(2)
	assert.Len(t, c.eventsOf(1, EventRebalance, 0), 1, "no plan for broker 4 while it shuts down")
	assert.Equal(t, []int32{4}, leader.controller.joinsWaiting, "broker 4 keeps its place")
}

// At most PlansInFlightMax plans for Rebalance calls are computed at once;
// one more is refused as unavailable (found in review: every retry of a
// client started another copy of the state's replica lists).
func TestRebalanceCallsBeyondThePlansInFlightAreRefused(t *testing.T) {
	c := newCluster(t, 1, nil)
	leader := c.elect(1)
	require.Nil(t, c.do(func(done func(Outcome)) { leader.RegisterBroker(registerReq(1), done) }).Err)
	c.holdWork = true
	var outcomes []Outcome
	for i := 0; i <= PlansInFlightMax; i++ {
		leader.Rebalance(&metadatav1.RebalanceRequest{DryRun: true}, func(o Outcome, _ []*metadatav1.PartitionReassignment) { outcomes = append(outcomes, o) })
	}
	require.Len(t, outcomes, 1)
	assert.Equal(t, metadatav1.ErrorCode_UNAVAILABLE, outcomes[0].Err.GetCode())
	c.releaseWork()
	require.Len(t, outcomes, PlansInFlightMax+1)
	leader.Rebalance(&metadatav1.RebalanceRequest{DryRun: true}, func(o Outcome, _ []*metadatav1.PartitionReassignment) { outcomes = append(outcomes, o) })
	c.releaseWork()
	assert.Nil(t, outcomes[len(outcomes)-1].Err)
}

// joiningCluster is a lone controller that plans for brokers joining
// (RebalanceOnJoin), with brokers 1..brokers registered and the topics
// created.
func joiningCluster(t *testing.T, brokers int32, topics []string, partitions, rf int32) (*cluster, *Node) {
	c := newCluster(t, 1, func(cfg *Config) { cfg.RebalanceOnJoin = true })
	leader := c.elect(1)
	for id := int32(1); id <= brokers; id++ {
		require.Nil(t, c.do(func(done func(Outcome)) { leader.RegisterBroker(registerReq(id), done) }).Err)
	}
	for _, name := range topics {
		require.Nil(t, c.do(func(done func(Outcome)) { leader.CreateTopic(createTopicReq(name, partitions, rf), done) }).Err)
	}
	return c, leader
}
