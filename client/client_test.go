package client_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/dmq-project/metadata/client"
	metadatav1 "github.com/dmq-project/metadata/gen/dmq/metadata/v1"
	"github.com/dmq-project/metadata/rpc/rpctest"
	"github.com/dmq-project/metadata/wire"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// followerFirst orders the endpoints so that the client starts at a
// follower and must follow the "not the leader" hint.
func followerFirst(cluster rpctest.Cluster, leader *rpctest.Controller) []string {
	endpoints := []string{}
	for _, tc := range cluster {
		if tc.ID != leader.ID {
			endpoints = append(endpoints, tc.URL())
		}
	}
	return append(endpoints, leader.URL())
}

func TestClientFollowsTheLeaderAndRetriesOnce(t *testing.T) {
	cluster := rpctest.Start(t, 3, nil)
	leader := cluster.WaitLeader(t)
	c, err := client.New(client.Config{Endpoints: followerFirst(cluster, leader)})
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	_, err = c.RegisterBroker(ctx, &metadatav1.RegisterBrokerRequest{Id: 1, Host: "localhost", Port: 9092})
	require.NoError(t, err)
	session, err := c.OpenSession(ctx)
	require.NoError(t, err)
	id := &metadatav1.RequestId{SessionId: session.GetSessionId(), Sequence: 1}
	first, err := c.CreateTopic(ctx, &metadatav1.CreateTopicRequest{Name: "orders", Partitions: 2, RequestId: id})
	require.NoError(t, err)
	// The same request id again: the first result, not "already exists".
	again, err := c.CreateTopic(ctx, &metadatav1.CreateTopicRequest{Name: "orders", Partitions: 2, RequestId: id})
	require.NoError(t, err)
	assert.Equal(t, first.GetMetadataVersion(), again.GetMetadataVersion())
	// A new request id is a new request.
	_, err = c.CreateTopic(ctx, &metadatav1.CreateTopicRequest{Name: "orders", Partitions: 2})
	assert.Equal(t, metadatav1.ErrorCode_TOPIC_ALREADY_EXISTS, wire.ErrorCodeOf(err))

	// The leader goes away: the client finds the next one.
	leader.Stop(t)
	_, err = c.CreateTopic(ctx, &metadatav1.CreateTopicRequest{Name: "after-failover", Partitions: 1})
	require.NoError(t, err)
	described, err := c.DescribeTopic(ctx, &metadatav1.DescribeTopicRequest{Name: "orders"})
	require.NoError(t, err)
	assert.Len(t, described.GetPartitions(), 2)

	// With every controller down, the error says what to check.
	for _, tc := range cluster {
		tc.Stop(t)
	}
	short, cancelShort := context.WithTimeout(context.Background(), time.Second)
	defer cancelShort()
	_, err = c.ListTopics(short, &metadatav1.ListTopicsRequest{})
	require.ErrorIs(t, err, client.ErrNoLeader)
	assert.Contains(t, err.Error(), "no leader among 3 endpoints")
	assert.Contains(t, err.Error(), "is the cluster up?")
}

// A controller that accepts connections and never answers (paused, or cut
// off behind a proxy) must not hold every later call: a call whose
// deadline ends while it waits on such a controller leaves the next call
// to start at the next endpoint. (Found by the simulator, which runs this
// logic: storage agents heartbeat within three intervals, less than one
// attempt's timeout, and stayed fenced forever.)
func TestCallsMoveOnFromAControllerThatNeverAnswers(t *testing.T) {
	silent, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer silent.Close()
	go func() {
		for {
			conn, err := silent.Accept()
			if err != nil {
				return
			}
			defer conn.Close()
		}
	}()
	cluster := rpctest.Start(t, 1, nil)
	cluster.WaitLeader(t)
	c, err := client.New(client.Config{Endpoints: []string{"http://" + silent.Addr().String(), cluster[0].URL()}})
	require.NoError(t, err)

	call := func() error {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_, err := c.ListBrokers(ctx, &metadatav1.ListBrokersRequest{})
		return err
	}
	require.ErrorIs(t, call(), client.ErrNoLeader, "the first call waits on the silent controller until its deadline")
	require.NoError(t, call(), "the next call starts at the next endpoint")
}

