// Package api serves the metadata service's public API: the Connect
// handlers of MetadataService and QuorumService (Server), over Connect,
// gRPC and gRPC-Web, and over REST/JSON at the seed's paths through
// vanguard from the protos' google.api.http annotations; gRPC health and
// server reflection; and the interceptor chain every call passes (logging,
// audit, authentication, rate limits, from rpc/auth). Mount puts it all on
// a controller's mux.
//
// Handlers are thin: validate the envelope, hand the request to the node's
// goroutine (runner.Call), translate the outcome, with the node's errors
// carried as Connect codes and the seed's error code (wire.NewError), and
// "not the leader" with the leader's id and URL.
//
// What this package must never do: hold metadata state of its own or
// decide anything the state machine or the node decides; check tokens or
// roles itself (rpc/auth does); serve or call the peer transport.
package api
