package statemachine

import (
	"encoding/base64"
	"net/netip"
	"strconv"
	"strings"

	metadatav1 "github.com/dmq-project/metadata/gen/dmq/metadata/v1"
)

// Bounds on requests. They are part of the replicated behaviour: changing one
// changes which records apply, so every controller of a cluster must run the
// same values (they are constants, not configuration, for that reason).
const (
	TopicNameLengthMax        = 249
	PartitionsPerRequestMax   = 10_000
	ReplicationFactorMax      = 64
	BrokerIDMin               = 1
	HostLengthMax             = 253
	RackLengthMax             = 255
	IncarnationIDLengthMax    = 64
	topicIDLength             = 22 // base64url of 16 bytes, no padding
	segmentBytesMin           = 14 // Kafka's lower bound for segment.bytes
	requestIDClientLengthMax  = 128
	electTargetsPerRequestMax = 10_000
	configValueLengthMax      = 64
)

// ValidateTopicName applies Kafka's rules: 1–249 characters of
// [a-zA-Z0-9._-], and neither "." nor "..".
func ValidateTopicName(name string) *Error {
	if name == "" {
		return errorf(metadatav1.ErrorCode_INVALID_TOPIC_NAME, "topic name is empty")
	}
	if len(name) > TopicNameLengthMax {
		return errorf(metadatav1.ErrorCode_INVALID_TOPIC_NAME,
			"topic name is %d characters, at most %d are allowed", len(name), TopicNameLengthMax)
	}
	if name == "." || name == ".." {
		return errorf(metadatav1.ErrorCode_INVALID_TOPIC_NAME, "topic name %q is reserved", name)
	}
	for i := 0; i < len(name); i++ {
		if !isTopicNameByte(name[i]) {
			return errorf(metadatav1.ErrorCode_INVALID_TOPIC_NAME,
				"topic name %q has %q at byte %d: only ASCII letters, digits, '.', '_' and '-' are allowed",
				name, name[i], i)
		}
	}
	return nil
}

func isTopicNameByte(c byte) bool {
	return ('a' <= c && c <= 'z') || ('A' <= c && c <= 'Z') || ('0' <= c && c <= '9') ||
		c == '.' || c == '_' || c == '-'
}

// collisionKey maps a topic name to the key under which Kafka's metric names
// would collide: '.' and '_' are interchangeable.
func collisionKey(name string) string { return strings.ReplaceAll(name, ".", "_") }

// ValidateTopicID checks the form of a topic id: 22 characters of base64url
// decoding to 16 bytes, not all zero.
func ValidateTopicID(id string) *Error {
	if len(id) != topicIDLength {
		return errorf(metadatav1.ErrorCode_INVALID_RECORD, "topic id %q is not %d characters", id, topicIDLength)
	}
	raw, err := base64.RawURLEncoding.DecodeString(id)
	if err != nil || len(raw) != 16 {
		return errorf(metadatav1.ErrorCode_INVALID_RECORD, "topic id %q is not base64url of 16 bytes", id)
	}
	for _, b := range raw {
		if b != 0 {
			return nil
		}
	}
	return errorf(metadatav1.ErrorCode_INVALID_RECORD, "topic id is all zero")
}

// TopicIDFromBytes encodes 16 random bytes chosen by the proposer.
func TopicIDFromBytes(raw [16]byte) string { return base64.RawURLEncoding.EncodeToString(raw[:]) }

// ValidateBrokerID checks a broker id named by a request.
func ValidateBrokerID(id int32) *Error {
	if id < BrokerIDMin {
		return errorf(metadatav1.ErrorCode_INVALID_REQUEST,
			"broker id %d is invalid: ids start at %d (0 is reserved so that a missing id is never taken for one)",
			id, BrokerIDMin)
	}
	return nil
}

// ValidatePartitionCount checks the partition count of a new topic.
func ValidatePartitionCount(count int32) *Error {
	if count < 1 || count > PartitionsPerRequestMax {
		return errorf(metadatav1.ErrorCode_INVALID_PARTITIONS,
			"partition count %d is outside 1-%d", count, PartitionsPerRequestMax)
	}
	return nil
}

// ValidateReplicationFactor checks a topic's replication factor (a request's
// 0, the cluster default, is resolved before).
func ValidateReplicationFactor(rf int32) *Error {
	if rf < 1 || rf > ReplicationFactorMax {
		return errorf(metadatav1.ErrorCode_INVALID_REPLICATION_FACTOR,
			"replication factor %d is outside 1-%d", rf, ReplicationFactorMax)
	}
	return nil
}

// ValidateISRSize checks the size of an ISR a partition leader proposes; what
// it may contain depends on the state and is checked at apply.
func ValidateISRSize(size int) *Error {
	if size < 1 || size > ReplicationFactorMax {
		return errorf(metadatav1.ErrorCode_INVALID_ISR, "the new ISR names %d brokers: it must name 1-%d", size, ReplicationFactorMax)
	}
	return nil
}

