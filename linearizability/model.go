package linearizability

import (
	"fmt"
	"math"
	"sort"
	"time"

	"github.com/anishathalye/porcupine"
	metadatav1 "github.com/dmq-project/metadata/gen/dmq/metadata/v1"
)

// Kind is the operation a client performed.
type Kind int

const (
	CreateTopic Kind = iota + 1
	DeleteTopic
	CreatePartitions
	DescribeTopic
	RegisterBroker
	UnregisterBroker
	DescribeBroker
	// AlterTopicConfig sets a topic's retention.ms to Count seconds, or
	// deletes it (back to the default) when Count is 0.
	AlterTopicConfig
	// AlterClusterConfig changes a cluster default no topic operation of
	// the model observes: it always succeeds.
	AlterClusterConfig
	// Reassign moves a topic's partition 0 to Replicas ("1,2,3"), or
	// cancels its move when Replicas is empty. Whether a target is
	// accepted depends on brokers and on the partition's ISR, which the
	// model does not hold: on an existing topic it may answer NONE,
	// INVALID_REPLICA_ASSIGNMENT or NO_REASSIGNMENT_IN_PROGRESS, and no
	// answer changes what the model sees of the topic.
	Reassign
)

func (k Kind) String() string {
	return map[Kind]string{
		CreateTopic: "create", DeleteTopic: "delete", CreatePartitions: "grow", DescribeTopic: "describe",
		RegisterBroker: "register", UnregisterBroker: "unregister", DescribeBroker: "describe-broker",
		AlterTopicConfig: "alter-config", AlterClusterConfig: "alter-cluster-config", Reassign: "reassign",
	}[k]
}

func (k Kind) isTopic() bool { return k <= DescribeTopic || k == AlterTopicConfig || k == Reassign }

// DefaultRetentionMs is a topic's retention.ms when nothing set it.
const DefaultRetentionMs = 7 * 24 * 60 * 60 * 1000

// Input is what the client asked. Topic operations name a topic; broker
// operations a broker id. Count is the partition count of create and grow.
//
// An item of a batch (CreateTopics, DeleteTopics) is an operation of its
// own, on its own topic, spanning the batch's call: Batch is the batch's
// size. Atomic items may answer BATCH_ABORTED, which says the item alone
// would have applied and did not. A DryRun item (validate_only) changes
// nothing and answers what the item would have answered then.
//
// What this leaves unchecked: each key's history is checked on its own, so
// the items of one batch may linearize at different points, and an atomic
// batch whose outcome stayed unknown may be taken as applied in part. The
// simulator's client checks every answered atomic batch (all NONE, or none
// with some item's own failure) and the state machine's tests hold the
// rest.
type Input struct {
	Kind   Kind
	Topic  string
	Broker int32
	Count  int32
	Batch  int
	Atomic bool
	DryRun bool
	// Replicas is a reassignment's target, comma-separated.
	Replicas string
}

// Output is what the client learned. Unknown marks an operation whose
// outcome the client never learned (a timeout, a lost connection): it stays
// in the history, pending forever, and may or may not have taken effect.
type Output struct {
	Unknown bool
	// NotApplied marks a write the client was told was refused before it
	// was proposed (by a controller that was not the leader, say): it must
	// have changed nothing.
	NotApplied bool
	Code       metadatav1.ErrorCode
	Exists     bool
	Partitions int32
	// RetentionMs is the retention.ms a describe saw, where RetentionSeen
	// says the history records it.
	RetentionMs   int64
	RetentionSeen bool
}

// state of one key: a topic (exists, partition count, retention.ms where
// set, 0 for the default) or a broker (exists).
type state struct {
	exists      bool
	partitions  int32
	retentionMs int64
}

func (s state) retention() int64 {
	if s.retentionMs == 0 {
		return DefaultRetentionMs
	}
	return s.retentionMs
}

// PendingForever is the return time of an operation with an unknown outcome.
const PendingForever = math.MaxInt64

