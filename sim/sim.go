package sim

import (
	"cmp"
	"container/heap"
	cryptorand "crypto/rand" // determinism: only to replace its Reader with the seed's stream for a run
	"encoding/binary"
	"errors"
	"fmt"
	"hash"

	"math/rand/v2"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"sync" // determinism: runMu only serialises whole runs; a run is one goroutine
	"time"

	"github.com/anishathalye/porcupine"
	"github.com/cespare/xxhash/v2"
	metadatav1 "github.com/dmq-project/metadata/gen/dmq/metadata/v1"
	"github.com/dmq-project/metadata/linearizability"
	"github.com/dmq-project/metadata/node"
	"github.com/dmq-project/metadata/statemachine"
	"github.com/dmq-project/metadata/storage"
	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"
)

// runMu serialises runs: a run replaces crypto/rand.Reader (Raft draws its
// election timeouts from it) for its whole length.
var runMu sync.Mutex // determinism: serialises whole runs; a run is one goroutine

// epoch is the wall time the simulated clock starts at.
var epoch = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

// Sim is one seeded run.
type Sim struct {
	opts  Options
	rng   *rand.Rand
	now   time.Duration
	queue eventQueue
	seq   uint64
	// admin moves the stable topics and issues the last balancing plan.
	admin *admin

	nodes    []*simNode
	services []*service
	clients  []*operator

	// cut[from][to] drops messages from one node to another.
	cut    map[[2]uint64]bool
	healed bool

	history []porcupine.Operation
	// founders are the founding voters with their directories.
	founders []node.Peer
	golden   *golden

	// Checker state.
	leaders      map[uint64]uint64 // term -> leader
	entries      map[uint64]entryDigest
	hashes       map[uint64]uint64 // applied index -> state hash
	pushedStates map[int64]uint64  // metadata version -> ClusterState digest
	seedStates   map[int64]uint64  // metadata version -> what a seed receiver shows (seedDigest)
	// newestPushTerm is the highest controller epoch any push was sent in:
	// a push of an older one arriving after it is a deposed controller's.
	newestPushTerm uint64
	violations     []string
	trace          hash.Hash64
	events         int
	recent         [traceKept]event
	faults         map[string]int
	membership     membershipOp
	// replace is a controller whose disk is lost, to be removed and
	// replaced by a new member; 0 if none.
	replace       uint64
	reconciling   bool
	lastLeaderAt  time.Duration
	clientOpsDone int
	// forwards counts attempts a follower passed to the leader, and
	// forwardsUnanswered those the leader's answer never came back for.
	forwards, forwardsUnanswered int
	// preferred are the marks checkPreferredLeaders compares later states
	// with, oldest first.
	preferred []*preferredMark
	// growing: the cluster founded on one controller is still adding the
	// others (GrowFromOne).
	growing bool
}

const (
	traceKept       = 40
	hashSampleEvery = 8
)

type heldMessage struct {
	from            uint64
	fromIncarnation uint64
	m               *raftpb.Message
}

type entryDigest struct {
	term uint64
	data uint64
}

// Result is a run's verdict.
type Result struct {
	Options    Options
	Simulated  time.Duration
	Wall       time.Duration
	Events     int
	Operations int
	Faults     map[string]int
	Violations []string
	TraceHash  uint64
	// History is the client history, for visualisation.
	History []porcupine.Operation
	// Recent describes the last events, for a failure report.
	Recent []string
	// Summary counts what happened: terms, leaders, unknown outcomes.
	Summary string
}

// OK says whether the run found no violation.
func (r Result) OK() bool { return len(r.Violations) == 0 }

