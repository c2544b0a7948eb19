package statemachine

import (
	"fmt"
	"slices"
	"sort"
	"strings"

	metadatav1 "github.com/dmq-project/metadata/gen/dmq/metadata/v1"
	"google.golang.org/protobuf/proto"
)

// NoLeader is the leader of an offline partition.
const NoLeader int32 = -1

type broker struct {
	id            int32
	host          string
	port          int32
	rack          string
	incarnationID string
	// epoch is the index of the registration record.
	epoch        int64
	fenced       bool
	shuttingDown bool
}

// eligible says whether the broker may lead partitions and take new replicas.
func (b *broker) eligible() bool { return !b.fenced && !b.shuttingDown }

// partition is kept small: a cluster of a million partitions holds a million
// of these (see BenchmarkRestore for the heap per partition).
type partition struct {
	replicas       []int32
	isr            []int32
	leader         int32
	leaderEpoch    int32
	partitionEpoch int32
}

type topic struct {
	name              string
	id                string
	replicationFactor int32
	config            *metadatav1.TopicConfig
	// sources says where each key's value came from.
	sources    configSources
	partitions []partition
	// moving holds the partitions being reassigned; nil when none is.
	moving map[int32]*move
	// elr holds the partitions' eligible leader replicas where there are
	// some; nil when none has.
	elr map[int32][]int32
	// generation is the view generation the topic was made or copied in:
	// a view taken since may hold it (writableTopic).
	generation uint64
}

// StateMachine is the replicated metadata. It is not safe for concurrent
// use: the controller owns it from one goroutine (or the simulator's loop).
type StateMachine struct {
	// appliedIndex is the metadata version: the Raft index of the last
	// applied entry. It only moves forward, by exactly one per entry.
	appliedIndex uint64
	brokers      map[int32]*broker
	topics       map[string]*topic
	// topicsByCollisionKey maps collisionKey(name) to the name holding it.
	topicsByCollisionKey map[string]string
	topicIDs             map[string]string
	// offline indexes the partitions without a leader.
	offline map[partitionKey]struct{}
	// nowMs is the state machine's clock: the largest leader_time_ms of the
	// records applied so far. It decides session expiry.
	nowMs    int64
	sessions sessionTable
	history  history
	// clusterConfig is the cluster's defaults for new topics, by config
	// key, each in the form ParseTopicConfig reads.
	clusterConfig map[string]string
	// departed are the ids of the brokers unregistered most recently and
	// not registered since, oldest first, at most DepartedBrokersMax: the
	// Java service's storage services never forget a broker, so every full
	// state they get lists these as not alive, whichever controller sends
	// it and whatever snapshot it started from.
	departed []int32
	// movingCount is the number of partitions moving; balance the last
	// balancing plan, nil before any.
	movingCount int
	balance     *balanceRun
	// viewGeneration counts the views taken; viewsOpen those not released
	// yet (see View).
	viewGeneration uint64
	viewsOpen      int
	// changedPartitions counts the partitions entries have changed or
	// created since the state machine was made (a topic changed as a whole
	// counts all of its own): see ChangedPartitions.
	changedPartitions uint64
}

// ChangedPartitions is how many partitions the entries applied since the
// state machine was made (or restored) changed or created, a topic changed
// as a whole counting all of its own. It measures what replaying those
// entries costs, which their bytes do not: a CreateTopic record of a few
// bytes makes ten thousand partitions.
func (s *StateMachine) ChangedPartitions() uint64 { return s.changedPartitions }

// DepartedBrokersMax bounds the departed brokers a state remembers.
const DepartedBrokersMax = 1024

// DepartedBrokers are the brokers unregistered most recently and not
// registered since, oldest first.
func (s *StateMachine) DepartedBrokers() []int32 { return slices.Clone(s.departed) }

