package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"os"
	"os/exec"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/dmq-project/metadata/sim"
)

// record is one seed's line in a sweep's summary (JSON lines): what merge
// reads back.
type record struct {
	Seed uint64 `json:"seed"`
	// Verdict is "ok", "fail" (a checker found a violation) or "error"
	// (the run did not finish: it crashed, or its output did not parse).
	Verdict   string  `json:"verdict"`
	Trace     string  `json:"trace,omitempty"`
	Nodes     int     `json:"nodes,omitempty"`
	Simulated float64 `json:"simulated_s"`
	// CPU is the run's process's user and system time; Rate is simulated
	// seconds per CPU second.
	CPU       float64 `json:"cpu_s,omitempty"`
	Rate      float64 `json:"rate,omitempty"`
	Violation string  `json:"violation,omitempty"`
	Reproduce string  `json:"reproduce"`
	// Sweep is the sweep the seed belongs to (absent from `run --json`):
	// merge checks that the shards it combines are of one sweep and that
	// together they ran every seed.
	Sweep *sweepSpec `json:"sweep,omitempty"`
}

// sweepSpec names a sweep: its seed range, duration and cluster size, and
// the shard (K/N) that ran this seed.
type sweepSpec struct {
	Seeds    string `json:"seeds"`
	Duration string `json:"duration"`
	Nodes    int    `json:"nodes"`
	Shard    string `json:"shard"`
}

// recordOf is a finished run's record, as `run --json` prints it (the
// sweep adds the CPU time, the rate and the sweep).
func recordOf(r sim.Result, duration time.Duration) record {
	rec := record{Seed: r.Options.Seed, Verdict: "ok", Trace: fmt.Sprintf("%016x", r.TraceHash), Nodes: r.Options.Nodes,
		Simulated: r.Simulated.Seconds(), Reproduce: reproduce(r.Options.Seed, duration, r.Options.Nodes)}
	if !r.OK() {
		rec.Verdict, rec.Violation = "fail", r.Violations[0]
	}
	return rec
}

func reproduce(seed uint64, duration time.Duration, nodes int) string {
	return fmt.Sprintf("go run ./cmd/dmqsim run --seed %d --duration %v --nodes %d", seed, duration, nodes)
}

func parseSeeds(spec string) (uint64, uint64, error) {
	lo, hi, ok := strings.Cut(spec, "..")
	if !ok {
		return 0, 0, fmt.Errorf("--seeds wants A..B, got %q", spec)
	}
	a, err1 := strconv.ParseUint(lo, 10, 64)
	b, err2 := strconv.ParseUint(hi, 10, 64)
	if err1 != nil || err2 != nil || b < a {
		return 0, 0, fmt.Errorf("--seeds wants A..B with A <= B, got %q", spec)
	}
	return a, b, nil
}

// parseShard reads K/N: the K-th (0 <= K < N) of N slices.
func parseShard(spec string) (k, n uint64, err error) {
	ks, ns, ok := strings.Cut(spec, "/")
	k, err1 := strconv.ParseUint(ks, 10, 64)
	n, err2 := strconv.ParseUint(ns, 10, 64)
	if !ok || err1 != nil || err2 != nil || n == 0 || k >= n {
		return 0, 0, fmt.Errorf("--shard wants K/N with 0 <= K < N, got %q", spec)
	}
	return k, n, nil
}

// shardSeeds are the seeds of lo..hi in slice k of n: every n-th seed from
// lo+k, so that each slice draws alike from the range and the n slices are
// disjoint and together the whole range.
func shardSeeds(lo, hi, k, n uint64) []uint64 {
	var seeds []uint64
	if lo+k < lo {
		return nil // past the largest seed
	}
	for seed := lo + k; seed <= hi; seed += n {
		seeds = append(seeds, seed)
		if seed > math.MaxUint64-n {
			break // the next would wrap
		}
	}
	return seeds
}

