package rpc_test

import (
	"bytes"
	"context"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"testing"

	"connectrpc.com/connect"
	"connectrpc.com/vanguard"
	metadatav1 "github.com/dmq-project/metadata/gen/dmq/metadata/v1"
	"github.com/dmq-project/metadata/gen/dmq/metadata/v1/metadatav1connect"
	"github.com/dmq-project/metadata/rpc/rpctest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/proto"
)

type hostileCase struct {
	name string
	call func(ctx context.Context, c metadatav1connect.MetadataServiceClient) error
	want connect.Code
}

func createTopicCase(name string, req *metadatav1.CreateTopicRequest, want connect.Code) hostileCase {
	return hostileCase{name: name, want: want, call: func(ctx context.Context, c metadatav1connect.MetadataServiceClient) error {
		_, err := c.CreateTopic(ctx, connect.NewRequest(proto.CloneOf(req)))
		return err
	}}
}

func registerCase(name string, req *metadatav1.RegisterBrokerRequest, want connect.Code) hostileCase {
	return hostileCase{name: name, want: want, call: func(ctx context.Context, c metadatav1connect.MetadataServiceClient) error {
		_, err := c.RegisterBroker(ctx, connect.NewRequest(proto.CloneOf(req)))
		return err
	}}
}

func call[Req any](name string, want connect.Code, req *Req, method func(metadatav1connect.MetadataServiceClient, context.Context, *connect.Request[Req]) (any, error)) hostileCase {
	return hostileCase{name: name, want: want, call: func(ctx context.Context, c metadatav1connect.MetadataServiceClient) error {
		_, err := method(c, ctx, connect.NewRequest(req))
		return err
	}}
}

// stateWithoutVersion is the metadata with the version cleared: a refused
// request may take a log entry (its version) but must change nothing else.
func stateWithoutVersion(t *testing.T, c metadatav1connect.MetadataServiceClient) *metadatav1.ClusterState {
	resp, err := c.GetClusterMetadata(context.Background(), connect.NewRequest(&metadatav1.GetClusterMetadataRequest{}))
	require.NoError(t, err)
	state := resp.Msg.GetState()
	state.MetadataVersion = 0
	for _, b := range state.GetBrokers() {
		b.BrokerEpoch = 0
	}
	return state
}

