// Package peer is the Raft transport between controllers. Transport
// sends: one long-lived stream per peer for ordinary messages (the frame
// stream, an HTTP/1.1 connection upgraded to length-prefixed raftpb
// frames, or a Connect stream to a peer that does not serve it), batched
// behind a bounded queue, reconnecting with backoff, and a separate
// Connect stream per snapshot, whose outcome is reported to Raft.
// RaftHandler receives: it admits a request as a whole (this cluster, this
// controller, a sender that is a peer, every message from that sender to
// this controller) before the node steps any of it, and answers a
// snapshot once the node has persisted what it installs.
//
// Admission comes first, on every endpoint of the transport (and on the
// identity a founding controller asks of its peers): under TLS the
// cluster's client certificate, a certificate naming a controller bound to
// that controller's sender id; with authentication on a controller's token
// (rpc/auth). Refusals logs and counts every refusal by reason
// (dmq_peer_messages_refused_total), each reason logged at most once per
// interval.
//
// What this package must never do: decide which messages Raft steps (the
// node does; the transport only refuses what is not from a peer to this
// controller), block the node (Send queues, drops when full and reports
// the peer unreachable), or leave Raft waiting: every snapshot's outcome is
// reported, delivered or not.
package peer
