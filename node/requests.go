package node

import (
	"time"

	metadatav1 "github.com/dmq-project/metadata/gen/dmq/metadata/v1"
	"github.com/dmq-project/metadata/statemachine"
)

// The request methods turn API requests into records and propose them.
// They validate what does not depend on the state (names, bounds, configs)
// at once; everything that does is decided by Apply, in log order, because
// only that is linearizable: a leader's local state may be stale the moment
// it is deposed. done always runs exactly once.

func fail(done func(Outcome), leader uint64, err *statemachine.Error) {
	done(Outcome{Result: statemachine.Result{Err: err}, LeaderID: leader})
}

func invalid(message string) *statemachine.Error {
	return &statemachine.Error{Code: metadatav1.ErrorCode_INVALID_REQUEST, Message: message}
}

// OpenSession opens a client session through the log; the outcome's
// version is the session id.
func (n *Node) OpenSession(req *metadatav1.OpenSessionRequest, done func(Outcome)) {
	n.propose(&metadatav1.Record{Body: &metadatav1.Record_OpenSession{OpenSession: &metadatav1.OpenSessionRecord{
		ClientId: req.GetClientId(), TimeoutMs: n.cfg.ClientSessionTimeout.Milliseconds()}}}, done)
}

// ClientSessionTimeout is the timeout of the sessions this controller opens.
func (n *Node) ClientSessionTimeout() time.Duration { return n.cfg.ClientSessionTimeout }

// RegisterBroker registers a storage service as a broker.
func (n *Node) RegisterBroker(req *metadatav1.RegisterBrokerRequest, done func(Outcome)) {
	if err := statemachine.ValidateBrokerRegistration(req.GetId(), req.GetHost(), req.GetPort(), req.GetRack(), req.GetIncarnationId()); err != nil {
		fail(done, n.leader, err)
		return
	}
	n.propose(&metadatav1.Record{RequestId: req.GetRequestId(), Body: &metadatav1.Record_RegisterBroker{RegisterBroker: &metadatav1.RegisterBrokerRecord{
		BrokerId: req.GetId(), Host: req.GetHost(), Port: req.GetPort(), Rack: req.GetRack(), IncarnationId: req.GetIncarnationId(),
	}}}, done)
}

// UnregisterBroker removes a broker.
func (n *Node) UnregisterBroker(req *metadatav1.UnregisterBrokerRequest, done func(Outcome)) {
	if err := statemachine.ValidateBrokerID(req.GetId()); err != nil {
		fail(done, n.leader, err)
		return
	}
	n.propose(&metadatav1.Record{RequestId: req.GetRequestId(), Body: &metadatav1.Record_UnregisterBroker{
		UnregisterBroker: &metadatav1.UnregisterBrokerRecord{BrokerId: req.GetId()}}}, done)
}

// CreateTopic creates a topic with all its partitions in one record. The
// topic id and the placement offset are drawn here, by the proposer.
func (n *Node) CreateTopic(req *metadatav1.CreateTopicRequest, done func(Outcome)) {
	record, err := n.topicRecord(req)
	if err != nil {
		fail(done, n.leader, err)
		return
	}
	n.propose(&metadatav1.Record{RequestId: req.GetRequestId(), Body: &metadatav1.Record_CreateTopic{CreateTopic: record}}, done)
}

// ResolveTopic validates what a topic's creation can be checked for
// without the state, and fills the controller's defaults: the replication
// factor and the typed configuration a record would carry.
func (n *Node) ResolveTopic(req *metadatav1.CreateTopicRequest) (int32, *metadatav1.TopicConfig, *statemachine.Error) {
	if err := statemachine.ValidateTopicName(req.GetName()); err != nil {
		return 0, nil, err
	}
	if err := statemachine.ValidatePartitionCount(req.GetPartitions()); err != nil {
		return 0, nil, err
	}
	rf := req.GetReplicationFactor()
	if rf == 0 {
		rf = n.cfg.DefaultReplicationFactor
	}
	if err := statemachine.ValidateReplicationFactor(rf); err != nil {
		return 0, nil, err
	}
	config, err := statemachine.ParseTopicConfig(req.GetConfigs(), n.cfg.DefaultMinISR, rf)
	if err != nil {
		return 0, nil, err
	}
	return rf, config, nil
}

// NewTopicSettings is the replication factor and config a topic created
// now by req would have, with this controller's defaults and the cluster's
// (as this controller's state holds them); false if req is refused before
// the state is consulted.
func (n *Node) NewTopicSettings(req *metadatav1.CreateTopicRequest) (int32, *metadatav1.TopicConfig, bool) {
	rf, config, err := n.ResolveTopic(req)
	if err != nil {
		return 0, nil, false
	}
	config = n.sm.NewTopicConfig(&metadatav1.CreateTopicRecord{ReplicationFactor: rf, Config: config, ExplicitConfigs: explicitConfigs(req)})
	return rf, config, config != nil
}

