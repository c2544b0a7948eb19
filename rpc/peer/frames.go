package peer

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/dmq-project/metadata/gen/dmq/raft/v1/raftv1connect"
	"github.com/dmq-project/metadata/node"
	"github.com/dmq-project/metadata/rpc/auth"
	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"
)

// The Raft frame stream carries ordinary Raft messages between
// controllers: an HTTP/1.1 request on the API listener, upgraded to a plain
// byte stream of frames, each a 4-byte big-endian length and one encoded
// raftpb.Message. It exists for speed: a message on a Connect stream over
// HTTP/2 passed through four goroutines on each side (the sender's pump,
// the HTTP/2 body writer; the server's frame reader, its serve loop, the
// handler) and cost 480 µs between two controllers on a busy machine; on
// the frame stream the sender's pump writes to the socket and one reader
// goroutine steps what arrives. Admission is the Connect transport's: the
// cluster's client certificate under TLS, the peer token or a CONTROLLER
// token of the tokens file when authentication is on (never a JWT), the
// cluster id, the receiver's id, and a sender id that is a peer's; every
// message must then be from that sender to this controller. Snapshots
// stay on the Connect stream (large, rare, and reported to Raft).
const (
	framesProtocol = "dmq-raft-frames/1"
	framesPath     = "/" + raftv1connect.RaftTransportServiceName + "/Frames"

	headerToNodeID = "Dmq-To-Node-Id"
	// headerFromURL is where the sender's peers reach it (SendRequest's
	// from_url).
	headerFromURL = "Dmq-From-Url"

	frameHeaderBytes = 4
	// frameMaxBytes bounds one message: a MsgApp carries at most 1 MiB of
	// entries unless a single entry is larger, and an entry is bounded by
	// the API's request limit.
	frameMaxBytes = maxMessageBytes
	// frameFirstAllocBytes is what a frame's buffer starts with.
	frameFirstAllocBytes = 64 << 10
	// framesHandshakeTimeout bounds the dial and the upgrade: a paused
	// process accepts connections (the kernel does) but never answers.
	framesHandshakeTimeout = 2 * time.Second
	// framesWriteTimeout finds a peer that stopped reading.
	framesWriteTimeout = 5 * time.Second
	// framesReadTimeout ends a stream nobody writes to: the sender recycles
	// idle streams after streamIdleTimeout, so this only fires on a sender
	// that vanished without closing its connection.
	framesReadTimeout = 2 * streamIdleTimeout
)

// Headers of the peer transport's plain HTTP requests: the frame stream's
// upgrade, and the identity a founding controller asks of its peers.
const (
	// HeaderClusterID names the caller's cluster.
	HeaderClusterID = "Dmq-Cluster-Id"
	// HeaderFromNodeID names the calling controller.
	HeaderFromNodeID = "Dmq-From-Node-Id"
)

// maxMessageBytes bounds a message on the peer transport (a snapshot is
// the largest legitimate one).
const maxMessageBytes = 256 << 20

// errBadFrame is a frame that breaks the format: a length out of bounds,
// or bytes that are no Raft message.
var errBadFrame = errors.New("bad frame")

// errFramesNotServed says the peer predates the frame stream (404) or
// something between cannot upgrade (426, 501, 505): the sender falls back
// to the Connect stream.
var errFramesNotServed = errors.New("the peer does not serve the Raft frame stream")

