package client

import (
	"context"
	cryptorand "crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	"connectrpc.com/connect"
	metadatav1 "github.com/dmq-project/metadata/gen/dmq/metadata/v1"
	"github.com/dmq-project/metadata/gen/dmq/metadata/v1/metadatav1connect"
	"github.com/dmq-project/metadata/wire"
)

// Config configures a Client. Zero values take the defaults.
type Config struct {
	// Endpoints are controller base URLs (http://host:port).
	Endpoints []string
	// ClientID names this client in request ids; random by default.
	ClientID string
	// HTTPClient defaults to HTTP/2: cleartext, or over TLS when TLS is set.
	HTTPClient *http.Client
	// TLS, if set, dials every endpoint (and leader hint) over TLS with
	// this configuration: http:// URLs are dialled as https://.
	TLS *tls.Config
	// AttemptTimeout bounds one attempt (default 3 s); the caller's context
	// bounds the whole call.
	AttemptTimeout time.Duration
	// BackoffMin and BackoffMax bound the wait between attempts.
	BackoffMin, BackoffMax time.Duration
	// Options are extra Connect client options (for example
	// connect.WithGRPC()).
	Options []connect.ClientOption
	// Token, if set, is sent as a bearer token with every call.
	Token string
}

// Client calls the metadata service. It is safe for concurrent use.
type Client struct {
	cfg      Config
	sessions SessionPool
	mu       sync.Mutex
	// leader is where calls start.
	leader   *LeaderGuess
	metadata map[string]metadatav1connect.MetadataServiceClient
	quorum   map[string]metadatav1connect.QuorumServiceClient
}

// ErrNoLeader wraps the last error when no endpoint answered as leader
// before the context ended.
var ErrNoLeader = errors.New("no leader")

// New returns a client of the given endpoints.
func New(cfg Config) (*Client, error) {
	if len(cfg.Endpoints) == 0 {
		return nil, errors.New("client: no endpoints: give --endpoints, DMQ_ENDPOINTS or a services.json")
	}
	for i, e := range cfg.Endpoints {
		e = strings.TrimSuffix(strings.TrimSpace(e), "/")
		if !strings.HasPrefix(e, "http://") && !strings.HasPrefix(e, "https://") {
			e = "http://" + e
		}
		if cfg.TLS != nil {
			e = wire.HTTPSURL(e)
		}
		cfg.Endpoints[i] = e
	}
	if cfg.ClientID == "" {
		var raw [8]byte
		_, _ = cryptorand.Read(raw[:])
		cfg.ClientID = "client-" + hex.EncodeToString(raw[:])
	}
	if cfg.HTTPClient == nil {
		cfg.HTTPClient = wire.NewHTTPClient(cfg.TLS)
	}
	if cfg.AttemptTimeout == 0 {
		cfg.AttemptTimeout = 3 * time.Second
	}
	if cfg.BackoffMin == 0 {
		cfg.BackoffMin = 50 * time.Millisecond
	}
	if cfg.BackoffMax == 0 {
		cfg.BackoffMax = time.Second
	}
	if cfg.Token != "" {
		cfg.Options = append(cfg.Options, wire.BearerToken(cfg.Token))
	}
	return &Client{cfg: cfg, leader: NewLeaderGuess(cfg.Endpoints[0]),
		metadata: map[string]metadatav1connect.MetadataServiceClient{},
		quorum:   map[string]metadatav1connect.QuorumServiceClient{}}, nil
}

