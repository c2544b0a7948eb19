package node

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	metadatav1 "github.com/dmq-project/metadata/gen/dmq/metadata/v1"
	"github.com/dmq-project/metadata/seedwire"
	"github.com/dmq-project/metadata/statemachine"
	"github.com/dmq-project/metadata/storage"
	"github.com/stretchr/testify/require"
	"go.etcd.io/raft/v3/raftpb"
)

// cluster steps several nodes by hand: messages queue in a mailbox and move
// only when the test processes them, ticks happen only when the test ticks,
// and the clock moves only with the ticks. Nodes run on simulated disks, so
// a crash loses exactly what was not synced.
type cluster struct {
	t     *testing.T
	cfg   Config
	nodes map[uint64]*Node
	disks map[uint64]*storage.Disk
	now   time.Time
	// nowStep advances now at each reading of the clock (0: it stands
	// still, as the simulator's does within an event).
	nowStep time.Duration
	rng     *rand.Rand
	queue   []*raftpb.Message
	pushes  []pushCall
	// cut drops messages between the two sides (both directions).
	cut map[[2]uint64]bool
	// tickDuration is the clock time one tick advances.
	tickDuration time.Duration
	// holdWork keeps the work nodes hand their Worker in held until
	// releaseWork; otherwise it runs at once.
	holdWork bool
	held     []heldWork
	// onSend, if set, sees each message as its sender hands it over.
	onSend func(from *Node, m *raftpb.Message)
	// drop, if set, loses the messages it returns true for.
	drop func(m *raftpb.Message) bool
	// founders are the founding voters, with their directories.
	founders []Peer
	// events are every node's events, in order.
	events []nodeEvent
	// seedBrokers take pushes in the seed's protocol.
	seedBrokers map[int32]bool
}

type nodeEvent struct {
	node uint64
	Event
}

type pushCall struct {
	from    uint64
	broker  int32
	version int64
	request *metadatav1.PushMetadataRequest
	seed    []seedwire.MetadataUpdateRequest
}

// seedTypes are the types of a seed push's updates.
func (p pushCall) seedTypes() []seedwire.UpdateType {
	var out []seedwire.UpdateType
	for _, u := range p.seed {
		out = append(out, u.UpdateType)
	}
	return out
}

type clusterEnv struct {
	c  *cluster
	id uint64
}

func (e clusterEnv) Send(messages []*raftpb.Message) {
	if e.c.onSend != nil {
		for _, m := range messages {
			e.c.onSend(e.c.nodes[e.id], m)
		}
	}
	e.c.queue = append(e.c.queue, messages...)
}
func (e clusterEnv) SetPeer(uint64, string) {}
func (e clusterEnv) RemovePeer(uint64)      {}
func (e clusterEnv) Now() time.Time {
	// nowStep stands for work that takes time: each reading of the clock
	// finds it later.
	e.c.now = e.c.now.Add(e.c.nowStep)
	return e.c.now
}
func (e clusterEnv) Uint64() uint64 { return e.c.rng.Uint64() }
func (e clusterEnv) Protocol(broker int32) PushProtocol {
	if e.c.seedBrokers[broker] {
		return PushSeed
	}
	return PushConnect
}
func (e clusterEnv) Event(ev Event) {
	e.c.events = append(e.c.events, nodeEvent{node: e.id, Event: ev})
}
func (e clusterEnv) Push(broker int32, push Push) {
	e.c.pushes = append(e.c.pushes, pushCall{from: e.id, broker: broker, version: push.Version, request: push.Request, seed: push.SeedUpdates})
}

func peerURL(id uint64) string { return fmt.Sprintf("http://controller-%d:9090", id) }

func newCluster(t *testing.T, size int, tweak func(*Config)) *cluster {
	return newClusterFoundedBy(t, size, tweak, Bootstrap)
}

