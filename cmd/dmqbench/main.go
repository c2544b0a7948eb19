// Command dmqbench measures a local DMQ metadata cluster: it starts 1 or 3
// dmqd processes with Pebble data directories, drives them from this
// machine, and prints a table (and JSON with --json): write throughput and
// latency at several concurrencies, linearizable reads, storage heartbeats,
// failover time after SIGKILL of the leader, and the disk's own fdatasync
// latency measured in the same run.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/debug"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"text/tabwriter"
	"time"

	"connectrpc.com/connect"
	metadatav1 "github.com/dmq-project/metadata/gen/dmq/metadata/v1"
	"github.com/dmq-project/metadata/gen/dmq/metadata/v1/metadatav1connect"
	"github.com/dmq-project/metadata/wire"
)

// Result is one measured line.
type Result struct {
	Cluster     string  `json:"cluster"`
	Name        string  `json:"name"`
	Concurrency int     `json:"concurrency,omitempty"`
	Operations  int     `json:"operations"`
	PerSecond   float64 `json:"per_second,omitempty"`
	P50Ms       float64 `json:"p50_ms"`
	P99Ms       float64 `json:"p99_ms"`
	P999Ms      float64 `json:"p999_ms,omitempty"`
	MinMs       float64 `json:"min_ms,omitempty"`
	Errors      int     `json:"errors"`
	// ServerCPUUs and ClientCPUUs are the CPU time per operation of all
	// the controllers together and of the load generator.
	ServerCPUUs float64 `json:"server_cpu_us_per_op,omitempty"`
	ClientCPUUs float64 `json:"client_cpu_us_per_op,omitempty"`
	// LeaderSaveMs and FollowerSaveMs are the mean time to persist one
	// Raft Ready (the fsync) on the leader and on the followers, from the
	// controllers' dmq_storage_save_seconds.
	LeaderSaveMs   float64 `json:"leader_save_ms,omitempty"`
	FollowerSaveMs float64 `json:"follower_save_ms,omitempty"`
	// Items is the number of items (topics) each operation of a batch
	// measurement carries; the table shows items/s and CPU per item.
	Items int `json:"items_per_op,omitempty"`
}

// saveTotals reads a controller's dmq_storage_save_seconds sum and count.
func saveTotals(url string) (sum, count float64) {
	series := unlabelledMetrics(url)
	return series["dmq_storage_save_seconds_sum"], series["dmq_storage_save_seconds_count"]
}

// unlabelledMetrics reads the series without labels from a controller's
// /metrics, by name (none when it cannot be read).
func unlabelledMetrics(url string) map[string]float64 {
	series := map[string]float64{}
	resp, err := http.Get(url + "/metrics")
	if err != nil {
		return series
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return series
	}
	for _, line := range strings.Split(string(body), "\n") {
		name, value, ok := strings.Cut(line, " ")
		if !ok {
			continue
		}
		if v, err := strconv.ParseFloat(strings.TrimSpace(value), 64); err == nil {
			series[name] = v
		}
	}
	return series
}

// cpuTime is a process's user+system CPU time, from /proc (0 if unknown).
func cpuTime(pid string) time.Duration {
	data, err := os.ReadFile("/proc/" + pid + "/stat")
	if err != nil {
		return 0
	}
	// The command name may hold spaces; the fields after it are fixed.
	fields := strings.Fields(string(data[strings.LastIndexByte(string(data), ')')+1:]))
	if len(fields) < 13 {
		return 0
	}
	var user, system int64
	fmt.Sscan(fields[11], &user)
	fmt.Sscan(fields[12], &system)
	return time.Duration(user+system) * time.Second / 100 // USER_HZ
}

