package rpc_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	metadatav1 "github.com/dmq-project/metadata/gen/dmq/metadata/v1"
	"github.com/dmq-project/metadata/gen/dmq/metadata/v1/metadatav1connect"
	"github.com/dmq-project/metadata/rpc"
	"github.com/dmq-project/metadata/rpc/auth"
	"github.com/dmq-project/metadata/rpc/rpctest"
	"github.com/dmq-project/metadata/wire"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func metadataClient(url string, opts ...connect.ClientOption) metadatav1connect.MetadataServiceClient {
	return metadatav1connect.NewMetadataServiceClient(wire.NewHTTPClient(nil), url, opts...)
}

func postJSON(t *testing.T, url, body string) (int, map[string]any) {
	resp, err := http.Post(url, "application/json", bytes.NewBufferString(body))
	require.NoError(t, err)
	return decodeJSON(t, resp)
}

func getJSON(t *testing.T, url string) (int, map[string]any) {
	resp, err := http.Get(url)
	require.NoError(t, err)
	return decodeJSON(t, resp)
}

func deleteJSON(t *testing.T, url string) (int, map[string]any) {
	req, err := http.NewRequest(http.MethodDelete, url, nil)
	require.NoError(t, err)
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	return decodeJSON(t, resp)
}

func decodeJSON(t *testing.T, resp *http.Response) (int, map[string]any) {
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	var out map[string]any
	require.NoError(t, json.Unmarshal(data, &out), "body %s", data)
	return resp.StatusCode, out
}

// requireSubset checks that every field of want is in got with the same
// value: the seed's answers are kept, fields the seed did not have added.
func requireSubset(t *testing.T, want, got map[string]any) {
	t.Helper()
	for key, value := range want {
		require.Contains(t, got, key)
		if nested, ok := value.(map[string]any); ok {
			requireSubset(t, nested, got[key].(map[string]any))
			continue
		}
		require.Equal(t, value, got[key], "field %q", key)
	}
}

func TestSeedRESTExamples(t *testing.T) {
	cluster := rpctest.Start(t, 1, func(c *rpctest.Controller) {
		// storage-1 has a push endpoint (nobody answers there: the push
		// fails and is retried with backoff).
		c.PushURLs = map[int32]string{1: "http://127.0.0.1:1"}
	})
	base := cluster.WaitLeader(t).URL()

	status, body := postJSON(t, base+"/api/v1/metadata/brokers", `{
    "id": 1,
    "host": "localhost",
    "port": 8082,
    "rack": "rack1"
  }`)
	require.Equal(t, http.StatusOK, status)
	var want map[string]any
	require.NoError(t, json.Unmarshal([]byte(`{"broker":{"id":1,"host":"localhost","port":8082,"rack":"rack1","isAlive":true},"success":true,"errorCode":"NONE"}`), &want))
	requireSubset(t, want, body)

	status, body = postJSON(t, base+"/api/v1/metadata/topics", `{
    "name": "test-topic",
    "partitions": 3,
    "replicationFactor": 1
  }`)
	require.Equal(t, http.StatusOK, status)
	assert.Equal(t, true, body["success"])
	assert.Equal(t, "test-topic", body["topic"].(map[string]any)["name"])

	status, body = getJSON(t, base+"/api/v1/metadata/topics/test-topic/partitions")
	require.Equal(t, http.StatusOK, status)
	partitions := body["partitions"].([]any)
	require.Len(t, partitions, 3)
	for _, p := range partitions {
		assert.Equal(t, float64(1), p.(map[string]any)["leader"])
	}

	status, body = postJSON(t, base+"/api/v1/metadata/storage-heartbeat", `{
    "serviceId": "storage-1",
    "metadataVersion": 123456789,
    "partitionCount": 10,
    "isAlive": true
  }`)
	require.Equal(t, http.StatusOK, status)
	assert.Equal(t, true, body["registered"])
	assert.Equal(t, true, body["pushScheduled"], "a version ahead of the controller's is divergent: full push")

	// A service that never registered is told to, with HTTP 200.
	status, body = postJSON(t, base+"/api/v1/metadata/storage-heartbeat", `{"serviceId":"storage-9","metadataVersion":0}`)
	require.Equal(t, http.StatusOK, status)
	assert.Equal(t, false, body["registered"], "REST emits default values: the seed's clients read the field")
	assert.Equal(t, "BROKER_NOT_REGISTERED", body["errorCode"])

	// Bad input gets clear HTTP errors and changes nothing.
	status, body = postJSON(t, base+"/api/v1/metadata/topics", `{bad json`)
	assert.Equal(t, http.StatusBadRequest, status)
	assert.Contains(t, body["message"], "syntax error")
	status, body = getJSON(t, base+"/api/v1/metadata/topics/no-such-topic/partitions")
	assert.Equal(t, http.StatusNotFound, status)
	assert.Contains(t, fmt.Sprint(body["details"]), "UNKNOWN_TOPIC")
	status, body = postJSON(t, base+"/api/v1/metadata/topics", `{"name":"bad name!","partitions":1}`)
	assert.Equal(t, http.StatusBadRequest, status)
	assert.Contains(t, fmt.Sprint(body["details"]), "INVALID_TOPIC_NAME")
	status, _ = postJSON(t, base+"/api/v1/metadata/topics", `{"name":"test-topic","partitions":1}`)
	assert.Equal(t, http.StatusConflict, status)
	_, body = getJSON(t, base+"/api/v1/metadata/topics")
	assert.Len(t, body["topics"], 1)
}

