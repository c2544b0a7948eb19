// Package statemachine owns the metadata of a DMQ cluster: brokers, topics,
// partitions (replicas, leader, ISR, epochs), the metadata version, the
// request-id deduplication table and the history of recent changes.
//
// It is the deterministic heart of the controller. Apply takes a committed
// Raft entry (one metadatav1.Record) and its index, validates the record
// against the state of that moment, and either changes the state or returns
// an error result that changes nothing but the version. Every input an
// effect depends on — placement offsets, topic ids, incarnation ids — is
// carried inside the record, chosen by the proposer. Two state machines fed
// the same entries therefore hold byte-identical snapshots and equal hashes.
//
// What this package must never do: perform I/O, read a clock, start a
// goroutine, use channels or select, draw randomness, or let map iteration
// order reach a record, a result, a snapshot, a delta or a hash. It imports
// nothing of ours but the generated protobuf types (gen/), which are data.
//
// Broken invariants (a version going backwards, an index out of order) panic
// with a diagnosis; bad input is an *Error with an ErrorCode (wire.CodeOf gives its Connect code).
package statemachine
