package rpc_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"testing"
	"time"

	"connectrpc.com/connect"
	metadatav1 "github.com/dmq-project/metadata/gen/dmq/metadata/v1"
	"github.com/dmq-project/metadata/rpc/rpctest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func resultCodes(t *testing.T, body map[string]any) []string {
	t.Helper()
	var codes []string
	results, ok := body["results"].([]any)
	require.True(t, ok, "%v", body)
	for _, r := range results {
		codes = append(codes, r.(map[string]any)["errorCode"].(string))
	}
	return codes
}

// The batch paths over REST, as an operator's script would call them.
func TestRESTBatchCreateAndDelete(t *testing.T) {
	cluster := rpctest.Start(t, 1, nil)
	base := cluster.WaitLeader(t).URL()
	status, body := postJSON(t, base+"/api/v1/metadata/brokers", `{"id":1,"host":"localhost","port":8082}`)
	require.Equal(t, http.StatusOK, status, "%v", body)

	batch := `{"topics":[{"name":"a","partitions":2},{"name":"bad name","partitions":1},{"name":"b","partitions":1,"replicationFactor":3}]%s}`
	status, body = postJSON(t, base+"/api/v1/metadata/topics:batchCreate", fmt.Sprintf(batch, `,"validateOnly":true`))
	require.Equal(t, http.StatusOK, status, "%v", body)
	assert.Equal(t, []string{"NONE", "INVALID_TOPIC_NAME", "INVALID_REPLICATION_FACTOR"}, resultCodes(t, body))
	assert.Equal(t, float64(1), body["created"])
	status, _ = getJSON(t, base+"/api/v1/metadata/topics/a")
	assert.Equal(t, http.StatusNotFound, status, "a dry run created a topic")

	// Atomic: refused as a whole with the first failure's status; the
	// results travel in the error's details.
	status, body = postJSON(t, base+"/api/v1/metadata/topics:batchCreate", fmt.Sprintf(batch, `,"atomic":true`))
	assert.Equal(t, http.StatusBadRequest, status, "%v", body)
	assert.Contains(t, body["message"], `atomic batch of 3 topics refused`)
	assert.Contains(t, body["message"], `"bad name"`)
	status, _ = getJSON(t, base+"/api/v1/metadata/topics/a")
	assert.Equal(t, http.StatusNotFound, status, "an atomic batch applied in part")

	status, body = postJSON(t, base+"/api/v1/metadata/topics:batchCreate", fmt.Sprintf(batch, ``))
	require.Equal(t, http.StatusOK, status, "%v", body)
	assert.Equal(t, []string{"NONE", "INVALID_TOPIC_NAME", "INVALID_REPLICATION_FACTOR"}, resultCodes(t, body))
	first := body["results"].([]any)[0].(map[string]any)
	assert.Len(t, first["topicId"], 22)
	assert.Equal(t, float64(1), first["replicationFactor"], "the default replication factor is applied")
	assert.Equal(t, "producer", first["config"].(map[string]any)["compressionType"])
	status, _ = getJSON(t, base+"/api/v1/metadata/topics/a")
	assert.Equal(t, http.StatusOK, status)

	status, body = postJSON(t, base+"/api/v1/metadata/topics:batchDelete", `{"names":["a","missing"]}`)
	require.Equal(t, http.StatusOK, status, "%v", body)
	assert.Equal(t, []string{"NONE", "UNKNOWN_TOPIC"}, resultCodes(t, body))
	assert.Equal(t, float64(1), body["deleted"])

	status, body = postJSON(t, base+"/api/v1/metadata/topics:batchDelete", `{"names":[]}`)
	assert.Equal(t, http.StatusBadRequest, status)
	assert.Contains(t, body["message"], "names no topic")
}

