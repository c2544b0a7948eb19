package statemachine

import metadatav1 "github.com/dmq-project/metadata/rpc/gen/dmq/metadata/v1"

// DedupCapacity bounds the request-id table. It is replicated behaviour (a
// request evicted on one node must be evicted on all), hence a constant.
const DedupCapacity = 10_000

type requestKey struct {
	clientID string
	sequence uint64
}

// dedupTable remembers the results of the most recent DedupCapacity
// requests that carried an id, evicting in apply order. It is part of the
// snapshot and of the hash: two nodes must agree on what a retry returns.
type dedupTable struct {
	results map[requestKey]Result
	// order is a ring of keys in apply order; next is the slot to overwrite.
	order []requestKey
	next  int
}

func newDedupTable() dedupTable {
	return dedupTable{results: make(map[requestKey]Result)}
}

func requestKeyOf(id *metadatav1.RequestId) (requestKey, bool) {
	if id == nil || id.ClientId == "" {
		return requestKey{}, false
	}
	return requestKey{clientID: id.ClientId, sequence: id.Sequence}, true
}

func (d *dedupTable) lookup(key requestKey) (Result, bool) {
	r, ok := d.results[key]
	return r, ok
}

func (d *dedupTable) remember(key requestKey, r Result) {
	if _, ok := d.results[key]; ok {
		panic("statemachine: request id remembered twice: the lookup before apply was skipped")
	}
	if len(d.order) < DedupCapacity {
		d.order = append(d.order, key)
	} else {
		delete(d.results, d.order[d.next])
		d.order[d.next] = key
		d.next = (d.next + 1) % DedupCapacity
	}
	d.results[key] = r
	if len(d.results) != len(d.order) {
		panic("statemachine: dedup table and its ring disagree")
	}
}

// inOrder returns the keys oldest first.
func (d *dedupTable) inOrder() []requestKey {
	out := make([]requestKey, 0, len(d.order))
	out = append(out, d.order[d.next:]...)
	return append(out, d.order[:d.next]...)
}
