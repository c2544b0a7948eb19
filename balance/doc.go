// Package balance computes the moves that balance a cluster's replicas and
// preferred leaders across its brokers, within rack constraints, with few
// moves: the plan a controller carries in records and executes as
// reassignments.
//
// It is part of the deterministic core: a plan depends only on its
// arguments (no clock, no randomness, no goroutines, no map ranging whose
// order could reach the output), so that every controller computing it from
// the same state computes the same plan. It must never import the node, the
// RPC layer or storage, nor the generated protobuf types (it works on plain
// slices, to plan a million partitions within a second or two).
package balance
