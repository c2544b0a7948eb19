package sim

import (
	"slices"
	"strconv"
	"strings"

	"github.com/cespare/xxhash/v2"
	metadatav1 "github.com/dmq-project/metadata/gen/dmq/metadata/v1"
	"github.com/dmq-project/metadata/seedwire"
)

// seedView is a storage service of the Java system this project replaces,
// as its receiver of pushes behaves (written from its contract, not from
// our translator): it overwrites its version with every update's, checks
// neither versions nor the controller's term, upserts the brokers of every
// update, and then, by the update's type: FULL_SNAPSHOT clears its
// partitions and rebuilds them; TOPIC_CREATED adds the partitions it lacks;
// TOPIC_DELETED drops every partition whose key starts with "<topic>-"
// (so deleting "a" drops "a-b"'s too); LEADER_UPDATE sets the leader, the
// epoch and, when given, followers and ISR of partitions it holds;
// ISR_UPDATE sets their ISR; BROKER_UPDATE nothing more; CONTROLLER_CHANGED
// records the controller. It never removes a broker.
type seedView struct {
	version    int64
	brokers    map[int32]seedwire.BrokerInfo
	partitions map[string]seedwire.Partition
	controller struct {
		id   int32
		url  string
		term int64
	}
	// unsynced: what it holds is not known to be any version of the
	// controllers' state, until its next full state: it has just started
	// (the seed's receiver takes deltas from before it registered again),
	// or a push of a controller older than the one it was told of reached
	// it after that one's (it checks no epoch, so it applied it). Not a
	// model of the receiver: the checker's knowledge.
	unsynced bool
}

func newSeedView() *seedView {
	return &seedView{brokers: map[int32]seedwire.BrokerInfo{}, partitions: map[string]seedwire.Partition{}, unsynced: true}
}

func seedKey(topic string, partition int32) string {
	return topic + "-" + strconv.Itoa(int(partition))
}

func (v *seedView) apply(u seedwire.MetadataUpdateRequest) {
	if u.Version != 0 {
		v.version = u.Version
	}
	for _, b := range u.Brokers {
		v.brokers[b.ID] = b
	}
	switch u.UpdateType {
	case seedwire.FullSnapshot, "":
		v.partitions = map[string]seedwire.Partition{}
		for _, p := range u.Partitions {
			v.partitions[seedKey(p.Topic, p.Partition)] = p
		}
	case seedwire.TopicCreated:
		for _, p := range u.Partitions {
			if _, ok := v.partitions[seedKey(p.Topic, p.Partition)]; !ok {
				v.partitions[seedKey(p.Topic, p.Partition)] = p
			}
		}
	case seedwire.TopicDeleted:
		for _, topic := range u.DeletedTopics {
			for key := range v.partitions { // determinism: deletions, the same in every order
				if strings.HasPrefix(key, topic+"-") {
					delete(v.partitions, key)
				}
			}
		}
	case seedwire.LeaderUpdate:
		for _, p := range u.Partitions {
			key := seedKey(p.Topic, p.Partition)
			held, ok := v.partitions[key]
			if !ok {
				continue
			}
			held.LeaderID, held.LeaderEpoch = p.LeaderID, p.LeaderEpoch
			if p.FollowerIDs != nil {
				held.FollowerIDs = p.FollowerIDs
			}
			if p.ISRIDs != nil {
				held.ISRIDs = p.ISRIDs
			}
			v.partitions[key] = held
		}
	case seedwire.ISRUpdate:
		for _, p := range u.Partitions {
			key := seedKey(p.Topic, p.Partition)
			if held, ok := v.partitions[key]; ok {
				held.ISRIDs = p.ISRIDs
				v.partitions[key] = held
			}
		}
	case seedwire.BrokerUpdate:
	case seedwire.ControllerChanged:
		if u.ControllerID != 0 && u.ControllerURL != "" {
			v.controller.id, v.controller.url, v.controller.term = u.ControllerID, u.ControllerURL, u.ControllerTerm
		}
	}
}

// digest is a digest of what a seed receiver's users see: its live brokers
// and its partitions, in a canonical order.
func (v *seedView) digest() uint64 {
	h := xxhash.New()
	ids := make([]int32, 0, len(v.brokers))
	for id, b := range v.brokers { // determinism: collected, then sorted
		if b.Alive {
			ids = append(ids, id)
		}
	}
	slices.Sort(ids)
	for _, id := range ids {
		b := v.brokers[id]
		h.Write([]byte("b" + strconv.Itoa(int(b.ID)) + " " + b.Host + ":" + strconv.Itoa(int(b.Port)) + "\n"))
	}
	keys := make([]string, 0, len(v.partitions))
	for key := range v.partitions { // determinism: collected, then sorted
		keys = append(keys, key)
	}
	slices.Sort(keys)
	for _, key := range keys {
		writeSeedPartition(h, v.partitions[key])
	}
	return h.Sum64()
}

// seedDigest is the digest a seed receiver holding state must have: its
// live (unfenced) brokers, and every partition with its real leader,
// epoch, ISR, and its other replicas as followers. Derived here from the
// state itself, not through the translator under test.
func seedDigest(state *metadatav1.ClusterState) uint64 {
	v := newSeedView()
	for _, b := range state.GetBrokers() {
		v.brokers[b.GetId()] = seedwire.BrokerInfo{ID: b.GetId(), Host: b.GetHost(), Port: b.GetPort(), Alive: !b.GetFenced()}
	}
	for _, t := range state.GetTopics() {
		for _, p := range t.GetPartitions() {
			followers := []int32{}
			for _, r := range p.GetReplicas() {
				if r != p.GetLeader() {
					followers = append(followers, r)
				}
			}
			v.partitions[seedKey(p.GetTopic(), p.GetPartition())] = seedwire.Partition{Topic: p.GetTopic(), Partition: p.GetPartition(),
				LeaderID: p.GetLeader(), LeaderEpoch: int64(p.GetLeaderEpoch()), FollowerIDs: followers, ISRIDs: p.GetIsr()}
		}
	}
	return v.digest()
}

type byteWriter interface{ Write([]byte) (int, error) }

func writeSeedPartition(h byteWriter, p seedwire.Partition) {
	line := p.Topic + "/" + strconv.Itoa(int(p.Partition)) + " leader=" + strconv.Itoa(int(p.LeaderID)) +
		" epoch=" + strconv.FormatInt(p.LeaderEpoch, 10) + " followers=" + ints(p.FollowerIDs) + " isr=" + ints(p.ISRIDs) + "\n"
	_, _ = h.Write([]byte(line))
}

func ints(xs []int32) string {
	parts := make([]string, len(xs))
	for i, x := range xs {
		parts[i] = strconv.Itoa(int(x))
	}
	return strings.Join(parts, ",")
}
