package seedwire

import (
	"slices"

	metadatav1 "github.com/dmq-project/metadata/gen/dmq/metadata/v1"
)

// Path is where a seed storage service receives pushes.
const Path = "/api/v1/storage/metadata"

// UpdateType says how a receiver applies an update. The seed's receiver:
// upserts the brokers of every update first; FULL_SNAPSHOT clears its
// partitions and rebuilds them; TOPIC_CREATED adds the partitions it does
// not hold; TOPIC_DELETED removes every partition whose key starts with
// "<topic>-"; LEADER_UPDATE sets a partition's leader and epoch, and its
// followers and ISR when given; ISR_UPDATE sets the ISR; BROKER_UPDATE
// only upserts brokers; CONTROLLER_CHANGED records the controller.
type UpdateType string

const (
	FullSnapshot      UpdateType = "FULL_SNAPSHOT"
	TopicCreated      UpdateType = "TOPIC_CREATED"
	TopicDeleted      UpdateType = "TOPIC_DELETED"
	ISRUpdate         UpdateType = "ISR_UPDATE"
	LeaderUpdate      UpdateType = "LEADER_UPDATE"
	BrokerUpdate      UpdateType = "BROKER_UPDATE"
	ControllerChanged UpdateType = "CONTROLLER_CHANGED"
)

// MetadataUpdateRequest is the seed's push body, field for field.
type MetadataUpdateRequest struct {
	UpdateType     UpdateType   `json:"updateType"`
	Version        int64        `json:"version"`
	Brokers        []BrokerInfo `json:"brokers"`
	Partitions     []Partition  `json:"partitions"`
	DeletedTopics  []string     `json:"deletedTopics"`
	ControllerID   int32        `json:"controllerId"`
	ControllerURL  string       `json:"controllerUrl"`
	ControllerTerm int64        `json:"controllerTerm"`
	Timestamp      int64        `json:"timestamp"`
}

// BrokerInfo is a broker as the seed's receiver holds it.
type BrokerInfo struct {
	ID    int32  `json:"id"`
	Host  string `json:"host"`
	Port  int32  `json:"port"`
	Alive bool   `json:"alive"`
}

// Partition is a partition as the seed's receiver holds it. Followers are
// the replicas other than the leader, in replica order.
type Partition struct {
	Topic       string  `json:"topic"`
	Partition   int32   `json:"partition"`
	LeaderID    int32   `json:"leaderId"`
	FollowerIDs []int32 `json:"followerIds"`
	ISRIDs      []int32 `json:"isrIds"`
	LeaderEpoch int64   `json:"leaderEpoch"`
}

// MetadataUpdateResponse is what a seed storage service answers; it says
// nothing of the version it holds.
type MetadataUpdateResponse struct {
	Success            bool   `json:"success"`
	ErrorCode          string `json:"errorCode"`
	ErrorMessage       string `json:"errorMessage"`
	ProcessedTimestamp int64  `json:"processedTimestamp"`
	BrokerID           int32  `json:"brokerId"`
}

// Controller is what every update says of the pushing controller.
type Controller struct {
	ID   int32
	URL  string
	Term int64
	// NowMs stamps the updates (milliseconds since the Unix epoch).
	NowMs int64
}

// Topics answers what a translation needs of the state being pushed:
// whether a topic's name starts with prefix (the seed's receiver deletes
// by key prefix, so deleting "a" would also remove the partitions of
// "a-b").
type Topics interface {
	HasTopicWithPrefix(prefix string) bool
}

