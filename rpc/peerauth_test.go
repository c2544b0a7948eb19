package rpc_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	metadatav1 "github.com/dmq-project/metadata/gen/dmq/metadata/v1"
	raftv1 "github.com/dmq-project/metadata/gen/dmq/raft/v1"
	"github.com/dmq-project/metadata/gen/dmq/raft/v1/raftv1connect"
	"github.com/dmq-project/metadata/rpc"
	"github.com/dmq-project/metadata/rpc/api"
	"github.com/dmq-project/metadata/rpc/auth"
	"github.com/dmq-project/metadata/rpc/metrics"
	"github.com/dmq-project/metadata/rpc/peer"
	"github.com/dmq-project/metadata/rpc/peer/peertest"
	"github.com/dmq-project/metadata/rpc/rpctest"
	"github.com/dmq-project/metadata/wire"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.etcd.io/raft/v3/raftpb"
)

// records are the JSON log records with the given message.
func (b *syncBuffer) records(t *testing.T, msg string) []map[string]any {
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []map[string]any
	scanner := bufio.NewScanner(bytes.NewReader(b.buf.Bytes()))
	for scanner.Scan() {
		var record map[string]any
		require.NoError(t, json.Unmarshal(scanner.Bytes(), &record))
		if record["msg"] == msg {
			out = append(out, record)
		}
	}
	return out
}

// refusedByReason reads dmq_peer_messages_refused_total from /metrics.
func refusedByReason(t *testing.T, base string) map[string]float64 {
	resp, err := http.Get(base + "/metrics")
	require.NoError(t, err)
	defer resp.Body.Close()
	out := map[string]float64{}
	scanner := bufio.NewScanner(resp.Body)
	for scanner.Scan() {
		rest, ok := strings.CutPrefix(scanner.Text(), `dmq_peer_messages_refused_total{reason="`)
		if !ok {
			continue
		}
		reason, value, ok := strings.Cut(rest, `"} `)
		require.True(t, ok, scanner.Text())
		out[reason], err = strconv.ParseFloat(value, 64)
		require.NoError(t, err)
	}
	return out
}

// TestPeerIdentity: with authentication on, the Raft transport (the
// Connect stream and the frame stream) takes controllers known by the
// peer token or a CONTROLLER token of the tokens file, never by a JWT,
// which is refused everywhere; the request's sender must match its
// messages. Every refusal is counted by reason, and logged once per burst.
func TestPeerIdentity(t *testing.T) {
	const peerToken = "peer-token-of-this-cluster-0123"
	logs := &syncBuffer{}
	cluster := rpctest.Start(t, 1, func(c *rpctest.Controller) {
		// The peer token is not in the tokens file: the setting alone
		// names the cluster's controllers.
		c.Security = rpc.Security{Auth: authenticator(t), PeerToken: peerToken}
		c.ProbeToken = adminToken
		c.Logger = slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelInfo}))
	})
	leader := cluster.WaitLeader(t)
	base := leader.URL()
	ctx := context.Background()
	jwtController := auth.SignJWT(jwtSecret, auth.Principal{Name: "mallory", Role: auth.RoleController}, time.Now().Add(time.Hour))

	send := func(token string, from uint64, messages ...*raftpb.Message) error {
		opts := []connect.ClientOption{}
		if token != "" {
			opts = append(opts, wire.BearerToken(token))
		}
		stream := raftv1connect.NewRaftTransportServiceClient(wire.NewHTTPClient(nil), base, opts...).Send(ctx)
		_ = stream.Send(&raftv1.SendRequest{ClusterId: "test-cluster", FromNodeId: from, ToNodeId: leader.ID,
			Messages: peertest.EncodeMessages(t, messages...)})
		_, err := stream.CloseAndReceive()
		return err
	}
	frames := func(token string) int {
		status, _ := peertest.OpenFrames(t, base, peertest.FramesRequest{Token: token, Cluster: "test-cluster", From: "9", To: strconv.FormatUint(leader.ID, 10)})
		return status
	}

	// A JWT claiming CONTROLLER, wherever it is presented.
	for range 3 {
		err := send(jwtController, 9)
		assert.Equal(t, connect.CodeUnauthenticated, connect.CodeOf(err), "a JWT naming a controller, on the Raft transport: %v", err)
		assert.Contains(t, err.Error(), "CONTROLLER")
	}
	assert.Equal(t, http.StatusUnauthorized, frames(jwtController), "a JWT naming a controller, on the frame stream")
	_, err := metadataClient(base, wire.BearerToken(jwtController)).ListTopics(ctx, connect.NewRequest(&metadatav1.ListTopicsRequest{}))
	assert.Equal(t, connect.CodeUnauthenticated, connect.CodeOf(err), "a JWT naming a controller, on the API: %v", err)

	// Controllers.
	require.NoError(t, send(peerToken, 9), "the peer token")
	assert.Equal(t, http.StatusSwitchingProtocols, frames(peerToken), "the peer token, on the frame stream")
	require.NoError(t, send(controllerToken, 9), "a CONTROLLER token of the tokens file")
	_, err = metadataClient(base, wire.BearerToken(peerToken)).ListTopics(ctx, connect.NewRequest(&metadatav1.ListTopicsRequest{}))
	assert.Equal(t, connect.CodeUnauthenticated, connect.CodeOf(err), "the peer token opens the Raft transport only: %v", err)

	// Others.
	assert.Equal(t, connect.CodeUnauthenticated, connect.CodeOf(send("", 9)), "no token")
	assert.Equal(t, connect.CodePermissionDenied, connect.CodeOf(send(adminToken, 9)), "an admin is not a controller")
	adminJWT := auth.SignJWT(jwtSecret, auth.Principal{Name: "jwt-admin", Role: auth.RoleAdmin}, time.Now().Add(time.Hour))
	assert.Equal(t, http.StatusForbidden, frames(adminJWT), "an admin JWT is not a controller")

	// A controller speaking for another.
	err = send(peerToken, 9, peertest.Heartbeat(9, leader.ID, 0), peertest.Heartbeat(8, leader.ID, 0))
	assert.Equal(t, connect.CodeInvalidArgument, connect.CodeOf(err), "a message from 8 in a request from 9: %v", err)

	assert.Equal(t, map[string]float64{
		"controller_jwt":  4,
		"unauthenticated": 1,
		"not_controller":  2,
		"sender":          1,
	}, refusedByReason(t, base))
	logged := map[string]int{}
	for _, record := range logs.records(t, "Raft transport: peer request refused") {
		logged[record["reason"].(string)]++
	}
	assert.Equal(t, map[string]int{"controller_jwt": 1, "unauthenticated": 1, "not_controller": 1, "sender": 1}, logged,
		"each reason is logged once in a burst")
}

// TestShortPeerTokenRefused: a peer token names a controller to every
// peer: one as short as a password is refused at start.
func TestShortPeerTokenRefused(t *testing.T) {
	logger := slog.New(slog.DiscardHandler)
	m := metrics.New()
	_, err := rpc.NewHandler(api.NewServer(nil, api.ServerConfig{Metrics: m}), peer.NewRaftHandler("c", 1, nil, nil), m, logger,
		rpc.Security{Auth: authenticator(t), PeerToken: "hunter2"}, nil, nil)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "peer token")
}
