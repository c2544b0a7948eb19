// Package client is the Go client of the DMQ metadata service, for operators
// (dmqctl) and for storage services.
//
// A Client takes a list of controller endpoints, finds the leader, follows
// "not the leader" hints, and retries with backoff and the same request id,
// so that a write retried after a timeout or a failover is applied once. It
// honours contexts. StorageAgent is what a storage service embeds: it
// registers, heartbeats, receives pushes in version order and keeps a local
// view of the metadata.
//
// The deciding logic (Retrier, JudgeWrite, SessionPool, AgentCore) has no
// I/O, clock or randomness of its own: Client and StorageAgent drive it with
// Connect calls and the wall clock, and the simulator drives the very same
// code with simulated calls and time.
//
// What this package must never do: retry a write under a new request id
// (that could apply it twice), or accept a push that would move a view's
// version backwards or that comes from an older controller epoch.
package client
