// Package storage is the controller's memory across crashes: the Raft log,
// hard state, conf state and snapshots behind one interface (raft's Storage
// for reads, plus the writes one Ready needs as one atomic, synced batch).
// It has two homes: Pebble on a vfs.FS in production, and an in-memory disk
// with an explicit fault model in the simulator.
//
// What this package must never do: acknowledge a write as durable before it
// is synced, retry a failed sync, or serve a record whose checksum fails.
package storage
