package rpc

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dmq-project/metadata/node"
	"github.com/dmq-project/metadata/node/runner"
	"github.com/dmq-project/metadata/rpc/peer"
	"github.com/dmq-project/metadata/storage"
	"github.com/dmq-project/metadata/wire"
)

// IdentityPath is where every controller says who it is, from the moment
// its directory is formatted, before its node runs: the founding handshake
// (see node.DecideFounding) asks it of every founding peer. Its admission
// is the peer transport's: the cluster's certificate under TLS, a
// controller's token when authentication is on, and the caller's cluster
// id (the Dmq-Cluster-Id header) when it sends one.
const IdentityPath = "/internal/v1/identity"

// InitialClusterState says how a controller whose store holds no Raft
// state starts (metadata.initial-cluster-state).
type InitialClusterState string

const (
	// ClusterStateAuto (or empty): the founding handshake. The controller
	// founds the cluster once every founding peer has answered with its
	// directory and none has founded (or a founded peer names this
	// directory among its founding voters); it waits to be added if the
	// cluster was founded without this directory.
	ClusterStateAuto InitialClusterState = "auto"
	// ClusterStateNew founds at once without asking the peers. Their
	// directories are then not recorded: a controller whose directory is
	// lost later is not recognised. For a founding peer gone for good.
	ClusterStateNew InitialClusterState = "new"
	// ClusterStateExisting never founds: the controller waits to be added
	// to a running cluster (as Join).
	ClusterStateExisting InitialClusterState = "existing"
)

// ParseInitialClusterState reads a metadata.initial-cluster-state value.
func ParseInitialClusterState(s string) (InitialClusterState, error) {
	switch v := InitialClusterState(strings.ToLower(strings.TrimSpace(s))); v {
	case "", ClusterStateAuto:
		return ClusterStateAuto, nil
	case ClusterStateNew, ClusterStateExisting:
		return v, nil
	}
	return "", fmt.Errorf("initial cluster state %q: want auto, new or existing", s)
}

// Identity is what IdentityPath answers, in JSON.
type Identity struct {
	ClusterID    string      `json:"clusterId"`
	ControllerID uint64      `json:"controllerId"`
	DirectoryID  DirectoryID `json:"directoryId"`
	// State is "formatted" (deciding whether to found), "waiting" (running
	// without a configuration, waiting to be added) or "founded" (its
	// store holds the cluster's state).
	State   string `json:"state"`
	Founded bool   `json:"founded"`
	// MayVote says whether the membership lets this directory vote.
	MayVote bool `json:"mayVote"`
	// FoundingVoters are the voters the cluster was founded with, each
	// with its directory, when this controller knows them (it founded, or
	// its snapshot is still the founding one).
	FoundingVoters []IdentityMember `json:"foundingVoters,omitempty"`
	// Members is the current membership, with directories, as this
	// controller knows it.
	Members []IdentityMember `json:"members,omitempty"`
	// Error says why a request was refused (with the identity, so that the
	// caller can name both clusters).
	Error string `json:"error,omitempty"`
}

// IdentityMember is a member or founding voter of Identity.
type IdentityMember struct {
	ID          uint64      `json:"id"`
	URL         string      `json:"url,omitempty"`
	DirectoryID DirectoryID `json:"directoryId"`
	Learner     bool        `json:"learner,omitempty"`
}

// DirectoryID is a directory id, in JSON a hex string as the logs print
// it ("0": not recorded).
type DirectoryID uint64

func (d DirectoryID) MarshalJSON() ([]byte, error) {
	return json.Marshal(strconv.FormatUint(uint64(d), 16))
}

func (d *DirectoryID) UnmarshalJSON(data []byte) error {
	var s string
	if err := json.Unmarshal(data, &s); err != nil {
		return fmt.Errorf("a directory id is a hex string: %w", err)
	}
	v, err := strconv.ParseUint(s, 16, 64)
	if err != nil {
		return fmt.Errorf("directory id %q: %w", s, err)
	}
	*d = DirectoryID(v)
	return nil
}

func identityMembers(peers []node.Peer) []IdentityMember {
	out := make([]IdentityMember, 0, len(peers))
	for _, p := range peers {
		out = append(out, IdentityMember{ID: p.ID, URL: p.URL, DirectoryID: DirectoryID(p.DirectoryID)})
	}
	return out
}

func peersOf(members []IdentityMember) []node.Peer {
	if members == nil {
		return nil
	}
	out := make([]node.Peer, 0, len(members))
	for _, m := range members {
		out = append(out, node.Peer{ID: m.ID, URL: m.URL, DirectoryID: uint64(m.DirectoryID)})
	}
	return out
}

