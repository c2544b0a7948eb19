package sim

import (
	"fmt"
	"math/rand/v2"
	"strings"
	"time"
)

// Options is everything a run does, drawn from its seed (swarm testing:
// each seed picks its own cluster and its own mix of faults, some calm,
// some brutal). Printing them beside the seed says what the seed tested.
type Options struct {
	Seed     uint64
	Duration time.Duration
	// HealAfter is when the faults stop and liveness is checked.
	HealAfter time.Duration
	Nodes     int
	Services  int
	Clients   int

	LatencyMin, LatencyMax time.Duration
	MessageLoss            float64
	MessageDuplication     float64
	// TickSkewMax is the largest relative deviation of a node's tick rate.
	TickSkewMax float64

	// Mean intervals between faults of each kind; 0 disables the kind.
	PartitionEvery time.Duration
	CrashEvery     time.Duration
	PauseEvery     time.Duration
	ClockJumpEvery time.Duration
	// SlowNodeEvery makes a controller slow for a few seconds: it steps
	// messages as they come but persists, sends and applies only once a
	// tick, so that its reads and its state lag the others'.
	SlowNodeEvery         time.Duration
	ServiceSilenceEvery   time.Duration
	TransferLeaderEvery   time.Duration
	MembershipChangeEvery time.Duration
	// StrangerEvery forges Raft messages from outside the configuration.
	StrangerEvery time.Duration
	// CorruptEvery crashes a controller and flips a bit of a record on its
	// disk; at restart the checksum finds it, and the controller is
	// replaced by a new member with a new id and an empty disk.
	CorruptEvery time.Duration
	// WipeEvery crashes a controller and replaces its disk with an empty
	// one; it restarts under its id and must wait to be replaced.
	WipeEvery time.Duration
	// FsyncFailureRate is the chance that a node's next sync fails, drawn
	// at each crash-free interval; SlowSync the latency a sync takes.
	FsyncFailureRate float64
	SlowSync         time.Duration
	TornWrites       bool
	// DelayedPushes holds back one push in ten for up to a few seconds, so
	// that pushes arrive out of order and after a newer controller's.
	DelayedPushes bool
	// GrowFromOne founds the cluster on the first controller alone; the
	// others start on formatted, unfounded directories and wait to be
	// added, each as a learner first and promoted once caught up (the
	// README's way to grow a cluster).
	GrowFromOne bool

	// LongDelays holds one Raft message in fifty back for up to a few
	// seconds, long enough to reach a crashed controller's next process.
	LongDelays bool
	// FollowerReads is the share of linearizable reads a client sends to
	// a random controller instead of the leader it believes in.
	FollowerReads float64
	// ClientSessionTimeout is the timeout of the client sessions the
	// controllers open; short ones expire during partitions and crashes,
	// so that retries meet expired sessions.
	ClientSessionTimeout time.Duration
	// ReplicationFactor of the topics clients create (1, 3 or 5): with 3 or 5, fencing,
	// unfencing and elections move leadership within real ISRs (and a
	// create fails when fewer brokers are live).
	ReplicationFactor int32

	// SilentAtHeal keeps one storage service silent through the heal
	// phase, so that its fencing is checked.
	SilentAtHeal bool
	// SeedServices makes every even-numbered storage service one of the
	// Java system's: it takes pushes as the seed's typed JSON updates
	// (package seedwire), checked by a model of the seed's receiver
	// (seedView), and heartbeats without a body. The seed's receiver
	// checks neither versions nor epochs, so pushes to it are never
	// delayed past a newer controller's (DelayedPushes spares it): that
	// is the one fault its protocol cannot survive, documented in the
	// README.
	SeedServices bool
}

// Timings of the simulated deployment, scaled down from production so
// that a minute of simulated time sees many elections and session expiries.
const (
	tickInterval      = 100 * time.Millisecond
	electionTicks     = 10
	sessionTimeout    = 3 * time.Second
	heartbeatInterval = 300 * time.Millisecond
	// settlingQuiet is how long before the end the services stop
	// reporting ISR changes, so that the controllers agree at the end.
	settlingQuiet = 3 * time.Second
	clientTimeout = 2 * time.Second
	// callerPatience is the deadline a simulated caller gives one call.
	callerPatience = 12 * time.Second
	// clientBackoffMin and clientBackoffMax are client.Config's defaults.
	clientBackoffMin = 50 * time.Millisecond
	clientBackoffMax = time.Second
	healBound        = 20 * time.Second
	// rebalanceInterval is how often the active controller moves leaders
	// back to their preferred replicas.
	rebalanceInterval = 10 * time.Second
	// seedResyncInterval is how often seed receivers get a full state.
	seedResyncInterval = 10 * time.Second
)

