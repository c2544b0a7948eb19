package statemachine

import (
	"fmt"
	"testing"

	metadatav1 "github.com/dmq-project/metadata/gen/dmq/metadata/v1"
	"github.com/dmq-project/metadata/wire"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/proto"
	"pgregory.net/rapid"
)

var (
	propertyTopicNames = []string{"a", "b", "c.d", "c_d", "e-1"}
	propertyRacks      = []string{"", "r1", "r2", "r3"}
)

// recordGen draws records over a small universe of brokers and topics, so
// that sequences collide, fence, retry and fail often. Some records are
// built from the current state (valid AlterPartition requests, epochs that
// match) and some are deliberately stale.
func recordGen(t *rapid.T, sm *StateMachine, topicIDSeed *int) *metadatav1.Record {
	brokerID := rapid.Int32Range(1, 6).Draw(t, "broker")
	epochFor := func(label string) int64 {
		epoch, _ := sm.BrokerEpoch(brokerID)
		return rapid.SampledFrom([]int64{0, epoch, epoch, epoch + 3}).Draw(t, label)
	}
	topicName := rapid.SampledFrom(propertyTopicNames).Draw(t, "topic")
	switch rapid.IntRange(0, 10).Draw(t, "kind") {
	case 0, 1:
		return &metadatav1.Record{Body: &metadatav1.Record_RegisterBroker{RegisterBroker: &metadatav1.RegisterBrokerRecord{
			BrokerId: brokerID, Host: fmt.Sprintf("b%d.local", brokerID), Port: 9092,
			Rack:          rapid.SampledFrom(propertyRacks).Draw(t, "rack"),
			IncarnationId: rapid.SampledFrom([]string{"i1", "i2"}).Draw(t, "incarnation"),
		}}}
	case 2:
		return &metadatav1.Record{Body: &metadatav1.Record_UnregisterBroker{UnregisterBroker: &metadatav1.UnregisterBrokerRecord{BrokerId: brokerID}}}
	case 3:
		return fenceRecord(brokerID, epochFor("fenceEpoch"))
	case 4:
		return unfenceRecord(brokerID, epochFor("unfenceEpoch"))
	case 5:
		return &metadatav1.Record{Body: &metadatav1.Record_BeginControlledShutdown{BeginControlledShutdown: &metadatav1.BeginControlledShutdownRecord{
			BrokerId: brokerID, BrokerEpoch: epochFor("shutdownEpoch")}}}
	case 6:
		*topicIDSeed++
		rf := rapid.Int32Range(1, 4).Draw(t, "rf")
		record := createTopicRecord(topicName, rapid.Int32Range(1, 12).Draw(t, "partitions"), rf,
			rapid.Uint32().Draw(t, "offset"), *topicIDSeed)
		record.GetCreateTopic().Config.UncleanLeaderElectionEnable = rapid.Bool().Draw(t, "unclean")
		return record
	case 7:
		return &metadatav1.Record{Body: &metadatav1.Record_DeleteTopic{DeleteTopic: &metadatav1.DeleteTopicRecord{Name: topicName}}}
	case 8:
		current := 0
		if topic := sm.Topic(topicName); topic != nil {
			current = len(topic.Partitions)
		}
		return &metadatav1.Record{Body: &metadatav1.Record_CreatePartitions{CreatePartitions: &metadatav1.CreatePartitionsRecord{
			Topic: topicName, PartitionCount: int32(current + rapid.IntRange(-1, 5).Draw(t, "grow")),
			PlacementOffset: rapid.Uint32().Draw(t, "growOffset"),
		}}}
	case 9:
		topic := sm.Topic(topicName)
		if topic == nil {
			return &metadatav1.Record{Body: &metadatav1.Record_NoOp{NoOp: &metadatav1.NoOpRecord{}}}
		}
		p := rapid.SampledFrom(topic.Partitions).Draw(t, "partition")
		epoch, _ := sm.BrokerEpoch(p.Leader)
		isr := []int32{p.Leader}
		for _, id := range p.Replicas {
			if id != p.Leader && rapid.Bool().Draw(t, "inISR") {
				isr = append(isr, id)
			}
		}
		return &metadatav1.Record{Body: &metadatav1.Record_AlterPartition{AlterPartition: &metadatav1.AlterPartitionRecord{
			BrokerId: p.Leader, BrokerEpoch: epoch, Topic: topicName, Partition: p.Partition,
			LeaderEpoch: p.LeaderEpoch, PartitionEpoch: p.PartitionEpoch - int32(rapid.IntRange(0, 1).Draw(t, "staleEpoch")),
			NewIsr: isr,
		}}}
	default:
		return &metadatav1.Record{Body: &metadatav1.Record_ElectLeaders{ElectLeaders: &metadatav1.ElectLeadersRecord{}}}
	}
}

