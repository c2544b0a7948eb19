// Package rpc is the wire of the metadata service: the .proto sources under
// rpc/proto (the single source of truth for the API, the log records and the
// peer transport), the code generated from them under rpc/gen, the thin
// Connect handlers, REST transcoding, the peer transport, the push client,
// and the controller's defences: TLS and mutual TLS between controllers,
// bearer tokens and roles, rate and size limits, the audit log.
//
// Generated code is never edited by hand: `make generate` rebuilds rpc/gen
// byte for byte (rpc/scripts/generate.sh pins protoc and the plugins), and
// `make check-generate` fails when the committed code is stale.
//
// What this package must never do: hold metadata state of its own or decide
// anything the state machine decides. Handlers translate and delegate.
package rpc
