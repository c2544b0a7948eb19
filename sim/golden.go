package sim

import (
	"cmp"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/dmq-project/metadata/client"
	metadatav1 "github.com/dmq-project/metadata/gen/dmq/metadata/v1"
	"github.com/dmq-project/metadata/statemachine"
	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"
)

// golden is a reference replica: a state machine that applies every
// committed entry once, in index order, as the first controller to apply
// it does. It carries three checks no controller can make on itself:
//
//   - snapshot equivalence: at sampled indexes a twin is restored from the
//     golden's snapshot and must then answer every record exactly as the
//     golden does (results, duplicates, versions). A field the snapshot
//     forgets fails here even when the state hash forgets it too, since
//     both come from the same encoding;
//   - at most once: a request id succeeds (applied, not a duplicate) at
//     most once;
//   - answers: a client's definite answer to a write is what an
//     application of its request id gave (its session remembers the first
//     answer, success or error, and gives it to every retry), and a
//     request answered with an error never succeeds later.
type golden struct {
	sm    *statemachine.StateMachine
	twins []*twin
	// succeeded is each request id's success; rejected the error codes its
	// applications gave; answeredError the error a client was answered.
	succeeded     map[requestKey]statemachine.Result
	rejected      map[requestKey]map[metadatav1.ErrorCode]bool
	answeredError map[requestKey]string
	// off: an index arrived out of order (the check reports it once).
	off bool
	// plans are the balancing plans applied, in order.
	plans []appliedPlan
	// fencedAt is the index of each fenced broker's last fence.
	fencedAt map[int32]uint64
	// preferredOutAt is when, in simulated time, each partition (by
	// preferredKey) last had its preferred replica leave the ISR, and
	// brokerOutAt when each broker last stopped being eligible (fenced,
	// shutting down, unregistered): what checkPreferredLeaders needs to know
	// that a preferred replica stayed in the ISR and eligible throughout.
	preferredOutAt map[string]time.Duration
	brokerOutAt    map[int32]time.Duration
	// electable is, per partition (preferredKey), its leader after the last
	// record that changed it.
	electable map[string][]int32
	elrOf     map[string][]int32
	// clean is, per partition, the replicas known to hold every committed
	// record (checkElections).
	clean map[string][]int32
}

// appliedPlan is a balancing plan the golden replica applied: when, at
// which index, the request that asked for it (nil for a plan the
// controller made itself), which brokers it drains.
type appliedPlan struct {
	at        time.Duration
	index     uint64
	requestID *metadatav1.RequestId
	drain     []int32
}

type requestKey struct {
	session  uint64
	sequence uint64
}

type twin struct {
	sm    *statemachine.StateMachine
	from  uint64
	until uint64
}

const (
	// twinEvery is how often (in indexes) a twin is restored, twinLife how
	// many entries it is compared for, twinsMax how many live at once.
	twinEvery = 97
	twinLife  = 300
	twinsMax  = 2
)

func newGolden() *golden {
	sm := statemachine.New()
	sm.Advance(1) // the bootstrap snapshot's index
	return &golden{sm: sm, succeeded: map[requestKey]statemachine.Result{},
		rejected: map[requestKey]map[metadatav1.ErrorCode]bool{}, answeredError: map[requestKey]string{},
		fencedAt: map[int32]uint64{}, preferredOutAt: map[string]time.Duration{}, brokerOutAt: map[int32]time.Duration{},
		electable: map[string][]int32{}, elrOf: map[string][]int32{}, clean: map[string][]int32{}}
}

