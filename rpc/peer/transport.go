package peer

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"connectrpc.com/connect"
	raftv1 "github.com/dmq-project/metadata/gen/dmq/raft/v1"
	"github.com/dmq-project/metadata/gen/dmq/raft/v1/raftv1connect"
	"github.com/dmq-project/metadata/node"
	"github.com/dmq-project/metadata/node/runner"
	"github.com/dmq-project/metadata/rpc/auth"
	"github.com/dmq-project/metadata/wire"
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
	// selfURL is where peers reach this controller, sent with every
	// request so that a receiver without an address for it can answer.
	selfURL string

	mu       sync.Mutex
	peers    map[uint64]*peer
	reporter Reporter
	// learned holds addresses from senders' requests, used only when the
	// node sends to that id (it answers only members it stepped), so that
	// forged sender ids start nothing. removed holds ids the configuration
	// removed: never learned back.
	learned map[uint64]string
	removed map[uint64]bool
}

// learnedMax bounds the addresses learned and not yet used: a stranger
// forging sender ids empties the table, and real peers, whose every
// request carries their address, are learned again at once.
const learnedMax = 64

// Reporter takes the transport's reports to Raft. Its methods must never
// block and never drop a report: Raft waits for every snapshot's outcome
// (a follower stays in StateSnapshot until it hears), and the transport
// calls them from the node's goroutine too. *runner.Runner is one.
type Reporter interface {
	ReportUnreachable(id uint64)
	// ReportCongested: messages to id were dropped, its queue full.
	ReportCongested(id uint64)
	ReportSnapshot(id uint64, delivered bool)
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

// TransportOptions are how a transport reaches its peers; the zero value
// dials cleartext and presents no token.
type TransportOptions struct {
	// PeerToken, if set, is the CONTROLLER token presented to peers (the
	// cluster's security.peer-token, or a CONTROLLER token of the tokens
	// file), on the Connect stream and on the frame stream.
	PeerToken string
	// TLS, if set, dials peers over TLS whatever their URLs' scheme, with
	// this configuration: the client side of the cluster's mutual TLS
	// (auth.TLSMaterial.PeerClient).
	TLS *tls.Config
}

// NewTransport returns a transport for controller self. Attach the runner
// once the node exists, so that unreachable peers and snapshot outcomes
// are reported back to Raft.
func NewTransport(self uint64, clusterID string, client *http.Client, logger *slog.Logger, opts TransportOptions) *Transport {
	var options []connect.ClientOption
	if opts.PeerToken != "" {
		options = append(options, wire.BearerToken(opts.PeerToken))
	}
	return &Transport{self: self, clusterID: clusterID, client: client, logger: logger, options: options,
		https: opts.TLS != nil, tlsConfig: opts.TLS, peerToken: opts.PeerToken, peers: map[uint64]*peer{},
		learned: map[uint64]string{}, removed: map[uint64]bool{}}
}

// Advertise sets where peers reach this controller.
func (t *Transport) Advertise(url string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.selfURL = url
}

func (t *Transport) advertised() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.selfURL
}

// LearnPeer records a sender's address from its request, unless the
// configuration gave one (which it keeps) or removed the id: the address to
// answer a peer this controller has not yet seen added. It is used when the
// node first sends to the id; whether its messages are stepped is the
// node's decision, not the address book's.
func (t *Transport) LearnPeer(id uint64, url string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if _, known := t.peers[id]; known || id == t.self || url == "" || t.removed[id] {
		return
	}
	if _, ok := t.learned[id]; !ok && len(t.learned) >= learnedMax {
		clear(t.learned)
	}
	t.learned[id] = url
}

// Attach sets where reports go (the runner).
func (t *Transport) Attach(r Reporter) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.reporter = r
}

// noReporter stands in until Attach.
type noReporter struct{}

func (noReporter) ReportUnreachable(uint64)    {}
func (noReporter) ReportCongested(uint64)      {}
func (noReporter) ReportSnapshot(uint64, bool) {}

func (t *Transport) reports() Reporter {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.reporterLocked()
}

func (t *Transport) reporterLocked() Reporter {
	if t.reporter == nil {
		return noReporter{}
	}
	return t.reporter
}

