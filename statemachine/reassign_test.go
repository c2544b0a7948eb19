package statemachine

import (
	"testing"

	metadatav1 "github.com/dmq-project/metadata/gen/dmq/metadata/v1"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func reassignRecord(items ...*metadatav1.PartitionReassignment) *metadatav1.Record {
	return &metadatav1.Record{Body: &metadatav1.Record_AlterPartitionReassignments{
		AlterPartitionReassignments: &metadatav1.AlterPartitionReassignmentsRecord{Reassignments: items}}}
}

func target(topic string, partition int32, replicas ...int32) *metadatav1.PartitionReassignment {
	return &metadatav1.PartitionReassignment{Topic: topic, Partition: partition, Replicas: replicas}
}

// isrChange is the AlterPartition the partition's current leader sends.
func (h *harness) isrChange(topic string, partition int32, isr ...int32) Result {
	h.t.Helper()
	p := h.sm.Topic(topic).Partitions[partition]
	return h.apply(&metadatav1.Record{Body: &metadatav1.Record_AlterPartition{AlterPartition: &metadatav1.AlterPartitionRecord{
		BrokerId: p.Leader, BrokerEpoch: h.sm.Broker(p.Leader).BrokerEpoch, Topic: topic, Partition: partition,
		LeaderEpoch: p.LeaderEpoch, PartitionEpoch: p.PartitionEpoch, NewIsr: isr}}})
}

// movingTopic is topic "t" of one partition on brokers [1 2], led by 1,
// with brokers 1-4 registered.
func movingTopic(t *testing.T) *harness {
	h := newHarness(t)
	for id := int32(1); id <= 4; id++ {
		h.mustApply(registerRecord(id, ""))
	}
	h.mustApply(createTopicRecord("t", 1, 2, 0, 1))
	p := h.sm.Topic("t").Partitions[0]
	require.Equal(t, []int32{1, 2}, p.Replicas)
	require.EqualValues(t, 1, p.Leader)
	return h
}

func TestReassignmentMovesThroughTheUnion(t *testing.T) {
	h := movingTopic(t)
	before := h.sm.Version()
	r := h.mustApply(reassignRecord(target("t", 0, 3, 2)))
	require.Nil(t, r.Items[0].Err)
	p := h.sm.Topic("t").Partitions[0]
	assert.Equal(t, []int32{3, 2, 1}, p.Replicas, "the target, then the leaving replica")
	assert.Equal(t, []int32{3}, p.AddingReplicas)
	assert.Equal(t, []int32{1}, p.RemovingReplicas)
	assert.Equal(t, []int32{1, 2}, p.Isr)
	assert.EqualValues(t, 1, p.Leader, "the leader stays until the move completes")
	delta, ok := h.sm.DeltaSince(before)
	require.True(t, ok)
	require.Len(t, delta.ChangedPartitions, 1)
	assert.Equal(t, []int32{3}, delta.ChangedPartitions[0].AddingReplicas, "storage services see the move")
	require.Len(t, h.sm.Reassignments(), 1)

	// The leader reports 3 caught up: the move completes in that apply,
	// leadership goes to the target's first replica in the ISR.
	require.Nil(t, h.isrChange("t", 0, 1, 2, 3).Err)
	p = h.sm.Topic("t").Partitions[0]
	assert.Equal(t, []int32{3, 2}, p.Replicas)
	assert.Equal(t, []int32{2, 3}, p.Isr)
	assert.EqualValues(t, 3, p.Leader)
	assert.Empty(t, p.AddingReplicas)
	assert.Empty(t, h.sm.Reassignments())
}

func TestReassignmentWaitsForItsTargetsInTheISR(t *testing.T) {
	h := movingTopic(t)
	h.mustApply(reassignRecord(target("t", 0, 3, 4)))
	require.Nil(t, h.isrChange("t", 0, 1, 2, 3).Err)
	p := h.sm.Topic("t").Partitions[0]
	assert.Equal(t, []int32{3, 4, 1, 2}, p.Replicas, "4 is not in the ISR yet")
	require.Nil(t, h.isrChange("t", 0, 1, 3).Err, "a leaving replica may drop out meanwhile")
	require.Len(t, h.sm.Reassignments(), 1)
	require.Nil(t, h.isrChange("t", 0, 1, 3, 4).Err)
	p = h.sm.Topic("t").Partitions[0]
	assert.Equal(t, []int32{3, 4}, p.Replicas)
	assert.EqualValues(t, 3, p.Leader)
}

func TestReassignmentSurvivesFencesAndIsCancelled(t *testing.T) {
	h := movingTopic(t)
	h.mustApply(reassignRecord(target("t", 0, 3, 2)))
	// The leaving leader is fenced mid-move: 2 leads; the move goes on.
	h.mustApply(fenceRecord(1, 0))
	p := h.sm.Topic("t").Partitions[0]
	assert.EqualValues(t, 2, p.Leader)
	assert.Equal(t, []int32{2}, p.Isr)
	require.Len(t, h.sm.Reassignments(), 1)
	// Cancelled: back to the original replicas, the ISR within them.
	h.mustApply(reassignRecord(target("t", 0)))
	p = h.sm.Topic("t").Partitions[0]
	assert.Equal(t, []int32{1, 2}, p.Replicas)
	assert.Equal(t, []int32{2}, p.Isr)
	assert.Empty(t, h.sm.Reassignments())
	r := h.mustApply(reassignRecord(target("t", 0)))
	assert.Equal(t, metadatav1.ErrorCode_NO_REASSIGNMENT_IN_PROGRESS, r.Items[0].Err.GetCode())
}

func TestReassignmentAgainRetargetsTheMove(t *testing.T) {
	h := movingTopic(t)
	h.mustApply(reassignRecord(target("t", 0, 3, 4)))
	require.Nil(t, h.isrChange("t", 0, 1, 2, 3).Err)
	// A new target while moving: the original replicas stay the base; 3,
	// an adding replica the new target drops, leaves replicas and ISR.
	h.mustApply(reassignRecord(target("t", 0, 4, 1)))
	p := h.sm.Topic("t").Partitions[0]
	assert.Equal(t, []int32{4, 1, 2}, p.Replicas)
	assert.Equal(t, []int32{4}, p.AddingReplicas)
	assert.Equal(t, []int32{2}, p.RemovingReplicas)
	assert.Equal(t, []int32{1, 2}, p.Isr)
	// The same replicas in another order: no move, only the order.
	h.mustApply(reassignRecord(target("t", 0, 2, 1)))
	p = h.sm.Topic("t").Partitions[0]
	assert.Equal(t, []int32{2, 1}, p.Replicas)
	assert.Empty(t, h.sm.Reassignments())
}

func TestReassignmentsAreChecked(t *testing.T) {
	h := movingTopic(t)
	h.mustApply(fenceRecord(4, 0))
	r := h.mustApply(reassignRecord(
		target("missing", 0, 1, 2),
		target("t", 5, 1, 2),
		target("t", 0, 1, 9),
		target("t", 0, 1, 4),
		target("t", 0, 1, 2, 3),
		target("t", 0, 1, 1),
	))
	assert.Equal(t, []metadatav1.ErrorCode{metadatav1.ErrorCode_UNKNOWN_TOPIC, metadatav1.ErrorCode_UNKNOWN_PARTITION,
		metadatav1.ErrorCode_INVALID_REPLICA_ASSIGNMENT, metadatav1.ErrorCode_INVALID_REPLICA_ASSIGNMENT,
		metadatav1.ErrorCode_INVALID_REPLICA_ASSIGNMENT, metadatav1.ErrorCode_INVALID_REPLICA_ASSIGNMENT}, itemCodes(r.Items))
	assert.Equal(t, []int32{1, 2}, h.sm.Topic("t").Partitions[0].Replicas)
}

func TestMoveSurvivesASnapshot(t *testing.T) {
	h := movingTopic(t)
	h.mustApply(reassignRecord(target("t", 0, 3, 4)))
	restored, err := Restore(h.sm.Snapshot())
	require.NoError(t, err)
	assert.Equal(t, h.sm.Reassignments(), restored.Reassignments())
	assert.Equal(t, h.sm.Hash(), restored.Hash())
}

// A move of a partition whose index is larger than the bytes that follow
// it in the snapshot restores (found by review: the index was read as a
// length and refused).
func TestMoveOfAHighPartitionSurvivesASnapshot(t *testing.T) {
	h := newHarness(t)
	for id := int32(1); id <= 4; id++ {
		h.mustApply(registerRecord(id, ""))
	}
	h.mustApply(createTopicRecord("zz", 200, 2, 0, 1))
	p := h.sm.Topic("zz").Partitions[199]
	newReplicas := []int32{}
	for id := int32(1); id <= 4 && len(newReplicas) < 2; id++ {
		if !contains(p.Replicas, id) {
			newReplicas = append(newReplicas, id)
		}
	}
	h.mustApply(reassignRecord(target("zz", 199, newReplicas...)))
	restored, err := Restore(h.sm.Snapshot())
	require.NoError(t, err)
	assert.Equal(t, h.sm.Reassignments(), restored.Reassignments())
}

// A move that drops a replica bumps the leader epoch even when the leader
// stays, so that the dropped replica's log is fenced (Kafka's rule; found
// by review).
func TestDroppingAReplicaBumpsTheLeaderEpoch(t *testing.T) {
	h := movingTopic(t)
	epoch := h.sm.Topic("t").Partitions[0].LeaderEpoch
	h.mustApply(reassignRecord(target("t", 0, 1, 3)))
	require.Nil(t, h.isrChange("t", 0, 1, 2, 3).Err)
	p := h.sm.Topic("t").Partitions[0]
	require.Equal(t, []int32{1, 3}, p.Replicas)
	require.EqualValues(t, 1, p.Leader, "the leader stays")
	assert.Greater(t, p.LeaderEpoch, epoch)
}

// A move whose target an unclean election puts in the ISR completes then,
// not only on the next ISR change (found by review).
func TestUncleanElectionCompletesAMove(t *testing.T) {
	h := newHarness(t)
	h.mustApply(registerRecord(1, ""))
	h.mustApply(registerRecord(2, ""))
	record := createTopicRecord("t", 1, 1, 0, 1)
	record.GetCreateTopic().Config.UncleanLeaderElectionEnable = true
	h.mustApply(record)
	from := h.sm.Topic("t").Partitions[0].Leader
	to := 3 - from
	h.mustApply(reassignRecord(target("t", 0, to)))
	h.mustApply(fenceRecord(from, 0))
	p := h.sm.Topic("t").Partitions[0]
	assert.Equal(t, to, p.Leader)
	assert.Equal(t, []int32{to}, p.Replicas, "the move completed")
	assert.Empty(t, h.sm.Reassignments())
}