// A REST client without a library gets exactly-once writes too: it opens
// a session and numbers its writes in it.
func TestRESTWritesInAClientSession(t *testing.T) {
	cluster := rpctest.Start(t, 1, nil)
	base := cluster.WaitLeader(t).URL()
	status, body := postJSON(t, base+"/api/v1/metadata/brokers", `{"id":1,"host":"localhost","port":8082}`)
	require.Equal(t, http.StatusOK, status, "%v", body)

	status, body = postJSON(t, base+"/api/v1/metadata/sessions", `{"clientId":"curl"}`)
	require.Equal(t, http.StatusOK, status, "%v", body)
	// 64-bit integers are JSON numbers on the REST paths, as the Java
	// service wrote them (protojson writes strings).
	session := body["sessionId"].(float64)
	assert.Equal(t, float64(120000), body["timeoutMs"], "the default timeout is advertised")

	create := fmt.Sprintf(`{"name":"once","partitions":1,"requestId":{"sessionId":%d,"sequence":1}}`, int64(session))
	status, body = postJSON(t, base+"/api/v1/metadata/topics", create)
	require.Equal(t, http.StatusOK, status, "%v", body)
	version := body["metadataVersion"]
	status, _ = deleteJSON(t, base+"/api/v1/metadata/topics/once")
	require.Equal(t, http.StatusOK, status)
	// The retry gets the first answer and does not re-create the topic.
	status, body = postJSON(t, base+"/api/v1/metadata/topics", create)
	require.Equal(t, http.StatusOK, status, "%v", body)
	assert.Equal(t, version, body["metadataVersion"])
	status, _ = getJSON(t, base+"/api/v1/metadata/topics/once")
	assert.Equal(t, http.StatusNotFound, status)

	// A request id naming no session, or an unknown one, is refused.
	status, body = postJSON(t, base+"/api/v1/metadata/topics", `{"name":"x","partitions":1,"requestId":{"clientId":"curl","sequence":"1"}}`)
	assert.Equal(t, http.StatusBadRequest, status)
	assert.Contains(t, body["message"], "names no session")
	status, body = postJSON(t, base+"/api/v1/metadata/topics", `{"name":"x","partitions":1,"requestId":{"sessionId":"999","sequence":"1"}}`)
	assert.Equal(t, http.StatusBadRequest, status, "%v", body) // FailedPrecondition, as Google's HTTP mapping has it
	assert.Contains(t, fmt.Sprint(body["details"]), "SESSION_EXPIRED")
	status, _ = getJSON(t, base+"/api/v1/metadata/topics/x")
	assert.Equal(t, http.StatusNotFound, status)
}

