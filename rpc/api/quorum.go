package api

import (
	"context"
	"errors"
	"fmt"

	"connectrpc.com/connect"
	metadatav1 "github.com/dmq-project/metadata/gen/dmq/metadata/v1"
	"github.com/dmq-project/metadata/node"
	"github.com/dmq-project/metadata/statemachine"
)

func members(st node.Status) []*metadatav1.QuorumMember {
	out := make([]*metadatav1.QuorumMember, 0, len(st.Members))
	for _, m := range st.Members {
		role := metadatav1.QuorumRole_QUORUM_ROLE_VOTER
		if m.Learner {
			role = metadatav1.QuorumRole_QUORUM_ROLE_LEARNER
		}
		out = append(out, &metadatav1.QuorumMember{NodeId: m.ID, Url: m.URL, Role: role, MatchIndex: m.Match, Lag: m.Lag, IsLeader: m.IsLeader, DirectoryId: m.DirectoryID,
			RecentActive: m.RecentActive})
	}
	return out
}

// DescribeQuorum implements QuorumService, from this controller's view.
func (s *Server) DescribeQuorum(ctx context.Context, _ *connect.Request[metadatav1.DescribeQuorumRequest]) (*connect.Response[metadatav1.DescribeQuorumResponse], error) {
	r, err := callNode(s, ctx, func(n *node.Node, done func(result[node.Status])) {
		done(result[node.Status]{value: n.Status()})
	})
	if err != nil {
		return nil, err
	}
	st := r.value
	return connect.NewResponse(&metadatav1.DescribeQuorumResponse{LeaderId: st.Leader, Term: st.Term,
		CommitIndex: st.Commit, AppliedIndex: st.Applied, Members: members(st),
		AnsweredBy: st.ID, ProgressKnown: st.Leader == st.ID && st.ID != 0, ClusterId: st.ClusterID}), nil
}

// statusResult completes a quorum operation with the node's status after
// it, or its error (the node's errors are *statemachine.Error).
func statusResult(n *node.Node, err error) result[node.Status] {
	r := result[node.Status]{leaderID: n.Leader(), leaderURL: n.PeerURL(n.Leader()), value: n.Status()}
	if err != nil {
		var serr *statemachine.Error
		if !errors.As(err, &serr) {
			serr = &statemachine.Error{Code: metadatav1.ErrorCode_INVALID_REQUEST, Message: err.Error()}
		}
		r.err = serr
	}
	return r
}

// changeMembership runs one membership change and answers the new members.
func (s *Server) changeMembership(ctx context.Context, change node.MembershipChange) ([]*metadatav1.QuorumMember, error) {
	r, err := callNode(s, ctx, func(n *node.Node, done func(result[node.Status])) {
		n.ChangeMembership(change, func(err error) { done(statusResult(n, err)) })
	})
	if err != nil {
		return nil, err
	}
	return members(r.value), nil
}

// withDirectory asks a controller being added for its identity and
// records its directory in the change: a voter is an id and a directory,
// and a controller added without one could vote again after its directory
// is lost. An added controller must be running and answer as the id it is
// added under, in this cluster.
func (s *Server) withDirectory(ctx context.Context, change node.MembershipChange) (node.MembershipChange, error) {
	if change.URL == "" || s.askIdentity == nil {
		return change, nil // a learner's promotion, or an invalid request the node refuses
	}
	answer, err := s.askIdentity(ctx, node.Peer{ID: change.NodeID, URL: change.URL})
	if err != nil {
		return change, connect.NewError(connect.CodeFailedPrecondition,
			fmt.Errorf("controller %d at %s must be running to be added (its data directory is recorded with it): %w", change.NodeID, change.URL, err))
	}
	if answer.ControllerID != change.NodeID {
		return change, connect.NewError(connect.CodeInvalidArgument,
			fmt.Errorf("the controller at %s is controller %d, not %d", change.URL, answer.ControllerID, change.NodeID))
	}
	change.DirectoryID = answer.DirectoryID
	return change, nil
}

