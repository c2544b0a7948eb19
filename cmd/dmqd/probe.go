package main

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"time"
)

// probeCommand is `dmqd probe [--url URL]`: it asks a controller's /readyz (or
// any URL) and succeeds on 200. With DMQ_SECURITY_TLS_CERT_FILE set (the
// controller serves TLS), an http:// URL is asked over https, accepting
// only that certificate. A container image built FROM scratch has
// no shell or curl for its HEALTHCHECK; the binary it runs probes itself.
func probeCommand(args []string) error {
	flags := flag.NewFlagSet("dmqd probe", flag.ContinueOnError)
	url := flags.String("url", "http://127.0.0.1:8080/readyz", "the probe to ask")
	timeout := flags.Duration("timeout", 3*time.Second, "how long to wait for the answer")
	if err := flags.Parse(args); err != nil {
		return err
	}
	if flags.NArg() > 0 {
		return fmt.Errorf("probe takes no arguments, got %q", flags.Args())
	}
	client := &http.Client{Timeout: *timeout}
	target := *url
	if certFile := os.Getenv("DMQ_SECURITY_TLS_CERT_FILE"); certFile != "" && strings.HasPrefix(target, "http://") {
		// The controller serves TLS only: probe it over TLS, and accept
		// only its own certificate (the probe runs beside it, in its
		// container, with its environment).
		own, err := ownCertificate(certFile)
		if err != nil {
			return err
		}
		target = "https://" + strings.TrimPrefix(target, "http://")
		client.Transport = &http.Transport{TLSClientConfig: &tls.Config{
			MinVersion:         tls.VersionTLS12,
			InsecureSkipVerify: true, // verified below: pinned to the controller's own certificate
			VerifyPeerCertificate: func(raw [][]byte, _ [][]*x509.Certificate) error {
				if len(raw) == 0 || !bytes.Equal(raw[0], own) {
					return errors.New("the server's certificate is not this controller's")
				}
				return nil
			}}}
	}
	resp, err := client.Get(target)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if resp.StatusCode != http.StatusOK {
		return errors.New(strings.TrimSpace(fmt.Sprintf("%s: HTTP %d %s", target, resp.StatusCode, body)))
	}
	return nil
}

// ownCertificate is the DER of the first certificate in a PEM file.
func ownCertificate(path string) ([]byte, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("probe over TLS: %w", err)
	}
	for {
		var block *pem.Block
		block, data = pem.Decode(data)
		if block == nil {
			return nil, fmt.Errorf("probe over TLS: no certificate in %s", path)
		}
		if block.Type == "CERTIFICATE" {
			return block.Bytes, nil
		}
	}
}
