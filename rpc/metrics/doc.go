// Package metrics holds a controller's Prometheus metrics on their own
// registry: their names and help texts, the counters the shell's parts
// observe (proposals, heartbeats, pushes, refused peer requests, the
// fsync latency of each Ready), and the gauges polled from the node's
// status.
//
// What this package must never do: decide anything, or change the node's
// state. It counts what others report and reads the node's status through
// runner.Call; it serves nothing (the assembly mounts the registry at
// /metrics). Metric names and labels are an interface to operators'
// dashboards and alerts: renaming one is a breaking change.
package metrics
