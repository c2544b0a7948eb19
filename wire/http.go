package wire

import (
	"context"
	"crypto/tls"
	"net/http"
	"strings"
	"time"

	"connectrpc.com/connect"
)

// CompressMinBytes is the smallest message a handler compresses: gzip of a
// few hundred bytes costs more CPU than it saves on a network (it was 18%
// of a loaded controller's CPU, and most of a storage agent's answering
// pushes: a gzip writer's first use clears a megabyte).
const CompressMinBytes = 4 << 10

// NewHTTPClient is the HTTP client of every caller of a controller, peers
// included: HTTP/2 over TLS when tlsConfig is set, cleartext HTTP/2 (h2c)
// otherwise.
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

// NewHTTPServer serves handler on addr over HTTP/1.1 and HTTP/2: cleartext
// (h2c) from Serve, over TLS from ServeTLS. Controllers serve their API
// and peers with it, storage agents the pushes they receive.
func NewHTTPServer(addr string, handler http.Handler) *http.Server {
	var protocols http.Protocols
	protocols.SetHTTP1(true)
	protocols.SetUnencryptedHTTP2(true)
	protocols.SetHTTP2(true)
	return &http.Server{Addr: addr, Handler: handler, Protocols: &protocols, ReadHeaderTimeout: 10 * time.Second}
}

// HTTPSURL turns an http:// URL into its https:// form, for callers that
// speak TLS to controllers configured with plain URLs.
func HTTPSURL(url string) string {
	if rest, ok := strings.CutPrefix(url, "http://"); ok {
		return "https://" + rest
	}
	return url
}

// BearerToken returns a client option that sends token with every call.
func BearerToken(token string) connect.ClientOption {
	return connect.WithInterceptors(bearer(token))
}

type bearer string

func (b bearer) WrapUnary(next connect.UnaryFunc) connect.UnaryFunc {
	return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
		req.Header().Set("Authorization", "Bearer "+string(b))
		return next(ctx, req)
	}
}

func (b bearer) WrapStreamingClient(next connect.StreamingClientFunc) connect.StreamingClientFunc {
	return func(ctx context.Context, spec connect.Spec) connect.StreamingClientConn {
		conn := next(ctx, spec)
		conn.RequestHeader().Set("Authorization", "Bearer "+string(b))
		return conn
	}
}

func (b bearer) WrapStreamingHandler(next connect.StreamingHandlerFunc) connect.StreamingHandlerFunc {
	return next
}
