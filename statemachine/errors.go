package statemachine

import (
	"fmt"

	metadatav1 "github.com/dmq-project/metadata/gen/dmq/metadata/v1"
)

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

func errorf(code metadatav1.ErrorCode, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}