// applied sees an entry some controller applied; the first sighting of
// each index is applied to the golden replica and its twins.
func (g *golden) applied(s *Sim, entry *raftpb.Entry) {
	index := entry.GetIndex()
	next := g.sm.AppliedIndex() + 1
	if g.off || index < next {
		return
	}
	if index > next {
		g.off = true
		s.violate("golden replica: entry %d applied before entry %d was applied anywhere", index, next)
		return
	}
	var record *metadatav1.Record
	if entry.GetType() == raftpb.EntryNormal && len(entry.GetData()) > 0 {
		record = &metadatav1.Record{}
		if proto.Unmarshal(entry.GetData(), record) != nil {
			record = nil
		}
	}
	moving := g.sm.Reassignments()
	originals := g.originalsOf(record, moving)
	result := apply(g.sm, entry, record)
	if record != nil {
		g.checkMoves(s, index, record, moving, originals)
		if record.GetRebalance() != nil && result.Err == nil {
			g.plans = append(g.plans, appliedPlan{at: s.now, index: index, requestID: record.GetRequestId(), drain: record.GetRebalance().GetDrain()})
		}
	}
	g.checkElections(s, index, record)
	for _, t := range g.twins {
		var copied *metadatav1.Record
		if record != nil {
			copied = proto.CloneOf(record)
		}
		if got := apply(t.sm, entry, copied); !sameResult(got, result) {
			s.violate("snapshot equivalence: a state machine restored at %d answers entry %d with %s, the original with %s",
				t.from, index, describeResult(got), describeResult(result))
		}
	}
	if record != nil && record.GetRequestId() != nil {
		g.noteResult(s, keyOf(record.GetRequestId()), result)
	}
	if result.Err == nil {
		g.checkUnfence(s, index, record)
		g.notePreferredOut(s, record)
	}
	g.rollTwins(s, index)
}

// checkUnfence checks that a broker is unfenced only once caught up: its
// storage service, in the registration the record names, holds at least
// the metadata of its fence (the controllers wait for a version at least
// that of their state when it came back, and a service's version never goes
// back).
func (g *golden) checkUnfence(s *Sim, index uint64, record *metadatav1.Record) {
	if f := record.GetFenceBroker(); f != nil {
		g.fencedAt[f.GetBrokerId()] = index
		return
	}
	u := record.GetUnfenceBroker()
	if u == nil {
		return
	}
	id := u.GetBrokerId()
	fenced, ok := g.fencedAt[id]
	delete(g.fencedAt, id)
	if !ok || id < 1 || int(id) > len(s.services) {
		return
	}
	if svc := s.services[id-1]; svc.agent.Epoch() == u.GetBrokerEpoch() && svc.version() < int64(fenced) {
		s.violate("broker %d unfenced at index %d holding version %d, before its fence at %d: a returning broker is unfenced only once caught up",
			id, index, svc.version(), fenced)
	}
}

