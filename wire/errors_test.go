package wire

import (
	"errors"
	"testing"

	"connectrpc.com/connect"
	metadatav1 "github.com/dmq-project/metadata/gen/dmq/metadata/v1"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestEveryErrorCodeHasAConnectCode(t *testing.T) {
	values := metadatav1.ErrorCode(0).Descriptor().Values()
	for i := 0; i < values.Len(); i++ {
		code := metadatav1.ErrorCode(values.Get(i).Number())
		if code == metadatav1.ErrorCode_NONE {
			assert.False(t, Definite(code))
			continue
		}
		assert.NotEqual(t, connect.CodeInternal, CodeOf(code), "%v has no Connect code", code)
	}
}

func TestErrorCarriesItsCodeAndLeaderHint(t *testing.T) {
	err := error(NewError(metadatav1.ErrorCode_NOT_CONTROLLER, "not the controller", 2, "http://c2:8080"))
	assert.Equal(t, connect.CodeUnavailable, connect.CodeOf(err))
	assert.Equal(t, metadatav1.ErrorCode_NOT_CONTROLLER, ErrorCodeOf(err))
	assert.False(t, Definite(ErrorCodeOf(err)), "a request refused by a follower may still be applied by a retry elsewhere")
	id, url, ok := LeaderOf(err)
	require.True(t, ok)
	assert.Equal(t, uint64(2), id)
	assert.Equal(t, "http://c2:8080", url)
	var ce *connect.Error
	require.True(t, errors.As(err, &ce))
	assert.Equal(t, "2", ce.Meta().Get(LeaderIDHeader))

	refused := error(NewError(metadatav1.ErrorCode_TOPIC_ALREADY_EXISTS, "exists", 0, ""))
	assert.True(t, Definite(ErrorCodeOf(refused)))
	_, _, ok = LeaderOf(refused)
	assert.False(t, ok)
	assert.Equal(t, metadatav1.ErrorCode_NONE, ErrorCodeOf(errors.New("a transport error")))
}
