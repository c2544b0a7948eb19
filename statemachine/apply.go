package statemachine

import (
	"fmt"
	"slices"

	metadatav1 "github.com/dmq-project/metadata/gen/dmq/metadata/v1"
	"google.golang.org/protobuf/proto"
)

// Result is the outcome of one applied record. It is what a retry with the
// same request id gets back, so it holds values, never pointers into state.
type Result struct {
	// Version is the metadata version at which the record was applied.
	Version int64
	// Err is nil on success; an error changed nothing.
	Err *Error
	// BrokerEpoch is set by broker registrations.
	BrokerEpoch int64
	// TopicID is set by topic creation.
	TopicID string
	// Elected counts partitions moved by ElectLeaders.
	Elected int32
	// Items are the outcomes of a batch's items, in the record's order. An
	// atomic batch refused as a whole has Err set too.
	Items []ItemResult
	// Duplicate is true when the result came from the request-id table.
	Duplicate bool
}

func (r Result) zero() bool {
	return r.Version == 0 && r.Err == nil && r.BrokerEpoch == 0 && r.TopicID == "" && r.Elected == 0 && r.Items == nil && !r.Duplicate
}

// OK says whether the record was applied without error.
func (r Result) OK() bool { return r.Err == nil }

// ApplyEntry applies the data of one committed EntryNormal at index. Data
// that does not decode as a Record is applied as a no-op with an
// INVALID_RECORD result: every node sees the same bytes and does the same.
func (s *StateMachine) ApplyEntry(index uint64, data []byte) Result {
	record := &metadatav1.Record{}
	if err := proto.Unmarshal(data, record); err != nil {
		s.advance(index)
		return Result{Version: int64(index),
			Err: errorf(metadatav1.ErrorCode_INVALID_RECORD, "record at index %d does not decode: %v", index, err)}
	}
	return s.Apply(index, record)
}

// Advance moves the version over an entry that carries no record: Raft's
// empty entries and configuration changes. Versions stay gap-free.
func (s *StateMachine) Advance(index uint64) { s.advance(index) }

func (s *StateMachine) advance(index uint64) {
	if index != s.appliedIndex+1 {
		panic(fmt.Sprintf("statemachine: applying index %d after %d: entries must be applied in order, once each",
			index, s.appliedIndex))
	}
	s.appliedIndex = index
}

// Apply applies one record at index. A record of a client session whose
// sequence was applied before returns the first result (Duplicate set) and
// changes nothing; one whose session is unknown or expired, or has moved
// past its sequence, is refused with SESSION_EXPIRED.
//
// In builds with the invariants tag every Apply ends with CheckInvariants,
// and a violation panics with the index that broke it.
func (s *StateMachine) Apply(index uint64, record *metadatav1.Record) Result {
	result := s.apply(index, record)
	if invariantsChecked {
		if err := s.CheckInvariants(); err != nil {
			panic(fmt.Sprintf("statemachine: invariant broken by the record at index %d (%v): %v", index, record, err))
		}
	}
	return result
}

func (s *StateMachine) apply(index uint64, record *metadatav1.Record) Result {
	s.advance(index)
	s.nowMs = max(s.nowMs, record.GetLeaderTimeMs())
	s.sessions.expire(s.nowMs)
	if err := validateRequestID(record.GetRequestId()); err != nil {
		return Result{Version: int64(index), Err: err}
	}
	sess, verdict := s.admit(record.GetRequestId())
	switch {
	case verdict.Duplicate:
		s.sessions.touch(sess, s.nowMs)
		return verdict
	case verdict.Err != nil:
		verdict.Version = int64(index)
		return verdict
	}
	c := change{version: int64(index)}
	result := s.dispatch(record, &c)
	result.Version = int64(index)
	if result.Err == nil {
		s.history.add(c)
		s.changedPartitions += uint64(len(c.partitions))
		for _, name := range c.topics {
			if t, ok := s.topics[name]; ok {
				s.changedPartitions += uint64(len(t.partitions))
			}
		}
	}
	if sess != nil {
		// Errors are remembered too: a request answered with a definite
		// error must not apply later through a delayed retry.
		sess.lastSequence = record.GetRequestId().GetSequence()
		s.sessions.remember(sess, result)
		s.sessions.touch(sess, s.nowMs)
	}
	return result
}