func main() {
	// The load generator collects garbage as rarely as dmqd does by
	// default, so that its own CPU bounds the figures less (GOGC wins).
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(400)
	}
	dmqd := flag.String("dmqd", "bin/dmqd", "the dmqd binary")
	sizes := flag.String("clusters", "1,3", "cluster sizes to measure")
	duration := flag.Duration("duration", 3*time.Second, "time per throughput measurement")
	failovers := flag.Int("failovers", 10, "leader kills for the failover measurement (3-controller cluster)")
	jsonPath := flag.String("json", "", "also write the results as JSON here")
	scale := flag.String("scale", "100000,1000000,2000000", "partition counts for the scale measurement (empty: skip)")
	fanout := flag.String("fanout", "1000,5000", "storage service counts for the fan-out measurement on 3 controllers (empty: skip)")
	heartbeats := flag.String("heartbeats", "10000", "storage service counts for the heartbeat cost measurement on 3 controllers (empty: skip)")
	fanoutModes := flag.String("fanout-modes", "push,watch", "how the services get the metadata in the fan-out measurement: push, watch, or both")
	flag.StringVar(&only, "only", "", "measure only the phases whose names contain one of these comma-separated words (e.g. CreateTopic,Heartbeat)")
	flag.IntVar(&conns, "conns", 1, "HTTP/2 connections the workers share")
	flag.BoolVar(&http1, "http1", false, "load the controllers over HTTP/1.1 keep-alive connections instead of one HTTP/2 connection")
	flag.StringVar(&profileDir, "profile", "", "save CPU profiles of every controller and of the load generator during each measurement in this directory")
	flag.Parse()
	dir, err := os.MkdirTemp("", "dmqbench-")
	if err != nil {
		fail(err)
	}
	// DMQBENCH_KEEP keeps the controllers' data directories and output,
	// to read after a run that needs explaining.
	if os.Getenv("DMQBENCH_KEEP") == "" {
		defer os.RemoveAll(dir)
	}
	workDir = dir

	var results []Result
	results = append(results, fdatasync(dir))
	for _, size := range strings.Split(*sizes, ",") {
		if strings.TrimSpace(size) == "" {
			continue
		}
		n := 1
		if strings.TrimSpace(size) == "3" {
			n = 3
		}
		c := startCluster(*dmqd, filepath.Join(dir, fmt.Sprint("cluster-", n)), n)
		results = append(results, c.measure(*duration, *failovers)...)
		c.stop()
	}
	for _, count := range strings.Split(*scale, ",") {
		if count = strings.TrimSpace(count); count == "" {
			continue
		}
		var partitions int
		if _, err := fmt.Sscan(count, &partitions); err != nil || partitions < 10_000 {
			fail(fmt.Errorf("--scale %q: want partition counts of at least 10000", count))
		}
		results = append(results, scaleRun(*dmqd, filepath.Join(dir, "scale-"+count), partitions)...)
	}
	for _, services := range serviceCounts("--fanout", *fanout) {
		for _, mode := range strings.Split(*fanoutModes, ",") {
			mode = strings.TrimSpace(mode)
			if mode != "push" && mode != "watch" {
				fail(fmt.Errorf("--fanout-modes %q: want push, watch or both", *fanoutModes))
			}
			results = append(results, fanoutRun(*dmqd, filepath.Join(dir, fmt.Sprint("fanout-", mode, "-", services)), services, mode, fanoutRounds)...)
		}
	}
	for _, services := range serviceCounts("--heartbeats", *heartbeats) {
		results = append(results, fanoutRun(*dmqd, filepath.Join(dir, fmt.Sprint("heartbeats-", services)), services, "heartbeats", 0)...)
	}
	printTable(results)
	if *jsonPath != "" {
		data, _ := json.MarshalIndent(results, "", "  ")
		if err := os.WriteFile(*jsonPath, data, 0o644); err != nil {
			fail(err)
		}
	}
}

// only and profileDir are the --only and --profile flags.
var only, profileDir string

// http1 and conns are the --http1 and --conns flags.
var (
	http1 bool
	conns int
)

// selected says whether --only lets the phase run.
func selected(name string) bool {
	if only == "" {
		return true
	}
	for _, word := range strings.Split(only, ",") {
		if word = strings.TrimSpace(word); word != "" && strings.Contains(strings.ToLower(name), strings.ToLower(word)) {
			return true
		}
	}
	return false
}

// profiled runs measure while every controller records a CPU profile, if
// --profile is set, and saves them named after the phase and the
// controller ("leader" or "follower-N").
func profiled(urls []string, leader int, phase string, d time.Duration, measure func() Result) Result {
	if profileDir == "" {
		return measure()
	}
	profiles := make([][]byte, len(urls))
	var wg sync.WaitGroup
	for i, url := range urls {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, err := http.Get(fmt.Sprintf("%s/debug/pprof/profile?seconds=%d", url, max(1, int(d.Seconds()))))
			if err != nil {
				return
			}
			defer resp.Body.Close()
			profiles[i], _ = io.ReadAll(resp.Body)
		}()
	}
	// The load generator shares the machine: its own profile shows what a
	// call costs on the client's side.
	var self bytes.Buffer
	if err := pprof.StartCPUProfile(&self); err != nil {
		fail(err)
	}
	r := measure()
	pprof.StopCPUProfile()
	wg.Wait()
	profiles = append(profiles, self.Bytes())
	for i, data := range profiles {
		role := "leader"
		switch {
		case i == len(urls):
			role = "load-generator"
		case i != leader:
			role = fmt.Sprint("follower-", i+1)
		}
		name := strings.NewReplacer(" ", "-", "(", "", ")", "", ">", "", ":", "").Replace(fmt.Sprintf("%s-%s-%d-%s.pprof", r.Cluster, phase, r.Concurrency, role))
		if err := os.WriteFile(filepath.Join(profileDir, name), data, 0o644); err != nil {
			fail(err)
		}
	}
	return r
}