// checkElections holds every partition's leader and ELR to a model of its
// own: the replicas known to hold every committed record ("clean"). While
// the ISR is at min.insync.replicas or more, records commit on it alone:
// the clean ones are the ISR. Below it nothing commits: those clean stay
// so, and the ISR's members (a replica the leader adds has caught up) join
// them. A new leader must be clean (or, for the ISR change that completes
// a move, in the ISR it asks for), and so must every ELR member, unless
// the topic allows unclean elections, after which only the leader is.
func (g *golden) checkElections(s *Sim, index uint64, record *metadatav1.Record) {
	delta, ok := g.sm.DeltaSince(int64(index) - 1)
	if !ok {
		return
	}
	check := func(t *metadatav1.Topic, p *metadatav1.Partition) {
		key := preferredKey(t, p)
		was, known := g.electable[key]
		clean := g.clean[key]
		allowed := slices.Clone(clean)
		if ap := record.GetAlterPartition(); ap != nil && ap.GetTopic() == t.GetName() && ap.GetPartition() == p.GetPartition() {
			allowed = append(allowed, ap.GetNewIsr()...)
		}
		unclean := t.GetConfig().GetUncleanLeaderElectionEnable()
		leader := p.GetLeader()
		electedUnclean := false
		if known && leader != statemachine.NoLeader && !slices.Contains(was, leader) && !slices.Contains(allowed, leader) {
			if !unclean {
				s.violate("elections: %s is led by %d at %d, which does not hold every committed record (those that do: %v)",
					key, leader, index, clean)
			}
			electedUnclean = true
		}
		if known && !electedUnclean && !unclean {
			for _, id := range p.GetEligibleLeaderReplicas() {
				if !slices.Contains(allowed, id) {
					s.violate("elections: %s has %d in its ELR at %d, which does not hold every committed record (those that do: %v)",
						key, id, index, clean)
				}
			}
		}
		if known && leader != statemachine.NoLeader && len(was) > 0 && leader != was[0] && slices.Contains(g.elrOf[key], leader) {
			s.fault("elr-election")
		}
		switch {
		case !known || electedUnclean:
			clean = slices.Clone(p.GetIsr())
		case len(p.GetIsr()) >= int(t.GetConfig().GetMinInsyncReplicas()):
			clean = slices.Clone(p.GetIsr())
		default:
			for _, id := range p.GetIsr() {
				if !slices.Contains(clean, id) {
					clean = append(clean, id)
				}
			}
		}
		g.clean[key] = clean
		g.electable[key] = []int32{leader}
		g.elrOf[key] = p.GetEligibleLeaderReplicas()
	}
	for _, t := range delta.GetUpsertedTopics() {
		for _, p := range t.GetPartitions() {
			check(t, p)
		}
	}
	for _, p := range delta.GetChangedPartitions() {
		if t := g.sm.Topic(p.GetTopic()); t != nil {
			check(t, p)
		}
	}
}

// originalsOf notes, before a reassignment, the replicas each partition it
// names moves from (its move's original ones while it moves).
func (g *golden) originalsOf(record *metadatav1.Record, moving []*metadatav1.OngoingReassignment) map[string][]int32 {
	ra := record.GetAlterPartitionReassignments()
	if ra == nil {
		return nil
	}
	out := map[string][]int32{}
	for _, item := range ra.GetReassignments() {
		key := fmt.Sprintf("%s-%d", item.GetTopic(), item.GetPartition())
		if t := g.sm.Topic(item.GetTopic()); t != nil && item.GetPartition() >= 0 && int(item.GetPartition()) < len(t.GetPartitions()) {
			out[key] = t.GetPartitions()[item.GetPartition()].GetReplicas()
		}
		for _, m := range moving {
			if m.GetTopic() == item.GetTopic() && m.GetPartition() == item.GetPartition() {
				out[key] = slices.DeleteFunc(slices.Clone(m.GetReplicas()), func(id int32) bool { return slices.Contains(m.GetAddingReplicas(), id) })
			}
		}
	}
	return out
}

