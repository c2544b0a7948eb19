package rpc_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"testing"
	"time"

	"connectrpc.com/connect"
	metadatav1 "github.com/dmq-project/metadata/gen/dmq/metadata/v1"
	"github.com/dmq-project/metadata/gen/dmq/metadata/v1/metadatav1connect"
	"github.com/dmq-project/metadata/node"
	"github.com/dmq-project/metadata/rpc"
	"github.com/dmq-project/metadata/rpc/rpctest"
	"github.com/dmq-project/metadata/wire"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// fetchIdentity asks a controller who it is, as an operator would (no
// cluster header): the status and, on 200, the identity.
func fetchIdentity(url string, header http.Header) (int, rpc.Identity, error) {
	req, err := http.NewRequest(http.MethodGet, url+rpc.IdentityPath, nil)
	if err != nil {
		return 0, rpc.Identity{}, err
	}
	for k, v := range header {
		req.Header[k] = v
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, rpc.Identity{}, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, rpc.Identity{}, err
	}
	var id rpc.Identity
	if resp.StatusCode == http.StatusOK || resp.Header.Get("Content-Type") == "application/json" {
		if err := json.Unmarshal(body, &id); err != nil {
			return resp.StatusCode, id, fmt.Errorf("%s: %w", body, err)
		}
	} else {
		id.Error = string(body)
	}
	return resp.StatusCode, id, nil
}

func identityOf(t *testing.T, tc *rpctest.Controller) rpc.Identity {
	t.Helper()
	status, id, err := fetchIdentity(tc.URL(), nil)
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, status, id.Error)
	return id
}

func quorumAt(t *testing.T, url string) *metadatav1.DescribeQuorumResponse {
	t.Helper()
	resp, err := metadatav1connect.NewQuorumServiceClient(wire.NewHTTPClient(nil), url).DescribeQuorum(context.Background(),
		connect.NewRequest(&metadatav1.DescribeQuorumRequest{}))
	require.NoError(t, err)
	return resp.Msg
}

// voterKeys are members as (id, directory), ignoring URLs.
func voterKeys(members []rpc.IdentityMember) []string {
	var out []string
	for _, m := range members {
		out = append(out, fmt.Sprintf("%d:%x", m.ID, uint64(m.DirectoryID)))
	}
	return out
}

// TestFoundersRecordEveryDirectory: controllers started together found
// one cluster whose voters name every founder's own directory, on every
// founder (they used to found with no directory recorded, so a wiped
// controller could vote as the voter it replaced).
func TestFoundersRecordEveryDirectory(t *testing.T) {
	cluster := rpctest.Start(t, 3, nil)
	cluster.WaitLeader(t)
	var want []string
	for _, tc := range cluster {
		id := identityOf(t, tc)
		require.NotZero(t, id.DirectoryID)
		want = append(want, fmt.Sprintf("%d:%x", tc.ID, uint64(id.DirectoryID)))
	}
	for _, tc := range cluster {
		id := identityOf(t, tc)
		assert.Equal(t, "founded", id.State, "controller %d", tc.ID)
		assert.True(t, id.MayVote, "controller %d", tc.ID)
		assert.Equal(t, want, voterKeys(id.FoundingVoters), "controller %d founded with every founder's directory", tc.ID)
		assert.Equal(t, want, voterKeys(id.Members), "controller %d", tc.ID)
	}
	// DescribeQuorum names each member's directory too.
	var described []string
	for _, m := range quorumAt(t, cluster[0].URL()).GetMembers() {
		described = append(described, fmt.Sprintf("%d:%x", m.GetNodeId(), m.GetDirectoryId()))
	}
	assert.ElementsMatch(t, want, described)
}