// admit decides what a request's session makes of it, changing nothing: a
// duplicate (the first result, Duplicate set), a refusal (Err set), or a
// first apply (a zero Result, with the session to record it in, if any).
func (s *StateMachine) admit(id *metadatav1.RequestId) (*session, Result) {
	sessionID, sequence, ok := sessionOf(id)
	if !ok {
		return nil, Result{}
	}
	e, live := s.sessions.live(sessionID, s.nowMs)
	switch {
	case !live:
		return nil, Result{Err: errorf(metadatav1.ErrorCode_SESSION_EXPIRED,
			"session %d is unknown or expired: request %d was not applied now, and may or may not have been before",
			sessionID, sequence)}
	case sequence == e.lastSequence && !plantedApplyRetryTwice():
		first := e.result
		first.Duplicate = true
		return e, first
	case sequence < e.lastSequence:
		return nil, Result{Err: errorf(metadatav1.ErrorCode_SESSION_EXPIRED,
			"session %d has moved on to request %d: request %d was not applied now, and may or may not have been before",
			sessionID, e.lastSequence, sequence)}
	}
	return e, Result{}
}

// LookupRequest returns the result of a request already applied: the last
// request of a live session. Refusals are left for Apply, at the version the
// log decides.
func (s *StateMachine) LookupRequest(id *metadatav1.RequestId) (Result, bool) {
	if validateRequestID(id) != nil {
		return Result{}, false
	}
	_, verdict := s.admit(id)
	return verdict, verdict.Duplicate
}

// ValidateRequestID is the check a controller makes before proposing: a
// request id must name a session and a sequence from 1.
func ValidateRequestID(id *metadatav1.RequestId) *Error {
	if err := validateRequestID(id); err != nil {
		return err
	}
	if id != nil && id.SessionId == 0 && (id.ClientId != "" || id.Sequence != 0) {
		return errorf(metadatav1.ErrorCode_INVALID_REQUEST,
			"request id (client %q, sequence %d) names no session: open one with OpenSession", id.ClientId, id.Sequence)
	}
	return nil
}

// dispatch validates the record and applies it.
func (s *StateMachine) dispatch(record *metadatav1.Record, c *change) Result {
	switch body := record.Body.(type) {
	case *metadatav1.Record_NoOp:
		return Result{}
	case *metadatav1.Record_RegisterBroker:
		return s.registerBroker(body.RegisterBroker, c)
	case *metadatav1.Record_UnregisterBroker:
		return s.unregisterBroker(body.UnregisterBroker, c)
	case *metadatav1.Record_FenceBroker:
		return s.fenceBroker(body.FenceBroker, c)
	case *metadatav1.Record_UnfenceBroker:
		return s.unfenceBroker(body.UnfenceBroker, c)
	case *metadatav1.Record_BeginControlledShutdown:
		return s.beginControlledShutdown(body.BeginControlledShutdown, c)
	case *metadatav1.Record_CreateTopic:
		return s.createTopic(body.CreateTopic, c)
	case *metadatav1.Record_DeleteTopic:
		return s.deleteTopic(body.DeleteTopic, c)
	case *metadatav1.Record_CreateTopics:
		return s.createTopics(body.CreateTopics, c)
	case *metadatav1.Record_DeleteTopics:
		return s.deleteTopics(body.DeleteTopics, c)
	case *metadatav1.Record_AlterConfigs:
		return s.alterConfigs(body.AlterConfigs, c)
	case *metadatav1.Record_AlterPartitionReassignments:
		return s.alterPartitionReassignments(body.AlterPartitionReassignments, c)
	case *metadatav1.Record_Rebalance:
		return s.rebalance(body.Rebalance, c)
	case *metadatav1.Record_CreatePartitions:
		return s.createPartitions(body.CreatePartitions, c)
	case *metadatav1.Record_AlterPartition:
		return s.alterPartition(body.AlterPartition, c)
	case *metadatav1.Record_ElectLeaders:
		return s.electLeaders(body.ElectLeaders, c)
	case *metadatav1.Record_OpenSession:
		return s.openSession(body.OpenSession, c)
	}
	return Result{Err: errorf(metadatav1.ErrorCode_INVALID_RECORD, "record has no known body")}
}

