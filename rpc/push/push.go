package push

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"time"

	"connectrpc.com/connect"
	metadatav1 "github.com/dmq-project/metadata/gen/dmq/metadata/v1"
	"github.com/dmq-project/metadata/gen/dmq/metadata/v1/metadatav1connect"
	"github.com/dmq-project/metadata/node"
	"github.com/dmq-project/metadata/rpc/metrics"
	"github.com/dmq-project/metadata/seedwire"
	"github.com/dmq-project/metadata/wire"
)

const (
	pushTimeout       = 5 * time.Second
	pushesInFlightMax = 64
	// seedUpdateTimeout bounds one of the seed's updates: its receiver
	// sleeps up to 5 s inside a CONTROLLER_CHANGED before it answers.
	seedUpdateTimeout = 10 * time.Second
	// seedResponseBytesMax bounds what is read of a seed receiver's answer.
	seedResponseBytesMax = 64 << 10
)

// Target is a storage service's push endpoint: its base URL and the
// protocol it speaks there.
type Target struct {
	URL  string
	Seed bool
}

// Pusher delivers pushes to storage services at the endpoints services.json
// gives for their broker ids, in the protocol each speaks (Connect's
// StorageSyncService, or the seed's JSON updates), and reports each
// outcome back to the node. It implements node.Pusher without blocking the
// node.
type Pusher struct {
	client     *http.Client
	seedClient *http.Client
	// https: the controllers serve TLS, so the controller URL the seed's
	// updates name is the https:// form of the configured one.
	https    bool
	mu       sync.Mutex
	targets  map[int32]Target
	inFlight chan struct{}
	report   func(fn func(*node.Node))
	metrics  *metrics.Metrics
}

var _ node.Pusher = (*Pusher)(nil)

// New returns a pusher to the given targets that counts each push's
// result in m; outcomes go nowhere until Attach. client speaks Connect
// (HTTP/2, h2c in cleartext); the seed's receivers get an HTTP/1.1 client
// (HTTP/2 over TLS where offered) with seedTLS, nil for cleartext.
func New(client *http.Client, seedTLS *tls.Config, targets map[int32]Target, m *metrics.Metrics) *Pusher {
	copied := map[int32]Target{}
	for id, t := range targets {
		t.URL = strings.TrimSuffix(t.URL, "/")
		copied[id] = t
	}
	if seedTLS != nil {
		seedTLS = seedTLS.Clone()
	}
	seedClient := &http.Client{Transport: &http.Transport{TLSClientConfig: seedTLS, MaxIdleConnsPerHost: 8,
		ForceAttemptHTTP2: true}}
	return &Pusher{client: client, seedClient: seedClient, https: seedTLS != nil, targets: copied,
		inFlight: make(chan struct{}, pushesInFlightMax), metrics: m, report: func(func(*node.Node)) {}}
}

// Attach sets how outcomes reach the node: report runs a function on the
// node's goroutine, and must never block and never drop it (runner.Report):
// the node sends a broker no new push until it hears how the last ended.
func (p *Pusher) Attach(report func(fn func(*node.Node))) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.report = report
}

// Protocol implements node.Pusher: a broker is pushed to when services.json
// names its endpoint, in the protocol it names.
func (p *Pusher) Protocol(brokerID int32) node.PushProtocol {
	p.mu.Lock()
	defer p.mu.Unlock()
	t := p.targets[brokerID]
	switch {
	case t.URL == "":
		return node.PushNone
	case t.Seed:
		return node.PushSeed
	}
	return node.PushConnect
}

// Push implements node.Pusher.
func (p *Pusher) Push(brokerID int32, push node.Push) {
	p.mu.Lock()
	target, report := p.targets[brokerID], p.report
	p.mu.Unlock()
	go func() {
		var resp *metadatav1.PushMetadataResponse
		var err error
		switch {
		case target.URL == "":
			err = fmt.Errorf("no push endpoint for broker %d in services.json", brokerID)
		case push.Request != nil:
			p.inFlight <- struct{}{}
			resp, err = p.send(target.URL, push.Request)
			<-p.inFlight
		default:
			p.inFlight <- struct{}{}
			resp, err = p.sendSeed(target.URL, push)
			<-p.inFlight
		}
		result := "accepted"
		switch {
		case err != nil:
			result = "error"
		case !resp.GetAccepted():
			result = "rejected"
		}
		p.metrics.ObservePush(result)
		report(func(n *node.Node) { n.OnPushResult(brokerID, push.Version, resp, err) })
	}()
}

func (p *Pusher) send(url string, req *metadatav1.PushMetadataRequest) (*metadatav1.PushMetadataResponse, error) {
	ctx, cancel := context.WithTimeout(context.Background(), pushTimeout)
	defer cancel()
	client := metadatav1connect.NewStorageSyncServiceClient(p.client, url)
	resp, err := client.PushMetadata(ctx, connect.NewRequest(req))
	if err != nil {
		return nil, err
	}
	if resp.Msg == nil {
		return nil, errors.New("empty push response")
	}
	return resp.Msg, nil
}

// sendSeed posts the seed's updates in order, each once its predecessor
// succeeded. Every update succeeding is the push accepted at its version;
// an update the receiver answers with success false is the push rejected
// (the node sends a full state next); anything else is an error (the node
// retries the push, whose updates are idempotent, after a backoff).
func (p *Pusher) sendSeed(url string, push node.Push) (*metadatav1.PushMetadataResponse, error) {
	for i, update := range push.SeedUpdates {
		if p.https {
			// services.json gives controllers as host and port, which the
			// node turns into http:// URLs; a receiver told one would send
			// its heartbeats in clear text to a TLS port.
			update.ControllerURL = wire.HTTPSURL(update.ControllerURL)
		}
		answer, err := p.postSeed(url+seedwire.Path, update)
		if err != nil {
			return nil, fmt.Errorf("%s update %d of %d: %w", update.UpdateType, i+1, len(push.SeedUpdates), err)
		}
		if !answer.Success {
			return &metadatav1.PushMetadataResponse{Accepted: false,
				Reason: fmt.Sprintf("%s update refused: %s %s", update.UpdateType, answer.ErrorCode, answer.ErrorMessage)}, nil
		}
	}
	return &metadatav1.PushMetadataResponse{Accepted: true, MetadataVersion: push.Version}, nil
}

func (p *Pusher) postSeed(url string, update seedwire.MetadataUpdateRequest) (*seedwire.MetadataUpdateResponse, error) {
	body, err := json.Marshal(update)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), seedUpdateTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json")
	resp, err := p.seedClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, seedResponseBytesMax))
	if err != nil {
		return nil, err
	}
	if resp.StatusCode/100 != 2 {
		return nil, fmt.Errorf("HTTP %d: %s", resp.StatusCode, strings.TrimSpace(string(data)))
	}
	var answer seedwire.MetadataUpdateResponse
	if err := json.Unmarshal(data, &answer); err != nil {
		return nil, fmt.Errorf("the answer is not a MetadataUpdateResponse: %w", err)
	}
	return &answer, nil
}
