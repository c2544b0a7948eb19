package linearizability

import (
	"testing"
	"time"

	"github.com/anishathalye/porcupine"
	metadatav1 "github.com/dmq-project/metadata/gen/dmq/metadata/v1"
	"github.com/stretchr/testify/assert"
)

const (
	ok           = metadatav1.ErrorCode_NONE
	exists       = metadatav1.ErrorCode_TOPIC_ALREADY_EXISTS
	unknownTopic = metadatav1.ErrorCode_UNKNOWN_TOPIC
)

func op(client int, in Input, call int64, out Output, ret int64) porcupine.Operation {
	return porcupine.Operation{ClientId: client, Input: in, Call: call, Output: out, Return: ret}
}

func create(topic string, n int32) Input { return Input{Kind: CreateTopic, Topic: topic, Count: n} }
func del(topic string) Input             { return Input{Kind: DeleteTopic, Topic: topic} }
func describe(topic string) Input        { return Input{Kind: DescribeTopic, Topic: topic} }
func grow(topic string, n int32) Input   { return Input{Kind: CreatePartitions, Topic: topic, Count: n} }
func code(c metadatav1.ErrorCode) Output { return Output{Code: c} }
func alter(topic string, seconds int32) Input {
	return Input{Kind: AlterTopicConfig, Topic: topic, Count: seconds}
}
func retained(n int32, ms int64) Output {
	return Output{Exists: true, Partitions: n, RetentionMs: ms, RetentionSeen: true}
}
func seen(exists bool, n int32) Output { return Output{Exists: exists, Partitions: n} }

var unknown = Output{Unknown: true}

const aborted = metadatav1.ErrorCode_BATCH_ABORTED

// inBatch makes in an item of a batch of two.
func inBatch(in Input, atomic, dryRun bool) Input {
	in.Batch, in.Atomic, in.DryRun = 2, atomic, dryRun
	return in
}

func check(history ...porcupine.Operation) porcupine.CheckResult {
	result, _ := Check(history, 5*time.Second)
	return result
}

func TestLegalHistories(t *testing.T) {
	cases := map[string][]porcupine.Operation{
		"sequential": {
			op(0, create("a", 3), 0, code(ok), 1),
			op(0, describe("a"), 2, seen(true, 3), 3),
			op(0, grow("a", 5), 4, code(ok), 5),
			op(0, describe("a"), 6, seen(true, 5), 7),
			op(0, del("a"), 8, code(ok), 9),
			op(0, describe("a"), 10, seen(false, 0), 11),
		},
		"concurrent creates, one wins": {
			op(0, create("a", 1), 0, code(ok), 10),
			op(1, create("a", 2), 1, code(exists), 9),
			op(2, describe("a"), 11, seen(true, 1), 12),
		},
		"a read overlapping a write may see either": {
			op(0, create("a", 1), 0, code(ok), 10),
			op(1, describe("a"), 1, seen(false, 0), 2),
			op(2, describe("a"), 3, seen(true, 1), 4),
		},
		"unknown write that took effect": {
			op(0, create("a", 4), 0, unknown, PendingForever),
			op(1, describe("a"), 5, seen(true, 4), 6),
		},
		"unknown write that never took effect": {
			op(0, create("a", 4), 0, unknown, PendingForever),
			op(1, describe("a"), 5, seen(false, 0), 6),
			op(1, describe("a"), 7, seen(false, 0), 8),
		},
		"a create refused for lack of brokers changes nothing": {
			op(0, create("a", 1), 0, code(metadatav1.ErrorCode_INVALID_REPLICATION_FACTOR), 1),
			op(0, describe("a"), 2, seen(false, 0), 3),
		},
		"an atomic batch refused for another topic leaves this one absent": {
			op(0, inBatch(create("a", 1), true, false), 0, code(aborted), 1),
			op(0, describe("a"), 2, seen(false, 0), 3),
		},
		"an atomic batch refused for this topic": {
			op(0, create("a", 1), 0, code(ok), 1),
			op(0, inBatch(create("a", 2), true, false), 2, code(exists), 3),
			op(0, describe("a"), 4, seen(true, 1), 5),
		},
		"a dry run answers what the write would, and changes nothing": {
			op(0, inBatch(create("a", 1), false, true), 0, code(ok), 1),
			op(0, inBatch(del("a"), true, true), 2, code(unknownTopic), 3),
			op(0, describe("a"), 4, seen(false, 0), 5),
			op(0, create("a", 1), 6, code(ok), 7),
			op(0, inBatch(create("a", 1), true, true), 8, code(exists), 9),
			op(0, inBatch(del("a"), true, true), 10, code(aborted), 11),
		},
		"a topic's retention set, seen, deleted, recreated": {
			op(0, create("a", 1), 0, code(ok), 1),
			op(0, alter("a", 5), 2, code(ok), 3),
			op(0, grow("a", 2), 4, code(ok), 5),
			op(1, describe("a"), 6, retained(2, 5000), 7),
			op(0, alter("a", 0), 8, code(ok), 9),
			op(1, describe("a"), 10, retained(2, DefaultRetentionMs), 11),
			op(0, alter("a", 7), 12, code(ok), 13),
			op(0, del("a"), 14, code(ok), 15),
			op(0, create("a", 1), 16, code(ok), 17),
			op(1, describe("a"), 18, retained(1, DefaultRetentionMs), 19),
			op(0, Input{Kind: AlterClusterConfig}, 20, code(ok), 21),
		},
		"a reassignment of an existing topic, refused or not, changes what is seen of it nothing": {
			op(0, create("a", 1), 0, code(ok), 1),
			op(0, Input{Kind: Reassign, Topic: "a", Replicas: "2"}, 2, code(ok), 3),
			op(0, Input{Kind: Reassign, Topic: "a", Replicas: "9"}, 4, code(metadatav1.ErrorCode_INVALID_REPLICA_ASSIGNMENT), 5),
			op(0, Input{Kind: Reassign, Topic: "a"}, 6, code(metadatav1.ErrorCode_NO_REASSIGNMENT_IN_PROGRESS), 7),
			op(1, describe("a"), 8, seen(true, 1), 9),
		},
		"keys are independent": {
			op(0, create("a", 1), 0, code(ok), 1),
			op(1, describe("b"), 2, seen(false, 0), 3),
			op(2, Input{Kind: RegisterBroker, Broker: 7}, 4, code(ok), 5),
			op(2, Input{Kind: DescribeBroker, Broker: 7}, 6, Output{Exists: true}, 7),
		},
	}
	for name, history := range cases {
		t.Run(name, func(t *testing.T) {
			assert.Equal(t, porcupine.Ok, check(history...))
		})
	}
}

