package api

import (
	"bytes"
	"compress/gzip"
	"fmt"
	"io"
	"net/http"
	"strings"

	metadatav1 "github.com/dmq-project/metadata/gen/dmq/metadata/v1"
	"google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/anypb"
)

// google.rpc.Code values a REST error body carries beside its HTTP status.
const (
	codeInvalidArgument   = 3
	codeResourceExhausted = 8
)

// limitREST refuses a REST request whose body exceeds limit with HTTP 413
// Content Too Large (RFC 9110 §15.5.14). Behind the transcoder the limit
// would surface as ResourceExhausted, which REST renders as 429 Too Many
// Requests: a client told to slow down retries a request that can never
// succeed. A body of unknown length is read up to the limit first.
//
// A gzip body is decompressed here, up to the limit (the transcoder would
// decompress it without a bound: half a megabyte can expand to gigabytes,
// before any authentication); any other Content-Encoding is 415.
func limitREST(limit int, refused func(httpStatus int), next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.ContentLength > int64(limit) {
			writeRESTError(w, refused, http.StatusRequestEntityTooLarge, codeResourceExhausted,
				fmt.Sprintf("the request body is %d bytes: the limit is %d", r.ContentLength, limit))
			return
		}
		encoding := strings.ToLower(strings.TrimSpace(r.Header.Get("Content-Encoding")))
		if r.Body == nil || r.Body == http.NoBody || (r.ContentLength >= 0 && (encoding == "" || encoding == "identity")) {
			next.ServeHTTP(&restResponse{ResponseWriter: w}, r)
			return
		}
		body, err := io.ReadAll(io.LimitReader(r.Body, int64(limit)+1))
		if err != nil {
			writeRESTError(w, refused, http.StatusBadRequest, codeInvalidArgument, "reading the request body: "+err.Error())
			return
		}
		if len(body) > limit {
			writeRESTError(w, refused, http.StatusRequestEntityTooLarge, codeResourceExhausted,
				fmt.Sprintf("the request body exceeds the limit of %d bytes", limit))
			return
		}
		switch encoding {
		case "", "identity":
		case "gzip", "x-gzip":
			zr, err := gzip.NewReader(bytes.NewReader(body))
			if err != nil {
				writeRESTError(w, refused, http.StatusBadRequest, codeInvalidArgument, "the gzip body does not decode: "+err.Error())
				return
			}
			body, err = io.ReadAll(io.LimitReader(zr, int64(limit)+1))
			if err != nil {
				writeRESTError(w, refused, http.StatusBadRequest, codeInvalidArgument, "the gzip body does not decode: "+err.Error())
				return
			}
			if len(body) > limit {
				writeRESTError(w, refused, http.StatusRequestEntityTooLarge, codeResourceExhausted,
					fmt.Sprintf("the request body expands to more than the limit of %d bytes", limit))
				return
			}
			r.Header.Del("Content-Encoding")
		default:
			writeRESTError(w, refused, http.StatusUnsupportedMediaType, codeInvalidArgument,
				fmt.Sprintf("Content-Encoding %q: the controller takes gzip or none", encoding))
			return
		}
		r.Body, r.ContentLength = io.NopCloser(bytes.NewReader(body)), int64(len(body))
		next.ServeHTTP(&restResponse{ResponseWriter: w}, r)
	})
}

// restResponse labels the transcoder's REST error bodies as what they are.
// vanguard writes them in JSON but names the codec it spoke to the
// handlers (application/proto, or a bare application/), which a client
// choosing its decoder by Content-Type cannot parse.
type restResponse struct {
	http.ResponseWriter
	wroteHeader bool
}

func (r *restResponse) fixContentType() {
	if r.wroteHeader {
		return
	}
	r.wroteHeader = true
	if ct := r.Header().Get("Content-Type"); ct == "application/" || strings.HasPrefix(ct, "application/proto") {
		r.Header().Set("Content-Type", "application/json")
	}
}

func (r *restResponse) WriteHeader(status int) {
	r.fixContentType()
	r.ResponseWriter.WriteHeader(status)
}

func (r *restResponse) Write(p []byte) (int, error) {
	r.fixContentType()
	return r.ResponseWriter.Write(p)
}

// Flush keeps server streams over REST flowing.
func (r *restResponse) Flush() {
	if f, ok := r.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

// Unwrap lets http.ResponseController reach the connection.
func (r *restResponse) Unwrap() http.ResponseWriter { return r.ResponseWriter }

// writeRESTError answers httpStatus with the body every REST error has: a
// google.rpc.Status (code is its google.rpc.Code) with the seed's
// ErrorDetail, and tells refused (the metrics: these requests reach no
// procedure, so no interceptor counts them).
func writeRESTError(w http.ResponseWriter, refused func(httpStatus int), httpStatus int, code int32, message string) {
	refused(httpStatus)
	st := &status.Status{Code: code, Message: message}
	if detail, err := anypb.New(&metadatav1.ErrorDetail{ErrorCode: metadatav1.ErrorCode_INVALID_REQUEST}); err == nil {
		st.Details = append(st.Details, detail)
	}
	body, err := protojson.Marshal(st)
	if err != nil {
		body = []byte(`{"code":3,"message":"the request was refused"}`)
	}
	w.Header().Set("Content-Type", "application/json")
	if httpStatus == http.StatusRequestEntityTooLarge && w.Header().Get("Connection") == "" {
		w.Header().Set("Connection", "close") // HTTP/1.1: the rest of the body is not read
	}
	w.WriteHeader(httpStatus)
	_, _ = w.Write(body)
}
