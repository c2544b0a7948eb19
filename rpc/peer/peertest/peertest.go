// Package peertest speaks the peer transport's wire for tests, as a
// confused or hostile peer would: raw upgrade requests to the Raft frame
// stream, and Raft messages encoded as a SendRequest carries them. It is
// shared by the transport's own tests (rpc/peer) and by the tests of
// whole controllers (rpc), which must refuse the same strangers.
//
// What this package must never do: be imported by production code, or
// reuse the transport's own code to build what it sends (a test of the
// wire must not agree with the code it tests by construction).
package peertest

import (
	"bufio"
	"crypto/tls"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"
)

// FramesPath is where the Raft frame stream is served.
const FramesPath = "/dmq.raft.v1.RaftTransportService/Frames"

// FramesRequest is an upgrade request to the Raft frame stream.
type FramesRequest struct {
	Token, Cluster, From, To string
	NoUpgrade                bool
	// TLS, if set, dials over TLS (base is then an https URL).
	TLS *tls.Config
}

// OpenFrames sends the upgrade request over a fresh connection and returns
// the response's status (0: the connection or the handshake failed) and,
// if upgraded, the connection.
func OpenFrames(t *testing.T, base string, r FramesRequest) (int, net.Conn) {
	t.Helper()
	host := strings.TrimPrefix(strings.TrimPrefix(base, "http://"), "https://")
	var conn net.Conn
	var err error
	if r.TLS != nil {
		cfg := r.TLS.Clone()
		cfg.NextProtos = []string{"http/1.1"}
		conn, err = tls.DialWithDialer(&net.Dialer{Timeout: 2 * time.Second}, "tcp", host, cfg)
	} else {
		conn, err = net.DialTimeout("tcp", host, 2*time.Second)
	}
	if err != nil {
		t.Logf("dialling the frame stream: %v", err)
		return 0, nil
	}
	header := "GET " + FramesPath + " HTTP/1.1\r\nHost: " + host + "\r\n"
	if !r.NoUpgrade {
		header += "Connection: Upgrade\r\nUpgrade: dmq-raft-frames/1\r\n"
	}
	if r.Token != "" {
		header += "Authorization: Bearer " + r.Token + "\r\n"
	}
	header += "Dmq-Cluster-Id: " + r.Cluster + "\r\nDmq-From-Node-Id: " + r.From + "\r\nDmq-To-Node-Id: " + r.To + "\r\n\r\n"
	require.NoError(t, conn.SetDeadline(time.Now().Add(5*time.Second)))
	resp, err := func() (*http.Response, error) {
		if _, err := conn.Write([]byte(header)); err != nil {
			return nil, err
		}
		return http.ReadResponse(bufio.NewReader(conn), nil)
	}()
	if err != nil {
		t.Logf("upgrading to the frame stream: %v", err)
		_ = conn.Close()
		return 0, nil
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		_ = conn.Close()
		return resp.StatusCode, nil
	}
	t.Cleanup(func() { _ = conn.Close() })
	return resp.StatusCode, conn
}

// Heartbeat is a Raft heartbeat from one controller to another, in term 3.
func Heartbeat(from, to, commit uint64) *raftpb.Message {
	return &raftpb.Message{Type: raftpb.MessageType_MsgHeartbeat.Enum(), From: proto.Uint64(from), To: proto.Uint64(to),
		Term: proto.Uint64(3), Commit: proto.Uint64(commit)}
}

// EncodeMessages encodes Raft messages as a SendRequest carries them.
func EncodeMessages(t *testing.T, messages ...*raftpb.Message) [][]byte {
	var out [][]byte
	for _, m := range messages {
		data, err := proto.Marshal(m)
		require.NoError(t, err)
		out = append(out, data)
	}
	return out
}