// OptionsFromSeed draws the options. nodes > 0 forces the cluster size.
func OptionsFromSeed(seed uint64, duration time.Duration, nodes int) Options {
	rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	pick := func(values ...time.Duration) time.Duration { return values[rng.IntN(len(values))] }
	chance := func(p float64) bool { return rng.Float64() < p }
	o := Options{Seed: seed, Duration: duration}
	o.HealAfter = duration - min(duration/3, healBound+10*time.Second)
	o.Nodes = []int{3, 3, 5}[rng.IntN(3)]
	if nodes > 0 {
		o.Nodes = nodes
	}
	o.Services = 3 + rng.IntN(3)
	o.Clients = 4 + rng.IntN(5)
	o.LatencyMin = time.Duration(1+rng.IntN(5)) * time.Millisecond
	o.LatencyMax = o.LatencyMin + time.Duration(rng.IntN(60))*time.Millisecond
	o.ClientSessionTimeout = 2 * time.Minute
	o.ReplicationFactor = 1
	calm := chance(0.15)
	if calm {
		return o
	}
	o.MessageLoss = []float64{0, 0.01, 0.05, 0.2}[rng.IntN(4)]
	o.MessageDuplication = []float64{0, 0, 0.02, 0.1}[rng.IntN(4)]
	o.TickSkewMax = []float64{0, 0.02, 0.1}[rng.IntN(3)]
	o.PartitionEvery = pick(0, 5*time.Second, 15*time.Second)
	o.CrashEvery = pick(0, 4*time.Second, 12*time.Second)
	o.PauseEvery = pick(0, 0, 10*time.Second)
	o.ClockJumpEvery = pick(0, 0, 10*time.Second)
	o.ServiceSilenceEvery = pick(0, 5*time.Second, 15*time.Second)
	o.TransferLeaderEvery = pick(0, 0, 8*time.Second)
	o.MembershipChangeEvery = pick(0, 0, 15*time.Second)
	o.CorruptEvery = pick(0, 0, 0, 20*time.Second)
	o.FsyncFailureRate = []float64{0, 0, 0.1, 0.3}[rng.IntN(4)]
	o.SlowSync = pick(0, 0, 2*time.Millisecond, 20*time.Millisecond)
	o.TornWrites = chance(0.5)
	o.DelayedPushes = chance(0.5)
	o.SilentAtHeal = chance(0.5)
	o.LongDelays = chance(0.5)
	o.FollowerReads = []float64{0, 0.3, 0.8}[rng.IntN(3)]
	o.SlowNodeEvery = pick(0, 0, 6*time.Second)
	o.StrangerEvery = pick(0, 0, 5*time.Second)
	o.WipeEvery = pick(0, 0, 0, 20*time.Second)
	o.ClientSessionTimeout = pick(2*time.Second, 5*time.Second, 2*time.Minute)
	o.ReplicationFactor = []int32{1, 3, 3, 5}[rng.IntN(4)]
	if o.ReplicationFactor == 5 {
		// One broker more than the factor, so that a fenced one leaves
		// enough for new topics.
		o.Services = 6
	}
	o.GrowFromOne = chance(0.2)
	o.SeedServices = chance(0.5)
	return o
}

func (o Options) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "seed=%d duration=%v heal-after=%v nodes=%d services=%d clients=%d latency=%v-%v",
		o.Seed, o.Duration, o.HealAfter, o.Nodes, o.Services, o.Clients, o.LatencyMin, o.LatencyMax)
	fmt.Fprintf(&b, " loss=%.2f dup=%.2f skew=%.2f", o.MessageLoss, o.MessageDuplication, o.TickSkewMax)
	every := func(name string, d time.Duration) {
		if d > 0 {
			fmt.Fprintf(&b, " %s-every=%v", name, d)
		}
	}
	every("partition", o.PartitionEvery)
	every("crash", o.CrashEvery)
	every("pause", o.PauseEvery)
	every("clock-jump", o.ClockJumpEvery)
	every("slow-node", o.SlowNodeEvery)
	every("silence", o.ServiceSilenceEvery)
	every("transfer", o.TransferLeaderEvery)
	every("membership", o.MembershipChangeEvery)
	every("stranger", o.StrangerEvery)
	every("corrupt", o.CorruptEvery)
	every("wipe", o.WipeEvery)
	if o.FsyncFailureRate > 0 {
		fmt.Fprintf(&b, " fsync-failure=%.2f", o.FsyncFailureRate)
	}
	if o.SlowSync > 0 {
		fmt.Fprintf(&b, " slow-sync=%v", o.SlowSync)
	}
	if o.TornWrites {
		b.WriteString(" torn-writes")
	}
	if o.DelayedPushes {
		b.WriteString(" delayed-pushes")
	}
	if o.SilentAtHeal {
		b.WriteString(" silent-at-heal")
	}
	if o.LongDelays {
		b.WriteString(" long-delays")
	}
	if o.GrowFromOne {
		b.WriteString(" grow-from-one")
	}
	if o.SeedServices {
		b.WriteString(" seed-services")
	}
	if o.FollowerReads > 0 {
		fmt.Fprintf(&b, " follower-reads=%.1f", o.FollowerReads)
	}
	fmt.Fprintf(&b, " client-sessions=%v rf=%d", o.ClientSessionTimeout, o.ReplicationFactor)
	return b.String()
}
