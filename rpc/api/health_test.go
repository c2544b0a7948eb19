package api

import (
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/dmq-project/metadata/node"
	"github.com/dmq-project/metadata/node/runner"
	"github.com/dmq-project/metadata/storage"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.etcd.io/raft/v3/raftpb"
)

type loneTransport struct{}

func (loneTransport) Send([]*raftpb.Message) {}
func (loneTransport) SetPeer(uint64, string) {}
func (loneTransport) RemovePeer(uint64)      {}

type noPusher struct{}

func (noPusher) Protocol(int32) node.PushProtocol { return node.PushNone }
func (noPusher) Push(int32, node.Push)            {}

// A flood of probes, which need no authentication, costs the node a call
// per probeFreshness, not one each: every probe used to queue a call in
// front of the requests.
func TestProbesShareNodeCalls(t *testing.T) {
	store, err := storage.OpenPebble(t.TempDir(), vfs.Default)
	require.NoError(t, err)
	_, err = node.Format(store, "test", 1, runner.NewRand())
	require.NoError(t, err)
	require.NoError(t, node.Bootstrap(store, []node.Peer{{ID: 1, URL: "http://127.0.0.1:8080"}}))
	n, err := node.New(node.Config{ID: 1, ElectionTicks: 10, HeartbeatTicks: 1}, store,
		node.Env{Transport: loneTransport{}, Clock: runner.WallClock{}, Rand: runner.NewRand(), Pusher: noPusher{}})
	require.NoError(t, err)
	r := runner.Start(n, 5*time.Millisecond)
	t.Cleanup(func() { _ = r.Stop(); _ = store.Close() })

	srv := NewServer(r, ServerConfig{})
	mux := http.NewServeMux()
	mountProbes(mux, srv)
	probe := func(path string) int {
		w := httptest.NewRecorder()
		mux.ServeHTTP(w, httptest.NewRequest(http.MethodGet, path, nil))
		return w.Code
	}
	require.Eventually(t, func() bool { return probe(ReadyzPath) == http.StatusOK },
		10*time.Second, 10*time.Millisecond, "a lone controller becomes ready")

	srv.probes.mu.Lock()
	srv.probes.calls = 0
	srv.probes.mu.Unlock()
	started := time.Now()
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 250 {
				assert.Equal(t, http.StatusOK, probe(ReadyzPath))
				assert.Equal(t, http.StatusOK, probe(LivezPath))
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(started)
	srv.probes.mu.Lock()
	calls := srv.probes.calls
	srv.probes.mu.Unlock()
	// One call per freshness window, plus the window the flood began in.
	bound := int(elapsed/probeFreshness) + 2
	assert.LessOrEqual(t, calls, bound, "4,000 probes in %v made %d node calls", elapsed, calls)
}