// workDir holds the controllers' data directories (and their audit logs),
// removed after a run and kept after a failure, for its post-mortem.
var workDir string

func fail(err error) {
	if workDir != "" {
		err = fmt.Errorf("%w (the controllers' data directories and audit logs are kept in %s)", err, workDir)
	}
	fmt.Fprintln(os.Stderr, "dmqbench:", err)
	os.Exit(1)
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

func percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	return sorted[min(len(sorted)-1, int(float64(len(sorted))*p))]
}

// fdatasync measures the disk under the data directory: 256-byte appends,
// each followed by fdatasync.
func fdatasync(dir string) Result {
	f, err := os.Create(filepath.Join(dir, "fdatasync"))
	if err != nil {
		fail(err)
	}
	defer f.Close()
	buf := make([]byte, 256)
	var lat []time.Duration
	for i := 0; i < 2000; i++ {
		started := time.Now()
		if _, err := f.Write(buf); err != nil {
			fail(err)
		}
		if err := syscall.Fdatasync(int(f.Fd())); err != nil {
			fail(err)
		}
		lat = append(lat, time.Since(started))
	}
	slices.Sort(lat)
	return Result{Cluster: "disk", Name: "fdatasync 256 B", Operations: len(lat),
		P50Ms: ms(percentile(lat, 0.5)), P99Ms: ms(percentile(lat, 0.99)), P999Ms: ms(percentile(lat, 0.999))}
}

type cluster struct {
	name  string
	bin   string
	dir   string
	procs []*exec.Cmd
	ports []int
	extra []string // flags every controller gets
}

func freePort() int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fail(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func startCluster(bin, dir string, n int) *cluster {
	return startClusterWith(bin, dir, n, nil)
}

// startClusterWith starts n controllers whose services.json also names
// storage services (entries of storage-services), with extra flags.
func startClusterWith(bin, dir string, n int, storage []string, extra ...string) *cluster {
	c := &cluster{name: fmt.Sprintf("%d controller(s)", n), bin: bin, dir: dir, extra: extra}
	var entries []string
	for i := 0; i < n; i++ {
		c.ports = append(c.ports, freePort())
		entries = append(entries, fmt.Sprintf(`{"id":%d,"host":"127.0.0.1","port":%d,"url":"http://127.0.0.1:%d"}`, i+1, c.ports[i], c.ports[i]))
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		fail(err)
	}
	services := filepath.Join(dir, "services.json")
	if err := os.WriteFile(services, []byte(`{"services":{"metadata-services":[`+strings.Join(entries, ",")+`],`+
		`"storage-services":[`+strings.Join(storage, ",")+`]}}`), 0o644); err != nil {
		fail(err)
	}
	c.procs = make([]*exec.Cmd, n)
	for i := 0; i < n; i++ {
		c.start(i, services)
	}
	return c
}

func (c *cluster) start(i int, services string) {
	cmd := exec.Command(c.bin, "--id", fmt.Sprint(i+1), "--services.config-path", services, "--server.host", "127.0.0.1",
		"--server.port", fmt.Sprint(c.ports[i]), "--metadata.data-dir", filepath.Join(c.dir, fmt.Sprint("node-", i+1)),
		"--log.level", "error", "--services.heartbeat-timeout-ms", "600000",
		// One load generator is one client: the per-client limit would
		// measure itself.
		"--security.rate-limit-rps", "0")
	cmd.Args = append(cmd.Args, c.extra...)
	// The controllers die with the load generator, however it ends (fail
	// exits without stopping them).
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	// What a controller says on the way out (a panic, a fatal error) is
	// kept beside its data: a measurement that stalls is explained there.
	logFile, err := os.OpenFile(filepath.Join(c.dir, fmt.Sprintf("node-%d.log", i+1)), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		fail(err)
	}
	defer logFile.Close()
	cmd.Stdout, cmd.Stderr = logFile, logFile
	if err := cmd.Start(); err != nil {
		fail(err)
	}
	c.procs[i] = cmd
}

func (c *cluster) stop() {
	for _, p := range c.procs {
		if p != nil {
			_ = p.Process.Signal(syscall.SIGTERM)
			_ = p.Wait()
		}
	}
}

func (c *cluster) url(i int) string { return fmt.Sprintf("http://127.0.0.1:%d", c.ports[i]) }

// leader returns the index of the leader, waiting for one.
func (c *cluster) leader(exclude int) int {
	httpClient := wire.NewHTTPClient(nil)
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		for i := range c.procs {
			if i == exclude || c.procs[i] == nil {
				continue
			}
			ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
			q, err := metadatav1connect.NewQuorumServiceClient(httpClient, c.url(i)).DescribeQuorum(ctx, connect.NewRequest(&metadatav1.DescribeQuorumRequest{}))
			cancel()
			if err == nil && q.Msg.GetLeaderId() == uint64(i+1) {
				return i
			}
		}
	}
	fail(fmt.Errorf("%s: no leader", c.name))
	return -1
}