// Run runs one seed to completion.
func Run(opts Options) Result {
	runMu.Lock()         // determinism: see runMu
	defer runMu.Unlock() // determinism: see runMu
	var seed [32]byte
	binary.LittleEndian.PutUint64(seed[:], opts.Seed)
	binary.LittleEndian.PutUint64(seed[8:], 0x5eed)
	saved := cryptorand.Reader                   // determinism: restored after the run
	cryptorand.Reader = rand.NewChaCha8(seed)    // determinism: Raft's draws come from the seed
	defer func() { cryptorand.Reader = saved }() // determinism: restores the system's reader

	s := &Sim{
		opts: opts, rng: rand.New(rand.NewPCG(opts.Seed, 0xd1b54a32d192ed03)),
		cut: map[[2]uint64]bool{}, leaders: map[uint64]uint64{}, entries: map[uint64]entryDigest{},
		hashes: map[uint64]uint64{}, pushedStates: map[int64]uint64{}, seedStates: map[int64]uint64{}, trace: xxhash.New(),
		faults: map[string]int{}, golden: newGolden(),
	}
	started := time.Now() // determinism: the wall time of the run, for the speed figure only; never reaches the trace
	s.setup()
	s.loop()
	s.now = opts.Duration
	if len(s.violations) == 0 {
		s.checkLiveness()
	}
	if len(s.violations) == 0 {
		s.checkLinearizability()
	}
	result := Result{
		Options: opts, Simulated: s.now, Events: s.events,
		Wall:       time.Since(started), // determinism: the speed figure only
		Operations: len(s.history), Faults: s.faults, Violations: s.violations, TraceHash: s.trace.Sum64(),
		History: s.history,
	}
	unknown := 0
	for _, op := range s.history {
		if op.Return == linearizability.PendingForever {
			unknown++
		}
	}
	var maxTerm uint64
	for term := range s.leaders { // determinism: a maximum does not depend on order
		maxTerm = max(maxTerm, term)
	}
	result.Summary = fmt.Sprintf("terms=%d terms-with-leader=%d unknown-outcomes=%d client-ops=%d version=%d forwarded=%d forwards-unanswered=%d",
		maxTerm, len(s.leaders), unknown, s.clientOpsDone, s.lastVersion(), s.forwards, s.forwardsUnanswered)
	for i := 0; i < traceKept && i < s.events; i++ {
		e := s.recent[(s.events-min(s.events, traceKept)+i)%traceKept]
		result.Recent = append(result.Recent, fmt.Sprintf("%12v %-15s %d %d", e.at, eventNames[e.kind], e.a, e.b))
	}
	return result
}

// loop runs events in order until the end or the first violation. A panic
// — an assertion of the core, of Raft or of the simulator — is a violation
// too: the run stops and reports it with its trace.
func (s *Sim) loop() {
	defer func() {
		if r := recover(); r != nil {
			s.violate("panic: %v\n%s", r, debug.Stack())
		}
	}()
	for s.queue.Len() > 0 && len(s.violations) == 0 {
		e := heap.Pop(&s.queue).(*event)
		if e.at > s.opts.Duration {
			break
		}
		s.now = e.at
		s.record(e)
		e.run()
	}
}

func (s *Sim) record(e *event) {
	var buf [33]byte
	binary.LittleEndian.PutUint64(buf[0:], uint64(e.at))
	binary.LittleEndian.PutUint64(buf[8:], e.seq)
	buf[16] = byte(e.kind)
	binary.LittleEndian.PutUint64(buf[17:], e.a)
	binary.LittleEndian.PutUint64(buf[25:], e.b)
	s.trace.Write(buf[:])
	s.recent[s.events%traceKept] = *e
	s.events++
}

func (s *Sim) lastVersion() int64 {
	if leader := s.leaderNode(); leader != nil {
		return leader.node.StateMachine().Version()
	}
	return 0
}

func (s *Sim) violate(format string, args ...any) {
	s.violations = append(s.violations, fmt.Sprintf("at %v: ", s.now)+fmt.Sprintf(format, args...))
}

func (s *Sim) fault(kind string) { s.faults[kind]++ }

func (s *Sim) between(lo, hi time.Duration) time.Duration {
	if hi <= lo {
		return lo
	}
	return lo + time.Duration(s.rng.Int64N(int64(hi-lo)))
}

// exp draws an exponential interval with the given mean.
func (s *Sim) exp(mean time.Duration) time.Duration {
	return time.Duration(s.rng.ExpFloat64() * float64(mean))
}

