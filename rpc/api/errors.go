package api

import (
	"connectrpc.com/connect"
	"github.com/dmq-project/metadata/statemachine"
	"github.com/dmq-project/metadata/wire"
)

// toConnectError turns a node or state-machine error into a Connect error
// with the seed's error code as a detail, and for "not the controller" the
// leader's id and URL.
func toConnectError(err *statemachine.Error, leaderID uint64, leaderURL string) *connect.Error {
	return wire.NewError(err.Code, err.Message, leaderID, leaderURL)
}
