// Package auth says who may call what, and holds the controller's
// defences against its callers: bearer tokens (a tokens file, HS256 JWTs)
// and the roles they carry (Authenticator, Principal), the API's
// authentication and authorisation interceptor, the check that names a
// controller to the Raft transport (AuthenticateController: the peer token
// or a CONTROLLER token, never a JWT), admin-only endpoints, per-client
// rate limits, the audit log of mutating calls, and TLS material: the
// controller's reloading key pair, the cluster's CA and the client CAs,
// and the TLS configurations built from them.
//
// What this package must never do: read the metadata state (a call is
// judged by its principal and its request alone), know the Raft
// transport's messages, or log and count the transport's refusals (it
// returns errors with their Connect codes; rpc/peer records what it
// refuses). A JWT never names a controller, whatever its claims.
package auth