// checkMoves checks the rules of a move, around every record: while a
// partition moves, its replicas are the target followed by the leaving
// ones; and a move ends only by a cancellation or a new target (a
// reassignment naming the partition), with its topic, or complete: the
// replicas are then the target, and every one of them in the ISR.
func (g *golden) checkMoves(s *Sim, index uint64, record *metadatav1.Record, before []*metadatav1.OngoingReassignment, originals map[string][]int32) {
	named := map[string]bool{}
	if ra := record.GetAlterPartitionReassignments(); ra != nil {
		for _, item := range ra.GetReassignments() {
			key := fmt.Sprintf("%s-%d", item.GetTopic(), item.GetPartition())
			named[key] = true
			// A reassignment that moves data and leaves no move behind
			// completed at once: its target must be in the ISR.
			t := g.sm.Topic(item.GetTopic())
			original, known := originals[key]
			if t == nil || !known || len(item.GetReplicas()) == 0 || int(item.GetPartition()) >= len(t.GetPartitions()) {
				continue
			}
			p := t.GetPartitions()[item.GetPartition()]
			sameSet := len(original) == len(item.GetReplicas()) &&
				!slices.ContainsFunc(original, func(id int32) bool { return !slices.Contains(item.GetReplicas(), id) })
			if len(p.GetAddingReplicas())+len(p.GetRemovingReplicas()) == 0 && !sameSet && slices.Equal(p.GetReplicas(), item.GetReplicas()) &&
				slices.ContainsFunc(item.GetReplicas(), func(id int32) bool { return !slices.Contains(p.GetIsr(), id) }) {
				s.violate("moves: %s moved to %v at %d at once, with ISR %v: not every target replica in the ISR", key, item.GetReplicas(), index, p.GetIsr())
			}
		}
	}
	after := map[string]*metadatav1.OngoingReassignment{}
	for _, m := range g.sm.Reassignments() {
		key := fmt.Sprintf("%s-%d", m.GetTopic(), m.GetPartition())
		after[key] = m
		target := m.GetReplicas()[:len(m.GetReplicas())-len(m.GetRemovingReplicas())]
		if !slices.Equal(m.GetReplicas()[len(target):], m.GetRemovingReplicas()) ||
			slices.ContainsFunc(m.GetAddingReplicas(), func(id int32) bool { return !slices.Contains(target, id) }) ||
			slices.ContainsFunc(m.GetRemovingReplicas(), func(id int32) bool { return slices.Contains(target, id) }) {
			s.violate("moves: %s at %d has replicas %v adding %v removing %v: not the target followed by the leaving ones",
				key, index, m.GetReplicas(), m.GetAddingReplicas(), m.GetRemovingReplicas())
		}
	}
	for _, m := range before {
		key := fmt.Sprintf("%s-%d", m.GetTopic(), m.GetPartition())
		if after[key] != nil || named[key] {
			continue
		}
		t := g.sm.Topic(m.GetTopic())
		if t == nil || int(m.GetPartition()) >= len(t.GetPartitions()) {
			continue // deleted with its topic
		}
		s.fault("move-completed")
		p := t.GetPartitions()[m.GetPartition()]
		target := m.GetReplicas()[:len(m.GetReplicas())-len(m.GetRemovingReplicas())]
		if !slices.Equal(p.GetReplicas(), target) || len(p.GetIsr()) != len(target) ||
			slices.ContainsFunc(target, func(id int32) bool { return !slices.Contains(p.GetIsr(), id) }) {
			s.violate("moves: %s finished its move to %v at %d (%T) with replicas %v and ISR %v: not every target replica in the ISR",
				key, target, index, record.GetBody(), p.GetReplicas(), p.GetIsr())
		}
	}
}

// notePreferredOut notes, for checkPreferredLeaders, a record that took a
// preferred replica out of an ISR or a broker out of eligibility.
func (g *golden) notePreferredOut(s *Sim, record *metadatav1.Record) {
	switch body := record.GetBody().(type) {
	case *metadatav1.Record_AlterPartition:
		r := body.AlterPartition
		if t := g.sm.Topic(r.GetTopic()); t != nil && int(r.GetPartition()) < len(t.GetPartitions()) {
			p := t.GetPartitions()[r.GetPartition()]
			if !slices.Contains(p.GetIsr(), p.GetReplicas()[0]) {
				g.preferredOutAt[preferredKey(t, p)] = s.now
			}
		}
	case *metadatav1.Record_AlterPartitionReassignments:
		// A reassignment may change the preferred replica without a new
		// leader epoch (a new order, a cancelled move).
		for _, ra := range body.AlterPartitionReassignments.GetReassignments() {
			if t := g.sm.Topic(ra.GetTopic()); t != nil && ra.GetPartition() >= 0 && int(ra.GetPartition()) < len(t.GetPartitions()) {
				g.preferredOutAt[preferredKey(t, t.GetPartitions()[ra.GetPartition()])] = s.now
			}
		}
	case *metadatav1.Record_FenceBroker:
		g.brokerOutAt[body.FenceBroker.GetBrokerId()] = s.now
	case *metadatav1.Record_BeginControlledShutdown:
		g.brokerOutAt[body.BeginControlledShutdown.GetBrokerId()] = s.now
	case *metadatav1.Record_UnregisterBroker:
		g.brokerOutAt[body.UnregisterBroker.GetBrokerId()] = s.now
	}
}

