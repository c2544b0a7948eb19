package push

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"

	"connectrpc.com/connect"
	metadatav1 "github.com/dmq-project/metadata/gen/dmq/metadata/v1"
	"github.com/dmq-project/metadata/gen/dmq/metadata/v1/metadatav1connect"
	"github.com/dmq-project/metadata/node"
	"github.com/dmq-project/metadata/rpc/metrics"
	"github.com/dmq-project/metadata/seedwire"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/proto"
)

// A seed receiver gets the updates of a push in order, and under TLS the
// controller URL they name is https (services.json gives controllers as
// host and port; told http://, the receiver heartbeated a TLS port in clear
// text, found by review). Every update succeeding is the push accepted at
// its version; one refused is the push rejected.
func TestSeedUpdatesPostedInOrderWithTheTLSURL(t *testing.T) {
	var mu sync.Mutex
	var got []seedwire.MetadataUpdateRequest
	refuse := false
	server := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		assert.Equal(t, seedwire.Path, r.URL.Path)
		var u seedwire.MetadataUpdateRequest
		require.NoError(t, json.NewDecoder(r.Body).Decode(&u))
		mu.Lock()
		got = append(got, u)
		ok := !refuse
		mu.Unlock()
		_ = json.NewEncoder(w).Encode(seedwire.MetadataUpdateResponse{Success: ok, ErrorCode: "NONE"})
	}))
	defer server.Close()
	tlsConfig := server.Client().Transport.(*http.Transport).TLSClientConfig
	p := New(http.DefaultClient, tlsConfig, map[int32]Target{1: {URL: server.URL + "/", Seed: true}}, metrics.New())
	send := func() *metadatav1.PushMetadataResponse {
		resp, err := p.sendSeed(server.URL, node.Push{Version: 9, SeedUpdates: []seedwire.MetadataUpdateRequest{
			{UpdateType: seedwire.ControllerChanged, Version: 9, ControllerURL: "http://c1:8080"},
			{UpdateType: seedwire.FullSnapshot, Version: 9, ControllerURL: "http://c1:8080"},
		}})
		require.NoError(t, err)
		return resp
	}
	resp := send()
	assert.True(t, resp.GetAccepted())
	assert.Equal(t, int64(9), resp.GetMetadataVersion())
	require.Len(t, got, 2)
	assert.Equal(t, seedwire.ControllerChanged, got[0].UpdateType)
	assert.Equal(t, seedwire.FullSnapshot, got[1].UpdateType)
	assert.Equal(t, "https://c1:8080", got[0].ControllerURL)

	mu.Lock()
	refuse, got = true, nil
	mu.Unlock()
	resp = send()
	assert.False(t, resp.GetAccepted())
	assert.Len(t, got, 1, "the updates after a refused one are not sent")
}

// storageService answers pushes: slow ones only when released.
type storageService struct {
	metadatav1connect.UnimplementedStorageSyncServiceHandler
	received chan *metadatav1.PushMetadataRequest
	release  chan struct{}
	ended    *atomic.Int64
	refusal  error
}

func (s *storageService) PushMetadata(ctx context.Context, req *connect.Request[metadatav1.PushMetadataRequest]) (*connect.Response[metadatav1.PushMetadataResponse], error) {
	s.received <- req.Msg
	if s.refusal != nil {
		return nil, s.refusal
	}
	if s.release != nil {
		select {
		case <-s.release:
		case <-ctx.Done():
			s.ended.Add(1)
		}
	}
	return connect.NewResponse(&metadatav1.PushMetadataResponse{Accepted: true, MetadataVersion: req.Msg.GetMetadataVersion()}), nil
}

func serveStorage(t *testing.T, s *storageService) string {
	path, handler := metadatav1connect.NewStorageSyncServiceHandler(s)
	mux := http.NewServeMux()
	mux.Handle(path, handler)
	server := httptest.NewServer(mux)
	t.Cleanup(server.Close)
	return server.URL
}