// New returns an empty state machine at version 0.
func New() *StateMachine {
	return &StateMachine{
		brokers:              make(map[int32]*broker),
		topics:               make(map[string]*topic),
		topicsByCollisionKey: make(map[string]string),
		topicIDs:             make(map[string]string),
		offline:              make(map[partitionKey]struct{}),
		sessions:             newSessionTable(),
		history:              newHistory(0),
		clusterConfig:        make(map[string]string),
	}
}

// Version is the metadata version: the index of the last applied entry.
func (s *StateMachine) Version() int64 { return int64(s.appliedIndex) }

// AppliedIndex is Version as a Raft index.
func (s *StateMachine) AppliedIndex() uint64 { return s.appliedIndex }

func (s *StateMachine) sortedBrokerIDs() []int32 {
	ids := make([]int32, 0, len(s.brokers))
	for id := range s.brokers { // determinism: collected, then sorted
		ids = append(ids, id)
	}
	slices.Sort(ids)
	return ids
}

func (s *StateMachine) sortedTopicNames() []string {
	names := make([]string, 0, len(s.topics))
	for name := range s.topics { // determinism: collected, then sorted
		names = append(names, name)
	}
	sortStrings(names)
	return names
}

func sortStrings(list []string) { sort.Strings(list) }

// Broker returns the broker as the API shows it, or nil.
func (s *StateMachine) Broker(id int32) *metadatav1.Broker {
	b, ok := s.brokers[id]
	if !ok {
		return nil
	}
	return b.toProto()
}

// BrokerEpoch returns the broker's epoch and whether it is registered.
func (s *StateMachine) BrokerEpoch(id int32) (int64, bool) {
	b, ok := s.brokers[id]
	if !ok {
		return 0, false
	}
	return b.epoch, true
}

// BrokerStatus reports the registration state the controller's session
// tracking needs: registered, epoch, fenced, in controlled shutdown.
type BrokerStatus struct {
	Registered   bool
	Epoch        int64
	Fenced       bool
	ShuttingDown bool
}

func (s *StateMachine) BrokerStatus(id int32) BrokerStatus {
	b, ok := s.brokers[id]
	if !ok {
		return BrokerStatus{}
	}
	return BrokerStatus{Registered: true, Epoch: b.epoch, Fenced: b.fenced, ShuttingDown: b.shuttingDown}
}

// Brokers returns every broker sorted by id.
func (s *StateMachine) Brokers() []*metadatav1.Broker {
	ids := s.sortedBrokerIDs()
	out := make([]*metadatav1.Broker, 0, len(ids))
	for _, id := range ids {
		out = append(out, s.brokers[id].toProto())
	}
	return out
}

// BrokerIDs returns the registered broker ids in increasing order.
func (s *StateMachine) BrokerIDs() []int32 { return s.sortedBrokerIDs() }

// Topic returns the topic with its partitions, or nil.
func (s *StateMachine) Topic(name string) *metadatav1.Topic {
	t, ok := s.topics[name]
	if !ok {
		return nil
	}
	return t.toProto(true)
}

// Topics returns every topic sorted by name, without partitions.
func (s *StateMachine) Topics() []*metadatav1.Topic {
	names := s.sortedTopicNames()
	out := make([]*metadatav1.Topic, 0, len(names))
	for _, name := range names {
		out = append(out, s.topics[name].toProto(false))
	}
	return out
}

// HasTopicWithPrefix says whether some topic's name starts with prefix.
func (s *StateMachine) HasTopicWithPrefix(prefix string) bool {
	for name := range s.topics { // determinism: an any-match, the same in every order
		if strings.HasPrefix(name, prefix) {
			return true
		}
	}
	return false
}

// TopicCount and PartitionCount size the state.
func (s *StateMachine) TopicCount() int { return len(s.topics) }

func (s *StateMachine) PartitionCount() int {
	n := 0
	for _, t := range s.topics { // determinism: a sum
		n += len(t.partitions)
	}
	return n
}

