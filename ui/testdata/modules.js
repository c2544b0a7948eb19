// Checks of the console's modules, run in the browser by
// TestConsoleModules: the stream framing whatever the chunks, and the
// delta rules. It answers a list of failures (empty when all hold).
(async () => {
  const api = await import("/ui/api.js");
  const { ClusterState } = await import("/ui/state.js");
  const failures = [];
  const check = (ok, what) => { if (!ok) failures.push(what); };

  const concat = (parts) => {
    const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
    let at = 0;
    for (const p of parts) { out.set(p, at); at += p.length; }
    return out;
  };
  const streamOf = (bytes, size) => new ReadableStream({
    start(controller) {
      for (let i = 0; i < bytes.length; i += size) controller.enqueue(bytes.slice(i, i + size));
      controller.close();
    },
  }).getReader();
  const read = async (bytes, size) => {
    const got = [];
    try {
      await api.readEnvelopes(streamOf(bytes, size), (m) => got.push(m));
      return { got, error: null };
    } catch (e) {
      return { got, error: e };
    }
  };

  // Messages split at every size, merged into one chunk, and one large.
  const messages = [{ n: 1 }, { n: 2, big: "x".repeat(300000) }, { n: 3 }];
  const clean = concat([...messages.map((m) => api.envelope(m)), api.envelope({}, 2)]);
  for (const size of [1, 2, 5, 6, 7, 4096, 65536, clean.length]) {
    const { got, error } = await read(clean, size);
    check(got.map((m) => m.n).join() === "1,2,3", `chunks of ${size}: messages ${got.map((m) => m.n)}`);
    check(got.length === 3 && got[1].big.length === 300000, `chunks of ${size}: the large message`);
    check(error && error.code === "unavailable" && error.message === "the watch ended", `chunks of ${size}: the end (${error && error.message})`);
  }
  const refused = concat([api.envelope({ n: 1 }), api.envelope({ error: { code: "unauthenticated", message: "no token" } }, 2)]);
  for (const size of [1, 3, refused.length]) {
    const { got, error } = await read(refused, size);
    check(got.length === 1 && error && error.code === "unauthenticated" && error.message === "no token", `an error at the end, chunks of ${size}`);
  }
  const cut = clean.slice(0, 20); // into the second message
  const truncated = await read(cut, 4);
  check(truncated.error && truncated.error.message.includes("in the middle of a message"), "a stream cut in a message");

  // Deltas: a topic deleted and created again in one delta; a changed
  // partition of a topic the page does not know; a delta that does not
  // follow; a full state older than the one held.
  const s = new ClusterState();
  s.applyFull({ metadataVersion: "5", brokers: [{ id: 1, isAlive: true }],
    topics: [{ name: "a", topicId: "old", partitions: [{ topic: "a", replicas: [1], isr: [1], leader: 1 }] }] });
  check(s.version === 5 && s.topics.get("a").partitions[0].index === 0, "the full state, partition 0 written without its index");
  check(s.applyDelta({ fromVersion: "5", toVersion: "6", deletedTopics: ["a"],
    upsertedTopics: [{ name: "a", topicId: "new", partitions: [{ topic: "a", replicas: [1], leader: 1 }, { topic: "a", partition: 1, replicas: [1], leader: 1 }] }] }),
  "a following delta");
  check(s.topics.get("a").id === "new" && s.topics.get("a").partitions.length === 2, "deleted and created again: the new topic");
  check(s.applyDelta({ fromVersion: "6", toVersion: "7", changedPartitions: [{ topic: "zz", partition: 3, leader: -1 }] }) && !s.topics.has("zz") && s.version === 7,
    "a changed partition of an unknown topic is dropped");
  check(s.applyDelta({ fromVersion: "6", toVersion: "7", upsertedBrokers: [{ id: 9 }] }) === false && !s.brokers.has(9) && s.version === 7,
    "a delta that does not follow is refused and changes nothing");
  check(s.applyFull({ metadataVersion: "3", brokers: [] }) === false && s.brokers.has(1) && s.version === 7,
    "an older full state is refused");
  check(s.applyDelta({ fromVersion: "7", toVersion: "8", removedBrokerIds: [1], changedPartitions: [{ topic: "a", partition: 1, isr: [], leader: -1 }] })
    && !s.brokers.has(1) && s.topics.get("a").partitions[1].leader === -1, "a removed broker and an offline partition");
  return failures;
})()
