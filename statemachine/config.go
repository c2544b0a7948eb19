package statemachine

import (
	"maps"
	"strconv"

	metadatav1 "github.com/dmq-project/metadata/gen/dmq/metadata/v1"
)

// Configs: a topic's typed config, where each key's value came from (its
// sources), and the cluster's defaults for new topics.
//
// A topic takes the cluster's default for every key its creation did not
// set, when it is created; later changes of the defaults apply to topics
// created after them (they are defaults for new topics, as Kafka's
// "dynamic cluster defaults" are not: no change of one moves every topic's
// config, and no push of every topic follows it).

// configSources holds a source per key of ConfigKeys, two bits each:
// sourceDefault (0), sourceTopic or sourceCluster.
type configSources uint16

const (
	sourceDefault = 0
	sourceTopic   = 1
	sourceCluster = 2
)

func (c configSources) of(index int) int { return int(c>>(2*index)) & 3 }

func (c configSources) with(index, source int) configSources {
	return c&^(3<<(2*index)) | configSources(source)<<(2*index)
}

func configIndex(key string) (int, bool) {
	for i, k := range ConfigKeys {
		if k == key {
			return i, true
		}
	}
	return 0, false
}

// TopicConfigValue is key's value in config, as ParseTopicConfig reads it.
func TopicConfigValue(config *metadatav1.TopicConfig, key string) string {
	return configValue(config, key)
}

func configValue(config *metadatav1.TopicConfig, key string) string {
	for _, entry := range TopicConfigEntries(config) {
		if entry[0] == key {
			return entry[1]
		}
	}
	return ""
}

// clusterDefault is the cluster's default for key as a topic of
// replication factor rf takes it: min.insync.replicas is capped at rf, as
// the built-in default is, so that a default never makes a topic
// unwritable.
func clusterDefault(cluster map[string]string, key string, rf int32) (string, bool) {
	value, ok := cluster[key]
	return capDefault(key, value, rf), ok
}

// capDefault caps a default min.insync.replicas at the replication factor.
func capDefault(key, value string, rf int32) string {
	if key == ConfigMinInsyncReplica {
		if n, err := strconv.ParseInt(value, 10, 32); err == nil && int32(n) > rf {
			return strconv.FormatInt(int64(rf), 10)
		}
	}
	return value
}

// topicConfig is the config a new topic takes: r's, with the cluster's
// default for each key r did not set, and their sources.
func (s *StateMachine) topicConfig(r *metadatav1.CreateTopicRecord) (*metadatav1.TopicConfig, configSources, *Error) {
	var sources configSources
	for _, key := range r.ExplicitConfigs {
		index, ok := configIndex(key)
		if !ok {
			return nil, 0, unknownConfig(key)
		}
		sources = sources.with(index, sourceTopic)
	}
	if len(s.clusterConfig) == 0 || r.Config == nil {
		return r.Config, sources, nil
	}
	config := cloneConfig(r.Config)
	for index, key := range ConfigKeys {
		if sources.of(index) == sourceTopic {
			continue
		}
		if value, ok := clusterDefault(s.clusterConfig, key, r.ReplicationFactor); ok {
			if err := setConfigValue(config, key, value); err != nil {
				return nil, 0, err
			}
			sources = sources.with(index, sourceCluster)
		}
	}
	return config, sources, nil
}

// NewTopicConfig is the config a topic created now by r would have: r's,
// with the cluster's defaults for the keys r does not set; nil if r's
// config is refused.
func (s *StateMachine) NewTopicConfig(r *metadatav1.CreateTopicRecord) *metadatav1.TopicConfig {
	config, _, err := s.topicConfig(r)
	if err != nil || validateTopicConfig(config, r.ReplicationFactor) != nil {
		return nil
	}
	return cloneConfig(config)
}

func cloneConfig(c *metadatav1.TopicConfig) *metadatav1.TopicConfig {
	return &metadatav1.TopicConfig{RetentionMs: c.RetentionMs, RetentionBytes: c.RetentionBytes, SegmentBytes: c.SegmentBytes,
		CompressionType: c.CompressionType, MinInsyncReplicas: c.MinInsyncReplicas, UncleanLeaderElectionEnable: c.UncleanLeaderElectionEnable}
}

