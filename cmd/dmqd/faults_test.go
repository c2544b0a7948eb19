package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"text/tabwriter"
	"time"

	"github.com/anishathalye/porcupine"
	"github.com/dmq-project/metadata/client"
	metadatav1 "github.com/dmq-project/metadata/gen/dmq/metadata/v1"
	"github.com/dmq-project/metadata/linearizability"
	"github.com/dmq-project/metadata/wire"
	"github.com/stretchr/testify/require"
)

var faultRounds = flag.Int("e2e.rounds", 1, "fault rounds of the real-process test (each: kill the leader, kill a follower, pause the leader, isolate the leader, slow the leader's links)")

const (
	e2eElectionTimeout = 500 * time.Millisecond
	e2eLeaderBound     = 10 * e2eElectionTimeout
	e2eStartBound      = 30 * time.Second
	// e2eSlowLink is the one-way delay of a slow link: a fifth of the
	// election timeout, so the leader keeps its followers.
	e2eSlowLink   = 100 * time.Millisecond
	e2eSlowPeriod = 2 * time.Second
)

// proc is one dmqd process of the harness.
type proc struct {
	id   uint64
	port int
	dir  string
	cmd  *exec.Cmd
	log  *os.File
	// services is this process's services.json: its peers' URLs go
	// through the link proxies, so links can be cut one by one.
	services string
}

type harness struct {
	t     *testing.T
	bin   string
	procs []*proc
	// links[from][to] carries from's peer traffic to to.
	links  map[[2]uint64]*linkProxy
	client *client.Client
}

// partition blackholes every link to and from p.
func (h *harness) isolate(p *proc) {
	for key, link := range h.links {
		if key[0] == p.id || key[1] == p.id {
			link.blackhole.Store(true)
		}
	}
}

// slow delays every link to and from p.
func (h *harness) slow(p *proc, delay time.Duration) {
	for key, link := range h.links {
		if key[0] == p.id || key[1] == p.id {
			link.delay.Store(int64(delay))
		}
	}
}

func (h *harness) heal() {
	for _, link := range h.links {
		link.heal()
	}
}

func (h *harness) start(p *proc) {
	cmd := exec.Command(h.bin, "--id", fmt.Sprint(p.id), "--services.config-path", p.services,
		"--metadata.data-dir", p.dir, "--server.port", fmt.Sprint(p.port), "--server.host", "127.0.0.1",
		"--raft.election-timeout-ms", fmt.Sprint(e2eElectionTimeout.Milliseconds()), "--raft.heartbeat-interval-ms", "50",
		"--services.heartbeat-timeout-ms", "60000", "--log.level", "warn")
	cmd.Stderr = p.log
	require.NoError(h.t, cmd.Start())
	p.cmd = cmd
}

func (h *harness) kill(p *proc) {
	_ = p.cmd.Process.Signal(syscall.SIGKILL)
	_ = p.cmd.Wait()
	p.cmd = nil
}

// leader asks each live process for its view and returns the leader's proc.
func (h *harness) leader(ctx context.Context) *proc {
	for _, p := range h.procs {
		if p.cmd == nil {
			continue
		}
		callCtx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
		q, err := h.client.DescribeQuorumAt(callCtx, fmt.Sprintf("http://127.0.0.1:%d", p.port))
		cancel()
		if err == nil && q.GetLeaderId() == p.id {
			return p
		}
	}
	return nil
}

// waitLeader returns the leader and how long finding it took, failing past
// bound: e2eLeaderBound where a failover is measured (a leader killed,
// stopped or cut off, the others running), e2eStartBound where processes
// start (Go, Pebble and the log replay of three processes at once on a
// loaded machine come before any election: the failover bound measured the
// wrong thing there, and failed make test runs).
func (h *harness) waitLeader(ctx context.Context, exclude *proc, bound time.Duration, after string) (*proc, time.Duration) {
	started := time.Now()
	for time.Since(started) < bound {
		if l := h.leader(ctx); l != nil && l != exclude {
			if took := time.Since(started); took > e2eLeaderBound {
				h.t.Logf("a leader only %v after %s (processes starting on a loaded machine)", took.Round(time.Millisecond), after)
			}
			return l, time.Since(started)
		}
		time.Sleep(20 * time.Millisecond)
	}
	h.t.Fatalf("no leader within %v after %s", bound, after)
	return nil, 0
}

// workload issues operations on topics with unique names until ctx ends,
// recording each logical operation once (unknown outcomes pending forever).
type workload struct {
	mu      sync.Mutex
	start   time.Time
	history []porcupine.Operation
	created map[string]int32 // acknowledged, not acknowledged as deleted
	// pace is each worker's pause between operations (none if zero).
	pace time.Duration
}

