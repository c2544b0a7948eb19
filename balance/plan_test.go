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

// minimumMoves is the fewest replica moves that can bring every broker
// within one of its rack's mean (where every partition spreads across the
// racks, no move can change a rack's total): the excess over the best
// shares within each rack.
func minimumMoves(brokers []Broker, ps []Partition, drain []int32) int {
	p := newPlanner(brokers, ps, Options{Drain: drain})
	return excess(p.count, p.rackShares())
}

// minimumMovesGlobally is the fewest replica moves that can bring every
// broker within one of the cluster's mean.
func minimumMovesGlobally(brokers []Broker, ps []Partition, drain []int32) int {
	p := newPlanner(brokers, ps, Options{Drain: drain})
	return excess(p.count, p.target)
}

func excess(counts, target []int) int {
	n := 0
	for b := range counts {
		n += max(0, counts[b]-target[b])
	}
	return n
}

// globallyBalanced says whether every broker holds within one of the mean.
func globallyBalanced(brokers []Broker, ps []Partition, drain []int32) bool {
	p := newPlanner(brokers, ps, Options{Drain: drain})
	return excess(p.count, p.target) == 0
}

// needed is the fewest moves that reach the balance the plan reached.
func needed(brokers []Broker, before, after []Partition, drain []int32) int {
	if globallyBalanced(brokers, after, drain) {
		return minimumMovesGlobally(brokers, before, drain)
	}
	return minimumMoves(brokers, before, drain)
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
		allowed := (len(p.Replicas) + len(racks) - 1) / len(racks)
		for rack, n := range inRack {
			require.LessOrEqual(t, n, allowed, "partition %d has %d replicas in rack %s: %v", i, n, rack, p.Replicas)
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
	// Within each rack always; across the cluster when the racks are of
	// one size (every partition spreads across them, so a smaller rack's
	// brokers hold more).
	sizes := map[string]int{}
	for _, b := range brokers {
		if !slices.Contains(drain, b.ID) {
			sizes[b.Rack]++
		}
	}
	for rack := range racks {
		lo, hi := spread(count, func(id int32) bool { return rackOf[id] == rack })
		assert.LessOrEqual(t, hi-lo, 1, "replicas per broker of rack %s from %d to %d", rack, lo, hi)
	}
	equal := true
	for _, n := range sizes {
		equal = equal && n == sizes[brokers[0].Rack]
	}
	if equal || len(racks) == 1 {
		lo, hi := spread(count, all)
		assert.LessOrEqual(t, hi-lo, 1, "replicas per broker from %d to %d", lo, hi)
	}
	lo, hi := spread(leaders, all)
	assert.LessOrEqual(t, hi-lo, 1, "preferred leaders per broker from %d to %d", lo, hi)
}

func TestPlanAfterABrokerJoins(t *testing.T) {
	for _, c := range []struct{ brokers, racks, partitions, rf int }{
		{6, 3, 1000, 3}, {10, 1, 5000, 2}, {30, 3, 20000, 3}, {12, 4, 777, 1},
	} {
		t.Run(fmt.Sprintf("%d brokers %d racks %d partitions rf %d", c.brokers, c.racks, c.partitions, c.rf), func(t *testing.T) {
			brokers, ps := cluster(c.brokers, c.racks, c.partitions, c.rf)
			brokers = append(brokers, Broker{ID: int32(c.brokers + 1), Rack: fmt.Sprintf("rack-%d", (c.brokers+1)%c.racks)})
			moves := Plan(brokers, ps, Options{})
			after := applyMoves(ps, moves)
			checkBalanced(t, brokers, after, nil)
			minimum := needed(brokers, ps, after, nil)
			assert.LessOrEqual(t, float64(replicaMoves(ps, after)), 1.1*float64(minimum), "replica moves against the %d needed", minimum)
			assert.Equal(t, moves, Plan(brokers, ps, Options{}), "the same plan from the same state")
			assert.Empty(t, Plan(brokers, after, Options{}), "a balanced cluster needs no move")
		})
	}
}

func TestPlanDrainsABroker(t *testing.T) {
	brokers, ps := cluster(9, 3, 3000, 3)
	drain := []int32{4}
	after := applyMoves(ps, Plan(brokers, ps, Options{Drain: drain}))
	checkBalanced(t, brokers, after, drain)
	assert.LessOrEqual(t, float64(replicaMoves(ps, after)), 1.1*float64(needed(brokers, ps, after, drain)))
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
	moved, minimum := replicaMoves(ps, after), needed(brokers, ps, after, nil)
	if float64(moved) > 1.1*float64(minimum) {
		b.Fatalf("%d replica moves against the %d needed", moved, minimum)
	}
	b.ReportMetric(float64(len(moves)), "partitions-moved")
	b.ReportMetric(float64(moved)/float64(minimum), "moves/minimum")
}