func TestConnectAndGRPC(t *testing.T) {
	cluster := rpctest.Start(t, 1, nil)
	base := cluster.WaitLeader(t).URL()
	for i, protocol := range []struct {
		name string
		opts []connect.ClientOption
	}{{"connect", nil}, {"grpc", []connect.ClientOption{connect.WithGRPC()}}, {"connect-json", []connect.ClientOption{connect.WithProtoJSON()}}} {
		t.Run(protocol.name, func(t *testing.T) {
			client := metadataClient(base, protocol.opts...)
			ctx := context.Background()
			brokerID := int32(10 + i)
			reg, err := client.RegisterBroker(ctx, connect.NewRequest(&metadatav1.RegisterBrokerRequest{Id: brokerID, Host: "localhost", Port: 8082, Rack: "rack1"}))
			require.NoError(t, err)
			assert.True(t, reg.Msg.GetBroker().GetIsAlive())
			assert.Equal(t, metadatav1.ErrorCode_NONE, reg.Msg.GetErrorCode())
			name := "topic-" + protocol.name
			created, err := client.CreateTopic(ctx, connect.NewRequest(&metadatav1.CreateTopicRequest{Name: name, Partitions: 3, ReplicationFactor: 1}))
			require.NoError(t, err)
			assert.Len(t, created.Msg.GetTopic().GetPartitions(), 3)
			described, err := client.DescribeTopic(ctx, connect.NewRequest(&metadatav1.DescribeTopicRequest{Name: name}))
			require.NoError(t, err)
			assert.Equal(t, created.Msg.GetTopic().GetTopicId(), described.Msg.GetTopic().GetTopicId())
			hb, err := client.StorageHeartbeat(ctx, connect.NewRequest(&metadatav1.StorageHeartbeatRequest{
				ServiceId: fmt.Sprintf("storage-%d", brokerID), MetadataVersion: described.Msg.GetMetadataVersion()}))
			require.NoError(t, err)
			assert.True(t, hb.Msg.GetRegistered())

			_, err = client.DescribeTopic(ctx, connect.NewRequest(&metadatav1.DescribeTopicRequest{Name: "absent"}))
			assert.Equal(t, connect.CodeNotFound, connect.CodeOf(err))
			assert.Equal(t, metadatav1.ErrorCode_UNKNOWN_TOPIC, wire.ErrorCodeOf(err))
			_, err = client.CreateTopic(ctx, connect.NewRequest(&metadatav1.CreateTopicRequest{Name: "..", Partitions: 1}))
			assert.Equal(t, connect.CodeInvalidArgument, connect.CodeOf(err))
			assert.Equal(t, metadatav1.ErrorCode_INVALID_TOPIC_NAME, wire.ErrorCodeOf(err))
		})
	}
}

// createWithRetry is the client retry path: the same request id, following
// "not the leader" hints, across controllers, until the deadline.
func createWithRetry(ctx context.Context, cluster rpctest.Cluster, req *metadatav1.CreateTopicRequest) error {
	return withRetry(ctx, cluster, func(ctx context.Context, url string) error {
		_, err := metadataClient(url).CreateTopic(ctx, connect.NewRequest(req))
		return err
	})
}

// openSessionWithRetry opens a client session for idempotent writes.
func openSessionWithRetry(ctx context.Context, t *testing.T, cluster rpctest.Cluster) uint64 {
	var id uint64
	require.NoError(t, withRetry(ctx, cluster, func(ctx context.Context, url string) error {
		resp, err := metadataClient(url).OpenSession(ctx, connect.NewRequest(&metadatav1.OpenSessionRequest{ClientId: t.Name()}))
		if err == nil {
			id = resp.Msg.GetSessionId()
		}
		return err
	}))
	return id
}

// withRetry calls until an answer that is not "unavailable", following
// leader hints.
func withRetry(ctx context.Context, cluster rpctest.Cluster, call func(ctx context.Context, url string) error) error {
	target := cluster[0].URL()
	var last error
	for attempt := 0; ctx.Err() == nil; attempt++ {
		callCtx, cancel := context.WithTimeout(ctx, 2*time.Second)
		err := call(callCtx, target)
		cancel()
		if err == nil {
			return nil
		}
		last = err
		if code := wire.ErrorCodeOf(err); wire.Definite(code) {
			return err
		}
		if _, url, ok := wire.LeaderOf(err); ok && url != "" {
			target = url
			continue
		}
		target = cluster[(attempt+1)%len(cluster)].URL()
		time.Sleep(50 * time.Millisecond)
	}
	return errors.Join(ctx.Err(), last)
}