// Send implements node.Transport.
func (t *Transport) Send(messages []*raftpb.Message) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, m := range messages {
		to := m.GetTo()
		p, ok := t.peers[to]
		if url, learned := t.learned[to]; !ok && learned {
			p, ok = t.setPeerLocked(to, url), true
		}
		if !ok {
			// No address for the peer (not known yet, or removed): Raft
			// must hear of it, or it waits forever for the outcome of a
			// snapshot that never left.
			t.reporterLocked().ReportUnreachable(to)
			if m.GetType() == raftpb.MsgSnap {
				t.reporterLocked().ReportSnapshot(to, false)
			}
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
				t.reporterLocked().ReportUnreachable(to)
				t.reporterLocked().ReportSnapshot(to, false)
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
	delete(t.removed, id)
	t.setPeerLocked(id, url)
}

// setPeerLocked starts (or restarts, for a new address) the peer's streams.
func (t *Transport) setPeerLocked(id uint64, url string) *peer {
	delete(t.learned, id)
	if t.https {
		url = wire.HTTPSURL(url)
	}
	if p, ok := t.peers[id]; ok {
		if p.url == url {
			return p
		}
		close(p.stop)
	}
	p := &peer{id: id, url: url, messages: make(chan *raftpb.Message, peerQueueMax),
		snapshots: make(chan *raftpb.Message, snapshotQueueMax), stop: make(chan struct{})}
	t.peers[id] = p
	go t.stream(p)
	go t.sendSnapshots(p)
	return p
}

// RemovePeer implements node.Transport.
func (t *Transport) RemovePeer(id uint64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.removed[id] = true
	delete(t.learned, id)
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
	req := &raftv1.SendRequest{ClusterId: t.clusterID, FromNodeId: t.self, ToNodeId: p.id, FromUrl: t.advertised()}
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
		t.reports().ReportUnreachable(p.id)
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
		t.reports().ReportCongested(p.id)
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
			t.failQueuedSnapshots(p)
			return
		case m = <-p.snapshots:
		}
		select {
		case <-p.stop:
			// Removed, or replaced by a peer at a new URL, while m waited:
			// it does not go to the old address.
			t.reports().ReportSnapshot(p.id, false)
			t.failQueuedSnapshots(p)
			return
		default:
		}
		// The receiver answers once its node has stepped the snapshot and
		// persisted what it installs (RaftHandler.Send): delivered means
		// applied there.
		err := func() error {
			ctx, cancel := context.WithTimeout(context.Background(), snapshotTimeout)
			defer cancel()
			req, err := t.request(p, []*raftpb.Message{m})
			if err != nil {
				return err
			}
			s := client.Send(ctx)
			if err := s.Send(req); err != nil {
				_, cerr := s.CloseAndReceive()
				return errors.Join(err, cerr)
			}
			_, err = s.CloseAndReceive()
			return err
		}()
		if err != nil {
			t.logger.Warn("snapshot not delivered", "peer", p.id, "index", m.GetSnapshot().GetMetadata().GetIndex(), "error", err)
		}
		t.reports().ReportSnapshot(p.id, err == nil)
	}
}

// failQueuedSnapshots reports the snapshots still queued for a stopped
// peer (removed, or replaced by one at a new URL) as failed: they will
// never leave, and Raft waits for their outcome. Send queues nothing for a
// stopped peer (it is gone from t.peers before its stop is closed), so
// nothing is left behind.
func (t *Transport) failQueuedSnapshots(p *peer) {
	for {
		select {
		case <-p.snapshots:
			t.reports().ReportSnapshot(p.id, false)
		default:
			return
		}
	}
}

// RaftHandler receives Raft messages from peers and hands them to the node.
type RaftHandler struct {
	clusterID string
	self      uint64
	runner    Stepper
	// refusals logs and counts what is refused, here and by the admission
	// Mount puts in front.
	refusals *Refusals
	// learn, if set, takes the address an admitted sender says it is
	// reached at (Transport.LearnPeer).
	learn func(id uint64, url string)

	// conns are the frame streams being served (see Close).
	mu     sync.Mutex
	conns  map[net.Conn]struct{}
	closed bool
}

var _ raftv1connect.RaftTransportServiceHandler = (*RaftHandler)(nil)

// Stepper takes Raft messages for a node. *runner.Runner is one.
type Stepper interface {
	// Step queues a message; it may drop it (Raft retransmits), and
	// returns false once the node has stopped.
	Step(m *raftpb.Message) bool
	// StepSnapshot hands the node a snapshot message and returns once the
	// node has stepped it and persisted what it installs, or why it could
	// not: the sender reports the outcome to Raft, which waits for it.
	StepSnapshot(ctx context.Context, m *raftpb.Message) error
}

// NewRaftHandler serves the peer transport for controller self, stepping
// what it admits into r. What it refuses is logged and counted by
// refusals (nil: nowhere).
func NewRaftHandler(clusterID string, self uint64, r Stepper, refusals *Refusals) *RaftHandler {
	if refusals == nil {
		refusals = NewRefusals(nil, nil)
	}
	return &RaftHandler{clusterID: clusterID, self: self, runner: r, refusals: refusals,
		conns: map[net.Conn]struct{}{}}
}