func validateRequestID(id *metadatav1.RequestId) *Error {
	if id != nil && len(id.ClientId) > requestIDClientLengthMax {
		return errorf(metadatav1.ErrorCode_INVALID_REQUEST,
			"request id client id is longer than %d bytes", requestIDClientLengthMax)
	}
	if id != nil && id.SessionId != 0 && id.Sequence == 0 {
		return errorf(metadatav1.ErrorCode_INVALID_REQUEST,
			"request id of session %d has sequence 0: sequences start at 1", id.SessionId)
	}
	return nil
}

// openSession opens a session whose id is the record's index.
func (s *StateMachine) openSession(r *metadatav1.OpenSessionRecord, c *change) Result {
	if len(r.ClientId) > requestIDClientLengthMax {
		return fail(errorf(metadatav1.ErrorCode_INVALID_REQUEST,
			"session client id is longer than %d bytes", requestIDClientLengthMax))
	}
	if r.TimeoutMs < SessionTimeoutMin || r.TimeoutMs > SessionTimeoutMax {
		return fail(errorf(metadatav1.ErrorCode_INVALID_REQUEST,
			"session timeout %d ms is outside [%d, %d] ms", r.TimeoutMs, SessionTimeoutMin, SessionTimeoutMax))
	}
	if s.sessions.len() >= SessionsMax {
		s.sessions.remove(s.sessions.victim(s.nowMs))
	}
	s.sessions.add(&session{id: uint64(c.version), clientID: r.ClientId, timeoutMs: r.TimeoutMs, lastActiveMs: s.nowMs})
	return Result{}
}

func fail(err *Error) Result { return Result{Err: err} }

func (s *StateMachine) registerBroker(r *metadatav1.RegisterBrokerRecord, c *change) Result {
	if err := ValidateBrokerRegistration(r.BrokerId, r.Host, r.Port, r.Rack, r.IncarnationId); err != nil {
		return fail(err)
	}
	existing, ok := s.brokers[r.BrokerId]
	if ok && !existing.fenced {
		sameEndpoint := existing.host == r.Host && existing.port == r.Port && existing.rack == r.Rack
		if existing.incarnationID != r.IncarnationId {
			return fail(errorf(metadatav1.ErrorCode_DUPLICATE_BROKER_REGISTRATION,
				"broker %d is registered with incarnation %q and is not fenced: wait for its session to expire or unregister it first",
				r.BrokerId, existing.incarnationID))
		}
		if !sameEndpoint {
			return fail(errorf(metadatav1.ErrorCode_DUPLICATE_BROKER_REGISTRATION,
				"broker %d is registered at %s:%d rack %q: a live registration cannot move; unregister it first",
				r.BrokerId, existing.host, existing.port, existing.rack))
		}
		if !existing.shuttingDown {
			// The same incarnation registering again (a retry without a
			// request id): idempotent, the registration stands.
			return Result{BrokerEpoch: existing.epoch}
		}
	}
	b := &broker{
		id: r.BrokerId, host: r.Host, port: r.Port, rack: r.Rack, incarnationID: r.IncarnationId,
		epoch: int64(s.appliedIndex),
	}
	s.brokers[b.id] = b
	s.departed = slices.DeleteFunc(s.departed, func(id int32) bool { return id == b.id })
	c.brokers = append(c.brokers, b.id)
	// A broker that comes back may be the only one left in the ISR of
	// offline partitions: let it lead them again.
	s.restoreLeadership(b, c)
	return Result{BrokerEpoch: b.epoch}
}

// checkBrokerEpoch finds the broker and checks the record's epoch, where 0
// means "whatever the current epoch is".
func (s *StateMachine) checkBrokerEpoch(id int32, epoch int64) (*broker, *Error) {
	b, ok := s.brokers[id]
	if !ok {
		return nil, errorf(metadatav1.ErrorCode_UNKNOWN_BROKER, "broker %d is not registered", id)
	}
	if epoch != 0 && epoch != b.epoch {
		return nil, errorf(metadatav1.ErrorCode_STALE_BROKER_EPOCH,
			"broker %d has epoch %d, the request names %d", id, b.epoch, epoch)
	}
	return b, nil
}

