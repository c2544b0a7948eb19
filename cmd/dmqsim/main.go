// Command dmqsim runs the deterministic simulator: one seed (run), many
// seeds in parallel processes (sweep), or a determinism check.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"runtime/debug"
	"runtime/pprof"
	"time"

	"github.com/dmq-project/metadata/linearizability"
	"github.com/dmq-project/metadata/sim"
)

func usage() {
	fmt.Fprintf(os.Stderr, `dmqsim: the DMQ metadata service's deterministic simulator

  dmqsim run --seed N [--duration 60s] [--nodes 3|5] [--viz out.html] [--trace] [--check-determinism] [--json]
             [--cpuprofile FILE [--repeat R]]
  dmqsim sweep --seeds A..B [--duration 60s] [--jobs J] [--nodes 3|5] [--shard K/N] [--summary FILE]
  dmqsim merge [--json] SUMMARY...

A sweep runs each seed in a process of its own; --shard K/N runs only the
K-th of N disjoint slices of the seeds (K from 0 to N-1, as a Kubernetes
Indexed Job's JOB_COMPLETION_INDEX), and --summary writes one JSON line per
seed (seed, verdict, trace hash, simulated and CPU seconds, rate, the
reproduce command). merge combines the shards' summaries into one report:
it fails on a failing seed, and on a seed of the range that no shard ran.

Every choice of a run — cluster, faults, timings, workload — is drawn from
its seed: the same seed gives the same trace hash, on any machine.
`)
}

// gcPercent is dmqsim's GOGC (a GOGC environment variable wins): a run's
// heap is small and short-lived, and at Go's default of 100 garbage
// collection took a quarter of the simulator's CPU.
const gcPercent = 400

func main() {
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(gcPercent)
	}
	if len(os.Args) < 2 {
		usage()
		os.Exit(2)
	}
	switch os.Args[1] {
	case "run":
		os.Exit(run(os.Args[2:]))
	case "sweep":
		os.Exit(sweep(os.Args[2:]))
	case "merge":
		os.Exit(merge(os.Args[2:], os.Stdout))
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
	asJSON := fs.Bool("json", false, "print only the run's record, one JSON line (what sweep reads)")
	cpuProfile := fs.String("cpuprofile", "", "write a CPU profile of the run here (go tool pprof)")
	repeat := fs.Int("repeat", 1, "run the seed this many times (with --cpuprofile: a longer profile)")
	_ = fs.Parse(args)
	if *cpuProfile != "" {
		f, err := os.Create(*cpuProfile)
		if err == nil {
			err = pprof.StartCPUProfile(f)
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, "dmqsim:", err)
			return 2
		}
		defer f.Close()
		defer pprof.StopCPUProfile()
	}
	for i := 1; i < *repeat; i++ {
		sim.Run(sim.OptionsFromSeed(*seed, *duration, *nodes))
	}
	if *nodes != 0 && *nodes != 3 && *nodes != 5 {
		fmt.Fprintln(os.Stderr, "dmqsim: --nodes must be 3 or 5")
		return 2
	}
	opts := sim.OptionsFromSeed(*seed, *duration, *nodes)
	if *asJSON {
		result := sim.Run(opts)
		line, err := json.Marshal(recordOf(result, *duration))
		if err != nil {
			fmt.Fprintln(os.Stderr, "dmqsim:", err)
			return 2
		}
		fmt.Println(string(line))
		if !result.OK() {
			return 1
		}
		return 0
	}
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
		fmt.Println("reproduce:", reproduce(*seed, *duration, opts.Nodes))
		return 1
	}
	return 0
}