// newClusterFoundedBy is newCluster with found in Bootstrap's place.
func newClusterFoundedBy(t *testing.T, size int, tweak func(*Config), found func(storage.Storage, []Peer) error) *cluster {
	c := &cluster{
		t: t, nodes: map[uint64]*Node{}, disks: map[uint64]*storage.Disk{},
		now: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC), rng: rand.New(rand.NewPCG(7, 11)),
		cut: map[[2]uint64]bool{}, tickDuration: 100 * time.Millisecond,
	}
	c.cfg = Config{ElectionTicks: 10, HeartbeatTicks: 1, SessionTimeout: 3 * time.Second, RequestTimeoutTicks: 30,
		PushBackoffMin: 200 * time.Millisecond, PushBackoffMax: time.Second}
	if tweak != nil {
		tweak(&c.cfg)
	}
	var peers []Peer
	stores := map[uint64]storage.Storage{}
	for id := uint64(1); id <= uint64(size); id++ {
		c.disks[id] = storage.NewDisk()
		store, err := storage.OpenMem(c.disks[id])
		require.NoError(t, err)
		identity, err := Format(store, clusterID, id, c.rng)
		require.NoError(t, err)
		stores[id] = store
		peers = append(peers, Peer{ID: id, URL: peerURL(id), DirectoryID: identity.DirectoryID})
	}
	c.founders = peers
	for id := uint64(1); id <= uint64(size); id++ {
		require.NoError(t, found(stores[id], peers))
		c.start(id, stores[id])
	}
	return c
}

const clusterID = "test-cluster"

// directory is the directory id a node's disk was formatted with.
func (c *cluster) directory(id uint64) uint64 { return c.nodes[id].directoryID }

func (c *cluster) start(id uint64, store storage.Storage) {
	cfg := c.cfg
	cfg.ID = id
	env := clusterEnv{c: c, id: id}
	n, err := New(cfg, store, Env{Transport: env, Clock: env, Rand: env, Pusher: env, Events: env, Worker: env})
	require.NoError(c.t, err)
	c.nodes[id] = n
}

type heldWork struct {
	node *Node
	work func() func()
}

// Run is Worker: held, or run at once.
func (e clusterEnv) Run(work func() func()) {
	if e.c.holdWork {
		e.c.held = append(e.c.held, heldWork{node: e.c.nodes[e.id], work: work})
		return
	}
	work()()
}

// releaseWork runs the held work, oldest first, each result on its node
// (if that node still runs), then processes.
func (c *cluster) releaseWork() {
	for len(c.held) > 0 {
		c.runHeld(0)
	}
	c.process()
}

// runHeld runs the i-th held work and its result, and processes nothing.
func (c *cluster) runHeld(i int) {
	h := c.held[i]
	c.held = slices.Delete(c.held, i, i+1)
	for _, n := range c.nodes { // determinism: an existence test
		if n == h.node {
			h.work()()
		}
	}
}

// addEmpty starts a node with an empty, newly formatted store, as a new
// member does (and as a member whose disk was lost does).
func (c *cluster) addEmpty(id uint64) {
	c.disks[id] = storage.NewDisk()
	store, err := storage.OpenMem(c.disks[id])
	require.NoError(c.t, err)
	_, err = Format(store, clusterID, id, c.rng)
	require.NoError(c.t, err)
	c.start(id, store)
}

func (c *cluster) crash(id uint64) {
	c.disks[id].Crash(0)
	delete(c.nodes, id)
}

func (c *cluster) restart(id uint64) {
	store, err := storage.OpenMem(c.disks[id])
	require.NoError(c.t, err)
	c.start(id, store)
}

func (c *cluster) ids() []uint64 { return sortedKeys(c.nodes) }

func (c *cluster) partition(a, b uint64) { c.cut[[2]uint64{min(a, b), max(a, b)}] = true }
func (c *cluster) isolate(id uint64) {
	for other := uint64(1); other <= 9; other++ {
		if other != id {
			c.partition(id, other)
		}
	}
}
func (c *cluster) heal() { c.cut = map[[2]uint64]bool{} }

