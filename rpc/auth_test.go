package rpc_test

import (
	"context"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"connectrpc.com/connect"
	metadatav1 "github.com/dmq-project/metadata/gen/dmq/metadata/v1"
	"github.com/dmq-project/metadata/gen/dmq/metadata/v1/metadatav1connect"
	raftv1 "github.com/dmq-project/metadata/gen/dmq/raft/v1"
	"github.com/dmq-project/metadata/gen/dmq/raft/v1/raftv1connect"
	"github.com/dmq-project/metadata/rpc"
	"github.com/dmq-project/metadata/rpc/auth"
	"github.com/dmq-project/metadata/rpc/peer/peertest"
	"github.com/dmq-project/metadata/rpc/rpctest"
	"github.com/dmq-project/metadata/wire"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

const (
	adminToken      = "admin-token-0123456789"
	serviceToken    = "service-1-token-0123456789"
	consumerToken   = "consumer-token-0123456789"
	controllerToken = "controller-token-0123456789"
)

var jwtSecret = []byte("a-secret-of-at-least-32-bytes-long!!")

func authenticator(t *testing.T) *auth.Authenticator {
	path := filepath.Join(t.TempDir(), "tokens.json")
	require.NoError(t, os.WriteFile(path, []byte(`{"tokens":[
  {"token":"`+adminToken+`","name":"ops","role":"ADMIN"},
  {"token":"`+serviceToken+`","name":"storage-1","role":"SERVICE","brokerId":1},
  {"token":"`+consumerToken+`","name":"reader","role":"CONSUMER"},
  {"token":"`+controllerToken+`","name":"controllers","role":"CONTROLLER"}]}`), 0o600))
	authn, err := auth.NewAuthenticator(path, jwtSecret)
	require.NoError(t, err)
	return authn
}

// TestAuthentication: every call needs a valid token and a role that
// allows it; a refused call changes nothing.
func TestAuthentication(t *testing.T) {
	authn := authenticator(t)
	cluster := rpctest.Start(t, 3, func(c *rpctest.Controller) {
		c.Security = rpc.Security{Auth: authn, PeerToken: controllerToken}
		c.ProbeToken = consumerToken
	})
	base := cluster.WaitLeader(t).URL()
	ctx := context.Background()
	as := func(token string) metadatav1connect.MetadataServiceClient {
		if token == "" {
			return metadataClient(base)
		}
		return metadataClient(base, wire.BearerToken(token))
	}
	expiredJWT := auth.SignJWT(jwtSecret, auth.Principal{Name: "late", Role: auth.RoleAdmin}, time.Now().Add(-time.Minute))
	forgedJWT := auth.SignJWT([]byte("another-secret-entirely-0123456789"), auth.Principal{Name: "mallory", Role: auth.RoleAdmin}, time.Now().Add(time.Hour))
	adminJWT := auth.SignJWT(jwtSecret, auth.Principal{Name: "jwt-admin", Role: auth.RoleAdmin}, time.Now().Add(time.Hour))
	serviceJWT := auth.SignJWT(jwtSecret, auth.Principal{Name: "storage-2", Role: auth.RoleService, BrokerID: 2}, time.Now().Add(time.Hour))

	register := func(id int32) func(metadatav1connect.MetadataServiceClient) error {
		return func(c metadatav1connect.MetadataServiceClient) error {
			_, err := c.RegisterBroker(ctx, connect.NewRequest(&metadatav1.RegisterBrokerRequest{Id: id, Host: "localhost", Port: 9092}))
			return err
		}
	}
	createTopic := func(c metadatav1connect.MetadataServiceClient) error {
		_, err := c.CreateTopic(ctx, connect.NewRequest(&metadatav1.CreateTopicRequest{Name: "guarded", Partitions: 1}))
		return err
	}
	listTopics := func(c metadatav1connect.MetadataServiceClient) error {
		_, err := c.ListTopics(ctx, connect.NewRequest(&metadatav1.ListTopicsRequest{}))
		return err
	}
	heartbeat := func(service string) func(metadatav1connect.MetadataServiceClient) error {
		return func(c metadatav1connect.MetadataServiceClient) error {
			_, err := c.StorageHeartbeat(ctx, connect.NewRequest(&metadatav1.StorageHeartbeatRequest{ServiceId: service}))
			return err
		}
	}
	cases := []struct {
		name  string
		token string
		call  func(metadatav1connect.MetadataServiceClient) error
		want  connect.Code
	}{
		{"no token, read", "", listTopics, connect.CodeUnauthenticated},
		{"no token, write", "", createTopic, connect.CodeUnauthenticated},
		{"unknown token", "not-a-token-at-all-xyz", listTopics, connect.CodeUnauthenticated},
		{"expired JWT", expiredJWT, listTopics, connect.CodeUnauthenticated},
		{"forged JWT", forgedJWT, createTopic, connect.CodeUnauthenticated},
		{"consumer reads", consumerToken, listTopics, 0},
		{"consumer creates a topic", consumerToken, createTopic, connect.CodePermissionDenied},
		{"consumer registers a broker", consumerToken, register(1), connect.CodePermissionDenied},
		{"service registers another broker", serviceToken, register(2), connect.CodePermissionDenied},
		{"service registers its own broker", serviceToken, register(1), 0},
		{"service heartbeats for another", serviceToken, heartbeat("storage-2"), connect.CodePermissionDenied},
		{"service heartbeats for itself", serviceToken, heartbeat("storage-1"), 0},
		{"service creates a topic", serviceToken, createTopic, connect.CodePermissionDenied},
		{"controller token on the API", controllerToken, listTopics, connect.CodePermissionDenied},
		{"JWT service registers its own broker", serviceJWT, register(2), 0},
		{"admin creates a topic", adminToken, createTopic, 0},
		{"JWT admin reads", adminJWT, listTopics, 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.call(as(tc.token))
			if tc.want == 0 {
				require.NoError(t, err)
				return
			}
			assert.Equal(t, tc.want, connect.CodeOf(err), "%v", err)
		})
	}
	// Every refusal holds over gRPC and REST too (the REST calls go through
	// a proxy that turns typed requests into the controller's REST paths).
	restBase := restProxy(t, base)
	for _, protocol := range []struct {
		name   string
		client func(opts ...connect.ClientOption) metadatav1connect.MetadataServiceClient
	}{
		{"grpc", func(opts ...connect.ClientOption) metadatav1connect.MetadataServiceClient {
			return metadataClient(base, append(opts, connect.WithGRPC())...)
		}},
		{"rest", func(opts ...connect.ClientOption) metadatav1connect.MetadataServiceClient {
			return metadatav1connect.NewMetadataServiceClient(http.DefaultClient, restBase, opts...)
		}},
	} {
		for _, tc := range cases {
			if tc.want == 0 {
				continue
			}
			var opts []connect.ClientOption
			if tc.token != "" {
				opts = append(opts, wire.BearerToken(tc.token))
			}
			err := tc.call(protocol.client(opts...))
			assert.Equal(t, tc.want, connect.CodeOf(err), "%s over %s: %v", tc.name, protocol.name, err)
		}
	}
	topics, err := as(adminToken).ListTopics(ctx, connect.NewRequest(&metadatav1.ListTopicsRequest{}))
	require.NoError(t, err)
	assert.Len(t, topics.Msg.GetTopics(), 1, "refused creations changed nothing")

	// The Raft transport takes controllers only.
	send := func(token string) error {
		opts := []connect.ClientOption{}
		if token != "" {
			opts = append(opts, wire.BearerToken(token))
		}
		stream := raftv1connect.NewRaftTransportServiceClient(wire.NewHTTPClient(nil), base, opts...).Send(ctx)
		_ = stream.Send(&raftv1.SendRequest{ClusterId: "test-cluster", FromNodeId: 9, ToNodeId: 1})
		_, err := stream.CloseAndReceive()
		return err
	}
	assert.Equal(t, connect.CodeUnauthenticated, connect.CodeOf(send("")))
	assert.Equal(t, connect.CodePermissionDenied, connect.CodeOf(send(adminToken)), "an admin is not a controller")
	// So does the frame stream.
	frames := peertest.FramesRequest{Cluster: "test-cluster", From: "9", To: strconv.FormatUint(cluster.WaitLeader(t).ID, 10)}
	status, _ := peertest.OpenFrames(t, base, frames)
	assert.Equal(t, http.StatusUnauthorized, status, "no token")
	frames.Token = adminToken
	status, _ = peertest.OpenFrames(t, base, frames)
	assert.Equal(t, http.StatusForbidden, status, "an admin is not a controller")
	frames.Token = controllerToken
	status, _ = peertest.OpenFrames(t, base, frames)
	assert.Equal(t, http.StatusSwitchingProtocols, status, "a controller")
}

