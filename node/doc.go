// Package node is one controller: a raft.RawNode, the state machine and
// durable storage, plus the controller's duties (broker sessions, fencing,
// push scheduling, partition failover), proposals and linearizable reads.
//
// It is an event-driven core with no goroutines: inputs (ticks, messages,
// requests) come in through methods, outputs (messages, persistence, pushes,
// replies) go out through interfaces the environment provides. The same code
// runs in production, wrapped by a runner goroutine outside the core, and in
// the simulator, driven from its single event loop.
//
// What this package must never do: start goroutines, use channels or select,
// read time.Now, sleep, use global math/rand, or let map iteration order
// reach a record, a message or a reply.
package node
