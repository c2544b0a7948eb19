package sim

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/anishathalye/porcupine"
	"github.com/dmq-project/metadata/client"
	metadatav1 "github.com/dmq-project/metadata/gen/dmq/metadata/v1"
	"github.com/dmq-project/metadata/linearizability"
	"github.com/dmq-project/metadata/node"
	"github.com/dmq-project/metadata/statemachine"
	"github.com/dmq-project/metadata/wire"
)

var (
	simTopics  = []string{"orders", "payments", "audit-log", "clicks", "users", "events"}
	simBrokers = []int32{100, 101, 102}
)

// operator is an operator's client: it issues one operation at a time through
// a caller (the production client's retry and session logic) with a
// deadline, and records each logical operation once in the history: from
// its start to its final answer, or pending forever when the outcome stayed
// unknown.
type operator struct {
	sim    *Sim
	id     int
	caller *caller
	op     *clientOp
}

// clientOp is one logical operation: one input, or the items of a batch
// (each recorded as an operation of its own on its topic).
type clientOp struct {
	input linearizability.Input
	items []linearizability.Input
	call  time.Duration
}

// inputs is what the operation records in the history, one per key.
func (op *clientOp) inputs() []linearizability.Input {
	if op.items != nil {
		return op.items
	}
	return []linearizability.Input{op.input}
}

// sessionOutlivesFailover is the shortest client session that must carry
// a write through a failover after the heal (an election and a client
// timeout or two): shorter ones, drawn to make retries meet expiry during
// the chaos, may end a write in an unknown outcome there too, which is
// what they are for.
const sessionOutlivesFailover = 10 * time.Second

func newClient(s *Sim, id int) *operator {
	return &operator{sim: s, id: id, caller: newCaller(s, uint64(1000+id), fmt.Sprintf("client-%d", id))}
}

// writesStopAt is when clients and storage services stop starting writes,
// so that every write can finish and every controller apply it before the
// run ends and the liveness checks compare them.
func (s *Sim) writesStopAt() time.Duration {
	return s.opts.Duration - callerPatience - time.Second
}