func TestThreeControllersSurviveLeaderLoss(t *testing.T) {
	cluster := rpctest.Start(t, 3, nil)
	leader := cluster.WaitLeader(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	_, err := metadataClient(leader.URL()).RegisterBroker(ctx, connect.NewRequest(&metadatav1.RegisterBrokerRequest{Id: 1, Host: "localhost", Port: 9092}))
	require.NoError(t, err)

	// A follower passes a write to the leader and answers with the
	// leader's answer, over Connect and over REST; a call another
	// controller forwarded already it answers "not the leader", naming it.
	for _, tc := range cluster {
		if tc.ID == leader.ID {
			continue
		}
		created, err := metadataClient(tc.URL()).CreateTopic(ctx, connect.NewRequest(&metadatav1.CreateTopicRequest{Name: "x", Partitions: 1}))
		require.NoError(t, err)
		assert.Equal(t, "x", created.Msg.GetTopic().GetName())
		resp, err := http.Post(tc.URL()+"/api/v1/metadata/topics", "application/json", strings.NewReader(`{"name": "y", "partitions": 2}`))
		require.NoError(t, err)
		body, _ := io.ReadAll(resp.Body)
		_ = resp.Body.Close()
		require.Equal(t, http.StatusOK, resp.StatusCode, "%s", body)
		listed, err := metadataClient(leader.URL()).ListTopics(ctx, connect.NewRequest(&metadatav1.ListTopicsRequest{}))
		require.NoError(t, err)
		var names []string
		for _, topic := range listed.Msg.GetTopics() {
			names = append(names, topic.GetName())
		}
		assert.ElementsMatch(t, []string{"x", "y"}, names)

		again := connect.NewRequest(&metadatav1.CreateTopicRequest{Name: "z", Partitions: 1})
		again.Header().Set(wire.ForwardedByHeader, "9")
		_, err = metadataClient(tc.URL()).CreateTopic(ctx, again)
		require.Equal(t, connect.CodeUnavailable, connect.CodeOf(err))
		id, url, ok := wire.LeaderOf(err)
		require.True(t, ok)
		assert.Equal(t, leader.ID, id)
		assert.Equal(t, leader.URL(), url)
		break
	}

	var acknowledged []string
	session := openSessionWithRetry(ctx, t, cluster)
	create := func(i int) {
		name := fmt.Sprintf("topic-%02d", i)
		err := createWithRetry(ctx, cluster, &metadatav1.CreateTopicRequest{Name: name, Partitions: 2, ReplicationFactor: 1,
			RequestId: &metadatav1.RequestId{ClientId: "failover-test", SessionId: session, Sequence: uint64(i + 1)}})
		require.NoError(t, err, name)
		acknowledged = append(acknowledged, name)
	}
	for i := 0; i < 5; i++ {
		create(i)
	}
	leader.Stop(t)
	for i := 5; i < 10; i++ {
		create(i)
	}
	leader.Start(t)
	acknowledged = append(acknowledged, "x", "y") // the forwarded ones

	// Every controller converges on every acknowledged topic.
	for _, tc := range cluster {
		require.Eventually(t, func() bool {
			resp, err := metadataClient(tc.URL()).ListTopics(ctx, connect.NewRequest(&metadatav1.ListTopicsRequest{AllowStale: true}))
			if err != nil {
				return false
			}
			var names []string
			for _, topic := range resp.Msg.GetTopics() {
				names = append(names, topic.GetName())
			}
			return slices.Equal(names, acknowledged)
		}, 20*time.Second, 50*time.Millisecond, "controller %d: %s", tc.ID, describeAll(cluster))
	}
}

func describeAll(cluster rpctest.Cluster) string {
	var out []string
	for _, tc := range cluster {
		resp, err := metadatav1connect.NewQuorumServiceClient(wire.NewHTTPClient(nil), tc.URL()).DescribeQuorum(context.Background(),
			connect.NewRequest(&metadatav1.DescribeQuorumRequest{}))
		if err != nil {
			out = append(out, fmt.Sprintf("%d: %v", tc.ID, err))
			continue
		}
		out = append(out, fmt.Sprintf("%d: leader %d term %d commit %d applied %d", tc.ID, resp.Msg.GetLeaderId(),
			resp.Msg.GetTerm(), resp.Msg.GetCommitIndex(), resp.Msg.GetAppliedIndex()))
	}
	return fmt.Sprint(out)
}

// syncRecorder is a storage-service stand-in implementing StorageSyncService.
type syncRecorder struct {
	mu       sync.Mutex
	versions []int64
	state    *metadatav1.ClusterState
	epoch    uint64
}

func (r *syncRecorder) PushMetadata(_ context.Context, req *connect.Request[metadatav1.PushMetadataRequest]) (*connect.Response[metadatav1.PushMetadataResponse], error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	current := r.state.GetMetadataVersion()
	if req.Msg.GetControllerEpoch() < r.epoch || req.Msg.GetMetadataVersion() < current {
		return connect.NewResponse(&metadatav1.PushMetadataResponse{MetadataVersion: current, Reason: "stale"}), nil
	}
	switch u := req.Msg.Update.(type) {
	case *metadatav1.PushMetadataRequest_FullState:
		r.state = u.FullState
	case *metadatav1.PushMetadataRequest_Delta:
		if u.Delta.GetFromVersion() != current {
			return connect.NewResponse(&metadatav1.PushMetadataResponse{MetadataVersion: current, Reason: "delta base mismatch"}), nil
		}
		r.state = wire.ApplyDelta(r.state, u.Delta)
	}
	r.epoch = req.Msg.GetControllerEpoch()
	r.versions = append(r.versions, r.state.GetMetadataVersion())
	return connect.NewResponse(&metadatav1.PushMetadataResponse{Accepted: true, MetadataVersion: r.state.GetMetadataVersion()}), nil
}

func TestPushesReachStorageServiceInOrder(t *testing.T) {
	recorder := &syncRecorder{state: &metadatav1.ClusterState{}}
	path, handler := metadatav1connect.NewStorageSyncServiceHandler(recorder)
	mux := http.NewServeMux()
	mux.Handle(path, handler)
	listener, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	server := wire.NewHTTPServer(listener.Addr().String(), mux)
	go func() { _ = server.Serve(listener) }()
	defer server.Close()

	cluster := rpctest.Start(t, 1, func(c *rpctest.Controller) {
		c.PushURLs = map[int32]string{1: "http://" + listener.Addr().String()}
	})
	client := metadataClient(cluster.WaitLeader(t).URL())
	ctx := context.Background()
	_, err = client.RegisterBroker(ctx, connect.NewRequest(&metadatav1.RegisterBrokerRequest{Id: 1, Host: "localhost", Port: 9092}))
	require.NoError(t, err)
	for i := 0; i < 5; i++ {
		_, err := client.CreateTopic(ctx, connect.NewRequest(&metadatav1.CreateTopicRequest{Name: fmt.Sprintf("t%d", i), Partitions: 2}))
		require.NoError(t, err)
	}
	var latest *connect.Response[metadatav1.GetClusterMetadataResponse]
	require.Eventually(t, func() bool {
		latest, err = client.GetClusterMetadata(ctx, connect.NewRequest(&metadatav1.GetClusterMetadataRequest{}))
		require.NoError(t, err)
		recorder.mu.Lock()
		defer recorder.mu.Unlock()
		return recorder.state.GetMetadataVersion() == latest.Msg.GetState().GetMetadataVersion()
	}, 10*time.Second, 20*time.Millisecond)
	recorder.mu.Lock()
	defer recorder.mu.Unlock()
	assert.True(t, slices.IsSorted(recorder.versions), "versions arrive in order: %v", recorder.versions)
	assert.Len(t, recorder.state.GetTopics(), 5)
	want, _ := json.Marshal(latest.Msg.GetState().GetTopics())
	got, _ := json.Marshal(recorder.state.GetTopics())
	assert.JSONEq(t, string(want), string(got), "what the service holds is what the controller holds")
}

// TestLimits: a client past its rate gets ResourceExhausted with a
// Retry-After hint, and an oversized request is refused; neither changes
// anything.
func TestLimits(t *testing.T) {
	cluster := rpctest.Start(t, 1, func(c *rpctest.Controller) {
		c.Security = rpc.Security{RateLimit: auth.RateLimit{PerSecond: 2, Burst: 5}, MaxRequestBytes: 64 << 10}
	})
	client := metadataClient(cluster.WaitLeader(t).URL())
	ctx := context.Background()
	var limited error
	accepted := 0
	for i := 0; i < 20 && limited == nil; i++ {
		_, err := client.RegisterBroker(ctx, connect.NewRequest(&metadatav1.RegisterBrokerRequest{Id: int32(i + 1), Host: "localhost", Port: 9092}))
		if connect.CodeOf(err) == connect.CodeResourceExhausted {
			limited = err
			break
		}
		require.NoError(t, err)
		accepted++
	}
	require.Error(t, limited, "the sixth request in a burst of five is refused")
	assert.LessOrEqual(t, accepted, 6)
	var ce *connect.Error
	require.True(t, errors.As(limited, &ce))
	assert.NotEmpty(t, ce.Meta().Get("Retry-After"))
	assert.Contains(t, ce.Message(), "retry in")

	time.Sleep(3 * time.Second) // the bucket refills
	huge := map[string]string{"x": strings.Repeat("y", 100<<10)}
	_, err := client.CreateTopic(ctx, connect.NewRequest(&metadatav1.CreateTopicRequest{Name: "big", Partitions: 1, Configs: huge}))
	assert.Equal(t, connect.CodeResourceExhausted, connect.CodeOf(err), "a 100 KiB request over a 64 KiB limit")
	brokers, err := client.ListBrokers(ctx, connect.NewRequest(&metadatav1.ListBrokersRequest{}))
	require.NoError(t, err)
	assert.Len(t, brokers.Msg.GetBrokers(), accepted, "refused requests changed nothing")
	topics, err := client.ListTopics(ctx, connect.NewRequest(&metadatav1.ListTopicsRequest{}))
	require.NoError(t, err)
	assert.Empty(t, topics.Msg.GetTopics())
}

// syncBuffer is an io.Writer the test can read while the server writes.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) lines() []auth.AuditRecord {
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []auth.AuditRecord
	for _, line := range strings.Split(strings.TrimSpace(b.buf.String()), "\n") {
		if line == "" {
			continue
		}
		var r auth.AuditRecord
		if err := json.Unmarshal([]byte(line), &r); err == nil {
			out = append(out, r)
		}
	}
	return out
}

