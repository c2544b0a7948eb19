package rpc

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"connectrpc.com/connect"
	"github.com/dmq-project/metadata/node"
	"github.com/dmq-project/metadata/node/runner"
	raftv1 "github.com/dmq-project/metadata/rpc/gen/dmq/raft/v1"
	"github.com/dmq-project/metadata/rpc/gen/dmq/raft/v1/raftv1connect"
	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"
)

// Bounds of the peer transport.
const (
	peerQueueMax      = 1024
	peerBatchMax      = 64
	peerBackoffMin    = 50 * time.Millisecond
	peerBackoffMax    = 2 * time.Second
	snapshotTimeout   = 5 * time.Minute
	snapshotQueueMax  = 4
	streamIdleTimeout = 30 * time.Second
	// peerBufferKeepBytes: a frame buffer grown larger by a big append is
	// not kept for the next batch.
	peerBufferKeepBytes = 1 << 20
)

// NewHTTPClient is an HTTP/2 client: cleartext (h2c) to http:// URLs, as
// the controllers' listeners serve by default, and TLS configured by
// tlsConfig (nil: the system's roots) to https:// URLs.
func NewHTTPClient(tlsConfig *tls.Config) *http.Client {
	if tlsConfig != nil {
		// The transport adds its protocols to the configuration; a shared
		// one would then offer h2 to transports that do not speak it.
		tlsConfig = tlsConfig.Clone()
	}
	var protocols http.Protocols
	protocols.SetUnencryptedHTTP2(true)
	protocols.SetHTTP2(true)
	return &http.Client{Transport: &http.Transport{Protocols: &protocols, MaxIdleConnsPerHost: 8, TLSClientConfig: tlsConfig,
		// Pings find a peer that vanished without closing the connection
		// (a killed process, a partition), so that streams reconnect.
		HTTP2: &http.HTTP2Config{SendPingTimeout: 2 * time.Second, PingTimeout: 2 * time.Second, WriteByteTimeout: 5 * time.Second},
	}}
}

// Transport carries Raft messages to peers: one long-lived client stream
// per peer for ordinary messages (batched, bounded queue, reconnect with
// backoff) and a separate stream per snapshot, so that a large snapshot
// never holds heartbeats back. It implements node.Transport; its methods
// never block the node.
type Transport struct {
	self      uint64
	clusterID string
	client    *http.Client
	logger    *slog.Logger
	options   []connect.ClientOption
	// https dials peers over TLS whatever their URLs' scheme, with
	// tlsConfig (the client side of the cluster's mutual TLS).
	https     bool
	tlsConfig *tls.Config
	// peerToken is the CONTROLLER token sent to peers, if any.
	peerToken string

	mu     sync.Mutex
	peers  map[uint64]*peer
	runner *runner.Runner
}

type peer struct {
	id        uint64
	url       string
	messages  chan *raftpb.Message
	snapshots chan *raftpb.Message
	stop      chan struct{}
	// dropped is set when a message found the queue full; the stream
	// reports the peer unreachable once per burst of drops.
	dropped atomic.Bool
}

var _ node.Transport = (*Transport)(nil)

// NewTransport returns a transport for controller self. Attach the runner
// once the node exists, so that unreachable peers and snapshot outcomes
// are reported back to Raft.
func NewTransport(self uint64, clusterID string, client *http.Client, logger *slog.Logger, options ...connect.ClientOption) *Transport {
	return &Transport{self: self, clusterID: clusterID, client: client, logger: logger, options: options, peers: map[uint64]*peer{}}
}

// Attach sets the runner that reports go to.
func (t *Transport) Attach(r *runner.Runner) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.runner = r
}

func (t *Transport) report(fn func(*node.Node)) {
	t.mu.Lock()
	r := t.runner
	t.mu.Unlock()
	if r == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	_ = r.Do(ctx, fn)
}

// Send implements node.Transport.
func (t *Transport) Send(messages []*raftpb.Message) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, m := range messages {
		p, ok := t.peers[m.GetTo()]
		if !ok {
			continue
		}
		queue := p.messages
		if m.GetType() == raftpb.MsgSnap {
			queue = p.snapshots
		}
		select {
		case queue <- m:
		default:
			// Full: drop, and let Raft know, so that it probes instead of
			// streaming into the void. A dropped snapshot must be reported
			// at once (Raft waits for it); other drops are reported by the
			// stream, once per burst.
			if m.GetType() == raftpb.MsgSnap {
				to := m.GetTo()
				go t.report(func(n *node.Node) { n.ReportUnreachable(to); n.ReportSnapshot(to, false) })
			} else {
				p.dropped.Store(true)
			}
		}
	}
}

