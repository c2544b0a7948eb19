package auth

import (
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// A full table forgets the least recently used client: its next call starts
// from a full bucket, while a client seen recently keeps its spent budget.
func TestLimiterForgetsTheLeastRecentlyUsedClient(t *testing.T) {
	now := time.Unix(1_000_000, 0)
	l := newLimiterOfSize(RateLimit{PerSecond: 0.001, Burst: 1}, 2)

	ok, _ := l.allow("a", now)
	require.True(t, ok)
	ok, _ = l.allow("b", now)
	require.True(t, ok)
	ok, _ = l.allow("a", now) // a is now the most recent, and out of tokens
	require.False(t, ok)

	ok, _ = l.allow("c", now) // evicts b, the least recently used
	require.True(t, ok)
	ok, _ = l.allow("a", now)
	require.False(t, ok, "a was used recently: its spent bucket must be kept")
	ok, _ = l.allow("b", now)
	require.True(t, ok, "b was evicted: it starts again from a full bucket")
	require.Len(t, l.buckets, 2)
}

// BenchmarkLimiterNewClientsWhenFull measures admitting a new client into a
// full table, the path callers from many addresses drive.
func BenchmarkLimiterNewClientsWhenFull(b *testing.B) {
	now := time.Unix(1_000_000, 0)
	l := newLimiter(RateLimit{PerSecond: 1, Burst: 1})
	for i := 0; i < rateLimitClientsMax; i++ {
		l.allow(fmt.Sprintf("fill-%d", i), now)
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		l.allow(fmt.Sprintf("new-%d", i), now)
	}
}
