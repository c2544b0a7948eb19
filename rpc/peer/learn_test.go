package peer

import (
	"log/slog"
	"net/http"
	"testing"

	"github.com/stretchr/testify/assert"
	"go.etcd.io/raft/v3/raftpb"
)

func (t *Transport) hasPeer(id uint64) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	_, ok := t.peers[id]
	return ok
}

// An address learned from a request starts no stream until the node sends
// to that id (it answers only members): a stranger's forged sender ids
// cost no goroutines. A removed controller that keeps sending is not
// learned back, and the configuration's address is never replaced.
func TestLearnedAddressesAreUsedOnlyWhenSentTo(t *testing.T) {
	// The streams this starts fail to dial their made-up hosts and log it:
	// a nil logger made the test crash whenever a stream got that far
	// before Close.
	tr := NewTransport(1, "c", http.DefaultClient, slog.New(slog.DiscardHandler), TransportOptions{})
	defer tr.Close()

	tr.LearnPeer(99, "http://stranger:1")
	assert.False(t, tr.hasPeer(99), "a learned address alone starts no stream")

	tr.LearnPeer(2, "http://learned:2")
	tr.Send(nil)
	assert.False(t, tr.hasPeer(2))
	tr.Send([]*raftpb.Message{{To: new(uint64(2))}})
	assert.True(t, tr.hasPeer(2), "the node answers a sender it stepped: the learned address is used")

	tr.SetPeer(3, "http://configured:3")
	tr.LearnPeer(3, "http://forged:3")
	tr.mu.Lock()
	assert.Equal(t, "http://configured:3", tr.peers[3].url, "the configuration's address is kept")
	tr.mu.Unlock()

	tr.RemovePeer(3)
	tr.LearnPeer(3, "http://configured:3")
	tr.Send([]*raftpb.Message{{To: new(uint64(3))}})
	assert.False(t, tr.hasPeer(3), "a removed controller is not learned back")
}