func (c *operator) start() {
	s := c.sim
	if s.now >= s.writesStopAt() {
		return
	}
	in := linearizability.Input{Topic: simTopics[s.rng.IntN(len(simTopics))]}
	var items []linearizability.Input
	switch r := s.rng.IntN(100); {
	case r < 22:
		in.Kind, in.Count = linearizability.CreateTopic, int32(1+s.rng.IntN(4))
		if s.rng.IntN(4) == 0 {
			items = c.batchOf(in)
		}
	case r < 34:
		in.Kind = linearizability.DeleteTopic
		if s.rng.IntN(4) == 0 {
			items = c.batchOf(in)
		}
	case r < 46:
		in.Kind, in.Count = linearizability.CreatePartitions, int32(2+s.rng.IntN(6))
		switch s.rng.IntN(12) {
		case 0, 1, 2:
			// retention.ms in seconds; 0 deletes it.
			in.Kind, in.Count = linearizability.AlterTopicConfig, int32(s.rng.IntN(4))
		case 3:
			// Count picks the compression default it sets.
			in = linearizability.Input{Kind: linearizability.AlterClusterConfig, Count: int32(s.rng.IntN(3))}
		case 4, 5:
			in.Kind, in.Count = linearizability.Reassign, 0
			if s.rng.IntN(4) != 0 {
				in.Replicas = s.randomTarget()
			}
		}
	case r < 76:
		in.Kind = linearizability.DescribeTopic
	case r < 84:
		in.Kind, in.Broker = linearizability.RegisterBroker, simBrokers[s.rng.IntN(len(simBrokers))]
	case r < 90:
		in.Kind, in.Broker = linearizability.UnregisterBroker, simBrokers[s.rng.IntN(len(simBrokers))]
	default:
		in.Kind, in.Broker = linearizability.DescribeBroker, simBrokers[s.rng.IntN(len(simBrokers))]
	}
	op := &clientOp{input: in, items: items, call: s.now}
	c.op = op
	deadline := s.now + callerPatience
	if items != nil {
		c.startBatch(op, deadline)
		return
	}
	if in.Kind == linearizability.DescribeTopic || in.Kind == linearizability.DescribeBroker {
		first := ""
		if s.rng.Float64() < s.opts.FollowerReads {
			// A client whose endpoint list starts at a follower.
			first = endpointOf(s.randomNodeID())
		}
		call(c.caller, deadline, first, anyCall, func(n *node.Node, reply func(attemptReply[linearizability.Output])) {
			c.read(n, in, reply)
		}, func(e callEnd[linearizability.Output]) {
			if e.failure != nil {
				// A read without an answer did nothing: it has no place
				// in the history.
				c.finish(op, linearizability.Output{Unknown: true}, false, 0)
				return
			}
			c.finish(op, e.value, true, 0)
		})
		return
	}
	c.caller.write(deadline, func(n *node.Node, id *metadatav1.RequestId, reply func(attemptReply[node.Outcome])) {
		c.handleWrite(n, in, id, func(o node.Outcome) { reply(attemptReply[node.Outcome]{value: o, err: o.Err, leader: o.LeaderID}) })
	}, func(e writeEnd) {
		switch {
		case e.requestID == nil:
			// No session could be opened: nothing was sent.
			c.finish(op, linearizability.Output{Unknown: true}, false, 0)
		case e.verdict == client.WriteUnknown:
			c.finish(op, linearizability.Output{Unknown: true}, true, e.sessionTimeout)
		case e.failure == nil:
			s.golden.checkAnswer(s, e.requestID, metadatav1.ErrorCode_NONE)
			code := metadatav1.ErrorCode_NONE
			if in.Kind == linearizability.AlterTopicConfig || in.Kind == linearizability.AlterClusterConfig || in.Kind == linearizability.Reassign {
				// A config change or a reassignment answers per item; this
				// one names one.
				s.golden.checkItems(s, e.requestID, e.outcome.Items)
				if len(e.outcome.Items) != 1 {
					s.violate("client %d: a %v of one item answered with %d results", c.id, in.Kind, len(e.outcome.Items))
				} else {
					code = e.outcome.Items[0].Err.GetCode()
				}
			}
			c.finish(op, linearizability.Output{Code: code}, true, e.sessionTimeout)
		case definite(e.failure.ErrorCode):
			s.golden.checkAnswer(s, e.requestID, e.failure.ErrorCode)
			c.finish(op, linearizability.Output{Code: e.failure.ErrorCode}, true, e.sessionTimeout)
		default:
			// Refused before it was proposed, the client says: it must
			// never be applied.
			s.golden.checkNotApplied(s, e.requestID, *e.failure)
			c.finish(op, linearizability.Output{NotApplied: true}, true, e.sessionTimeout)
		}
	})
}

// batchOf turns first into the first item of a batch of two or three
// distinct topics, per topic or atomic, sometimes a dry run.
func (c *operator) batchOf(first linearizability.Input) []linearizability.Input {
	s := c.sim
	size := 2 + s.rng.IntN(2)
	atomic, dryRun := s.rng.IntN(2) == 0, s.rng.IntN(5) == 0
	offset := 1 + s.rng.IntN(len(simTopics)-1)
	start := slices.Index(simTopics, first.Topic)
	items := make([]linearizability.Input, size)
	for i := range items {
		item := first
		item.Topic = simTopics[(start+i*offset)%len(simTopics)]
		if first.Kind == linearizability.CreateTopic {
			item.Count = int32(1 + s.rng.IntN(4))
		}
		item.Batch, item.Atomic, item.DryRun = size, atomic, dryRun
		items[i] = item
	}
	// offset and len(simTopics) may share a factor: keep the items distinct.
	distinct := items[:0]
	for _, item := range items {
		if !slices.ContainsFunc(distinct, func(d linearizability.Input) bool { return d.Topic == item.Topic }) {
			distinct = append(distinct, item)
		}
	}
	for i := range distinct {
		distinct[i].Batch = len(distinct)
	}
	return distinct
}

