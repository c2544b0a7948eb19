package client

import (
	"testing"

	metadatav1 "github.com/dmq-project/metadata/gen/dmq/metadata/v1"
	"github.com/stretchr/testify/assert"
)

// A watcher never moves back or skips: an older full state (from a
// controller behind it) or a delta from another version is ignored.
func TestWatchUpdatesOnlyAdvance(t *testing.T) {
	full := func(v int64) *metadatav1.WatchMetadataResponse {
		return &metadatav1.WatchMetadataResponse{Update: &metadatav1.WatchMetadataResponse_FullState{FullState: &metadatav1.ClusterState{MetadataVersion: v}}}
	}
	delta := func(from, to int64) *metadatav1.WatchMetadataResponse {
		return &metadatav1.WatchMetadataResponse{Update: &metadatav1.WatchMetadataResponse_Delta{Delta: &metadatav1.MetadataDelta{FromVersion: from, ToVersion: to}}}
	}
	assert.True(t, WatchAdvances(full(0), 0), "a new watcher takes any full state")
	assert.True(t, WatchAdvances(full(12), 10))
	assert.False(t, WatchAdvances(full(9), 10), "an older full state moves a watcher back")
	assert.False(t, WatchAdvances(full(10), 10))
	assert.True(t, WatchAdvances(delta(10, 12), 10))
	assert.False(t, WatchAdvances(delta(8, 12), 10), "a delta from another version")
}