// ValidateConfigChanges checks what a config change can be checked for
// without the state: a resource named as its type wants, known keys, known
// operations, no key twice.
func ValidateConfigChanges(r *metadatav1.ResourceConfigChanges) *Error {
	res := r.GetResource()
	switch res.GetType() {
	case metadatav1.ConfigResource_TOPIC:
		if err := ValidateTopicName(res.GetName()); err != nil {
			return err
		}
	case metadatav1.ConfigResource_CLUSTER:
		if res.GetName() != "" {
			return errorf(metadatav1.ErrorCode_INVALID_REQUEST, "the cluster resource has no name (got %q)", res.GetName())
		}
	default:
		return errorf(metadatav1.ErrorCode_INVALID_REQUEST, "config resource type %v: want TOPIC or CLUSTER", res.GetType())
	}
	if len(r.GetOps()) == 0 {
		return errorf(metadatav1.ErrorCode_INVALID_REQUEST, "no config change for %v %q", res.GetType(), res.GetName())
	}
	for i, op := range r.GetOps() {
		if _, ok := configIndex(op.GetKey()); !ok {
			return unknownConfig(op.GetKey())
		}
		if op.GetOp() != metadatav1.AlterConfigOp_SET && op.GetOp() != metadatav1.AlterConfigOp_DELETE {
			return errorf(metadatav1.ErrorCode_INVALID_REQUEST, "config %s: operation %v, want SET or DELETE", op.GetKey(), op.GetOp())
		}
		for _, earlier := range r.GetOps()[:i] {
			if earlier.GetKey() == op.GetKey() {
				return errorf(metadatav1.ErrorCode_INVALID_REQUEST, "config %s is changed twice", op.GetKey())
			}
		}
		if op.GetOp() == metadatav1.AlterConfigOp_SET {
			if err := setConfigValue(DefaultTopicConfig(1, ReplicationFactorMax), op.GetKey(), op.GetValue()); err != nil {
				return err
			}
		}
	}
	return nil
}

// CheckAlterConfigs answers what applying r now would answer, changing
// nothing (IncrementalAlterConfigs with validate_only).
func (s *StateMachine) CheckAlterConfigs(r *metadatav1.AlterConfigsRecord) Result {
	return s.alterConfigs(r, nil)
}

// alterConfigs applies r's resources in order, each on its own; with a nil
// change, it only answers.
func (s *StateMachine) alterConfigs(r *metadatav1.AlterConfigsRecord, c *change) Result {
	if len(r.Resources) == 0 || len(r.Resources) > TopicsPerBatchMax {
		return fail(errorf(metadatav1.ErrorCode_INVALID_REQUEST, "a config change names 1-%d resources, not %d",
			TopicsPerBatchMax, len(r.Resources)))
	}
	if err := positions(r.RequestSize, r.RequestIndexes, len(r.Resources)); err != nil {
		return fail(err)
	}
	cluster := s.clusterConfig
	if c == nil {
		cluster = maps.Clone(s.clusterConfig)
	}
	items := make([]ItemResult, len(r.Resources))
	for i, res := range r.Resources {
		if err := ValidateConfigChanges(res); err != nil {
			items[i].Err = err
			continue
		}
		if res.Resource.Type == metadatav1.ConfigResource_CLUSTER {
			items[i].Err = alterClusterConfig(cluster, res.Ops)
			continue
		}
		t, ok := s.topics[res.Resource.Name]
		if !ok {
			items[i].Err = errorf(metadatav1.ErrorCode_UNKNOWN_TOPIC, "topic %q does not exist", res.Resource.Name)
			continue
		}
		config, sources, err := alterTopicConfig(t, cluster, res.Ops)
		if err != nil {
			items[i].Err = err
			continue
		}
		items[i].TopicID = t.id
		if c != nil {
			t = s.writableTopic(t)
			wasUnclean, wasMinISR := t.config.UncleanLeaderElectionEnable, t.config.MinInsyncReplicas
			t.config, t.sources = config, sources
			c.topics = append(c.topics, t.name)
			if config.MinInsyncReplicas < wasMinISR {
				// An ELR is kept only while the ISR is below the minimum.
				for index := range t.elr { // determinism: each partition changes on its own
					s.isrChanged(t, index, nil)
					if t.elrOf(index) == nil {
						t.partitions[index].partitionEpoch++
					}
				}
			}
			if !wasUnclean && config.UncleanLeaderElectionEnable {
				s.electUnclean(t, c)
			}
		}
	}
	return inRequestOrder(Result{Items: items}, r.RequestSize, r.RequestIndexes)
}

// electUnclean gives the offline partitions of a topic that now allows
// unclean elections a leader among their live replicas, as a fence would
// have: enabling it is how an operator brings such a partition back,
// accepting the loss of what its last ISR member held.
func (s *StateMachine) electUnclean(t *topic, c *change) {
	s.mustBeWritable(t)
	for i := range t.partitions {
		key := partitionKey{topic: t.name, index: int32(i)}
		if _, offline := s.offline[key]; !offline {
			continue
		}
		p := &t.partitions[i]
		leader := s.pickUncleanLeader(p, NoLeader)
		if leader == NoLeader {
			continue
		}
		p.leader, p.isr = leader, []int32{leader}
		t.setELR(int32(i), nil)
		p.leaderEpoch++
		p.partitionEpoch++
		delete(s.offline, key)
		c.partitions = append(c.partitions, key)
		s.completeMove(t, int32(i), c)
	}
}

