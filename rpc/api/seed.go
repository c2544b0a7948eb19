package api

import (
	"context"
	"net"
	"strconv"
	"time"

	"connectrpc.com/connect"
	metadatav1 "github.com/dmq-project/metadata/gen/dmq/metadata/v1"
	"github.com/dmq-project/metadata/node"
	"github.com/dmq-project/metadata/statemachine"
	"github.com/dmq-project/metadata/wire"
)

// The calls of the Java service's storage services (seed.proto): who the
// controller is, a heartbeat without a body, the cluster in their shape.

// GetController implements MetadataService: the leader this controller
// knows, or Unavailable during an election.
func (s *Server) GetController(ctx context.Context, _ *connect.Request[metadatav1.GetControllerRequest]) (*connect.Response[metadatav1.ControllerInfo], error) {
	r, err := callNode(s, ctx, func(n *node.Node, done func(result[*metadatav1.ControllerInfo])) {
		done(result[*metadatav1.ControllerInfo]{value: s.controllerInfo(n)})
	})
	if err != nil {
		return nil, err
	}
	if r.value == nil {
		return nil, wire.NewError(metadatav1.ErrorCode_NOT_CONTROLLER,
			"no controller is known: an election is in progress; retry shortly", 0, "")
	}
	return connect.NewResponse(r.value), nil
}

// controllerInfo is the leader n knows, nil if none; it runs on the node's
// goroutine.
func (s *Server) controllerInfo(n *node.Node) *metadatav1.ControllerInfo {
	leader := n.Leader()
	if leader == 0 {
		return nil
	}
	url := n.PeerURL(leader)
	if s.https {
		url = wire.HTTPSURL(url)
	}
	return &metadatav1.ControllerInfo{ControllerId: int32(leader), ControllerUrl: url, ControllerTerm: int64(n.Term()),
		Timestamp: time.Now().UnixMilli()}
}

// BrokerHeartbeat implements MetadataService: StorageHeartbeat for the
// broker in the path, without a reported version.
func (s *Server) BrokerHeartbeat(ctx context.Context, req *connect.Request[metadatav1.BrokerHeartbeatRequest]) (*connect.Response[metadatav1.StorageHeartbeatResponse], error) {
	ctx, cancel := s.context(ctx)
	defer cancel()
	resp, err := s.heartbeat(ctx, &metadatav1.StorageHeartbeatRequest{ServiceId: strconv.Itoa(int(req.Msg.GetBrokerId()))})
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(resp), nil
}

// GetSeedClusterMetadata implements MetadataService: GetClusterMetadata in
// the seed's shape.
func (s *Server) GetSeedClusterMetadata(ctx context.Context, req *connect.Request[metadatav1.GetClusterMetadataRequest]) (*connect.Response[metadatav1.SeedClusterMetadata], error) {
	resp, err := readNodeState(s, ctx, req.Msg.GetAllowStale(),
		func(n *node.Node, sm *statemachine.StateMachine) (*metadatav1.SeedClusterMetadata, *statemachine.Error) {
			return seedClusterMetadata(sm.ClusterState(), s.controllerInfo(n), n.Status()), nil
		})
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(resp), nil
}

// seedClusterMetadata is a state in the seed's shape: brokers alive when
// registered and not fenced, each partition's real leader (broker -1 when
// offline), replicas and ISR as broker nodes.
func seedClusterMetadata(state *metadatav1.ClusterState, controller *metadatav1.ControllerInfo, status node.Status) *metadatav1.SeedClusterMetadata {
	out := &metadatav1.SeedClusterMetadata{Version: state.GetMetadataVersion(), Timestamp: time.Now().UnixMilli(),
		ControllerInfo: controller, ControllerLeaderId: controller.GetControllerId()}
	nodes := map[int32]*metadatav1.SeedBrokerNode{}
	for _, b := range state.GetBrokers() {
		alive := !b.GetFenced()
		status := "OFFLINE"
		if alive {
			status = "ONLINE"
		}
		address := net.JoinHostPort(b.GetHost(), strconv.Itoa(int(b.GetPort())))
		out.Brokers = append(out.Brokers, &metadatav1.SeedBroker{Id: b.GetId(), Host: b.GetHost(), Port: b.GetPort(),
			Rack: b.GetRack(), Alive: alive, Status: status, Address: address})
		nodes[b.GetId()] = &metadatav1.SeedBrokerNode{BrokerId: b.GetId(), Host: b.GetHost(), Port: b.GetPort(),
			Rack: b.GetRack(), Status: status, Address: address}
	}
	brokerNode := func(id int32) *metadatav1.SeedBrokerNode {
		if n, ok := nodes[id]; ok {
			return n
		}
		// A replica that is not registered: named, offline, no endpoint.
		return &metadatav1.SeedBrokerNode{BrokerId: id, Status: "OFFLINE"}
	}
	for _, t := range state.GetTopics() {
		c := t.GetConfig()
		topic := &metadatav1.SeedTopic{TopicName: t.GetName(), PartitionCount: int32(len(t.GetPartitions())),
			ReplicationFactor: t.GetReplicationFactor(), Config: &metadatav1.SeedTopicConfig{RetentionMs: c.GetRetentionMs(),
				RetentionBytes: c.GetRetentionBytes(), SegmentBytes: c.GetSegmentBytes(), CompressionType: c.GetCompressionType(),
				MinInsyncReplicas: c.GetMinInsyncReplicas()}}
		for _, p := range t.GetPartitions() {
			sp := &metadatav1.SeedPartition{TopicName: p.GetTopic(), PartitionId: p.GetPartition(), Topic: p.GetTopic(),
				Partition: p.GetPartition(), LeaderEpoch: p.GetLeaderEpoch(), IsrBrokerIds: p.GetIsr(),
				Leader: &metadatav1.SeedBrokerNode{BrokerId: statemachine.NoLeader, Status: "OFFLINE"}}
			if p.GetLeader() != statemachine.NoLeader {
				sp.Leader = brokerNode(p.GetLeader())
			}
			for _, r := range p.GetReplicas() {
				sp.Replicas = append(sp.Replicas, brokerNode(r))
			}
			for _, r := range p.GetIsr() {
				sp.Isr = append(sp.Isr, brokerNode(r))
			}
			topic.Partitions = append(topic.Partitions, sp)
			out.TotalPartitions++
		}
		out.Topics = append(out.Topics, topic)
	}
	for _, m := range status.Members {
		out.ActiveMetadataNodes = append(out.ActiveMetadataNodes, &metadatav1.SeedMetadataNode{Id: m.ID, Url: m.URL,
			IsLeader: m.ID == status.Leader, Healthy: m.ID == status.ID || (status.Active && m.Lag == 0)})
	}
	return out
}