// TestHostileInputs sends at least forty bad requests over Connect, gRPC
// and REST: each gets its code, and the metadata is unchanged.
func TestHostileInputs(t *testing.T) {
	cluster := rpctest.Start(t, 1, nil)
	base := cluster.WaitLeader(t).URL()
	ctx := context.Background()
	setup := metadataClient(base)
	_, err := setup.RegisterBroker(ctx, connect.NewRequest(&metadatav1.RegisterBrokerRequest{Id: 1, Host: "localhost", Port: 9092, IncarnationId: "a"}))
	require.NoError(t, err)
	created, err := setup.CreateTopic(ctx, connect.NewRequest(&metadatav1.CreateTopicRequest{Name: "metrics_cpu", Partitions: 2}))
	require.NoError(t, err)
	leader := created.Msg.GetTopic().GetPartitions()[0]
	hb, err := setup.StorageHeartbeat(ctx, connect.NewRequest(&metadatav1.StorageHeartbeatRequest{ServiceId: "1"}))
	require.NoError(t, err)
	_ = hb
	before := stateWithoutVersion(t, setup)

	long := strings.Repeat("x", 250)
	inv, nf, ae, fp := connect.CodeInvalidArgument, connect.CodeNotFound, connect.CodeAlreadyExists, connect.CodeFailedPrecondition
	cases := []hostileCase{
		createTopicCase("empty name", &metadatav1.CreateTopicRequest{Name: "", Partitions: 1}, inv),
		createTopicCase("dot", &metadatav1.CreateTopicRequest{Name: ".", Partitions: 1}, inv),
		createTopicCase("dot dot", &metadatav1.CreateTopicRequest{Name: "..", Partitions: 1}, inv),
		createTopicCase("250 characters", &metadatav1.CreateTopicRequest{Name: long, Partitions: 1}, inv),
		createTopicCase("non-ASCII", &metadatav1.CreateTopicRequest{Name: "tópico", Partitions: 1}, inv),
		createTopicCase("space", &metadatav1.CreateTopicRequest{Name: "a b", Partitions: 1}, inv),
		createTopicCase("slash", &metadatav1.CreateTopicRequest{Name: "a/b", Partitions: 1}, inv),
		createTopicCase("NUL", &metadatav1.CreateTopicRequest{Name: "a\x00b", Partitions: 1}, inv),
		createTopicCase("colliding name", &metadatav1.CreateTopicRequest{Name: "metrics.cpu", Partitions: 1}, ae),
		createTopicCase("existing name", &metadatav1.CreateTopicRequest{Name: "metrics_cpu", Partitions: 1}, ae),
		createTopicCase("zero partitions", &metadatav1.CreateTopicRequest{Name: "t", Partitions: 0}, inv),
		createTopicCase("negative partitions", &metadatav1.CreateTopicRequest{Name: "t", Partitions: -1}, inv),
		createTopicCase("10001 partitions", &metadatav1.CreateTopicRequest{Name: "t", Partitions: 10_001}, inv),
		createTopicCase("max int partitions", &metadatav1.CreateTopicRequest{Name: "t", Partitions: 1<<31 - 1}, inv),
		createTopicCase("negative replication factor", &metadatav1.CreateTopicRequest{Name: "t", Partitions: 1, ReplicationFactor: -1}, inv),
		createTopicCase("replication factor 65", &metadatav1.CreateTopicRequest{Name: "t", Partitions: 1, ReplicationFactor: 65}, inv),
		createTopicCase("replication factor above live brokers", &metadatav1.CreateTopicRequest{Name: "t", Partitions: 1, ReplicationFactor: 3}, inv),
		createTopicCase("unknown config", &metadatav1.CreateTopicRequest{Name: "t", Partitions: 1, Configs: map[string]string{"cleanup.policy": "compact"}}, inv),
		createTopicCase("config not a number", &metadatav1.CreateTopicRequest{Name: "t", Partitions: 1, Configs: map[string]string{"retention.ms": "abc"}}, inv),
		createTopicCase("min ISR above RF", &metadatav1.CreateTopicRequest{Name: "t", Partitions: 1, Configs: map[string]string{"min.insync.replicas": "5"}}, inv),
		createTopicCase("unknown compression", &metadatav1.CreateTopicRequest{Name: "t", Partitions: 1, Configs: map[string]string{"compression.type": "rar"}}, inv),
		createTopicCase("tiny segments", &metadatav1.CreateTopicRequest{Name: "t", Partitions: 1, Configs: map[string]string{"segment.bytes": "1"}}, inv),
		call("delete unknown topic", nf, &metadatav1.DeleteTopicRequest{Name: "nope"}, wrap(metadatav1connect.MetadataServiceClient.DeleteTopic)),
		call("delete invalid name", inv, &metadatav1.DeleteTopicRequest{Name: "a b"}, wrap(metadatav1connect.MetadataServiceClient.DeleteTopic)),
		call("grow unknown topic", nf, &metadatav1.CreatePartitionsRequest{Topic: "nope", Count: 5}, wrap(metadatav1connect.MetadataServiceClient.CreatePartitions)),
		call("shrink", inv, &metadatav1.CreatePartitionsRequest{Topic: "metrics_cpu", Count: 1}, wrap(metadatav1connect.MetadataServiceClient.CreatePartitions)),
		call("grow to the same", inv, &metadatav1.CreatePartitionsRequest{Topic: "metrics_cpu", Count: 2}, wrap(metadatav1connect.MetadataServiceClient.CreatePartitions)),
		call("grow by 10001", inv, &metadatav1.CreatePartitionsRequest{Topic: "metrics_cpu", Count: 10_003}, wrap(metadatav1connect.MetadataServiceClient.CreatePartitions)),
		registerCase("broker id 0", &metadatav1.RegisterBrokerRequest{Id: 0, Host: "h", Port: 1}, inv),
		registerCase("negative broker id", &metadatav1.RegisterBrokerRequest{Id: -5, Host: "h", Port: 1}, inv),
		registerCase("empty host", &metadatav1.RegisterBrokerRequest{Id: 2, Host: "", Port: 1}, inv),
		registerCase("host with a space", &metadatav1.RegisterBrokerRequest{Id: 2, Host: "bad host", Port: 1}, inv),
		registerCase("port 0", &metadatav1.RegisterBrokerRequest{Id: 2, Host: "h", Port: 0}, inv),
		registerCase("port 70000", &metadatav1.RegisterBrokerRequest{Id: 2, Host: "h", Port: 70000}, inv),
		registerCase("rack with a newline", &metadatav1.RegisterBrokerRequest{Id: 2, Host: "h", Port: 1, Rack: "r\n1"}, inv),
		registerCase("overlong incarnation", &metadatav1.RegisterBrokerRequest{Id: 2, Host: "h", Port: 1, IncarnationId: strings.Repeat("i", 65)}, inv),
		registerCase("another incarnation of a live broker", &metadatav1.RegisterBrokerRequest{Id: 1, Host: "localhost", Port: 9092, IncarnationId: "b"}, fp),
		call("unregister unknown broker", nf, &metadatav1.UnregisterBrokerRequest{Id: 999}, wrap(metadatav1connect.MetadataServiceClient.UnregisterBroker)),
		call("unregister broker 0", inv, &metadatav1.UnregisterBrokerRequest{Id: 0}, wrap(metadatav1connect.MetadataServiceClient.UnregisterBroker)),
		call("describe unknown topic", nf, &metadatav1.DescribeTopicRequest{Name: "nope"}, wrap(metadatav1connect.MetadataServiceClient.DescribeTopic)),
		call("describe non-ASCII name", inv, &metadatav1.DescribeTopicRequest{Name: "tópico"}, wrap(metadatav1connect.MetadataServiceClient.DescribeTopic)),
		call("describe unknown broker", nf, &metadatav1.DescribeBrokerRequest{Id: 999}, wrap(metadatav1connect.MetadataServiceClient.DescribeBroker)),
		call("heartbeat without a service id", inv, &metadatav1.StorageHeartbeatRequest{}, wrap(metadatav1connect.MetadataServiceClient.StorageHeartbeat)),
		call("heartbeat from storage-x", inv, &metadatav1.StorageHeartbeatRequest{ServiceId: "storage-x"}, wrap(metadatav1connect.MetadataServiceClient.StorageHeartbeat)),
		call("heartbeat with a negative version", inv, &metadatav1.StorageHeartbeatRequest{ServiceId: "1", MetadataVersion: -1}, wrap(metadatav1connect.MetadataServiceClient.StorageHeartbeat)),
		call("heartbeat with a stale broker epoch", fp, &metadatav1.StorageHeartbeatRequest{ServiceId: "1", BrokerEpoch: 1}, wrap(metadatav1connect.MetadataServiceClient.StorageHeartbeat)),
		call("alter partition of an unknown topic", nf, &metadatav1.AlterPartitionRequest{BrokerId: 1, BrokerEpoch: 4, Topic: "nope", NewIsr: []int32{1}}, wrap(metadatav1connect.MetadataServiceClient.AlterPartition)),
		call("alter partition with a stale leader epoch", fp, &metadatav1.AlterPartitionRequest{BrokerId: leader.GetLeader(), BrokerEpoch: 4, Topic: "metrics_cpu",
			LeaderEpoch: 7, NewIsr: []int32{1}}, wrap(metadatav1connect.MetadataServiceClient.AlterPartition)),
		call("alter partition with an empty ISR", inv, &metadatav1.AlterPartitionRequest{BrokerId: 1, BrokerEpoch: 4, Topic: "metrics_cpu"}, wrap(metadatav1connect.MetadataServiceClient.AlterPartition)),
		call("alter partition without a broker epoch", inv, &metadatav1.AlterPartitionRequest{BrokerId: 1, Topic: "metrics_cpu", NewIsr: []int32{1}}, wrap(metadatav1connect.MetadataServiceClient.AlterPartition)),
		call("elect leaders of an unknown topic", nf, &metadatav1.ElectLeadersRequest{Targets: []*metadatav1.TopicPartitions{{Topic: "nope"}}}, wrap(metadatav1connect.MetadataServiceClient.ElectLeaders)),
	}
	require.GreaterOrEqual(t, len(cases), 40)
	restBase := restProxy(t, base)
	for _, protocol := range []struct {
		name string
		base string
		opts []connect.ClientOption
	}{
		{"connect", base, nil},
		{"grpc", base, []connect.ClientOption{connect.WithGRPC()}},
		{"connect-json", base, []connect.ClientOption{connect.WithProtoJSON()}},
		{"rest", restBase, nil},
	} {
		client := metadataClient(protocol.base, protocol.opts...)
		if protocol.name == "rest" {
			client = metadatav1connect.NewMetadataServiceClient(http.DefaultClient, protocol.base)
		}
		for _, tc := range cases {
			err := tc.call(ctx, client)
			assert.Equal(t, tc.want, connect.CodeOf(err), "%s over %s: %v", tc.name, protocol.name, err)
		}
	}

	// REST: bodies no typed client would send.
	rest := []struct {
		name, method, path, body string
		want                     int
	}{
		{"malformed JSON", "POST", "/api/v1/metadata/topics", `{"name": "t", "partitions": `, http.StatusBadRequest},
		{"wrong type", "POST", "/api/v1/metadata/topics", `{"name": "t", "partitions": "three"}`, http.StatusBadRequest},
		{"unknown field", "POST", "/api/v1/metadata/topics", `{"name": "t", "partitions": 1, "partitons": 3}`, http.StatusBadRequest},
		{"array instead of object", "POST", "/api/v1/metadata/brokers", `[1, 2, 3]`, http.StatusBadRequest},
		{"number out of range", "POST", "/api/v1/metadata/brokers", `{"id": 99999999999, "host": "h", "port": 1}`, http.StatusBadRequest},
		// 413 Content Too Large, never 429, which a client would retry.
		{"oversized body", "POST", "/api/v1/metadata/topics", `{"name": "t", "partitions": 1, "configs": {"x": "` + strings.Repeat("y", 5<<20) + `"}}`, http.StatusRequestEntityTooLarge},
		{"invalid name in the path", "GET", "/api/v1/metadata/topics/a%20b/partitions", ``, http.StatusBadRequest},
		{"unknown topic in the path", "GET", "/api/v1/metadata/topics/nope/partitions", ``, http.StatusNotFound},
		{"broker id not a number", "GET", "/api/v1/metadata/brokers/abc", ``, http.StatusBadRequest},
	}
	for _, tc := range rest {
		req, err := http.NewRequest(tc.method, base+tc.path, bytes.NewBufferString(tc.body))
		require.NoError(t, err)
		if tc.body != "" {
			req.Header.Set("Content-Type", "application/json")
		}
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		resp.Body.Close()
		assert.Equal(t, tc.want, resp.StatusCode, "REST %s", tc.name)
	}

	after := stateWithoutVersion(t, setup)
	assert.True(t, proto.Equal(before, after), "hostile requests changed the metadata:\nbefore %v\nafter  %v", before, after)
}

// restProxy serves Connect and turns every call into the controller's REST
// form (the google.api.http paths and JSON bodies), so that typed requests
// reach the controller over REST and its REST errors come back as codes.
func restProxy(t *testing.T, controller string) string {
	target, err := url.Parse(controller)
	require.NoError(t, err)
	transcoder, err := vanguard.NewTranscoder([]*vanguard.Service{
		vanguard.NewService(metadatav1connect.MetadataServiceName, httputil.NewSingleHostReverseProxy(target),
			vanguard.WithTargetProtocols(vanguard.ProtocolREST)),
	})
	require.NoError(t, err)
	server := httptest.NewServer(transcoder)
	t.Cleanup(server.Close)
	return server.URL
}

// wrap adapts a typed client method to call's signature.
func wrap[Req, Resp any](method func(metadatav1connect.MetadataServiceClient, context.Context, *connect.Request[Req]) (*connect.Response[Resp], error)) func(metadatav1connect.MetadataServiceClient, context.Context, *connect.Request[Req]) (any, error) {
	return func(c metadatav1connect.MetadataServiceClient, ctx context.Context, req *connect.Request[Req]) (any, error) {
		return method(c, ctx, req)
	}
}
