package statemachine

import (
	"strconv"
	"testing"

	metadatav1 "github.com/dmq-project/metadata/gen/dmq/metadata/v1"
	"github.com/stretchr/testify/require"
	"pgregory.net/rapid"
)

// viewRecordGen adds to recordGen what it leaves out and a view must
// survive too: reassignments (moves that start, complete and cancel),
// balancing plans, and config changes that shrink ELRs and elect unclean
// leaders.
func viewRecordGen(t *rapid.T, sm *StateMachine, topicIDSeed *int) *metadatav1.Record {
	topicName := rapid.SampledFrom(propertyTopicNames).Draw(t, "viewTopic")
	topic := sm.Topic(topicName)
	replicas := func(label string) []int32 {
		ids := rapid.SliceOfNDistinct(rapid.Int32Range(1, 6), 1, 4, func(id int32) int32 { return id }).Draw(t, label)
		if topic != nil && len(ids) > int(topic.ReplicationFactor) {
			ids = ids[:topic.ReplicationFactor]
		}
		return ids
	}
	switch rapid.IntRange(0, 5).Draw(t, "viewKind") {
	case 0:
		if topic == nil {
			break
		}
		return reassignRecord(target(topicName, rapid.Int32Range(0, int32(len(topic.Partitions))-1).Draw(t, "movePartition"), replicas("moveTo")...))
	case 1:
		if topic == nil {
			break
		}
		moves := []*metadatav1.PartitionReassignment{}
		for i := range rapid.IntRange(1, 3).Draw(t, "planMoves") {
			p := topic.Partitions[(i*7)%len(topic.Partitions)]
			moves = append(moves, &metadatav1.PartitionReassignment{Topic: topicName, Partition: p.Partition,
				Replicas: replicas("planTo"), ExpectedReplicas: p.Replicas})
		}
		return rebalanceRecord(rapid.Int32Range(1, 2).Draw(t, "maxMoving"), moves...)
	case 2:
		return alterRecord(changes(topicResource(topicName),
			set("min.insync.replicas", strconv.Itoa(rapid.IntRange(1, 3).Draw(t, "minISR"))),
			set("unclean.leader.election.enable", strconv.FormatBool(rapid.Bool().Draw(t, "uncleanOn")))))
	}
	return recordGen(t, sm, topicIDSeed)
}

// TestPropertyViewsHoldTheirVersion: a view encodes the state as it was
// when taken, byte for byte, however the state machine changes after it
// (each kind of record, with up to three views open at once, released in
// any order); and the state machine itself is unchanged by views: a twin
// without any applies the same records to the same hash.
func TestPropertyViewsHoldTheirVersion(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		sm, twin := New(), New()
		topicIDSeed := 0
		type open struct {
			view *View
			want []byte
		}
		var views []open
		steps := rapid.IntRange(1, 150).Draw(t, "steps")
		for i := range steps {
			index := sm.AppliedIndex() + 1
			record := viewRecordGen(t, sm, &topicIDSeed)
			record.LeaderTimeMs = int64(i) * 100
			require.Equal(t, twin.Apply(index, record), sm.Apply(index, record))
			require.Equal(t, twin.Hash(), sm.Hash(), "views changed what the state machine applies")
			require.NoError(t, sm.CheckInvariants())
			if len(views) < 3 && rapid.IntRange(0, 4).Draw(t, "take") == 0 {
				views = append(views, open{view: sm.View(), want: sm.Snapshot()})
			}
			if len(views) > 0 && rapid.IntRange(0, 6).Draw(t, "release") == 0 {
				k := rapid.IntRange(0, len(views)-1).Draw(t, "which")
				require.Equal(t, views[k].want, views[k].view.Snapshot(), "a view taken at version %d", views[k].view.Version())
				views[k].view.Release()
				views = append(views[:k], views[k+1:]...)
			}
		}
		for _, v := range views {
			require.Equal(t, v.want, v.view.Snapshot(), "a view taken at version %d", v.view.Version())
			v.view.Release()
		}
		require.Equal(t, twin.Snapshot(), sm.Snapshot())
	})
}

// TestViewCopiesOnlyTheTopicsChanged: a topic a view holds is copied once,
// at its first change; the others stay shared; once every view is
// released, topics change in place again.
func TestViewCopiesOnlyTheTopicsChanged(t *testing.T) {
	h := newHarness(t)
	for id := int32(1); id <= 3; id++ {
		h.mustApply(registerRecord(id, ""))
	}
	h.mustApply(createTopicRecord("kept", 4, 3, 0, 1))
	h.mustApply(createTopicRecord("changed", 4, 3, 0, 2))
	kept, changed := h.sm.topics["kept"], h.sm.topics["changed"]

	view := h.sm.View()
	want := h.sm.Snapshot()
	h.isrChange("changed", 0, h.sm.Topic("changed").Partitions[0].Leader)
	copied := h.sm.topics["changed"]
	require.NotSame(t, changed, copied, "a topic the view holds was changed in place")
	require.Same(t, kept, h.sm.topics["kept"], "a topic nobody changed was copied")
	h.isrChange("changed", 1, h.sm.Topic("changed").Partitions[1].Leader)
	require.Same(t, copied, h.sm.topics["changed"], "a topic copied once is copied again")
	require.Equal(t, want, view.Snapshot())

	view.Release()
	h.isrChange("kept", 0, h.sm.Topic("kept").Partitions[0].Leader)
	require.Same(t, kept, h.sm.topics["kept"], "copied with no view open")
	require.Panics(t, view.Release, "a view released twice")
}

// TestChangingAHeldTopicWithoutCopyingPanics: the guard that turns a
// change path which skips writableTopic into a failure instead of a
// snapshot that silently differs from its version.
func TestChangingAHeldTopicWithoutCopyingPanics(t *testing.T) {
	h := newHarness(t)
	h.mustApply(registerRecord(1, ""))
	h.mustApply(createTopicRecord("t", 1, 1, 0, 1))
	held := h.sm.topics["t"]
	view := h.sm.View()
	defer view.Release()
	require.Panics(t, func() { h.sm.setLeader(held, 0, NoLeader) })
	require.NotPanics(t, func() { h.sm.setLeader(h.sm.writableTopic(held), 0, NoLeader) })
}