// identityService serves IdentityPath: what the directory is, and what
// the controller has made of it so far.
type identityService struct {
	identity storage.Identity

	mu       sync.Mutex
	founding []node.Peer
	runner   *runner.Runner
}

// running records the node's runner (the answer then comes from the node)
// and the founding voters, if known.
func (s *identityService) running(r *runner.Runner, founding []node.Peer) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.runner, s.founding = r, founding
}

// identityTimeout bounds the node's answer to an identity request.
const identityTimeout = 2 * time.Second

func (s *identityService) describe(ctx context.Context) (Identity, error) {
	s.mu.Lock()
	r, founding := s.runner, s.founding
	s.mu.Unlock()
	out := Identity{ClusterID: s.identity.ClusterID, ControllerID: s.identity.ControllerID,
		DirectoryID: DirectoryID(s.identity.DirectoryID), State: node.PeerFormatted.String()}
	if r == nil {
		return out, nil
	}
	ctx, cancel := context.WithTimeout(ctx, identityTimeout)
	defer cancel()
	st, err := runner.Call(ctx, r, func(n *node.Node, done func(node.Status)) { done(n.Status()) })
	if err != nil {
		return out, err
	}
	out.State, out.MayVote = node.PeerWaiting.String(), st.MayVote
	for _, m := range st.Members {
		out.Members = append(out.Members, IdentityMember{ID: m.ID, URL: m.URL, DirectoryID: DirectoryID(m.DirectoryID), Learner: m.Learner})
		if !m.Learner {
			out.Founded = true
		}
	}
	if out.Founded {
		out.State = node.PeerFounded.String()
	}
	if founding != nil {
		out.FoundingVoters = identityMembers(founding)
	}
	return out, nil
}

// handler serves IdentityPath; admit wraps it with the peer transport's
// admission.
func (s *identityService) handler(admit func(http.Handler) http.Handler, refusals *peer.Refusals) http.Handler {
	return admit(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet {
			http.Error(w, "GET only", http.StatusMethodNotAllowed)
			return
		}
		if cluster := r.Header.Get(peer.HeaderClusterID); cluster != "" && cluster != s.identity.ClusterID {
			err := fmt.Errorf("controller %d is in cluster %q, not %q", s.identity.ControllerID, s.identity.ClusterID, cluster)
			refusals.RefuseRequest(peer.RefusedCluster, r, err)
			// The refusal carries this controller's cluster, so that the
			// caller's error names both.
			writeIdentity(w, http.StatusForbidden, Identity{ClusterID: s.identity.ClusterID, ControllerID: s.identity.ControllerID, Error: err.Error()})
			return
		}
		id, err := s.describe(r.Context())
		if err != nil {
			http.Error(w, fmt.Sprintf("controller %d could not describe itself: %v", s.identity.ControllerID, err), http.StatusServiceUnavailable)
			return
		}
		writeIdentity(w, http.StatusOK, id)
	}))
}

func writeIdentity(w http.ResponseWriter, status int, id Identity) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(id)
}

// gate serves the identity from the start, and every other route once the
// node runs (503 until then): the listener must answer the founding
// handshake before the node exists, and the rest of the API needs the
// node.
type gate struct {
	self     uint64
	identity http.Handler
	api      atomic.Pointer[http.Handler]
}

func (g *gate) open(api http.Handler) { g.api.Store(&api) }

func (g *gate) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path == IdentityPath {
		g.identity.ServeHTTP(w, r)
		return
	}
	if api := g.api.Load(); api != nil {
		(*api).ServeHTTP(w, r)
		return
	}
	w.Header().Set("Retry-After", "1")
	http.Error(w, fmt.Sprintf("controller %d is starting: it is deciding with its founding peers whether to found the cluster (%s)", g.self, IdentityPath),
		http.StatusServiceUnavailable)
}

// Founding handshake timings: peers are asked again after a backoff
// between the bounds; who is awaited is logged every foundingLogInterval.
const (
	foundingBackoffMin  = 50 * time.Millisecond
	foundingBackoffMax  = time.Second
	foundingLogInterval = 5 * time.Second
	foundingAskTimeout  = 2 * time.Second
)

// foundingAsker asks founding peers for their identity.
type foundingAsker struct {
	self      storage.Identity
	client    *http.Client
	https     bool
	peerToken string
}

