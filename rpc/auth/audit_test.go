package auth

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// sampleAuditRecord is a typical record: a topic created by a named admin.
func sampleAuditRecord() AuditRecord {
	return AuditRecord{
		Time: time.Date(2026, 11, 29, 4, 12, 53, 123456789, time.UTC), Who: "ops (ADMIN)", From: "127.0.0.1:53412",
		Procedure: "/dmq.metadata.v1.MetadataService/CreateTopic",
		Request:   json.RawMessage(`{"name":"orders","partitions":12,"replicationFactor":3}`),
		Result:    "ok", MetadataVersion: 48213,
	}
}

// decodeAuditLine parses one line as a reader of the audit log would,
// failing the test if it is not exactly one JSON object and a newline.
func decodeAuditLine(t *testing.T, line []byte) AuditRecord {
	t.Helper()
	require.True(t, bytes.HasSuffix(line, []byte("\n")), "a line ends with a newline: %q", line)
	require.Equal(t, 1, bytes.Count(line, []byte("\n")), "one line per record: %q", line)
	var r AuditRecord
	require.NoError(t, json.Unmarshal(line, &r), "%q", line)
	return r
}

// TestAuditLineReadsAsEncodingJSONWrites: whatever the strings hold
// (quotes, control characters, invalid UTF-8, line separators), a line
// decodes to what encoding/json's encoding of the same record decodes to.
func TestAuditLineReadsAsEncodingJSONWrites(t *testing.T) {
	tricky := []string{"", "plain", `quote " and backslash \`, "new\nline\r\ttab", "\x00\x01\x1f\x7f",
		"caf\xc3\xa9", "bad \xff\xfe utf-8", "cut \xe2\x82", "sep \u2028 \u2029", "<html> & co", "emoji 😀"}
	rng := rand.New(rand.NewPCG(1, 2))
	for range 500 {
		b := make([]byte, rng.IntN(24))
		for i := range b {
			b[i] = byte(rng.IntN(256))
		}
		tricky = append(tricky, string(b))
	}
	for i, s := range tricky {
		r := sampleAuditRecord()
		r.Who, r.Message, r.ErrorCode = s, s, tricky[(i+1)%len(tricky)]
		r.MetadataVersion = int64(i) - 3
		if i%3 == 0 {
			r.Request = nil
		}
		if i%5 == 0 {
			r.Request, r.RequestBytes, r.RequestSHA256 = nil, i*1000, s
		}
		want, err := json.Marshal(r)
		require.NoError(t, err)
		var expected AuditRecord
		require.NoError(t, json.Unmarshal(want, &expected))
		assert.Equal(t, expected, decodeAuditLine(t, appendAuditLine(nil, r)), "record %d (%q)", i, s)
	}
}

// writerCounting records each Write; the first one blocks until release
// is closed, so that others queue up behind it.
type writerCounting struct {
	mu      sync.Mutex
	buf     bytes.Buffer
	writes  int
	release chan struct{}
}

func (w *writerCounting) Write(p []byte) (int, error) {
	w.mu.Lock()
	w.writes++
	first := w.writes == 1
	w.mu.Unlock()
	if first {
		<-w.release
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.Write(p)
}

func (w *writerCounting) contains(line []byte) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return bytes.Contains(w.buf.Bytes(), line)
}

// TestAuditLogSharesWrites: records that arrive while a write is in
// progress go out together in the next one, each is in the writer before
// its call returns, and every line arrives whole, exactly once.
func TestAuditLogSharesWrites(t *testing.T) {
	w := &writerCounting{release: make(chan struct{})}
	log := newAuditLog(w)
	const callers = 10
	record := func(i int) AuditRecord {
		r := sampleAuditRecord()
		r.Who = fmt.Sprint("caller-", i)
		return r
	}
	var wg sync.WaitGroup
	written := make(chan int, callers+1)
	call := func(i int) {
		defer wg.Done()
		log.write(record(i))
		if w.contains(appendAuditLine(nil, record(i))) {
			written <- i
		}
	}
	wg.Add(1)
	go call(0)
	require.Eventually(t, func() bool { w.mu.Lock(); defer w.mu.Unlock(); return w.writes == 1 }, 5*time.Second, time.Millisecond)
	for i := 1; i <= callers; i++ {
		wg.Add(1)
		go call(i)
	}
	require.Eventually(t, func() bool { log.mu.Lock(); defer log.mu.Unlock(); return log.lines == callers+1 }, 5*time.Second, time.Millisecond)
	close(w.release)
	wg.Wait()
	close(written)
	assert.Len(t, written, callers+1, "every record is in the writer when its call returns")
	assert.Equal(t, 2, w.writes, "the first record alone, then the ten that queued behind it together")
	lines := strings.SplitAfter(w.buf.String(), "\n")
	require.Equal(t, "", lines[len(lines)-1])
	seen := map[string]int{}
	for _, line := range lines[:len(lines)-1] {
		seen[decodeAuditLine(t, []byte(line)).Who]++
	}
	for i := 0; i <= callers; i++ {
		assert.Equal(t, 1, seen[fmt.Sprint("caller-", i)], "caller %d", i)
	}
}

// BenchmarkAuditLog: encoding and appending one record to a file from 16
// goroutines, as a loaded controller's handlers do.
func BenchmarkAuditLog(b *testing.B) {
	f, err := os.Create(filepath.Join(b.TempDir(), "audit.log"))
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	log := newAuditLog(f)
	record := sampleAuditRecord()
	b.SetParallelism(8)
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			log.write(record)
		}
	})
}