func (s *StateMachine) unregisterBroker(r *metadatav1.UnregisterBrokerRecord, c *change) Result {
	b, err := s.checkBrokerEpoch(r.BrokerId, 0)
	if err != nil {
		return fail(err)
	}
	if s.draining(b.id) {
		if held := s.replicasOn(b.id); held > 0 {
			return fail(errorf(metadatav1.ErrorCode_BROKER_STATE_UNCHANGED,
				"broker %d is being decommissioned and still holds %d replicas: unregister it once dmqctl rebalance status shows none pending and it holds none, or run another plan",
				b.id, held))
		}
	}
	// Held until the broker is gone: a move started before would be led
	// by it.
	defer s.holdBalance(c)()
	s.removeFromPartitions(b, c)
	s.dropFromELRs(b.id, c)
	delete(s.brokers, b.id)
	if run := s.balance; run != nil && slices.Contains(run.drain, b.id) {
		// Decommissioned and gone: a broker registering later under its
		// id is a new one, which takes replicas.
		run.drain = slices.DeleteFunc(slices.Clone(run.drain), func(id int32) bool { return id == b.id })
		if len(run.drain) == 0 {
			run.drain = nil
		}
	}
	if len(s.departed) == DepartedBrokersMax {
		s.departed = slices.Delete(s.departed, 0, 1)
	}
	s.departed = append(s.departed, b.id)
	c.brokers = append(c.brokers, b.id)
	return Result{}
}

func (s *StateMachine) fenceBroker(r *metadatav1.FenceBrokerRecord, c *change) Result {
	b, err := s.checkBrokerEpoch(r.BrokerId, r.BrokerEpoch)
	if err != nil {
		return fail(err)
	}
	if b.fenced {
		return fail(errorf(metadatav1.ErrorCode_BROKER_STATE_UNCHANGED, "broker %d is already fenced", b.id))
	}
	b.fenced = true
	c.brokers = append(c.brokers, b.id)
	s.removeFromPartitions(b, c)
	return Result{}
}

func (s *StateMachine) unfenceBroker(r *metadatav1.UnfenceBrokerRecord, c *change) Result {
	b, err := s.checkBrokerEpoch(r.BrokerId, r.BrokerEpoch)
	if err != nil {
		return fail(err)
	}
	if !b.fenced {
		return fail(errorf(metadatav1.ErrorCode_BROKER_STATE_UNCHANGED, "broker %d is not fenced", b.id))
	}
	b.fenced = false
	b.shuttingDown = false
	c.brokers = append(c.brokers, b.id)
	s.restoreLeadership(b, c)
	return Result{}
}

func (s *StateMachine) beginControlledShutdown(r *metadatav1.BeginControlledShutdownRecord, c *change) Result {
	b, err := s.checkBrokerEpoch(r.BrokerId, r.BrokerEpoch)
	if err != nil {
		return fail(err)
	}
	if b.fenced || b.shuttingDown {
		return fail(errorf(metadatav1.ErrorCode_BROKER_STATE_UNCHANGED,
			"broker %d is already fenced or shutting down", b.id))
	}
	b.shuttingDown = true
	c.brokers = append(c.brokers, b.id)
	s.moveAwayFrom(b, c)
	return Result{}
}

// removeFromPartitions takes a fenced or departing broker out of every ISR
// and elects new leaders for the partitions it led. The last ISR member is
// kept (as in Kafka's KRaft controller) so that the partition recovers
// cleanly when that broker returns; the partition is offline meanwhile,
// unless the topic allows unclean election and another live replica exists.
func (s *StateMachine) removeFromPartitions(b *broker, c *change) {
	defer s.holdBalance(c)()
	for name, t := range s.topics { // determinism: each partition changes on its own; the change set is sorted where read
		for i := range t.partitions {
			p := &t.partitions[i]
			if !slices.Contains(p.isr, b.id) && p.leader != b.id {
				continue
			}
			t = s.writableTopic(t)
			p = &t.partitions[i]
			changed := false
			if len(p.isr) > 1 && slices.Contains(p.isr, b.id) {
				old := p.isr
				p.isr = removeID(p.isr, b.id)
				s.isrChanged(t, int32(i), old)
				changed = true
			}
			if p.leader == b.id {
				newLeader := s.pickLeader(p, b.id)
				if plantedFenceLeavesOffline() {
					newLeader = NoLeader
				}
				if newLeader == NoLeader {
					// No ISR member can lead: an eligible leader replica
					// holds every committed record.
					if leader := s.pickELRLeader(t, int32(i)); leader != NoLeader {
						old := p.isr
						p.isr = []int32{leader}
						s.isrChanged(t, int32(i), old)
						newLeader = leader
					}
				}
				if newLeader == NoLeader && t.config.UncleanLeaderElectionEnable {
					newLeader = s.pickUncleanLeader(p, b.id)
					if newLeader != NoLeader {
						p.isr = []int32{newLeader}
						t.setELR(int32(i), nil)
					}
				}
				p.leader = newLeader
				p.leaderEpoch++
				changed = true
				if newLeader == NoLeader {
					s.offline[partitionKey{topic: name, index: int32(i)}] = struct{}{}
				}
			}
			if changed {
				p.partitionEpoch++
				c.partitions = append(c.partitions, partitionKey{topic: name, index: int32(i)})
				// An unclean election may have put a move's target in the ISR.
				s.completeMove(t, int32(i), c)
			}
		}
	}
}