// ask asks one peer. A peer that refuses for being of another cluster
// answers with its cluster, so that DecideFounding names both.
func (a foundingAsker) ask(ctx context.Context, p node.Peer) (node.FoundingAnswer, error) {
	url := p.URL
	if a.https {
		url = wire.HTTPSURL(url)
	}
	ctx, cancel := context.WithTimeout(ctx, foundingAskTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimSuffix(url, "/")+IdentityPath, nil)
	if err != nil {
		return node.FoundingAnswer{}, err
	}
	req.Header.Set(peer.HeaderClusterID, a.self.ClusterID)
	req.Header.Set(peer.HeaderFromNodeID, strconv.FormatUint(a.self.ControllerID, 10))
	if a.peerToken != "" {
		req.Header.Set("Authorization", "Bearer "+a.peerToken)
	}
	resp, err := a.client.Do(req)
	if err != nil {
		return node.FoundingAnswer{}, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return node.FoundingAnswer{}, err
	}
	var id Identity
	decodeErr := json.Unmarshal(body, &id)
	switch {
	case resp.StatusCode == http.StatusForbidden && decodeErr == nil && id.ClusterID != "" && id.ClusterID != a.self.ClusterID:
		return node.FoundingAnswer{ClusterID: id.ClusterID, ControllerID: id.ControllerID}, nil
	case resp.StatusCode != http.StatusOK:
		return node.FoundingAnswer{}, fmt.Errorf("%s: %s", resp.Status, strings.TrimSpace(string(body)))
	case decodeErr != nil:
		return node.FoundingAnswer{}, fmt.Errorf("the identity does not decode: %w", decodeErr)
	}
	answer := node.FoundingAnswer{ClusterID: id.ClusterID, ControllerID: id.ControllerID, DirectoryID: uint64(id.DirectoryID),
		FoundingVoters: peersOf(id.FoundingVoters), Members: peersOf(id.Members)}
	switch id.State {
	case node.PeerFormatted.String():
		answer.State = node.PeerFormatted
	case node.PeerWaiting.String():
		answer.State = node.PeerWaiting
	case node.PeerFounded.String():
		answer.State = node.PeerFounded
	default:
		return node.FoundingAnswer{}, fmt.Errorf("unknown identity state %q", id.State)
	}
	return answer, nil
}

// awaitFounding asks the founding peers until DecideFounding settles it
// (Found or WaitToBeAdded), ctx ends, or a peer is misconfigured.
func (a foundingAsker) awaitFounding(ctx context.Context, peers []node.Peer, logger *slog.Logger) (node.FoundingDecision, error) {
	started := time.Now()
	var lastLogged time.Time
	backoff := foundingBackoffMin
	for {
		answers, failures := a.askAll(ctx, peers)
		d, err := node.DecideFounding(a.self, peers, answers)
		if err != nil || d.Outcome == node.WaitToBeAdded {
			return d, err
		}
		if d.Outcome == node.Found {
			// Confirmed by a round asked after this one was complete, or
			// decided again: see node.ConfirmFounding.
			if second, _ := a.askAll(ctx, peers); node.ConfirmFounding(a.self, d, second) {
				return d, nil
			}
			d = node.FoundingDecision{Outcome: node.KeepWaiting, Reason: "a second round of answers did not confirm the founding voters"}
		}
		if time.Since(lastLogged) >= foundingLogInterval {
			// The first time at info (peers started together answer
			// within moments), then louder.
			level := slog.LevelWarn
			if lastLogged.IsZero() {
				level = slog.LevelInfo
			}
			lastLogged = time.Now()
			var unanswered []string
			for _, id := range d.WaitingFor {
				unanswered = append(unanswered, fmt.Sprintf("%d (%s)", id, failures[id]))
			}
			logger.Log(ctx, level, "waiting for the founding peers before founding the cluster (metadata.initial-cluster-state new founds without them)",
				"waited", time.Since(started).Round(time.Millisecond).String(), "reason", d.Reason, "unanswered", unanswered)
		}
		select {
		case <-ctx.Done():
			return d, fmt.Errorf("stopped while waiting for the founding peers %v: %w", d.WaitingFor, ctx.Err())
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, foundingBackoffMax)
	}
}

// askAll asks every other founding peer at once and waits for every
// answer or failure.
func (a foundingAsker) askAll(ctx context.Context, peers []node.Peer) (map[uint64]node.FoundingAnswer, map[uint64]string) {
	answers := map[uint64]node.FoundingAnswer{}
	failures := map[uint64]string{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, p := range peers {
		if p.ID == a.self.ControllerID {
			continue
		}
		wg.Go(func() {
			answer, err := a.ask(ctx, p)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				failures[p.ID] = err.Error()
				return
			}
			answers[p.ID] = answer
		})
	}
	wg.Wait()
	return answers, failures
}