// load runs op from concurrency workers for d and reports latencies.
func load(name, clusterName string, concurrency int, d time.Duration, op func(worker, n int) error) Result {
	var mu sync.Mutex
	var lat []time.Duration
	var errors atomic.Int64
	deadline := time.Now().Add(d)
	var wg sync.WaitGroup
	started := time.Now()
	for w := 0; w < concurrency; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var mine []time.Duration
			for n := 0; time.Now().Before(deadline); n++ {
				t := time.Now()
				if err := op(w, n); err != nil {
					errors.Add(1)
					continue
				}
				mine = append(mine, time.Since(t))
			}
			mu.Lock()
			lat = append(lat, mine...)
			mu.Unlock()
		}()
	}
	wg.Wait()
	elapsed := time.Since(started)
	slices.Sort(lat)
	return Result{Cluster: clusterName, Name: name, Concurrency: concurrency, Operations: len(lat),
		PerSecond: float64(len(lat)) / elapsed.Seconds(), P50Ms: ms(percentile(lat, 0.5)), P99Ms: ms(percentile(lat, 0.99)),
		P999Ms: ms(percentile(lat, 0.999)), Errors: int(errors.Load())}
}

func (c *cluster) measure(d time.Duration, failovers int) []Result {
	var out []Result
	leader := c.leader(-1)
	// Workers share conns connections (HTTP/2 multiplexes each), as
	// etcd's benchmark spreads its clients over --conns.
	clients := make([]metadatav1connect.MetadataServiceClient, max(1, conns))
	for i := range clients {
		httpClient := wire.NewHTTPClient(nil)
		if http1 {
			// One keep-alive connection per worker instead.
			httpClient = &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 1000}}
		}
		clients[i] = metadatav1connect.NewMetadataServiceClient(httpClient, c.url(leader))
	}
	client := clients[0]
	on := func(worker int) metadatav1connect.MetadataServiceClient { return clients[worker%len(clients)] }
	ctx := context.Background()
	// Three brokers, for the batches of replication factor 3.
	for id := int32(1); id <= 3; id++ {
		if _, err := client.RegisterBroker(ctx, connect.NewRequest(&metadatav1.RegisterBrokerRequest{Id: id, Host: "127.0.0.1", Port: 9092})); err != nil {
			fail(err)
		}
	}
	phase := func(name string, concurrency int, op func(worker, n int) error) {
		if !selected(name) {
			return
		}
		serverCPU := func() (total time.Duration) {
			for _, p := range c.procs {
				total += cpuTime(fmt.Sprint(p.Process.Pid))
			}
			return total
		}
		var urls []string
		for i := range c.procs {
			urls = append(urls, c.url(i))
		}
		saveSums, saveCounts := make([]float64, len(urls)), make([]float64, len(urls))
		for i, url := range urls {
			saveSums[i], saveCounts[i] = saveTotals(url)
		}
		serverBefore, clientBefore := serverCPU(), cpuTime("self")
		r := profiled(urls, leader, name, d, func() Result { return load(name, c.name, concurrency, d, op) })
		if r.Operations > 0 {
			r.ServerCPUUs = float64((serverCPU() - serverBefore).Microseconds()) / float64(r.Operations)
			r.ClientCPUUs = float64((cpuTime("self") - clientBefore).Microseconds()) / float64(r.Operations)
		}
		var followerSum, followerCount float64
		for i, url := range urls {
			sum, count := saveTotals(url)
			sum, count = sum-saveSums[i], count-saveCounts[i]
			if count <= 0 {
				continue
			}
			if i == leader {
				r.LeaderSaveMs = 1000 * sum / count
			} else {
				followerSum, followerCount = followerSum+sum, followerCount+count
			}
		}
		if followerCount > 0 {
			r.FollowerSaveMs = 1000 * followerSum / followerCount
		}
		out = append(out, r)
	}
	var topicSeq atomic.Int64
	for _, concurrency := range []int{1, 16, 256, 1000} {
		phase("CreateTopic (1 partition)", concurrency, func(w, _ int) error {
			name := fmt.Sprintf("bench-%d", topicSeq.Add(1))
			_, err := on(w).CreateTopic(ctx, connect.NewRequest(&metadatav1.CreateTopicRequest{Name: name, Partitions: 1, ReplicationFactor: 1}))
			return err
		})
	}
	if topicSeq.Load() == 0 {
		// The reads need topics to read.
		for i := 0; i < 1000; i++ {
			name := fmt.Sprintf("bench-%d", topicSeq.Add(1))
			if _, err := client.CreateTopic(ctx, connect.NewRequest(&metadatav1.CreateTopicRequest{Name: name, Partitions: 1, ReplicationFactor: 1})); err != nil {
				fail(err)
			}
		}
	}
	var brokerSeq atomic.Int64
	brokerSeq.Store(3)
	for _, concurrency := range []int{1, 16, 256, 1000} {
		phase("RegisterBroker", concurrency, func(w, _ int) error {
			id := int32(brokerSeq.Add(1))
			_, err := on(w).RegisterBroker(ctx, connect.NewRequest(&metadatav1.RegisterBrokerRequest{Id: id, Host: "127.0.0.1", Port: 9092}))
			return err
		})
	}
	// The floor of any call: a read the controller serves from its own
	// state (no Raft, no disk; only the RPC stack), one at a time.
	// At concurrency 100 and 1000 the same call is the ceiling of any
	// unary call on this machine: what the RPC stack alone allows.
	for _, concurrency := range []int{1, 100, 1000} {
		phase("DescribeTopic (stale)", concurrency, func(w, n int) error {
			_, err := on(w).DescribeTopic(ctx, connect.NewRequest(&metadatav1.DescribeTopicRequest{Name: "bench-1", AllowStale: true}))
			return err
		})
	}
	phase("DescribeTopic (linearizable)", 100, func(w, n int) error {
		_, err := on(w).DescribeTopic(ctx, connect.NewRequest(&metadatav1.DescribeTopicRequest{Name: fmt.Sprintf("bench-%d", 1+(w*7919+n)%int(max(1, topicSeq.Load())))}))
		return err
	})
	brokers := int(brokerSeq.Load())
	state, err := client.GetClusterMetadata(ctx, connect.NewRequest(&metadatav1.GetClusterMetadataRequest{}))
	if err != nil {
		fail(err)
	}
	// Caught-up services, as in a steady cluster: each heartbeat refreshes a
	// session and schedules nothing.
	version := state.Msg.GetState().GetMetadataVersion()
	phase("StorageHeartbeat", 64, func(w, n int) error {
		_, err := on(w).StorageHeartbeat(ctx, connect.NewRequest(&metadatav1.StorageHeartbeatRequest{
			ServiceId: fmt.Sprintf("storage-%d", 1+(w*131+n)%brokers), MetadataVersion: version}))
		return err
	})
	// The same heartbeats, one stream per storage service. Bidirectional
	// streams need HTTP/2: not measured with --http1.
	for _, concurrency := range []int{64, 256} {
		if http1 {
			break
		}
		streams := make([]*connect.BidiStreamForClient[metadatav1.StorageHeartbeatRequest, metadatav1.StorageHeartbeatResponse], concurrency)
		// A stream that stops answering must not hold the run forever.
		streamCtx, cancel := context.WithTimeout(ctx, d+10*time.Second)
		phase("StorageHeartbeats (stream)", concurrency, func(w, n int) error {
			if streams[w] == nil {
				streams[w] = on(w).StorageHeartbeats(streamCtx)
			}
			err := streams[w].Send(&metadatav1.StorageHeartbeatRequest{ServiceId: fmt.Sprintf("storage-%d", 1+(w*131+n)%brokers), MetadataVersion: version})
			if err == nil {
				_, err = streams[w].Receive()
			}
			if err != nil {
				_ = streams[w].CloseRequest()
				_ = streams[w].CloseResponse()
				streams[w] = nil
			}
			return err
		})
		for _, s := range streams {
			if s != nil {
				_ = s.CloseRequest()
				_ = s.CloseResponse()
			}
		}
		cancel()
	}
	// Batches (Kafka's CreateTopics): one call, one record, a thousand
	// one-partition topics. Last, because they grow the state most.
	var batchSeq atomic.Int64
	for _, rf := range []int32{3, 1} {
		for _, concurrency := range []int{1, 4} {
			name := fmt.Sprintf("CreateTopics (%d per batch, RF %d)", topicsPerBenchBatch, rf)
			before := len(out)
			phase(name, concurrency, func(w, _ int) error {
				req := &metadatav1.CreateTopicsRequest{Topics: make([]*metadatav1.CreateTopicRequest, topicsPerBenchBatch)}
				for i := range req.Topics {
					req.Topics[i] = &metadatav1.CreateTopicRequest{Name: fmt.Sprintf("batch-%d", batchSeq.Add(1)), Partitions: 1, ReplicationFactor: rf}
				}
				resp, err := on(w).CreateTopics(ctx, connect.NewRequest(req))
				if err == nil && resp.Msg.GetCreated() != topicsPerBenchBatch {
					err = fmt.Errorf("a batch created %d of %d topics", resp.Msg.GetCreated(), topicsPerBenchBatch)
				}
				return err
			})
			if len(out) > before {
				out[len(out)-1].Items = topicsPerBenchBatch
			}
		}
	}
	if len(c.procs) == 3 && failovers > 0 && selected("failover") {
		out = append(out, c.failover(failovers))
	}
	return out
}

