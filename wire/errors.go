package wire

import (
	"errors"
	"fmt"

	"connectrpc.com/connect"
	metadatav1 "github.com/dmq-project/metadata/gen/dmq/metadata/v1"
)

// Headers that carry the leader hint of a NOT_CONTROLLER answer beside the
// NotControllerDetail, for REST callers that read headers, not details.
const (
	LeaderIDHeader  = "Dmq-Leader-Id"
	LeaderURLHeader = "Dmq-Leader-Url"
	// SeedLeaderHeader is the Java service's hint: the leader's id.
	SeedLeaderHeader = "X-Controller-Leader"
)

// CodeOf is the Connect code a seed error code travels with. Every code has
// exactly one; CodeInternal means a code missing here, a programming error
// caught by TestEveryErrorCodeHasAConnectCode.
func CodeOf(code metadatav1.ErrorCode) connect.Code {
	switch code {
	case metadatav1.ErrorCode_NONE:
		return 0 // not an error
	case metadatav1.ErrorCode_INVALID_REQUEST,
		metadatav1.ErrorCode_INVALID_TOPIC_NAME,
		metadatav1.ErrorCode_INVALID_PARTITIONS,
		metadatav1.ErrorCode_INVALID_REPLICATION_FACTOR,
		metadatav1.ErrorCode_INVALID_CONFIG,
		metadatav1.ErrorCode_INVALID_BROKER_ENDPOINT,
		metadatav1.ErrorCode_INVALID_ISR,
		metadatav1.ErrorCode_INVALID_RECORD,
		metadatav1.ErrorCode_INVALID_REPLICA_ASSIGNMENT:
		return connect.CodeInvalidArgument
	case metadatav1.ErrorCode_UNKNOWN_TOPIC,
		metadatav1.ErrorCode_UNKNOWN_BROKER,
		metadatav1.ErrorCode_UNKNOWN_PARTITION:
		return connect.CodeNotFound
	case metadatav1.ErrorCode_TOPIC_ALREADY_EXISTS,
		metadatav1.ErrorCode_TOPIC_NAME_COLLISION:
		return connect.CodeAlreadyExists
	case metadatav1.ErrorCode_DUPLICATE_BROKER_REGISTRATION,
		metadatav1.ErrorCode_STALE_BROKER_EPOCH,
		metadatav1.ErrorCode_FENCED_LEADER_EPOCH,
		metadatav1.ErrorCode_INVALID_PARTITION_EPOCH,
		metadatav1.ErrorCode_PREFERRED_LEADER_NOT_AVAILABLE,
		metadatav1.ErrorCode_BROKER_NOT_REGISTERED,
		metadatav1.ErrorCode_BROKER_STATE_UNCHANGED,
		metadatav1.ErrorCode_SESSION_EXPIRED,
		metadatav1.ErrorCode_NO_REASSIGNMENT_IN_PROGRESS:
		return connect.CodeFailedPrecondition
	case metadatav1.ErrorCode_NOT_CONTROLLER,
		metadatav1.ErrorCode_UNKNOWN_OUTCOME,
		metadatav1.ErrorCode_UNAVAILABLE:
		return connect.CodeUnavailable
	case metadatav1.ErrorCode_BATCH_ABORTED:
		return connect.CodeAborted
	}
	return connect.CodeInternal
}

// Definite reports whether an answer with this seed error code says for
// sure that the request changed nothing: every code but NONE and those of
// an unavailable controller (whose request may or may not have been applied).
func Definite(code metadatav1.ErrorCode) bool {
	return code != metadatav1.ErrorCode_NONE && CodeOf(code) != connect.CodeUnavailable
}

// NewError is the Connect error for a seed error code: its Connect code,
// the ErrorDetail, and for NOT_CONTROLLER the leader's id and URL as a
// NotControllerDetail and as headers.
func NewError(code metadatav1.ErrorCode, message string, leaderID uint64, leaderURL string) *connect.Error {
	ce := connect.NewError(CodeOf(code), errors.New(message))
	if detail, err := connect.NewErrorDetail(&metadatav1.ErrorDetail{ErrorCode: code}); err == nil {
		ce.AddDetail(detail)
	}
	if code == metadatav1.ErrorCode_NOT_CONTROLLER {
		if detail, err := connect.NewErrorDetail(&metadatav1.NotControllerDetail{LeaderId: leaderID, LeaderUrl: leaderURL}); err == nil {
			ce.AddDetail(detail)
		}
		ce.Meta().Set(LeaderIDHeader, fmt.Sprint(leaderID))
		if leaderID != 0 {
			ce.Meta().Set(SeedLeaderHeader, fmt.Sprint(leaderID))
		}
		if leaderURL != "" {
			ce.Meta().Set(LeaderURLHeader, leaderURL)
		}
	}
	return ce
}

// ErrorCodeOf extracts the seed's error code from a Connect error, NONE if
// it carries none.
func ErrorCodeOf(err error) metadatav1.ErrorCode {
	var ce *connect.Error
	if !errors.As(err, &ce) {
		return metadatav1.ErrorCode_NONE
	}
	for _, d := range ce.Details() {
		if msg, derr := d.Value(); derr == nil {
			if detail, ok := msg.(*metadatav1.ErrorDetail); ok {
				return detail.GetErrorCode()
			}
		}
	}
	return metadatav1.ErrorCode_NONE
}

// LeaderOf extracts the leader hint from a "not the controller" error.
func LeaderOf(err error) (uint64, string, bool) {
	var ce *connect.Error
	if !errors.As(err, &ce) {
		return 0, "", false
	}
	for _, d := range ce.Details() {
		if msg, derr := d.Value(); derr == nil {
			if detail, ok := msg.(*metadatav1.NotControllerDetail); ok {
				return detail.GetLeaderId(), detail.GetLeaderUrl(), true
			}
		}
	}
	return 0, "", false
}
