package auth

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"sync"
	"time"
)

// TLS names the files of a controller's transport security. With CertFile
// empty the controller serves cleartext HTTP/2 (h2c).
//
// The controller serves CertFile to every client and presents it to peers
// as a client certificate. PeerCAFile is the cluster's CA: a peer's
// server certificate must chain to it, and so must the client certificate
// of anyone sending Raft messages (mutual TLS between controllers). API
// clients may present certificates from ClientCAFile; RequireClientCert
// makes that mandatory for every caller.
type TLS struct {
	CertFile          string
	KeyFile           string
	PeerCAFile        string
	ClientCAFile      string
	RequireClientCert bool
}

// Enabled says whether TLS is configured.
func (t TLS) Enabled() bool { return t.CertFile != "" }

// TLSMaterial is TLS loaded: the key pair (reloaded when its files
// change, so that certificates rotate without a restart) and the pools.
type TLSMaterial struct {
	keyPair *keyPairFiles
	// peerCAs verify controllers; clientCAs verify any client (peers and
	// API clients both).
	peerCAs   *x509.CertPool
	clientCAs *x509.CertPool
	// caPEM are the CA files' contents, added to the system's roots for
	// pushes.
	caPEM   [][]byte
	require bool
}

// LoadTLS loads the files t names: the key pair and the CAs.
func LoadTLS(t TLS) (*TLSMaterial, error) {
	if t.CertFile == "" || t.KeyFile == "" || t.PeerCAFile == "" {
		return nil, errors.New("TLS needs a certificate, its key and the cluster's CA (the peer CA)")
	}
	keyPair := &keyPairFiles{certFile: t.CertFile, keyFile: t.KeyFile}
	if _, err := keyPair.get(); err != nil {
		return nil, err
	}
	m := &TLSMaterial{keyPair: keyPair, peerCAs: x509.NewCertPool(), clientCAs: x509.NewCertPool(), require: t.RequireClientCert}
	peerPEM, err := loadPool(m.peerCAs, t.PeerCAFile)
	if err != nil {
		return nil, err
	}
	m.clientCAs.AppendCertsFromPEM(peerPEM)
	m.caPEM = append(m.caPEM, peerPEM)
	if t.ClientCAFile != "" {
		clientPEM, err := loadPool(m.clientCAs, t.ClientCAFile)
		if err != nil {
			return nil, err
		}
		m.caPEM = append(m.caPEM, clientPEM)
	}
	return m, nil
}

// loadPool adds the PEM certificates of a file to pool and returns them.
func loadPool(pool *x509.CertPool, path string) ([]byte, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading CA certificates: %w", err)
	}
	if !pool.AppendCertsFromPEM(data) {
		return nil, fmt.Errorf("%s holds no PEM certificate", path)
	}
	return data, nil
}

// Server is the listener's configuration: client certificates are
// verified when given, and demanded when RequireClientCert is set; the
// Raft transport demands one from the peer CA either way.
func (m *TLSMaterial) Server() *tls.Config {
	auth := tls.VerifyClientCertIfGiven
	if m.require {
		auth = tls.RequireAndVerifyClientCert
	}
	return &tls.Config{
		MinVersion:     tls.VersionTLS12,
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return m.keyPair.get() },
		ClientAuth:     auth,
		ClientCAs:      m.clientCAs,
	}
}

// PeerClient dials peers: their certificates must chain to the cluster's
// CA, and this controller presents its own.
func (m *TLSMaterial) PeerClient() *tls.Config {
	return &tls.Config{
		MinVersion:           tls.VersionTLS12,
		RootCAs:              m.peerCAs,
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return m.keyPair.get() },
	}
}

// PushClient dials storage services, whose certificates may come from
// any of the configured CAs or the system's.
func (m *TLSMaterial) PushClient() *tls.Config {
	roots, err := x509.SystemCertPool()
	if err != nil {
		roots = x509.NewCertPool()
	}
	for _, pem := range m.caPEM {
		roots.AppendCertsFromPEM(pem)
	}
	cfg := m.PeerClient()
	cfg.RootCAs = roots
	return cfg
}

// VerifyPeer checks that a caller's TLS client certificate chains to the
// cluster's CA, as a controller's does: a process without the cluster's
// certificate cannot send Raft messages, whatever token it holds.
func (m *TLSMaterial) VerifyPeer(state *tls.ConnectionState) error {
	if state == nil || len(state.PeerCertificates) == 0 {
		return errors.New("the Raft transport takes only controllers presenting the cluster's certificate")
	}
	intermediates := x509.NewCertPool()
	for _, c := range state.PeerCertificates[1:] {
		intermediates.AddCert(c)
	}
	_, err := state.PeerCertificates[0].Verify(x509.VerifyOptions{
		Roots: m.peerCAs, Intermediates: intermediates, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	})
	if err != nil {
		return fmt.Errorf("the client certificate of %q is not the cluster's: %w", state.PeerCertificates[0].Subject.CommonName, err)
	}
	return nil
}

// keyPairFiles is a certificate and key on disk, reloaded on the next
// handshake after either file changes. A rotation that leaves the pair
// unreadable or mismatched keeps the previous pair in use.
type keyPairFiles struct {
	certFile, keyFile string

	mu       sync.Mutex
	current  *tls.Certificate
	modified [2]time.Time
}

func (k *keyPairFiles) get() (*tls.Certificate, error) {
	certInfo, certErr := os.Stat(k.certFile)
	keyInfo, keyErr := os.Stat(k.keyFile)
	k.mu.Lock()
	defer k.mu.Unlock()
	if certErr != nil || keyErr != nil {
		if k.current != nil {
			return k.current, nil
		}
		return nil, fmt.Errorf("reading the TLS key pair: %w", errors.Join(certErr, keyErr))
	}
	modified := [2]time.Time{certInfo.ModTime(), keyInfo.ModTime()}
	if k.current != nil && modified == k.modified {
		return k.current, nil
	}
	pair, err := tls.LoadX509KeyPair(k.certFile, k.keyFile)
	if err != nil {
		if k.current != nil {
			return k.current, nil
		}
		return nil, fmt.Errorf("loading the TLS key pair: %w", err)
	}
	k.current, k.modified = &pair, modified
	return k.current, nil
}

// ClientTLS is the TLS configuration of a client of the metadata service:
// the CA that signed the controllers' certificates (empty: the system's)
// and, if the controllers demand one, a client certificate and key.
func ClientTLS(caFile, certFile, keyFile string) (*tls.Config, error) {
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if caFile != "" {
		cfg.RootCAs = x509.NewCertPool()
		if _, err := loadPool(cfg.RootCAs, caFile); err != nil {
			return nil, err
		}
	}
	if (certFile == "") != (keyFile == "") {
		return nil, errors.New("a client certificate needs both its certificate and its key file")
	}
	if certFile != "" {
		keyPair := &keyPairFiles{certFile: certFile, keyFile: keyFile}
		if _, err := keyPair.get(); err != nil {
			return nil, err
		}
		cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return keyPair.get() }
	}
	return cfg, nil
}