// AddVoter implements QuorumService.
func (s *Server) AddVoter(ctx context.Context, req *connect.Request[metadatav1.AddVoterRequest]) (*connect.Response[metadatav1.AddVoterResponse], error) {
	change, err := s.withDirectory(ctx, node.MembershipChange{Kind: node.AddVoter, NodeID: req.Msg.GetNodeId(), URL: req.Msg.GetUrl()})
	if err != nil {
		return nil, err
	}
	m, err := s.changeMembership(ctx, change)
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&metadatav1.AddVoterResponse{Members: m}), nil
}

// RemoveVoter implements QuorumService.
func (s *Server) RemoveVoter(ctx context.Context, req *connect.Request[metadatav1.RemoveVoterRequest]) (*connect.Response[metadatav1.RemoveVoterResponse], error) {
	m, err := s.changeMembership(ctx, node.MembershipChange{Kind: node.RemoveVoter, NodeID: req.Msg.GetNodeId()})
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&metadatav1.RemoveVoterResponse{Members: m}), nil
}

// AddLearner implements QuorumService.
func (s *Server) AddLearner(ctx context.Context, req *connect.Request[metadatav1.AddLearnerRequest]) (*connect.Response[metadatav1.AddLearnerResponse], error) {
	change, err := s.withDirectory(ctx, node.MembershipChange{Kind: node.AddLearner, NodeID: req.Msg.GetNodeId(), URL: req.Msg.GetUrl()})
	if err != nil {
		return nil, err
	}
	m, err := s.changeMembership(ctx, change)
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&metadatav1.AddLearnerResponse{Members: m}), nil
}

// PromoteLearner implements QuorumService.
func (s *Server) PromoteLearner(ctx context.Context, req *connect.Request[metadatav1.PromoteLearnerRequest]) (*connect.Response[metadatav1.PromoteLearnerResponse], error) {
	m, err := s.changeMembership(ctx, node.MembershipChange{Kind: node.PromoteLearner, NodeID: req.Msg.GetNodeId()})
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&metadatav1.PromoteLearnerResponse{Members: m}), nil
}

// TransferLeader implements QuorumService.
func (s *Server) TransferLeader(ctx context.Context, req *connect.Request[metadatav1.TransferLeaderRequest]) (*connect.Response[metadatav1.TransferLeaderResponse], error) {
	r, err := callNode(s, ctx, func(n *node.Node, done func(result[node.Status])) {
		n.TransferLeader(req.Msg.GetTargetNodeId(), func(err error) { done(statusResult(n, err)) })
	})
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&metadatav1.TransferLeaderResponse{LeaderId: r.value.Leader, Term: r.value.Term}), nil
}

// Snapshot implements QuorumService.
func (s *Server) Snapshot(ctx context.Context, _ *connect.Request[metadatav1.SnapshotRequest]) (*connect.Response[metadatav1.SnapshotResponse], error) {
	type snap struct {
		index uint64
		size  int
	}
	r, err := callNode(s, ctx, func(n *node.Node, done func(result[snap])) {
		n.TakeSnapshot(func(index uint64, size int, err error) {
			if err != nil {
				// A storage failure: the node must restart; say so.
				done(result[snap]{err: &statemachine.Error{Code: metadatav1.ErrorCode_UNAVAILABLE, Message: "snapshot failed: " + err.Error()}})
				return
			}
			done(result[snap]{value: snap{index: index, size: size}})
		})
	})
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&metadatav1.SnapshotResponse{Index: r.value.index, SizeBytes: uint64(r.value.size)}), nil
}

// DescribeBrokerSessions implements MetadataService, on the active
// controller.
func (s *Server) DescribeBrokerSessions(ctx context.Context, _ *connect.Request[metadatav1.DescribeBrokerSessionsRequest]) (*connect.Response[metadatav1.DescribeBrokerSessionsResponse], error) {
	r, err := callNode(s, ctx, func(n *node.Node, done func(result[*metadatav1.DescribeBrokerSessionsResponse])) {
		sessions, serr := n.BrokerSessions()
		done(result[*metadatav1.DescribeBrokerSessionsResponse]{err: serr, leaderID: n.Leader(), leaderURL: n.PeerURL(n.Leader()),
			value: &metadatav1.DescribeBrokerSessionsResponse{Sessions: sessions, MetadataVersion: n.StateMachine().Version(), AnsweredBy: n.ID()}})
	})
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(r.value), nil
}
