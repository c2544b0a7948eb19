package auth

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"sync"
	"time"
	"unicode/utf8"

	"connectrpc.com/connect"
	metadatav1 "github.com/dmq-project/metadata/gen/dmq/metadata/v1"
	"github.com/dmq-project/metadata/wire"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// AuditRecord is one line of the audit log: a mutating request, who made
// it, from where, and how it ended.
type AuditRecord struct {
	Time      time.Time       `json:"time"`
	Who       string          `json:"who"`
	From      string          `json:"from"`
	Procedure string          `json:"procedure"`
	Request   json.RawMessage `json:"request,omitempty"`
	// A request whose protobuf encoding is over AuditRequestBytesMax is
	// recorded by the size and SHA-256 of its deterministic protobuf
	// encoding instead; a call refused authentication, not at all.
	RequestBytes    int    `json:"request_bytes,omitempty"`
	RequestSHA256   string `json:"request_sha256,omitempty"`
	Result          string `json:"result"`
	ErrorCode       string `json:"error_code,omitempty"`
	Message         string `json:"message,omitempty"`
	MetadataVersion int64  `json:"metadata_version,omitempty"`
	// ForwardedBy is the controller that passed the call on to this one
	// (the leader), its client's call refused there NOT_CONTROLLER. Under
	// TLS only a controller may set it, and From is then its client's
	// address; without TLS it is the caller's claim, and From the
	// forwarding controller's address.
	ForwardedBy string `json:"forwarded_by,omitempty"`
}

// auditLog writes one JSON line per record; safe for concurrent use. A
// record is handed to the writer before its call returns. Concurrent
// records share write calls: the caller that finds no write in progress
// writes every line queued so far, and the others wait for it, so a burst
// of calls completed by one commit costs one system call instead of one
// each.
type auditLog struct {
	mu      sync.Mutex
	written sync.Cond // broadcast when a write ends
	w       io.Writer
	queued  []byte // lines not yet handed to w
	spare   []byte // the previous batch's buffer, for reuse
	writing bool
	// lines counts the lines queued so far, done those handed to w.
	lines, done uint64
}

func newAuditLog(w io.Writer) *auditLog {
	a := &auditLog{w: w}
	a.written.L = &a.mu
	return a
}

func (a *auditLog) write(r AuditRecord) {
	line := appendAuditLine(make([]byte, 0, 256+len(r.Request)), r)
	a.mu.Lock()
	defer a.mu.Unlock()
	a.queued = append(a.queued, line...)
	a.lines++
	mine := a.lines
	for a.writing {
		a.written.Wait()
	}
	if a.done >= mine {
		// A write that began after ours was queued included it.
		return
	}
	batch, upTo := a.queued, a.lines
	a.queued, a.writing = a.spare[:0], true
	a.mu.Unlock()
	// A failed write loses these lines and nothing else: the calls they
	// describe have already happened, and the log is not a source of truth.
	_, _ = a.w.Write(batch)
	a.mu.Lock()
	a.spare, a.done, a.writing = batch, upTo, false
	a.written.Broadcast()
}

// appendAuditLine encodes r as one JSON line: the fields of AuditRecord's
// tags, in order, and Request as it is (protojson's output: valid JSON on
// one line). encoding/json reflected over the record and validated and
// copied Request again: with a write call per record, the audit log was
// 7.5% of a loaded leader's CPU.
func appendAuditLine(dst []byte, r AuditRecord) []byte {
	dst = append(dst, `{"time":"`...)
	dst = r.Time.AppendFormat(dst, time.RFC3339Nano)
	dst = append(dst, `","who":`...)
	dst = appendJSONString(dst, r.Who)
	dst = append(dst, `,"from":`...)
	dst = appendJSONString(dst, r.From)
	dst = append(dst, `,"procedure":`...)
	dst = appendJSONString(dst, r.Procedure)
	if len(r.Request) != 0 {
		dst = append(dst, `,"request":`...)
		dst = append(dst, r.Request...)
	}
	if r.RequestBytes != 0 {
		dst = append(dst, `,"request_bytes":`...)
		dst = strconv.AppendInt(dst, int64(r.RequestBytes), 10)
	}
	if r.RequestSHA256 != "" {
		dst = append(dst, `,"request_sha256":`...)
		dst = appendJSONString(dst, r.RequestSHA256)
	}
	dst = append(dst, `,"result":`...)
	dst = appendJSONString(dst, r.Result)
	if r.ErrorCode != "" {
		dst = append(dst, `,"error_code":`...)
		dst = appendJSONString(dst, r.ErrorCode)
	}
	if r.Message != "" {
		dst = append(dst, `,"message":`...)
		dst = appendJSONString(dst, r.Message)
	}
	if r.MetadataVersion != 0 {
		dst = append(dst, `,"metadata_version":`...)
		dst = strconv.AppendInt(dst, r.MetadataVersion, 10)
	}
	return append(dst, "}\n"...)
}