// alterClusterConfig changes the cluster's defaults in place, all ops or
// none. Values are checked as a topic's would be and kept in the form
// ParseTopicConfig reads back the same ("True" is kept as "true").
func alterClusterConfig(cluster map[string]string, ops []*metadatav1.AlterConfigOp) *Error {
	scratch := DefaultTopicConfig(1, ReplicationFactorMax)
	for _, op := range ops {
		if op.Op == metadatav1.AlterConfigOp_SET {
			if err := setConfigValue(scratch, op.Key, op.Value); err != nil {
				return err
			}
		}
	}
	for _, op := range ops {
		if op.Op == metadatav1.AlterConfigOp_DELETE {
			delete(cluster, op.Key)
			continue
		}
		cluster[op.Key] = configValue(scratch, op.Key)
	}
	return nil
}

// alterTopicConfig is t's config and sources after ops, or why ops are
// refused. A deleted key takes the cluster's default, or else the built-in
// one its op carries.
func alterTopicConfig(t *topic, cluster map[string]string, ops []*metadatav1.AlterConfigOp) (*metadatav1.TopicConfig, configSources, *Error) {
	config, sources := cloneConfig(t.config), t.sources
	for _, op := range ops {
		index, _ := configIndex(op.Key)
		value, source := op.Value, sourceTopic
		if op.Op == metadatav1.AlterConfigOp_DELETE {
			value, source = capDefault(op.Key, op.Value, t.replicationFactor), sourceDefault
			if v, ok := clusterDefault(cluster, op.Key, t.replicationFactor); ok {
				value, source = v, sourceCluster
			}
		}
		if err := setConfigValue(config, op.Key, value); err != nil {
			return nil, 0, err
		}
		sources = sources.with(index, source)
	}
	if err := validateTopicConfig(config, t.replicationFactor); err != nil {
		return nil, 0, err
	}
	return config, sources, nil
}

// DescribeConfigs lists the configs of res with their sources: a topic's
// six keys, or the cluster's defaults (set ones as set, the others as
// builtIn, the controller's defaults, has them).
func (s *StateMachine) DescribeConfigs(res *metadatav1.ConfigResource, builtIn *metadatav1.TopicConfig) *metadatav1.DescribeConfigsResult {
	out := &metadatav1.DescribeConfigsResult{Resource: res}
	entry := func(key, value string, source metadatav1.ConfigSource, own bool) {
		out.Entries = append(out.Entries, &metadatav1.ConfigEntry{Key: key, Value: value, Source: source, IsDefault: !own})
	}
	switch res.GetType() {
	case metadatav1.ConfigResource_CLUSTER:
		if res.GetName() != "" {
			out.ErrorCode, out.ErrorMessage = metadatav1.ErrorCode_INVALID_REQUEST, "the cluster resource has no name"
			return out
		}
		for _, key := range ConfigKeys {
			if value, ok := s.clusterConfig[key]; ok {
				entry(key, value, metadatav1.ConfigSource_CLUSTER_DEFAULT_CONFIG, true)
			} else {
				entry(key, configValue(builtIn, key), metadatav1.ConfigSource_DEFAULT_CONFIG, false)
			}
		}
	case metadatav1.ConfigResource_TOPIC:
		t, ok := s.topics[res.GetName()]
		if !ok {
			out.ErrorCode, out.ErrorMessage = metadatav1.ErrorCode_UNKNOWN_TOPIC, strconv.Quote(res.GetName())+" does not exist"
			return out
		}
		for index, key := range ConfigKeys {
			source := metadatav1.ConfigSource_DEFAULT_CONFIG
			switch t.sources.of(index) {
			case sourceTopic:
				source = metadatav1.ConfigSource_TOPIC_CONFIG
			case sourceCluster:
				source = metadatav1.ConfigSource_CLUSTER_DEFAULT_CONFIG
			}
			entry(key, configValue(t.config, key), source, source == metadatav1.ConfigSource_TOPIC_CONFIG)
		}
	default:
		out.ErrorCode, out.ErrorMessage = metadatav1.ErrorCode_INVALID_REQUEST, "config resource type must be TOPIC or CLUSTER"
	}
	return out
}

// ClusterConfig is the cluster's defaults for new topics, by key.
func (s *StateMachine) ClusterConfig() map[string]string { return maps.Clone(s.clusterConfig) }
