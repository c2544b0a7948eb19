package statemachine

import (
	"testing"

	metadatav1 "github.com/dmq-project/metadata/gen/dmq/metadata/v1"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// elrTopic is topic "t" of one partition on brokers [1 2 3], led by 1,
// min.insync.replicas 2.
func elrTopic(t *testing.T, unclean bool) *harness {
	h := newHarness(t)
	for id := int32(1); id <= 3; id++ {
		h.mustApply(registerRecord(id, ""))
	}
	record := createTopicRecord("t", 1, 3, 0, 1)
	record.GetCreateTopic().Config.MinInsyncReplicas = 2
	record.GetCreateTopic().Config.UncleanLeaderElectionEnable = unclean
	h.mustApply(record)
	p := h.sm.Topic("t").Partitions[0]
	require.Equal(t, []int32{1, 2, 3}, p.Replicas)
	return h
}

func partition0(h *harness) *metadatav1.Partition { return h.sm.Topic("t").Partitions[0] }

func TestReplicasLeavingBelowMinISRBecomeEligibleLeaders(t *testing.T) {
	h := elrTopic(t, false)
	require.Nil(t, h.isrChange("t", 0, 1, 2).Err)
	assert.Empty(t, partition0(h).EligibleLeaderReplicas, "3 left at min ISR: the ISR went on without it")
	require.Nil(t, h.isrChange("t", 0, 1).Err)
	assert.Equal(t, []int32{2}, partition0(h).EligibleLeaderReplicas, "2 left below min ISR: nothing committed since")

	// The leader fails: 2, an eligible leader replica, leads; 1 joins the
	// ELR as it leaves the ISR (below min ISR, nothing committed).
	h.mustApply(fenceRecord(1, 0))
	p := partition0(h)
	assert.EqualValues(t, 2, p.Leader)
	assert.Equal(t, []int32{2}, p.Isr)
	assert.Equal(t, []int32{1}, p.EligibleLeaderReplicas)

	// 2 fails too: 1 is not eligible (fenced), 3 is live but holds less:
	// offline, not 3.
	h.mustApply(fenceRecord(2, 0))
	p = partition0(h)
	assert.EqualValues(t, NoLeader, p.Leader, "never elected outside ISR and ELR")
	// 1 comes back: it is an eligible leader replica, so it leads.
	h.mustApply(unfenceRecord(1, 0))
	p = partition0(h)
	assert.EqualValues(t, 1, p.Leader)
	assert.Equal(t, []int32{1}, p.Isr)

	// The ISR back at min ISR: the ELR empties.
	require.Nil(t, h.isrChange("t", 0, 1, 3).Err)
	assert.Empty(t, partition0(h).EligibleLeaderReplicas)
}

func TestUncleanElectionGoesOutsideISRAndELR(t *testing.T) {
	h := elrTopic(t, true)
	require.Nil(t, h.isrChange("t", 0, 1, 2).Err)
	h.mustApply(fenceRecord(3, 0)) // 3 left at min ISR: not eligible
	require.Nil(t, h.isrChange("t", 0, 1).Err)
	require.Equal(t, []int32{2}, partition0(h).EligibleLeaderReplicas)
	h.mustApply(fenceRecord(2, 0))
	h.mustApply(fenceRecord(1, 0))
	require.EqualValues(t, NoLeader, partition0(h).Leader)
	// 3, outside ISR and ELR, comes back; the topic allows unclean
	// election.
	h.mustApply(unfenceRecord(3, 0))
	p := partition0(h)
	assert.EqualValues(t, 3, p.Leader, "elected uncleanly")
	assert.Empty(t, p.EligibleLeaderReplicas, "an unclean election forgets the ELR")
}

// A broker's log is taken to survive its restarts, in the ELR as in the
// ISR; one that unregisters leaves the ELR, and is never put back in it
// (found by review: an ISR change re-added it).
func TestELRKeepsRestartsAndDropsDepartures(t *testing.T) {
	h := elrTopic(t, false)
	require.Nil(t, h.isrChange("t", 0, 1).Err)
	require.Equal(t, []int32{2, 3}, partition0(h).EligibleLeaderReplicas)
	h.mustApply(fenceRecord(2, 0))
	h.mustApply(&metadatav1.Record{Body: &metadatav1.Record_RegisterBroker{RegisterBroker: &metadatav1.RegisterBrokerRecord{
		BrokerId: 2, Host: "broker-2.local", Port: 9092, IncarnationId: "inc-2"}}})
	assert.Equal(t, []int32{2, 3}, partition0(h).EligibleLeaderReplicas)
	h.mustApply(&metadatav1.Record{Body: &metadatav1.Record_UnregisterBroker{UnregisterBroker: &metadatav1.UnregisterBrokerRecord{BrokerId: 3}}})
	assert.Equal(t, []int32{2}, partition0(h).EligibleLeaderReplicas)
	// The leader unregisters too: 2 leads; 1, gone, does not join the ELR.
	h.mustApply(&metadatav1.Record{Body: &metadatav1.Record_UnregisterBroker{UnregisterBroker: &metadatav1.UnregisterBrokerRecord{BrokerId: 1}}})
	p := partition0(h)
	assert.EqualValues(t, 2, p.Leader)
	assert.Empty(t, p.EligibleLeaderReplicas)
	restored, err := Restore(h.sm.Snapshot())
	require.NoError(t, err)
	assert.Equal(t, h.sm.Hash(), restored.Hash())
}