// process runs Ready handling and message delivery until nothing moves.
func (c *cluster) process() {
	for round := 0; round < 1000; round++ {
		moved := false
		for _, id := range c.ids() {
			n := c.nodes[id]
			for n.HasReady() {
				require.NoError(c.t, n.HandleReady())
				moved = true
			}
		}
		queue := c.queue
		c.queue = nil
		if round > 995 {
			for _, m := range queue {
				c.t.Logf("still moving in round %d: %v %d->%d term %d index %d", round, m.GetType(), m.GetFrom(), m.GetTo(), m.GetTerm(), m.GetIndex())
			}
		}
		for _, m := range queue {
			moved = true
			to, ok := c.nodes[m.GetTo()]
			if !ok || (c.drop != nil && c.drop(m)) || c.cut[[2]uint64{min(m.GetFrom(), m.GetTo()), max(m.GetFrom(), m.GetTo())}] {
				if m.GetType() == raftpb.MsgSnap {
					if from, ok := c.nodes[m.GetFrom()]; ok {
						from.ReportSnapshot(m.GetTo(), false)
					}
				}
				continue
			}
			if err := to.Step(m); !errors.Is(err, ErrNotMember) && !errors.Is(err, ErrMayNotVote) && !errors.Is(err, ErrLostLog) {
				require.NoError(c.t, err)
			}
			if m.GetType() == raftpb.MsgSnap {
				if from, ok := c.nodes[m.GetFrom()]; ok {
					from.ReportSnapshot(m.GetTo(), true)
				}
			}
		}
		if !moved {
			return
		}
	}
	c.t.Fatal("the cluster did not quiesce in 1000 rounds")
}

// tick advances every live node (and the clock) by k ticks, processing
// after each.
func (c *cluster) tick(k int) {
	for i := 0; i < k; i++ {
		c.now = c.now.Add(c.tickDuration)
		for _, id := range c.ids() {
			c.nodes[id].Tick()
		}
		c.process()
	}
}

// leader is the node that leads the highest term, 0 if none.
func (c *cluster) leader() uint64 {
	var leader, term uint64
	for _, id := range c.ids() {
		if n := c.nodes[id]; n.IsLeader() {
			require.NotEqual(c.t, term, n.Term(), "two leaders in term %d", term)
			if n.Term() > term {
				leader, term = id, n.Term()
			}
		}
	}
	return leader
}

// elect makes id campaign and win, and waits until it is active.
func (c *cluster) elect(id uint64) *Node {
	require.NoError(c.t, c.nodes[id].Campaign())
	c.process()
	for i := 0; i < 50 && !c.nodes[id].IsActive(); i++ {
		c.tick(1)
	}
	require.True(c.t, c.nodes[id].IsActive(), "node %d did not become the active controller", id)
	return c.nodes[id]
}

// waitLeader ticks until some node is the active controller.
func (c *cluster) waitLeader(ticksMax int) *Node {
	for i := 0; i < ticksMax; i++ {
		if id := c.leader(); id != 0 && c.nodes[id].IsActive() {
			return c.nodes[id]
		}
		c.tick(1)
	}
	c.t.Fatalf("no active controller after %d ticks", ticksMax)
	return nil
}

// waitNewLeader ticks until a node other than old is the active
// controller (old may still believe it leads, cut off).
func (c *cluster) waitNewLeader(old uint64, ticksMax int) *Node {
	for i := 0; i < ticksMax; i++ {
		for _, id := range c.ids() {
			if id != old && c.nodes[id].IsActive() {
				return c.nodes[id]
			}
		}
		c.tick(1)
	}
	c.t.Fatalf("no new active controller after %d ticks", ticksMax)
	return nil
}

// do runs a request and processes until it completes.
func (c *cluster) do(request func(done func(Outcome))) Outcome {
	var out *Outcome
	request(func(o Outcome) { out = &o })
	for i := 0; i < 100 && out == nil; i++ {
		c.process()
		if out == nil {
			c.tick(1)
		}
	}
	require.NotNil(c.t, out, "the request never completed")
	return *out
}