// TestAuditLog: one record per mutating request, with who, from where,
// what, the result and the metadata version; reads and routine heartbeats
// leave none.
func TestAuditLog(t *testing.T) {
	audit := &syncBuffer{}
	cluster := rpctest.Start(t, 1, func(c *rpctest.Controller) { c.Security = rpc.Security{Audit: audit} })
	client := metadataClient(cluster.WaitLeader(t).URL())
	ctx := context.Background()
	_, err := client.RegisterBroker(ctx, connect.NewRequest(&metadatav1.RegisterBrokerRequest{Id: 1, Host: "localhost", Port: 9092}))
	require.NoError(t, err)
	created, err := client.CreateTopic(ctx, connect.NewRequest(&metadatav1.CreateTopicRequest{Name: "audited", Partitions: 2}))
	require.NoError(t, err)
	_, err = client.CreateTopic(ctx, connect.NewRequest(&metadatav1.CreateTopicRequest{Name: "bad name", Partitions: 2}))
	require.Error(t, err)
	_, err = client.ListTopics(ctx, connect.NewRequest(&metadatav1.ListTopicsRequest{}))
	require.NoError(t, err)
	_, err = client.StorageHeartbeat(ctx, connect.NewRequest(&metadatav1.StorageHeartbeatRequest{ServiceId: "1"}))
	require.NoError(t, err)

	records := audit.lines()
	require.Len(t, records, 3, "two topic creations and a registration; no read, no routine heartbeat")
	assert.Equal(t, "/dmq.metadata.v1.MetadataService/RegisterBroker", records[0].Procedure)
	ok := records[1]
	assert.Equal(t, "ok", ok.Result)
	assert.Equal(t, created.Msg.GetMetadataVersion(), ok.MetadataVersion)
	assert.Contains(t, string(ok.Request), "audited")
	assert.NotEmpty(t, ok.From)
	assert.Equal(t, "anonymous", ok.Who)
	bad := records[2]
	assert.Equal(t, "invalid_argument", bad.Result)
	assert.Equal(t, "INVALID_TOPIC_NAME", bad.ErrorCode)
}
