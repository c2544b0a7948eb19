// Package linearizability holds the porcupine models of the metadata API,
// partitioned by topic and by broker so that checking stays fast, the
// recording of client histories (with unknown outcomes for timed-out
// operations), and the HTML visualisation of a failing history.
//
// What this package must never do: weaken a model to make a history pass.
// A history that fails is a bug found.
package linearizability