// EndpointsFromServices reads the controllers' URLs from a services.json.
func EndpointsFromServices(path string) ([]string, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var s struct {
		Services struct {
			MetadataServices []struct {
				Host string `json:"host"`
				Port int    `json:"port"`
				URL  string `json:"url"`
			} `json:"metadata-services"`
		} `json:"services"`
	}
	if err := json.Unmarshal(data, &s); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	var out []string
	for _, m := range s.Services.MetadataServices {
		if m.URL != "" {
			out = append(out, m.URL)
		} else {
			out = append(out, fmt.Sprintf("http://%s:%d", m.Host, m.Port))
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%s names no metadata services", path)
	}
	return out, nil
}

// Endpoints are the configured endpoints.
func (c *Client) Endpoints() []string { return c.cfg.Endpoints }

func (c *Client) metadataClient(endpoint string) metadatav1connect.MetadataServiceClient {
	c.mu.Lock()
	defer c.mu.Unlock()
	m, ok := c.metadata[endpoint]
	if !ok {
		m = metadatav1connect.NewMetadataServiceClient(c.cfg.HTTPClient, endpoint, c.cfg.Options...)
		c.metadata[endpoint] = m
	}
	return m
}

func (c *Client) quorumClient(endpoint string) metadatav1connect.QuorumServiceClient {
	c.mu.Lock()
	defer c.mu.Unlock()
	q, ok := c.quorum[endpoint]
	if !ok {
		q = metadatav1connect.NewQuorumServiceClient(c.cfg.HTTPClient, endpoint, c.cfg.Options...)
		c.quorum[endpoint] = q
	}
	return q
}

// call runs attempt against the believed leader until it succeeds, fails
// for good, or ctx ends, as a Retrier decides. A write's request carries
// one request id through every attempt, so the write applies at most once.
// attempts, if not nil, counts the attempts sent.
func call[T any](ctx context.Context, c *Client, attempts *int, attempt func(ctx context.Context, endpoint string) (T, error)) (T, error) {
	retrier := NewRetrier(c.cfg.Endpoints, c.leader, c.cfg.BackoffMin, c.cfg.BackoffMax)
	var last error
	var zero T
	for {
		if attempts != nil {
			*attempts++
		}
		attemptCtx, cancel := context.WithTimeout(ctx, c.cfg.AttemptTimeout)
		v, err := attempt(attemptCtx, retrier.Endpoint())
		cancel()
		if err == nil {
			retrier.Succeeded()
			return v, nil
		}
		last = err
		// Told also when the context has ended: see Next.
		again, wait := retrier.Next(c.failureOf(err), func(n int64) int64 { return rand.Int64N(n + 1) })
		if !again {
			return zero, err // a definite answer, even at the deadline
		}
		if ctx.Err() != nil {
			break
		}
		if wait > 0 {
			select {
			case <-ctx.Done():
			case <-time.After(wait):
			}
		}
		if ctx.Err() != nil {
			break
		}
	}
	return zero, fmt.Errorf("%w among %d endpoints (%s): is the cluster up? last error: %v",
		ErrNoLeader, len(c.cfg.Endpoints), strings.Join(c.cfg.Endpoints, ", "), last)
}

func meta[Req, Resp any](ctx context.Context, c *Client, req *Req, method func(metadatav1connect.MetadataServiceClient, context.Context, *connect.Request[Req]) (*connect.Response[Resp], error)) (*Resp, error) {
	return call(ctx, c, nil, func(ctx context.Context, endpoint string) (*Resp, error) {
		resp, err := method(c.metadataClient(endpoint), ctx, connect.NewRequest(req))
		if err != nil {
			return nil, err
		}
		return resp.Msg, nil
	})
}

func quorum[Req, Resp any](ctx context.Context, c *Client, req *Req, method func(metadatav1connect.QuorumServiceClient, context.Context, *connect.Request[Req]) (*connect.Response[Resp], error)) (*Resp, error) {
	return call(ctx, c, nil, func(ctx context.Context, endpoint string) (*Resp, error) {
		resp, err := method(c.quorumClient(endpoint), ctx, connect.NewRequest(req))
		if err != nil {
			return nil, err
		}
		return resp.Msg, nil
	})
}

// RegisterBroker registers a broker.
func (c *Client) RegisterBroker(ctx context.Context, req *metadatav1.RegisterBrokerRequest) (*metadatav1.RegisterBrokerResponse, error) {
	return write(ctx, c, &req.RequestId, req, metadatav1connect.MetadataServiceClient.RegisterBroker)
}

// UnregisterBroker removes a broker.
func (c *Client) UnregisterBroker(ctx context.Context, req *metadatav1.UnregisterBrokerRequest) (*metadatav1.UnregisterBrokerResponse, error) {
	return write(ctx, c, &req.RequestId, req, metadatav1connect.MetadataServiceClient.UnregisterBroker)
}

// ListBrokers lists brokers.
func (c *Client) ListBrokers(ctx context.Context, req *metadatav1.ListBrokersRequest) (*metadatav1.ListBrokersResponse, error) {
	return meta(ctx, c, req, metadatav1connect.MetadataServiceClient.ListBrokers)
}

// DescribeBroker describes one broker.
func (c *Client) DescribeBroker(ctx context.Context, req *metadatav1.DescribeBrokerRequest) (*metadatav1.DescribeBrokerResponse, error) {
	return meta(ctx, c, req, metadatav1connect.MetadataServiceClient.DescribeBroker)
}

// StorageHeartbeat sends one heartbeat.
func (c *Client) StorageHeartbeat(ctx context.Context, req *metadatav1.StorageHeartbeatRequest) (*metadatav1.StorageHeartbeatResponse, error) {
	return meta(ctx, c, req, metadatav1connect.MetadataServiceClient.StorageHeartbeat)
}

// CreateTopic creates a topic.
func (c *Client) CreateTopic(ctx context.Context, req *metadatav1.CreateTopicRequest) (*metadatav1.CreateTopicResponse, error) {
	return write(ctx, c, &req.RequestId, req, metadatav1connect.MetadataServiceClient.CreateTopic)
}

// DeleteTopic deletes a topic.
func (c *Client) DeleteTopic(ctx context.Context, req *metadatav1.DeleteTopicRequest) (*metadatav1.DeleteTopicResponse, error) {
	return write(ctx, c, &req.RequestId, req, metadatav1connect.MetadataServiceClient.DeleteTopic)
}

// CreateTopics creates many topics in one request (see the RPC). A dry run
// (ValidateOnly) writes nothing, so it needs no session.
func (c *Client) CreateTopics(ctx context.Context, req *metadatav1.CreateTopicsRequest) (*metadatav1.CreateTopicsResponse, error) {
	if req.GetValidateOnly() {
		return meta(ctx, c, req, metadatav1connect.MetadataServiceClient.CreateTopics)
	}
	return write(ctx, c, &req.RequestId, req, metadatav1connect.MetadataServiceClient.CreateTopics)
}

// DeleteTopics deletes many topics in one request, as CreateTopics.
func (c *Client) DeleteTopics(ctx context.Context, req *metadatav1.DeleteTopicsRequest) (*metadatav1.DeleteTopicsResponse, error) {
	if req.GetValidateOnly() {
		return meta(ctx, c, req, metadatav1connect.MetadataServiceClient.DeleteTopics)
	}
	return write(ctx, c, &req.RequestId, req, metadatav1connect.MetadataServiceClient.DeleteTopics)
}

// IncrementalAlterConfigs changes configs of topics and of the cluster's
// defaults; a dry run (ValidateOnly) needs no session.
func (c *Client) IncrementalAlterConfigs(ctx context.Context, req *metadatav1.IncrementalAlterConfigsRequest) (*metadatav1.IncrementalAlterConfigsResponse, error) {
	if req.GetValidateOnly() {
		return meta(ctx, c, req, metadatav1connect.MetadataServiceClient.IncrementalAlterConfigs)
	}
	return write(ctx, c, &req.RequestId, req, metadatav1connect.MetadataServiceClient.IncrementalAlterConfigs)
}

// DescribeConfigs describes configs with their sources.
func (c *Client) DescribeConfigs(ctx context.Context, req *metadatav1.DescribeConfigsRequest) (*metadatav1.DescribeConfigsResponse, error) {
	return meta(ctx, c, req, metadatav1connect.MetadataServiceClient.DescribeConfigs)
}

// AlterPartitionReassignments moves partitions to target replica lists.
func (c *Client) AlterPartitionReassignments(ctx context.Context, req *metadatav1.AlterPartitionReassignmentsRequest) (*metadatav1.AlterPartitionReassignmentsResponse, error) {
	return write(ctx, c, &req.RequestId, req, metadatav1connect.MetadataServiceClient.AlterPartitionReassignments)
}

// ListPartitionReassignments lists the reassignments in progress.
func (c *Client) ListPartitionReassignments(ctx context.Context, req *metadatav1.ListPartitionReassignmentsRequest) (*metadatav1.ListPartitionReassignmentsResponse, error) {
	return meta(ctx, c, req, metadatav1connect.MetadataServiceClient.ListPartitionReassignments)
}

// Rebalance plans a balancing of the cluster and, unless DryRun, runs it.
func (c *Client) Rebalance(ctx context.Context, req *metadatav1.RebalanceRequest) (*metadatav1.RebalanceResponse, error) {
	if req.GetDryRun() {
		return meta(ctx, c, req, metadatav1connect.MetadataServiceClient.Rebalance)
	}
	return write(ctx, c, &req.RequestId, req, metadatav1connect.MetadataServiceClient.Rebalance)
}

// DescribeBalance is the progress of the last balancing plan.
func (c *Client) DescribeBalance(ctx context.Context, req *metadatav1.DescribeBalanceRequest) (*metadatav1.DescribeBalanceResponse, error) {
	return meta(ctx, c, req, metadatav1connect.MetadataServiceClient.DescribeBalance)
}

// ListTopics lists topics.
func (c *Client) ListTopics(ctx context.Context, req *metadatav1.ListTopicsRequest) (*metadatav1.ListTopicsResponse, error) {
	return meta(ctx, c, req, metadatav1connect.MetadataServiceClient.ListTopics)
}

// DescribeTopic describes a topic and its partitions.
func (c *Client) DescribeTopic(ctx context.Context, req *metadatav1.DescribeTopicRequest) (*metadatav1.DescribeTopicResponse, error) {
	return meta(ctx, c, req, metadatav1connect.MetadataServiceClient.DescribeTopic)
}

// CreatePartitions grows a topic.
func (c *Client) CreatePartitions(ctx context.Context, req *metadatav1.CreatePartitionsRequest) (*metadatav1.CreatePartitionsResponse, error) {
	return write(ctx, c, &req.RequestId, req, metadatav1connect.MetadataServiceClient.CreatePartitions)
}

// AlterPartition changes a partition's ISR as its leader.
func (c *Client) AlterPartition(ctx context.Context, req *metadatav1.AlterPartitionRequest) (*metadatav1.AlterPartitionResponse, error) {
	return write(ctx, c, &req.RequestId, req, metadatav1connect.MetadataServiceClient.AlterPartition)
}

// ElectLeaders runs a preferred leader election.
func (c *Client) ElectLeaders(ctx context.Context, req *metadatav1.ElectLeadersRequest) (*metadatav1.ElectLeadersResponse, error) {
	return write(ctx, c, &req.RequestId, req, metadatav1connect.MetadataServiceClient.ElectLeaders)
}

// GetClusterMetadata returns the whole metadata and its version.
func (c *Client) GetClusterMetadata(ctx context.Context, req *metadatav1.GetClusterMetadataRequest) (*metadatav1.GetClusterMetadataResponse, error) {
	return meta(ctx, c, req, metadatav1connect.MetadataServiceClient.GetClusterMetadata)
}

// DescribeQuorum describes the controller quorum, as the leader sees it.
func (c *Client) DescribeQuorum(ctx context.Context) (*metadatav1.DescribeQuorumResponse, error) {
	return quorum(ctx, c, &metadatav1.DescribeQuorumRequest{}, metadatav1connect.QuorumServiceClient.DescribeQuorum)
}

// DescribeQuorumFromLeader is DescribeQuorum with the members' match
// index and lag, which only the leader knows: when a follower answered, it
// asks the leader it names. If the leader cannot be asked, the follower's
// answer is returned, with ProgressKnown false.
func (c *Client) DescribeQuorumFromLeader(ctx context.Context) (*metadatav1.DescribeQuorumResponse, error) {
	resp, err := c.DescribeQuorum(ctx)
	if err != nil || resp.GetProgressKnown() || resp.GetLeaderId() == 0 {
		return resp, err
	}
	for _, m := range resp.GetMembers() {
		if m.GetNodeId() == resp.GetLeaderId() && m.GetUrl() != "" {
			if led, err := c.DescribeQuorumAt(ctx, m.GetUrl()); err == nil && led.GetProgressKnown() {
				return led, nil
			}
		}
	}
	return resp, nil
}

// DescribeQuorumAt asks one endpoint for its own view of the quorum.
func (c *Client) DescribeQuorumAt(ctx context.Context, endpoint string) (*metadatav1.DescribeQuorumResponse, error) {
	if c.cfg.TLS != nil {
		endpoint = wire.HTTPSURL(endpoint)
	}
	resp, err := c.quorumClient(endpoint).DescribeQuorum(ctx, connect.NewRequest(&metadatav1.DescribeQuorumRequest{}))
	if err != nil {
		return nil, err
	}
	return resp.Msg, nil
}

// ListTopicsAt lists the topics one controller holds, from its own
// applied state (a stale read: no leader, no retries elsewhere): what an
// operator checks when asking whether every controller caught up.
func (c *Client) ListTopicsAt(ctx context.Context, endpoint string) (*metadatav1.ListTopicsResponse, error) {
	if c.cfg.TLS != nil {
		endpoint = wire.HTTPSURL(endpoint)
	}
	resp, err := c.metadataClient(endpoint).ListTopics(ctx, connect.NewRequest(&metadatav1.ListTopicsRequest{AllowStale: true}))
	if err != nil {
		return nil, err
	}
	return resp.Msg, nil
}

// DescribeBrokerSessions is the active controller's view of each broker:
// heartbeat age, the version its storage service holds, push lag.
func (c *Client) DescribeBrokerSessions(ctx context.Context) (*metadatav1.DescribeBrokerSessionsResponse, error) {
	return meta(ctx, c, &metadatav1.DescribeBrokerSessionsRequest{}, metadatav1connect.MetadataServiceClient.DescribeBrokerSessions)
}

// AddVoter adds a voter.
func (c *Client) AddVoter(ctx context.Context, req *metadatav1.AddVoterRequest) (*metadatav1.AddVoterResponse, error) {
	return quorum(ctx, c, req, metadatav1connect.QuorumServiceClient.AddVoter)
}

// RemoveVoter removes a voter (or learner).
func (c *Client) RemoveVoter(ctx context.Context, req *metadatav1.RemoveVoterRequest) (*metadatav1.RemoveVoterResponse, error) {
	return quorum(ctx, c, req, metadatav1connect.QuorumServiceClient.RemoveVoter)
}

// AddLearner adds a learner.
func (c *Client) AddLearner(ctx context.Context, req *metadatav1.AddLearnerRequest) (*metadatav1.AddLearnerResponse, error) {
	return quorum(ctx, c, req, metadatav1connect.QuorumServiceClient.AddLearner)
}

// PromoteLearner makes a learner a voter.
func (c *Client) PromoteLearner(ctx context.Context, req *metadatav1.PromoteLearnerRequest) (*metadatav1.PromoteLearnerResponse, error) {
	return quorum(ctx, c, req, metadatav1connect.QuorumServiceClient.PromoteLearner)
}

// TransferLeader moves leadership.
func (c *Client) TransferLeader(ctx context.Context, req *metadatav1.TransferLeaderRequest) (*metadatav1.TransferLeaderResponse, error) {
	return quorum(ctx, c, req, metadatav1connect.QuorumServiceClient.TransferLeader)
}

// Snapshot takes a snapshot on the controller that answers (the leader).
func (c *Client) Snapshot(ctx context.Context) (*metadatav1.SnapshotResponse, error) {
	return quorum(ctx, c, &metadatav1.SnapshotRequest{}, metadatav1connect.QuorumServiceClient.Snapshot)
}

// Watch streams metadata changes after sinceVersion to fn until ctx ends
// or fn returns an error. It reconnects (to any endpoint) after a broken
// stream, resuming from the last version seen.
func (c *Client) Watch(ctx context.Context, sinceVersion int64, fn func(*metadatav1.WatchMetadataResponse) error) error {
	endpoint := c.leader.Endpoint()
	backoff := c.cfg.BackoffMin
	for ctx.Err() == nil {
		stream, err := c.metadataClient(endpoint).WatchMetadata(ctx, connect.NewRequest(&metadatav1.WatchMetadataRequest{SinceVersion: sinceVersion}))
		if err == nil {
			for stream.Receive() {
				backoff = c.cfg.BackoffMin
				update := stream.Msg()
				if !WatchAdvances(update, sinceVersion) {
					// From a controller behind this watcher (or a delta
					// from elsewhere): never go back, never skip.
					continue
				}
				if d := update.GetDelta(); d != nil {
					sinceVersion = d.GetToVersion()
				} else {
					sinceVersion = update.GetFullState().GetMetadataVersion()
				}
				if err := fn(update); err != nil {
					_ = stream.Close()
					return err
				}
			}
			_ = stream.Close()
		}
		endpoint = nextEndpoint(c.cfg.Endpoints, endpoint)
		select {
		case <-ctx.Done():
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, c.cfg.BackoffMax)
	}
	return nil
}

// WatchAdvances says whether a watch update moves a watcher at version since
// forward: a delta from exactly since, or a full state newer than since
// (any full state for a watcher that holds nothing yet).
func WatchAdvances(update *metadatav1.WatchMetadataResponse, since int64) bool {
	if d := update.GetDelta(); d != nil {
		return d.GetFromVersion() == since && d.GetToVersion() > since
	}
	if full := update.GetFullState(); full != nil {
		return full.GetMetadataVersion() > since || since == 0
	}
	return false
}

// ServerVersion asks the controllers, in endpoint order, for their build
// (wire.VersionPath) and returns the first answer with the endpoint that
// gave it.
func (c *Client) ServerVersion(ctx context.Context) (wire.BuildInfo, string, error) {
	var last error
	for _, endpoint := range c.cfg.Endpoints {
		build, err := c.serverVersion(ctx, endpoint)
		if err == nil {
			return build, endpoint, nil
		}
		last = err
	}
	return wire.BuildInfo{}, "", fmt.Errorf("no controller told its version: %w", last)
}

func (c *Client) serverVersion(ctx context.Context, endpoint string) (wire.BuildInfo, error) {
	ctx, cancel := context.WithTimeout(ctx, c.cfg.AttemptTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, endpoint+wire.VersionPath, nil)
	if err != nil {
		return wire.BuildInfo{}, err
	}
	if c.cfg.Token != "" {
		req.Header.Set("Authorization", "Bearer "+c.cfg.Token)
	}
	resp, err := c.cfg.HTTPClient.Do(req)
	if err != nil {
		return wire.BuildInfo{}, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return wire.BuildInfo{}, fmt.Errorf("%s%s: HTTP %d", endpoint, wire.VersionPath, resp.StatusCode)
	}
	var build wire.BuildInfo
	if err := json.NewDecoder(io.LimitReader(resp.Body, 64<<10)).Decode(&build); err != nil {
		return wire.BuildInfo{}, fmt.Errorf("%s%s: %w", endpoint, wire.VersionPath, err)
	}
	return build, nil
}

// BackupPath is where a controller serves a consistent backup of the
// metadata (GET; an admin's token when authentication is on).
const BackupPath = "/api/v1/metadata/quorum/snapshot/data"

// SaveBackup downloads a consistent backup of the metadata from the first
// controller that serves one (any controller can: it takes it after a
// linearizable read) and returns the file with the endpoint that served it.
func (c *Client) SaveBackup(ctx context.Context) ([]byte, string, error) {
	var last error
	for _, endpoint := range c.cfg.Endpoints {
		file, err := c.saveBackup(ctx, endpoint)
		if err == nil {
			return file, endpoint, nil
		}
		last = err
	}
	return nil, "", fmt.Errorf("no controller served a backup: %w", last)
}

func (c *Client) saveBackup(ctx context.Context, endpoint string) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, endpoint+BackupPath, nil)
	if err != nil {
		return nil, err
	}
	if c.cfg.Token != "" {
		req.Header.Set("Authorization", "Bearer "+c.cfg.Token)
	}
	resp, err := c.cfg.HTTPClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("%s: reading the backup: %w", endpoint, err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%s: HTTP %d: %s", endpoint, resp.StatusCode, strings.TrimSpace(string(body)))
	}
	return body, nil
}
