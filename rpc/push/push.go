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
	"strconv"
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
	// pushResponseBytesMax bounds what is read of a PushMetadata answer.
	pushResponseBytesMax = 64 << 10
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
		report: func(func(*node.Node)) {}}
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

// send posts a push in Connect's unary protocol. Its body is read straight
// from the push's own fields and from the update's encoding, which every
// push of that update shares: a thousand full states in flight hold one
// copy of the state, not a thousand (a Connect client marshals each
// request into a buffer of its own).
func (p *Pusher) send(url string, req *metadatav1.PushMetadataRequest) (*metadatav1.PushMetadataResponse, error) {
	header, update, err := p.encoded.request(req)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), pushTimeout)
	defer cancel()
	body := io.MultiReader(bytes.NewReader(header), bytes.NewReader(update))
	httpReq, err := http.NewRequestWithContext(ctx, http.MethodPost, url+metadatav1connect.StorageSyncServicePushMetadataProcedure, body)
	if err != nil {
		return nil, err
	}
	httpReq.ContentLength = int64(len(header) + len(update))
	// The transport may send a request again on a new connection (a
	// GOAWAY before it was processed).
	httpReq.GetBody = func() (io.ReadCloser, error) {
		return io.NopCloser(io.MultiReader(bytes.NewReader(header), bytes.NewReader(update))), nil
	}
	httpReq.Header.Set("Content-Type", "application/proto")
	httpReq.Header.Set("Connect-Protocol-Version", "1")
	httpReq.Header.Set("Connect-Timeout-Ms", strconv.FormatInt(pushTimeout.Milliseconds(), 10))
	httpResp, err := p.client.Do(httpReq)
	if err != nil {
		return nil, err
	}
	defer httpResp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(httpResp.Body, pushResponseBytesMax))
	if err != nil {
		return nil, err
	}
	if httpResp.StatusCode != http.StatusOK {
		return nil, connectError(httpResp.StatusCode, data)
	}
	if contentType := httpResp.Header.Get("Content-Type"); contentType != "application/proto" {
		// Not a StorageSyncService (an empty 200 would read as a refusal).
		return nil, fmt.Errorf("the answer is %q, not a Connect protobuf answer", contentType)
	}
	resp := &metadatav1.PushMetadataResponse{}
	if err := proto.Unmarshal(data, resp); err != nil {
		return nil, fmt.Errorf("the answer is not a PushMetadataResponse: %w", err)
	}
	return resp, nil
}

// connectError reads the error of a Connect unary answer: its JSON body's
// code and message, or, without one, the HTTP status.
func connectError(status int, body []byte) error {
	var wireErr struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	}
	var code connect.Code
	if json.Unmarshal(body, &wireErr) != nil || code.UnmarshalText([]byte(wireErr.Code)) != nil {
		return fmt.Errorf("HTTP %d: %s", status, strings.TrimSpace(string(body)))
	}
	return connect.NewError(code, errors.New(wireErr.Message))
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

// request encodes req as two parts that a protobuf decoder reads as one
// message (fields may come in any order): its own fields, then its update,
// whose encoding is shared by every push that carries it.
func (e *encodedUpdates) request(req *metadatav1.PushMetadataRequest) (header, update []byte, err error) {
	var key any
	switch u := req.GetUpdate().(type) {
	case *metadatav1.PushMetadataRequest_Delta:
		key = u.Delta
	case *metadatav1.PushMetadataRequest_FullState:
		key = u.FullState
	default:
		data, err := proto.Marshal(req)
		return data, nil, err
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
		return nil, nil, entry.err
	}
	header, err = proto.Marshal(&metadatav1.PushMetadataRequest{ControllerId: req.GetControllerId(),
		ControllerEpoch: req.GetControllerEpoch(), MetadataVersion: req.GetMetadataVersion(), RepairFromVersion: req.GetRepairFromVersion()})
	if err != nil {
		return nil, nil, err
	}
	return header, entry.data, nil
}