// step is the model of one key. It lists the states the operation may leave
// when its output is consistent with s, and none when it is not. A write
// may fail with INVALID_REPLICATION_FACTOR whatever its topic's state,
// because that depends on the brokers, another key: such a failure leaves
// the topic unchanged, and an unknown write may have done either.
func step(s state, in Input, out Output) []state {
	if in.Kind == DescribeTopic || in.Kind == DescribeBroker {
		if out.Unknown {
			return []state{s}
		}
		if out.Code != metadatav1.ErrorCode_NONE {
			return nil
		}
		if out.Exists == s.exists && (!s.exists || in.Kind == DescribeBroker ||
			(out.Partitions == s.partitions && (!out.RetentionSeen || out.RetentionMs == s.retention()))) {
			return []state{s}
		}
		return nil
	}
	if out.NotApplied {
		return []state{s}
	}
	next, code := apply(s, in)
	if in.DryRun {
		// A check against the state, like a read: its answer is the one
		// the write would have had.
		if out.Unknown || answers(s, in, next, code, out.Code) {
			return []state{s}
		}
		return nil
	}
	if out.Unknown {
		states := []state{next}
		if mayLackBrokers(in) && next != s {
			states = append(states, s)
		}
		return states
	}
	if out.Code == code {
		return []state{next}
	}
	if answers(s, in, next, code, out.Code) {
		return []state{s}
	}
	return nil
}

// answers says whether got, an answer that changed nothing, is what in
// could answer in state s besides its own code (whose state is next): a
// failure for lack of brokers (the state machine checks the replication
// factor last, so it also says the earlier checks passed), or, in an
// atomic batch, BATCH_ABORTED for an item that alone would have applied.
func answers(s state, in Input, next state, code, got metadatav1.ErrorCode) bool {
	switch {
	case got == code:
		return true
	case got == metadatav1.ErrorCode_INVALID_REPLICATION_FACTOR:
		return mayLackBrokers(in) && next != s
	case got == metadatav1.ErrorCode_BATCH_ABORTED:
		return in.Atomic && code == metadatav1.ErrorCode_NONE
	case got == metadatav1.ErrorCode_INVALID_REPLICA_ASSIGNMENT || got == metadatav1.ErrorCode_NO_REASSIGNMENT_IN_PROGRESS:
		return in.Kind == Reassign && s.exists
	}
	return false
}

func mayLackBrokers(in Input) bool { return in.Kind == CreateTopic || in.Kind == CreatePartitions }

// apply is the sequential specification: the effect and the answer of a
// write applied to s.
func apply(s state, in Input) (state, metadatav1.ErrorCode) {
	switch in.Kind {
	case CreateTopic:
		if s.exists {
			return s, metadatav1.ErrorCode_TOPIC_ALREADY_EXISTS
		}
		return state{exists: true, partitions: in.Count}, metadatav1.ErrorCode_NONE
	case DeleteTopic:
		if !s.exists {
			return s, metadatav1.ErrorCode_UNKNOWN_TOPIC
		}
		return state{}, metadatav1.ErrorCode_NONE
	case CreatePartitions:
		if !s.exists {
			return s, metadatav1.ErrorCode_UNKNOWN_TOPIC
		}
		if in.Count <= s.partitions {
			return s, metadatav1.ErrorCode_INVALID_PARTITIONS
		}
		grown := s
		grown.partitions = in.Count
		return grown, metadatav1.ErrorCode_NONE
	case AlterTopicConfig:
		if !s.exists {
			return s, metadatav1.ErrorCode_UNKNOWN_TOPIC
		}
		altered := s
		altered.retentionMs = int64(in.Count) * 1000
		return altered, metadatav1.ErrorCode_NONE
	case AlterClusterConfig:
		return s, metadatav1.ErrorCode_NONE
	case Reassign:
		if !s.exists {
			return s, metadatav1.ErrorCode_UNKNOWN_TOPIC
		}
		return s, metadatav1.ErrorCode_NONE
	case RegisterBroker:
		// Clients register with one incarnation and one endpoint per id, so
		// a registration of a registered broker is idempotent.
		return state{exists: true}, metadatav1.ErrorCode_NONE
	case UnregisterBroker:
		if !s.exists {
			return s, metadatav1.ErrorCode_UNKNOWN_BROKER
		}
		return state{}, metadatav1.ErrorCode_NONE
	}
	panic(fmt.Sprintf("linearizability: no sequential specification for %v", in.Kind))
}