// rollTwins retires twins past their life (their state must equal the
// golden's) and restores a new one every twinEvery indexes.
func (g *golden) rollTwins(s *Sim, index uint64) {
	kept := g.twins[:0]
	for _, t := range g.twins {
		if index < t.until {
			kept = append(kept, t)
			continue
		}
		if t.sm.Hash() != g.sm.Hash() {
			s.violate("snapshot equivalence: a state machine restored at %d has another state at %d", t.from, index)
		}
	}
	g.twins = kept
	if index%twinEvery == 0 && len(g.twins) < twinsMax {
		restored, err := statemachine.Restore(g.sm.Snapshot())
		if err != nil {
			s.violate("snapshot equivalence: the snapshot at %d does not restore: %v", index, err)
			return
		}
		g.twins = append(g.twins, &twin{sm: restored, from: index, until: index + twinLife})
		g.checkRetries(s, restored, index)
	}
}

// checkRetries asks a restored twin how it would answer a retry of every
// request that has succeeded so far: as the original does, with the
// first result. Retries of old requests are rare in a run; this asks
// every one of them at once.
func (g *golden) checkRetries(s *Sim, restored *statemachine.StateMachine, index uint64) {
	keys := make([]requestKey, 0, len(g.succeeded))
	for key := range g.succeeded { // determinism: collected, then sorted
		keys = append(keys, key)
	}
	slices.SortFunc(keys, func(a, b requestKey) int {
		return cmp.Or(cmp.Compare(a.session, b.session), cmp.Compare(a.sequence, b.sequence))
	})
	for _, key := range keys {
		id := &metadatav1.RequestId{SessionId: key.session, Sequence: key.sequence}
		want, wantOK := g.sm.LookupRequest(id)
		got, gotOK := restored.LookupRequest(id)
		if wantOK != gotOK || (wantOK && !sameResult(want, got)) {
			s.violate("snapshot equivalence: restored at %d, a retry of request %d/%d is answered %s (known %v), the original %s (known %v)",
				index, key.session, key.sequence, describeResult(got), gotOK, describeResult(want), wantOK)
			return
		}
	}
}

func keyOf(id *metadatav1.RequestId) requestKey {
	return requestKey{session: id.GetSessionId(), sequence: id.GetSequence()}
}

func (g *golden) noteResult(s *Sim, key requestKey, result statemachine.Result) {
	switch {
	case result.Duplicate:
	case result.Err != nil:
		if g.rejected[key] == nil {
			g.rejected[key] = map[metadatav1.ErrorCode]bool{}
		}
		g.rejected[key][result.Err.GetCode()] = true
	default:
		if first, ok := g.succeeded[key]; ok {
			s.violate("at most once: request %d/%d succeeded at version %d and again at %d", key.session, key.sequence, first.Version, result.Version)
		}
		if answer, ok := g.answeredError[key]; ok {
			s.violate("answers: request %d/%d was answered %s, then succeeded at version %d", key.session, key.sequence, answer, result.Version)
		}
		g.succeeded[key] = result
	}
}

// checkAnswer checks a client's definite answer to a write against the
// applications of its request id so far.
func (g *golden) checkAnswer(s *Sim, id *metadatav1.RequestId, code metadatav1.ErrorCode) {
	if g.off {
		return
	}
	key := keyOf(id)
	success, succeeded := g.succeeded[key]
	switch {
	case code == metadatav1.ErrorCode_NONE && !succeeded:
		s.violate("answers: request %d/%d was answered with success but never succeeded", key.session, key.sequence)
	case code != metadatav1.ErrorCode_NONE && succeeded:
		s.violate("answers: request %d/%d was answered %v but succeeded at version %d", key.session, key.sequence, code, success.Version)
	case code != metadatav1.ErrorCode_NONE && !g.rejected[key][code]:
		s.violate("answers: request %d/%d was answered %v, which no application of it gave", key.session, key.sequence, code)
	case code != metadatav1.ErrorCode_NONE:
		g.answeredError[key] = code.String()
	}
}

