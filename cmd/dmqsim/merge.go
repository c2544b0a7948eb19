package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
)

// report is what merge makes of the shards' summaries.
type report struct {
	Sweep     sweepSpec // the sweep, Shard left out
	Shards    []string  // the shards seen
	Seeds     int       // distinct seeds with a record
	Passed    int
	Failed    []record // failing and unfinished seeds, by seed
	Missing   []uint64 // seeds of the range no shard ran
	Simulated float64
	CPU       float64
	// Nondeterministic are seeds run twice (by overlapping shards) whose
	// trace hashes differ.
	Nondeterministic []uint64
}

// merge combines sweep summaries (JSON lines) into one report: every seed
// of the sweep's range must appear (no shard lost), failing seeds are
// listed with their reproduce commands. It fails when a seed failed or is
// missing, or when the summaries are not of one sweep.
func merge(args []string, stdout io.Writer) int {
	fs := flag.NewFlagSet("merge", flag.ExitOnError)
	asJSON := fs.Bool("json", false, "print the report as one JSON object")
	_ = fs.Parse(args)
	if fs.NArg() == 0 {
		fmt.Fprintln(os.Stderr, "dmqsim: merge wants the shards' summary files (dmqsim sweep --summary FILE)")
		return 2
	}
	var records []record
	for _, path := range fs.Args() {
		read, err := readSummary(path)
		if err != nil {
			fmt.Fprintln(os.Stderr, "dmqsim:", err)
			return 2
		}
		records = append(records, read...)
	}
	r, err := combine(records)
	if err != nil {
		fmt.Fprintln(os.Stderr, "dmqsim:", err)
		return 2
	}
	if *asJSON {
		out, err := json.MarshalIndent(r, "", "  ")
		if err != nil {
			fmt.Fprintln(os.Stderr, "dmqsim:", err)
			return 2
		}
		fmt.Fprintln(stdout, string(out))
	} else {
		r.print(stdout)
	}
	if len(r.Failed) > 0 || len(r.Missing) > 0 || len(r.Nondeterministic) > 0 {
		return 1
	}
	return 0
}

// readSummary reads one summary's records.
func readSummary(path string) ([]record, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var records []record
	scanner := bufio.NewScanner(f)
	scanner.Buffer(make([]byte, 64<<10), 16<<20)
	for line := 1; scanner.Scan(); line++ {
		text := strings.TrimSpace(scanner.Text())
		if text == "" {
			continue
		}
		var rec record
		decoder := json.NewDecoder(strings.NewReader(text))
		decoder.DisallowUnknownFields()
		if err := decoder.Decode(&rec); err != nil {
			return nil, fmt.Errorf("%s:%d: not a sweep record: %v", path, line, err)
		}
		if rec.Verdict != "ok" && rec.Verdict != "fail" && rec.Verdict != "error" {
			return nil, fmt.Errorf("%s:%d: unknown verdict %q", path, line, rec.Verdict)
		}
		records = append(records, rec)
	}
	if err := scanner.Err(); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return records, nil
}

// combine checks that the records are of one sweep and reports on them.
func combine(records []record) (report, error) {
	if len(records) == 0 {
		return report{}, errors.New("the summaries hold no record")
	}
	for _, rec := range records {
		if rec.Sweep == nil {
			return report{}, fmt.Errorf("seed %d's record names no sweep: is it a `dmqsim sweep --summary` file?", rec.Seed)
		}
	}
	r := report{Sweep: *records[0].Sweep}
	r.Sweep.Shard = ""
	lo, hi, err := parseSeeds(r.Sweep.Seeds)
	if err != nil {
		return report{}, fmt.Errorf("the summaries' sweep: %w", err)
	}
	shards := map[string]bool{}
	bySeed := map[uint64]record{}
	for _, rec := range records {
		spec := *rec.Sweep
		shards[spec.Shard] = true
		spec.Shard = ""
		if spec != r.Sweep {
			return report{}, fmt.Errorf("seed %d is of another sweep (%+v) than seed %d (%+v): merge one sweep's shards at a time",
				rec.Seed, *rec.Sweep, records[0].Seed, *records[0].Sweep)
		}
		if rec.Seed < lo || rec.Seed > hi {
			return report{}, fmt.Errorf("seed %d is outside its sweep's seeds %s", rec.Seed, r.Sweep.Seeds)
		}
		if seen, twice := bySeed[rec.Seed]; twice {
			if seen.Trace != rec.Trace && seen.Verdict != "error" && rec.Verdict != "error" {
				r.Nondeterministic = append(r.Nondeterministic, rec.Seed)
			}
			if seen.Verdict != "ok" {
				continue // a failure run twice stays a failure
			}
		}
		bySeed[rec.Seed] = rec
	}
	for shard := range shards { // determinism: sorted below
		r.Shards = append(r.Shards, shard)
	}
	slices.Sort(r.Shards)
	for seed := lo; seed <= hi; seed++ {
		rec, ok := bySeed[seed]
		switch {
		case !ok:
			r.Missing = append(r.Missing, seed)
		case rec.Verdict == "ok":
			r.Passed++
		default:
			r.Failed = append(r.Failed, rec)
		}
		if ok {
			r.Seeds++
			r.Simulated += rec.Simulated
			r.CPU += rec.CPU
		}
		if seed == hi {
			break // hi may be the largest uint64
		}
	}
	slices.Sort(r.Nondeterministic)
	return r, nil
}

func (r report) print(w io.Writer) {
	fmt.Fprintf(w, "%-10s %s, %v each, nodes %s\n", "sweep", r.Sweep.Seeds, r.Sweep.Duration, nodesOf(r.Sweep.Nodes))
	fmt.Fprintf(w, "%-10s %d: %s\n", "shards", len(r.Shards), strings.Join(r.Shards, " "))
	fmt.Fprintf(w, "%-10s %d\n%-10s %d\n%-10s %d\n%-10s %d\n", "seeds", r.Seeds, "passed", r.Passed, "failed", len(r.Failed),
		"missing", len(r.Missing))
	fmt.Fprintf(w, "%-10s %.1f s\n%-10s %s\n", "cpu", r.CPU, "rate", rate(r.Simulated, r.CPU))
	if len(r.Missing) > 0 {
		fmt.Fprintf(w, "MISSING seeds no shard ran: %s\n", seedRanges(r.Missing))
	}
	for _, seed := range r.Nondeterministic {
		fmt.Fprintf(w, "NONDETERMINISTIC seed=%d: two runs gave different trace hashes\n", seed)
	}
	for _, f := range r.Failed {
		fmt.Fprintf(w, "FAIL seed=%d %s (shard %s): %s\n  reproduce: %s\n", f.Seed, f.Verdict, f.Sweep.Shard, f.Violation, f.Reproduce)
	}
}

func nodesOf(n int) string {
	if n == 0 {
		return "drawn from each seed"
	}
	return fmt.Sprint(n)
}

// seedRanges prints sorted seeds as ranges: 1..3 7 9..10.
func seedRanges(seeds []uint64) string {
	var parts []string
	for i := 0; i < len(seeds); {
		j := i
		for j+1 < len(seeds) && seeds[j+1] == seeds[j]+1 {
			j++
		}
		if j == i {
			parts = append(parts, fmt.Sprint(seeds[i]))
		} else {
			parts = append(parts, fmt.Sprintf("%d..%d", seeds[i], seeds[j]))
		}
		i = j + 1
	}
	return strings.Join(parts, " ")
}