// TestPropertyReplicasAgree: two state machines fed the same records agree
// on every result and hash; a snapshot taken anywhere restores to the same
// state and answers, and keeps agreeing as the log continues; invariants hold
// after every record; a retried request id is applied once.
func TestPropertyReplicasAgree(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		a, b := New(), New()
		var restored *StateMachine
		topicIDSeed := 0
		type sent struct {
			record *metadatav1.Record
			result Result
		}
		var withIDs []sent
		states := []*metadatav1.ClusterState{a.ClusterState()}
		// One session, opened first; its requests carry sequences 1, 2, ...
		// and some are retried, the last one (a duplicate) or an older one
		// (refused). The clock moves by the leaders' stamps, sometimes back.
		var sequence uint64
		clock := int64(0)
		steps := rapid.IntRange(1, 120).Draw(t, "steps")
		for i := 0; i < steps; i++ {
			index := a.AppliedIndex() + 1
			var record *metadatav1.Record
			switch {
			case i == 0:
				record = openSessionRecord("c", rapid.Int64Range(SessionTimeoutMin, 10*SessionTimeoutMin).Draw(t, "timeout"))
			case len(withIDs) > 0 && rapid.IntRange(0, 9).Draw(t, "retry") == 0:
				record = proto.Clone(rapid.SampledFrom(withIDs).Draw(t, "retried").record).(*metadatav1.Record)
			default:
				record = recordGen(t, a, &topicIDSeed)
				if rapid.Bool().Draw(t, "withID") {
					sequence++
					record.RequestId = &metadatav1.RequestId{ClientId: "c", SessionId: 1, Sequence: sequence}
				}
			}
			clock += rapid.Int64Range(-500, 2*SessionTimeoutMin).Draw(t, "tick")
			record.LeaderTimeMs = max(clock, 0)
			data, err := proto.Marshal(record)
			require.NoError(t, err)
			before := stateBytesWithoutVersion(a)
			ra := a.Apply(index, record)
			rb := b.ApplyEntry(index, data)
			require.Equal(t, ra, rb)
			require.Equal(t, a.Hash(), b.Hash())
			require.NoError(t, a.CheckInvariants(), "after %v", record)
			if ra.Err != nil || ra.Duplicate {
				require.Equal(t, before, stateBytesWithoutVersion(a), "an error or a retry changed the state")
			}
			if ra.Duplicate {
				last := withIDs[len(withIDs)-1]
				require.True(t, proto.Equal(last.record.RequestId, record.RequestId), "only the last request of a session is a duplicate")
				want := last.result
				want.Duplicate = true
				require.Equal(t, want, ra)
			} else if record.RequestId != nil && ra.Err.GetCode() != metadatav1.ErrorCode_SESSION_EXPIRED {
				withIDs = append(withIDs, sent{record: record, result: ra})
			}
			if restored != nil {
				require.Equal(t, ra, restored.Apply(index, record))
				require.Equal(t, a.Hash(), restored.Hash())
			} else if rapid.IntRange(0, 19).Draw(t, "snapshot") == 0 {
				restored, err = Restore(a.Snapshot())
				require.NoError(t, err)
				require.Equal(t, a.Hash(), restored.Hash())
				require.True(t, proto.Equal(a.ClusterState(), restored.ClusterState()))
			}
			assertNoFencedLeaders(t, a)
			states = append(states, a.ClusterState())
			since := rapid.IntRange(0, len(states)-1).Draw(t, "deltaSince")
			delta, ok := a.DeltaSince(states[since].MetadataVersion)
			require.True(t, ok, "the history holds every change of a short run")
			require.True(t, proto.Equal(a.ClusterState(), wire.ApplyDelta(states[since], delta)),
				"a receiver at %d applying the delta does not reach the state at %d", since, a.Version())
		}
	})
}

