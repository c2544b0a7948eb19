// Package wire is what both ends of a call to a controller agree on: how a
// seed error code travels (its Connect code, the ErrorDetail and the
// leader hint of a "not the controller" answer), the HTTP/2 client every
// caller uses, TLS URLs, and the bearer token a caller sends.
//
// It is the only package of ours besides the generated types (gen/) that
// the client library links, so it must never import the controller:
// no node, no storage, no state machine, no Raft, no Pebble. A test in the
// client package enforces it.
package wire