// sweep runs each seed in its own process (a run owns crypto/rand.Reader),
// jobs at a time.
func sweep(args []string) int {
	fs := flag.NewFlagSet("sweep", flag.ExitOnError)
	seeds := fs.String("seeds", "1..100", "the seed range, inclusive")
	duration := fs.Duration("duration", 60*time.Second, "simulated time per seed")
	jobs := fs.Int("jobs", runtime.NumCPU(), "parallel processes")
	nodes := fs.Int("nodes", 0, "cluster size (default: drawn from each seed)")
	shard := fs.String("shard", "0/1", "run only slice K of N of the seeds (K from 0), e.g. a CI matrix job's or an Indexed Job's index")
	summary := fs.String("summary", "", "write one JSON line per seed here (for dmqsim merge)")
	_ = fs.Parse(args)
	lo, hi, err := parseSeeds(*seeds)
	if err == nil && *nodes != 0 && *nodes != 3 && *nodes != 5 {
		err = errors.New("--nodes must be 3 or 5")
	}
	k, n, shardErr := parseShard(*shard)
	if err = errors.Join(err, shardErr); err != nil {
		fmt.Fprintln(os.Stderr, "dmqsim:", err)
		return 2
	}
	self, err := os.Executable()
	if err != nil {
		fmt.Fprintln(os.Stderr, "dmqsim:", err)
		return 2
	}
	var out io.Writer = io.Discard
	if *summary != "" {
		f, err := os.Create(*summary)
		if err != nil {
			fmt.Fprintln(os.Stderr, "dmqsim:", err)
			return 2
		}
		defer f.Close()
		buffered := bufio.NewWriter(f)
		defer buffered.Flush()
		out = buffered
	}
	spec := sweepSpec{Seeds: *seeds, Duration: duration.String(), Nodes: *nodes, Shard: *shard}
	mine := shardSeeds(lo, hi, k, n)
	total := len(mine)
	results := make(chan record, total)
	work := make(chan uint64)
	var wg sync.WaitGroup
	for j := 0; j < max(1, *jobs); j++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for seed := range work {
				results <- runSeed(self, seed, *duration, *nodes, spec)
			}
		}()
	}
	go func() {
		for _, seed := range mine {
			work <- seed
		}
		close(work)
		wg.Wait()
		close(results)
	}()
	started := time.Now()
	var failed []record
	var simulated, cpu float64
	done := 0
	encoder := json.NewEncoder(out)
	for r := range results {
		done++
		simulated += r.Simulated
		cpu += r.CPU
		if r.Verdict != "ok" {
			failed = append(failed, r)
		}
		if err := encoder.Encode(r); err != nil {
			fmt.Fprintln(os.Stderr, "dmqsim: writing the summary:", err)
			return 2
		}
		bar := strings.Repeat("#", done*40/max(total, 1)) + strings.Repeat(".", 40-done*40/max(total, 1))
		fmt.Fprintf(os.Stderr, "\r[%s] %d/%d seeds, %d failed", bar, done, total, len(failed))
	}
	fmt.Fprintln(os.Stderr)
	sort.Slice(failed, func(i, j int) bool { return failed[i].Seed < failed[j].Seed })
	fmt.Printf("%-10s %d (shard %s of %s)\n%-10s %d\n%-10s %d\n%-10s %v\n%-10s %.1f s\n%-10s %s\n",
		"seeds", total, *shard, *seeds, "passed", total-len(failed), "failed", len(failed),
		"wall", time.Since(started).Round(time.Second), "cpu", cpu, "rate", rate(simulated, cpu))
	for _, f := range failed {
		fmt.Printf("FAIL seed=%d %s: %s\n  reproduce: %s\n", f.Seed, f.Verdict, f.Violation, f.Reproduce)
	}
	if len(failed) > 0 {
		return 1
	}
	return 0
}

// rate is how the sweep summaries print simulated seconds per CPU second.
func rate(simulated, cpu float64) string {
	if cpu <= 0 {
		return "n/a"
	}
	return fmt.Sprintf("%.0f simulated s per CPU s", simulated/cpu)
}

// runSeed runs one seed in a child process and reads its record; a child
// that crashes or prints no record is an error record.
func runSeed(self string, seed uint64, duration time.Duration, nodes int, spec sweepSpec) record {
	cmd := exec.Command(self, "run", "--json", "--seed", strconv.FormatUint(seed, 10),
		"--duration", duration.String(), "--nodes", strconv.Itoa(nodes))
	var stderr strings.Builder
	cmd.Stderr = &stderr
	stdout, runErr := cmd.Output()
	var rec record
	if err := json.Unmarshal(stdout, &rec); err != nil || rec.Seed != seed {
		why := strings.TrimSpace(stderr.String())
		if len(why) > 2000 {
			why = "…" + why[len(why)-2000:]
		}
		rec = record{Seed: seed, Verdict: "error", Violation: fmt.Sprintf("the run did not finish (%v): %s", runErr, why),
			Reproduce: reproduce(seed, duration, nodes)}
	}
	if state := cmd.ProcessState; state != nil {
		rec.CPU = (state.UserTime() + state.SystemTime()).Seconds()
		if rec.CPU > 0 {
			rec.Rate = rec.Simulated / rec.CPU
		}
	}
	rec.Sweep = &spec
	return rec
}
