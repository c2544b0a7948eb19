package wire

import (
	"time"

	metadatav1 "github.com/dmq-project/metadata/gen/dmq/metadata/v1"
	"github.com/dmq-project/metadata/gen/dmq/metadata/v1/metadatav1connect"
	"github.com/dmq-project/metadata/internal/planted"
)

// ForwardedByHeader marks a call a controller passed on to the leader: its
// value is the forwarding controller's id. A call that carries it is never
// passed on again, so that two controllers naming each other the leader
// (during an election) cannot bounce a call between them.
const ForwardedByHeader = "Dmq-Forwarded-By"

// ForwardedClusterHeader carries the forwarding controller's cluster id:
// a controller of another cluster (an address reused) refuses the call.
const ForwardedClusterHeader = "Dmq-Forwarded-Cluster"

// ForwardedForHeader carries the address of the client whose call was
// forwarded. The leader takes it for the caller's address (rate limits,
// the audit log) only from a caller presenting the cluster's certificate.
const ForwardedForHeader = "Dmq-Forwarded-For"

// brokerCalls are never forwarded: they are a broker's about itself, and
// say that it reaches the active controller, which pushes to it, fences it
// and may give it leaderships. A broker that reaches only a follower must
// not look alive to the leader, nor lead; it follows the refusal's leader
// hint, as Kafka's brokers talk to the active controller alone.
var brokerCalls = map[string]bool{
	metadatav1connect.MetadataServiceStorageHeartbeatProcedure: true,
	metadatav1connect.MetadataServiceBrokerHeartbeatProcedure:  true,
	metadatav1connect.MetadataServiceRegisterBrokerProcedure:   true,
	metadatav1connect.MetadataServiceAlterPartitionProcedure:   true,
}

// Forwards says whether a controller (self) that refused a unary call of
// procedure with code, naming leaderID, passes the call on to that leader
// and answers with the leader's answer, as Kafka's brokers do since
// KIP-590: only a "not the controller" refusal (which proves nothing was
// proposed here) naming another controller, only a call not forwarded
// already, and never a broker's call about itself (brokerCalls).
func Forwards(procedure string, code metadatav1.ErrorCode, self, leaderID uint64, forwarded bool) bool {
	return code == metadatav1.ErrorCode_NOT_CONTROLLER && leaderID != 0 && leaderID != self && !forwarded &&
		!brokerCalls[procedure]
}

// ForwardFailed is the code a forwarding controller answers when the
// leader did not answer. While nothing of the call can have reached the
// leader (no connection, headers never written) the call was proposed
// nowhere, and the answer stays NOT_CONTROLLER. Once it may have, the
// outcome is unknown: never NOT_CONTROLLER then, which clients take for
// proof that nothing was proposed (client.JudgeWrite would call the write
// not applied, and a resend under a new request id could apply it twice).
func ForwardFailed(mayHaveReachedLeader bool) metadatav1.ErrorCode {
	if mayHaveReachedLeader && !planted.On(planted.ForwardLossIsRefusal) {
		return metadatav1.ErrorCode_UNKNOWN_OUTCOME
	}
	return metadatav1.ErrorCode_NOT_CONTROLLER
}

// forwardAnswerMargin is the most of a call's time left that a forward
// keeps back to answer the client in.
const forwardAnswerMargin = 200 * time.Millisecond

// ForwardTimeout is how long a forward may wait for the leader when the
// client's call has left of its deadline: a tenth less, at most 200 ms
// less, so that the client hears the forwarding controller's answer (an
// unknown outcome, say) rather than its own timeout.
func ForwardTimeout(left time.Duration) time.Duration {
	return left - min(left/10, forwardAnswerMargin)
}
