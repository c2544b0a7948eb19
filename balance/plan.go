package balance

import (
	"cmp"
	"slices"
)

// Broker is a broker that may hold replicas.
type Broker struct {
	ID   int32
	Rack string
}

// Partition is a partition's replica list in preferred order: Replicas[0]
// is its preferred leader.
type Partition struct {
	Replicas []int32
}

// Move is a partition's new replica list.
type Move struct {
	Partition int
	Replicas  []int32
}

// Options shape a plan.
type Options struct {
	// Drain names brokers that must hold no replica afterwards
	// (decommissioned): every replica of theirs moves, whatever the
	// balance.
	Drain []int32
}

// Plan returns the moves that bring every broker's replica count within one
// of the mean over the brokers (those not drained), or within one of its
// rack's mean where every partition spans every rack, and every broker's
// preferred-leader count within one of the mean as far as reordering the
// replica lists allows, changing as few replicas
// as it can: a replica moves from a broker above its share to one below
// it, in the same position of the replica list, and only where the
// receiving broker's rack does not then hold more of the partition's
// replicas than an even spread across racks allows; preferred leaders are
// then balanced by reordering replica lists (which moves no data).
// Replicas on brokers not given (gone) are left where they are. The moves
// are sorted by partition.
func Plan(brokers []Broker, partitions []Partition, opts Options) []Move {
	p := newPlanner(brokers, partitions, opts)
	if p.racksFixed(partitions) {
		// Every partition spreads over every rack: each rack's brokers
		// share its replicas (racks of unequal sizes cannot hold equal
		// shares of the cluster's), and a replica moves only within its
		// rack, which keeps each rack's total. (Where a partition's
		// replicas do not divide evenly over the racks, a move across
		// racks can keep it spread, but would leave one rack short of
		// its shares and another over them.)
		p.target = p.rackShares()
		p.withinRack = true
	}
	p.balanceReplicas()
	p.balanceLeaders()
	return p.moves(partitions)
}

// racksFixed says whether there are several racks and every partition has
// at least as many replicas as there are racks.
func (p *planner) racksFixed(partitions []Partition) bool {
	if p.racks <= 1 {
		return false
	}
	for _, part := range partitions {
		if len(part.Replicas) < p.racks {
			return false
		}
	}
	return true
}

// rackShares splits each rack's replicas over its brokers (not drained).
func (p *planner) rackShares() []int {
	target := make([]int, len(p.ids))
	for r := 0; r < p.racks; r++ {
		counts := make([]int, len(p.ids))
		drained := make([]bool, len(p.ids))
		for b := range p.ids {
			if p.rack[b] == r {
				counts[b] = p.count[b]
			}
			drained[b] = p.drained[b] || p.rack[b] != r
		}
		for b, t := range shares(counts, drained) {
			if p.rack[b] == r {
				target[b] = t
			}
		}
	}
	return target
}

type planner struct {
	ids      []int32 // brokers by index, sorted by id
	index    map[int32]int
	rack     []int     // rack number of each broker
	racks    int       // number of racks
	drained  []bool    // by broker index
	replicas [][]int32 // the plan's replica lists, by partition (copies only where changed)
	changed  []bool    // by partition
	holds    [][]int32 // partitions each broker holds, by broker index
	count    []int     // replicas per broker
	target   []int     // the replica share of each broker
	leaders  []int     // preferred leaderships per broker
	// leaderTarget is the preferred-leader share of each broker.
	leaderTarget []int
	// withinRack: target holds rack shares, so a replica moves only to a
	// broker of its rack (a drained broker's, where none may take it,
	// goes to the least loaded: leastLoadedFor).
	withinRack bool
}

func newPlanner(brokers []Broker, partitions []Partition, opts Options) *planner {
	sorted := slices.Clone(brokers)
	slices.SortFunc(sorted, func(a, b Broker) int { return cmp.Compare(a.ID, b.ID) })
	p := &planner{index: make(map[int32]int, len(sorted))}
	rackIndex := map[string]int{}
	for i, b := range sorted {
		p.ids = append(p.ids, b.ID)
		p.index[b.ID] = i
		r, ok := rackIndex[b.Rack]
		if !ok {
			r = len(rackIndex)
			rackIndex[b.Rack] = r
		}
		p.rack = append(p.rack, r)
	}
	p.racks = len(rackIndex)
	n := len(p.ids)
	p.drained = make([]bool, n)
	for _, id := range opts.Drain {
		if i, ok := p.index[id]; ok {
			p.drained[i] = true
		}
	}
	p.replicas = make([][]int32, len(partitions))
	p.changed = make([]bool, len(partitions))
	p.holds = make([][]int32, n)
	p.count = make([]int, n)
	p.leaders = make([]int, n)
	for i, part := range partitions {
		p.replicas[i] = part.Replicas
		for j, id := range part.Replicas {
			if b, ok := p.index[id]; ok {
				p.holds[b] = append(p.holds[b], int32(i))
				p.count[b]++
				if j == 0 {
					p.leaders[b]++
				}
			}
		}
	}
	p.target = shares(p.count, p.drained)
	p.leaderTarget = shares(p.leaders, p.drained)
	return p
}