// ValidateBrokerRegistration checks a registration's id and endpoint.
func ValidateBrokerRegistration(id int32, host string, port int32, rack, incarnationID string) *Error {
	if err := ValidateBrokerID(id); err != nil {
		return err
	}
	if err := validateHost(host); err != nil {
		return err
	}
	if port < 1 || port > 65535 {
		return errorf(metadatav1.ErrorCode_INVALID_BROKER_ENDPOINT, "port %d is outside 1-65535", port)
	}
	if len(rack) > RackLengthMax || !isPrintableASCII(rack) {
		return errorf(metadatav1.ErrorCode_INVALID_REQUEST,
			"rack must be at most %d printable ASCII characters", RackLengthMax)
	}
	if len(incarnationID) > IncarnationIDLengthMax || !isPrintableASCII(incarnationID) {
		return errorf(metadatav1.ErrorCode_INVALID_REQUEST,
			"incarnation id must be at most %d printable ASCII characters", IncarnationIDLengthMax)
	}
	return nil
}

func validateHost(host string) *Error {
	if host == "" {
		return errorf(metadatav1.ErrorCode_INVALID_BROKER_ENDPOINT, "host is empty")
	}
	if len(host) > HostLengthMax {
		return errorf(metadatav1.ErrorCode_INVALID_BROKER_ENDPOINT,
			"host is %d characters, at most %d are allowed", len(host), HostLengthMax)
	}
	if _, err := netip.ParseAddr(strings.TrimSuffix(strings.TrimPrefix(host, "["), "]")); err == nil {
		return nil
	}
	for _, label := range strings.Split(host, ".") {
		if !isHostLabel(label) {
			return errorf(metadatav1.ErrorCode_INVALID_BROKER_ENDPOINT,
				"host %q is neither an IP address nor a DNS name (label %q)", host, label)
		}
	}
	return nil
}

func isHostLabel(label string) bool {
	if len(label) == 0 || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
		return false
	}
	for i := 0; i < len(label); i++ {
		c := label[i]
		if !(('a' <= c && c <= 'z') || ('A' <= c && c <= 'Z') || ('0' <= c && c <= '9') || c == '-' || c == '_') {
			return false
		}
	}
	return true
}

func isPrintableASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < 0x20 || s[i] > 0x7e {
			return false
		}
	}
	return true
}

// Topic configuration keys accepted in CreateTopic requests.
const (
	ConfigRetentionMs      = "retention.ms"
	ConfigRetentionBytes   = "retention.bytes"
	ConfigSegmentBytes     = "segment.bytes"
	ConfigCompressionType  = "compression.type"
	ConfigMinInsyncReplica = "min.insync.replicas"
	ConfigUncleanElection  = "unclean.leader.election.enable"
)

// ConfigKeys are the topic config keys, sorted; a key's position is its
// index in a topic's config sources.
var ConfigKeys = []string{ConfigCompressionType, ConfigMinInsyncReplica, ConfigRetentionBytes,
	ConfigRetentionMs, ConfigSegmentBytes, ConfigUncleanElection}

var compressionTypes = []string{"producer", "uncompressed", "gzip", "snappy", "lz4", "zstd"}

// DefaultTopicConfig is Kafka's default topic configuration with the
// cluster's min ISR, capped at the replication factor so that a default
// never makes a topic unwritable.
func DefaultTopicConfig(minISRDefault, replicationFactor int32) *metadatav1.TopicConfig {
	return &metadatav1.TopicConfig{
		RetentionMs:                 7 * 24 * 60 * 60 * 1000,
		RetentionBytes:              -1,
		SegmentBytes:                1 << 30,
		CompressionType:             "producer",
		MinInsyncReplicas:           max(1, min(minISRDefault, replicationFactor)),
		UncleanLeaderElectionEnable: false,
	}
}

// ParseTopicConfig turns request configs into a typed TopicConfig on top of
// the defaults. Unknown keys and malformed values are INVALID_CONFIG. The
// keys are visited in sorted order so the first error reported is stable.
func ParseTopicConfig(configs map[string]string, minISRDefault, replicationFactor int32) (*metadatav1.TopicConfig, *Error) {
	config := DefaultTopicConfig(minISRDefault, replicationFactor)
	keys := make([]string, 0, len(configs))
	for key := range configs { // determinism: collected, then sorted
		keys = append(keys, key)
	}
	sortStrings(keys)
	for _, key := range keys {
		if err := setConfigValue(config, key, configs[key]); err != nil {
			return nil, err
		}
	}
	if err := validateTopicConfig(config, replicationFactor); err != nil {
		return nil, err
	}
	return config, nil
}