// moveAwayFrom moves leadership off a broker entering controlled shutdown
// and drops it from ISRs, wherever another eligible ISR member exists.
func (s *StateMachine) moveAwayFrom(b *broker, c *change) {
	for name, t := range s.topics { // determinism: each partition changes on its own; the change set is sorted where read
		for i := range t.partitions {
			p := &t.partitions[i]
			if !slices.Contains(p.isr, b.id) {
				continue
			}
			t = s.writableTopic(t)
			p = &t.partitions[i]
			changed := false
			if p.leader == b.id {
				if newLeader := s.pickLeader(p, b.id); newLeader != NoLeader {
					p.leader = newLeader
					p.leaderEpoch++
					changed = true
				}
			}
			if p.leader != b.id && len(p.isr) > 1 {
				old := p.isr
				p.isr = removeID(p.isr, b.id)
				s.isrChanged(t, int32(i), old)
				changed = true
			}
			if changed {
				p.partitionEpoch++
				c.partitions = append(c.partitions, partitionKey{topic: name, index: int32(i)})
			}
		}
	}
}

// restoreLeadership gives leaderless partitions back to a broker that has
// just become eligible, when it is in their ISR (or the topic allows an
// unclean election and it is a replica).
//
// Only offline partitions are visited (the index of them), so a broker's
// registration costs in proportion to what is offline, not to the cluster.
func (s *StateMachine) restoreLeadership(b *broker, c *change) {
	defer s.holdBalance(c)()
	for key := range s.offline { // determinism: each partition changes on its own; the change set is sorted where read
		t := s.topics[key.topic]
		p := &t.partitions[key.index]
		if !slices.Contains(p.replicas, b.id) {
			continue
		}
		t = s.writableTopic(t)
		p = &t.partitions[key.index]
		switch {
		case slices.Contains(p.isr, b.id):
		case slices.Contains(t.elrOf(key.index), b.id):
			// An eligible leader replica back: it holds every committed
			// record.
			old := p.isr
			p.isr = []int32{b.id}
			s.isrChanged(t, key.index, old)
		case t.config.UncleanLeaderElectionEnable:
			p.isr = []int32{b.id}
			t.setELR(key.index, nil)
		default:
			continue
		}
		p.leader = b.id
		p.leaderEpoch++
		p.partitionEpoch++
		delete(s.offline, key)
		c.partitions = append(c.partitions, key)
		s.completeMove(t, key.index, c)
	}
}

// pickLeader returns the first replica, in preferred order, that is in the
// ISR, is not excluded and is eligible; or NoLeader.
func (s *StateMachine) pickLeader(p *partition, excluded int32) int32 {
	for _, id := range p.replicas {
		if id == excluded || !slices.Contains(p.isr, id) {
			continue
		}
		if b, ok := s.brokers[id]; ok && b.eligible() {
			return id
		}
	}
	return NoLeader
}

func (s *StateMachine) pickUncleanLeader(p *partition, excluded int32) int32 {
	for _, id := range p.replicas {
		if id == excluded {
			continue
		}
		if b, ok := s.brokers[id]; ok && b.eligible() {
			return id
		}
	}
	return NoLeader
}

func removeID(ids []int32, id int32) []int32 {
	out := make([]int32, 0, len(ids))
	for _, x := range ids {
		if x != id {
			out = append(out, x)
		}
	}
	return out
}

