package rpctest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/dmq-project/metadata/rpc/auth"
	"github.com/stretchr/testify/require"
)

// CA is a certificate authority for tests: it writes its certificate and
// the certificates it issues as PEM files in a temporary directory.
type CA struct {
	Name     string
	CertFile string
	cert     *x509.Certificate
	key      *ecdsa.PrivateKey
	dir      string
	serial   int64
}

// NewCA creates a self-signed CA.
func NewCA(t testing.TB, name string) *CA {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	template := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, template, template, &key.PublicKey, key)
	require.NoError(t, err)
	cert, err := x509.ParseCertificate(der)
	require.NoError(t, err)
	ca := &CA{Name: name, cert: cert, key: key, dir: t.TempDir(), serial: 1}
	ca.CertFile = ca.write(t, name+"-ca.pem", "CERTIFICATE", der)
	return ca
}

// KeyPair is an issued certificate and its key, as files.
type KeyPair struct {
	CertFile, KeyFile string
}

// Issue signs a certificate for loopback (127.0.0.1, localhost) usable
// both as a server and as a client certificate, as a controller's is.
func (ca *CA) Issue(t testing.TB, commonName string) KeyPair {
	return ca.IssueFor(t, commonName)
}

// IssueFor is Issue for loopback and these host names too (controllers in
// containers, each its own host name).
func (ca *CA) IssueFor(t testing.TB, commonName string, hosts ...string) KeyPair {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	ca.serial++
	template := &x509.Certificate{
		SerialNumber: big.NewInt(ca.serial),
		Subject:      pkix.Name{CommonName: commonName},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		DNSNames:     append([]string{"localhost"}, hosts...),
	}
	der, err := x509.CreateCertificate(rand.Reader, template, ca.cert, &key.PublicKey, ca.key)
	require.NoError(t, err)
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	require.NoError(t, err)
	return KeyPair{
		CertFile: ca.write(t, commonName+".pem", "CERTIFICATE", der),
		KeyFile:  ca.write(t, commonName+"-key.pem", "PRIVATE KEY", keyDER),
	}
}

// ControllerTLS is the TLS of a controller whose certificate this CA
// issues and whose peers this CA vouches for.
func (ca *CA) ControllerTLS(t testing.TB, commonName string) auth.TLS {
	pair := ca.Issue(t, commonName)
	return auth.TLS{CertFile: pair.CertFile, KeyFile: pair.KeyFile, PeerCAFile: ca.CertFile}
}

// ClientTLS trusts this CA's servers, presenting pair if it is not empty.
func (ca *CA) ClientTLS(t testing.TB, pair KeyPair) *tls.Config {
	cfg, err := auth.ClientTLS(ca.CertFile, pair.CertFile, pair.KeyFile)
	require.NoError(t, err)
	return cfg
}

func (ca *CA) write(t testing.TB, name, kind string, der []byte) string {
	path := filepath.Join(ca.dir, name)
	require.NoError(t, os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: kind, Bytes: der}), 0o600))
	return path
}
