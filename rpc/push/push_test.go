package push

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"

	metadatav1 "github.com/dmq-project/metadata/gen/dmq/metadata/v1"
	"github.com/dmq-project/metadata/node"
	"github.com/dmq-project/metadata/rpc/metrics"
	"github.com/dmq-project/metadata/seedwire"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
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