func (w *workload) record(client int, in linearizability.Input, call time.Time, out linearizability.Output) {
	w.mu.Lock()
	defer w.mu.Unlock()
	ret := int64(time.Since(w.start))
	if out.Unknown {
		ret = linearizability.PendingForever
	}
	w.history = append(w.history, porcupine.Operation{ClientId: client, Input: in, Call: int64(call.Sub(w.start)), Output: out, Return: ret})
	if out.Unknown && in.Kind == linearizability.DeleteTopic {
		// A delete whose outcome is unknown may have been applied: the
		// topic is no longer owed to anyone.
		delete(w.created, in.Topic)
	}
	if out.Unknown || out.Code != metadatav1.ErrorCode_NONE {
		return
	}
	switch in.Kind {
	case linearizability.CreateTopic, linearizability.CreatePartitions:
		w.created[in.Topic] = in.Count
	case linearizability.DeleteTopic:
		delete(w.created, in.Topic)
	}
}

// acknowledgedWrites counts the writes called and acknowledged within
// [from, to] (times since the workload's start).
func (w *workload) acknowledgedWrites(from, to time.Duration) int {
	w.mu.Lock()
	defer w.mu.Unlock()
	count := 0
	for _, op := range w.history {
		in, out := op.Input.(linearizability.Input), op.Output.(linearizability.Output)
		read := in.Kind == linearizability.DescribeTopic || in.Kind == linearizability.DescribeBroker
		if !read && !out.Unknown && out.Code == metadatav1.ErrorCode_NONE &&
			op.Call >= int64(from) && op.Return <= int64(to) {
			count++
		}
	}
	return count
}

func outputOf(err error) linearizability.Output {
	if err == nil {
		return linearizability.Output{}
	}
	code := wire.ErrorCodeOf(err)
	if code == metadatav1.ErrorCode_NONE || code == metadatav1.ErrorCode_UNKNOWN_OUTCOME ||
		code == metadatav1.ErrorCode_NOT_CONTROLLER || code == metadatav1.ErrorCode_UNAVAILABLE {
		// Transport errors, timeouts, retries exhausted: the write may or
		// may not have been applied.
		return linearizability.Output{Unknown: true}
	}
	return linearizability.Output{Code: code}
}

func (w *workload) run(ctx context.Context, c *client.Client, id int) {
	rng := rand.New(rand.NewPCG(uint64(id), 99))
	var mine []string
	for n := 0; ctx.Err() == nil; n++ {
		opCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		call := time.Now()
		var in linearizability.Input
		var out linearizability.Output
		switch r := rng.IntN(10); {
		case r < 4 || len(mine) == 0:
			name := fmt.Sprintf("w%d-t%d", id, n)
			in = linearizability.Input{Kind: linearizability.CreateTopic, Topic: name, Count: 1 + int32(rng.IntN(3))}
			_, err := c.CreateTopic(opCtx, &metadatav1.CreateTopicRequest{Name: name, Partitions: in.Count, ReplicationFactor: 1})
			out = outputOf(err)
			mine = append(mine, name)
		case r < 5:
			name := mine[rng.IntN(len(mine))]
			in = linearizability.Input{Kind: linearizability.DeleteTopic, Topic: name}
			_, err := c.DeleteTopic(opCtx, &metadatav1.DeleteTopicRequest{Name: name})
			out = outputOf(err)
		case r < 7:
			name := mine[rng.IntN(len(mine))]
			in = linearizability.Input{Kind: linearizability.CreatePartitions, Topic: name, Count: 4 + int32(n%8)}
			_, err := c.CreatePartitions(opCtx, &metadatav1.CreatePartitionsRequest{Topic: name, Count: in.Count})
			out = outputOf(err)
		default:
			name := mine[rng.IntN(len(mine))]
			in = linearizability.Input{Kind: linearizability.DescribeTopic, Topic: name}
			resp, err := c.DescribeTopic(opCtx, &metadatav1.DescribeTopicRequest{Name: name})
			switch {
			case err == nil:
				out = linearizability.Output{Exists: true, Partitions: int32(len(resp.GetPartitions()))}
			case wire.ErrorCodeOf(err) == metadatav1.ErrorCode_UNKNOWN_TOPIC:
				out = linearizability.Output{}
			default:
				cancel()
				continue // an unanswered read did nothing
			}
		}
		cancel()
		w.record(id, in, call, out)
		if w.pace > 0 {
			time.Sleep(w.pace)
		}
	}
}