func (s *Sim) setup() {
	stores := make([]storage.Storage, 0, s.opts.Nodes)
	for id := uint64(1); id <= uint64(s.opts.Nodes); id++ {
		skew := 1 + (s.rng.Float64()*2-1)*s.opts.TickSkewMax
		n := &simNode{sim: s, id: id, disk: storage.NewDisk(), tickInterval: time.Duration(float64(tickInterval) * skew), member: true}
		n.disk.SyncLatency = s.opts.SlowSync
		store, err := storage.OpenMem(n.disk)
		if err != nil {
			panic(err)
		}
		identity, err := node.Format(store, simClusterID, id, n)
		if err != nil {
			panic(err)
		}
		stores = append(stores, store)
		if id == 1 || !s.opts.GrowFromOne {
			s.founders = append(s.founders, node.Peer{ID: id, URL: controllerURL(id), DirectoryID: identity.DirectoryID})
		} else {
			n.awaitingAdd = true
		}
		s.nodes = append(s.nodes, n)
	}
	for i, n := range s.nodes {
		if i < len(s.founders) {
			if err := node.Bootstrap(stores[i], s.founders); err != nil {
				panic(err)
			}
		}
		n.start(stores[i])
		s.schedule(s.between(0, n.tickInterval), evTick, n.id, 0, n.tick)
	}
	if s.opts.GrowFromOne {
		s.growing = true
		s.schedule(time.Second, evNemesis, 0, 3, s.grow)
	}
	for i := 0; i < s.opts.Services; i++ {
		svc := newService(s, int32(i+1))
		s.services = append(s.services, svc)
		s.schedule(s.between(0, heartbeatInterval), evServiceBeat, uint64(svc.id), 0, svc.beat)
	}
	for i := 0; i < s.opts.Clients; i++ {
		c := newClient(s, i)
		s.clients = append(s.clients, c)
		s.schedule(s.between(200*time.Millisecond, time.Second), evClientStart, uint64(i), 0, c.start)
	}
	s.admin = newAdmin(s)
	s.schedule(time.Second, evClientStart, 999, 0, s.admin.start)
	s.scheduleNemeses()
	s.schedule(s.opts.HealAfter, evHeal, 0, 0, s.heal)
}

// node returns the live node with id, or nil.
func (s *Sim) node(id uint64) *simNode {
	if id == 0 || id > uint64(len(s.nodes)) {
		return nil
	}
	n := s.nodes[id-1]
	if n.node == nil {
		return nil
	}
	return n
}

func (s *Sim) latency() time.Duration { return s.between(s.opts.LatencyMin, s.opts.LatencyMax+1) }

// lossy says whether a message is lost (only before the heal).
func (s *Sim) lossy() bool { return !s.healed && s.rng.Float64() < s.opts.MessageLoss }

// simNode is one controller process and its disk.
type simNode struct {
	sim          *Sim
	id           uint64
	disk         *storage.Disk
	store        storage.Storage
	node         *node.Node
	tickInterval time.Duration
	clockOffset  time.Duration
	pausedUntil  time.Duration
	// slowUntil: until then the node handles its Readies only on ticks
	// (ticking marks the tick's own processing).
	slowUntil time.Duration
	ticking   bool
	// member: in the Raft configuration (false while removed); retired:
	// removed for good, its id never to be used again.
	member  bool
	retired bool
	// incarnation counts restarts, so that events for a dead process drop.
	incarnation uint64
	// removedPeers are ids the configuration removed: as the production
	// transport, the process never learns their addresses back.
	removedPeers map[uint64]bool
	// awaitingAdd: a controller of a cluster grown from one, running but
	// not yet in the configuration.
	awaitingAdd bool
	// queuedInbound and queuedRequests count what waits in the runner's
	// queues while the process is paused.
	queuedInbound, queuedRequests int
	applied                       uint64
	// activeAt is the node's clock when it last became the active
	// controller; jumped says its clock jumped since.
	active   bool
	activeAt time.Time
	jumped   bool
	// corrupted: a bit of its disk was flipped while it was down.
	corrupted bool
	// corruptedKey is the key whose value has the flipped bit.
	corruptedKey []byte
	// wiped: its disk was lost and replaced by an empty one.
	wiped bool
	// leading: the node led at its last processing.
	leading bool
	// held are messages sent to it while it was down, delivered to its
	// next process when it restarts.
	held []heldMessage
	// promises are what it told others about its disk (see durable.go).
	promises promises
	// peers is its process's address book (see SetPeer).
	peers map[uint64]string
	// digest caches the ClusterState digest of one version for pushes.
	digest            uint64
	digestVersion     int64
	digestIncarnation uint64
	// seedDigest is the same version's seedDigest, with SeedServices.
	seedDigest uint64
}

func (n *simNode) Now() time.Time { return epoch.Add(n.sim.now + n.clockOffset) }
func (n *simNode) Uint64() uint64 { return n.sim.rng.Uint64() }

// SetPeer and RemovePeer keep the node's own address book, as the
// production transport does: messages go where it says, and nowhere for an
// id it has no address of.
func (n *simNode) SetPeer(id uint64, url string) {
	if id != n.id && url != "" {
		n.peers[id] = url
		delete(n.removedPeers, id)
	}
}

func (n *simNode) RemovePeer(id uint64) {
	delete(n.peers, id)
	n.removedPeers[id] = true
}

func controllerURL(id uint64) string { return fmt.Sprintf("sim://controller-%d", id) }

// idOfURL returns the controller an address reaches.
func idOfURL(url string) uint64 {
	digits, ok := strings.CutPrefix(url, "sim://controller-")
	if !ok {
		return 0
	}
	id, err := strconv.ParseUint(digits, 10, 64)
	if err != nil {
		return 0
	}
	return id
}

