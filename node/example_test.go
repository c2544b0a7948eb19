package node_test

import (
	"fmt"
	"math/rand/v2"
	"time"

	metadatav1 "github.com/dmq-project/metadata/gen/dmq/metadata/v1"
	"github.com/dmq-project/metadata/node"
	"github.com/dmq-project/metadata/statemachine"
	"github.com/dmq-project/metadata/storage"
	"go.etcd.io/raft/v3/raftpb"
)

// exampleEnv is the outside world of one controller: the simulator and the
// production runner (node/runner) each provide their own.
type exampleEnv struct {
	now time.Time
	rng *rand.Rand
}

func (e *exampleEnv) Send([]*raftpb.Message)           {} // a lone controller has no peers
func (e *exampleEnv) SetPeer(uint64, string)           {}
func (e *exampleEnv) RemovePeer(uint64)                {}
func (e *exampleEnv) Now() time.Time                   { return e.now }
func (e *exampleEnv) Uint64() uint64                   { return e.rng.Uint64() }
func (e *exampleEnv) Protocol(int32) node.PushProtocol { return node.PushNone }
func (e *exampleEnv) Push(int32, node.Push)            {}

// The event loop a driver runs: it ticks the node at a fixed period, hands
// it messages from peers (Step) and reports from its environment, and after
// every input calls HandleReady while HasReady says there is work. The node
// never blocks and never runs on its own: requests complete through their
// done callbacks, from inside HandleReady, once their records are committed
// and applied.
func Example() {
	env := &exampleEnv{now: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC), rng: rand.New(rand.NewPCG(1, 2))}
	store, err := storage.OpenMem(storage.NewDisk())
	if err != nil {
		panic(err)
	}
	// A data directory is formatted once; a founding voter then founds the
	// cluster on it.
	identity, err := node.Format(store, "example-cluster", 1, env)
	if err != nil {
		panic(err)
	}
	if err := node.Bootstrap(store, []node.Peer{{ID: 1, URL: "http://127.0.0.1:9090", DirectoryID: identity.DirectoryID}}); err != nil {
		panic(err)
	}
	n, err := node.New(node.Config{ID: 1, ElectionTicks: 10, HeartbeatTicks: 1, RequestTimeoutTicks: 30,
		SessionTimeout: 3 * time.Second}, store, node.Env{Transport: env, Clock: env, Rand: env, Pusher: env})
	if err != nil {
		panic(err)
	}

	drain := func() {
		for n.HasReady() {
			if err := n.HandleReady(); err != nil {
				panic(err) // a storage failure: the process must stop
			}
		}
	}
	tick := func() {
		env.now = env.now.Add(100 * time.Millisecond)
		n.Tick()
		drain()
	}
	for !n.IsActive() {
		tick()
	}
	fmt.Println("active controller:", n.ID(), "term:", n.Term())

	// await ticks the node until a request's done callback has run.
	await := func(request func(done func(node.Outcome))) node.Outcome {
		var outcome *node.Outcome
		request(func(o node.Outcome) { outcome = &o })
		for outcome == nil {
			tick()
		}
		return *outcome
	}
	o := await(func(done func(node.Outcome)) {
		n.CreateTopic(&metadatav1.CreateTopicRequest{Name: "orders", Partitions: 3, ReplicationFactor: 1}, done)
	})
	fmt.Println("create orders with no broker:", o.Err.GetCode())
	o = await(func(done func(node.Outcome)) {
		n.RegisterBroker(&metadatav1.RegisterBrokerRequest{Id: 1, Host: "storage-1", Port: 9092, IncarnationId: "a"}, done)
	})
	fmt.Println("register broker 1:", o.Err.GetCode(), "at version", o.Version)
	o = await(func(done func(node.Outcome)) {
		n.CreateTopic(&metadatav1.CreateTopicRequest{Name: "orders", Partitions: 3, ReplicationFactor: 1}, done)
	})
	fmt.Println("create orders:", o.Err.GetCode(), "at version", o.Version)

	n.Read(func(sm *statemachine.StateMachine, err *statemachine.Error) {
		fmt.Println("linearizable read:", err.GetCode(), "topics", len(sm.ClusterState().GetTopics()), "version", sm.Version())
	})
	drain()
	// Output:
	// active controller: 1 term: 2
	// create orders with no broker: INVALID_REPLICATION_FACTOR
	// register broker 1: NONE at version 5
	// create orders: NONE at version 6
	// linearizable read: NONE topics 1 version 6
}