// A retried registration is answered from the controllers' session table
// with the epoch its application gave, whatever happened to the broker
// since: a storage agent must not adopt another registration's epoch (or
// none) from the live state.
func TestRetriedRegistrationAnswersItsOwnEpoch(t *testing.T) {
	cluster := rpctest.Start(t, 1, nil)
	cluster.WaitLeader(t)
	c, err := client.New(client.Config{Endpoints: []string{cluster[0].URL()}})
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	session, err := c.OpenSession(ctx)
	require.NoError(t, err)
	register := &metadatav1.RegisterBrokerRequest{Id: 5, Host: "localhost", Port: 9092, IncarnationId: "a",
		RequestId: &metadatav1.RequestId{ClientId: "agent", SessionId: session.GetSessionId(), Sequence: 1}}
	first, err := c.RegisterBroker(ctx, register)
	require.NoError(t, err)
	require.Positive(t, first.GetBroker().GetBrokerEpoch())

	_, err = c.UnregisterBroker(ctx, &metadatav1.UnregisterBrokerRequest{Id: 5})
	require.NoError(t, err)
	again, err := c.RegisterBroker(ctx, register)
	require.NoError(t, err)
	assert.Equal(t, first.GetBroker().GetBrokerEpoch(), again.GetBroker().GetBrokerEpoch(), "the retry's answer names its own registration")
}

// TestStorageAgentLifecycle: the agent registers and is unfenced, receives
// a push after a topic is created, is fenced after falling silent past the
// session timeout, and is unfenced when it comes back and catches up.
func TestStorageAgentLifecycle(t *testing.T) {
	listener, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	agentAddr := listener.Addr().String()
	require.NoError(t, listener.Close())

	cluster := rpctest.Start(t, 3, func(c *rpctest.Controller) {
		c.SessionTimeout = 1500 * time.Millisecond
		c.PushURLs = map[int32]string{7: "http://" + agentAddr}
	})
	leader := cluster.WaitLeader(t)
	c, err := client.New(client.Config{Endpoints: followerFirst(cluster, leader)})
	require.NoError(t, err)

	var mu sync.Mutex
	var versions []int64
	var fulls []bool
	agent, err := client.NewStorageAgent(c, client.AgentConfig{BrokerID: 7, Host: "localhost", Port: 9092, Rack: "r1",
		IncarnationID: "agent-1", HeartbeatInterval: 100 * time.Millisecond,
		OnUpdate: func(version int64, full bool, _ *metadatav1.ClusterState) {
			mu.Lock()
			defer mu.Unlock()
			versions = append(versions, version)
			fulls = append(fulls, full)
		}})
	require.NoError(t, err)
	listener, err = net.Listen("tcp", agentAddr)
	require.NoError(t, err)
	mux := http.NewServeMux()
	mux.Handle(agent.Handler())
	server := wire.NewHTTPServer(agentAddr, mux)
	go func() { _ = server.Serve(listener) }()
	defer server.Close()

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { _ = agent.Run(ctx) }()

	require.Eventually(t, func() bool { return agent.Epoch() > 0 }, 10*time.Second, 20*time.Millisecond, "registered")
	broker := func() *metadatav1.Broker {
		resp, err := c.DescribeBroker(ctx, &metadatav1.DescribeBrokerRequest{Id: 7})
		require.NoError(t, err)
		return resp.GetBroker()
	}
	assert.True(t, broker().GetIsAlive())

	_, err = c.CreateTopic(ctx, &metadatav1.CreateTopicRequest{Name: "events", Partitions: 3})
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		for _, topic := range agent.State().GetTopics() {
			if topic.GetName() == "events" {
				return true
			}
		}
		return false
	}, 10*time.Second, 20*time.Millisecond, "the push with the new topic arrives")

	agent.SetSilent(true)
	require.Eventually(t, func() bool { return broker().GetFenced() }, 10*time.Second, 50*time.Millisecond, "fenced after silence")
	// The fence is a change the silent service missed: it lags.
	mu.Lock()
	beforeReturn := len(versions)
	mu.Unlock()
	agent.SetSilent(false)
	require.Eventually(t, func() bool { return !broker().GetFenced() }, 10*time.Second, 50*time.Millisecond, "unfenced after it returns")
	require.Eventually(t, func() bool {
		state, err := c.GetClusterMetadata(ctx, &metadatav1.GetClusterMetadataRequest{})
		return err == nil && agent.Version() == state.GetState().GetMetadataVersion()
	}, 10*time.Second, 20*time.Millisecond, "caught up")

	// A controlled shutdown: confirmed by the controllers, which mark the
	// broker as shutting down (its leaderships move away).
	shutdownCtx, cancelShutdown := context.WithTimeout(ctx, 10*time.Second)
	defer cancelShutdown()
	require.NoError(t, agent.ShutDown(shutdownCtx))
	assert.True(t, broker().GetInControlledShutdown() || broker().GetFenced(), "the controllers know it is going away")

	mu.Lock()
	defer mu.Unlock()
	require.Greater(t, len(versions), beforeReturn, "pushes resumed after the return")
	assert.False(t, fulls[beforeReturn], "the lagging service is sent a delta from its version, not the full state")
	// Never backwards. A version may come twice: a heartbeat sent before a
	// push landed reports the older version, and the controller, which must
	// trust heartbeats (a restarted service starts from nothing), pushes
	// again.
	require.True(t, slices.IsSorted(versions), "versions only move forward: %v", versions)
}