// eligibleBrokers returns the brokers that may take new replicas, by id:
// a broker being decommissioned takes none, or its drain would never end.
func (s *StateMachine) eligibleBrokers() []*broker {
	var out []*broker
	for _, id := range s.sortedBrokerIDs() {
		if b := s.brokers[id]; b.eligible() && !s.draining(id) {
			out = append(out, b)
		}
	}
	return out
}

func (s *StateMachine) createTopic(r *metadatav1.CreateTopicRecord, c *change) Result {
	eligible := s.eligibleBrokers()
	if err := s.checkCreateTopic(r, len(eligible), nil); err != nil {
		return fail(err)
	}
	return Result{TopicID: s.insertTopic(r, newBrokerRing(eligible), c)}
}

// checkCreateTopic decides whether r may be applied now, changing nothing.
// batch holds what earlier items of the same batch would have created
// (nil for a lone record). The replication factor is checked last, which
// the linearizability model relies on: its failure says the others passed.
func (s *StateMachine) checkCreateTopic(r *metadatav1.CreateTopicRecord, eligible int, batch *batchNames) *Error {
	if err := ValidateTopicName(r.Name); err != nil {
		return err
	}
	if _, ok := s.topics[r.Name]; ok || batch.hasName(r.Name) {
		return errorf(metadatav1.ErrorCode_TOPIC_ALREADY_EXISTS, "topic %q already exists", r.Name)
	}
	key := collisionKey(r.Name)
	if other, ok := s.topicsByCollisionKey[key]; ok {
		return errorf(metadatav1.ErrorCode_TOPIC_NAME_COLLISION,
			"topic %q collides with existing topic %q ('.' and '_' are interchangeable)", r.Name, other)
	}
	if other, ok := batch.collision(key); ok {
		return errorf(metadatav1.ErrorCode_TOPIC_NAME_COLLISION,
			"topic %q collides with topic %q of the same batch ('.' and '_' are interchangeable)", r.Name, other)
	}
	if err := ValidateTopicID(r.TopicId); err != nil {
		return err
	}
	if other, ok := s.topicIDs[r.TopicId]; ok {
		return errorf(metadatav1.ErrorCode_INVALID_RECORD, "topic id %s is already used by %q", r.TopicId, other)
	}
	if other, ok := batch.idUser(r.TopicId); ok {
		return errorf(metadatav1.ErrorCode_INVALID_RECORD, "topic id %s is used twice in one batch (also by %q)", r.TopicId, other)
	}
	if err := ValidatePartitionCount(r.PartitionCount); err != nil {
		return err
	}
	if err := ValidateReplicationFactor(r.ReplicationFactor); err != nil {
		return err
	}
	config, _, err := s.topicConfig(r)
	if err != nil {
		return err
	}
	if err := validateTopicConfig(config, r.ReplicationFactor); err != nil {
		return err
	}
	if int(r.ReplicationFactor) > eligible {
		return errorf(metadatav1.ErrorCode_INVALID_REPLICATION_FACTOR,
			"replication factor %d is larger than the %d live brokers%s", r.ReplicationFactor, eligible, s.drainingNote())
	}
	return nil
}

// insertTopic creates a topic that checkCreateTopic accepted and returns
// its id.
func (s *StateMachine) insertTopic(r *metadatav1.CreateTopicRecord, ring *brokerRing, c *change) string {
	config, sources, err := s.topicConfig(r)
	if err != nil {
		panic(fmt.Sprintf("statemachine: inserting topic %q whose config the check refuses: %v", r.Name, err))
	}
	t := &topic{
		name:              r.Name,
		id:                r.TopicId,
		replicationFactor: r.ReplicationFactor,
		config:            cloneConfig(config),
		sources:           sources,
		partitions:        make([]partition, 0, r.PartitionCount),
		generation:        s.viewGeneration,
	}
	t.partitions = placePartitions(t.partitions, ring, 0, int(r.PartitionCount), int(r.ReplicationFactor), r.PlacementOffset)
	s.topics[t.name] = t
	s.topicsByCollisionKey[collisionKey(t.name)] = t.name
	s.topicIDs[t.id] = t.name
	c.topics = append(c.topics, t.name)
	return t.id
}

