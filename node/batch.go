package node

import (
	"fmt"

	metadatav1 "github.com/dmq-project/metadata/gen/dmq/metadata/v1"
	"github.com/dmq-project/metadata/statemachine"
)

// Batches: many topics created or deleted in one record. What can be
// checked without the state is checked here, per item; the items that pass
// go into the record, whose result is mapped back to the request's order.
// A dry run (validate_only) checks the same record against the state of a
// linearizable read, so it answers what a real run at that moment would.

// batchPlan is a batch request split into the items that failed before the
// state was consulted and the record of the rest.
type batchPlan struct {
	items []statemachine.ItemResult
	// index maps a record item to its request item.
	index  []int
	atomic bool
	name   func(int) string
	verb   string
}

// complete maps a result over the record's items to one over the request's.
func (p *batchPlan) complete(r statemachine.Result) statemachine.Result {
	if r.Items == nil {
		// Refused as a whole before the items were looked at (no leader,
		// an expired session): the request's answer.
		return r
	}
	items := make([]statemachine.ItemResult, len(p.items))
	copy(items, p.items)
	for j, item := range r.Items {
		items[p.index[j]] = item
	}
	r.Items = items
	return r
}

// answerWithoutState answers a batch whose outcome the state cannot change:
// an atomic one with an item that failed already, or one with no item left.
func (p *batchPlan) answerWithoutState() (statemachine.Result, bool) {
	failed := len(p.index) < len(p.items)
	switch {
	case p.atomic && failed:
		items := make([]statemachine.ItemResult, len(p.items))
		copy(items, p.items)
		return statemachine.BatchResult(items, true, p.name, p.verb), true
	case len(p.index) == 0:
		return statemachine.Result{Items: p.items}, true
	}
	return statemachine.Result{}, false
}

// run answers the plan: from itself, from a dry run against a linearizable
// read, or through the log.
func (n *Node) runBatch(p *batchPlan, validateOnly bool, record *metadatav1.Record,
	check func(*statemachine.StateMachine) statemachine.Result, done func(Outcome)) {
	if r, ok := p.answerWithoutState(); ok {
		r.Version = n.sm.Version()
		done(Outcome{Result: r, LeaderID: n.leader})
		return
	}
	if validateOnly {
		n.Read(func(sm *statemachine.StateMachine, err *statemachine.Error) {
			if err != nil {
				done(Outcome{Result: statemachine.Result{Err: err}, LeaderID: n.leader})
				return
			}
			r := check(sm)
			r.Version = sm.Version()
			done(Outcome{Result: p.complete(r), LeaderID: n.leader})
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
		p.index = append(p.index, i)
	}
	n.runBatch(p, req.GetValidateOnly(),
		&metadatav1.Record{RequestId: req.GetRequestId(), Body: &metadatav1.Record_CreateTopics{CreateTopics: batch}},
		func(sm *statemachine.StateMachine) statemachine.Result { return sm.CheckCreateTopics(batch) }, done)
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
		p.index = append(p.index, i)
	}
	n.runBatch(p, req.GetValidateOnly(),
		&metadatav1.Record{RequestId: req.GetRequestId(), Body: &metadatav1.Record_DeleteTopics{DeleteTopics: batch}},
		func(sm *statemachine.StateMachine) statemachine.Result { return sm.CheckDeleteTopics(batch) }, done)
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
		p.index = append(p.index, i)
	}
	n.runBatch(p, req.GetValidateOnly(),
		&metadatav1.Record{RequestId: req.GetRequestId(), Body: &metadatav1.Record_AlterConfigs{AlterConfigs: record}},
		func(sm *statemachine.StateMachine) statemachine.Result { return sm.CheckAlterConfigs(record) }, done)
}
