package node

import (
	"fmt"
	"slices"

	"github.com/dmq-project/metadata/balance"
	metadatav1 "github.com/dmq-project/metadata/gen/dmq/metadata/v1"
	"github.com/dmq-project/metadata/statemachine"
	"google.golang.org/protobuf/proto"
)

// Batches: many topics created or deleted, or many configs changed, in one
// record. What can be checked without the state is checked here, per item;
// the items that pass go into the record, which names their positions in
// the request, so that its result lists the request's items in order
// whichever controller proposed it (a retry may reach another one, whose
// configuration refuses other items). A dry run (validate_only) checks the
// same record against the state of a linearizable read, so it answers what
// a real run at that moment would.

// batchPlan is a batch request split into the items that failed before the
// state was consulted and the record of the rest.
type batchPlan struct {
	items []statemachine.ItemResult
	// index holds the request positions of the record's items.
	index  []int32
	atomic bool
	name   func(int) string
	verb   string
}

// positions are the record's request_size and request_indexes: none when
// the record holds every item.
func (p *batchPlan) positions() (int32, []int32) {
	if len(p.index) == len(p.items) {
		return 0, nil
	}
	return int32(len(p.items)), p.index
}

// complete gives a result of the record (in the request's order) the
// reasons of the items this controller refused, where the record marks them
// refused, and a message to items whose reason was not kept (a retry).
func (p *batchPlan) complete(r statemachine.Result) statemachine.Result {
	if r.Items == nil {
		// Refused as a whole before the items were looked at (no leader,
		// an expired session): the request's answer.
		return r
	}
	if len(r.Items) != len(p.items) {
		return statemachine.Result{Version: r.Version, Err: invalidf(
			"the request id was used before for a request of %d items; this one has %d: number each request anew", len(r.Items), len(p.items))}
	}
	items := make([]statemachine.ItemResult, len(r.Items))
	for i, item := range r.Items {
		switch {
		case p.items[i].Err != nil && item.Err.GetCode() == metadatav1.ErrorCode_INVALID_REQUEST:
			item = p.items[i]
		case item.Err != nil && item.Err.Message == "":
			item.Err = &statemachine.Error{Code: item.Err.Code,
				Message: item.Err.Code.String() + " (the first answer to this request; its detail is not kept)"}
		}
		items[i] = item
	}
	r.Items = items
	return r
}

// runBatch answers the plan: from the request table (a retry), from a
// check against a linearizable read (a dry run, or an atomic batch with an
// item refused here: every other item says whether it alone would
// apply), or through the log.
func (n *Node) runBatch(p *batchPlan, id *metadatav1.RequestId, validateOnly bool, record *metadatav1.Record,
	check func(sm *statemachine.StateMachine, atomic bool) statemachine.Result, done func(Outcome)) {
	if !validateOnly {
		if first, ok := n.sm.LookupRequest(id); ok {
			done(Outcome{Result: p.complete(first), LeaderID: n.leader})
			return
		}
	}
	refused := len(p.index) < len(p.items)
	if len(p.index) == 0 {
		// Nothing for the state to decide.
		r := statemachine.BatchResult(slices.Clone(p.items), p.atomic, p.name, p.verb)
		r.Version = n.sm.Version()
		done(Outcome{Result: r, LeaderID: n.leader})
		return
	}
	if validateOnly || (p.atomic && refused) {
		n.Read(func(sm *statemachine.StateMachine, err *statemachine.Error) {
			if err != nil {
				done(Outcome{Result: statemachine.Result{Err: err}, LeaderID: n.leader})
				return
			}
			r := check(sm, false)
			r = p.complete(r)
			if r.Err == nil && p.atomic {
				r = statemachine.BatchResult(r.Items, true, p.name, p.verb)
			}
			r.Version = sm.Version()
			done(Outcome{Result: r, LeaderID: n.leader})
		})
		return
	}
	n.propose(record, func(o Outcome) {
		o.Result = p.complete(o.Result)
		done(o)
	})
}

func invalidf(format string, args ...any) *statemachine.Error {
	return invalid(fmt.Sprintf(format, args...))
}