// appendJSONString appends s as a JSON string, as encoding/json would
// (invalid UTF-8 becomes U+FFFD; U+2028 and U+2029 are escaped) except
// that <, > and & stay as they are.
func appendJSONString(dst []byte, s string) []byte {
	const hex = "0123456789abcdef"
	dst = append(dst, '"')
	start := 0
	for i := 0; i < len(s); {
		if b := s[i]; b < utf8.RuneSelf {
			if b >= 0x20 && b != '"' && b != '\\' {
				i++
				continue
			}
			dst = append(dst, s[start:i]...)
			switch b {
			case '"', '\\':
				dst = append(dst, '\\', b)
			case '\n':
				dst = append(dst, '\\', 'n')
			case '\r':
				dst = append(dst, '\\', 'r')
			case '\t':
				dst = append(dst, '\\', 't')
			default:
				dst = append(dst, '\\', 'u', '0', '0', hex[b>>4], hex[b&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			dst = append(dst, s[start:i]...)
			dst = append(dst, `\ufffd`...)
		case r == '\u2028' || r == '\u2029':
			dst = append(dst, s[start:i]...)
			dst = append(dst, '\\', 'u', '2', '0', '2', hex[r&0xf])
		default:
			i += size
			continue
		}
		i += size
		start = i
	}
	dst = append(dst, s[start:]...)
	return append(dst, '"')
}

// audited says whether a call changes something worth a record: every
// call with side effects, except routine heartbeats (one per broker per
// second); a heartbeat asking for a controlled shutdown is recorded.
func audited(req connect.AnyRequest) bool {
	if req.Spec().IdempotencyLevel == connect.IdempotencyNoSideEffects {
		return false
	}
	if hb, ok := req.Any().(*metadatav1.StorageHeartbeatRequest); ok {
		return hb.IsAlive != nil && !hb.GetIsAlive()
	}
	return true
}

// AuditRequestBytesMax is the largest request recorded whole; a larger one
// is recorded by its size and digest.
const AuditRequestBytesMax = 4 << 10

// NewAuditInterceptor writes to w one JSON line (an AuditRecord) for
// every mutating call, after it completes, naming the principal auth (if
// set) authenticates the call as.
func NewAuditInterceptor(w io.Writer, auth *Authenticator) connect.Interceptor {
	return auditInterceptor(newAuditLog(w), auth)
}

// auditInterceptor records every mutating call after it completes.
func auditInterceptor(log *auditLog, auth *Authenticator) connect.UnaryInterceptorFunc {
	return func(next connect.UnaryFunc) connect.UnaryFunc {
		return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
			resp, err := next(ctx, req)
			if !audited(req) || errors.Is(err, ErrAuthThrottled) {
				return resp, err
			}
			record := AuditRecord{Time: time.Now().UTC(), Who: "anonymous", From: req.Peer().Addr,
				Procedure: req.Spec().Procedure, Result: "ok", ForwardedBy: req.Header().Get(wire.ForwardedByHeader)}
			if auth != nil {
				record.Who = "unauthenticated"
				if p, aerr := auth.Authenticate(req.Header().Get("Authorization")); aerr == nil {
					record.Who = fmt.Sprintf("%s (%s)", p.Name, p.Role)
				}
			}
			// A caller that did not authenticate gets one short line: its
			// body, which anyone can send, is not worth the disk.
			if msg, ok := req.Any().(proto.Message); ok && connect.CodeOf(err) != connect.CodeUnauthenticated {
				record.Request, record.RequestBytes, record.RequestSHA256 = auditedRequest(msg)
			}
			if err != nil {
				record.Result = connect.CodeOf(err).String()
				record.Message = err.Error()
				if code := wire.ErrorCodeOf(err); code != metadatav1.ErrorCode_NONE {
					record.ErrorCode = code.String()
				}
			} else if resp != nil {
				record.MetadataVersion = metadataVersionOf(resp.Any())
			}
			log.write(record)
			return resp, err
		}
	}
}

// auditedRequest is how a request is recorded: whole, as JSON, when its
// protobuf encoding is at most AuditRequestBytesMax; else by the size and
// SHA-256 of its deterministic protobuf encoding, which anyone holding the
// request can recompute (protojson's output varies on purpose, so a digest
// of it would match nothing).
func auditedRequest(msg proto.Message) (whole json.RawMessage, size int, digest string) {
	encoded, err := proto.MarshalOptions{Deterministic: true}.Marshal(msg)
	if err != nil {
		return nil, 0, ""
	}
	if len(encoded) > AuditRequestBytesMax {
		sum := sha256.Sum256(encoded)
		return nil, len(encoded), hex.EncodeToString(sum[:])
	}
	data, err := protojson.Marshal(msg)
	if err != nil {
		return nil, 0, ""
	}
	return data, 0, ""
}

// metadataVersionOf reads a response's metadata_version field, if it has one.
func metadataVersionOf(msg any) int64 {
	m, ok := msg.(proto.Message)
	if !ok {
		return 0
	}
	field := m.ProtoReflect().Descriptor().Fields().ByName("metadata_version")
	if field == nil || field.Kind() != protoreflect.Int64Kind {
		return 0
	}
	return m.ProtoReflect().Get(field).Int()
}