// A push reaches the service as the node built it, every field included,
// although the pusher encodes its update once for all the services that
// share it.
func TestPushArrivesAsTheNodeBuiltIt(t *testing.T) {
	service := &storageService{received: make(chan *metadatav1.PushMetadataRequest, 4)}
	url := serveStorage(t, service)
	p := New(&http.Client{Transport: &http.Transport{}}, nil, map[int32]Target{1: {URL: url}, 2: {URL: url}}, metrics.New())
	reports := make(chan func(*node.Node), 4)
	p.Attach(func(fn func(*node.Node)) { reports <- fn })

	delta := &metadatav1.MetadataDelta{FromVersion: 6, ToVersion: 9, DeletedTopics: []string{"gone"},
		UpsertedTopics: []*metadatav1.Topic{{Name: "orders", Partitions: []*metadatav1.Partition{{Topic: "orders", Leader: 2, Replicas: []int32{2, 3}}}}}}
	full := &metadatav1.ClusterState{MetadataVersion: 9, Brokers: []*metadatav1.Broker{{Id: 2, Host: "b2", Port: 9092}}}
	requests := []*metadatav1.PushMetadataRequest{
		{ControllerId: 3, ControllerEpoch: 7, MetadataVersion: 9, RepairFromVersion: 11, Update: &metadatav1.PushMetadataRequest_Delta{Delta: delta}},
		{ControllerId: 3, ControllerEpoch: 7, MetadataVersion: 9, Update: &metadatav1.PushMetadataRequest_Delta{Delta: delta}},
		{ControllerId: 3, ControllerEpoch: 8, MetadataVersion: 9, RepairFromVersion: 12, Update: &metadatav1.PushMetadataRequest_FullState{FullState: full}},
	}
	// Every field of a push is set in one of these: a field added to
	// PushMetadataRequest must be carried by the shared encoding too.
	fields := requests[0].ProtoReflect().Descriptor().Fields()
	for i := range fields.Len() {
		set := false
		for _, r := range requests {
			set = set || r.ProtoReflect().Has(fields.Get(i))
		}
		require.True(t, set, "field %s is set in no request of this test", fields.Get(i).Name())
	}
	for i, req := range requests {
		p.Push(int32(1+i%2), node.Push{Version: req.GetMetadataVersion(), Request: req})
		got := <-service.received
		assert.True(t, proto.Equal(req, got), "push %d: sent %v, received %v", i, req, got)
		<-reports
	}
}

// A service that does not answer holds up no other service's push, however
// many such services there are: pushes share no bound (found by the
// fan-out benchmark, where 64 pushes in flight bounded a thousand
// services; and a few dead services then delayed every push by 5 s).
func TestSlowServicesDelayNoOtherService(t *testing.T) {
	const slow = 100
	var ended atomic.Int64
	stuck := &storageService{received: make(chan *metadatav1.PushMetadataRequest, slow), release: make(chan struct{}), ended: &ended}
	defer close(stuck.release)
	fast := &storageService{received: make(chan *metadatav1.PushMetadataRequest, 1)}
	stuckURL, fastURL := serveStorage(t, stuck), serveStorage(t, fast)
	targets := map[int32]Target{slow + 1: {URL: fastURL}}
	for id := int32(1); id <= slow; id++ {
		targets[id] = Target{URL: stuckURL}
	}
	p := New(&http.Client{Transport: &http.Transport{}}, nil, targets, metrics.New())
	p.Attach(func(func(*node.Node)) {})
	req := &metadatav1.PushMetadataRequest{ControllerId: 1, ControllerEpoch: 2, MetadataVersion: 5,
		Update: &metadatav1.PushMetadataRequest_FullState{FullState: &metadatav1.ClusterState{MetadataVersion: 5}}}
	for id := int32(1); id <= slow; id++ {
		p.Push(id, node.Push{Version: 5, Request: req})
	}
	for range slow {
		<-stuck.received
	}
	p.Push(slow+1, node.Push{Version: 5, Request: req})
	<-fast.received
	assert.Zero(t, ended.Load(), "the fast service got its push only after slow ones timed out")
}

// A service's error answer is a delivery error with its Connect code (the
// node retries after a backoff), and an answer that is not one is an error
// too.
func TestPushRefusedIsAnErrorWithItsCode(t *testing.T) {
	service := &storageService{received: make(chan *metadatav1.PushMetadataRequest, 1),
		refusal: connect.NewError(connect.CodeResourceExhausted, errors.New("disk full"))}
	url := serveStorage(t, service)
	p := New(&http.Client{Transport: &http.Transport{}}, nil, map[int32]Target{1: {URL: url}}, metrics.New())
	req := &metadatav1.PushMetadataRequest{ControllerId: 1, ControllerEpoch: 2, MetadataVersion: 5,
		Update: &metadatav1.PushMetadataRequest_Delta{Delta: &metadatav1.MetadataDelta{FromVersion: 4, ToVersion: 5}}}
	_, err := p.send(url, req)
	require.Error(t, err)
	assert.Equal(t, connect.CodeResourceExhausted, connect.CodeOf(err))
	assert.Contains(t, err.Error(), "disk full")

	notConnect := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		http.Error(w, "no such service here", http.StatusNotFound)
	}))
	defer notConnect.Close()
	_, err = p.send(notConnect.URL, req)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "HTTP 404")

	// An empty 200 would decode as a refusal (found by review).
	empty := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
	defer empty.Close()
	_, err = p.send(empty.URL, req)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "not a Connect protobuf answer")
}
