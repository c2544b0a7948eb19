package rpc_test

import (
	"context"
	"testing"

	"connectrpc.com/connect"
	metadatav1 "github.com/dmq-project/metadata/gen/dmq/metadata/v1"
	"github.com/dmq-project/metadata/rpc"
	"github.com/dmq-project/metadata/rpc/auth"
	"github.com/dmq-project/metadata/rpc/rpctest"
	"github.com/dmq-project/metadata/wire"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestHeartbeatStream: heartbeats on one stream are answered one by one,
// as unary heartbeats are, over Connect and gRPC; a follower ends the
// stream with the leader's address; a bad heartbeat ends it with its code.
func TestHeartbeatStream(t *testing.T) {
	cluster := rpctest.Start(t, 3, nil)
	leader := cluster.WaitLeader(t)
	ctx := context.Background()
	_, err := metadataClient(leader.URL()).RegisterBroker(ctx, connect.NewRequest(&metadatav1.RegisterBrokerRequest{Id: 1, Host: "localhost", Port: 9092}))
	require.NoError(t, err)

	for _, opts := range [][]connect.ClientOption{nil, {connect.WithGRPC()}} {
		stream := metadataClient(leader.URL(), opts...).StorageHeartbeats(ctx)
		for range 100 {
			require.NoError(t, stream.Send(&metadatav1.StorageHeartbeatRequest{ServiceId: "storage-1"}))
			resp, err := stream.Receive()
			require.NoError(t, err)
			assert.True(t, resp.GetRegistered())
			assert.Positive(t, resp.GetMetadataVersion())
		}
		require.NoError(t, stream.CloseRequest())
		require.NoError(t, stream.CloseResponse())
	}

	var follower *rpctest.Controller
	for _, c := range cluster {
		if c != leader {
			follower = c
		}
	}
	stream := metadataClient(follower.URL()).StorageHeartbeats(ctx)
	require.NoError(t, stream.Send(&metadatav1.StorageHeartbeatRequest{ServiceId: "storage-1"}))
	_, err = stream.Receive()
	require.Equal(t, connect.CodeUnavailable, connect.CodeOf(err), "%v", err)
	id, url, ok := wire.LeaderOf(err)
	require.True(t, ok)
	assert.Equal(t, leader.ID, id)
	assert.Equal(t, leader.URL(), url)
	_ = stream.CloseRequest()
	_ = stream.CloseResponse()

	stream = metadataClient(leader.URL()).StorageHeartbeats(ctx)
	require.NoError(t, stream.Send(&metadatav1.StorageHeartbeatRequest{ServiceId: "storage-1"}))
	_, err = stream.Receive()
	require.NoError(t, err)
	require.NoError(t, stream.Send(&metadatav1.StorageHeartbeatRequest{ServiceId: "storage-x"}))
	_, err = stream.Receive()
	assert.Equal(t, connect.CodeInvalidArgument, connect.CodeOf(err), "%v", err)
	_ = stream.CloseRequest()
	_ = stream.CloseResponse()
}

// TestHeartbeatStreamAuthAndLimits: a SERVICE may stream heartbeats for
// its own broker only, a reader may not open the stream, and every message
// costs a rate-limit token.
func TestHeartbeatStreamAuthAndLimits(t *testing.T) {
	authn := authenticator(t)
	cluster := rpctest.Start(t, 1, func(c *rpctest.Controller) {
		c.Security = rpc.Security{Auth: authn, RateLimit: auth.RateLimit{PerSecond: 1, Burst: 5}}
		c.ProbeToken = adminToken
	})
	base := cluster.WaitLeader(t).URL()
	ctx := context.Background()
	_, err := metadataClient(base, wire.BearerToken(serviceToken)).RegisterBroker(ctx,
		connect.NewRequest(&metadatav1.RegisterBrokerRequest{Id: 1, Host: "localhost", Port: 9092}))
	require.NoError(t, err)

	beat := func(token, service string, count int) error {
		stream := metadataClient(base, wire.BearerToken(token)).StorageHeartbeats(ctx)
		defer func() {
			_ = stream.CloseRequest()
			_ = stream.CloseRequest()
			_ = stream.CloseResponse()
		}()
		for range count {
			if err := stream.Send(&metadatav1.StorageHeartbeatRequest{ServiceId: service}); err != nil {
				// The server ended the stream, refusing it perhaps before
				// reading a message: Send then reports io.EOF, and Receive
				// the server's error.
				_, err = stream.Receive()
				return err
			}
			if _, err := stream.Receive(); err != nil {
				return err
			}
		}
		return nil
	}
	assert.Equal(t, connect.CodePermissionDenied, connect.CodeOf(beat(consumerToken, "storage-1", 1)), "a reader")
	assert.Equal(t, connect.CodePermissionDenied, connect.CodeOf(beat(serviceToken, "storage-2", 1)), "another broker's heartbeat")
	assert.Equal(t, connect.CodeUnauthenticated, connect.CodeOf(beat("", "storage-1", 1)))
	// The service spent one token registering and one on the refused
	// heartbeat above; three more pass, the next is refused.
	assert.Equal(t, connect.CodeResourceExhausted, connect.CodeOf(beat(serviceToken, "storage-1", 10)))
}
