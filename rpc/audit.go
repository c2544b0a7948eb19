package rpc

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"sync"
	"time"

	"connectrpc.com/connect"
	metadatav1 "github.com/dmq-project/metadata/rpc/gen/dmq/metadata/v1"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// AuditRecord is one line of the audit log: a mutating request, who made
// it, from where, and how it ended.
type AuditRecord struct {
	Time            time.Time       `json:"time"`
	Who             string          `json:"who"`
	From            string          `json:"from"`
	Procedure       string          `json:"procedure"`
	Request         json.RawMessage `json:"request"`
	Result          string          `json:"result"`
	ErrorCode       string          `json:"error_code,omitempty"`
	Message         string          `json:"message,omitempty"`
	MetadataVersion int64           `json:"metadata_version,omitempty"`
}

// auditLog writes one JSON line per record; safe for concurrent use.
type auditLog struct {
	mu sync.Mutex
	w  io.Writer
}

func (a *auditLog) write(r AuditRecord) {
	line, err := json.Marshal(r)
	if err != nil {
		return
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	_, _ = a.w.Write(append(line, '\n'))
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

// auditInterceptor records every mutating call after it completes.
func auditInterceptor(log *auditLog, auth *Authenticator) connect.UnaryInterceptorFunc {
	return func(next connect.UnaryFunc) connect.UnaryFunc {
		return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
			resp, err := next(ctx, req)
			if !audited(req) {
				return resp, err
			}
			record := AuditRecord{Time: time.Now().UTC(), Who: "anonymous", From: req.Peer().Addr,
				Procedure: req.Spec().Procedure, Result: "ok"}
			if auth != nil {
				record.Who = "unauthenticated"
				if p, aerr := auth.Authenticate(req.Header().Get("Authorization")); aerr == nil {
					record.Who = fmt.Sprintf("%s (%s)", p.Name, p.Role)
				}
			}
			if msg, ok := req.Any().(proto.Message); ok {
				if data, merr := protojson.Marshal(msg); merr == nil {
					record.Request = data
				}
			}
			if err != nil {
				record.Result = connect.CodeOf(err).String()
				record.Message = err.Error()
				if code := ErrorCodeOf(err); code != metadatav1.ErrorCode_NONE {
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