// startBatch runs a batch: a dry run as a read (answered, or absent from
// the history), a real one as a write whose answer is per item.
func (c *operator) startBatch(op *clientOp, deadline time.Duration) {
	s := c.sim
	first := op.items[0]
	if first.DryRun {
		call(c.caller, deadline, "", anyCall, func(n *node.Node, reply func(attemptReply[node.Outcome])) {
			c.handleBatch(n, op.items, nil, func(o node.Outcome) {
				reply(attemptReply[node.Outcome]{value: o, err: o.Err, leader: o.LeaderID})
			})
		}, func(e callEnd[node.Outcome]) {
			switch {
			case e.failure == nil:
				c.finishBatch(op, c.itemOutputs(op, e.value, metadatav1.ErrorCode_NONE), true, 0)
			case definite(e.failure.ErrorCode) && e.value.Items != nil:
				c.finishBatch(op, c.itemOutputs(op, e.value, e.failure.ErrorCode), true, 0)
			default:
				c.finishBatch(op, nil, false, 0)
			}
		})
		return
	}
	c.caller.write(deadline, func(n *node.Node, id *metadatav1.RequestId, reply func(attemptReply[node.Outcome])) {
		c.handleBatch(n, op.items, id, func(o node.Outcome) { reply(attemptReply[node.Outcome]{value: o, err: o.Err, leader: o.LeaderID}) })
	}, func(e writeEnd) {
		switch {
		case e.requestID == nil:
			c.finishBatch(op, nil, false, 0)
		case e.verdict == client.WriteUnknown:
			c.finishBatch(op, nil, true, e.sessionTimeout)
		case e.failure == nil:
			s.golden.checkAnswer(s, e.requestID, metadatav1.ErrorCode_NONE)
			s.golden.checkItems(s, e.requestID, e.outcome.Items)
			c.finishBatch(op, c.itemOutputs(op, e.outcome, metadatav1.ErrorCode_NONE), true, e.sessionTimeout)
		case definite(e.failure.ErrorCode):
			s.golden.checkAnswer(s, e.requestID, e.failure.ErrorCode)
			c.finishBatch(op, c.itemOutputs(op, e.outcome, e.failure.ErrorCode), true, e.sessionTimeout)
		default:
			s.golden.checkNotApplied(s, e.requestID, *e.failure)
			outs := make([]linearizability.Output, len(op.items))
			for i := range outs {
				outs[i].NotApplied = true
			}
			c.finishBatch(op, outs, true, e.sessionTimeout)
		}
	})
}

// itemOutputs are the answers of a batch's items. An answer without items
// is a refusal of the whole batch, which the simulator never provokes: each
// item records it, and the model finds it wrong. An atomic batch is
// answered all NONE, or with no NONE and some item's own failure.
func (c *operator) itemOutputs(op *clientOp, o node.Outcome, code metadatav1.ErrorCode) []linearizability.Output {
	s := c.sim
	outs := make([]linearizability.Output, len(op.items))
	if len(o.Items) != len(op.items) {
		if o.Items != nil {
			s.violate("client %d: a batch of %d items answered with %d", c.id, len(op.items), len(o.Items))
		}
		for i := range outs {
			outs[i].Code = code
		}
		return outs
	}
	succeeded, own := 0, 0
	for i, item := range o.Items {
		outs[i].Code = item.Err.GetCode()
		switch outs[i].Code {
		case metadatav1.ErrorCode_NONE:
			succeeded++
		case metadatav1.ErrorCode_BATCH_ABORTED:
		default:
			own++
		}
	}
	if op.items[0].Atomic && succeeded != len(outs) && (succeeded > 0 || own == 0) {
		s.violate("client %d: an atomic batch answered %d of %d items NONE and %d with their own failure", c.id, succeeded, len(outs), own)
	}
	if (code == metadatav1.ErrorCode_NONE) != (succeeded == len(outs) || !op.items[0].Atomic) {
		s.violate("client %d: a batch answered %v with items %v", c.id, code, outs)
	}
	return outs
}