// topicsPerBenchBatch is the size of the CreateTopics batches measured.
const topicsPerBenchBatch = 1000

// failover kills the leader and measures the time until a write succeeds
// through any controller, then restarts the killed one.
func (c *cluster) failover(trials int) Result {
	services := filepath.Join(c.dir, "services.json")
	httpClient := wire.NewHTTPClient(nil)
	var lat []time.Duration
	for trial := 0; trial < trials; trial++ {
		leader := c.leader(-1)
		killed := time.Now()
		_ = c.procs[leader].Process.Signal(syscall.SIGKILL)
		_ = c.procs[leader].Wait()
		c.procs[leader] = nil
		for attempt, done := 0, false; !done; {
			for i := range c.procs {
				if c.procs[i] == nil {
					continue
				}
				// A fresh name for every attempt: an attempt that timed out
				// may still have committed, and its name would then be taken.
				attempt++
				ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
				_, err := metadatav1connect.NewMetadataServiceClient(httpClient, c.url(i)).CreateTopic(ctx,
					connect.NewRequest(&metadatav1.CreateTopicRequest{Name: fmt.Sprintf("failover-%d-%d", trial, attempt), Partitions: 1}))
				cancel()
				if err == nil {
					lat = append(lat, time.Since(killed))
					done = true
					break
				}
			}
			if time.Since(killed) > time.Minute {
				fail(fmt.Errorf("no write for a minute after killing the leader"))
			}
		}
		c.start(leader, services)
		c.leader(-1)
		time.Sleep(500 * time.Millisecond)
	}
	slices.Sort(lat)
	return Result{Cluster: c.name, Name: "failover: SIGKILL leader -> first write", Operations: len(lat),
		MinMs: ms(lat[0]), P50Ms: ms(percentile(lat, 0.5)), P99Ms: ms(percentile(lat, 0.99))}
}