// LearnAddresses gives the addresses admitted senders say they are
// reached at to t (Transport.LearnPeer).
func (h *RaftHandler) LearnAddresses(t *Transport) { h.learn = t.LearnPeer }

// Send implements RaftTransportService.
func (h *RaftHandler) Send(ctx context.Context, stream *connect.ClientStream[raftv1.SendRequest]) (*connect.Response[raftv1.SendResponse], error) {
	principal := auth.PrincipalName(ctx)
	for stream.Receive() {
		req := stream.Msg()
		messages, reason, err := h.admit(ctx, req)
		if err != nil {
			h.refusals.Refuse(reason, stream.Peer().Addr, strconv.FormatUint(req.GetFromNodeId(), 10), principal, err)
			return nil, err
		}
		if h.learn != nil && req.GetFromUrl() != "" {
			h.learn(req.GetFromNodeId(), req.GetFromUrl())
		}
		for _, m := range messages {
			if m.GetType() == raftpb.MsgSnap {
				if reason, err := h.stepSnapshot(ctx, m); err != nil {
					if reason != "" {
						h.refusals.Refuse(reason, stream.Peer().Addr, strconv.FormatUint(req.GetFromNodeId(), 10), principal, err)
					}
					return nil, err
				}
				continue
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

// admit checks a request as a whole before any of its messages is
// stepped: for this cluster, for this controller, from a peer, and every
// message from that peer to this controller. A request that fails any
// check is refused entirely, so that a sender cannot slip messages in
// under another controller's id next to its own.
func (h *RaftHandler) admit(ctx context.Context, req *raftv1.SendRequest) ([]*raftpb.Message, string, error) {
	if req.GetClusterId() != h.clusterID {
		return nil, RefusedCluster, connect.NewError(connect.CodePermissionDenied,
			fmt.Errorf("controller %d is in cluster %q, not %q", h.self, h.clusterID, req.GetClusterId()))
	}
	if req.GetToNodeId() != h.self {
		return nil, refusedReceiver, connect.NewError(connect.CodeInvalidArgument,
			fmt.Errorf("messages for controller %d reached controller %d", req.GetToNodeId(), h.self))
	}
	from := req.GetFromNodeId()
	if from == 0 || from == h.self {
		return nil, refusedSender, connect.NewError(connect.CodeInvalidArgument,
			fmt.Errorf("the request's sender, %d, is not a peer of controller %d", from, h.self))
	}
	if err := senderCertified(ctx, from); err != nil {
		return nil, refusedCertificate, connect.NewError(connect.CodePermissionDenied, err)
	}
	messages := make([]*raftpb.Message, 0, len(req.GetMessages()))
	for i, data := range req.GetMessages() {
		m := &raftpb.Message{}
		if err := proto.Unmarshal(data, m); err != nil {
			return nil, refusedMalformed, connect.NewError(connect.CodeInvalidArgument,
				fmt.Errorf("message %d of the request does not decode: %w; the request is refused", i, err))
		}
		if !node.SentBy(m, from) {
			return nil, refusedSender, connect.NewError(connect.CodeInvalidArgument,
				fmt.Errorf("message %d of the request is from controller %d, not from the request's sender %d; the request is refused", i, m.GetFrom(), from))
		}
		if m.GetTo() != h.self {
			return nil, refusedReceiver, connect.NewError(connect.CodeInvalidArgument,
				fmt.Errorf("message %d of the request is for controller %d, not %d; the request is refused", i, m.GetTo(), h.self))
		}
		messages = append(messages, m)
	}
	return messages, "", nil
}

// stepSnapshot steps a snapshot and waits until the node has persisted
// what it installs, so that the sender's "delivered" means applied here;
// a snapshot the node could not take is an error the sender reports as a
// failure (Raft then sends it again), never a silent drop.
func (h *RaftHandler) stepSnapshot(ctx context.Context, m *raftpb.Message) (string, error) {
	err := h.runner.StepSnapshot(ctx, m)
	switch {
	case err == nil:
		return "", nil
	case errors.Is(err, runner.ErrBusy):
		return refusedBusy, connect.NewError(connect.CodeResourceExhausted,
			fmt.Errorf("controller %d is too busy to take the snapshot now: %w", h.self, err))
	case errors.Is(err, runner.ErrStopped):
		return "", connect.NewError(connect.CodeUnavailable, fmt.Errorf("controller %d is stopped", h.self))
	case ctx.Err() != nil:
		return "", connect.NewError(connect.CodeCanceled, fmt.Errorf("the snapshot was not installed before the sender gave up: %w", err))
	default:
		return refusedByNode, connect.NewError(connect.CodeFailedPrecondition,
			fmt.Errorf("controller %d did not install the snapshot: %w", h.self, err))
	}
}
