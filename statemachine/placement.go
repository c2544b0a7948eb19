package statemachine

import "sort"

// brokerRing is the eligible brokers arranged for placement: rack-
// alternated (first broker of each rack, then the second of each, ...), so
// that consecutive positions are on different racks, with each position's
// rack numbered. Built once per record: a batch places every topic on the
// same ring.
type brokerRing struct {
	arranged []*broker
	rackOf   []int
	racks    int
}

func newBrokerRing(eligible []*broker) *brokerRing {
	r := &brokerRing{arranged: rackAlternated(eligible), rackOf: make([]int, len(eligible))}
	rackIndex := map[string]int{}
	for i, b := range r.arranged {
		index, ok := rackIndex[b.rack]
		if !ok {
			index = len(rackIndex)
			rackIndex[b.rack] = index
		}
		r.rackOf[i] = index
	}
	r.racks = len(rackIndex)
	return r
}

// placePartitions appends count partitions, numbered from first, to parts,
// placing rf replicas each on the ring's brokers.
//
// Partition p's leader is the broker at position (offset + p) mod n:
// leaders stripe across brokers and racks, and within one placement no
// broker leads more than one partition more than any other. Followers are
// taken from the positions after the leader, shifted once per full round so
// that replica sets vary, always preferring a rack that holds the fewest of
// this partition's replicas so far: replica sets spread across racks as
// evenly as the racks' sizes allow.
//
// Deterministic: the result depends only on the arguments.
func placePartitions(parts []partition, ring *brokerRing, first, count, rf int, offset uint32) []partition {
	arranged, rackOf := ring.arranged, ring.rackOf
	n := len(arranged)
	if rf < 1 || rf > n {
		panic("statemachine: placement called with a replication factor the caller did not validate")
	}
	rackCount := make([]int, ring.racks)
	used := make([]bool, n)
	candidates := make([]int, 0, n)
	// One backing array for all replica lists of this placement keeps the
	// heap per partition small; each partition's slice is capped at its
	// own length so appending never spills into a neighbour.
	replicaArena := make([]int32, count*rf)
	isrArena := make([]int32, count*rf)
	start := int(offset % uint32(n))
	shiftBase := int((offset / uint32(n)) % uint32(max(n-1, 1)))
	for k := 0; k < count; k++ {
		p := first + k
		leaderPos := (start + p) % n
		shift := (shiftBase + p/n) % max(n-1, 1)
		for i := range used {
			used[i] = false
		}
		for i := range rackCount {
			rackCount[i] = 0
		}
		replicas := replicaArena[k*rf : k*rf+rf : k*rf+rf]
		replicas[0] = arranged[leaderPos].id
		used[leaderPos] = true
		rackCount[rackOf[leaderPos]]++
		candidates = candidates[:0]
		for j := 0; j < n-1; j++ {
			candidates = append(candidates, (leaderPos+1+(shift+j)%(n-1))%n)
		}
		for r := 1; r < rf; r++ {
			best := -1
			for _, pos := range candidates {
				if used[pos] {
					continue
				}
				if best == -1 || rackCount[rackOf[pos]] < rackCount[rackOf[best]] {
					best = pos
				}
			}
			used[best] = true
			rackCount[rackOf[best]]++
			replicas[r] = arranged[best].id
		}
		isr := isrArena[k*rf : k*rf+rf : k*rf+rf]
		copy(isr, replicas)
		parts = append(parts, partition{replicas: replicas, isr: isr, leader: replicas[0]})
	}
	return parts
}

// rackAlternated orders brokers by rack round robin: racks sorted by name,
// brokers within a rack by id (the input order).
func rackAlternated(brokers []*broker) []*broker {
	byRack := map[string][]*broker{}
	var racks []string
	for _, b := range brokers {
		if _, ok := byRack[b.rack]; !ok {
			racks = append(racks, b.rack)
		}
		byRack[b.rack] = append(byRack[b.rack], b)
	}
	sort.Strings(racks)
	out := make([]*broker, 0, len(brokers))
	for round := 0; len(out) < len(brokers); round++ {
		for _, rack := range racks {
			if round < len(byRack[rack]) {
				out = append(out, byRack[rack][round])
			}
		}
	}
	return out
}