func printTable(results []Result) {
	w := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(w, "cluster\tmeasurement\tconcurrency\tops\tops/s\tmin ms\tp50 ms\tp99 ms\tp99.9 ms\terrors\tserver CPU us/op\tclient CPU us/op\tleader save ms\tfollower save ms\titems/s\tserver CPU us/item\t")
	for _, r := range results {
		itemRate, itemCPU := "", ""
		if r.Items > 0 {
			itemRate = fmt.Sprintf("%.0f", r.PerSecond*float64(r.Items))
			itemCPU = fmt.Sprintf("%.1f", r.ServerCPUUs/float64(r.Items))
		}
		fmt.Fprintf(w, "%s\t%s\t%d\t%d\t%.0f\t%.2f\t%.2f\t%.2f\t%.2f\t%d\t%.0f\t%.0f\t%.2f\t%.2f\t%s\t%s\t\n", r.Cluster, r.Name, r.Concurrency, r.Operations,
			r.PerSecond, r.MinMs, r.P50Ms, r.P99Ms, r.P999Ms, r.Errors, r.ServerCPUUs, r.ClientCPUUs, r.LeaderSaveMs, r.FollowerSaveMs, itemRate, itemCPU)
	}
	_ = w.Flush()
}

// rssMiB reads a process's resident set size.
func rssMiB(pid int) float64 {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(data), "\n") {
		if strings.HasPrefix(line, "VmRSS:") {
			var kb float64
			fmt.Sscan(strings.TrimSpace(strings.TrimPrefix(strings.TrimSuffix(line, "kB"), "VmRSS:")), &kb)
			return kb / 1024
		}
	}
	return 0
}