// A storage service the controllers cannot push to watches instead: it
// registers, follows the watch stream, reports the version it watched to
// (which unfences it), falls behind while silent, and catches up from its
// own version after.
func TestWatchingStorageAgentLifecycle(t *testing.T) {
	cluster := rpctest.Start(t, 3, func(c *rpctest.Controller) { c.SessionTimeout = 1500 * time.Millisecond })
	leader := cluster.WaitLeader(t)
	c, err := client.New(client.Config{Endpoints: followerFirst(cluster, leader)})
	require.NoError(t, err)
	var mu sync.Mutex
	var versions []int64
	agent, err := client.NewStorageAgent(c, client.AgentConfig{BrokerID: 8, Host: "localhost", Port: 9092, Rack: "r1",
		IncarnationID: "agent-8", HeartbeatInterval: 100 * time.Millisecond, Watch: true,
		OnUpdate: func(version int64, _ bool, _ *metadatav1.ClusterState) {
			mu.Lock()
			defer mu.Unlock()
			versions = append(versions, version)
		}})
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { _ = agent.Run(ctx) }()

	broker := func() *metadatav1.Broker {
		resp, err := c.DescribeBroker(ctx, &metadatav1.DescribeBrokerRequest{Id: 8})
		if err != nil {
			return nil
		}
		return resp.GetBroker()
	}
	require.Eventually(t, func() bool { b := broker(); return b != nil && !b.GetFenced() }, 10*time.Second, 20*time.Millisecond,
		"unfenced on the version it watched to")
	_, err = c.CreateTopic(ctx, &metadatav1.CreateTopicRequest{Name: "events", Partitions: 3})
	require.NoError(t, err)
	hasEvents := func() bool {
		for _, topic := range agent.State().GetTopics() {
			if topic.GetName() == "events" {
				return true
			}
		}
		return false
	}
	require.Eventually(t, hasEvents, 10*time.Second, 20*time.Millisecond, "the watch brings the new topic")

	agent.SetSilent(true)
	require.Eventually(t, func() bool { b := broker(); return b != nil && b.GetFenced() }, 10*time.Second, 50*time.Millisecond, "fenced after silence")
	// The fence is a change the silent service dropped: its watch must
	// start again from the version it holds.
	agent.SetSilent(false)
	require.Eventually(t, func() bool { b := broker(); return b != nil && !b.GetFenced() }, 10*time.Second, 50*time.Millisecond, "unfenced after it returns")
	require.Eventually(t, func() bool {
		state, err := c.GetClusterMetadata(ctx, &metadatav1.GetClusterMetadataRequest{})
		return err == nil && agent.Version() == state.GetState().GetMetadataVersion()
	}, 10*time.Second, 20*time.Millisecond, "caught up")
	mu.Lock()
	defer mu.Unlock()
	require.True(t, slices.IsSorted(versions), "versions only move forward: %v", versions)
}

