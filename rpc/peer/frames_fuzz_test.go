package peer

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"runtime"
	"testing"
	"testing/iotest"

	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"
)

// allocSlackBytes absorbs what else the process allocates while a frame
// is read (the fuzzing engine's own goroutines).
const allocSlackBytes = 256 << 10

// allocProbes bounds the heap measurements per input: each stops the
// world.
const allocProbes = 32

// probingReader measures, at each read, what the process allocated since
// start against the bytes delivered so far.
type probingReader struct {
	r         io.Reader
	t         *testing.T
	start     uint64
	delivered int
	probes    int
}

func (p *probingReader) Read(b []byte) (int, error) {
	if p.probes < allocProbes {
		p.probes++
		var stats runtime.MemStats
		runtime.ReadMemStats(&stats)
		allocated := stats.TotalAlloc - p.start
		// The frame's buffer starts at frameFirstAllocBytes at most and
		// grows as bytes arrive; a buffer that doubles allocates at most
		// about four times what it holds along the way.
		if allowed := uint64(frameFirstAllocBytes + 4*p.delivered + allocSlackBytes); allocated > allowed {
			p.t.Fatalf("%d bytes allocated after %d bytes arrived (allowed %d): the reader allocates ahead of the bytes",
				allocated, p.delivered, allowed)
		}
	}
	n, err := p.r.Read(b)
	p.delivered += n
	return n, err
}

// FuzzFrameReader feeds arbitrary bytes to the Raft frame reader, as a
// peer's connection does: it never panics, never allocates much more than
// what arrived (a header may claim up to frameMaxBytes, 256 MiB, and send
// nothing), and returns either an error or a message that encodes again
// within the frame limit.
func FuzzFrameReader(f *testing.F) {
	var valid []byte
	for _, m := range []*raftpb.Message{
		{Type: raftpb.MessageType_MsgHeartbeat.Enum(), From: proto.Uint64(1), To: proto.Uint64(2), Term: proto.Uint64(3)},
		{Type: raftpb.MessageType_MsgApp.Enum(), From: proto.Uint64(1), To: proto.Uint64(2), Term: proto.Uint64(3),
			Entries: []*raftpb.Entry{{Index: proto.Uint64(7), Term: proto.Uint64(3), Data: []byte("record")}}},
		{Type: raftpb.MessageType_MsgSnap.Enum(), From: proto.Uint64(1), To: proto.Uint64(2),
			Snapshot: &raftpb.Snapshot{Data: []byte("state"), Metadata: &raftpb.SnapshotMetadata{Index: proto.Uint64(9)}}},
	} {
		var err error
		if valid, err = appendFrame(valid, m); err != nil {
			f.Fatal(err)
		}
	}
	f.Add(valid, false)
	f.Add(valid, true)
	f.Add(valid[:len(valid)-1], false)
	f.Add(binary.BigEndian.AppendUint32(nil, frameMaxBytes), false)
	f.Add(append(binary.BigEndian.AppendUint32(nil, 100<<20), 1, 2, 3), true)
	f.Add(binary.BigEndian.AppendUint32(nil, frameMaxBytes+1), false)
	f.Add([]byte{0, 0, 0, 0}, false)
	f.Add([]byte{0, 0, 0, 2, 0xff, 0xff}, false)
	f.Add([]byte{0, 0}, false)
	f.Fuzz(func(t *testing.T, data []byte, oneByteAtATime bool) {
		var source io.Reader = bytes.NewReader(data)
		if oneByteAtATime {
			source = iotest.OneByteReader(source)
		}
		header := make([]byte, frameHeaderBytes)
		consumed := 0
		for {
			var stats runtime.MemStats
			runtime.ReadMemStats(&stats)
			r := &probingReader{r: source, t: t, start: stats.TotalAlloc}
			m, err := readFrame(r, header)
			consumed += r.delivered
			if err != nil {
				if m != nil {
					t.Fatalf("a message with an error: %v", err)
				}
				switch {
				case errors.Is(err, errBadFrame):
				case errors.Is(err, io.EOF):
					if r.delivered != 0 {
						t.Fatalf("io.EOF in the middle of a frame, after %d bytes", r.delivered)
					}
				case errors.Is(err, io.ErrUnexpectedEOF):
				default:
					t.Fatalf("an error that is neither a bad frame nor the end of the input: %v", err)
				}
				return
			}
			if m == nil {
				t.Fatal("neither a message nor an error")
			}
			if size := binary.BigEndian.Uint32(header); r.delivered != frameHeaderBytes+int(size) {
				t.Fatalf("a frame of %d bytes took %d bytes of input", size, r.delivered)
			}
			if _, err := appendFrame(nil, m); err != nil {
				t.Fatalf("a message read does not encode again within the frame limit: %v", err)
			}
			if consumed > len(data) {
				t.Fatalf("%d bytes read from %d", consumed, len(data))
			}
		}
	})
}
