package metrics

import (
	"testing"

	"github.com/dmq-project/metadata/node"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/assert"
)

// Leader changes count as etcd counts them: to a known leader other than
// the last known one. An election's "no leader" step and a follower that
// finds the same leader again are no change (each counted before, found
// by review).
func TestLeaderChangesCountKnownNewLeadersOnly(t *testing.T) {
	m := New()
	for _, leader := range []uint64{0, 1, 0, 1, 1, 0, 2, 3, 0, 3} {
		m.Event(node.Event{Kind: node.EventLeaderChanged, Leader: leader})
	}
	assert.Equal(t, 3.0, testutil.ToFloat64(m.leaderChange), "1, then 2, then 3")
}
