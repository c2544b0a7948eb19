package client_test

import (
	"context"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/dmq-project/metadata/client"
	metadatav1 "github.com/dmq-project/metadata/gen/dmq/metadata/v1"
	"github.com/dmq-project/metadata/rpc/rpctest"
	"github.com/dmq-project/metadata/wire"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func fullPush(epoch uint64, version, repairFrom int64) *connect.Request[metadatav1.PushMetadataRequest] {
	return connect.NewRequest(&metadatav1.PushMetadataRequest{ControllerId: 1, ControllerEpoch: epoch, MetadataVersion: version,
		RepairFromVersion: repairFrom,
		Update:            &metadatav1.PushMetadataRequest_FullState{FullState: &metadatav1.ClusterState{MetadataVersion: version}}})
}

// A storage service ahead of every controller (it holds metadata no quorum
// committed) is repaired by a full state marked as a repair of its very
// version, once per controller epoch; every other push still may not take
// it back.
func TestAgentGoesBackOnlyForARepairOfItsVersion(t *testing.T) {
	c, err := client.New(client.Config{Endpoints: []string{"http://127.0.0.1:1"}})
	require.NoError(t, err)
	agent, err := client.NewStorageAgent(c, client.AgentConfig{BrokerID: 1, Host: "localhost", Port: 9092, IncarnationID: "a"})
	require.NoError(t, err)
	push := func(req *connect.Request[metadatav1.PushMetadataRequest]) *metadatav1.PushMetadataResponse {
		resp, err := agent.PushMetadata(context.Background(), req)
		require.NoError(t, err)
		return resp.Msg
	}
	require.True(t, push(fullPush(3, 500, 0)).GetAccepted())

	assert.False(t, push(fullPush(4, 300, 0)).GetAccepted(), "an ordinary push never takes a service back")
	assert.False(t, push(fullPush(4, 300, 499)).GetAccepted(), "a repair of another version")
	assert.False(t, push(fullPush(2, 300, 500)).GetAccepted(), "a repair from an older epoch")
	repaired := push(fullPush(4, 300, 500))
	require.True(t, repaired.GetAccepted())
	assert.Equal(t, int64(300), repaired.GetMetadataVersion())

	// The service moves on to 500 again, legitimately; the same repair
	// delivered late must not take it back.
	require.True(t, push(fullPush(4, 500, 0)).GetAccepted())
	late := push(fullPush(4, 300, 500))
	assert.False(t, late.GetAccepted())
	assert.Equal(t, int64(500), late.GetMetadataVersion())
}

// An agent whose registration the controllers refuse for what it says (an
// invalid host here) stops with their error instead of retrying forever:
// one set of registration rules, the replicated one, judges it.
func TestAgentWithAnInvalidEndpointStopsWithTheControllersError(t *testing.T) {
	cluster := rpctest.Start(t, 1, nil)
	cluster.WaitLeader(t)
	c, err := client.New(client.Config{Endpoints: []string{cluster[0].URL()}})
	require.NoError(t, err)
	agent, err := client.NewStorageAgent(c, client.AgentConfig{BrokerID: 1, Host: "not a host name", Port: 9092,
		IncarnationID: "a", HeartbeatInterval: 50 * time.Millisecond})
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err = agent.Run(ctx)
	require.Error(t, err)
	assert.NotErrorIs(t, err, context.DeadlineExceeded, "Run kept retrying a registration no retry can fix")
	assert.Equal(t, connect.CodeInvalidArgument, connect.CodeOf(err))
	assert.Equal(t, metadatav1.ErrorCode_INVALID_BROKER_ENDPOINT, wire.ErrorCodeOf(err))
	assert.Contains(t, err.Error(), "broker 1")
}
