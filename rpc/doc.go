// Package rpc assembles a controller, as etcd's embed does: StartController
// opens the store, formats it, serves the identity and runs the founding
// handshake (founding.go: the identity service, the gate that answers it
// before the node exists, the asker that questions the founding peers),
// then starts the node and its runner and wires every part of the shell
// around them through their constructors and option structs. NewHandler
// puts every endpoint on the controller's one listener; wire.NewHTTPServer is
// how that listener is served (HTTP/1.1, HTTP/2 in cleartext or over TLS).
//
// The parts, each in its own package with one job:
//
//   - rpc/api: the thin Connect handlers of MetadataService and
//     QuorumService, error translation, REST transcoding (vanguard), gRPC
//     health and reflection, and their interceptor chain.
//   - rpc/auth: who may call what: bearer tokens, JWTs, roles, the API's
//     interceptors, rate limits, the audit log, TLS material.
//   - rpc/peer: the Raft transport between controllers (the Connect
//     stream, the frame stream, snapshot streaming), its admission and its
//     refusals; rpc/peer/peertest speaks its wire for tests.
//   - rpc/push: the push client to the storage services.
//   - rpc/metrics: the controller's Prometheus metrics.
//   - rpc/rpctest: real controllers for tests.
//
// The .proto sources are in proto/ and the code generated from them in
// gen/ (`make generate`); what both ends of a call share is in wire.
//
// What this package must never do: hold metadata state of its own or
// decide anything the state machine or the node decides (whether to found
// is node.DecideFounding's; founding.go asks the peers and acts on the
// answer), do a part's job in its place (an API handler, the transport's
// admission, a Raft message on the wire), or reach into a part's
// unexported state: it wires the parts through what they export.
package rpc