// handleBatch runs on the controller: the batch through the node's API.
func (c *operator) handleBatch(n *node.Node, items []linearizability.Input, id *metadatav1.RequestId, done func(node.Outcome)) {
	first := items[0]
	if first.Kind == linearizability.CreateTopic {
		req := &metadatav1.CreateTopicsRequest{Atomic: first.Atomic, ValidateOnly: first.DryRun, RequestId: id}
		for _, item := range items {
			req.Topics = append(req.Topics, &metadatav1.CreateTopicRequest{Name: item.Topic, Partitions: item.Count,
				ReplicationFactor: max(c.sim.opts.ReplicationFactor, 1)})
		}
		n.CreateTopics(req, done)
		return
	}
	req := &metadatav1.DeleteTopicsRequest{Atomic: first.Atomic, ValidateOnly: first.DryRun, RequestId: id}
	for _, item := range items {
		req.Names = append(req.Names, item.Topic)
	}
	n.DeleteTopics(req, done)
}

// definite says whether an error code is an answer about the operation
// itself rather than about the controllers' availability.
func definite(code metadatav1.ErrorCode) bool {
	return wire.Definite(code)
}

// handleWrite runs on the controller: the write through the node's API.
func (c *operator) handleWrite(n *node.Node, in linearizability.Input, id *metadatav1.RequestId, done func(node.Outcome)) {
	switch in.Kind {
	case linearizability.CreateTopic:
		n.CreateTopic(&metadatav1.CreateTopicRequest{Name: in.Topic, Partitions: in.Count, ReplicationFactor: max(c.sim.opts.ReplicationFactor, 1), RequestId: id}, done)
	case linearizability.DeleteTopic:
		n.DeleteTopic(&metadatav1.DeleteTopicRequest{Name: in.Topic, RequestId: id}, done)
	case linearizability.CreatePartitions:
		n.CreatePartitions(&metadatav1.CreatePartitionsRequest{Topic: in.Topic, Count: in.Count, RequestId: id}, done)
	case linearizability.RegisterBroker:
		n.RegisterBroker(&metadatav1.RegisterBrokerRequest{Id: in.Broker, Host: fmt.Sprintf("client-broker-%d.sim", in.Broker),
			Port: 9092, IncarnationId: "client", RequestId: id}, done)
	case linearizability.UnregisterBroker:
		n.UnregisterBroker(&metadatav1.UnregisterBrokerRequest{Id: in.Broker, RequestId: id}, done)
	case linearizability.AlterTopicConfig:
		op := &metadatav1.AlterConfigOp{Key: statemachine.ConfigRetentionMs, Op: metadatav1.AlterConfigOp_SET,
			Value: fmt.Sprint(int64(in.Count) * 1000)}
		if in.Count == 0 {
			op = &metadatav1.AlterConfigOp{Key: statemachine.ConfigRetentionMs, Op: metadatav1.AlterConfigOp_DELETE}
		}
		n.IncrementalAlterConfigs(&metadatav1.IncrementalAlterConfigsRequest{RequestId: id, Resources: []*metadatav1.ResourceConfigChanges{{
			Resource: &metadatav1.ConfigResource{Type: metadatav1.ConfigResource_TOPIC, Name: in.Topic}, Ops: []*metadatav1.AlterConfigOp{op}}}}, done)
	case linearizability.Reassign:
		n.AlterPartitionReassignments(&metadatav1.AlterPartitionReassignmentsRequest{RequestId: id,
			Reassignments: []*metadatav1.PartitionReassignment{{Topic: in.Topic, Replicas: parseTarget(in.Replicas)}}}, done)
	case linearizability.AlterClusterConfig:
		// A default no operation of the model observes: compression.
		n.IncrementalAlterConfigs(&metadatav1.IncrementalAlterConfigsRequest{RequestId: id, Resources: []*metadatav1.ResourceConfigChanges{{
			Resource: &metadatav1.ConfigResource{Type: metadatav1.ConfigResource_CLUSTER},
			Ops: []*metadatav1.AlterConfigOp{{Key: statemachine.ConfigCompressionType, Op: metadatav1.AlterConfigOp_SET,
				Value: []string{"lz4", "zstd", "gzip"}[in.Count]}}}}}, done)
	default:
		panic(fmt.Sprintf("sim: %v is not a write", in.Kind))
	}
}