// shares splits the total of counts over the brokers not drained, each
// getting the floor or the ceiling of the mean; the ceilings go to the
// brokers holding the most already (then the lower ids), which is what
// keeps the moves fewest.
func shares(counts []int, drained []bool) []int {
	total, live := 0, 0
	order := make([]int, 0, len(counts))
	for b, c := range counts {
		total += c
		if !drained[b] {
			live++
			order = append(order, b)
		}
	}
	target := make([]int, len(counts))
	if live == 0 {
		return target
	}
	slices.SortStableFunc(order, func(a, b int) int { return cmp.Compare(counts[b], counts[a]) })
	for k, b := range order {
		target[b] = total / live
		if k < total%live {
			target[b]++
		}
	}
	return target
}

// writable is partition i's replica list, copied on first change.
func (p *planner) writable(i int32) []int32 {
	if !p.changed[i] {
		p.replicas[i] = slices.Clone(p.replicas[i])
		p.changed[i] = true
	}
	return p.replicas[i]
}

// rackRoom says whether broker to may take a replica of partition i in
// place of from: its rack then holds no more of the partition's replicas
// than an even spread allows, and from's rack no fewer.
func (p *planner) rackRoom(i int32, from, to int) bool {
	if p.racks <= 1 || p.rack[from] == p.rack[to] {
		return true
	}
	reps := p.replicas[i]
	most, least := (len(reps)+p.racks-1)/p.racks, len(reps)/p.racks
	inTo, inFrom := 0, 0
	for _, id := range reps {
		b, ok := p.index[id]
		if !ok {
			continue
		}
		if p.rack[b] == p.rack[to] {
			inTo++
		}
		if p.rack[b] == p.rack[from] {
			inFrom++
		}
	}
	// The receiving rack may not hold more than an even spread allows,
	// nor the giving one fewer.
	return inTo+1 <= most && inFrom-1 >= least
}

func (p *planner) holdsReplica(i int32, b int) bool {
	return slices.Contains(p.replicas[i], p.ids[b])
}

// balanceReplicas moves replicas from brokers above their share to brokers
// below it: each donor gives its partitions, the last taken first, to the
// receivers furthest below their share that may take them. A donor with
// preferred leaderships to spare gives those first, to receivers short of
// leaderships: a replica keeps its position, so the leadership moves with
// it, and the leaders balance with the replicas, with no move of their own.
func (p *planner) balanceReplicas() {
	n := len(p.ids)
	for donor := 0; donor < n; donor++ {
		p.give(donor, true)
		p.give(donor, false)
	}
}

// give moves the donor's replicas while it is above its share: with
// preferred set, only those it is the preferred leader of, while it has
// leaderships to spare, to receivers short of them.
func (p *planner) give(donor int, preferred bool) {
	held := p.holds[donor]
	for k := len(held) - 1; k >= 0 && p.count[donor] > p.target[donor]; k-- {
		i := held[k]
		if i < 0 {
			continue
		}
		leads := p.replicas[i][0] == p.ids[donor]
		if preferred && (!leads || p.leaders[donor] <= p.leaderTarget[donor]) {
			continue
		}

		best := -1
		for r := range p.ids {
			if p.count[r] >= p.target[r] || p.drained[r] || (preferred && p.leaders[r] >= p.leaderTarget[r]) ||
				p.holdsReplica(i, r) || !p.rackRoom(i, donor, r) || p.withinRack && p.rack[r] != p.rack[donor] {
				continue
			}
			if best < 0 || p.target[r]-p.count[r] > p.target[best]-p.count[best] {
				best = r
			}
		}
		if best < 0 && !preferred && p.drained[donor] {
			// A drained broker's replica moves even where no broker
			// below its share may take it: to the least loaded that
			// may, keeping racks even if it can, else any.
			best = p.leastLoadedFor(i, donor, true)
			if best < 0 {
				best = p.leastLoadedFor(i, donor, false)
			}
		}
		if best < 0 {
			continue
		}
		reps := p.writable(i)
		pos := slices.Index(reps, p.ids[donor])
		reps[pos] = p.ids[best]
		p.count[donor]--
		p.count[best]++
		if pos == 0 {
			p.leaders[donor]--
			p.leaders[best]++
		}
		p.holds[best] = append(p.holds[best], i)
		held[k] = -1
	}
	p.holds[donor] = slices.DeleteFunc(held, func(i int32) bool { return i < 0 })
}