// CreateTopics creates many topics in one record: each on its own, or all or
// none (atomic). With validate_only it changes nothing and answers what the
// request would answer now. The outcome's Items follow the request's order.
func (n *Node) CreateTopics(req *metadatav1.CreateTopicsRequest, done func(Outcome)) {
	topics := req.GetTopics()
	var partitions int64
	for _, t := range topics {
		partitions += int64(max(t.GetPartitions(), 0))
	}
	if err := statemachine.ValidateBatchSize(len(topics), partitions); err != nil {
		fail(done, n.leader, err)
		return
	}
	seen := make(map[string]struct{}, len(topics))
	for _, t := range topics {
		if t.GetRequestId() != nil {
			fail(done, n.leader, invalidf("topic %q of the batch carries a request id: only the batch has one", t.GetName()))
			return
		}
		if _, dup := seen[t.GetName()]; dup {
			fail(done, n.leader, invalidf("topic %q is named twice in the batch", t.GetName()))
			return
		}
		seen[t.GetName()] = struct{}{}
	}
	p := &batchPlan{items: make([]statemachine.ItemResult, len(topics)), atomic: req.GetAtomic(),
		name: func(i int) string { return topics[i].GetName() }, verb: "created"}
	batch := &metadatav1.CreateTopicsRecord{Atomic: req.GetAtomic()}
	for i, t := range topics {
		r, err := n.topicRecord(t)
		if err != nil {
			p.items[i].Err = err
			continue
		}
		batch.Topics = append(batch.Topics, r)
		p.index = append(p.index, int32(i))
	}
	batch.RequestSize, batch.RequestIndexes = p.positions()
	n.runBatch(p, req.GetRequestId(), req.GetValidateOnly(),
		&metadatav1.Record{RequestId: req.GetRequestId(), Body: &metadatav1.Record_CreateTopics{CreateTopics: batch}},
		func(sm *statemachine.StateMachine, atomic bool) statemachine.Result {
			check := proto.CloneOf(batch)
			check.Atomic = atomic
			return sm.CheckCreateTopics(check)
		}, done)
}

// DeleteTopics deletes many topics in one record, as CreateTopics creates
// them.
func (n *Node) DeleteTopics(req *metadatav1.DeleteTopicsRequest, done func(Outcome)) {
	names := req.GetNames()
	if err := statemachine.ValidateBatchSize(len(names), 0); err != nil {
		fail(done, n.leader, err)
		return
	}
	seen := make(map[string]struct{}, len(names))
	p := &batchPlan{items: make([]statemachine.ItemResult, len(names)), atomic: req.GetAtomic(),
		name: func(i int) string { return names[i] }, verb: "deleted"}
	batch := &metadatav1.DeleteTopicsRecord{Atomic: req.GetAtomic()}
	for i, name := range names {
		if _, dup := seen[name]; dup {
			fail(done, n.leader, invalidf("topic %q is named twice in the batch", name))
			return
		}
		seen[name] = struct{}{}
		if err := statemachine.ValidateTopicName(name); err != nil {
			p.items[i].Err = err
			continue
		}
		batch.Names = append(batch.Names, name)
		p.index = append(p.index, int32(i))
	}
	batch.RequestSize, batch.RequestIndexes = p.positions()
	n.runBatch(p, req.GetRequestId(), req.GetValidateOnly(),
		&metadatav1.Record{RequestId: req.GetRequestId(), Body: &metadatav1.Record_DeleteTopics{DeleteTopics: batch}},
		func(sm *statemachine.StateMachine, atomic bool) statemachine.Result {
			check := proto.CloneOf(batch)
			check.Atomic = atomic
			return sm.CheckDeleteTopics(check)
		}, done)
}

// BuiltInTopicConfig is the config a topic takes where neither its creation
// nor the cluster's defaults set a key: the built-in values and this
// controller's replication.min-isr (capped at a topic's replication
// factor when it applies).
func (n *Node) BuiltInTopicConfig() *metadatav1.TopicConfig {
	return statemachine.DefaultTopicConfig(n.cfg.DefaultMinISR, statemachine.ReplicationFactorMax)
}

