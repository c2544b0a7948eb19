// The cluster's metadata as the watch delivers it: a full state, then
// deltas applied in place, as the storage agents apply them
// (wire/delta.go ApplyDeltaInPlace). Protobuf's JSON leaves out zero
// values and writes 64-bit integers as strings: everything is normalised
// here, once.

const num = (v) => (v === undefined || v === null ? 0 : Number(v));
const ids = (v) => (Array.isArray(v) ? v.map(Number) : []);

function broker(b) {
  return {
    id: num(b.id), host: b.host || "", port: num(b.port), rack: b.rack || "",
    alive: !!b.isAlive, epoch: num(b.brokerEpoch), fenced: !!b.fenced, shuttingDown: !!b.inControlledShutdown,
  };
}

function partition(p) {
  return {
    topic: p.topic || "", index: num(p.partition), replicas: ids(p.replicas), isr: ids(p.isr),
    leader: num(p.leader), leaderEpoch: num(p.leaderEpoch), partitionEpoch: num(p.partitionEpoch),
    adding: ids(p.addingReplicas), removing: ids(p.removingReplicas), elr: ids(p.eligibleLeaderReplicas),
  };
}

function topic(t) {
  const c = t.config || {};
  return {
    name: t.name || "", id: t.topicId || "", rf: num(t.replicationFactor),
    config: {
      retentionMs: num(c.retentionMs), retentionBytes: num(c.retentionBytes), segmentBytes: num(c.segmentBytes),
      compression: c.compressionType || "", minIsr: num(c.minInsyncReplicas), unclean: !!c.uncleanLeaderElectionEnable,
    },
    partitions: (t.partitions || []).map(partition),
  };
}

export class ClusterState {
  constructor() {
    this.version = 0;
    this.brokers = new Map();
    this.topics = new Map();
  }

  // applyFull takes a full state, unless it is older than the one held
  // (a lagging controller answering a reconnect): false then.
  applyFull(state) {
    if (num(state.metadataVersion) < this.version) return false;
    this.version = num(state.metadataVersion);
    this.brokers = new Map((state.brokers || []).map((b) => [num(b.id), broker(b)]));
    this.topics = new Map((state.topics || []).map((t) => [t.name, topic(t)]));
    return true;
  }

  // applyDelta applies a delta that follows the version held; one that
  // does not is refused (false): the caller watches afresh from scratch.
  applyDelta(d) {
    if (num(d.fromVersion) !== this.version) return false;
    for (const b of d.upsertedBrokers || []) this.brokers.set(num(b.id), broker(b));
    for (const id of d.removedBrokerIds || []) this.brokers.delete(num(id));
    for (const name of d.deletedTopics || []) this.topics.delete(name);
    for (const t of d.upsertedTopics || []) this.topics.set(t.name, topic(t));
    for (const raw of d.changedPartitions || []) {
      const p = partition(raw);
      const t = this.topics.get(p.topic);
      if (t) t.partitions[p.index] = p;
    }
    this.version = num(d.toVersion);
    return true;
  }

  sortedBrokers() { return [...this.brokers.values()].sort((a, b) => a.id - b.id); }
  sortedTopics() { return [...this.topics.values()].sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0)); }
}

// A partition is offline without a leader; under-replicated when fewer of
// its target replicas (the replicas not leaving) are in sync.
export const offline = (p) => p.leader <= 0;
export const underReplicated = (p) => {
  const target = p.replicas.filter((r) => !p.removing.includes(r));
  return target.some((r) => !p.isr.includes(r));
};
export const moving = (p) => p.adding.length > 0 || p.removing.length > 0;
