package api

import (
	"context"
	"errors"
	"fmt"

	"connectrpc.com/connect"
	metadatav1 "github.com/dmq-project/metadata/gen/dmq/metadata/v1"
	"github.com/dmq-project/metadata/node"
	"github.com/dmq-project/metadata/statemachine"
	"google.golang.org/protobuf/proto"
)

// proposeBatch runs a batch write. Its response is built from the per-item
// results whenever there are any: on success, and on an atomic batch
// refused as a whole, whose Connect error then carries the response as a
// detail (so a client sees which topic failed and why the others did not
// apply).
func proposeBatch[R proto.Message](s *Server, ctx context.Context, kind string,
	start func(n *node.Node, done func(node.Outcome)), build func(n *node.Node, o node.Outcome) R) (R, error) {
	type built struct {
		value R
		ok    bool
	}
	r, err := callNode(s, ctx, func(n *node.Node, done func(result[built])) {
		start(n, func(o node.Outcome) {
			r := result[built]{err: o.Err, leaderID: o.LeaderID, leaderURL: n.PeerURL(o.LeaderID)}
			if o.Items != nil {
				r.value = built{value: build(n, o), ok: true}
			}
			done(r)
		})
	})
	s.metrics.ObserveProposal(kind, err)
	var ce *connect.Error
	if err != nil && r.value.ok && errors.As(err, &ce) {
		if detail, derr := connect.NewErrorDetail(r.value.value); derr == nil {
			ce.AddDetail(detail)
		}
	}
	if err == nil && !r.value.ok {
		return r.value.value, connect.NewError(connect.CodeInternal, errors.New("a batch succeeded without per-topic results"))
	}
	return r.value.value, err
}

func itemError(item statemachine.ItemResult, res *metadatav1.TopicResult) {
	if item.Err != nil {
		res.ErrorCode, res.ErrorMessage = item.Err.Code, item.Err.Message
	}
}

// CreateTopics implements MetadataService.
func (s *Server) CreateTopics(ctx context.Context, req *connect.Request[metadatav1.CreateTopicsRequest]) (*connect.Response[metadatav1.CreateTopicsResponse], error) {
	resp, err := proposeBatch(s, ctx, "create_topics", func(n *node.Node, done func(node.Outcome)) { n.CreateTopics(req.Msg, done) },
		func(n *node.Node, o node.Outcome) *metadatav1.CreateTopicsResponse {
			resp := &metadatav1.CreateTopicsResponse{MetadataVersion: o.Version,
				Results: make([]*metadatav1.TopicResult, len(req.Msg.GetTopics()))}
			for i, t := range req.Msg.GetTopics() {
				item := o.Items[i]
				res := &metadatav1.TopicResult{Name: t.GetName(), Partitions: t.GetPartitions()}
				itemError(item, res)
				switch created := n.StateMachine().Topic(t.GetName()); {
				case item.Err == nil && !req.Msg.GetValidateOnly() && created != nil && created.GetTopicId() == item.TopicID:
					// As it applied (the state is read right after it).
					res.ReplicationFactor, res.Config = created.GetReplicationFactor(), created.GetConfig()
				default:
					// As it would apply now (a dry run's ids are drawn for the
					// check only, and not shown).
					if rf, config, ok := n.NewTopicSettings(t); ok {
						res.ReplicationFactor, res.Config = rf, config
					}
				}
				if item.Err == nil {
					resp.Created++
					if !req.Msg.GetValidateOnly() {
						res.TopicId = item.TopicID
					}
				}
				resp.Results[i] = res
			}
			return resp
		})
	return respond(resp, err)
}

// DeleteTopics implements MetadataService.
func (s *Server) DeleteTopics(ctx context.Context, req *connect.Request[metadatav1.DeleteTopicsRequest]) (*connect.Response[metadatav1.DeleteTopicsResponse], error) {
	resp, err := proposeBatch(s, ctx, "delete_topics", func(n *node.Node, done func(node.Outcome)) { n.DeleteTopics(req.Msg, done) },
		func(_ *node.Node, o node.Outcome) *metadatav1.DeleteTopicsResponse {
			resp := &metadatav1.DeleteTopicsResponse{MetadataVersion: o.Version,
				Results: make([]*metadatav1.TopicResult, len(req.Msg.GetNames()))}
			for i, name := range req.Msg.GetNames() {
				item := o.Items[i]
				res := &metadatav1.TopicResult{Name: name}
				itemError(item, res)
				if item.Err == nil {
					resp.Deleted++
					res.TopicId = item.TopicID
				}
				resp.Results[i] = res
			}
			return resp
		})
	return respond(resp, err)
}

// IncrementalAlterConfigs implements MetadataService.
func (s *Server) IncrementalAlterConfigs(ctx context.Context, req *connect.Request[metadatav1.IncrementalAlterConfigsRequest]) (*connect.Response[metadatav1.IncrementalAlterConfigsResponse], error) {
	resp, err := proposeBatch(s, ctx, "alter_configs", func(n *node.Node, done func(node.Outcome)) { n.IncrementalAlterConfigs(req.Msg, done) },
		func(_ *node.Node, o node.Outcome) *metadatav1.IncrementalAlterConfigsResponse {
			resp := &metadatav1.IncrementalAlterConfigsResponse{MetadataVersion: o.Version,
				Results: make([]*metadatav1.ConfigResourceResult, len(req.Msg.GetResources()))}
			for i, r := range req.Msg.GetResources() {
				res := &metadatav1.ConfigResourceResult{Resource: r.GetResource()}
				if err := o.Items[i].Err; err != nil {
					res.ErrorCode, res.ErrorMessage = err.Code, err.Message
				}
				resp.Results[i] = res
			}
			return resp
		})
	return respond(resp, err)
}