// dialFrames opens a frame stream to the peer at peerURL. The returned
// connection is ready for frames.
func (t *Transport) dialFrames(ctx context.Context, to uint64, peerURL string) (net.Conn, error) {
	u, err := url.Parse(peerURL)
	if err != nil {
		return nil, fmt.Errorf("peer URL %q: %w", peerURL, err)
	}
	host := u.Host
	if u.Port() == "" {
		port := "80"
		if u.Scheme == "https" {
			port = "443"
		}
		host = net.JoinHostPort(u.Hostname(), port)
	}
	ctx, cancel := context.WithTimeout(ctx, framesHandshakeTimeout)
	defer cancel()
	var conn net.Conn
	if u.Scheme == "https" {
		cfg := t.tlsConfig.Clone()
		if cfg == nil {
			cfg = &tls.Config{MinVersion: tls.VersionTLS12}
		}
		// HTTP/1.1 only: an HTTP/2 connection cannot be upgraded.
		cfg.NextProtos = []string{"http/1.1"}
		conn, err = (&tls.Dialer{Config: cfg}).DialContext(ctx, "tcp", host)
	} else {
		conn, err = (&net.Dialer{}).DialContext(ctx, "tcp", host)
	}
	if err != nil {
		return nil, err
	}
	deadline, _ := ctx.Deadline()
	if err := conn.SetDeadline(deadline); err != nil {
		_ = conn.Close()
		return nil, err
	}
	req := &http.Request{
		Method: http.MethodGet, URL: &url.URL{Scheme: "http", Host: u.Host, Path: framesPath}, Host: u.Host,
		ProtoMajor: 1, ProtoMinor: 1,
		Header: http.Header{
			"Connection":     {"Upgrade"},
			"Upgrade":        {framesProtocol},
			HeaderClusterID:  {t.clusterID},
			HeaderFromNodeID: {strconv.FormatUint(t.self, 10)},
			headerToNodeID:   {strconv.FormatUint(to, 10)},
		},
	}
	if t.peerToken != "" {
		req.Header.Set("Authorization", "Bearer "+t.peerToken)
	}
	if self := t.advertised(); self != "" {
		req.Header.Set(headerFromURL, self)
	}
	reader := bufio.NewReader(conn)
	resp, err := func() (*http.Response, error) {
		if err := req.Write(conn); err != nil {
			return nil, err
		}
		return http.ReadResponse(reader, req)
	}()
	if err != nil {
		_ = conn.Close()
		return nil, err
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 1024))
		_ = conn.Close()
		switch resp.StatusCode {
		case http.StatusNotFound, http.StatusUpgradeRequired, http.StatusNotImplemented, http.StatusHTTPVersionNotSupported:
			return nil, fmt.Errorf("%w: %s", errFramesNotServed, resp.Status)
		}
		return nil, fmt.Errorf("controller %d refused the Raft frame stream: %s: %s", to, resp.Status, strings.TrimSpace(string(body)))
	}
	if err := conn.SetDeadline(time.Time{}); err != nil {
		_ = conn.Close()
		return nil, err
	}
	if reader.Buffered() > 0 {
		_ = conn.Close()
		return nil, errors.New("the peer wrote on the Raft frame stream")
	}
	return conn, nil
}

// appendFrame appends m as one frame.
func appendFrame(buf []byte, m *raftpb.Message) ([]byte, error) {
	start := len(buf)
	buf = append(buf, 0, 0, 0, 0)
	buf, err := proto.MarshalOptions{}.MarshalAppend(buf, m)
	if err != nil {
		return buf[:start], err
	}
	size := len(buf) - start - frameHeaderBytes
	if size > frameMaxBytes {
		return buf[:start], fmt.Errorf("a %v message of %d bytes exceeds the frame limit", m.GetType(), size)
	}
	binary.BigEndian.PutUint32(buf[start:], uint32(size))
	return buf, nil
}

// readFrame reads one message. It allocates at most frameFirstAllocBytes
// ahead of the bytes that arrive, whatever length the header claims (up
// to frameMaxBytes). An error wrapping errBadFrame is a sender's breach of
// the format; any other is the connection's.
func readFrame(r io.Reader, header []byte) (*raftpb.Message, error) {
	if _, err := io.ReadFull(r, header[:frameHeaderBytes]); err != nil {
		return nil, err
	}
	size := binary.BigEndian.Uint32(header)
	if size == 0 || size > frameMaxBytes {
		return nil, fmt.Errorf("%w: a frame of %d bytes", errBadFrame, size)
	}
	// A fresh buffer per message (the decoded entries may keep it), grown
	// as bytes arrive: a length alone does not make the receiver allocate.
	data := bytes.NewBuffer(make([]byte, 0, min(size, frameFirstAllocBytes)))
	if _, err := io.CopyN(data, r, int64(size)); err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return nil, err
	}
	m := &raftpb.Message{}
	if err := proto.Unmarshal(data.Bytes(), m); err != nil {
		return nil, fmt.Errorf("%w: a message does not decode: %w", errBadFrame, err)
	}
	return m, nil
}

// framesRefusal is why a frame stream is refused, with its HTTP status
// and the reason it is counted under.
type framesRefusal struct {
	status int
	reason string
	label  string
}

