package main

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime/pprof"
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
const fanoutRounds = 20

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
func fanoutRun(bin, dir string, services int, watch bool) []Result {
	listener, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fail(err)
	}
	base := "http://" + listener.Addr().String()
	var storage []string
	for id := 1; id <= services && !watch; id++ {
		storage = append(storage, fmt.Sprintf(`{"id":%d,"host":"127.0.0.1","port":9092,"url":"%s/s/%d"}`, id, base, id))
	}
	// Plans on join would move replicas at every registration: not what
	// is measured here.
	c := startClusterWith(bin, dir, 3, storage, "--replication.rebalance-on-join=false")
	defer c.stop()
	name := fmt.Sprintf("3 controllers, %d storage services (pushes)", services)
	if watch {
		name = fmt.Sprintf("3 controllers, %d storage services (watching)", services)
	}
	leader := c.leader(-1)
	endpoints := []string{c.url(0), c.url(1), c.url(2)}
	cl, err := client.New(client.Config{Endpoints: endpoints})
	if err != nil {
		fail(err)
	}
	f := &fanoutAgents{reached: make([]atomic.Bool, services)}
	for id := 1; id <= services; id++ {
		agent, err := client.NewStorageAgent(cl, client.AgentConfig{BrokerID: int32(id), Host: "127.0.0.1", Port: int32(9092),
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
			// Spread over the first second, as services started at
			// different times beat at different phases.
			time.Sleep(time.Duration(i) * time.Second / time.Duration(services))
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
				if a.Version() >= sessions.GetMetadataVersion() {
					held++
				}
			}
			if held == services {
				break
			}
		}
		if time.Since(ready) > 3*time.Minute {
			fail(fmt.Errorf("%s: the services did not all register and catch up in 3 minutes", name))
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
	before := cpuTime(pids[leader])
	time.Sleep(idle)
	heartbeatCPU := cpuTime(pids[leader]) - before

	var lat []time.Duration
	errs := 0
	pushes := profiled(endpoints, leader, "fanout", 20*time.Second, func() Result {
		for round := 0; round < fanoutRounds; round++ {
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
	if profileDir != "" {
		heap, err := os.Create(filepath.Join(profileDir, fmt.Sprintf("fanout-%d-%v-load-generator-heap.pprof", services, watch)))
		if err != nil {
			fail(err)
		}
		_ = pprof.WriteHeapProfile(heap)
		heap.Close()
	}
	return []Result{
		pushes,
		{Cluster: name, Name: fmt.Sprintf("heartbeats only (1/s each): leader CPU %.0f%% of a core", 100*heartbeatCPU.Seconds()/idle.Seconds()),
			Operations: services},
	}
}