func (c *cluster) read(n *Node, query func(*statemachine.StateMachine)) *statemachine.Error {
	var done bool
	var result *statemachine.Error
	n.Read(func(sm *statemachine.StateMachine, err *statemachine.Error) {
		done, result = true, err
		if err == nil {
			query(sm)
		}
	})
	for i := 0; i < 100 && !done; i++ {
		c.process()
		if !done {
			c.tick(1)
		}
	}
	require.True(c.t, done, "the read never completed")
	return result
}

// converged checks that every live node applied the same state.
func (c *cluster) requireConverged() {
	c.t.Helper()
	var hash uint64
	var applied uint64
	for i, id := range c.ids() {
		sm := c.nodes[id].StateMachine()
		if i == 0 {
			hash, applied = sm.Hash(), sm.AppliedIndex()
			continue
		}
		require.Equal(c.t, applied, sm.AppliedIndex(), "node %d applied index", id)
		require.Equal(c.t, hash, sm.Hash(), "node %d state hash", id)
	}
}

func registerReq(id int32) *metadatav1.RegisterBrokerRequest {
	return &metadatav1.RegisterBrokerRequest{Id: id, Host: fmt.Sprintf("broker-%d.local", id), Port: 9092, Rack: "r1", IncarnationId: "inc-1"}
}

func createTopicReq(name string, partitions, rf int32) *metadatav1.CreateTopicRequest {
	return &metadatav1.CreateTopicRequest{Name: name, Partitions: partitions, ReplicationFactor: rf}
}

// openSession opens a client session on the leader and returns its id.
func (c *cluster) openSession(leader *Node) uint64 {
	c.t.Helper()
	out := c.do(func(done func(Outcome)) { leader.OpenSession(&metadatav1.OpenSessionRequest{ClientId: "test"}, done) })
	require.Nil(c.t, out.Err)
	return uint64(out.Version)
}

func (c *cluster) pushesTo(broker int32) []pushCall {
	var out []pushCall
	for _, p := range c.pushes {
		if p.broker == broker {
			out = append(out, p)
		}
	}
	return out
}

func voters(n *Node) []uint64 {
	v := slices.Clone(n.confState.GetVoters())
	slices.Sort(v)
	return v
}

// wipe loses a node's disk: it restarts under its id on an empty,
// newly formatted directory.
func (c *cluster) wipe(id uint64) {
	c.crash(id)
	c.addEmpty(id)
}

// addLearner starts an empty node and adds it as a learner, with its
// directory, through leader.
func (c *cluster) addLearner(leader *Node, id uint64) {
	c.addEmpty(id)
	require.NoError(c.t, changeMembership(c, leader, MembershipChange{Kind: AddLearner, NodeID: id, URL: peerURL(id), DirectoryID: c.directory(id)}))
}

// changeMembership runs a membership change on leader until it completes.
func changeMembership(c *cluster, leader *Node, change MembershipChange) error {
	var result error
	done := false
	leader.ChangeMembership(change, func(err error) { result, done = err, true })
	for i := 0; i < 100 && !done; i++ {
		c.process()
		if !done {
			c.tick(1)
		}
	}
	require.True(c.t, done, "the membership change never completed")
	return result
}

// takeSnapshot is TakeSnapshot's answer, which comes at once unless the
// harness holds the nodes' work.
func takeSnapshot(t testing.TB, n *Node) (index uint64, size int, err error) {
	t.Helper()
	answered := false
	n.TakeSnapshot(func(i uint64, s int, e error) { index, size, err, answered = i, s, e, true })
	require.True(t, answered, "TakeSnapshot did not answer")
	return index, size, err
}

// takeBackup is TakeBackup's answer, as takeSnapshot.
func takeBackup(t testing.TB, n *Node) (backup Backup, err error) {
	t.Helper()
	answered := false
	n.TakeBackup(func(b Backup, e error) { backup, err, answered = b, e, true })
	require.True(t, answered, "TakeBackup did not answer")
	return backup, err
}