// Many watchers of one controller, at different versions, each get every
// change as a chain of updates from the version they held (the controller
// serves them together, one node call per round), and a watcher that goes
// away holds up none of the others.
func TestManyWatchersEachFollowEveryChange(t *testing.T) {
	cluster := rpctest.Start(t, 1, nil)
	cluster.WaitLeader(t)
	c, err := client.New(client.Config{Endpoints: cluster.URLs()})
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for id := int32(1); id <= 3; id++ {
		_, err := c.RegisterBroker(ctx, &metadatav1.RegisterBrokerRequest{Id: id, Host: "localhost", Port: 9092})
		require.NoError(t, err)
	}
	state, err := c.GetClusterMetadata(ctx, &metadatav1.GetClusterMetadataRequest{})
	require.NoError(t, err)
	start := state.GetState().GetMetadataVersion()

	const watchers = 60
	final := make(chan int64, watchers)
	var wg sync.WaitGroup
	for i := range watchers {
		since := []int64{0, start - 2, start}[i%3]
		wg.Add(1)
		go func() {
			defer wg.Done()
			watchCtx, stop := context.WithCancel(ctx)
			defer stop()
			var held int64 = -1
			topics := map[string]bool{}
			_ = c.Watch(watchCtx, since, func(u *metadatav1.WatchMetadataResponse) error {
				if d := u.GetDelta(); d != nil {
					assert.True(t, d.GetFromVersion() == held || (held == -1 && d.GetFromVersion() == since),
						"watcher %d from %d: a delta from %d after %d", i, since, d.GetFromVersion(), held)
					held = d.GetToVersion()
					for _, topic := range d.GetUpsertedTopics() {
						topics[topic.GetName()] = true
					}
				} else {
					held = u.GetFullState().GetMetadataVersion()
					for _, topic := range u.GetFullState().GetTopics() {
						topics[topic.GetName()] = true
					}
				}
				if i%10 == 9 {
					return errors.New("this watcher goes away after its first update")
				}
				if len(topics) == 5 {
					final <- held
					stop()
				}
				return nil
			})
		}()
	}
	var last int64
	for i := range 5 {
		resp, err := c.CreateTopic(ctx, &metadatav1.CreateTopicRequest{Name: fmt.Sprint("t", i), Partitions: 1})
		require.NoError(t, err)
		last = resp.GetMetadataVersion()
	}
	wg.Wait()
	close(final)
	got := 0
	for held := range final {
		assert.GreaterOrEqual(t, held, last)
		got++
	}
	assert.Equal(t, watchers-watchers/10, got, "every watcher that stayed saw the five topics")
}

func TestEndpointsFromServices(t *testing.T) {
	endpoints, err := client.EndpointsFromServices("../config/services.json")
	require.NoError(t, err)
	assert.Equal(t, []string{"http://localhost:9091", "http://localhost:9092", "http://localhost:9093"}, endpoints)
	_, err = client.EndpointsFromServices("absent.json")
	assert.ErrorIs(t, err, os.ErrNotExist)
}