// DescribeConfigs implements MetadataService. No resource means the
// cluster's defaults.
func (s *Server) DescribeConfigs(ctx context.Context, req *connect.Request[metadatav1.DescribeConfigsRequest]) (*connect.Response[metadatav1.DescribeConfigsResponse], error) {
	resources := req.Msg.GetResources()
	if len(resources) == 0 {
		resources = []*metadatav1.ConfigResource{{Type: metadatav1.ConfigResource_CLUSTER}}
	}
	if len(resources) > statemachine.TopicsPerBatchMax {
		return nil, toConnectError(&statemachine.Error{Code: metadatav1.ErrorCode_INVALID_REQUEST,
			Message: fmt.Sprintf("at most %d resources per request", statemachine.TopicsPerBatchMax)}, 0, "")
	}
	resp, err := readNodeState(s, ctx, req.Msg.GetAllowStale(), func(n *node.Node, sm *statemachine.StateMachine) (*metadatav1.DescribeConfigsResponse, *statemachine.Error) {
		builtIn := n.BuiltInTopicConfig()
		resp := &metadatav1.DescribeConfigsResponse{MetadataVersion: sm.Version()}
		for _, r := range resources {
			resp.Results = append(resp.Results, sm.DescribeConfigs(r, builtIn))
		}
		return resp, nil
	})
	return respond(resp, err)
}

// AlterPartitionReassignments implements MetadataService.
func (s *Server) AlterPartitionReassignments(ctx context.Context, req *connect.Request[metadatav1.AlterPartitionReassignmentsRequest]) (*connect.Response[metadatav1.AlterPartitionReassignmentsResponse], error) {
	resp, err := proposeBatch(s, ctx, "reassign", func(n *node.Node, done func(node.Outcome)) { n.AlterPartitionReassignments(req.Msg, done) },
		func(_ *node.Node, o node.Outcome) *metadatav1.AlterPartitionReassignmentsResponse {
			resp := &metadatav1.AlterPartitionReassignmentsResponse{MetadataVersion: o.Version,
				Results: make([]*metadatav1.ReassignmentResult, len(req.Msg.GetReassignments()))}
			for i, ra := range req.Msg.GetReassignments() {
				res := &metadatav1.ReassignmentResult{Topic: ra.GetTopic(), Partition: ra.GetPartition()}
				if err := o.Items[i].Err; err != nil {
					res.ErrorCode, res.ErrorMessage = err.Code, err.Message
				}
				resp.Results[i] = res
			}
			return resp
		})
	return respond(resp, err)
}

// ListPartitionReassignments implements MetadataService.
func (s *Server) ListPartitionReassignments(ctx context.Context, req *connect.Request[metadatav1.ListPartitionReassignmentsRequest]) (*connect.Response[metadatav1.ListPartitionReassignmentsResponse], error) {
	resp, err := readState(s, ctx, req.Msg.GetAllowStale(), func(sm *statemachine.StateMachine) (*metadatav1.ListPartitionReassignmentsResponse, *statemachine.Error) {
		return &metadatav1.ListPartitionReassignmentsResponse{Reassignments: sm.Reassignments(), MetadataVersion: sm.Version()}, nil
	})
	return respond(resp, err)
}

// respond wraps a handler's answer.
func respond[T any](resp *T, err error) (*connect.Response[T], error) {
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(resp), nil
}

// Rebalance implements MetadataService.
func (s *Server) Rebalance(ctx context.Context, req *connect.Request[metadatav1.RebalanceRequest]) (*connect.Response[metadatav1.RebalanceResponse], error) {
	r, err := callNode(s, ctx, func(n *node.Node, done func(result[*metadatav1.RebalanceResponse])) {
		n.Rebalance(req.Msg, func(o node.Outcome, moves []*metadatav1.PartitionReassignment) {
			done(result[*metadatav1.RebalanceResponse]{err: o.Err, leaderID: o.LeaderID, leaderURL: n.PeerURL(o.LeaderID),
				value: &metadatav1.RebalanceResponse{Moves: moves, Status: n.StateMachine().BalanceStatus(), MetadataVersion: o.Version}})
		})
	})
	if !req.Msg.GetDryRun() {
		s.metrics.ObserveProposal("rebalance", err)
	}
	return respond(r.value, err)
}

// DescribeBalance implements MetadataService.
func (s *Server) DescribeBalance(ctx context.Context, req *connect.Request[metadatav1.DescribeBalanceRequest]) (*connect.Response[metadatav1.DescribeBalanceResponse], error) {
	resp, err := readState(s, ctx, req.Msg.GetAllowStale(), func(sm *statemachine.StateMachine) (*metadatav1.DescribeBalanceResponse, *statemachine.Error) {
		return &metadatav1.DescribeBalanceResponse{Status: sm.BalanceStatus(), MetadataVersion: sm.Version()}, nil
	})
	return respond(resp, err)
}