// admitFrames checks an upgrade request (authentication and the peer's
// certificate are checked before, by the handler's wrappers).
func (h *RaftHandler) admitFrames(r *http.Request) (from uint64, refusal *framesRefusal) {
	if r.ProtoMajor != 1 || r.Method != http.MethodGet ||
		!strings.EqualFold(r.Header.Get("Upgrade"), framesProtocol) || !headerHasToken(r.Header, "Connection", "upgrade") {
		return 0, &framesRefusal{http.StatusUpgradeRequired, "the Raft frame stream is an HTTP/1.1 GET with Upgrade: " + framesProtocol, refusedMalformed}
	}
	if cluster := r.Header.Get(HeaderClusterID); cluster != h.clusterID {
		return 0, &framesRefusal{http.StatusForbidden, fmt.Sprintf("controller %d is in cluster %q, not %q", h.self, h.clusterID, cluster), RefusedCluster}
	}
	to, err := strconv.ParseUint(r.Header.Get(headerToNodeID), 10, 64)
	if err != nil || to != h.self {
		return 0, &framesRefusal{http.StatusBadRequest, fmt.Sprintf("messages for controller %q reached controller %d", r.Header.Get(headerToNodeID), h.self), refusedReceiver}
	}
	from, err = strconv.ParseUint(r.Header.Get(HeaderFromNodeID), 10, 64)
	if err != nil || from == 0 || from == h.self {
		return 0, &framesRefusal{http.StatusBadRequest, fmt.Sprintf("%s %q is not a peer's id", HeaderFromNodeID, r.Header.Get(HeaderFromNodeID)), refusedSender}
	}
	if err := senderCertified(r.Context(), from); err != nil {
		return 0, &framesRefusal{http.StatusForbidden, err.Error(), refusedCertificate}
	}
	return from, nil
}

func headerHasToken(h http.Header, name, token string) bool {
	for _, v := range h.Values(name) {
		for _, part := range strings.Split(v, ",") {
			if strings.EqualFold(strings.TrimSpace(part), token) {
				return true
			}
		}
	}
	return false
}

// ServeFrames upgrades an admitted request to a frame stream and steps the
// messages that arrive until the stream ends.
func (h *RaftHandler) ServeFrames(w http.ResponseWriter, r *http.Request) {
	from, refusal := h.admitFrames(r)
	if refusal != nil {
		h.refusals.RefuseRequest(refusal.label, r, errors.New(refusal.reason))
		if refusal.status == http.StatusUpgradeRequired {
			w.Header().Set("Upgrade", framesProtocol)
			w.Header().Set("Connection", "Upgrade")
		}
		http.Error(w, refusal.reason, refusal.status)
		return
	}
	if url := r.Header.Get(headerFromURL); h.learn != nil && url != "" {
		h.learn(from, url)
	}
	conn, rw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		http.Error(w, "the connection cannot be upgraded: "+err.Error(), http.StatusInternalServerError)
		return
	}
	if !h.track(conn) {
		_ = conn.Close()
		return
	}
	defer h.untrack(conn)
	// The server's header deadlines stay on a hijacked connection.
	if conn.SetDeadline(time.Now().Add(framesWriteTimeout)) != nil {
		return
	}
	_, _ = rw.WriteString("HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: " + framesProtocol + "\r\n\r\n")
	if rw.Flush() != nil || conn.SetWriteDeadline(time.Time{}) != nil {
		return
	}
	header := make([]byte, frameHeaderBytes)
	refuse := func(reason string, err error) {
		h.refusals.Refuse(reason, r.RemoteAddr, strconv.FormatUint(from, 10), auth.PrincipalName(r.Context()), err)
	}
	for {
		if conn.SetReadDeadline(time.Now().Add(framesReadTimeout)) != nil {
			return
		}
		m, err := readFrame(rw.Reader, header)
		if err != nil {
			if errors.Is(err, errBadFrame) {
				refuse(refusedMalformed, err)
			}
			return
		}
		// The stream ends at a message that is not from its sender (but
		// one Raft relays) or not for this controller: the sender is
		// confused or lying.
		if !node.SentBy(m, from) {
			refuse(refusedSender, fmt.Errorf("a message from controller %d on the frame stream of controller %d", m.GetFrom(), from))
			return
		}
		if m.GetTo() != h.self {
			refuse(refusedReceiver, fmt.Errorf("a message for controller %d reached controller %d", m.GetTo(), h.self))
			return
		}
		if m.GetType() == raftpb.MsgSnap {
			// Not sent here by this transport (snapshots take the Connect
			// stream, which reports their outcome), but never dropped
			// silently either: stepped and persisted before the next
			// frame, or the stream ends and the sender finds out.
			if reason, err := h.stepSnapshot(r.Context(), m); err != nil {
				if reason != "" {
					refuse(reason, err)
				}
				return
			}
			continue
		}
		if !h.runner.Step(m) {
			return
		}
	}
}

// track records an upgraded connection, so that Close can end it; it
// refuses once the handler is closed.
func (h *RaftHandler) track(conn net.Conn) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return false
	}
	h.conns[conn] = struct{}{}
	return true
}

func (h *RaftHandler) untrack(conn net.Conn) {
	h.mu.Lock()
	defer h.mu.Unlock()
	delete(h.conns, conn)
	_ = conn.Close()
}

// Close ends every frame stream (the HTTP server does not know the
// connections it handed over) and refuses new ones.
func (h *RaftHandler) Close() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.closed = true
	for conn := range h.conns { // determinism: ok — closing every connection; order does not matter
		_ = conn.Close()
	}
}
