package node

import (
	"testing"

	metadatav1 "github.com/dmq-project/metadata/gen/dmq/metadata/v1"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/proto"
)

// requestKinds decode a payload into a request and hand it to the node.
var requestKinds = []func(n *Node, payload []byte, done func(Outcome)) bool{
	func(n *Node, p []byte, done func(Outcome)) bool {
		r := &metadatav1.RegisterBrokerRequest{}
		return proto.Unmarshal(p, r) == nil && call(func() { n.RegisterBroker(r, done) })
	},
	func(n *Node, p []byte, done func(Outcome)) bool {
		r := &metadatav1.UnregisterBrokerRequest{}
		return proto.Unmarshal(p, r) == nil && call(func() { n.UnregisterBroker(r, done) })
	},
	func(n *Node, p []byte, done func(Outcome)) bool {
		r := &metadatav1.CreateTopicRequest{}
		return proto.Unmarshal(p, r) == nil && call(func() { n.CreateTopic(r, done) })
	},
	func(n *Node, p []byte, done func(Outcome)) bool {
		r := &metadatav1.DeleteTopicRequest{}
		return proto.Unmarshal(p, r) == nil && call(func() { n.DeleteTopic(r, done) })
	},
	func(n *Node, p []byte, done func(Outcome)) bool {
		r := &metadatav1.CreatePartitionsRequest{}
		return proto.Unmarshal(p, r) == nil && call(func() { n.CreatePartitions(r, done) })
	},
	func(n *Node, p []byte, done func(Outcome)) bool {
		r := &metadatav1.AlterPartitionRequest{}
		return proto.Unmarshal(p, r) == nil && call(func() { n.AlterPartition(r, done) })
	},
	func(n *Node, p []byte, done func(Outcome)) bool {
		r := &metadatav1.ElectLeadersRequest{}
		return proto.Unmarshal(p, r) == nil && call(func() { n.ElectLeaders(r, done) })
	},
	func(n *Node, p []byte, done func(Outcome)) bool {
		r := &metadatav1.StorageHeartbeatRequest{}
		if proto.Unmarshal(p, r) != nil {
			return false
		}
		_, _ = n.Heartbeat(r)
		done(Outcome{})
		return true
	},
}

func call(f func()) bool { f(); return true }

// FuzzRequests decodes arbitrary bytes as a sequence of API requests (a
// kind byte, a length byte, a protobuf payload) and sends each to a
// one-controller cluster: nothing may panic, every request completes, and
// the state machine's invariants hold after each.
func FuzzRequests(f *testing.F) {
	seed := func(kind byte, m proto.Message) []byte {
		data, _ := proto.Marshal(m)
		return append([]byte{kind, byte(len(data))}, data...)
	}
	f.Add(append(seed(0, &metadatav1.RegisterBrokerRequest{Id: 1, Host: "h", Port: 1}),
		seed(2, &metadatav1.CreateTopicRequest{Name: "t", Partitions: 3})...))
	f.Add(seed(2, &metadatav1.CreateTopicRequest{Name: "..", Partitions: -1, Configs: map[string]string{"retention.ms": "x"}}))
	f.Add(seed(5, &metadatav1.AlterPartitionRequest{BrokerId: 1, BrokerEpoch: 3, Topic: "t", NewIsr: []int32{1, 1}}))
	f.Add(seed(7, &metadatav1.StorageHeartbeatRequest{ServiceId: "storage-1", IsAlive: new(false)}))
	f.Fuzz(func(t *testing.T, input []byte) {
		c := newCluster(t, 1, nil)
		leader := c.elect(1)
		for requests := 0; len(input) >= 2 && requests < 16; requests++ {
			kind, length := int(input[0])%len(requestKinds), int(input[1])
			input = input[2:]
			length = min(length, len(input))
			payload := input[:length]
			input = input[length:]
			completed := false
			if !requestKinds[kind](leader, payload, func(Outcome) { completed = true }) {
				continue
			}
			for i := 0; i < 50 && !completed; i++ {
				c.tick(1)
			}
			require.True(t, completed, "a request never completed")
			require.NoError(t, leader.StateMachine().CheckInvariants())
		}
	})
}