// startingPeers is the services.json a controller process starts with:
// the founders and every member of the cluster when it was started, as an
// operator would write it.
func (s *Sim) startingPeers(self uint64) map[uint64]string {
	peers := map[uint64]string{}
	for _, f := range s.founders {
		if f.ID != self {
			peers[f.ID] = f.URL
		}
	}
	for _, other := range s.nodes {
		if other.id != self && other.member && !other.retired {
			peers[other.id] = controllerURL(other.id)
		}
	}
	return peers
}

func (n *simNode) Send(messages []*raftpb.Message) {
	s := n.sim
	for _, m := range messages {
		n.promises.note(m)
		if !node.SentBy(m, n.id) {
			// The peer's transport would refuse it and end the stream.
			s.violate("controller %d sent a %v from controller %d, which its peer's transport refuses", n.id, m.GetType(), m.GetFrom())
			return
		}
		url, known := n.peers[m.GetTo()]
		if !known {
			// No address: Raft hears of it, as from the production
			// transport, or it would wait for a snapshot forever.
			s.fault("no-address")
			n.reportUnreachableLater(m.GetTo())
			if m.GetType() == raftpb.MsgSnap {
				n.reportSnapshotLater(m.GetTo(), false)
			}
			continue
		}
		to := idOfURL(url)
		if s.cut[[2]uint64{n.id, to}] || s.lossy() {
			if m.GetType() == raftpb.MsgSnap {
				n.reportSnapshotLater(to, false)
			}
			continue
		}
		copies := 1
		if !s.healed && s.rng.Float64() < s.opts.MessageDuplication {
			copies = 2
		}
		for i := 0; i < copies; i++ {
			// Raft never modifies a message once it is in a Ready, and
			// receivers only read: the message is shared, not copied.
			msg := m
			from := n.id
			delay := s.latency()
			if s.opts.LongDelays && !s.healed && s.rng.IntN(50) == 0 {
				// A message stuck in a queue or a retransmission: it may reach
				// the next process of a controller that crashed meanwhile.
				s.fault("long-delay")
				delay += s.between(500*time.Millisecond, 4*time.Second)
			}
			fromIncarnation := n.incarnation
			s.schedule(delay, evDeliver, from, to, func() { s.deliver(from, fromIncarnation, to, msg) })
		}
	}
}

// isMemberHere says whether id is in the configuration the node applied.
func (n *simNode) isMemberHere(id uint64) bool {
	for _, m := range n.node.Status().Members {
		if m.ID == id {
			return true
		}
	}
	return false
}

func (n *simNode) reportUnreachableLater(to uint64) {
	s, inc := n.sim, n.incarnation
	s.schedule(s.latency(), evSnapshotReport, n.id, to, func() {
		if n.node != nil && n.incarnation == inc {
			n.node.ReportUnreachable(to)
			n.process()
		}
	})
}

func (n *simNode) reportSnapshotLater(to uint64, ok bool) {
	s, inc := n.sim, n.incarnation
	s.schedule(s.latency(), evSnapshotReport, n.id, to, func() {
		if n.node != nil && n.incarnation == inc {
			n.node.ReportSnapshot(to, ok)
			n.process()
		}
	})
}

const simClusterID = "sim"

// heldMax bounds the messages held for a controller that is down, as the
// production transport's per-peer queue does.
const heldMax = 1024