func explicitConfigs(req *metadatav1.CreateTopicRequest) []string {
	var explicit []string
	for _, key := range statemachine.ConfigKeys {
		if _, ok := req.GetConfigs()[key]; ok {
			explicit = append(explicit, key)
		}
	}
	return explicit
}

// topicRecord is the record that creates the requested topic, with a topic
// id and a placement offset drawn by this proposer.
func (n *Node) topicRecord(req *metadatav1.CreateTopicRequest) (*metadatav1.CreateTopicRecord, *statemachine.Error) {
	rf, config, err := n.ResolveTopic(req)
	if err != nil {
		return nil, err
	}
	var raw [16]byte
	for i := 0; i < 2; i++ {
		v := n.env.Rand.Uint64()
		for j := 0; j < 8; j++ {
			raw[i*8+j] = byte(v >> (8 * j))
		}
	}
	raw[0] |= 1 // never all zero
	explicit := explicitConfigs(req)
	return &metadatav1.CreateTopicRecord{
		Name: req.GetName(), TopicId: statemachine.TopicIDFromBytes(raw), PartitionCount: req.GetPartitions(),
		ReplicationFactor: rf, Config: config, PlacementOffset: uint32(n.env.Rand.Uint64()), ExplicitConfigs: explicit,
	}, nil
}

// DeleteTopic deletes a topic.
func (n *Node) DeleteTopic(req *metadatav1.DeleteTopicRequest, done func(Outcome)) {
	if err := statemachine.ValidateTopicName(req.GetName()); err != nil {
		fail(done, n.leader, err)
		return
	}
	n.propose(&metadatav1.Record{RequestId: req.GetRequestId(), Body: &metadatav1.Record_DeleteTopic{
		DeleteTopic: &metadatav1.DeleteTopicRecord{Name: req.GetName()}}}, done)
}

// CreatePartitions grows a topic to req.Count partitions.
func (n *Node) CreatePartitions(req *metadatav1.CreatePartitionsRequest, done func(Outcome)) {
	if err := statemachine.ValidateTopicName(req.GetTopic()); err != nil {
		fail(done, n.leader, err)
		return
	}
	if req.GetCount() < 1 {
		fail(done, n.leader, &statemachine.Error{Code: metadatav1.ErrorCode_INVALID_PARTITIONS, Message: "count must be at least 1"})
		return
	}
	n.propose(&metadatav1.Record{RequestId: req.GetRequestId(), Body: &metadatav1.Record_CreatePartitions{
		CreatePartitions: &metadatav1.CreatePartitionsRecord{Topic: req.GetTopic(), PartitionCount: req.GetCount(),
			PlacementOffset: uint32(n.env.Rand.Uint64())}}}, done)
}

// AlterPartition changes a partition's ISR on behalf of its leader.
func (n *Node) AlterPartition(req *metadatav1.AlterPartitionRequest, done func(Outcome)) {
	if err := statemachine.ValidateTopicName(req.GetTopic()); err != nil {
		fail(done, n.leader, err)
		return
	}
	if err := statemachine.ValidateBrokerID(req.GetBrokerId()); err != nil {
		fail(done, n.leader, err)
		return
	}
	if req.GetBrokerEpoch() <= 0 {
		fail(done, n.leader, invalid("brokerEpoch must be set: the epoch of the leader's registration"))
		return
	}
	if err := statemachine.ValidateISRSize(len(req.GetNewIsr())); err != nil {
		fail(done, n.leader, err)
		return
	}
	n.propose(&metadatav1.Record{RequestId: req.GetRequestId(), Body: &metadatav1.Record_AlterPartition{AlterPartition: &metadatav1.AlterPartitionRecord{
		BrokerId: req.GetBrokerId(), BrokerEpoch: req.GetBrokerEpoch(), Topic: req.GetTopic(), Partition: req.GetPartition(),
		LeaderEpoch: req.GetLeaderEpoch(), PartitionEpoch: req.GetPartitionEpoch(), NewIsr: req.GetNewIsr(),
	}}}, done)
}

// ElectLeaders moves partitions to their preferred leaders.
func (n *Node) ElectLeaders(req *metadatav1.ElectLeadersRequest, done func(Outcome)) {
	for _, target := range req.GetTargets() {
		if err := statemachine.ValidateTopicName(target.GetTopic()); err != nil {
			fail(done, n.leader, err)
			return
		}
	}
	n.propose(&metadatav1.Record{RequestId: req.GetRequestId(), Body: &metadatav1.Record_ElectLeaders{
		ElectLeaders: &metadatav1.ElectLeadersRecord{Targets: req.GetTargets()}}}, done)
}