func TestIllegalHistories(t *testing.T) {
	cases := map[string][]porcupine.Operation{
		"stale read: a read after an acknowledged create misses it": {
			op(0, create("a", 1), 0, code(ok), 1),
			op(1, describe("a"), 2, seen(false, 0), 3),
		},
		"lost write: an acknowledged grow is not seen": {
			op(0, create("a", 1), 0, code(ok), 1),
			op(0, grow("a", 3), 2, code(ok), 3),
			op(1, describe("a"), 4, seen(true, 1), 5),
		},
		"double-applied retry: a create answered ok, then applied again": {
			op(0, create("a", 1), 0, code(ok), 1),
			op(0, del("a"), 2, code(ok), 3),
			// The client retried the first create; it must not reappear.
			op(1, describe("a"), 4, seen(true, 1), 5),
		},
		"two creates both succeed": {
			op(0, create("a", 1), 0, code(ok), 5),
			op(1, create("a", 1), 0, code(ok), 5),
		},
		"delete of a topic that exists reported unknown topic": {
			op(0, create("a", 1), 0, code(ok), 1),
			op(0, del("a"), 2, code(unknownTopic), 3),
		},
		"read goes back in time": {
			op(0, create("a", 1), 0, unknown, PendingForever),
			op(1, describe("a"), 1, seen(true, 1), 2),
			op(1, describe("a"), 3, seen(false, 0), 4),
		},
		"an atomic batch's item answered aborted applied anyway": {
			op(0, inBatch(create("a", 1), true, false), 0, code(aborted), 1),
			op(0, describe("a"), 2, seen(true, 1), 3),
		},
		"an item answered aborted that would have failed alone": {
			op(0, create("a", 1), 0, code(ok), 1),
			op(0, inBatch(create("a", 2), true, false), 2, code(aborted), 3),
		},
		"aborted outside an atomic batch": {
			op(0, inBatch(create("a", 1), false, false), 0, code(aborted), 1),
		},
		"a dry run that created the topic": {
			op(0, inBatch(create("a", 1), false, true), 0, code(ok), 1),
			op(0, describe("a"), 2, seen(true, 1), 3),
		},
		"a dry run that answered what the write would not": {
			op(0, create("a", 1), 0, code(ok), 1),
			op(0, inBatch(create("a", 1), false, true), 2, code(ok), 3),
		},
		"a config change acknowledged but not seen": {
			op(0, create("a", 1), 0, code(ok), 1),
			op(0, alter("a", 5), 2, code(ok), 3),
			op(1, describe("a"), 4, retained(1, DefaultRetentionMs), 5),
		},
		"a retention of 0 seen where none was set": {
			op(0, create("a", 1), 0, code(ok), 1),
			op(1, describe("a"), 2, retained(1, 0), 3),
		},
		"a reassignment of a missing topic acknowledged": {
			op(0, Input{Kind: Reassign, Topic: "a", Replicas: "2"}, 0, code(ok), 1),
		},
		"a reassignment refused for its brokers where the topic is missing": {
			op(0, Input{Kind: Reassign, Topic: "a", Replicas: "9"}, 0, code(metadatav1.ErrorCode_INVALID_REPLICA_ASSIGNMENT), 1),
		},
		"a config change of a missing topic acknowledged": {
			op(0, alter("a", 5), 0, code(ok), 1),
		},
		"unregistered broker still seen": {
			op(0, Input{Kind: RegisterBroker, Broker: 7}, 0, code(ok), 1),
			op(0, Input{Kind: UnregisterBroker, Broker: 7}, 2, code(ok), 3),
			op(1, Input{Kind: DescribeBroker, Broker: 7}, 4, Output{Exists: true}, 5),
		},
	}
	for name, history := range cases {
		t.Run(name, func(t *testing.T) {
			assert.Equal(t, porcupine.Illegal, check(history...))
		})
	}
}
