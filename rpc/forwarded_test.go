package rpc_test

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"net/http"
	"net/http/httptest"
	"os"
	"testing"

	"github.com/dmq-project/metadata/rpc"
	"github.com/dmq-project/metadata/rpc/auth"
	"github.com/dmq-project/metadata/rpc/rpctest"
	"github.com/dmq-project/metadata/wire"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func certificate(t *testing.T, pair rpctest.KeyPair) *x509.Certificate {
	data, err := os.ReadFile(pair.CertFile)
	require.NoError(t, err)
	block, _ := pem.Decode(data)
	require.NotNil(t, block)
	cert, err := x509.ParseCertificate(block.Bytes)
	require.NoError(t, err)
	return cert
}

// seen is what a handler behind trustForwarded sees of a call.
type seen struct{ remote, forwardedBy, forwardedFor string }

func through(t *testing.T, peerTLS *auth.TLSMaterial, state *tls.ConnectionState) seen {
	var got seen
	handler := rpc.TrustForwarded(http.HandlerFunc(func(_ http.ResponseWriter, r *http.Request) {
		got = seen{r.RemoteAddr, r.Header.Get(wire.ForwardedByHeader), r.Header.Get(wire.ForwardedForHeader)}
	}), peerTLS)
	r := httptest.NewRequest(http.MethodPost, "/dmq.metadata.v1.MetadataService/CreateTopic", nil)
	r.RemoteAddr = "10.0.0.2:40000" // the forwarding controller
	r.Header.Set(wire.ForwardedByHeader, "2")
	r.Header.Set(wire.ForwardedForHeader, "192.0.2.7:51000")
	r.TLS = state
	handler.ServeHTTP(httptest.NewRecorder(), r)
	return got
}

func TestForwardedClientAddressIsTakenFromControllersOnly(t *testing.T) {
	ca := rpctest.NewCA(t, "cluster")
	own := ca.IssueFor(t, "controller-1", "controller-1")
	material, err := auth.LoadTLS(auth.TLS{CertFile: own.CertFile, KeyFile: own.KeyFile, PeerCAFile: ca.CertFile})
	require.NoError(t, err)
	peer := certificate(t, ca.IssueFor(t, "controller-2", "controller-2"))
	stranger := certificate(t, rpctest.NewCA(t, "elsewhere").IssueFor(t, "controller-2", "controller-2"))

	// A controller's forward: the client's address is the caller's.
	got := through(t, material, &tls.ConnectionState{PeerCertificates: []*x509.Certificate{peer}})
	assert.Equal(t, seen{"192.0.2.7:51000", "2", "192.0.2.7:51000"}, got)

	// Anyone else under TLS: the marks are dropped (they cannot dodge a
	// rate limit, nor forge the audit log's forwarded_by).
	got = through(t, material, &tls.ConnectionState{PeerCertificates: []*x509.Certificate{stranger}})
	assert.Equal(t, seen{"10.0.0.2:40000", "", ""}, got)
	got = through(t, material, &tls.ConnectionState{})
	assert.Equal(t, seen{"10.0.0.2:40000", "", ""}, got)

	// Without TLS no caller can be told for a controller: the address is
	// the connection's; the forwarded-by claim stays (it stops a second
	// forward).
	got = through(t, nil, nil)
	assert.Equal(t, seen{"10.0.0.2:40000", "2", ""}, got)
}
