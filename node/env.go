package node

import (
	"time"

	metadatav1 "github.com/dmq-project/metadata/gen/dmq/metadata/v1"
	"github.com/dmq-project/metadata/seedwire"
	"go.etcd.io/raft/v3/raftpb"
)

// Env is everything a Node reaches outside itself. Production wires real
// implementations (rpc transport, wall clock, crypto-seeded source, HTTP
// push client); the simulator wires simulated ones. The node never blocks on
// any of them: each call hands work over and returns.
type Env struct {
	Transport Transport
	Clock     Clock
	Rand      Rand
	Pusher    Pusher
	// Observer, if set, sees every committed entry as it is applied (the
	// simulator checks that all nodes apply the same entries).
	Observer Observer
	// Events, if set, hears of what an operator should (see EventKind).
	Events Events
	// Worker, if set, runs computations too long for the node's goroutine
	// (balancing plans); without one they run inline.
	Worker Worker
}

// Worker runs pure computations off the node's goroutine. Run must not
// block: it calls work elsewhere, then the function work returns on the
// node's goroutine, and never drops it while the node runs. work reads
// only what it captured, which nobody changes, and touches no node state;
// what it returns does the rest on the node's goroutine.
type Worker interface {
	Run(work func() (then func()))
}

// Observer watches a node's applied entries. It must not modify them.
type Observer interface {
	Applied(entry *raftpb.Entry)
}

// Transport carries Raft messages to peers. Send must not block and may
// drop messages (Raft retransmits). Peers learned from the replicated
// membership are announced with SetPeer and RemovePeer.
type Transport interface {
	Send(messages []*raftpb.Message)
	SetPeer(id uint64, url string)
	RemovePeer(id uint64)
}

// Clock is wall time, used for broker sessions, push retries and the
// rebalance interval; Raft's own time is Tick.
type Clock interface {
	Now() time.Time
}

// Rand is the node's seeded source of randomness (placement offsets,
// topic ids, push retry jitter).
type Rand interface {
	Uint64() uint64
}

// Pusher delivers a push to a storage service (a broker) and reports back
// through Node.OnPushResult. Push must not block; it must not modify the
// push, whose request may be shared between targets.
type Pusher interface {
	// Protocol says how the broker's storage service takes pushes, or
	// PushNone when it has no push endpoint: such a broker is never pushed
	// to (its service learns by heartbeats and watches), rather than
	// failing and retrying forever.
	Protocol(brokerID int32) PushProtocol
	Push(brokerID int32, push Push)
}

// PushProtocol is how a storage service takes pushes.
type PushProtocol int

const (
	// PushNone: the service has no push endpoint.
	PushNone PushProtocol = iota
	// PushConnect: StorageSyncService.PushMetadata (Connect, gRPC).
	PushConnect
	// PushSeed: the Java service's MetadataUpdateRequests, posted as JSON
	// to /api/v1/storage/metadata in order (package seedwire).
	PushSeed
)

// Push is one push to a storage service, in the protocol it speaks: a
// PushMetadataRequest, or the seed's updates to send in order. The pusher
// reports the seed's answers as one PushMetadataResponse: accepted at
// Version when every update succeeded.
type Push struct {
	Version     int64
	Request     *metadatav1.PushMetadataRequest
	SeedUpdates []seedwire.MetadataUpdateRequest
}