func (s *Sim) deliver(from, fromIncarnation, dest uint64, m *raftpb.Message) {
	target := s.node(dest)
	if target == nil {
		if sender := s.node(from); sender != nil && m.GetType() == raftpb.MsgSnap {
			sender.reportSnapshotLater(m.GetTo(), false)
			return
		}
		// The production transport keeps a peer's messages queued while it
		// reconnects: what was sent to a process that died reaches the next
		// one. Snapshots travel on streams of their own and fail instead.
		if to := dest; to >= 1 && to <= uint64(len(s.nodes)) && m.GetType() != raftpb.MsgSnap {
			if down := s.nodes[to-1]; down.member && !down.retired && len(down.held) < heldMax && s.node(from) != nil {
				down.held = append(down.held, heldMessage{from: from, fromIncarnation: fromIncarnation, m: m})
			}
		}
		return
	}
	if target.pausedUntil > s.now {
		// The message waits in the runner's inbound queue, which drops
		// what does not fit (Raft retransmits); a snapshot waits in the
		// request queue, which refuses it when full (ErrBusy: reported
		// failed at once).
		if m.GetType() == raftpb.MsgSnap {
			if !target.queueRequest(func() { s.deliver(from, fromIncarnation, dest, m) }) {
				if sender := s.node(from); sender != nil {
					sender.reportSnapshotLater(m.GetTo(), false)
				}
			}
			return
		}
		target.queueInbound(func() { s.deliver(from, fromIncarnation, dest, m) })
		return
	}
	if _, known := target.peers[from]; !known && from != target.id && !target.removedPeers[from] {
		// The sender's address travels with its request (from_url), as in
		// the production transport: a controller that has not applied the
		// sender's addition can still answer it.
		target.peers[from] = controllerURL(from)
	}
	if err := target.node.Step(m); err != nil {
		if m.GetType() == raftpb.MsgSnap {
			// The snapshot's stream answers with the error: the sender's
			// transport reports the snapshot failed, and Raft sends
			// another (a joiner refuses one that does not name it).
			if sender := s.node(from); sender != nil {
				sender.reportSnapshotLater(m.GetTo(), false)
			}
		}
		if errors.Is(err, node.ErrNotMember) && !target.isMemberHere(m.GetFrom()) {
			return // a stranger's, or a removed controller's: dropped
		}
		if errors.Is(err, node.ErrMayNotVote) && !target.node.Status().MayVote {
			return // a vote request to a controller that may not vote
		}
		if errors.Is(err, node.ErrLostLog) {
			return // a stale rejection, or a wiped controller's: dropped
		}
		s.violate("node %d refused a message from %d: %v", target.id, from, err)
		return
	}
	target.process()
	if m.GetType() == raftpb.MsgSnap {
		if sender := s.node(from); sender != nil {
			sender.reportSnapshotLater(m.GetTo(), true)
		}
	}
}

// Protocol: the storage services answer pushes, in their protocol;
// brokers registered by clients have no process behind them.
func (n *simNode) Protocol(broker int32) node.PushProtocol {
	switch {
	case int(broker) > len(n.sim.services):
		return node.PushNone
	case n.sim.services[broker-1].seed:
		return node.PushSeed
	}
	return node.PushConnect
}

func (n *simNode) Push(broker int32, push node.Push) {
	n.sim.push(n, broker, push)
}

// Run is node.Worker: the computation takes a while of simulated time,
// during which the node goes on and the state moves; its result reaches
// the process that asked once it runs (not while it is paused), unless it
// crashed meanwhile.
func (n *simNode) Run(work func() func()) {
	s, inc := n.sim, n.incarnation
	var deliver func()
	deliver = func() {
		if n.node == nil || n.incarnation != inc {
			return
		}
		if n.pausedUntil > s.now {
			// A paused process runs nothing: the result waits for it.
			s.schedule(n.pausedUntil-s.now, evWork, n.id, 0, deliver)
			return
		}
		work()()
		n.process()
	}
	s.schedule(s.between(time.Millisecond, 300*time.Millisecond), evWork, n.id, 0, deliver)
}

// Applied checks that every node applies the same entry at each index.
func (n *simNode) Applied(entry *raftpb.Entry) {
	h := xxhash.New()
	_, _ = h.Write([]byte{byte(entry.GetType())})
	_, _ = h.Write(entry.GetData())
	d := entryDigest{term: entry.GetTerm(), data: h.Sum64()}
	if seen, ok := n.sim.entries[entry.GetIndex()]; ok && seen != d {
		n.sim.violate("node %d applied entry %d (term %d) unlike another node (term %d)", n.id, entry.GetIndex(), d.term, seen.term)
	} else if !ok {
		n.sim.entries[entry.GetIndex()] = d
	}
	n.checkFenceGrace(entry)
	n.sim.golden.applied(n.sim, entry)
}

// checkFenceGrace: a controller that fences a broker must have been the
// active controller for a whole session timeout first (by its own clock,
// unless that clock jumped): no broker is fenced for the silence of a
// failover.
func (n *simNode) checkFenceGrace(entry *raftpb.Entry) {
	if entry.GetType() != raftpb.EntryNormal || len(entry.GetData()) == 0 || !n.active || n.jumped {
		return
	}
	record := &metadatav1.Record{}
	if proto.Unmarshal(entry.GetData(), record) != nil || record.GetProposerId() != n.id || record.GetFenceBroker() == nil {
		return
	}
	if served := n.Now().Sub(n.activeAt); served < sessionTimeout {
		n.sim.violate("controller %d fenced broker %d %v after becoming active, within the session timeout %v",
			n.id, record.GetFenceBroker().GetBrokerId(), served, sessionTimeout)
	}
}