// OfflinePartitionCount counts partitions without a leader.
func (s *StateMachine) OfflinePartitionCount() int { return len(s.offline) }

// ClusterState returns the whole state at the current version.
func (s *StateMachine) ClusterState() *metadatav1.ClusterState {
	names := s.sortedTopicNames()
	state := &metadatav1.ClusterState{
		MetadataVersion: s.Version(),
		Brokers:         s.Brokers(),
		Topics:          make([]*metadatav1.Topic, 0, len(names)),
	}
	for _, name := range names {
		state.Topics = append(state.Topics, s.topics[name].toProto(true))
	}
	return state
}

func (b *broker) toProto() *metadatav1.Broker {
	return &metadatav1.Broker{
		Id:                   b.id,
		Host:                 b.host,
		Port:                 b.port,
		Rack:                 b.rack,
		IsAlive:              b.eligible(),
		IncarnationId:        b.incarnationID,
		BrokerEpoch:          b.epoch,
		Fenced:               b.fenced,
		InControlledShutdown: b.shuttingDown,
	}
}

func (t *topic) toProto(withPartitions bool) *metadatav1.Topic {
	out := &metadatav1.Topic{
		Name:              t.name,
		TopicId:           t.id,
		ReplicationFactor: t.replicationFactor,
		Config:            proto.CloneOf(t.config),
	}
	if !withPartitions {
		// Only where the partitions are left out: in pushed states and
		// deltas the list is the count (a delta's changed partitions
		// would otherwise have to carry it too).
		out.PartitionCount = int32(len(t.partitions))
	}
	if withPartitions {
		out.Partitions = make([]*metadatav1.Partition, len(t.partitions))
		for i := range t.partitions {
			out.Partitions[i] = t.partitionProto(int32(i))
		}
	}
	return out
}

func (t *topic) partitionProto(index int32) *metadatav1.Partition {
	out := t.partitionBase(index)
	if m := t.movingOf(index); m != nil {
		out.AddingReplicas, out.RemovingReplicas = slices.Clone(m.adding), slices.Clone(m.removing)
	}
	out.EligibleLeaderReplicas = slices.Clone(t.elrOf(index))
	return out
}

func (t *topic) partitionBase(index int32) *metadatav1.Partition {
	p := &t.partitions[index]
	return &metadatav1.Partition{
		Topic:          t.name,
		Partition:      index,
		Replicas:       slices.Clone(p.replicas),
		Isr:            slices.Clone(p.isr),
		Leader:         p.leader,
		LeaderEpoch:    p.leaderEpoch,
		PartitionEpoch: p.partitionEpoch,
	}
}

// String summarises the state for logs and failure messages.
func (s *StateMachine) String() string {
	return fmt.Sprintf("statemachine{version=%d brokers=%d topics=%d partitions=%d}",
		s.appliedIndex, len(s.brokers), len(s.topics), s.PartitionCount())
}

// ImbalancedPartitions names up to limit partitions, in topic and index
// order, whose preferred replica is not the leader but is in the ISR and
// eligible: the partitions a preferred election would move.
func (s *StateMachine) ImbalancedPartitions(limit int) []*metadatav1.TopicPartitions {
	var out []*metadatav1.TopicPartitions
	found := 0
	for _, name := range s.sortedTopicNames() {
		if found >= limit {
			break
		}
		t := s.topics[name]
		var indexes []int32
		for i := range t.partitions {
			if found >= limit {
				break
			}
			p := &t.partitions[i]
			preferred := p.replicas[0]
			if p.leader == preferred || !slices.Contains(p.isr, preferred) {
				continue
			}
			if b, ok := s.brokers[preferred]; ok && b.eligible() {
				indexes = append(indexes, int32(i))
				found++
			}
		}
		if len(indexes) > 0 {
			out = append(out, &metadatav1.TopicPartitions{Topic: name, Partitions: indexes})
		}
	}
	return out
}
