// Command dmqsim runs the deterministic simulator: one seed (run), many
// seeds in parallel processes (sweep), or a determinism check.
package main

import (
	"flag"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/dmq-project/metadata/linearizability"
	"github.com/dmq-project/metadata/sim"
)

func usage() {
	fmt.Fprintf(os.Stderr, `dmqsim: the DMQ metadata service's deterministic simulator

  dmqsim run --seed N [--duration 60s] [--nodes 3|5] [--viz out.html] [--trace] [--check-determinism]
  dmqsim sweep --seeds A..B [--duration 60s] [--jobs J] [--nodes 3|5]

Every choice of a run — cluster, faults, timings, workload — is drawn from
its seed: the same seed gives the same trace hash, on any machine.
`)
}

func main() {
	if len(os.Args) < 2 {
		usage()
		os.Exit(2)
	}
	switch os.Args[1] {
	case "run":
		os.Exit(run(os.Args[2:]))
	case "sweep":
		os.Exit(sweep(os.Args[2:]))
	case "-h", "--help", "help":
		usage()
	default:
		usage()
		os.Exit(2)
	}
}

func run(args []string) int {
	fs := flag.NewFlagSet("run", flag.ExitOnError)
	seed := fs.Uint64("seed", 0, "the seed")
	duration := fs.Duration("duration", 60*time.Second, "simulated time")
	nodes := fs.Int("nodes", 0, "cluster size, 3 or 5 (default: drawn from the seed)")
	viz := fs.String("viz", "", "write porcupine's HTML view of the history here")
	trace := fs.Bool("trace", false, "print the last events even when the run passes")
	determinism := fs.Bool("check-determinism", false, "run twice and compare the trace hashes")
	quiet := fs.Bool("quiet", false, "print only the verdict line")
	_ = fs.Parse(args)
	if *nodes != 0 && *nodes != 3 && *nodes != 5 {
		fmt.Fprintln(os.Stderr, "dmqsim: --nodes must be 3 or 5")
		return 2
	}
	opts := sim.OptionsFromSeed(*seed, *duration, *nodes)
	if !*quiet {
		fmt.Println("options:", opts)
	}
	result := sim.Run(opts)
	fmt.Println(result.Verdict())
	if !*quiet {
		fmt.Println("faults:", result.FaultSummary())
		fmt.Println("cluster:", result.Summary)
	}
	if *determinism {
		again := sim.Run(opts)
		if again.TraceHash != result.TraceHash || again.Events != result.Events {
			fmt.Printf("NOT DETERMINISTIC: second run trace=%016x events=%d\n", again.TraceHash, again.Events)
			return 1
		}
		fmt.Println("deterministic: the second run has the same trace hash")
	}
	if *viz != "" || !result.OK() {
		path := *viz
		if path == "" {
			path = fmt.Sprintf("dmqsim-seed-%d.html", *seed)
		}
		if _, info := linearizability.Check(result.History, 30*time.Second); true {
			if err := linearizability.Visualize(info, path); err != nil {
				fmt.Fprintln(os.Stderr, "dmqsim: writing the visualisation:", err)
			} else if !*quiet {
				fmt.Println("history visualisation:", path)
			}
		}
	}
	if *trace || !result.OK() {
		fmt.Println("last events:")
		for _, line := range result.Recent {
			fmt.Println(" ", line)
		}
	}
	if !result.OK() {
		for _, v := range result.Violations {
			fmt.Println("VIOLATION:", v)
		}
		fmt.Printf("reproduce: go run ./cmd/dmqsim run --seed %d --duration %v --nodes %d\n", *seed, *duration, opts.Nodes)
		return 1
	}
	return 0
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

// sweep runs each seed in its own process (a run owns crypto/rand.Reader),
// jobs at a time.
func sweep(args []string) int {
	fs := flag.NewFlagSet("sweep", flag.ExitOnError)
	seeds := fs.String("seeds", "1..100", "the seed range, inclusive")
	duration := fs.Duration("duration", 60*time.Second, "simulated time per seed")
	jobs := fs.Int("jobs", runtime.NumCPU(), "parallel processes")
	nodes := fs.Int("nodes", 0, "cluster size (default: drawn from each seed)")
	_ = fs.Parse(args)
	lo, hi, err := parseSeeds(*seeds)
	if err != nil {
		fmt.Fprintln(os.Stderr, "dmqsim:", err)
		return 2
	}
	self, err := os.Executable()
	if err != nil {
		fmt.Fprintln(os.Stderr, "dmqsim:", err)
		return 2
	}
	total := int(hi - lo + 1)
	type outcome struct {
		seed    uint64
		ok      bool
		verdict string
	}
	results := make(chan outcome, total)
	work := make(chan uint64)
	var wg sync.WaitGroup
	for j := 0; j < max(1, *jobs); j++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for seed := range work {
				cmd := exec.Command(self, "run", "--quiet", "--seed", strconv.FormatUint(seed, 10),
					"--duration", duration.String(), "--nodes", strconv.Itoa(*nodes))
				out, err := cmd.Output()
				first, _, _ := strings.Cut(string(out), "\n")
				results <- outcome{seed: seed, ok: err == nil, verdict: first}
			}
		}()
	}
	go func() {
		for seed := lo; seed <= hi; seed++ {
			work <- seed
		}
		close(work)
		wg.Wait()
		close(results)
	}()
	started := time.Now()
	var failed []outcome
	done := 0
	for r := range results {
		done++
		if !r.ok {
			failed = append(failed, r)
		}
		bar := strings.Repeat("#", done*40/total) + strings.Repeat(".", 40-done*40/total)
		fmt.Fprintf(os.Stderr, "\r[%s] %d/%d seeds, %d failed", bar, done, total, len(failed))
	}
	fmt.Fprintln(os.Stderr)
	sort.Slice(failed, func(i, j int) bool { return failed[i].seed < failed[j].seed })
	fmt.Printf("%-10s %d\n%-10s %d\n%-10s %d\n%-10s %v\n", "seeds", total, "passed", total-len(failed), "failed", len(failed),
		"wall", time.Since(started).Round(time.Second))
	for _, f := range failed {
		fmt.Printf("FAIL %s\n  reproduce: go run ./cmd/dmqsim run --seed %d --duration %v\n", f.verdict, f.seed, *duration)
	}
	if len(failed) > 0 {
		return 1
	}
	return 0
}