func (n *simNode) start(store storage.Storage) {
	s := n.sim
	n.store = store
	n.incarnation++
	// Snapshots far more often than the defaults, so that a seed's short
	// run takes snapshots, compacts and restores followers from them.
	cfg := node.Config{
		ID: n.id, ClusterID: simClusterID, ElectionTicks: electionTicks, HeartbeatTicks: 1, MaxLogEntries: 200, SnapshotLogRatio: 4, LogTailEntries: 50,
		SessionTimeout: sessionTimeout, ClientSessionTimeout: s.opts.ClientSessionTimeout, RequestTimeoutTicks: 30, VerifySnapshots: true, RebalanceInterval: rebalanceInterval, SeedResyncInterval: seedResyncInterval, RebalanceOnJoin: true,
		PushBackoffMin: 100 * time.Millisecond, PushBackoffMax: time.Second,
	}
	n.peers, n.removedPeers = s.startingPeers(n.id), map[uint64]bool{}
	nd, err := node.New(cfg, store, node.Env{Transport: n, Clock: n, Rand: n, Pusher: n, Observer: n, Worker: n})
	if err != nil {
		s.violate("node %d cannot restart from its disk: %v", n.id, err)
		return
	}
	n.node = nd
	n.applied = nd.StateMachine().AppliedIndex()
	n.active = false
}

func (n *simNode) tick() {
	s := n.sim
	s.schedule(n.tickInterval, evTick, n.id, 0, n.tick)
	if n.node == nil || n.pausedUntil > s.now {
		return
	}
	n.node.Tick()
	n.ticking = true
	n.process()
	n.ticking = false
}

// process handles Readies until none is left, then runs the per-node
// checks. A storage error crashes the node, as in production.
func (n *simNode) process() {
	s := n.sim
	if n.slowUntil > s.now && !n.ticking {
		// A slow controller: what arrives is stepped at once, but its
		// loop persists, sends and applies only once a tick.
		return
	}
	for n.node != nil && n.node.HasReady() {
		if err := n.node.HandleReady(); err != nil {
			s.fault("fsync-crash")
			s.crash(n, 0)
			return
		}
	}
	if n.node == nil {
		return
	}
	if active := n.node.IsActive(); active != n.active {
		n.active, n.activeAt, n.jumped = active, n.Now(), false
	}
	if n.node.IsLeader() && !n.leading && s.opts.MembershipChangeEvery > 0 && !s.healed && s.rng.IntN(3) == 0 {
		// A membership change right after an election.
		s.schedule(0, evNemesis, 0, 3, s.membershipStep)
	}
	n.leading = n.node.IsLeader()
	if n.node.IsLeader() {
		term := n.node.Term()
		if other, ok := s.leaders[term]; ok && other != n.id {
			s.violate("two leaders in term %d: %d and %d", term, other, n.id)
		}
		s.leaders[term] = n.id
		s.lastLeaderAt = s.now
	}
	sm := n.node.StateMachine()
	if applied := sm.AppliedIndex(); applied != n.applied {
		n.applied = applied
		if err := sm.CheckInvariants(); err != nil {
			s.violate("node %d breaks an invariant at index %d: %v", n.id, applied, err)
		}
		// Hashing the state at every index of every node would be most of
		// the run's cost; a divergence persists, so sampled indexes and the
		// final comparison of all nodes catch it.
		if applied%hashSampleEvery == 0 {
			h := sm.Hash()
			if seen, ok := s.hashes[applied]; ok && seen != h {
				s.violate("node %d has state hash %x at index %d, another node %x", n.id, h, applied, seen)
			} else if !ok {
				s.hashes[applied] = h
			}
		}
	}
	n.maybeFailNextSync()
}

func (n *simNode) maybeFailNextSync() {
	s := n.sim
	if n.disk.FailSyncs == 0 && !s.healed && s.opts.FsyncFailureRate > 0 && s.rng.Float64() < s.opts.FsyncFailureRate/100 {
		n.disk.FailSyncs = 1
	}
}

// crash kills a node's process: its unsynced writes are lost (a torn tail
// if the options say so) and it restarts after downtime (0: at the heal).
func (s *Sim) crash(n *simNode, downtime time.Duration) {
	torn := 0
	if s.opts.TornWrites {
		torn = 1 + s.rng.IntN(64)
	}
	n.disk.Crash(torn)
	s.checkDurable(n)
	n.disk.FailSyncs = 0
	n.node = nil
	n.store = nil
	n.incarnation++
	n.queuedInbound, n.queuedRequests = 0, 0
	if downtime == 0 {
		downtime = s.between(500*time.Millisecond, 3*time.Second)
	}
	inc := n.incarnation
	s.schedule(downtime, evRestart, n.id, 0, func() {
		if n.incarnation == inc {
			s.restart(n)
		}
	})
}