// TestRateLimitPerPrincipal: with authentication on, each principal has
// its own budget, even from one address: an admin past its rate does not
// hold a reader back.
func TestRateLimitPerPrincipal(t *testing.T) {
	authn := authenticator(t)
	cluster := rpctest.Start(t, 1, func(c *rpctest.Controller) {
		c.Security = rpc.Security{Auth: authn, RateLimit: auth.RateLimit{PerSecond: 1, Burst: 3}}
		c.ProbeToken = serviceToken
	})
	base := cluster.WaitLeader(t).URL()
	list := func(token string) error {
		_, err := metadataClient(base, wire.BearerToken(token)).ListTopics(context.Background(), connect.NewRequest(&metadatav1.ListTopicsRequest{}))
		return err
	}
	for range 3 {
		require.NoError(t, list(adminToken))
	}
	require.Equal(t, connect.CodeResourceExhausted, connect.CodeOf(list(adminToken)), "the admin's burst is spent")
	for range 3 {
		require.NoError(t, list(consumerToken), "the reader's budget is its own")
	}
	require.Equal(t, connect.CodeResourceExhausted, connect.CodeOf(list(consumerToken)))
}

// TestProfilesNeedAnAdmin: with authentication on, /debug/pprof answers
// admins only; metrics stay open to scrapers.
func TestProfilesNeedAnAdmin(t *testing.T) {
	cluster := rpctest.Start(t, 1, func(c *rpctest.Controller) {
		c.Security = rpc.Security{Auth: authenticator(t)}
		c.ProbeToken = adminToken
	})
	base := cluster.WaitLeader(t).URL()
	get := func(path, token string) int {
		req, err := http.NewRequest("GET", base+path, nil)
		require.NoError(t, err)
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		_ = resp.Body.Close()
		return resp.StatusCode
	}
	assert.Equal(t, http.StatusUnauthorized, get("/debug/pprof/", ""))
	assert.Equal(t, http.StatusForbidden, get("/debug/pprof/", consumerToken))
	assert.Equal(t, http.StatusUnauthorized, get("/debug/pprof/profile?seconds=1", ""))
	assert.Equal(t, http.StatusOK, get("/debug/pprof/", adminToken))
	assert.Equal(t, http.StatusOK, get("/metrics", ""))
}