// A Connect client reads the per-topic results of a refused atomic batch
// from the error.
func TestConnectAtomicBatchCarriesResults(t *testing.T) {
	cluster := rpctest.Start(t, 1, nil)
	client := metadataClient(cluster.WaitLeader(t).URL())
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := client.RegisterBroker(ctx, connect.NewRequest(&metadatav1.RegisterBrokerRequest{Id: 1, Host: "localhost", Port: 1}))
	require.NoError(t, err)
	_, err = client.CreateTopic(ctx, connect.NewRequest(&metadatav1.CreateTopicRequest{Name: "taken", Partitions: 1}))
	require.NoError(t, err)

	_, err = client.CreateTopics(ctx, connect.NewRequest(&metadatav1.CreateTopicsRequest{Atomic: true,
		Topics: []*metadatav1.CreateTopicRequest{{Name: "free", Partitions: 1}, {Name: "taken", Partitions: 1}}}))
	var ce *connect.Error
	require.True(t, errors.As(err, &ce), "%v", err)
	assert.Equal(t, connect.CodeAlreadyExists, ce.Code())
	var results *metadatav1.CreateTopicsResponse
	for _, d := range ce.Details() {
		if v, derr := d.Value(); derr == nil {
			if r, ok := v.(*metadatav1.CreateTopicsResponse); ok {
				results = r
			}
		}
	}
	require.NotNil(t, results, "the error carries the per-topic results")
	require.Len(t, results.Results, 2)
	assert.Equal(t, metadatav1.ErrorCode_BATCH_ABORTED, results.Results[0].ErrorCode)
	assert.Equal(t, metadatav1.ErrorCode_TOPIC_ALREADY_EXISTS, results.Results[1].ErrorCode)
	assert.Empty(t, results.Results[0].TopicId)
}

func TestRESTConfigs(t *testing.T) {
	cluster := rpctest.Start(t, 1, nil)
	base := cluster.WaitLeader(t).URL()
	status, body := postJSON(t, base+"/api/v1/metadata/brokers", `{"id":1,"host":"localhost","port":8082}`)
	require.Equal(t, http.StatusOK, status, "%v", body)
	status, body = postJSON(t, base+"/api/v1/metadata/topics", `{"name":"orders","partitions":1}`)
	require.Equal(t, http.StatusOK, status, "%v", body)

	status, body = postJSON(t, base+"/api/v1/metadata/configs:incrementalAlter", `{"resources":[
		{"resource":{"type":"CLUSTER"},"ops":[{"key":"retention.ms","op":"SET","value":"60000"}]},
		{"resource":{"type":"TOPIC","name":"orders"},"ops":[{"key":"compression.type","op":"SET","value":"lz4"}]},
		{"resource":{"type":"TOPIC","name":"missing"},"ops":[{"key":"compression.type","op":"SET","value":"lz4"}]}]}`)
	require.Equal(t, http.StatusOK, status, "%v", body)
	assert.Equal(t, []string{"NONE", "NONE", "UNKNOWN_TOPIC"}, resultCodes(t, body))

	status, body = getJSON(t, base+"/api/v1/metadata/configs")
	require.Equal(t, http.StatusOK, status, "%v", body)
	entries := body["results"].([]any)[0].(map[string]any)["entries"].([]any)
	assert.Contains(t, entries, map[string]any{"key": "retention.ms", "value": "60000", "source": "CLUSTER_DEFAULT_CONFIG", "isDefault": false})

	status, body = postJSON(t, base+"/api/v1/metadata/configs:describe", `{"resources":[{"type":"TOPIC","name":"orders"}]}`)
	require.Equal(t, http.StatusOK, status, "%v", body)
	entries = body["results"].([]any)[0].(map[string]any)["entries"].([]any)
	assert.Contains(t, entries, map[string]any{"key": "compression.type", "value": "lz4", "source": "TOPIC_CONFIG", "isDefault": false})
	assert.Contains(t, entries, map[string]any{"key": "retention.ms", "value": "604800000", "source": "DEFAULT_CONFIG", "isDefault": true},
		"the topic was created before the cluster default")

	status, body = postJSON(t, base+"/api/v1/metadata/configs:incrementalAlter", `{"resources":[
		{"resource":{"type":"TOPIC","name":"orders"},"ops":[{"key":"retention.ms","op":"SET","value":"1"}]},
		{"resource":{"type":"TOPIC","name":"orders"},"ops":[{"key":"retention.ms","op":"SET","value":"2"}]}]}`)
	assert.Equal(t, http.StatusBadRequest, status)
	assert.Contains(t, body["message"], "named twice")
}

