package main

import (
	"bytes"
	"encoding/json"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestShardsAreDisjointAndCoverTheRange(t *testing.T) {
	for _, tc := range []struct{ lo, hi, n uint64 }{
		{1, 100, 1}, {1, 100, 7}, {1, 100, 100}, {1, 100, 250}, {5, 5, 3}, {0, 9, 10},
		{math.MaxUint64 - 10, math.MaxUint64, 4},
	} {
		seen := map[uint64]uint64{}
		for k := uint64(0); k < tc.n; k++ {
			for _, seed := range shardSeeds(tc.lo, tc.hi, k, tc.n) {
				require.GreaterOrEqual(t, seed, tc.lo)
				require.LessOrEqual(t, seed, tc.hi)
				other, twice := seen[seed]
				require.False(t, twice, "%+v: seed %d in shards %d and %d", tc, seed, other, k)
				seen[seed] = k
			}
		}
		assert.Equal(t, tc.hi-tc.lo+1, uint64(len(seen)), "%+v: every seed in some shard", tc)
	}
}

func TestParseShard(t *testing.T) {
	k, n, err := parseShard("3/10")
	require.NoError(t, err)
	assert.Equal(t, [2]uint64{3, 10}, [2]uint64{k, n})
	for _, bad := range []string{"10/10", "1/0", "3", "a/2", "-1/2", ""} {
		_, _, err := parseShard(bad)
		assert.Error(t, err, bad)
	}
}

// writeSummary writes records as a sweep's summary would.
func writeSummary(t *testing.T, records ...record) string {
	path := filepath.Join(t.TempDir(), "summary.jsonl")
	var out bytes.Buffer
	for _, r := range records {
		line, err := json.Marshal(r)
		require.NoError(t, err)
		out.Write(append(line, '\n'))
	}
	require.NoError(t, os.WriteFile(path, out.Bytes(), 0o644))
	return path
}

func rec(seed uint64, verdict, trace, shard string) record {
	return record{Seed: seed, Verdict: verdict, Trace: trace, Simulated: 90, CPU: 0.05, Nodes: 3,
		Reproduce: reproduce(seed, 90e9, 3), Sweep: &sweepSpec{Seeds: "1..6", Duration: "1m30s", Shard: shard}}
}

func TestMergeCombinesShards(t *testing.T) {
	a := writeSummary(t, rec(1, "ok", "a1", "0/2"), rec(3, "fail", "a3", "0/2"), rec(5, "ok", "a5", "0/2"))
	b := writeSummary(t, rec(2, "ok", "b2", "1/2"), rec(4, "ok", "b4", "1/2"), rec(6, "error", "", "1/2"))
	var out bytes.Buffer
	code := merge([]string{a, b}, &out)
	assert.Equal(t, 1, code, "failing seeds fail the merge")
	report := out.String()
	assert.Contains(t, report, "shards     2: 0/2 1/2")
	assert.Contains(t, report, "seeds      6\npassed     4\nfailed     2\nmissing    0")
	assert.Contains(t, report, "rate       1800 simulated s per CPU s")
	assert.Contains(t, report, "FAIL seed=3 fail (shard 0/2)")
	assert.Contains(t, report, "reproduce: go run ./cmd/dmqsim run --seed 3 --duration 1m30s --nodes 3")
	assert.Contains(t, report, "FAIL seed=6 error (shard 1/2)")

	out.Reset()
	ok := writeSummary(t, rec(1, "ok", "a1", "0/2"), rec(2, "ok", "b2", "1/2"), rec(3, "ok", "a3", "0/2"),
		rec(4, "ok", "b4", "1/2"), rec(5, "ok", "a5", "0/2"), rec(6, "ok", "b6", "1/2"))
	assert.Equal(t, 0, merge([]string{ok}, &out), out.String())
}

func TestMergeFindsALostShard(t *testing.T) {
	// Shard 1/3 never reported: its seeds are missing, and that fails.
	a := writeSummary(t, rec(1, "ok", "a1", "0/3"), rec(4, "ok", "a4", "0/3"))
	c := writeSummary(t, rec(3, "ok", "c3", "2/3"), rec(6, "ok", "c6", "2/3"))
	var out bytes.Buffer
	assert.Equal(t, 1, merge([]string{a, c}, &out))
	assert.Contains(t, out.String(), "missing    2")
	assert.Contains(t, out.String(), "MISSING seeds no shard ran: 2 5")
}

func TestMergeFindsNondeterminism(t *testing.T) {
	// Overlapping shards ran seed 1 twice with different traces.
	a := writeSummary(t, rec(1, "ok", "aaaa", "0/1"))
	b := writeSummary(t, rec(1, "ok", "bbbb", "0/1"))
	var out bytes.Buffer
	assert.Equal(t, 1, merge([]string{a, b}, &out))
	assert.Contains(t, out.String(), "NONDETERMINISTIC seed=1")
}

func TestMergeRefusesMixedSweepsAndStrangeLines(t *testing.T) {
	other := rec(2, "ok", "x", "1/2")
	other.Sweep.Duration = "1m0s"
	mixed := writeSummary(t, rec(1, "ok", "a1", "0/2"), other)
	var out bytes.Buffer
	assert.Equal(t, 2, merge([]string{mixed}, &out))

	bad := filepath.Join(t.TempDir(), "bad.jsonl")
	require.NoError(t, os.WriteFile(bad, []byte(`{"seed":1,"verdict":"ok","colour":"red"}`+"\n"), 0o644))
	assert.Equal(t, 2, merge([]string{bad}, &out))
	assert.Equal(t, 2, merge(nil, &out), "no summaries")
}

// The real binary: two shards of a small sweep, each its own process,
// merged into one report of every seed.
func TestSweepShardsThenMerge(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the simulator")
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "dmqsim")
	out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput()
	require.NoError(t, err, "%s", out)
	var summaries []string
	for _, shard := range []string{"0/2", "1/2"} {
		summary := filepath.Join(dir, strings.ReplaceAll(shard, "/", "-of-")+".jsonl")
		out, err := exec.Command(bin, "sweep", "--seeds", "1..5", "--duration", "30s", "--jobs", "1",
			"--shard", shard, "--summary", summary).Output()
		require.NoError(t, err, "%s", out)
		assert.Contains(t, string(out), "simulated s per CPU s", "every sweep prints its rate")
		summaries = append(summaries, summary)
	}
	merged, err := exec.Command(bin, append([]string{"merge"}, summaries...)...).Output()
	require.NoError(t, err, "%s", merged)
	assert.Contains(t, string(merged), "seeds      5\npassed     5\nfailed     0\nmissing    0")
}