func (s *Sim) restart(n *simNode) {
	if n.node != nil || !n.member || n.retired {
		return
	}
	store, err := storage.OpenMem(n.disk)
	if err != nil {
		if n.corrupted && errors.Is(err, storage.ErrCorrupt) && !strings.Contains(err.Error(), fmt.Sprintf("%q", n.corruptedKey)) {
			// The flipped bit must be what is found: damage elsewhere is
			// a bug of its own, which the planted flip must not hide.
			s.violate("node %d's disk reports %v, but the bit flipped was under %q", n.id, err, n.corruptedKey)
			return
		}
		if n.corrupted && errors.Is(err, storage.ErrCorrupt) {
			// Found by the checksum, as it must be: this disk is lost, and
			// the controller is replaced.
			s.fault("corruption-detected")
			s.replace = n.id
			s.reconcileMembership()
			return
		}
		s.violate("node %d cannot reopen its disk: %v", n.id, err)
		return
	}
	if n.corrupted {
		s.violate("node %d reopened a disk with a flipped bit without noticing", n.id)
	}
	if _, formatted, _ := store.Identity(); !formatted {
		// An empty disk (wiped, or a new member's): format it, and found
		// the cluster only as a founding voter, as dmqd does at every start.
		if _, err := node.Format(store, simClusterID, n.id, n); err != nil {
			s.violate("node %d cannot format its disk: %v", n.id, err)
			return
		}
		if n.id <= uint64(len(s.founders)) {
			err := node.Bootstrap(store, s.founders)
			if n.wiped && !errors.Is(err, node.ErrNotFoundingDirectory) {
				s.violate("node %d founded the cluster again on a wiped disk (%v)", n.id, err)
				return
			}
		}
		if n.wiped {
			s.fault("wiped-restart")
			s.replace = n.id
			defer s.reconcileMembership()
		}
	}
	n.start(store)
	n.process()
	held := n.held
	n.held = nil
	if len(held) > 0 {
		s.fault("messages-outlived-crash")
	}
	for _, h := range held {
		// The queue lived in the sender's process: it is flushed when the
		// stream reconnects, unless the sender died meanwhile.
		if sender := s.nodes[h.from-1]; sender.node != nil && sender.incarnation == h.fromIncarnation {
			s.schedule(s.latency(), evDeliver, h.from, n.id, func() { s.deliver(h.from, h.fromIncarnation, n.id, h.m) })
		}
	}
}

// push carries a push from a controller to a storage service.
func (s *Sim) push(from *simNode, broker int32, push node.Push) {
	version, req := push.Version, push.Request
	epoch := req.GetControllerEpoch()
	if push.SeedUpdates != nil {
		epoch = uint64(push.SeedUpdates[0].ControllerTerm)
		for _, u := range push.SeedUpdates {
			if u.Version != version || uint64(u.ControllerTerm) != epoch || u.ControllerID != int32(from.id) {
				s.violate("controller %d pushed a seed update of version %d, term %d, controller %d in a push of version %d, term %d",
					from.id, u.Version, u.ControllerTerm, u.ControllerID, version, epoch)
			}
		}
	} else if req.GetMetadataVersion() != version {
		s.violate("controller %d pushed version %d as version %d", from.id, req.GetMetadataVersion(), version)
	}
	s.newestPushTerm = max(s.newestPushTerm, epoch)
	if !from.node.IsActive() || epoch != from.node.Term() {
		s.violate("controller %d (active %v, term %d) pushed with controller epoch %d: a push carries the sender's current leader epoch",
			from.id, from.node.IsActive(), from.node.Term(), epoch)
	}
	s.recordState(from.id, from.node.StateMachine())
	inc := from.incarnation
	if int(broker) > len(s.services) {
		s.violate("controller %d pushed to broker %d, which has no push endpoint", from.id, broker)
		return
	}
	if s.lossy() {
		s.schedule(clientTimeout, evPushReply, from.id, uint64(broker), func() {
			if from.node != nil && from.incarnation == inc {
				from.node.OnPushResult(broker, version, nil, fmt.Errorf("push to %d timed out", broker))
				from.process()
			}
		})
		return
	}
	svc := s.services[broker-1]
	delay := s.latency()
	if s.opts.DelayedPushes && !s.healed && !svc.seed && s.rng.IntN(10) == 0 {
		s.fault("delayed-push")
		delay += s.between(500*time.Millisecond, 3*time.Second)
	}
	s.schedule(delay, evPush, from.id, uint64(broker), func() {
		var resp *metadatav1.PushMetadataResponse
		var err error
		if svc.seed {
			resp, err = svc.receiveSeedPush(from.id, push)
		} else {
			resp, err = svc.receivePush(req)
		}
		s.schedule(s.latency(), evPushReply, from.id, uint64(broker), func() {
			if from.node != nil && from.incarnation == inc {
				from.node.OnPushResult(broker, version, resp, err)
				from.process()
			}
		})
	})
}