// checkItems checks the per-item answers a client got for a batch that
// succeeded: they are those of the batch's application.
func (g *golden) checkItems(s *Sim, id *metadatav1.RequestId, items []statemachine.ItemResult) {
	if g.off {
		return
	}
	key := keyOf(id)
	// Codes and ids: a retry's answer, from the request table, does not
	// keep the first one's messages.
	sameAnswers := slices.EqualFunc(items, g.succeeded[key].Items, func(a, b statemachine.ItemResult) bool {
		return a.Err.GetCode() == b.Err.GetCode() && a.TopicID == b.TopicID
	})
	if success, ok := g.succeeded[key]; ok && !sameAnswers {
		s.violate("answers: request %d/%d was answered with items %s, its application gave %s",
			key.session, key.sequence, describeItems(items), describeItems(success.Items))
	}
}

// checkNotApplied checks a client's answer that a write was refused before
// it was proposed (failure is the refusal): no application of its request
// id may succeed, before or after.
func (g *golden) checkNotApplied(s *Sim, id *metadatav1.RequestId, failure client.Failure) {
	if g.off {
		return
	}
	key := keyOf(id)
	answer := fmt.Sprintf("not applied (%v, %v)", failure.Code, failure.ErrorCode)
	if success, ok := g.succeeded[key]; ok {
		s.violate("answers: request %d/%d was answered %s but succeeded at version %d", key.session, key.sequence, answer, success.Version)
	}
	g.answeredError[key] = answer
}

// apply applies one committed entry as node.applyEntry does.
func apply(sm *statemachine.StateMachine, entry *raftpb.Entry, record *metadatav1.Record) statemachine.Result {
	index := entry.GetIndex()
	switch {
	case entry.GetType() != raftpb.EntryNormal || len(entry.GetData()) == 0:
		sm.Advance(index)
		return statemachine.Result{Version: int64(index)}
	case record == nil:
		return sm.ApplyEntry(index, entry.GetData())
	default:
		return sm.Apply(index, record)
	}
}

func sameResult(a, b statemachine.Result) bool {
	return a.Version == b.Version && a.Err.GetCode() == b.Err.GetCode() && errMessage(a.Err) == errMessage(b.Err) &&
		a.BrokerEpoch == b.BrokerEpoch && a.TopicID == b.TopicID && a.Elected == b.Elected && a.Duplicate == b.Duplicate &&
		sameItems(a.Items, b.Items)
}

func sameItems(a, b []statemachine.ItemResult) bool {
	return slices.EqualFunc(a, b, func(x, y statemachine.ItemResult) bool {
		return x.Err.GetCode() == y.Err.GetCode() && errMessage(x.Err) == errMessage(y.Err) && x.TopicID == y.TopicID
	})
}

func describeResult(r statemachine.Result) string {
	return fmt.Sprintf("{version %d err %v %q epoch %d topic %q elected %d duplicate %v items %s}",
		r.Version, r.Err.GetCode(), errMessage(r.Err), r.BrokerEpoch, r.TopicID, r.Elected, r.Duplicate, describeItems(r.Items))
}

func describeItems(items []statemachine.ItemResult) string {
	parts := make([]string, len(items))
	for i, item := range items {
		parts[i] = fmt.Sprintf("%v %s", item.Err.GetCode(), item.TopicID)
	}
	return "[" + strings.Join(parts, ", ") + "]"
}

func errMessage(err *statemachine.Error) string {
	if err == nil {
		return ""
	}
	return err.Message
}