// The per-topic results of a batch show the config the topic took, with
// the cluster's defaults (found by review: the built-in ones were shown).
func TestBatchResultsShowTheClusterDefaults(t *testing.T) {
	cluster := rpctest.Start(t, 1, nil)
	base := cluster.WaitLeader(t).URL()
	status, body := postJSON(t, base+"/api/v1/metadata/brokers", `{"id":1,"host":"localhost","port":8082}`)
	require.Equal(t, http.StatusOK, status, "%v", body)
	status, body = postJSON(t, base+"/api/v1/metadata/configs:incrementalAlter",
		`{"resources":[{"resource":{"type":"CLUSTER"},"ops":[{"key":"retention.ms","op":"SET","value":"3600000"}]}]}`)
	require.Equal(t, http.StatusOK, status, "%v", body)
	for _, dry := range []string{"true", "false"} {
		status, body = postJSON(t, base+"/api/v1/metadata/topics:batchCreate", `{"validateOnly":`+dry+`,"topics":[{"name":"x","partitions":1}]}`)
		require.Equal(t, http.StatusOK, status, "%v", body)
		config := body["results"].([]any)[0].(map[string]any)["config"].(map[string]any)
		assert.Equal(t, float64(3600000), config["retentionMs"], "validateOnly=%s", dry)
	}
}

func TestRESTReassignments(t *testing.T) {
	cluster := rpctest.Start(t, 1, nil)
	base := cluster.WaitLeader(t).URL()
	for _, id := range []string{"1", "2"} {
		status, body := postJSON(t, base+"/api/v1/metadata/brokers", `{"id":`+id+`,"host":"localhost","port":8082}`)
		require.Equal(t, http.StatusOK, status, "%v", body)
	}
	status, body := postJSON(t, base+"/api/v1/metadata/topics", `{"name":"orders","partitions":1,"replicationFactor":1}`)
	require.Equal(t, http.StatusOK, status, "%v", body)
	leader := body["topic"].(map[string]any)["partitions"].([]any)[0].(map[string]any)["leader"].(float64)
	to := fmt.Sprint(3 - int(leader))

	status, body = postJSON(t, base+"/api/v1/metadata/reassignments", `{"reassignments":[
		{"topic":"orders","partition":0,"replicas":[`+to+`]},{"topic":"orders","partition":7,"replicas":[1]}]}`)
	require.Equal(t, http.StatusOK, status, "%v", body)
	codes := []string{}
	for _, r := range body["results"].([]any) {
		codes = append(codes, r.(map[string]any)["errorCode"].(string))
	}
	assert.Equal(t, []string{"NONE", "UNKNOWN_PARTITION"}, codes)
	status, body = getJSON(t, base+"/api/v1/metadata/reassignments")
	require.Equal(t, http.StatusOK, status, "%v", body)
	require.Len(t, body["reassignments"], 1)
	ongoing := body["reassignments"].([]any)[0].(map[string]any)
	assert.Equal(t, []any{float64(3 - int(leader))}, ongoing["addingReplicas"])
	status, body = getJSON(t, base+"/api/v1/metadata/topics/orders")
	require.Equal(t, http.StatusOK, status)
	p := body["topic"].(map[string]any)["partitions"].([]any)[0].(map[string]any)
	assert.Len(t, p["replicas"], 2, "the union while moving")
}