// Updates translates one push into the updates that bring a seed receiver
// holding the push's base to the push's version, in the order to send
// them; each carries the push's version (a receiver overwrites its version
// with every update's), so a sequence broken off is retried whole. When
// tellController, a CONTROLLER_CHANGED comes first: the seed's receiver
// learns the controller from nothing else.
//
// A delta becomes, in order: BROKER_UPDATE (upserted brokers, and removed
// ones as not alive); TOPIC_DELETED (a topic deleted and created again
// included, so that none of its old partitions linger); TOPIC_CREATED with
// every partition of each upserted topic, which adds those a receiver
// lacks; and one LEADER_UPDATE with each partition a receiver may hold in
// another state: the changed partitions of other topics (which a receiver
// at the delta's base holds: MetadataDelta upserts grown topics whole) and
// the partitions of upserted topics changed since their creation
// (partition epoch above 0; one never changed is what TOPIC_CREATED
// carried when it was new). Each partition goes with its whole state:
// whether only the ISR changed cannot be told from a delta, and the seed's
// receiver sets leader, epoch, followers and ISR from a LEADER_UPDATE. A
// deleted topic whose name and a dash begin another topic's name turns the
// delta into a FULL_SNAPSHOT. Types with nothing to carry are left out; a
// delta that changed nothing a receiver holds is one BROKER_UPDATE, which
// carries the version.
//
// The seed's receiver never removes a broker: a full state lists those in
// gone (brokers the receiver was told of that the state no longer has) as
// not alive.
func Updates(push *metadatav1.PushMetadataRequest, c Controller, tellController bool, topics Topics, gone []int32) []MetadataUpdateRequest {
	version := push.GetMetadataVersion()
	stamp := func(t UpdateType) MetadataUpdateRequest {
		return MetadataUpdateRequest{UpdateType: t, Version: version, ControllerID: c.ID, ControllerURL: c.URL,
			ControllerTerm: c.Term, Timestamp: c.NowMs, Brokers: []BrokerInfo{}, Partitions: []Partition{}, DeletedTopics: []string{}}
	}
	var out []MetadataUpdateRequest
	if tellController {
		out = append(out, stamp(ControllerChanged))
	}
	switch update := push.GetUpdate().(type) {
	case *metadatav1.PushMetadataRequest_FullState:
		full := fullSnapshot(stamp(FullSnapshot), update.FullState)
		for _, id := range gone {
			full.Brokers = append(full.Brokers, BrokerInfo{ID: id})
		}
		return append(out, full)
	case *metadatav1.PushMetadataRequest_Delta:
		delta := update.Delta
		if NeedsFullState(delta, topics) {
			panic("seedwire: a delta that deletes a prefix of another topic's name must be pushed as a full state")
		}
		brokers := stamp(BrokerUpdate)
		for _, b := range delta.GetUpsertedBrokers() {
			brokers.Brokers = append(brokers.Brokers, brokerInfo(b))
		}
		for _, id := range delta.GetRemovedBrokerIds() {
			brokers.Brokers = append(brokers.Brokers, BrokerInfo{ID: id})
		}
		sent := len(out)
		if len(brokers.Brokers) > 0 {
			out = append(out, brokers)
		}
		if len(delta.GetDeletedTopics()) > 0 {
			deleted := stamp(TopicDeleted)
			deleted.DeletedTopics = slices.Clone(delta.GetDeletedTopics())
			out = append(out, deleted)
		}
		leaders := stamp(LeaderUpdate)
		if len(delta.GetUpsertedTopics()) > 0 {
			created := stamp(TopicCreated)
			for _, t := range delta.GetUpsertedTopics() {
				for _, p := range t.GetPartitions() {
					created.Partitions = append(created.Partitions, partition(p))
					if p.GetPartitionEpoch() > 0 {
						leaders.Partitions = append(leaders.Partitions, partition(p))
					}
				}
			}
			out = append(out, created)
		}
		for _, p := range delta.GetChangedPartitions() {
			leaders.Partitions = append(leaders.Partitions, partition(p))
		}
		if len(leaders.Partitions) > 0 {
			out = append(out, leaders)
		}
		if len(out) == sent {
			out = append(out, brokers)
		}
		return out
	}
	panic("seedwire: a push with neither a full state nor a delta")
}

// NeedsFullState says whether a delta cannot be sent as typed updates: it
// deletes a topic whose name and a dash begin another topic's name, which
// the seed's receiver would delete too.
func NeedsFullState(delta *metadatav1.MetadataDelta, topics Topics) bool {
	for _, name := range delta.GetDeletedTopics() {
		if topics.HasTopicWithPrefix(name + "-") {
			return true
		}
	}
	// Deleted and upserted in one delta (deleted, then created again):
	// the upserted topic's partitions are added after the deletion, so the
	// order of the updates handles it.
	return false
}

func fullSnapshot(u MetadataUpdateRequest, state *metadatav1.ClusterState) MetadataUpdateRequest {
	for _, b := range state.GetBrokers() {
		u.Brokers = append(u.Brokers, brokerInfo(b))
	}
	for _, t := range state.GetTopics() {
		for _, p := range t.GetPartitions() {
			u.Partitions = append(u.Partitions, partition(p))
		}
	}
	return u
}

func brokerInfo(b *metadatav1.Broker) BrokerInfo {
	return BrokerInfo{ID: b.GetId(), Host: b.GetHost(), Port: b.GetPort(), Alive: !b.GetFenced()}
}

func partition(p *metadatav1.Partition) Partition {
	followers := make([]int32, 0, len(p.GetReplicas()))
	for _, r := range p.GetReplicas() {
		if r != p.GetLeader() {
			followers = append(followers, r)
		}
	}
	isr := append(make([]int32, 0, len(p.GetIsr())), p.GetIsr()...) // [] not null: the seed's receiver throws on null
	return Partition{Topic: p.GetTopic(), Partition: p.GetPartition(), LeaderID: p.GetLeader(),
		FollowerIDs: followers, ISRIDs: isr, LeaderEpoch: int64(p.GetLeaderEpoch())}
}
