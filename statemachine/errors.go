package statemachine

import (
	"fmt"

	metadatav1 "github.com/dmq-project/metadata/rpc/gen/dmq/metadata/v1"
)

// Class is the category of an error, one to one with the Connect code the
// wire layer answers with.
type Class int

const (
	ClassOK Class = iota
	ClassInvalidArgument
	ClassNotFound
	ClassAlreadyExists
	ClassFailedPrecondition
	ClassUnavailable
	ClassInternal
)

func (c Class) String() string {
	switch c {
	case ClassOK:
		return "ok"
	case ClassInvalidArgument:
		return "invalid_argument"
	case ClassNotFound:
		return "not_found"
	case ClassAlreadyExists:
		return "already_exists"
	case ClassFailedPrecondition:
		return "failed_precondition"
	case ClassUnavailable:
		return "unavailable"
	case ClassInternal:
		return "internal"
	}
	return fmt.Sprintf("class(%d)", int(c))
}

// ClassOf says which Class an ErrorCode belongs to. Every code has exactly
// one class; a code missing here is a programming error caught by a test.
func ClassOf(code metadatav1.ErrorCode) Class {
	switch code {
	case metadatav1.ErrorCode_NONE:
		return ClassOK
	case metadatav1.ErrorCode_INVALID_REQUEST,
		metadatav1.ErrorCode_INVALID_TOPIC_NAME,
		metadatav1.ErrorCode_INVALID_PARTITIONS,
		metadatav1.ErrorCode_INVALID_REPLICATION_FACTOR,
		metadatav1.ErrorCode_INVALID_CONFIG,
		metadatav1.ErrorCode_INVALID_BROKER_ENDPOINT,
		metadatav1.ErrorCode_INVALID_ISR,
		metadatav1.ErrorCode_INVALID_RECORD:
		return ClassInvalidArgument
	case metadatav1.ErrorCode_UNKNOWN_TOPIC,
		metadatav1.ErrorCode_UNKNOWN_BROKER,
		metadatav1.ErrorCode_UNKNOWN_PARTITION:
		return ClassNotFound
	case metadatav1.ErrorCode_TOPIC_ALREADY_EXISTS,
		metadatav1.ErrorCode_TOPIC_NAME_COLLISION:
		return ClassAlreadyExists
	case metadatav1.ErrorCode_DUPLICATE_BROKER_REGISTRATION,
		metadatav1.ErrorCode_STALE_BROKER_EPOCH,
		metadatav1.ErrorCode_FENCED_LEADER_EPOCH,
		metadatav1.ErrorCode_INVALID_PARTITION_EPOCH,
		metadatav1.ErrorCode_PREFERRED_LEADER_NOT_AVAILABLE,
		metadatav1.ErrorCode_BROKER_NOT_REGISTERED,
		metadatav1.ErrorCode_BROKER_STATE_UNCHANGED,
		metadatav1.ErrorCode_SESSION_EXPIRED:
		return ClassFailedPrecondition
	case metadatav1.ErrorCode_NOT_CONTROLLER,
		metadatav1.ErrorCode_UNKNOWN_OUTCOME,
		metadatav1.ErrorCode_UNAVAILABLE:
		return ClassUnavailable
	}
	return ClassInternal
}

// Error is a request rejected by validation. It changes nothing.
type Error struct {
	Code    metadatav1.ErrorCode
	Message string
}

func (e *Error) Error() string { return e.Code.String() + ": " + e.Message }

// GetCode is the error's code, NONE for a nil error.
func (e *Error) GetCode() metadatav1.ErrorCode {
	if e == nil {
		return metadatav1.ErrorCode_NONE
	}
	return e.Code
}

// Class is the error's category (see ClassOf).
func (e *Error) Class() Class { return ClassOf(e.Code) }

func errorf(code metadatav1.ErrorCode, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}