// scaleRun fills 3 controllers with partitions (RF 3 on 10 brokers), then
// reports the leader's RSS, the snapshot's size and the time the leader
// takes to store one, the write latency of a steady load without and with
// snapshots taken back to back, the leader loop's pauses over 10 ms in
// each window and its longest (dmq_node_long_pauses_total,
// dmq_node_longest_pause_seconds), the restart of all three to a leader
// (restore from the snapshot and replay), and the time to move the
// leaderships of a broker that leads a tenth of the partitions (a
// controlled shutdown).
func scaleRun(bin, dir string, partitions int) []Result {
	c := startCluster(bin, dir, 3)
	defer c.stop()
	name := fmt.Sprintf("3 controllers, %d partitions", partitions)
	leader := c.leader(-1)
	client := metadatav1connect.NewMetadataServiceClient(wire.NewHTTPClient(nil), c.url(leader))
	quorum := metadatav1connect.NewQuorumServiceClient(wire.NewHTTPClient(nil), c.url(leader))
	ctx := context.Background()
	for id := int32(1); id <= 10; id++ {
		if _, err := client.RegisterBroker(ctx, connect.NewRequest(&metadatav1.RegisterBrokerRequest{Id: id, Host: "127.0.0.1", Port: 9092,
			Rack: fmt.Sprint("rack-", id%3)})); err != nil {
			fail(err)
		}
	}
	const perTopic = 10_000
	started := time.Now()
	for i := 0; i < partitions/perTopic; i++ {
		if _, err := client.CreateTopic(ctx, connect.NewRequest(&metadatav1.CreateTopicRequest{
			Name: fmt.Sprintf("scale-%04d", i), Partitions: perTopic, ReplicationFactor: 3})); err != nil {
			fail(err)
		}
	}
	fill := time.Since(started)
	started = time.Now()
	snap, err := quorum.Snapshot(ctx, connect.NewRequest(&metadatav1.SnapshotRequest{}))
	if err != nil {
		fail(err)
	}
	snapshotTook := time.Since(started)
	rss := rssMiB(c.procs[leader].Process.Pid)
	filled := unlabelledMetrics(c.url(leader))

	// Writes with and without snapshots: 8 writers creating one-partition
	// topics, for scaleWriteWindow each; in the second, the leader
	// snapshots again as soon as one is stored.
	var created atomic.Int64
	write := func(int, int) error {
		_, err := client.CreateTopic(ctx, connect.NewRequest(&metadatav1.CreateTopicRequest{
			Name: fmt.Sprintf("w-%d", created.Add(1)), Partitions: 1, ReplicationFactor: 3}))
		return err
	}
	urls := []string{c.url(0), c.url(1), c.url(2)}
	quiet := profiled(urls, leader, "scale-writes", scaleWriteWindow, func() Result {
		return load("CreateTopic, no snapshot", name, 8, scaleWriteWindow, write)
	})
	afterQuiet := unlabelledMetrics(c.url(leader))
	followersBefore := map[int]map[string]float64{}
	for i := range 3 {
		if i != leader {
			followersBefore[i] = unlabelledMetrics(c.url(i))
		}
	}
	stop := make(chan struct{})
	snapshots := make(chan int)
	go func() {
		taken := 0
		defer func() { snapshots <- taken }()
		for {
			select {
			case <-stop:
				return
			default:
			}
			if _, err := quorum.Snapshot(ctx, connect.NewRequest(&metadatav1.SnapshotRequest{})); err != nil {
				fail(err)
			}
			taken++
		}
	}()
	busy := profiled(urls, leader, "scale-writes-snapshots", scaleWriteWindow, func() Result {
		return load("CreateTopic, snapshots back to back", name, 8, scaleWriteWindow, write)
	})
	close(stop)
	busy.Name = fmt.Sprintf("CreateTopic, %d snapshots back to back", <-snapshots)
	afterBusy := unlabelledMetrics(c.url(leader))
	followersAfter := map[int]map[string]float64{}
	for i := range followersBefore {
		followersAfter[i] = unlabelledMetrics(c.url(i))
	}
	longPauses := func(from, to map[string]float64) float64 {
		return to["dmq_node_long_pauses_total"] - from["dmq_node_long_pauses_total"]
	}
	// The loop waits for its own writes' fsyncs: the saves slower than
	// 12.8 ms (a bucket bound) say how many of the pauses are the disk's.
	slowSaves := func(m map[string]float64) float64 {
		return m["dmq_storage_save_seconds_count"] - m[`dmq_storage_save_seconds_bucket{le="0.0128"}`]
	}
	// slowestSave is the bound of the lowest bucket that holds every save
	// between two readings.
	slowestSave := func(from, to map[string]float64) float64 {
		total := to["dmq_storage_save_seconds_count"] - from["dmq_storage_save_seconds_count"]
		for bound := 0.0001; bound < 10; bound *= 2 {
			key := fmt.Sprintf(`dmq_storage_save_seconds_bucket{le="%g"}`, bound)
			if _, ok := to[key]; ok && to[key]-from[key] >= total {
				return bound
			}
		}
		return math.Inf(1)
	}

	started = time.Now()
	if _, err := client.StorageHeartbeat(ctx, connect.NewRequest(&metadatav1.StorageHeartbeatRequest{ServiceId: "storage-1",
		IsAlive: new(false)})); err != nil {
		fail(err)
	}
	for {
		b, err := client.DescribeBroker(ctx, connect.NewRequest(&metadatav1.DescribeBrokerRequest{Id: 1}))
		if err == nil && b.Msg.GetBroker().GetInControlledShutdown() {
			break
		}
		time.Sleep(time.Millisecond)
	}
	shutdown := time.Since(started)

	c.stop()
	services := filepath.Join(c.dir, "services.json")
	started = time.Now()
	for i := range c.procs {
		c.start(i, services)
	}
	c.leader(-1)
	restart := time.Since(started)
	return []Result{
		{Cluster: name, Name: fmt.Sprintf("fill (%d CreateTopic of %d)", partitions/perTopic, perTopic), Operations: partitions / perTopic, P50Ms: ms(fill)},
		{Cluster: name, Name: fmt.Sprintf("leader RSS %.0f MiB; snapshot %.1f MB", rss, float64(snap.Msg.GetSizeBytes())/1e6), Operations: 1},
		{Cluster: name, Name: "snapshot stored by the leader (QuorumService.Snapshot)", Operations: 1, P50Ms: ms(snapshotTook)},
		{Cluster: name, Name: fmt.Sprintf("leader loop pauses over 10 ms: fill and first snapshot %.0f, writes %.0f, writes with snapshots %.0f",
			filled["dmq_node_long_pauses_total"], longPauses(filled, afterQuiet), longPauses(afterQuiet, afterBusy)), Operations: 1},
		{Cluster: name, Name: fmt.Sprintf("leader saves (fsync) over 12.8 ms: fill and first snapshot %.0f, writes %.0f (slowest <= %g s), writes with snapshots %.0f (<= %g s)",
			slowSaves(filled), slowSaves(afterQuiet)-slowSaves(filled), slowestSave(filled, afterQuiet),
			slowSaves(afterBusy)-slowSaves(afterQuiet), slowestSave(afterQuiet, afterBusy)), Operations: 1},
		{Cluster: name, Name: fmt.Sprintf("follower saves over 12.8 ms, writes with snapshots: %s", func() string {
			var out []string
			for i, before := range followersBefore {
				after := followersAfter[i]
				out = append(out, fmt.Sprintf("%.0f (<= %g s; snapshots taken %.0f, installed %.0f)", slowSaves(after)-slowSaves(before), slowestSave(before, after),
					after[`dmq_snapshots_total{kind="taken"}`]-before[`dmq_snapshots_total{kind="taken"}`],
					after[`dmq_snapshots_total{kind="installed"}`]-before[`dmq_snapshots_total{kind="installed"}`]))
			}
			slices.Sort(out)
			return strings.Join(out, ", ")
		}()), Operations: 1},
		{Cluster: name, Name: "the leader loop's longest pause (after the first snapshot / at the end)", Operations: 1,
			P50Ms: filled["dmq_node_longest_pause_seconds"] * 1000, P99Ms: afterBusy["dmq_node_longest_pause_seconds"] * 1000},
		quiet, busy,
		{Cluster: name, Name: "restart of all three to leader (restore + replay)", Operations: 1, P50Ms: ms(restart)},
		{Cluster: name, Name: "move leaderships of a broker leading 10%", Operations: 1, P50Ms: ms(shutdown)},
	}
}

// scaleWriteWindow is how long the scale run writes, with and without
// snapshots.
const scaleWriteWindow = 5 * time.Second

// serviceCounts reads a flag's comma-separated storage service counts.
func serviceCounts(flagName, value string) []int {
	var counts []int
	for _, count := range strings.Split(value, ",") {
		if count = strings.TrimSpace(count); count == "" {
			continue
		}
		services, err := strconv.Atoi(count)
		if err != nil || services < 1 {
			fail(fmt.Errorf("%s %q: want storage service counts", flagName, count))
		}
		counts = append(counts, services)
	}
	return counts
}