// SetPeer implements node.Transport.
func (t *Transport) SetPeer(id uint64, url string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if id == t.self || url == "" {
		return
	}
	if t.https {
		url = HTTPSURL(url)
	}
	if p, ok := t.peers[id]; ok {
		if p.url == url {
			return
		}
		close(p.stop)
	}
	p := &peer{id: id, url: url, messages: make(chan *raftpb.Message, peerQueueMax),
		snapshots: make(chan *raftpb.Message, snapshotQueueMax), stop: make(chan struct{})}
	t.peers[id] = p
	go t.stream(p)
	go t.sendSnapshots(p)
}

// RemovePeer implements node.Transport.
func (t *Transport) RemovePeer(id uint64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if p, ok := t.peers[id]; ok {
		close(p.stop)
		delete(t.peers, id)
	}
}

// Close stops every peer's streams.
func (t *Transport) Close() {
	t.mu.Lock()
	defer t.mu.Unlock()
	for id, p := range t.peers {
		close(p.stop)
		delete(t.peers, id)
	}
}

func (t *Transport) request(p *peer, batch []*raftpb.Message) (*raftv1.SendRequest, error) {
	req := &raftv1.SendRequest{ClusterId: t.clusterID, FromNodeId: t.self, ToNodeId: p.id}
	for _, m := range batch {
		data, err := proto.Marshal(m)
		if err != nil {
			return nil, err
		}
		req.Messages = append(req.Messages, data)
	}
	return req, nil
}

// stream keeps one stream open to the peer and writes batches to it: the
// frame stream, or a Connect stream to a peer that does not serve it (an
// earlier version, or a proxy in between that does not pass upgrades).
func (t *Transport) stream(p *peer) {
	client := raftv1connect.NewRaftTransportServiceClient(t.client, p.url, t.options...)
	backoff := peerBackoffMin
	framesServed, fellBack := true, false
	for {
		select {
		case <-p.stop:
			return
		default:
		}
		var err error
		started := time.Now()
		if framesServed {
			err = t.streamFrames(p)
			if errors.Is(err, errFramesNotServed) {
				framesServed = false
				if !fellBack {
					fellBack = true
					t.logger.Info("the peer does not serve the Raft frame stream; using a Connect stream", "peer", p.id, "reason", err)
				}
				continue
			}
		} else {
			ctx, cancel := context.WithCancel(context.Background())
			s := client.Send(ctx)
			err = t.pump(p, s)
			_, _ = s.CloseAndReceive()
			cancel()
			// The next stream tries frames again: the peer may have been
			// upgraded meanwhile (a rolling upgrade).
			framesServed = true
		}
		if err == nil {
			return
		}
		if errors.Is(err, errIdleStream) {
			// Nothing was lost and the peer is not at fault: reopen when
			// there is something to send, without delay.
			backoff = peerBackoffMin
			continue
		}
		if time.Since(started) > peerBackoffMax {
			// The stream was healthy for a while: this is a new failure,
			// not the next of a series.
			backoff = peerBackoffMin
		}
		t.logger.Debug("peer stream ended", "peer", p.id, "error", err)
		t.report(func(n *node.Node) { n.ReportUnreachable(p.id) })
		select {
		case <-p.stop:
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, peerBackoffMax)
	}
}

// errIdleStream ends a stream that carried nothing for streamIdleTimeout.
var errIdleStream = errors.New("idle stream recycled")

// nextBatch waits for a message and takes what else is queued, up to
// peerBatchMax. It returns nil when the peer is removed, and an error when
// the stream has been idle for streamIdleTimeout or ended (ended, if
// not nil, is closed when the stream's connection is gone).
func (t *Transport) nextBatch(p *peer, idle *time.Timer, ended <-chan struct{}) ([]*raftpb.Message, error) {
	var first *raftpb.Message
	select {
	case <-p.stop:
		return nil, nil
	case <-idle.C:
		return nil, errIdleStream
	case <-ended:
		return nil, errors.New("the peer closed the stream")
	case first = <-p.messages:
	}
	batch := []*raftpb.Message{first}
	for len(batch) < peerBatchMax {
		select {
		case m := <-p.messages:
			batch = append(batch, m)
		default:
			return batch, nil
		}
	}
	return batch, nil
}

// afterBatch reports drops and restarts the idle timer.
func (t *Transport) afterBatch(p *peer, idle *time.Timer) {
	if p.dropped.Swap(false) {
		t.report(func(n *node.Node) { n.ReportUnreachable(p.id) })
	}
	idle.Reset(streamIdleTimeout)
}

