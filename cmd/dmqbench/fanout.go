package main

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dmq-project/metadata/client"
	metadatav1 "github.com/dmq-project/metadata/gen/dmq/metadata/v1"
	"github.com/dmq-project/metadata/wire"
)

// fanoutRounds is how many topics the fan-out measurement creates, one at
// a time, each waited for on every storage service.
const fanoutRounds = 100

// fanoutAgents are storage agents (client.StorageAgent, as dmqctl
// storage-agent runs them) in this process, each its own broker with its
// own push endpoint (http://127.0.0.1:port/s/<id>), registering and
// heartbeating once a second like a storage service.
type fanoutAgents struct {
	agents   []*client.StorageAgent
	handlers []http.Handler
	// target is the version the current round waits for; arrived counts
	// the agents holding it, and last is when the last one did.
	target  atomic.Int64
	reached []atomic.Bool
	arrived atomic.Int64
	mu      sync.Mutex
	last    time.Time
}

// ServeHTTP routes /s/<id>/... to agent id's push handler.
func (f *fanoutAgents) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	rest, ok := strings.CutPrefix(r.URL.Path, "/s/")
	id, path, found := strings.Cut(rest, "/")
	n, err := strconv.Atoi(id)
	if !ok || !found || err != nil || n < 1 || n > len(f.agents) {
		http.NotFound(w, r)
		return
	}
	r.URL.Path = "/" + path
	f.handlers[n-1].ServeHTTP(w, r)
}

// applied is agent i's OnUpdate: it notes when the agent first holds the
// round's version, and when the last one does.
func (f *fanoutAgents) applied(i int, version int64) {
	if target := f.target.Load(); target > 0 && version >= target && !f.reached[i].Swap(true) {
		if f.arrived.Add(1) == int64(len(f.agents)) {
			f.mu.Lock()
			f.last = time.Now()
			f.mu.Unlock()
		}
	}
}