func (s *StateMachine) deleteTopic(r *metadatav1.DeleteTopicRecord, c *change) Result {
	t, ok := s.topics[r.Name]
	if !ok {
		return fail(errorf(metadatav1.ErrorCode_UNKNOWN_TOPIC, "topic %q does not exist", r.Name))
	}
	s.removeTopic(t, c)
	return Result{TopicID: t.id}
}

func (s *StateMachine) removeTopic(t *topic, c *change) {
	s.movingCount -= len(t.moving)
	delete(s.topics, t.name)
	delete(s.topicsByCollisionKey, collisionKey(t.name))
	delete(s.topicIDs, t.id)
	for i := range t.partitions {
		delete(s.offline, partitionKey{topic: t.name, index: int32(i)})
	}
	c.topics = append(c.topics, t.name)
	c.deleted = append(c.deleted, t.name)
	if len(t.moving) > 0 {
		// Its moves ended with it: room for the plan's next.
		s.advanceBalance(c)
	}
}

func (s *StateMachine) createPartitions(r *metadatav1.CreatePartitionsRecord, c *change) Result {
	t, ok := s.topics[r.Topic]
	if !ok {
		return fail(errorf(metadatav1.ErrorCode_UNKNOWN_TOPIC, "topic %q does not exist", r.Topic))
	}
	current := int32(len(t.partitions))
	if r.PartitionCount <= current {
		return fail(errorf(metadatav1.ErrorCode_INVALID_PARTITIONS,
			"topic %q has %d partitions: the new count %d must be larger (partitions never shrink)",
			r.Topic, current, r.PartitionCount))
	}
	if r.PartitionCount-current > PartitionsPerRequestMax {
		return fail(errorf(metadatav1.ErrorCode_INVALID_PARTITIONS,
			"adding %d partitions: at most %d per request", r.PartitionCount-current, PartitionsPerRequestMax))
	}
	eligible := s.eligibleBrokers()
	if int(t.replicationFactor) > len(eligible) {
		return fail(errorf(metadatav1.ErrorCode_INVALID_REPLICATION_FACTOR,
			"topic %q has replication factor %d but only %d brokers are live%s", r.Topic, t.replicationFactor, len(eligible), s.drainingNote()))
	}
	t = s.writableTopic(t)
	t.partitions = placePartitions(t.partitions, newBrokerRing(eligible), int(current), int(r.PartitionCount-current),
		int(t.replicationFactor), r.PlacementOffset)
	// The topic as a whole changed: a delta upserts it, so that changed
	// partitions are always ones a receiver at the delta's base holds.
	c.topics = append(c.topics, t.name)
	return Result{TopicID: t.id}
}

func (s *StateMachine) alterPartition(r *metadatav1.AlterPartitionRecord, c *change) Result {
	b, err := s.checkBrokerEpoch(r.BrokerId, r.BrokerEpoch)
	if err != nil {
		return fail(err)
	}
	if r.BrokerEpoch == 0 {
		return fail(errorf(metadatav1.ErrorCode_INVALID_REQUEST, "AlterPartition must name the leader's broker epoch"))
	}
	if b.fenced {
		return fail(errorf(metadatav1.ErrorCode_STALE_BROKER_EPOCH, "broker %d is fenced", b.id))
	}
	t, ok := s.topics[r.Topic]
	if !ok {
		return fail(errorf(metadatav1.ErrorCode_UNKNOWN_TOPIC, "topic %q does not exist", r.Topic))
	}
	if r.Partition < 0 || int(r.Partition) >= len(t.partitions) {
		return fail(errorf(metadatav1.ErrorCode_UNKNOWN_PARTITION,
			"topic %q has no partition %d", r.Topic, r.Partition))
	}
	p := &t.partitions[r.Partition]
	if p.leader != r.BrokerId || p.leaderEpoch != r.LeaderEpoch {
		return fail(errorf(metadatav1.ErrorCode_FENCED_LEADER_EPOCH,
			"%s-%d is led by broker %d at leader epoch %d; the request is from broker %d at epoch %d",
			r.Topic, r.Partition, p.leader, p.leaderEpoch, r.BrokerId, r.LeaderEpoch))
	}
	if p.partitionEpoch != r.PartitionEpoch {
		return fail(errorf(metadatav1.ErrorCode_INVALID_PARTITION_EPOCH,
			"%s-%d is at partition epoch %d; the request read %d", r.Topic, r.Partition, p.partitionEpoch, r.PartitionEpoch))
	}
	if err := s.validateISR(r.NewIsr, p); err != nil {
		return fail(err)
	}
	t = s.writableTopic(t)
	p = &t.partitions[r.Partition]
	old := p.isr
	p.isr = slices.Clone(r.NewIsr)
	s.isrChanged(t, r.Partition, old)
	p.partitionEpoch++
	c.partitions = append(c.partitions, partitionKey{topic: t.name, index: r.Partition})
	// A move completes when its last target replica joins the ISR.
	s.completeMove(t, r.Partition, c)
	return Result{}
}