// streamFrames writes queued messages on a frame stream until it fails (an
// error) or the peer is removed (nil).
func (t *Transport) streamFrames(p *peer) error {
	conn, err := t.dialFrames(context.Background(), p.id, p.url)
	if err != nil {
		return err
	}
	defer conn.Close()
	// The receiver never writes: a read returns when the connection ends,
	// which tells an idle sender at once that its peer is gone.
	ended := make(chan struct{})
	go func() {
		_, _ = conn.Read(make([]byte, 1))
		close(ended)
	}()
	idle := time.NewTimer(streamIdleTimeout)
	defer idle.Stop()
	var frames []byte
	for {
		batch, err := t.nextBatch(p, idle, ended)
		if batch == nil {
			return err
		}
		frames = frames[:0]
		for _, m := range batch {
			if frames, err = appendFrame(frames, m); err != nil {
				return err
			}
		}
		if err := conn.SetWriteDeadline(time.Now().Add(framesWriteTimeout)); err != nil {
			return err
		}
		if _, err := conn.Write(frames); err != nil {
			return fmt.Errorf("sending to controller %d at %s: %w", p.id, p.url, err)
		}
		if cap(frames) > peerBufferKeepBytes {
			frames = nil
		}
		t.afterBatch(p, idle)
	}
}

// pump writes queued messages on a Connect stream until it fails (an
// error) or the peer is removed (nil).
func (t *Transport) pump(p *peer, s *connect.ClientStreamForClient[raftv1.SendRequest, raftv1.SendResponse]) error {
	idle := time.NewTimer(streamIdleTimeout)
	defer idle.Stop()
	for {
		batch, err := t.nextBatch(p, idle, nil)
		if batch == nil {
			return err
		}
		req, err := t.request(p, batch)
		if err != nil {
			return err
		}
		if err := s.Send(req); err != nil {
			return fmt.Errorf("sending to controller %d at %s: %w", p.id, p.url, err)
		}
		t.afterBatch(p, idle)
	}
}

// sendSnapshots sends each snapshot on its own stream and reports the
// outcome to Raft, which waits for it before sending more.
func (t *Transport) sendSnapshots(p *peer) {
	client := raftv1connect.NewRaftTransportServiceClient(t.client, p.url, t.options...)
	for {
		var m *raftpb.Message
		select {
		case <-p.stop:
			return
		case m = <-p.snapshots:
		}
		ok := func() bool {
			ctx, cancel := context.WithTimeout(context.Background(), snapshotTimeout)
			defer cancel()
			req, err := t.request(p, []*raftpb.Message{m})
			if err != nil {
				return false
			}
			s := client.Send(ctx)
			if err := s.Send(req); err != nil {
				_, _ = s.CloseAndReceive()
				return false
			}
			_, err = s.CloseAndReceive()
			return err == nil
		}()
		if !ok {
			t.logger.Warn("snapshot not delivered", "peer", p.id, "index", m.GetSnapshot().GetMetadata().GetIndex())
		}
		t.report(func(n *node.Node) { n.ReportSnapshot(p.id, ok) })
	}
}

// RaftHandler receives Raft messages from peers and hands them to the node.
type RaftHandler struct {
	clusterID string
	self      uint64
	runner    Stepper

	// conns are the frame streams being served (see Close).
	mu     sync.Mutex
	conns  map[net.Conn]struct{}
	closed bool
}

var _ raftv1connect.RaftTransportServiceHandler = (*RaftHandler)(nil)

// Stepper takes Raft messages for a node; it returns false once the node
// has stopped. *runner.Runner is one.
type Stepper interface {
	Step(m *raftpb.Message) bool
}

// NewRaftHandler serves the peer transport for controller self.
func NewRaftHandler(clusterID string, self uint64, r Stepper) *RaftHandler {
	return &RaftHandler{clusterID: clusterID, self: self, runner: r, conns: map[net.Conn]struct{}{}}
}

// Send implements RaftTransportService.
func (h *RaftHandler) Send(ctx context.Context, stream *connect.ClientStream[raftv1.SendRequest]) (*connect.Response[raftv1.SendResponse], error) {
	for stream.Receive() {
		req := stream.Msg()
		if req.GetClusterId() != h.clusterID {
			return nil, connect.NewError(connect.CodePermissionDenied,
				fmt.Errorf("controller %d is in cluster %q, not %q", h.self, h.clusterID, req.GetClusterId()))
		}
		if req.GetToNodeId() != h.self {
			return nil, connect.NewError(connect.CodeInvalidArgument,
				fmt.Errorf("messages for controller %d reached controller %d", req.GetToNodeId(), h.self))
		}
		for _, data := range req.GetMessages() {
			m := &raftpb.Message{}
			if err := proto.Unmarshal(data, m); err != nil {
				return nil, connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("a message does not decode: %w", err))
			}
			if m.GetFrom() != req.GetFromNodeId() || m.GetTo() != h.self {
				return nil, connect.NewError(connect.CodeInvalidArgument, errors.New("a message's sender or receiver does not match its stream"))
			}
			if !h.runner.Step(m) {
				return nil, connect.NewError(connect.CodeUnavailable, fmt.Errorf("controller %d is stopped", h.self))
			}
		}
	}
	if err := stream.Err(); err != nil && !errors.Is(err, context.Canceled) {
		return nil, err
	}
	return connect.NewResponse(&raftv1.SendResponse{}), nil
}
