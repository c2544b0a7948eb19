package peer

import (
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/dmq-project/metadata/rpc/auth"
	"github.com/prometheus/client_golang/prometheus"
)

// Why the Raft transport refuses a request, a stream or a message: the
// values of the reason label of dmq_peer_messages_refused_total.
const (
	// refusedUnauthenticated: no token, or one that does not verify.
	refusedUnauthenticated = "unauthenticated"
	// refusedControllerJWT: a JWT claiming the CONTROLLER role.
	refusedControllerJWT = "controller_jwt"
	// refusedNotController: a valid token of another role.
	refusedNotController = "not_controller"
	// refusedCertificate: under TLS, no client certificate from the
	// cluster's CA.
	refusedCertificate = "certificate"
	// RefusedCluster: addressed to another cluster.
	RefusedCluster = "cluster"
	// refusedReceiver: addressed to another controller.
	refusedReceiver = "receiver"
	// refusedSender: a sender id that is no peer's (0, or the receiver's
	// own), or a message whose sender is not the request's.
	refusedSender = "sender"
	// refusedMalformed: bytes that are no Raft message, or a request that
	// is not an upgrade to the frame stream.
	refusedMalformed = "malformed"
	// refusedBusy: a snapshot the node could not take now (its request
	// queue is full); the sender reports it failed and Raft sends it again.
	refusedBusy = "busy"
	// refusedByNode: a snapshot the node refused to step.
	refusedByNode = "node"
)

// peerRefusalLogInterval is how often one reason is logged at most.
const peerRefusalLogInterval = 10 * time.Second

// Refusals logs and counts what the Raft transport refuses. A refused
// caller often retries in a loop (a misconfigured peer reconnects with
// backoff, a hostile one as fast as it can), so each reason is logged at
// most once per peerRefusalLogInterval, with the number of refusals left
// out since; the counter counts every one. The reasons are a fixed set,
// so its memory is bounded whatever the callers claim to be.
type Refusals struct {
	logger  *slog.Logger
	counter *prometheus.CounterVec

	mu         sync.Mutex
	lastLogged map[string]time.Time
	suppressed map[string]int
}

// NewRefusals logs to logger (nil: nowhere) and counts in counter (nil:
// not counted), by reason (metrics.Metrics.PeerRefused).
func NewRefusals(logger *slog.Logger, counter *prometheus.CounterVec) *Refusals {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &Refusals{logger: logger, counter: counter, lastLogged: map[string]time.Time{}, suppressed: map[string]int{}}
}

// RefuseRequest records the refusal of a plain HTTP request of the
// transport: the caller's address, the sender id its Dmq-From-Node-Id
// header claims and the principal it authenticated as, if any.
func (r *Refusals) RefuseRequest(reason string, req *http.Request, err error) {
	r.Refuse(reason, req.RemoteAddr, req.Header.Get(HeaderFromNodeID), auth.PrincipalName(req.Context()), err)
}

// Refuse records one refusal: its reason (one of the reasons above),
// the caller's address, the sender id it claimed and the principal it
// authenticated as, if known.
func (r *Refusals) Refuse(reason, remote, from, principal string, err error) {
	if r.counter != nil {
		r.counter.WithLabelValues(reason).Inc()
	}
	now := time.Now()
	r.mu.Lock()
	if last, ok := r.lastLogged[reason]; ok && now.Sub(last) < peerRefusalLogInterval {
		r.suppressed[reason]++
		r.mu.Unlock()
		return
	}
	suppressed := r.suppressed[reason]
	r.lastLogged[reason], r.suppressed[reason] = now, 0
	r.mu.Unlock()
	r.logger.Warn("Raft transport: peer request refused", "reason", reason, "remote", remote, "from", from,
		"principal", principal, "error", err, "refused_since_last_logged", suppressed)
}