// leastLoadedFor is the broker with the fewest replicas (then the lowest
// id) that is not drained, does not hold partition i and, if racks is set,
// may take it in place of from; -1 if none.
func (p *planner) leastLoadedFor(i int32, from int, racks bool) int {
	best := -1
	for b := range p.ids {
		if p.drained[b] || p.holdsReplica(i, b) || (racks && !p.rackRoom(i, from, b)) {
			continue
		}
		if best < 0 || p.count[b] < p.count[best] {
			best = b
		}
	}
	return best
}

// balanceLeaders moves preferred leaderships from brokers above their
// share to brokers below it by reordering replica lists (no data moves).
// A leadership moves along a chain of swaps: from a broker A to a broker B
// that follows A in some partition A leads, from B to a C that follows B
// where B leads, and so on until a broker below its share: each broker on
// the way keeps its count. Chains are found breadth first, shortest first.
func (p *planner) balanceLeaders() {
	n := len(p.ids)
	target := p.leaderTarget
	// led[a][b] lists the partitions a leads and b follows in.
	led := make([]map[int][]int32, n)
	for a := range led {
		led[a] = map[int][]int32{}
	}
	for i, reps := range p.replicas {
		if len(reps) < 2 {
			continue
		}
		a, ok := p.index[reps[0]]
		if !ok {
			continue
		}
		for _, id := range reps[1:] {
			if b, ok := p.index[id]; ok && !p.drained[b] {
				led[a][b] = append(led[a][b], int32(i))
			}
		}
	}
	// swap makes b lead partition i, which a leads, keeping led current.
	swap := func(i int32, a, b int) {
		reps := p.writable(i)
		j := slices.Index(reps, p.ids[b])
		reps[0], reps[j] = reps[j], reps[0]
		p.leaders[a]--
		p.leaders[b]++
		for _, id := range reps[1:] {
			c, ok := p.index[id]
			if !ok || p.drained[c] {
				continue
			}
			// i leaves a's lists and joins b's.
			if c != a {
				list := led[a][c]
				if k := slices.Index(list, i); k >= 0 {
					led[a][c] = slices.Delete(list, k, k+1)
				}
			}
			led[b][c] = append(led[b][c], i)
		}
		if list := led[a][b]; true {
			if k := slices.Index(list, i); k >= 0 {
				led[a][b] = slices.Delete(list, k, k+1)
			}
		}
	}
	// The shares above the mean (the mean's ceiling) may go to any
	// broker: spare is a broker holding one it does not fill, whose share
	// can pass to a broker a chain reaches, or to a donor that keeps one
	// leadership more than its share.
	spare := func(not int) int {
		for c := range target {
			if c != not && !p.drained[c] && target[c] > 0 && p.leaders[c] < target[c] && target[c] > minShare(target, p.drained) {
				return c
			}
		}
		return -1
	}
	from := make([]int, n)
	search := func(donor int, reaches func(b int) bool) int {
		// Breadth first from the donor to a broker that may take one.
		for b := range from {
			from[b] = -1
		}
		from[donor] = donor
		queue := []int{donor}
		for len(queue) > 0 {
			a := queue[0]
			queue = queue[1:]
			for b := 0; b < n; b++ {
				if from[b] >= 0 || len(led[a][b]) == 0 {
					continue
				}
				from[b] = a
				if reaches(b) {
					return b
				}
				queue = append(queue, b)
			}
		}
		return -1
	}
	for donor := 0; donor < n; donor++ {
		for p.leaders[donor] > target[donor] {
			if c := spare(donor); c >= 0 && !p.drained[donor] && p.leaders[donor] == target[donor]+1 && target[donor] == minShare(target, p.drained) {
				target[c]--
				target[donor]++
				continue
			}
			end := search(donor, func(b int) bool { return p.leaders[b] < target[b] })
			if end < 0 {
				floor := minShare(target, p.drained)
				end = search(donor, func(b int) bool { return target[b] == floor && p.leaders[b] == floor && spare(b) >= 0 })
				if end < 0 {
					break
				}
				c := spare(end)
				target[c]--
				target[end]++
			}
			// Swap along the chain, from its end back to the donor.
			for b := end; b != donor; b = from[b] {
				a := from[b]
				list := led[a][b]
				swap(list[len(list)-1], a, b)
			}
		}
	}
}

// moves lists the partitions whose replica list changed.
func (p *planner) moves(partitions []Partition) []Move {
	var out []Move
	for i, reps := range p.replicas {
		if p.changed[i] && !slices.Equal(reps, partitions[i].Replicas) {
			out = append(out, Move{Partition: i, Replicas: reps})
		}
	}
	return out
}

// minShare is the smallest share of a broker not drained.
func minShare(target []int, drained []bool) int {
	least := -1
	for b, t := range target {
		if !drained[b] && (least < 0 || t < least) {
			least = t
		}
	}
	return max(least, 0)
}
