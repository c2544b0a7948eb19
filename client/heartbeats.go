package client

import (
	"context"
	"errors"
	"sync"
	"time"

	"connectrpc.com/connect"
	metadatav1 "github.com/dmq-project/metadata/gen/dmq/metadata/v1"
)

// HeartbeatStream sends one storage service's heartbeats on a long-lived
// StorageHeartbeats stream: a controller then pays for one HTTP/2 DATA
// frame each way per heartbeat instead of a call (a call per heartbeat per
// second bounds how many services one leader can keep alive). A heartbeat
// the stream cannot carry (none open yet to a leader that answers, a
// leader change, an error) goes as a StorageHeartbeat call, which follows
// the leader; the next heartbeat opens a stream to the controller that
// answered. It is safe for concurrent use: heartbeats go one at a time.
type HeartbeatStream struct {
	c  *Client
	mu sync.Mutex
	// stream is open to endpoint, nil when none is; cancel ends it.
	stream   *connect.BidiStreamForClient[metadatav1.StorageHeartbeatRequest, metadatav1.StorageHeartbeatResponse]
	endpoint string
	cancel   context.CancelFunc
}

// NewHeartbeatStream returns a stream of heartbeats through c; it opens
// with the first heartbeat.
func (c *Client) NewHeartbeatStream() *HeartbeatStream { return &HeartbeatStream{c: c} }

// Beat sends one heartbeat and returns the controllers' answer, within
// ctx's deadline. The stream gets at most half the time left, so that the
// call after a failed stream has the rest.
func (h *HeartbeatStream) Beat(ctx context.Context, req *metadatav1.StorageHeartbeatRequest) (*metadatav1.StorageHeartbeatResponse, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	streamCtx, cancel := ctx, context.CancelFunc(func() {})
	if deadline, ok := ctx.Deadline(); ok {
		streamCtx, cancel = context.WithTimeout(ctx, min(h.c.cfg.AttemptTimeout, time.Until(deadline)/2))
	}
	resp, err := h.onStream(streamCtx, req)
	cancel()
	if err == nil {
		return resp, nil
	}
	// The stream's controller failed, or froze (its disk stalled: its
	// HTTP/2 server still answers pings): forget it, and let the call find
	// the leader, moving on from it as every call's retries do.
	h.closeLocked()
	h.endpoint = ""
	if ctx.Err() != nil {
		return nil, ctx.Err()
	}
	resp, err = h.c.StorageHeartbeat(ctx, req)
	if err == nil {
		// Where the call was answered is the leader: the next heartbeat
		// streams there.
		h.endpoint = h.c.leader.Endpoint()
	}
	return resp, err
}

// errNoStream says that no stream carried the heartbeat: the first one, or
// the first after a failure, which the call carries to find the leader.
var errNoStream = errors.New("client: no heartbeat stream open")

func (h *HeartbeatStream) onStream(ctx context.Context, req *metadatav1.StorageHeartbeatRequest) (*metadatav1.StorageHeartbeatResponse, error) {
	if h.stream == nil {
		if h.endpoint == "" {
			return nil, errNoStream
		}
		// The stream outlives this heartbeat's context; each heartbeat
		// bounds its own wait below.
		streamCtx, cancel := context.WithCancel(context.Background())
		h.stream, h.cancel = h.c.metadataClient(h.endpoint).StorageHeartbeats(streamCtx), cancel
	}
	// An answer late past the heartbeat's deadline ends the stream.
	stop := context.AfterFunc(ctx, h.cancel)
	defer stop()
	if err := h.stream.Send(req); err != nil {
		return nil, err
	}
	resp, err := h.stream.Receive()
	if err == nil {
		// The leader answered: the client's calls (and watches) go there.
		h.c.leader.set(h.endpoint)
	}
	return resp, err
}

// Close ends the stream, if one is open.
func (h *HeartbeatStream) Close() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.closeLocked()
	h.endpoint = ""
}

func (h *HeartbeatStream) closeLocked() {
	if h.stream == nil {
		return
	}
	h.cancel()
	_ = h.stream.CloseRequest()
	_ = h.stream.CloseResponse()
	h.stream, h.cancel = nil, nil
}
