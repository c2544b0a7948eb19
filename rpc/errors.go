package rpc

import (
	"errors"
	"fmt"

	"connectrpc.com/connect"
	metadatav1 "github.com/dmq-project/metadata/rpc/gen/dmq/metadata/v1"
	"github.com/dmq-project/metadata/statemachine"
)

// ConnectCode maps a class of error to its Connect code.
func ConnectCode(class statemachine.Class) connect.Code {
	switch class {
	case statemachine.ClassInvalidArgument:
		return connect.CodeInvalidArgument
	case statemachine.ClassNotFound:
		return connect.CodeNotFound
	case statemachine.ClassAlreadyExists:
		return connect.CodeAlreadyExists
	case statemachine.ClassFailedPrecondition:
		return connect.CodeFailedPrecondition
	case statemachine.ClassUnavailable:
		return connect.CodeUnavailable
	}
	return connect.CodeInternal
}

// toConnectError turns a node or state-machine error into a Connect error
// with the seed's error code as a detail, and for "not the leader" the
// leader's id and URL.
func toConnectError(err *statemachine.Error, leaderID uint64, leaderURL string) *connect.Error {
	ce := connect.NewError(ConnectCode(err.Class()), errors.New(err.Message))
	if detail, derr := connect.NewErrorDetail(&metadatav1.ErrorDetail{ErrorCode: err.Code}); derr == nil {
		ce.AddDetail(detail)
	}
	if err.Code == metadatav1.ErrorCode_NOT_CONTROLLER {
		if detail, derr := connect.NewErrorDetail(&metadatav1.NotControllerDetail{LeaderId: leaderID, LeaderUrl: leaderURL}); derr == nil {
			ce.AddDetail(detail)
		}
		ce.Meta().Set("Dmq-Leader-Id", fmt.Sprint(leaderID))
		if leaderURL != "" {
			ce.Meta().Set("Dmq-Leader-Url", leaderURL)
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

// LeaderOf extracts the leader hint from a "not the leader" error.
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