// read runs on the controller: a linearizable read through the node's API.
func (c *operator) read(n *node.Node, in linearizability.Input, reply func(attemptReply[linearizability.Output])) {
	leader := n.Leader()
	n.Read(func(sm *statemachine.StateMachine, err *statemachine.Error) {
		if err != nil {
			reply(attemptReply[linearizability.Output]{err: err, leader: leader})
			return
		}
		var out linearizability.Output
		if in.Kind == linearizability.DescribeTopic {
			if t := sm.Topic(in.Topic); t != nil {
				out.Exists, out.Partitions = true, int32(len(t.Partitions))
				out.RetentionMs, out.RetentionSeen = t.GetConfig().GetRetentionMs(), true
			}
		} else {
			out.Exists = sm.Broker(in.Broker) != nil
		}
		reply(attemptReply[linearizability.Output]{value: out})
	})
}

// finish records the operation, if record says it belongs in the history
// (a write sent, a read answered), and schedules the next one.
// sessionTimeout is that of the session a write ran in.
func (c *operator) finish(op *clientOp, out linearizability.Output, record bool, sessionTimeout time.Duration) {
	c.finishBatch(op, []linearizability.Output{out}, record, sessionTimeout)
}

// finishBatch is finish with one output per input; nil outputs are
// unknown.
func (c *operator) finishBatch(op *clientOp, outs []linearizability.Output, record bool, sessionTimeout time.Duration) {
	s := c.sim
	if c.op != op {
		panic("sim: a client finished an operation it is not running")
	}
	c.op = nil
	inputs := op.inputs()
	if outs == nil {
		outs = make([]linearizability.Output, len(inputs))
		for i := range outs {
			outs[i].Unknown = true
		}
	}
	ret := int64(s.now)
	if outs[0].Unknown {
		ret = linearizability.PendingForever
		shortSession := sessionTimeout > 0 && sessionTimeout < sessionOutlivesFailover
		if s.healed && op.call > s.opts.HealAfter+5*time.Second && !shortSession {
			s.violate("client %d's %v %s started after the heal and never completed\n%s", c.id, op.input.Kind, op.input.Topic, s.describe())
		}
	}
	if record {
		for i, in := range inputs {
			s.history = append(s.history, porcupine.Operation{
				ClientId: c.id, Input: in, Call: int64(op.call), Output: outs[i], Return: ret,
			})
		}
	}
	s.clientOpsDone++
	s.schedule(s.between(10*time.Millisecond, 300*time.Millisecond), evClientStart, uint64(c.id), 0, c.start)
}

// randomTarget is a target replica list for a topic of the run's
// replication factor: distinct storage services in random order.
func (s *Sim) randomTarget() string {
	ids := make([]string, 0, len(s.services))
	for _, i := range s.rng.Perm(len(s.services))[:min(int(max(s.opts.ReplicationFactor, 1)), len(s.services))] {
		ids = append(ids, strconv.Itoa(i+1))
	}
	return strings.Join(ids, ",")
}

func parseTarget(replicas string) []int32 {
	if replicas == "" {
		return nil
	}
	var out []int32
	for _, part := range strings.Split(replicas, ",") {
		id, err := strconv.Atoi(part)
		if err != nil {
			panic(fmt.Sprintf("sim: target %q", replicas))
		}
		out = append(out, int32(id))
	}
	return out
}