// IncrementalAlterConfigs changes configs of topics and the cluster's
// defaults, each resource on its own, in one record; with validate_only it
// changes nothing and answers what the request would now. A DELETE of a
// topic's key carries this controller's built-in value for it.
func (n *Node) IncrementalAlterConfigs(req *metadatav1.IncrementalAlterConfigsRequest, done func(Outcome)) {
	resources := req.GetResources()
	if len(resources) == 0 || len(resources) > statemachine.TopicsPerBatchMax {
		fail(done, n.leader, invalidf("a config change names 1-%d resources, not %d", statemachine.TopicsPerBatchMax, len(resources)))
		return
	}
	type resourceKey struct {
		kind metadatav1.ConfigResource_Type
		name string
	}
	seen := make(map[resourceKey]struct{}, len(resources))
	for _, r := range resources {
		key := resourceKey{r.GetResource().GetType(), r.GetResource().GetName()}
		if _, dup := seen[key]; dup {
			fail(done, n.leader, invalidf("%v %q is named twice", key.kind, key.name))
			return
		}
		seen[key] = struct{}{}
	}
	builtIn := n.BuiltInTopicConfig()
	p := &batchPlan{items: make([]statemachine.ItemResult, len(resources)),
		name: func(i int) string { return resources[i].GetResource().GetName() }, verb: "changed"}
	record := &metadatav1.AlterConfigsRecord{}
	for i, r := range resources {
		if err := statemachine.ValidateConfigChanges(r); err != nil {
			p.items[i].Err = err
			continue
		}
		changes := &metadatav1.ResourceConfigChanges{Resource: r.GetResource()}
		for _, op := range r.GetOps() {
			op = &metadatav1.AlterConfigOp{Key: op.GetKey(), Op: op.GetOp(), Value: op.GetValue()}
			if op.Op == metadatav1.AlterConfigOp_DELETE {
				op.Value = ""
				if r.GetResource().GetType() == metadatav1.ConfigResource_TOPIC {
					op.Value = statemachine.TopicConfigValue(builtIn, op.Key)
				}
			}
			changes.Ops = append(changes.Ops, op)
		}
		record.Resources = append(record.Resources, changes)
		p.index = append(p.index, int32(i))
	}
	record.RequestSize, record.RequestIndexes = p.positions()
	n.runBatch(p, req.GetRequestId(), req.GetValidateOnly(),
		&metadatav1.Record{RequestId: req.GetRequestId(), Body: &metadatav1.Record_AlterConfigs{AlterConfigs: record}},
		func(sm *statemachine.StateMachine, _ bool) statemachine.Result { return sm.CheckAlterConfigs(record) }, done)
}

// AlterPartitionReassignments moves partitions to target replica lists, or
// cancels their moves, each on its own, in one record. Every item goes into
// the record (its checks are the state machine's, the same on any
// controller), so the result is in the request's order.
func (n *Node) AlterPartitionReassignments(req *metadatav1.AlterPartitionReassignmentsRequest, done func(Outcome)) {
	items := req.GetReassignments()
	if len(items) == 0 || len(items) > statemachine.TopicsPerBatchMax {
		fail(done, n.leader, invalidf("a reassignment names 1-%d partitions, not %d", statemachine.TopicsPerBatchMax, len(items)))
		return
	}
	type partitionKey struct {
		topic     string
		partition int32
	}
	seen := make(map[partitionKey]struct{}, len(items))
	p := &batchPlan{items: make([]statemachine.ItemResult, len(items)),
		name: func(i int) string { return items[i].GetTopic() }, verb: "moved"}
	for i, ra := range items {
		key := partitionKey{ra.GetTopic(), ra.GetPartition()}
		if _, dup := seen[key]; dup {
			fail(done, n.leader, invalidf("%s-%d is named twice", key.topic, key.partition))
			return
		}
		seen[key] = struct{}{}
		p.index = append(p.index, int32(i))
	}
	record := &metadatav1.AlterPartitionReassignmentsRecord{Reassignments: items}
	n.runBatch(p, req.GetRequestId(), false,
		&metadatav1.Record{RequestId: req.GetRequestId(), Body: &metadatav1.Record_AlterPartitionReassignments{AlterPartitionReassignments: record}},
		nil, done)
}