func key(in Input) string {
	switch {
	case in.Kind.isTopic():
		return "topic/" + in.Topic
	case in.Kind == AlterClusterConfig:
		return "cluster"
	}
	return fmt.Sprintf("broker/%d", in.Broker)
}

// Model is the porcupine model of the metadata API, partitioned by topic
// and by broker id: operations on different keys commute, so each key's
// history is checked on its own.
var Model = (&porcupine.NondeterministicModel{
	Partition: func(history []porcupine.Operation) [][]porcupine.Operation {
		byKey := map[string][]porcupine.Operation{}
		for _, op := range history {
			k := key(op.Input.(Input))
			byKey[k] = append(byKey[k], op)
		}
		keys := make([]string, 0, len(byKey))
		for k := range byKey {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		out := make([][]porcupine.Operation, 0, len(keys))
		for _, k := range keys {
			out = append(out, byKey[k])
		}
		return out
	},
	Init: func() []interface{} { return []interface{}{state{}} },
	Step: func(s, in, out interface{}) []interface{} {
		var result []interface{}
		for _, next := range step(s.(state), in.(Input), out.(Output)) {
			result = append(result, next)
		}
		return result
	},
	DescribeOperation: func(in, out interface{}) string {
		i, o := in.(Input), out.(Output)
		target := i.Topic
		if !i.Kind.isTopic() {
			target = fmt.Sprint(i.Broker)
		}
		if i.Kind == AlterClusterConfig {
			target = "cluster"
		}
		args := ""
		if i.Kind == CreateTopic || i.Kind == CreatePartitions || i.Kind == AlterTopicConfig {
			args = fmt.Sprintf("(%d)", i.Count)
		}
		if i.Kind == Reassign {
			args = "(" + i.Replicas + ")"
		}
		if i.Batch > 0 {
			args += fmt.Sprintf(" [batch of %d%s%s]", i.Batch, map[bool]string{true: ", atomic"}[i.Atomic],
				map[bool]string{true: ", dry run"}[i.DryRun])
		}
		switch {
		case o.Unknown:
			return fmt.Sprintf("%v %s%s -> unknown", i.Kind, target, args)
		case o.NotApplied:
			return fmt.Sprintf("%v %s%s -> not applied", i.Kind, target, args)
		case i.Kind == DescribeTopic:
			return fmt.Sprintf("describe %s -> exists=%v partitions=%d retention.ms=%d", target, o.Exists, o.Partitions, o.RetentionMs)
		case i.Kind == DescribeBroker:
			return fmt.Sprintf("describe-broker %s -> exists=%v", target, o.Exists)
		}
		return fmt.Sprintf("%v %s%s -> %v", i.Kind, target, args, o.Code)
	},
	DescribeState: func(s interface{}) string {
		st := s.(state)
		if !st.exists {
			return "absent"
		}
		return fmt.Sprintf("present, %d partitions, retention.ms %d", st.partitions, st.retention())
	},
}).ToModel()

// Check checks a history within timeout. Unknown is returned if the checker
// ran out of time (a verdict of neither).
func Check(history []porcupine.Operation, timeout time.Duration) (porcupine.CheckResult, porcupine.LinearizationInfo) {
	return porcupine.CheckOperationsVerbose(Model, history, timeout)
}

// Visualize writes porcupine's HTML view of a checked history to path.
func Visualize(info porcupine.LinearizationInfo, path string) error {
	return porcupine.VisualizePath(Model, info, path)
}
