package peer_test

import (
	"context"
	"testing"

	"connectrpc.com/connect"
	raftv1 "github.com/dmq-project/metadata/gen/dmq/raft/v1"
	"github.com/dmq-project/metadata/gen/dmq/raft/v1/raftv1connect"
	"github.com/dmq-project/metadata/rpc/peer/peertest"
	"github.com/dmq-project/metadata/wire"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestRaftRequestRefusedWhole: a request on the Raft transport whose
// sender is not a peer, or that holds a message that is not from its
// sender to this controller, is refused as a whole: none of its messages
// is stepped, and the error says why. (A message from someone else used
// to be found only after the messages before it were stepped, and a
// request from controller 0, or from the receiver itself, was taken.)
func TestRaftRequestRefusedWhole(t *testing.T) {
	base, rec, _, _ := peerServer(t, true) // controller 2 of cluster "c"
	client := raftv1connect.NewRaftTransportServiceClient(wire.NewHTTPClient(nil), base)
	send := func(req *raftv1.SendRequest) error {
		stream := client.Send(context.Background())
		_ = stream.Send(req)
		_, err := stream.CloseAndReceive()
		return err
	}
	inv := connect.CodeInvalidArgument
	cases := []struct {
		name string
		req  *raftv1.SendRequest
		want connect.Code
	}{
		{"a message from another controller after the sender's", &raftv1.SendRequest{ClusterId: "c", FromNodeId: 1, ToNodeId: 2,
			Messages: peertest.EncodeMessages(t, heartbeat(1, 2, 1), heartbeat(3, 2, 1))}, inv},
		{"a message for another controller after one for this", &raftv1.SendRequest{ClusterId: "c", FromNodeId: 1, ToNodeId: 2,
			Messages: peertest.EncodeMessages(t, heartbeat(1, 2, 1), heartbeat(1, 3, 1))}, inv},
		{"bytes that are no message after a message", &raftv1.SendRequest{ClusterId: "c", FromNodeId: 1, ToNodeId: 2,
			Messages: append(peertest.EncodeMessages(t, heartbeat(1, 2, 1)), []byte{0xff, 0xff})}, inv},
		{"from controller 0", &raftv1.SendRequest{ClusterId: "c", FromNodeId: 0, ToNodeId: 2,
			Messages: peertest.EncodeMessages(t, heartbeat(0, 2, 1))}, inv},
		{"from the receiver itself", &raftv1.SendRequest{ClusterId: "c", FromNodeId: 2, ToNodeId: 2,
			Messages: peertest.EncodeMessages(t, heartbeat(2, 2, 1))}, inv},
		{"for another controller", &raftv1.SendRequest{ClusterId: "c", FromNodeId: 1, ToNodeId: 3,
			Messages: peertest.EncodeMessages(t, heartbeat(1, 3, 1))}, inv},
		{"for another cluster", &raftv1.SendRequest{ClusterId: "other", FromNodeId: 1, ToNodeId: 2,
			Messages: peertest.EncodeMessages(t, heartbeat(1, 2, 1))}, connect.CodePermissionDenied},
	}
	for _, tc := range cases {
		err := send(tc.req)
		assert.Equal(t, tc.want, connect.CodeOf(err), "%s: %v", tc.name, err)
		assert.Zero(t, rec.count(), "%s: no message of a refused request is stepped", tc.name)
	}
	err := send(&raftv1.SendRequest{ClusterId: "c", FromNodeId: 1, ToNodeId: 2, Messages: peertest.EncodeMessages(t, heartbeat(1, 2, 1))})
	require.NoError(t, err, "a request from a peer to this controller")
	assert.Equal(t, 1, rec.count())
	err = send(cases[0].req)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "from controller 3, not from the request's sender 1", "the error says what is wrong")
}