// setConfigValue parses value into config's field for key. The config as a
// whole (min.insync.replicas against the replication factor) is left to
// validateTopicConfig.
func setConfigValue(config *metadatav1.TopicConfig, key, value string) *Error {
	if len(value) > configValueLengthMax {
		return errorf(metadatav1.ErrorCode_INVALID_CONFIG, "config %s: a value of %d bytes, at most %d", key, len(value), configValueLengthMax)
	}
	invalid := func(want string) *Error {
		return errorf(metadatav1.ErrorCode_INVALID_CONFIG, "config %s=%q: want %s", key, value, want)
	}
	switch key {
	case ConfigRetentionMs, ConfigRetentionBytes:
		n, err := strconv.ParseInt(value, 10, 64)
		if err != nil || n < -1 {
			return invalid("an integer >= -1 (-1 means unlimited)")
		}
		if key == ConfigRetentionMs {
			config.RetentionMs = n
		} else {
			config.RetentionBytes = n
		}
	case ConfigSegmentBytes:
		n, err := strconv.ParseInt(value, 10, 32)
		if err != nil || n < segmentBytesMin {
			return invalid("an integer between 14 and 2147483647")
		}
		config.SegmentBytes = int32(n)
	case ConfigCompressionType:
		if !containsString(compressionTypes, value) {
			return invalid("one of " + strings.Join(compressionTypes, ", "))
		}
		config.CompressionType = value
	case ConfigMinInsyncReplica:
		n, err := strconv.ParseInt(value, 10, 32)
		if err != nil || n < 1 {
			return invalid("an integer >= 1")
		}
		config.MinInsyncReplicas = int32(n)
	case ConfigUncleanElection:
		b, err := strconv.ParseBool(value)
		if err != nil {
			return invalid("true or false")
		}
		config.UncleanLeaderElectionEnable = b
	default:
		return unknownConfig(key)
	}
	return nil
}

func unknownConfig(key string) *Error {
	return errorf(metadatav1.ErrorCode_INVALID_CONFIG,
		"unknown config %q: known are %s", key, strings.Join(ConfigKeys, ", "))
}

// TopicConfigEntries is a typed config as Kafka-style key/value pairs,
// sorted by key: what ParseTopicConfig turns back into the same config.
func TopicConfigEntries(config *metadatav1.TopicConfig) [][2]string {
	return [][2]string{
		{ConfigCompressionType, config.GetCompressionType()},
		{ConfigMinInsyncReplica, strconv.FormatInt(int64(config.GetMinInsyncReplicas()), 10)},
		{ConfigRetentionBytes, strconv.FormatInt(config.GetRetentionBytes(), 10)},
		{ConfigRetentionMs, strconv.FormatInt(config.GetRetentionMs(), 10)},
		{ConfigSegmentBytes, strconv.FormatInt(int64(config.GetSegmentBytes()), 10)},
		{ConfigUncleanElection, strconv.FormatBool(config.GetUncleanLeaderElectionEnable())},
	}
}

// validateTopicConfig checks a typed config, as carried in a record.
func validateTopicConfig(config *metadatav1.TopicConfig, replicationFactor int32) *Error {
	if config == nil {
		return errorf(metadatav1.ErrorCode_INVALID_CONFIG, "topic config is missing")
	}
	if config.RetentionMs < -1 || config.RetentionBytes < -1 {
		return errorf(metadatav1.ErrorCode_INVALID_CONFIG, "retention must be >= -1")
	}
	if config.SegmentBytes < segmentBytesMin {
		return errorf(metadatav1.ErrorCode_INVALID_CONFIG, "segment.bytes %d is below %d", config.SegmentBytes, segmentBytesMin)
	}
	if !containsString(compressionTypes, config.CompressionType) {
		return errorf(metadatav1.ErrorCode_INVALID_CONFIG, "compression.type %q is unknown", config.CompressionType)
	}
	if config.MinInsyncReplicas < 1 || config.MinInsyncReplicas > replicationFactor {
		return errorf(metadatav1.ErrorCode_INVALID_CONFIG,
			"min.insync.replicas %d must be between 1 and the replication factor %d",
			config.MinInsyncReplicas, replicationFactor)
	}
	return nil
}

func containsString(list []string, s string) bool {
	for _, item := range list {
		if item == s {
			return true
		}
	}
	return false
}

// ParseServiceID reads a heartbeat's serviceId, "<id>" or "storage-<id>",
// as a broker id.
func ParseServiceID(serviceID string) (int32, *Error) {
	digits := strings.TrimPrefix(serviceID, "storage-")
	n, err := strconv.ParseInt(digits, 10, 32)
	if err != nil || n < BrokerIDMin || digits == "" || digits[0] == '+' {
		return 0, errorf(metadatav1.ErrorCode_INVALID_REQUEST,
			"serviceId %q must be \"<id>\" or \"storage-<id>\" with a broker id >= %d", serviceID, BrokerIDMin)
	}
	return int32(n), nil
}