// TestRealProcessFaults runs three dmqd processes on loopback with Pebble
// directories under a client workload, and kills the leader (SIGKILL), kills
// a follower, pauses the leader past the election timeout (SIGSTOP,
// SIGCONT), isolates the leader by blackholing its peer links, and slows
// the leader's links by a fifth of the election timeout, restarting from
// disk after each kill. Then it kills every process, restarts them all, and
// checks: the history is linearizable, every acknowledged topic is there,
// storage agents' versions never went back, a leader was back within the
// bound after each fault, and writes completed over the slow links.
// `make e2e` runs more rounds (-e2e.rounds).
func TestRealProcessFaults(t *testing.T) {
	h := &harness{t: t, bin: dmqdBinary(t)}
	dir := t.TempDir()
	type servicesFile struct {
		Services struct {
			MetadataServices []ServiceEntry `json:"metadata-services"`
			StorageServices  []ServiceEntry `json:"storage-services"`
		} `json:"services"`
	}
	agentListener, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	for id := uint64(1); id <= 3; id++ {
		p := &proc{id: id, port: freePort(t), dir: filepath.Join(dir, fmt.Sprint("node-", id))}
		p.log, err = os.Create(filepath.Join(dir, fmt.Sprintf("dmqd-%d.log", id)))
		require.NoError(t, err)
		h.procs = append(h.procs, p)
	}
	h.links = map[[2]uint64]*linkProxy{}
	for _, from := range h.procs {
		var file servicesFile
		for _, to := range h.procs {
			url := fmt.Sprintf("http://127.0.0.1:%d", to.port)
			if to != from {
				link := newLinkProxy(t, fmt.Sprintf("127.0.0.1:%d", to.port))
				h.links[[2]uint64{from.id, to.id}] = link
				url = "http://" + link.addr()
			}
			file.Services.MetadataServices = append(file.Services.MetadataServices,
				ServiceEntry{ID: int64(to.id), Host: "127.0.0.1", Port: to.port, URL: url})
		}
		file.Services.StorageServices = []ServiceEntry{{ID: 1, Host: "127.0.0.1", URL: "http://" + agentListener.Addr().String()}}
		data, err := json.Marshal(file)
		require.NoError(t, err)
		from.services = filepath.Join(dir, fmt.Sprintf("services-%d.json", from.id))
		require.NoError(t, os.WriteFile(from.services, data, 0o644))
	}
	var endpoints []string
	for _, p := range h.procs {
		h.start(p)
		endpoints = append(endpoints, fmt.Sprintf("http://127.0.0.1:%d", p.port))
	}
	t.Cleanup(func() {
		for _, p := range h.procs {
			if p.cmd != nil {
				h.kill(p)
			}
		}
	})
	h.client, err = client.New(client.Config{Endpoints: endpoints})
	require.NoError(t, err)
	ctx := context.Background()
	h.waitLeader(ctx, nil, e2eStartBound, "the first start")

	// A storage service that must only ever see its version go forward.
	var versionsMu sync.Mutex
	var versions []int64
	agent, err := client.NewStorageAgent(h.client, client.AgentConfig{BrokerID: 1, Host: "127.0.0.1", Port: 9092, IncarnationID: "e2e",
		HeartbeatInterval: 200 * time.Millisecond, OnUpdate: func(v int64, _ bool, _ *metadatav1.ClusterState) {
			versionsMu.Lock()
			defer versionsMu.Unlock()
			versions = append(versions, v)
		}})
	require.NoError(t, err)
	mux := http.NewServeMux()
	mux.Handle(agent.Handler())
	agentServer := wire.NewHTTPServer(agentListener.Addr().String(), mux)
	go func() { _ = agentServer.Serve(agentListener) }()
	defer agentServer.Close()
	agentCtx, stopAgent := context.WithCancel(ctx)
	defer stopAgent()
	go func() { _ = agent.Run(agentCtx) }()
	require.Eventually(t, func() bool { return agent.Epoch() > 0 }, 10*time.Second, 20*time.Millisecond)

	w := &workload{start: time.Now(), created: map[string]int32{}}
	workCtx, stopWork := context.WithCancel(ctx)
	var workers sync.WaitGroup
	for id := 0; id < 4; id++ {
		workers.Add(1)
		go func() { defer workers.Done(); w.run(workCtx, h.client, id) }()
	}

	recoveries := map[string][]time.Duration{}
	var slowWrites []int
	for round := 0; round < *faultRounds; round++ {
		time.Sleep(300 * time.Millisecond)
		leader, _ := h.waitLeader(ctx, nil, e2eStartBound, "the previous round")
		h.kill(leader)
		_, took := h.waitLeader(ctx, leader, e2eLeaderBound, "SIGKILL of the leader")
		recoveries["SIGKILL leader"] = append(recoveries["SIGKILL leader"], took)
		h.start(leader)

		time.Sleep(300 * time.Millisecond)
		leader, _ = h.waitLeader(ctx, nil, e2eStartBound, "the killed leader's restart")
		follower := h.procs[(slices.Index(h.procs, leader)+1)%len(h.procs)]
		h.kill(follower)
		time.Sleep(300 * time.Millisecond)
		h.start(follower)

		time.Sleep(300 * time.Millisecond)
		leader, _ = h.waitLeader(ctx, nil, e2eStartBound, "the killed follower's restart")
		require.NoError(t, leader.cmd.Process.Signal(syscall.SIGSTOP))
		_, took = h.waitLeader(ctx, leader, e2eLeaderBound, "SIGSTOP of the leader")
		recoveries["SIGSTOP leader"] = append(recoveries["SIGSTOP leader"], took)
		time.Sleep(2 * e2eElectionTimeout)
		require.NoError(t, leader.cmd.Process.Signal(syscall.SIGCONT))

		time.Sleep(300 * time.Millisecond)
		leader, _ = h.waitLeader(ctx, nil, e2eStartBound, "SIGCONT of the stopped leader")
		h.isolate(leader)
		_, took = h.waitLeader(ctx, leader, e2eLeaderBound, "isolating the leader")
		recoveries["isolate leader"] = append(recoveries["isolate leader"], took)
		time.Sleep(2 * e2eElectionTimeout)
		h.heal()

		// The leader's links slow down: it stays the leader, and writes
		// still complete, each taking a few round trips longer.
		time.Sleep(300 * time.Millisecond)
		leader, _ = h.waitLeader(ctx, nil, e2eStartBound, "healing the isolated leader")
		from := time.Since(w.start)
		h.slow(leader, e2eSlowLink)
		time.Sleep(e2eSlowPeriod)
		slowWrites = append(slowWrites, w.acknowledgedWrites(from, time.Since(w.start)))
		h.heal()
	}
	time.Sleep(500 * time.Millisecond)
	stopWork()
	workers.Wait()

	// Everyone down hard, everyone back: nothing acknowledged may be lost.
	for _, p := range h.procs {
		h.kill(p)
	}
	for _, p := range h.procs {
		h.start(p)
	}
	h.waitLeader(ctx, nil, e2eStartBound, "restarting every controller")
	check, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	listed, err := h.client.ListTopics(check, &metadatav1.ListTopicsRequest{})
	require.NoError(t, err)
	present := map[string]bool{}
	for _, topic := range listed.GetTopics() {
		present[topic.GetName()] = true
	}
	w.mu.Lock()
	for name := range w.created {
		if !present[name] {
			for _, op := range w.history {
				if in := op.Input.(linearizability.Input); in.Topic == name {
					t.Logf("%+v -> %+v (call %v, return %v)", in, op.Output, time.Duration(op.Call), time.Duration(op.Return))
				}
			}
		}
		require.True(t, present[name], "acknowledged topic %s was lost", name)
	}
	history := slices.Clone(w.history)
	w.mu.Unlock()
	result, info := linearizability.Check(history, time.Minute)
	if result != porcupine.Ok {
		path := filepath.Join(os.TempDir(), "dmq-e2e-history.html")
		_ = linearizability.Visualize(info, path)
		t.Fatalf("the history of %d operations is %v; see %s", len(history), result, path)
	}
	versionsMu.Lock()
	require.True(t, slices.IsSorted(versions), "the storage service's version went back: %v", versions)
	versionsMu.Unlock()
	var table strings.Builder
	tw := tabwriter.NewWriter(&table, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "fault\tmeasured\ttimes\tmin\tmedian\tmax\n")
	for _, kind := range []string{"SIGKILL leader", "SIGSTOP leader", "isolate leader"} {
		r := recoveries[kind]
		slices.Sort(r)
		for _, d := range r {
			require.Less(t, d, e2eLeaderBound, kind)
		}
		fmt.Fprintf(tw, "%s\tnew leader after\t%d\t%v\t%v\t%v\n", kind, len(r), r[0].Round(time.Millisecond),
			r[len(r)/2].Round(time.Millisecond), r[len(r)-1].Round(time.Millisecond))
	}
	slices.Sort(slowWrites)
	require.Positive(t, slowWrites[0], "no write completed while the leader's links were slow")
	fmt.Fprintf(tw, "leader's links %v slower each way for %v\twrites acknowledged meanwhile\t%d\t%d\t%d\t%d\n", e2eSlowLink, e2eSlowPeriod,
		len(slowWrites), slowWrites[0], slowWrites[len(slowWrites)/2], slowWrites[len(slowWrites)-1])
	_ = tw.Flush()
	t.Logf("%d rounds (each also SIGKILLs a follower), %d operations, linearizable, %d acknowledged topics kept after a full restart\n%s",
		*faultRounds, len(history), len(w.created), table.String())
}
