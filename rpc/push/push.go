package push

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"time"

	"connectrpc.com/connect"
	metadatav1 "github.com/dmq-project/metadata/gen/dmq/metadata/v1"
	"github.com/dmq-project/metadata/gen/dmq/metadata/v1/metadatav1connect"
	"github.com/dmq-project/metadata/node"
	"github.com/dmq-project/metadata/rpc/metrics"
)

const (
	pushTimeout       = 5 * time.Second
	pushesInFlightMax = 64
)

// Pusher delivers pushes to storage services' StorageSyncService, at the
// URL services.json gives for the broker id, and reports each outcome back
// to the node. It implements node.Pusher without blocking the node.
type Pusher struct {
	client   *http.Client
	mu       sync.Mutex
	urls     map[int32]string
	inFlight chan struct{}
	report   func(fn func(*node.Node))
	metrics  *metrics.Metrics
}

var _ node.Pusher = (*Pusher)(nil)

// New returns a pusher to the given broker URLs that counts each push's
// result in m; outcomes go nowhere until Attach.
func New(client *http.Client, urls map[int32]string, m *metrics.Metrics) *Pusher {
	copied := map[int32]string{}
	for id, url := range urls {
		copied[id] = url
	}
	return &Pusher{client: client, urls: copied, inFlight: make(chan struct{}, pushesInFlightMax), metrics: m,
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

// CanPush implements node.Pusher: a broker is pushed to when services.json
// names its endpoint.
func (p *Pusher) CanPush(brokerID int32) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.urls[brokerID] != ""
}

// Push implements node.Pusher.
func (p *Pusher) Push(brokerID int32, req *metadatav1.PushMetadataRequest) {
	p.mu.Lock()
	url, report := p.urls[brokerID], p.report
	p.mu.Unlock()
	version := req.GetMetadataVersion()
	go func() {
		var resp *metadatav1.PushMetadataResponse
		var err error
		if url == "" {
			err = fmt.Errorf("no push endpoint for broker %d in services.json", brokerID)
		} else {
			p.inFlight <- struct{}{}
			resp, err = p.send(url, req)
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
		report(func(n *node.Node) { n.OnPushResult(brokerID, version, resp, err) })
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
