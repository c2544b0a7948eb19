// Package rpc is the wire of the metadata service: the .proto sources under
// rpc/proto (the single source of truth for the API, the log records and the
// peer transport), the code generated from them under rpc/gen, and — as the
// service is built out — the thin Connect handlers, the peer transport, the
// push client and the REST transcoding.
//
// Generated code is never edited by hand: `make generate` rebuilds rpc/gen
// byte for byte (rpc/scripts/generate.sh pins protoc and the plugins), and
// `make check-generate` fails when the committed code is stale.
//
// What this package must never do: hold metadata state of its own or decide
// anything the state machine decides. Handlers translate and delegate.
package rpc