func (s *StateMachine) validateISR(isr []int32, p *partition) *Error {
	if len(isr) == 0 {
		return errorf(metadatav1.ErrorCode_INVALID_ISR, "the new ISR is empty")
	}
	if !slices.Contains(isr, p.leader) {
		return errorf(metadatav1.ErrorCode_INVALID_ISR, "the new ISR %v does not contain the leader %d", isr, p.leader)
	}
	for i, id := range isr {
		if slices.Contains(isr[:i], id) {
			return errorf(metadatav1.ErrorCode_INVALID_ISR, "the new ISR %v names broker %d twice", isr, id)
		}
		if !slices.Contains(p.replicas, id) {
			return errorf(metadatav1.ErrorCode_INVALID_ISR, "broker %d in the new ISR is not a replica %v", id, p.replicas)
		}
		b, ok := s.brokers[id]
		if !ok || !b.eligible() {
			return errorf(metadatav1.ErrorCode_INVALID_ISR,
				"broker %d in the new ISR is not registered, is fenced or is shutting down", id)
		}
	}
	return nil
}

func (s *StateMachine) electLeaders(r *metadatav1.ElectLeadersRecord, c *change) Result {
	// Targets are named, not held: electing in a topic may replace it
	// (writableTopic).
	type target struct {
		name    string
		indexes []int32
	}
	var targets []target
	if len(r.Targets) == 0 {
		for _, name := range s.sortedTopicNames() {
			targets = append(targets, target{name: name})
		}
	}
	if len(r.Targets) > electTargetsPerRequestMax {
		return fail(errorf(metadatav1.ErrorCode_INVALID_REQUEST, "at most %d targets per request", electTargetsPerRequestMax))
	}
	for _, tp := range r.Targets {
		t, ok := s.topics[tp.Topic]
		if !ok {
			if r.SkipMissing {
				continue
			}
			return fail(errorf(metadatav1.ErrorCode_UNKNOWN_TOPIC, "topic %q does not exist", tp.Topic))
		}
		indexes := tp.Partitions
		for _, index := range tp.Partitions {
			if index < 0 || int(index) >= len(t.partitions) {
				if r.SkipMissing {
					indexes = slices.DeleteFunc(slices.Clone(indexes), func(i int32) bool { return i < 0 || int(i) >= len(t.partitions) })
					break
				}
				return fail(errorf(metadatav1.ErrorCode_UNKNOWN_PARTITION, "topic %q has no partition %d", tp.Topic, index))
			}
		}
		targets = append(targets, target{name: t.name, indexes: indexes})
	}
	var elected int32
	// elect returns the topic to go on with: t, or the copy that
	// replaced it.
	elect := func(t *topic, index int32) *topic {
		p := &t.partitions[index]
		preferred := p.replicas[0]
		if p.leader == preferred || !slices.Contains(p.isr, preferred) {
			return t
		}
		if b, ok := s.brokers[preferred]; !ok || !b.eligible() {
			return t
		}
		t = s.writableTopic(t)
		p = &t.partitions[index]
		if p.leader == NoLeader {
			delete(s.offline, partitionKey{topic: t.name, index: index})
		}
		p.leader = preferred
		p.leaderEpoch++
		p.partitionEpoch++
		elected++
		c.partitions = append(c.partitions, partitionKey{topic: t.name, index: index})
		return t
	}
	for _, tg := range targets {
		t := s.topics[tg.name]
		if tg.indexes == nil {
			for i := range t.partitions {
				t = elect(t, int32(i))
			}
			continue
		}
		for _, index := range tg.indexes {
			t = elect(t, index)
		}
	}
	return Result{Elected: elected}
}