// TestWipedControllerDoesNotFoundAgain: a write is acknowledged by two of
// three controllers while the third (C) is down; one of the two (B) loses
// its data directory and the other (A) stops. B restarts under its id on
// an empty directory next to C. B must not found the cluster again: it
// would vote for C, whose log lacks the write, and the write would be
// lost. B waits to be added, never votes, and says why; the leader still
// names B's old directory; once A is back the write is there.
func TestWipedControllerDoesNotFoundAgain(t *testing.T) {
	cluster := rpctest.Start(t, 3, nil)
	a := cluster.WaitLeader(t)
	var b, c *rpctest.Controller
	for _, tc := range cluster {
		switch {
		case tc == a:
		case c == nil:
			c = tc
		default:
			b = tc
		}
	}
	oldB := identityOf(t, b).DirectoryID

	c.Stop(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	running := rpctest.Cluster{a, b}
	_, err := metadataClient(a.URL()).RegisterBroker(ctx, connect.NewRequest(&metadatav1.RegisterBrokerRequest{Id: 1, Host: "localhost", Port: 9092}))
	require.NoError(t, err)
	require.NoError(t, createWithRetry(ctx, running, &metadatav1.CreateTopicRequest{Name: "acknowledged", Partitions: 1, ReplicationFactor: 1,
		RequestId: &metadatav1.RequestId{ClientId: "wipe-test", SessionId: openSessionWithRetry(ctx, t, running), Sequence: 1}}))

	b.Stop(t)
	require.NoError(t, os.RemoveAll(b.Dir))
	a.Stop(t)
	c.Start(t)
	b.Start(t)

	// B settles (it waits to be added), or, founding again, lets C win an
	// election without the write.
	leaderOf := func(tcs ...*rpctest.Controller) uint64 {
		for _, tc := range tcs {
			resp, err := metadatav1connect.NewQuorumServiceClient(wire.NewHTTPClient(nil), tc.URL()).DescribeQuorum(ctx,
				connect.NewRequest(&metadatav1.DescribeQuorumRequest{}))
			if err == nil && resp.Msg.GetLeaderId() == tc.ID {
				return tc.ID
			}
		}
		return 0
	}
	require.Eventually(t, func() bool {
		if leaderOf(b, c) != 0 {
			return true
		}
		status, id, err := fetchIdentity(b.URL(), nil)
		return err == nil && status == http.StatusOK && id.State == "waiting"
	}, 15*time.Second, 20*time.Millisecond)
	require.Zero(t, leaderOf(b, c), "controller %d, whose log lacks the acknowledged write, was elected with the vote of controller %d, whose directory was wiped", c.ID, b.ID)

	wiped := identityOf(t, b)
	assert.NotEqual(t, oldB, wiped.DirectoryID, "the wiped directory was formatted again")
	assert.False(t, wiped.Founded)
	assert.False(t, wiped.MayVote, "the wiped controller may not vote")
	assert.Empty(t, quorumAt(t, b.URL()).GetMembers(), "the wiped controller has no configuration: it waits to be added")

	a.Start(t)
	leader := cluster.WaitLeader(t)
	require.NotEqual(t, b.ID, leader.ID)
	assert.Contains(t, voterKeys(identityOf(t, leader).Members), fmt.Sprintf("%d:%x", b.ID, uint64(oldB)),
		"the leader still names the old directory of controller %d", b.ID)

	// The acknowledged write survived (a linearizable read on the leader).
	var readErr error
	require.Eventually(t, func() bool {
		_, readErr = metadataClient(leader.URL()).DescribeTopic(ctx, connect.NewRequest(&metadatav1.DescribeTopicRequest{Name: "acknowledged"}))
		return readErr == nil || connect.CodeOf(readErr) == connect.CodeNotFound
	}, 15*time.Second, 20*time.Millisecond)
	require.NoError(t, readErr, "the acknowledged write was lost")
	assert.False(t, identityOf(t, b).MayVote, "the wiped controller still may not vote")
}

// startAlone starts one controller of a founding cluster in the
// background: StartController returns only once the founding handshake
// is settled, or ctx ends.
func startAlone(ctx context.Context, t *testing.T, cluster string, id uint64, peers []node.Peer, listener net.Listener) <-chan error {
	done := make(chan error, 1)
	dir := t.TempDir()
	go func() {
		c, err := rpc.StartController(ctx, rpc.ControllerConfig{
			Node:      node.Config{ID: id, ElectionTicks: 10, HeartbeatTicks: 1},
			ClusterID: cluster, DataDir: dir, Peers: peers, Tick: 20 * time.Millisecond, Listener: listener,
		})
		if err == nil {
			err = c.Stop()
			if err == nil {
				err = fmt.Errorf("controller %d started", id)
			}
		}
		done <- err
	}()
	return done
}

// TestFoundingWaitsForEveryPeer: a controller whose founding peer has not
// answered does not found the cluster: it tells who it is from the start,
// answers the API "starting", and says whom it waited for when stopped.
func TestFoundingWaitsForEveryPeer(t *testing.T) {
	listener, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	url := "http://" + listener.Addr().String()
	silent, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	silentURL := "http://" + silent.Addr().String()
	require.NoError(t, silent.Close())

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := startAlone(ctx, t, "test-cluster", 1, []node.Peer{{ID: 1, URL: url}, {ID: 2, URL: silentURL}}, listener)

	var id rpc.Identity
	require.Eventually(t, func() bool {
		status, got, err := fetchIdentity(url, nil)
		id = got
		return err == nil && status == http.StatusOK
	}, 10*time.Second, 20*time.Millisecond)
	assert.Equal(t, "formatted", id.State)
	assert.Equal(t, uint64(1), id.ControllerID)
	assert.NotZero(t, id.DirectoryID)
	status, body := getJSONOrText(t, url+"/api/v1/metadata/quorum")
	assert.Equal(t, http.StatusServiceUnavailable, status)
	assert.Contains(t, body, "starting")

	cancel()
	err = <-done
	require.Error(t, err)
	assert.Contains(t, err.Error(), "founding peers [2]")
}

func getJSONOrText(t *testing.T, url string) (int, string) {
	resp, err := http.Get(url)
	require.NoError(t, err)
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp.StatusCode, string(body)
}

// TestFoundingRefusesAPeerOfAnotherCluster: a founding peer that belongs
// to another cluster stops the start with an error naming both clusters.
func TestFoundingRefusesAPeerOfAnotherCluster(t *testing.T) {
	other := rpctest.Start(t, 1, func(c *rpctest.Controller) { c.ClusterID = "other-cluster" })
	listener, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	url := "http://" + listener.Addr().String()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	done := startAlone(ctx, t, "test-cluster", 2, []node.Peer{{ID: 1, URL: other[0].URL()}, {ID: 2, URL: url}}, listener)
	err = <-done
	require.Error(t, err)
	assert.Contains(t, err.Error(), `"other-cluster"`)
	assert.Contains(t, err.Error(), `"test-cluster"`)
	assert.NotContains(t, err.Error(), "deadline", "refused at once, not after waiting")
}

// TestIdentityAdmission: with authentication on, a controller's identity
// is for its peers only, as the Raft transport; a caller of another
// cluster is told which cluster this is.
func TestIdentityAdmission(t *testing.T) {
	authn := authenticator(t)
	cluster := rpctest.Start(t, 1, func(c *rpctest.Controller) {
		c.Security = rpc.Security{Auth: authn, PeerToken: controllerToken}
	})
	url := cluster[0].URL()
	bearer := func(token string) http.Header { return http.Header{"Authorization": {"Bearer " + token}} }

	status, _, err := fetchIdentity(url, nil)
	require.NoError(t, err)
	assert.Equal(t, http.StatusUnauthorized, status)
	status, _, err = fetchIdentity(url, bearer(consumerToken))
	require.NoError(t, err)
	assert.Equal(t, http.StatusForbidden, status)

	status, id, err := fetchIdentity(url, bearer(controllerToken))
	require.NoError(t, err)
	assert.Equal(t, http.StatusOK, status)
	assert.Equal(t, "founded", id.State)

	header := bearer(controllerToken)
	header.Set("Dmq-Cluster-Id", "another-cluster")
	status, id, err = fetchIdentity(url, header)
	require.NoError(t, err)
	assert.Equal(t, http.StatusForbidden, status)
	assert.Contains(t, id.Error, `"test-cluster"`)
	assert.Contains(t, id.Error, `"another-cluster"`)
}

// A controller added through the QuorumService is recorded with its data
// directory, which the leader asks it for: added without one (the API has
// no field for it), it could vote again after its directory was lost (found
// by review). A controller that cannot be reached is not added.
func TestAddedControllerIsRecordedWithItsDirectory(t *testing.T) {
	cluster := rpctest.Start(t, 1, nil)
	leader := cluster.WaitLeader(t)
	listener, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	joiner := &rpctest.Controller{ID: 2, Addr: listener.Addr().String(), Dir: t.TempDir(), Join: true, Peers: cluster[0].Peers}
	require.NoError(t, listener.Close())
	joiner.Start(t)
	t.Cleanup(func() { joiner.Stop(t) })
	_, joinerIdentity, err := fetchIdentity(joiner.URL(), nil)
	require.NoError(t, err)
	require.NotZero(t, joinerIdentity.DirectoryID)

	c := newClient(t, []string{leader.URL()}, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, err = c.AddLearner(ctx, &metadatav1.AddLearnerRequest{NodeId: 2, Url: joiner.URL()})
	require.NoError(t, err)
	_, leaderIdentity, err := fetchIdentity(leader.URL(), nil)
	require.NoError(t, err)
	var recorded rpc.DirectoryID
	for _, m := range leaderIdentity.Members {
		if m.ID == 2 {
			recorded = m.DirectoryID
		}
	}
	assert.Equal(t, joinerIdentity.DirectoryID, recorded, "the learner's directory is recorded")

	_, err = c.AddLearner(ctx, &metadatav1.AddLearnerRequest{NodeId: 3, Url: "http://127.0.0.1:1"})
	require.Error(t, err, "a controller that cannot be reached is not added")
}
