package api

import (
	"bytes"
	"fmt"
	"io"
	"net/http"

	metadatav1 "github.com/dmq-project/metadata/gen/dmq/metadata/v1"
	"google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/anypb"
)

// codeResourceExhausted is google.rpc.Code RESOURCE_EXHAUSTED, the code a
// REST error body carries beside its HTTP status.
const codeResourceExhausted = 8

// limitREST refuses a REST request whose body exceeds limit with HTTP 413
// Content Too Large (RFC 9110 §15.5.14). Behind the transcoder the limit
// would surface as ResourceExhausted, which REST renders as 429 Too Many
// Requests: a client told to slow down retries a request that can never
// succeed. A body of unknown length is read up to the limit first.
func limitREST(limit int, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.ContentLength > int64(limit) {
			writeTooLarge(w, fmt.Sprintf("the request body is %d bytes: the limit is %d", r.ContentLength, limit))
			return
		}
		if r.ContentLength < 0 && r.Body != nil && r.Body != http.NoBody {
			body, err := io.ReadAll(io.LimitReader(r.Body, int64(limit)+1))
			if err != nil {
				http.Error(w, "reading the request body: "+err.Error(), http.StatusBadRequest)
				return
			}
			if len(body) > limit {
				writeTooLarge(w, fmt.Sprintf("the request body exceeds the limit of %d bytes", limit))
				return
			}
			r.Body, r.ContentLength = io.NopCloser(bytes.NewReader(body)), int64(len(body))
		}
		next.ServeHTTP(w, r)
	})
}

// writeTooLarge answers 413 with the body every REST error has: a
// google.rpc.Status with the seed's ErrorDetail.
func writeTooLarge(w http.ResponseWriter, message string) {
	st := &status.Status{Code: codeResourceExhausted, Message: message}
	if detail, err := anypb.New(&metadatav1.ErrorDetail{ErrorCode: metadatav1.ErrorCode_INVALID_REQUEST}); err == nil {
		st.Details = append(st.Details, detail)
	}
	body, err := protojson.Marshal(st)
	if err != nil {
		body = []byte(`{"code":8,"message":"request body too large"}`)
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Connection", "close") // the rest of the body is not read
	w.WriteHeader(http.StatusRequestEntityTooLarge)
	_, _ = w.Write(body)
}