// fanoutRun measures the fan-out to services storage services on 3
// controllers, by pushes (each service's URL in services.json) or, with
// watch, by the services' watch streams (no push URLs): the time from a
// CreateTopic's acknowledgement (its commit and apply on the leader) to
// the last service holding its version, over fanoutRounds topics created
// one at a time; and the leader's CPU while the services only heartbeat
// (once a second each).
func fanoutRun(bin, dir string, services int, mode string, rounds int) []Result {
	watch := mode == "watch"
	listener, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fail(err)
	}
	base := "http://" + listener.Addr().String()
	var storage []string
	for id := 1; id <= services && mode == "push"; id++ {
		storage = append(storage, fmt.Sprintf(`{"id":%d,"host":"127.0.0.1","port":9092,"url":"%s/s/%d"}`, id, base, id))
	}
	// Plans on join would move replicas at every registration: not what
	// is measured here.
	c := startClusterWith(bin, dir, 3, storage, "--replication.rebalance-on-join=false")
	defer c.stop()
	name := fmt.Sprintf("3 controllers, %d storage services (%s)", services, map[string]string{
		"push": "pushes", "watch": "watching", "heartbeats": "heartbeating only, so fenced"}[mode])
	leader := c.leader(-1)
	// The leader's own cost with no service: Raft's ticks and heartbeats.
	const idleFor = 5 * time.Second
	leaderPid := strconv.Itoa(c.procs[leader].Process.Pid)
	before := cpuTime(leaderPid)
	time.Sleep(idleFor)
	idleCPU := cpuTime(leaderPid) - before
	endpoints := []string{c.url(0), c.url(1), c.url(2)}
	cl, err := client.New(client.Config{Endpoints: endpoints})
	if err != nil {
		fail(err)
	}
	f := &fanoutAgents{reached: make([]atomic.Bool, services)}
	for id := 1; id <= services; id++ {
		// Each service its own client, so its own connections, as
		// services on their own hosts: ten thousand streams on one
		// connection cost Go's HTTP/2 write scheduler a scan of them all
		// per frame, which no deployment has.
		own, err := client.New(client.Config{Endpoints: endpoints})
		if err != nil {
			fail(err)
		}
		agent, err := client.NewStorageAgent(own, client.AgentConfig{BrokerID: int32(id), Host: "127.0.0.1", Port: int32(9092),
			Rack: fmt.Sprint("rack-", id%3), IncarnationID: fmt.Sprint("bench-", id), Watch: watch,
			OnVersion: func(version int64) { f.applied(id-1, version) }})
		if err != nil {
			fail(err)
		}
		_, handler := agent.Handler()
		f.agents, f.handlers = append(f.agents, agent), append(f.handlers, handler)
	}
	server := wire.NewHTTPServer(listener.Addr().String(), f)
	go func() { _ = server.Serve(listener) }()
	defer server.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	for i, agent := range f.agents {
		go func() {
			// Started 250 a second, as a rolling start would: ten
			// thousand in the same second is a storm of twenty thousand
			// writes (a session and a registration each) that the
			// clients' one-second retries kept from converging (see
			// docs/BENCHMARKS.md). Their heartbeats keep the phases.
			time.Sleep(time.Duration(i) * 4 * time.Millisecond)
			_ = agent.Run(ctx)
		}()
	}

	// Every service registered and holding the controllers' version.
	ready := time.Now()
	for {
		sessions, err := cl.DescribeBrokerSessions(ctx)
		if err == nil && len(sessions.GetSessions()) >= services {
			held := 0
			for _, a := range f.agents {
				if a.Version() >= sessions.GetMetadataVersion() || mode == "heartbeats" {
					held++
				}
			}
			if held == services {
				break
			}
		}
		if time.Since(ready) > 3*time.Minute+time.Duration(services)*4*time.Millisecond {
			registered, held := 0, 0
			if err == nil {
				registered = len(sessions.GetSessions())
			}
			for _, a := range f.agents {
				if a.Version() >= sessions.GetMetadataVersion() {
					held++
				}
			}
			fail(fmt.Errorf("%s: in 3 minutes after the last started, %d of the services registered, and %d hold version %d (the last error: %v)",
				name, registered, held, sessions.GetMetadataVersion(), err))
		}
		time.Sleep(100 * time.Millisecond)
	}
	fmt.Fprintf(os.Stderr, "%s: every service registered and caught up in %v\n", name, time.Since(ready).Round(time.Millisecond))
	time.Sleep(2 * time.Second)

	// Heartbeats only: the controllers' CPU per second.
	pids := make([]string, 3)
	for i := range pids {
		pids[i] = strconv.Itoa(c.procs[i].Process.Pid)
	}
	const idle = 10 * time.Second
	heartbeats := profiled(endpoints, leader, "heartbeats", idle, func() Result {
		before := cpuTime(pids[leader])
		time.Sleep(idle)
		used := cpuTime(pids[leader]) - before
		perHeartbeat := float64((used - idleCPU*idle/idleFor).Microseconds()) / float64(services) / idle.Seconds()
		return Result{Cluster: name, Operations: services,
			Name: fmt.Sprintf("heartbeats only (1/s each, on streams): leader CPU %.0f%% of a core (%.0f%% with no service), %.0f µs per heartbeat",
				100*used.Seconds()/idle.Seconds(), 100*idleCPU.Seconds()/idleFor.Seconds(), perHeartbeat)}
	})
	if rounds == 0 {
		return []Result{heartbeats}
	}

	var lat []time.Duration
	errs := 0
	pushes := profiled(endpoints, leader, "fanout", 20*time.Second, func() Result {
		for round := 0; round < rounds; round++ {
			for i := range f.reached {
				f.reached[i].Store(false)
			}
			f.arrived.Store(0)
			// The version this topic will get is not known before it is
			// acknowledged: agents are judged against the next version the
			// controllers' state can have (the current + 1), which is the
			// topic's unless a heartbeat-driven change (a fence) came first.
			sessions, err := cl.DescribeBrokerSessions(ctx)
			if err != nil {
				errs++
				continue
			}
			f.target.Store(sessions.GetMetadataVersion() + 1)
			call, done := context.WithTimeout(ctx, 10*time.Second)
			resp, err := cl.CreateTopic(call, &metadatav1.CreateTopicRequest{Name: fmt.Sprintf("fanout-%d-%03d", services, round),
				Partitions: 1, ReplicationFactor: 3})
			done()
			acknowledged := time.Now()
			if err != nil || resp.GetMetadataVersion() != sessions.GetMetadataVersion()+1 {
				errs++
				continue
			}
			deadline := time.Now().Add(10 * time.Second)
			for f.arrived.Load() < int64(services) && time.Now().Before(deadline) {
				time.Sleep(100 * time.Microsecond)
			}
			if f.arrived.Load() < int64(services) {
				fmt.Fprintf(os.Stderr, "%s: round %d: %d of %d services hold version %d after 10 s\n", name, round, f.arrived.Load(), services, f.target.Load())
				errs++
				continue
			}
			f.mu.Lock()
			last := f.last
			f.mu.Unlock()
			lat = append(lat, max(0, last.Sub(acknowledged)))
			if os.Getenv("DMQBENCH_VERBOSE") != "" {
				fmt.Fprintf(os.Stderr, "round %d: %v\n", round, last.Sub(acknowledged))
			}
		}
		f.target.Store(0)
		slices.Sort(lat)
		return Result{Cluster: name, Name: "CreateTopic acknowledged to the last service holding it", Operations: len(lat),
			P50Ms: ms(percentile(lat, 0.5)), P99Ms: ms(percentile(lat, 0.99)), Errors: errs}
	})
	return []Result{pushes, heartbeats}
}
