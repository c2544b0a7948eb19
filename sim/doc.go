// Package sim is the deterministic simulator: one goroutine, one event queue
// ordered by (virtual time, sequence), one seeded PRNG from which every
// choice is drawn. It runs the real node code on simulated disks and a
// simulated network with faults, storage services and clients, and checks
// every history for linearizability and the cluster's invariants. The
// clients and storage services run the client package's deciding logic
// (client.Retrier, client.JudgeWrite, client.SessionPool, client.AgentCore)
// behind simulated calls, so that its bugs are the simulator's to find.
//
// What this package must never do: read the wall clock, start goroutines,
// or draw randomness from anything but the run's seed. The same seed must
// give the same trace, byte for byte.
package sim
