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
	"google.golang.org/protobuf/proto"
)

// Pushes in flight have no shared bound: a storage service has at most one
// (the node sends it the next once it hears how the last ended), so there
// are at most as many as services. A shared bound would let a few slow or
// unreachable services, each holding its place until pushTimeout, delay
// every other service's push.
const (
	pushTimeout = 5 * time.Second
	// encodedUpdatesMax is how many updates (deltas and full states) stay
	// encoded for the pushes that share them.
	encodedUpdatesMax = 16
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
	https   bool
	mu      sync.Mutex
	targets map[int32]Target
	clients map[string]*connect.Client[encodedPush, metadatav1.PushMetadataResponse]
	report  func(fn func(*node.Node))
	metrics *metrics.Metrics
	encoded encodedUpdates
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
	return &Pusher{client: client, seedClient: seedClient, https: seedTLS != nil, targets: copied, metrics: m,
		clients: map[string]*connect.Client[encodedPush, metadatav1.PushMetadataResponse]{}, report: func(func(*node.Node)) {}}
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
			resp, err = p.send(target.URL, push.Request)
		default:
			resp, err = p.sendSeed(target.URL, push)
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
	data, err := p.encoded.request(req)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), pushTimeout)
	defer cancel()
	p.mu.Lock()
	client, ok := p.clients[url]
	if !ok {
		client = connect.NewClient[encodedPush, metadatav1.PushMetadataResponse](p.client,
			url+metadatav1connect.StorageSyncServicePushMetadataProcedure, connect.WithCodec(pushCodec{}))
		p.clients[url] = client
	}
	p.mu.Unlock()
	resp, err := client.CallUnary(ctx, connect.NewRequest(&encodedPush{data: data}))
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

// encodedPush is a PushMetadataRequest in its wire form.
type encodedPush struct{ data []byte }

// pushCodec sends pushes already encoded, and reads answers as Connect's
// protobuf codec does.
type pushCodec struct{}

func (pushCodec) Name() string { return "proto" }

func (pushCodec) Marshal(message any) ([]byte, error) {
	push, ok := message.(*encodedPush)
	if !ok {
		return nil, fmt.Errorf("push codec: %T is not an encoded push", message)
	}
	return push.data, nil
}

func (pushCodec) Unmarshal(data []byte, message any) error {
	m, ok := message.(proto.Message)
	if !ok {
		return fmt.Errorf("push codec: %T is not a protobuf message", message)
	}
	return proto.Unmarshal(data, m)
}

// encodedUpdates holds the wire form of the updates of recent pushes, by
// the delta or full state each carries: the node gives every target at one
// version the same update, which is encoded once, however many services
// it goes to.
type encodedUpdates struct {
	mu      sync.Mutex
	entries map[any]*encodedUpdate
	order   []any // oldest first
}

type encodedUpdate struct {
	once sync.Once
	data []byte
	err  error
}

// request encodes req: its own fields, then its update, which a protobuf
// decoder reads as one message (fields may come in any order).
func (e *encodedUpdates) request(req *metadatav1.PushMetadataRequest) ([]byte, error) {
	var key any
	switch u := req.GetUpdate().(type) {
	case *metadatav1.PushMetadataRequest_Delta:
		key = u.Delta
	case *metadatav1.PushMetadataRequest_FullState:
		key = u.FullState
	default:
		return proto.Marshal(req)
	}
	e.mu.Lock()
	if e.entries == nil {
		e.entries = map[any]*encodedUpdate{}
	}
	entry, ok := e.entries[key]
	if !ok {
		entry = &encodedUpdate{}
		e.entries[key] = entry
		e.order = append(e.order, key)
		if len(e.order) > encodedUpdatesMax {
			delete(e.entries, e.order[0])
			e.order = e.order[1:]
		}
	}
	e.mu.Unlock()
	entry.once.Do(func() {
		entry.data, entry.err = proto.Marshal(&metadatav1.PushMetadataRequest{Update: req.GetUpdate()})
	})
	if entry.err != nil {
		return nil, entry.err
	}
	header, err := proto.Marshal(&metadatav1.PushMetadataRequest{ControllerId: req.GetControllerId(),
		ControllerEpoch: req.GetControllerEpoch(), MetadataVersion: req.GetMetadataVersion(), RepairFromVersion: req.GetRepairFromVersion()})
	if err != nil {
		return nil, err
	}
	return append(header, entry.data...), nil
}