func assertNoFencedLeaders(t require.TestingT, sm *StateMachine) {
	for _, name := range sm.sortedTopicNames() {
		for i, p := range sm.topics[name].partitions {
			if p.leader == NoLeader {
				continue
			}
			b := sm.brokers[p.leader]
			require.NotNil(t, b, "%s-%d led by an unregistered broker", name, i)
			require.False(t, b.fenced, "%s-%d led by fenced broker %d", name, i, p.leader)
			require.Contains(t, p.isr, p.leader)
		}
	}
}

// TestPropertyPlacement checks replica placement on arbitrary clusters: no
// broker twice in a replica set; each set spread over as many racks as it
// can be, as evenly as the racks' sizes allow; and on a balanced cluster
// (every rack the same size) leader counts within one of each other.
func TestPropertyPlacement(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		rackCount := rapid.IntRange(1, 4).Draw(t, "racks")
		balanced := rapid.Bool().Draw(t, "balanced")
		var brokers []*broker
		if balanced {
			perRack := rapid.IntRange(1, 4).Draw(t, "perRack")
			for r := 0; r < rackCount; r++ {
				for k := 0; k < perRack; k++ {
					id := int32(len(brokers) + 1)
					brokers = append(brokers, &broker{id: id, rack: fmt.Sprintf("rack%d", r)})
				}
			}
		} else {
			n := rapid.IntRange(1, 12).Draw(t, "brokers")
			for i := 0; i < n; i++ {
				brokers = append(brokers, &broker{id: int32(i + 1),
					rack: fmt.Sprintf("rack%d", rapid.IntRange(0, rackCount-1).Draw(t, "rack"))})
			}
		}
		rackOf := map[int32]string{}
		rackSize := map[string]int{}
		for _, b := range brokers {
			rackOf[b.id] = b.rack
			rackSize[b.rack]++
		}
		rf := rapid.IntRange(1, len(brokers)).Draw(t, "rf")
		count := rapid.IntRange(1, 60).Draw(t, "count")
		parts := placePartitions(nil, newBrokerRing(brokers), 0, count, rf, rapid.Uint32().Draw(t, "offset"))
		require.Len(t, parts, count)

		leaders := map[int32]int{}
		for _, p := range parts {
			require.Len(t, p.replicas, rf)
			require.Equal(t, p.replicas, p.isr)
			require.Equal(t, p.replicas[0], p.leader)
			leaders[p.leader]++
			perRack := map[string]int{}
			for j, id := range p.replicas {
				require.NotContains(t, p.replicas[:j], id, "broker %d twice in %v", id, p.replicas)
				perRack[rackOf[id]]++
			}
			// Evenness: a rack may exceed another's count by more than one
			// only if the other rack has no broker left to give.
			for rackA, nA := range perRack {
				for rackB := range rackSize {
					nB := perRack[rackB]
					if nA > nB+1 {
						require.Equal(t, rackSize[rackB], nB,
							"replicas %v: rack %s has %d, rack %s only %d of its %d brokers", p.replicas, rackA, nA, rackB, nB, rackSize[rackB])
					}
				}
			}
		}
		if balanced {
			lo, hi := count, 0
			for _, b := range brokers {
				lo, hi = min(lo, leaders[b.id]), max(hi, leaders[b.id])
			}
			require.LessOrEqual(t, hi-lo, 1, "leader counts %v", leaders)
		}
	})
}
