package api

import (
	"context"
	"errors"
	"time"

	"connectrpc.com/connect"
	"github.com/dmq-project/metadata/gen/dmq/metadata/v1/metadatav1connect"
	"github.com/dmq-project/metadata/rpc/auth"
	"github.com/dmq-project/metadata/rpc/metrics"
)

// metricsInterceptor is the outermost interceptor: it sees every call as
// the caller does, refusals by the other interceptors included.
type metricsInterceptor struct{ m *metrics.Metrics }

func (i metricsInterceptor) observe(procedure string, err error, started time.Time, unary bool) {
	i.m.ObserveCall(procedure, err, time.Since(started).Seconds(), unary)
	switch connect.CodeOf(err) {
	case connect.CodeUnauthenticated:
		i.m.ObserveAuthFailure("unauthenticated")
	case connect.CodePermissionDenied:
		i.m.ObserveAuthFailure("permission_denied")
	case connect.CodeResourceExhausted:
		if errors.Is(err, auth.ErrAuthThrottled) {
			i.m.ObserveRateLimited("failed_auth")
		} else if errors.Is(err, auth.ErrRateLimited) {
			i.m.ObserveRateLimited("client")
		}
	}
}

func (i metricsInterceptor) WrapUnary(next connect.UnaryFunc) connect.UnaryFunc {
	return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
		started := time.Now()
		resp, err := next(ctx, req)
		i.observe(req.Spec().Procedure, err, started, true)
		return resp, err
	}
}

func (i metricsInterceptor) WrapStreamingClient(next connect.StreamingClientFunc) connect.StreamingClientFunc {
	return next
}

func (i metricsInterceptor) WrapStreamingHandler(next connect.StreamingHandlerFunc) connect.StreamingHandlerFunc {
	return func(ctx context.Context, conn connect.StreamingHandlerConn) error {
		started := time.Now()
		watch := conn.Spec().Procedure == metadatav1connect.MetadataServiceWatchMetadataProcedure
		if watch {
			i.m.WatchOpened()
			defer i.m.WatchClosed()
		}
		err := next(ctx, conn)
		i.observe(conn.Spec().Procedure, err, started, false)
		return err
	}
}