// recordState notes the metadata a controller holds at its version: every
// controller must hold the same at a version, and the storage services'
// checks compare against it.
func (s *Sim) recordState(id uint64, sm *statemachine.StateMachine) {
	n := s.nodes[id-1]
	version := sm.Version()
	if n.digestVersion != version || n.digestIncarnation != n.incarnation {
		state := sm.ClusterState()
		n.digest = stateDigest(state)
		if s.opts.SeedServices {
			n.seedDigest = seedDigest(state)
		}
		n.digestVersion, n.digestIncarnation = version, n.incarnation
	}
	if seen, ok := s.pushedStates[version]; ok && seen != n.digest {
		s.violate("controller %d holds other metadata at version %d than another controller", id, version)
	}
	s.pushedStates[version] = n.digest
	if s.opts.SeedServices {
		s.seedStates[version] = n.seedDigest
	}
}

func stateDigest(state *metadatav1.ClusterState) uint64 {
	data, err := proto.MarshalOptions{Deterministic: true}.Marshal(state)
	if err != nil {
		panic(err)
	}
	return xxhash.Sum64(data)
}

func (s *Sim) leaderNode() *simNode {
	var best *simNode
	for _, n := range s.nodes {
		if n.node != nil && n.node.IsActive() && n.pausedUntil <= s.now && (best == nil || n.node.Term() > best.node.Term()) {
			best = n
		}
	}
	return best
}

// describe summarises the cluster for failure reports.
func (s *Sim) describe() string {
	var b strings.Builder
	for _, n := range s.nodes {
		if n.node == nil {
			fmt.Fprintf(&b, "  node %d: down (member=%v)\n", n.id, n.member)
			continue
		}
		st := n.node.Status()
		fmt.Fprintf(&b, "  node %d: term %d leader %d active %v applied %d commit %d members %v paused %v may-vote %v directory %x\n",
			n.id, st.Term, st.Leader, st.Active, st.Applied, st.Commit, describeMembers(st.Members), n.pausedUntil > s.now, st.MayVote, st.DirectoryID)
	}
	return b.String()
}

// describeMembers lists the members by id, learners marked "l", each with
// the directory the membership records for it.
func describeMembers(members []node.Member) string {
	sorted := slices.Clone(members)
	slices.SortFunc(sorted, func(a, b node.Member) int { return cmp.Compare(a.ID, b.ID) })
	var parts []string
	for _, m := range sorted {
		kind := ""
		if m.Learner {
			kind = "l"
		}
		parts = append(parts, fmt.Sprintf("%d%s:%x", m.ID, kind, m.DirectoryID))
	}
	return "[" + strings.Join(parts, " ") + "]"
}

// The runner's queue bounds (runner.InboundQueueMax, RequestQueueMax),
// scaled down as the simulator's timings are, so that a pause fills them.
const (
	simInboundQueueMax = 64
	simRequestQueueMax = 64
)

// queueInbound holds a Raft message for a paused process in its runner's
// inbound queue until the pause ends; it drops the message when the queue
// is full, as the runner does.
func (n *simNode) queueInbound(deliver func()) {
	n.queueUntilResumed(&n.queuedInbound, simInboundQueueMax, "inbound-queue-full", evDeliver, deliver)
}

// queueRequest holds a request (a client's call, a snapshot) for a paused
// process in its runner's request queue until the pause ends, and says
// whether it fit: a full queue refuses it.
func (n *simNode) queueRequest(handle func()) bool {
	return n.queueUntilResumed(&n.queuedRequests, simRequestQueueMax, "request-queue-full", evRPC, handle)
}

// queueUntilResumed runs fn when the pause ends, if the queue counted by
// queued has room (else it counts the fault and says so). The queue dies
// with the process.
func (n *simNode) queueUntilResumed(queued *int, limit int, full string, kind eventKind, fn func()) bool {
	s := n.sim
	if *queued >= limit {
		s.fault(full)
		return false
	}
	*queued++
	inc := n.incarnation
	s.schedule(n.pausedUntil-s.now, kind, n.id, 0, func() {
		if n.incarnation == inc {
			*queued--
			fn()
		}
	})
	return true
}
