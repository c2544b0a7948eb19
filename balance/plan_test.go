package balance

import (
	"fmt"
	"slices"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// cluster places partitions of rf replicas on brokers in racks, striped as
// the controller places them: leaders round robin over a rack-alternated
// order, followers after them (racks spread evenly when they divide the
// brokers).
func cluster(brokers, racks, partitions, rf int) ([]Broker, []Partition) {
	var bs []Broker
	for id := 1; id <= brokers; id++ {
		bs = append(bs, Broker{ID: int32(id), Rack: fmt.Sprintf("rack-%d", id%racks)})
	}
	// Rack-alternated: ids 1..n already alternate racks (id % racks).
	ps := make([]Partition, partitions)
	for i := range ps {
		reps := make([]int32, rf)
		for j := range reps {
			reps[j] = int32((i+j+i/brokers)%brokers) + 1
		}
		ps[i] = Partition{Replicas: reps}
	}
	return bs, ps
}

func applyMoves(ps []Partition, moves []Move) []Partition {
	out := slices.Clone(ps)
	for _, m := range moves {
		out[m.Partition] = Partition{Replicas: m.Replicas}
	}
	return out
}

// replicaMoves counts the replicas that change broker.
func replicaMoves(before, after []Partition) int {
	n := 0
	for i := range before {
		for _, id := range after[i].Replicas {
			if !slices.Contains(before[i].Replicas, id) {
				n++
			}
		}
	}
	return n
}

// minimum is the fewest replica moves the balance a plan must reach
// needs, from the input alone: rack shares where every partition spans
// every rack, the cluster's shares otherwise.
func minimum(brokers []Broker, ps []Partition, drain []int32) int {
	p := newPlanner(brokers, ps, Options{Drain: drain})
	if p.racksFixed(ps) {
		return excess(p.count, p.rackShares())
	}
	return excess(p.count, p.target)
}

func excess(counts, target []int) int {
	n := 0
	for b := range counts {
		n += max(0, counts[b]-target[b])
	}
	return n
}

// checkBalanced checks a plan's outcome: counts within one of the mean,
// no broker twice in a partition, racks no less even than allowed.
func checkBalanced(t testing.TB, brokers []Broker, ps []Partition, drain []int32) {
	t.Helper()
	rackOf := map[int32]string{}
	racks := map[string]bool{}
	count, leaders := map[int32]int{}, map[int32]int{}
	for _, b := range brokers {
		rackOf[b.ID] = b.Rack
		racks[b.Rack] = true
		if !slices.Contains(drain, b.ID) {
			count[b.ID], leaders[b.ID] = 0, 0
		}
	}
	for i, p := range ps {
		inRack := map[string]int{}
		for j, id := range p.Replicas {
			require.False(t, slices.Contains(p.Replicas[:j], id), "partition %d holds broker %d twice: %v", i, id, p.Replicas)
			require.False(t, slices.Contains(drain, id), "partition %d still on drained broker %d", i, id)
			count[id]++
			inRack[rackOf[id]]++
		}
		leaders[p.Replicas[0]]++
		most, least := (len(p.Replicas)+len(racks)-1)/len(racks), len(p.Replicas)/len(racks)
		for rack := range racks {
			require.LessOrEqual(t, inRack[rack], most, "partition %d has %d replicas in rack %s: %v", i, inRack[rack], rack, p.Replicas)
			require.GreaterOrEqual(t, inRack[rack], least, "partition %d has %d replicas in rack %s: %v", i, inRack[rack], rack, p.Replicas)
		}
	}
	spread := func(m map[int32]int, in func(int32) bool) (int, int) {
		lo, hi := -1, -1
		for id, c := range m {
			if !in(id) {
				continue
			}
			if lo < 0 || c < lo {
				lo = c
			}
			hi = max(hi, c)
		}
		return lo, hi
	}
	all := func(int32) bool { return true }
	// Within each rack where every partition spans every rack (no move
	// changes a rack's total), across the cluster otherwise.
	fixed := len(racks) > 1
	for _, p := range ps {
		fixed = fixed && len(p.Replicas) >= len(racks)
	}
	if fixed {
		for rack := range racks {
			lo, hi := spread(count, func(id int32) bool { return rackOf[id] == rack })
			assert.LessOrEqual(t, hi-lo, 1, "replicas per broker of rack %s from %d to %d", rack, lo, hi)
		}
	} else {
		lo, hi := spread(count, all)
		assert.LessOrEqual(t, hi-lo, 1, "replicas per broker from %d to %d", lo, hi)
	}
	lo, hi := spread(leaders, all)
	assert.LessOrEqual(t, hi-lo, 1, "preferred leaders per broker from %d to %d", lo, hi)
}

func TestPlanAfterABrokerJoins(t *testing.T) {
	for _, c := range []struct{ brokers, racks, partitions, rf int }{
		{6, 3, 1000, 3}, {10, 1, 5000, 2}, {30, 3, 20000, 3}, {12, 4, 777, 1}, {8, 4, 4000, 2}, {6, 3, 600, 4},
	} {
		t.Run(fmt.Sprintf("%d brokers %d racks %d partitions rf %d", c.brokers, c.racks, c.partitions, c.rf), func(t *testing.T) {
			brokers, ps := cluster(c.brokers, c.racks, c.partitions, c.rf)
			for _, rack := range []int{(c.brokers + 1) % c.racks, (c.brokers + 2) % c.racks} {
				t.Run(fmt.Sprintf("joins rack %d", rack), func(t *testing.T) {
					joined := append(slices.Clone(brokers), Broker{ID: int32(c.brokers + 1), Rack: fmt.Sprintf("rack-%d", rack)})
					checkJoin(t, joined, ps)
				})
			}
		})
	}
}

// The review's case: a broker joins the smaller of two racks, where the
// partitions span both; the plan moves no more than the minimum, not
// first to the cluster's mean and then back.
func TestPlanJoiningASmallRack(t *testing.T) {
	var brokers []Broker
	for id := int32(1); id <= 8; id++ {
		rack := "b"
		if id <= 2 {
			rack = "a"
		}
		brokers = append(brokers, Broker{ID: id, Rack: rack})
	}
	ps := make([]Partition, 120)
	for i := range ps {
		ps[i] = Partition{Replicas: []int32{int32(1 + i%2), int32(3 + i%6)}}
	}
	brokers = append(brokers, Broker{ID: 9, Rack: "a"})
	checkJoin(t, brokers, ps)
}

func checkJoin(t *testing.T, brokers []Broker, ps []Partition) {
	t.Helper()
	moves := Plan(brokers, ps, Options{})
	after := applyMoves(ps, moves)
	checkBalanced(t, brokers, after, nil)
	least := minimum(brokers, ps, nil)
	assert.LessOrEqual(t, float64(replicaMoves(ps, after)), 1.1*float64(least), "replica moves against the %d needed", least)
	assert.Equal(t, moves, Plan(brokers, ps, Options{}), "the same plan from the same state")
	assert.Empty(t, Plan(brokers, after, Options{}), "a balanced cluster needs no move")
}

func TestPlanDrainsABroker(t *testing.T) {
	brokers, ps := cluster(9, 3, 3000, 3)
	drain := []int32{4}
	after := applyMoves(ps, Plan(brokers, ps, Options{Drain: drain}))
	checkBalanced(t, brokers, after, drain)
	assert.LessOrEqual(t, float64(replicaMoves(ps, after)), 1.1*float64(minimum(brokers, ps, drain)))
}

// Replicas on brokers the plan is not given (gone) stay; the others
// balance around them.
func TestPlanLeavesReplicasOfUnknownBrokers(t *testing.T) {
	brokers, ps := cluster(6, 1, 600, 2)
	moves := Plan(brokers[:5], ps, Options{})
	after := applyMoves(ps, moves)
	for i := range ps {
		assert.Equal(t, slices.Contains(ps[i].Replicas, 6), slices.Contains(after[i].Replicas, 6))
	}
}

// BenchmarkPlanMillionPartitions: a plan for a million partitions of three
// replicas on 100 brokers in 4 racks, after a 101st joins; the plan must
// balance with at most 10% more moves than needed.
func BenchmarkPlanMillionPartitions(b *testing.B) {
	brokers, ps := cluster(100, 4, 1_000_000, 3)
	brokers = append(brokers, Broker{ID: 101, Rack: "rack-1"})
	b.ResetTimer()
	var moves []Move
	for i := 0; i < b.N; i++ {
		moves = Plan(brokers, ps, Options{})
	}
	b.StopTimer()
	after := applyMoves(ps, moves)
	checkBalanced(b, brokers, after, nil)
	moved, least := replicaMoves(ps, after), minimum(brokers, ps, nil)
	if float64(moved) > 1.1*float64(least) {
		b.Fatalf("%d replica moves against the %d needed", moved, least)
	}
	b.ReportMetric(float64(len(moves)), "partitions-moved")
	b.ReportMetric(float64(moved)/float64(least), "moves/minimum")
}

// A preferred leadership moves to whichever broker a chain reaches: the
// brokers that may take the shares above the mean are not fixed in
// advance (found by the simulator, seed 249: broker 3 led two of the
// partitions counted, 2 and 4 none, and the one share above the mean had
// gone to broker 2, which follows 3 nowhere).
func TestPlanLeadershipGoesWhereAChainReaches(t *testing.T) {
	brokers := []Broker{{ID: 2, Rack: "rack-2"}, {ID: 3, Rack: "rack-0"}, {ID: 4, Rack: "rack-1"}}
	ps := []Partition{{Replicas: []int32{101, 3, 1}}, {Replicas: []int32{100, 2, 3}}, {Replicas: []int32{3, 101, 1}},
		{Replicas: []int32{1, 3, 2}}, {Replicas: []int32{3, 101, 4}}, {Replicas: []int32{1, 101, 3}}}
	after := applyMoves(ps, Plan(brokers, ps, Options{}))
	leaders := map[int32]int{2: 0, 3: 0, 4: 0}
	for _, p := range after {
		if _, ok := leaders[p.Replicas[0]]; ok {
			leaders[p.Replicas[0]]++
		}
	}
	lo, hi := 100, 0
	for _, c := range leaders {
		lo, hi = min(lo, c), max(hi, c)
	}
	assert.LessOrEqual(t, hi-lo, 1, "preferred leaders per broker: %v", leaders)
}

// A broker being drained whose replica no other broker can take keeps
// the replica but not the leadership (found in review: a spare share
// above the mean could go to the drained broker itself).
func TestPlanTakesLeadershipOffADrainedBrokerThatKeepsItsReplica(t *testing.T) {
	brokers := []Broker{{ID: 1}, {ID: 2}, {ID: 3}}
	ps := []Partition{{Replicas: []int32{1, 2, 3}}}
	after := applyMoves(ps, Plan(brokers, ps, Options{Drain: []int32{1}}))
	assert.NotEqual(t, int32(1), after[0].Replicas[0], "replicas %v", after[0].Replicas)
	assert.ElementsMatch(t, []int32{1, 2, 3}, after[0].Replicas)
}

// Four replicas over three racks (2/1/1): a move across racks keeps the
// partition spread over every rack but leaves one rack short of its
// brokers' shares and another over them (simulator seed 82, five replicas
// over three racks); replicas move within their racks.
func TestPlanKeepsRackTotalsWhereReplicasDoNotDivide(t *testing.T) {
	brokers := []Broker{{1, "rack-1"}, {2, "rack-2"}, {3, "rack-0"}, {4, "rack-1"}, {5, "rack-2"}, {6, "rack-0"}}
	ps := []Partition{{[]int32{5, 6, 1, 4}}, {[]int32{4, 1, 6, 5}}, {[]int32{2, 5, 6, 4}}}
	checkJoin(t, brokers, ps)
}