// Rebalance plans the moves that balance replicas and preferred leaders
// across the eligible brokers (or empty those to decommission), from this
// controller's state, and proposes the plan; with dry_run it answers the
// plan only. Partitions moving already are left out of the plan. The plan
// is computed off the node's goroutine (Env.Worker): a million partitions
// take a good fraction of a second (docs/BENCHMARKS.md).
func (n *Node) Rebalance(req *metadatav1.RebalanceRequest, done func(Outcome, []*metadatav1.PartitionReassignment)) {
	fail := func(err *statemachine.Error, moves []*metadatav1.PartitionReassignment) {
		done(Outcome{Result: statemachine.Result{Err: err}, LeaderID: n.leader}, moves)
	}
	maxMoving := req.GetMaxMoving()
	if maxMoving == 0 {
		maxMoving = statemachine.RebalanceMovingFirst
	}
	if err := statemachine.ValidateRebalance(0, int(maxMoving)); err != nil {
		fail(err, nil)
		return
	}
	for _, id := range req.GetDecommission() {
		if !n.sm.BrokerStatus(id).Registered {
			fail(&statemachine.Error{Code: metadatav1.ErrorCode_UNKNOWN_BROKER, Message: fmt.Sprintf("broker %d is not registered", id)}, nil)
			return
		}
	}
	if first, ok := n.sm.LookupRequest(req.GetRequestId()); ok && !req.GetDryRun() {
		// A retry of a plan already applied: its answer, not a new plan.
		done(Outcome{Result: first, LeaderID: n.leader}, nil)
		return
	}
	if n.plansInFlight >= PlansInFlightMax {
		fail(unavailable("%d balancing plans are being computed: retry when one is done", n.plansInFlight), nil)
		return
	}
	n.planThen(req.GetDecommission(), func(moves []*metadatav1.PartitionReassignment) {
		if err := statemachine.ValidateRebalance(len(moves), int(maxMoving)); err != nil {
			fail(err, moves)
			return
		}
		if req.GetDryRun() {
			done(Outcome{Result: statemachine.Result{Version: n.sm.Version()}, LeaderID: n.leader}, moves)
			return
		}
		n.propose(&metadatav1.Record{RequestId: req.GetRequestId(), Body: &metadatav1.Record_Rebalance{Rebalance: &metadatav1.RebalanceRecord{
			Moves: moves, MaxMoving: maxMoving, Drain: req.GetDecommission()}}}, func(o Outcome) { done(o, moves) })
	})
}

// planThen computes the balancing plan of this controller's state (the
// partitions not moving, and with no replica on a broker that is gone) off
// the node's goroutine, then calls then with it
// on the node's goroutine. The state may have changed by then: apply skips
// a move that no longer applies.
func (n *Node) planThen(drain []int32, then func([]*metadatav1.PartitionReassignment)) {
	// The brokers that may take replicas, and those to drain even when
	// fenced: the planner moves replicas only off brokers it is given.
	var brokers []balance.Broker
	for _, id := range n.sm.BrokerIDs() {
		if b := n.sm.Broker(id); b != nil && (b.GetIsAlive() || slices.Contains(drain, id)) {
			brokers = append(brokers, balance.Broker{ID: id, Rack: b.GetRack()})
		}
	}
	inputs := n.sm.PlanInputs()
	drain = slices.Clone(drain)
	n.plansInFlight++
	n.offload(func() func() {
		parts := make([]balance.Partition, len(inputs.Refs))
		for i := range parts {
			parts[i].Replicas = inputs.Replicas(i)
		}
		var out []*metadatav1.PartitionReassignment
		for _, m := range balance.Plan(brokers, parts, balance.Options{Drain: drain}) {
			r := inputs.Refs[m.Partition]
			out = append(out, &metadatav1.PartitionReassignment{Topic: inputs.Topics[r.Topic], Partition: r.Index,
				Replicas: m.Replicas, ExpectedReplicas: parts[m.Partition].Replicas})
		}
		return func() {
			n.plansInFlight--
			then(out)
		}
	})
}

// PlansInFlightMax bounds the balancing plans a controller computes at
// once for Rebalance calls (each holds a copy of the partitions' replica
// lists); one more is refused as unavailable, for the client to retry.
const PlansInFlightMax = 2

// offload runs work through the environment's Worker, or inline without
// one, and then what it returns on the node's goroutine.
func (n *Node) offload(work func() func()) {
	if n.env.Worker == nil {
		work()()
		return
	}
	n.env.Worker.Run(work)
}
