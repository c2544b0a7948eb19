package rpc_test

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"os"
	"strconv"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/dmq-project/metadata/client"
	metadatav1 "github.com/dmq-project/metadata/gen/dmq/metadata/v1"
	"github.com/dmq-project/metadata/gen/dmq/metadata/v1/metadatav1connect"
	raftv1 "github.com/dmq-project/metadata/gen/dmq/raft/v1"
	"github.com/dmq-project/metadata/gen/dmq/raft/v1/raftv1connect"
	"github.com/dmq-project/metadata/rpc/peer/peertest"
	"github.com/dmq-project/metadata/rpc/rpctest"
	"github.com/dmq-project/metadata/wire"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// tlsCluster starts count controllers with certificates from ca, which is
// also the cluster's (peer) CA; clientCA, if not nil, vouches for API
// clients' certificates.
func tlsCluster(t *testing.T, count int, ca, clientCA *rpctest.CA) rpctest.Cluster {
	return rpctest.Start(t, count, func(c *rpctest.Controller) {
		c.TLS = ca.ControllerTLS(t, fmt.Sprintf("controller-%d", c.ID))
		if clientCA != nil {
			c.TLS.ClientCAFile = clientCA.CertFile
		}
		c.ProbeTLS = ca.ClientTLS(t, rpctest.KeyPair{})
	})
}

// raftSend opens the peer transport as a peer would and sends an empty
// batch addressed to controller to: without the check of the caller's
// certificate, it would be accepted. The sender, 9, is never the receiver
// (a controller refuses a stream from itself).
func raftSend(ctx context.Context, tlsConfig *tls.Config, url string, to uint64) error {
	stream := raftv1connect.NewRaftTransportServiceClient(wire.NewHTTPClient(tlsConfig), url).Send(ctx)
	_ = stream.Send(&raftv1.SendRequest{ClusterId: "test-cluster", FromNodeId: 9, ToNodeId: to})
	_, err := stream.CloseAndReceive()
	return err
}

// TestTLS: with TLS on, every API answers over TLS (Connect, gRPC, REST)
// and nothing in cleartext; the Raft transport takes only callers with a
// certificate from the cluster's CA, even when other client certificates
// are accepted on the API.
func TestTLS(t *testing.T) {
	ca, clientCA := rpctest.NewCA(t, "cluster"), rpctest.NewCA(t, "clients")
	cluster := tlsCluster(t, 3, ca, clientCA)
	leader := cluster.WaitLeader(t)
	ctx := context.Background()
	trusting := ca.ClientTLS(t, rpctest.KeyPair{})

	// Clients may start from http:// URLs (services.json): with TLS set,
	// the client dials https and follows https leader hints.
	var httpURLs []string
	for _, c := range cluster {
		httpURLs = append(httpURLs, "http://"+c.Addr)
	}
	c := newClient(t, httpURLs, trusting)
	_, err := c.RegisterBroker(ctx, &metadatav1.RegisterBrokerRequest{Id: 1, Host: "localhost", Port: 9092})
	require.NoError(t, err)
	_, err = c.CreateTopic(ctx, &metadatav1.CreateTopicRequest{Name: "over-tls", Partitions: 2})
	require.NoError(t, err)

	grpc := metadatav1connect.NewMetadataServiceClient(wire.NewHTTPClient(trusting), leader.URL(), connect.WithGRPC())
	topic, err := grpc.DescribeTopic(ctx, connect.NewRequest(&metadatav1.DescribeTopicRequest{Name: "over-tls"}))
	require.NoError(t, err)
	assert.Len(t, topic.Msg.GetTopic().GetPartitions(), 2)

	rest := &http.Client{Transport: &http.Transport{TLSClientConfig: trusting.Clone(), ForceAttemptHTTP2: true}}
	resp, err := rest.Get(leader.URL() + "/api/v1/metadata/topics/over-tls/partitions")
	require.NoError(t, err)
	_ = resp.Body.Close()
	assert.Equal(t, http.StatusOK, resp.StatusCode)
	assert.Equal(t, 2, resp.ProtoMajor, "REST over TLS negotiates HTTP/2")

	_, err = metadataClient("http://"+leader.Addr).ListTopics(ctx, connect.NewRequest(&metadatav1.ListTopicsRequest{}))
	require.Error(t, err, "cleartext is not served")
	_, err = metadatav1connect.NewMetadataServiceClient(wire.NewHTTPClient(clientCA.ClientTLS(t, rpctest.KeyPair{})), leader.URL()).
		ListTopics(ctx, connect.NewRequest(&metadatav1.ListTopicsRequest{}))
	require.Error(t, err, "a client that does not trust the cluster's CA does not connect")

	clientPair := clientCA.Issue(t, "operator")
	withClientCert := ca.ClientTLS(t, clientPair)
	_, err = metadatav1connect.NewMetadataServiceClient(wire.NewHTTPClient(withClientCert), leader.URL()).
		ListTopics(ctx, connect.NewRequest(&metadatav1.ListTopicsRequest{}))
	require.NoError(t, err, "a client certificate from the client CA is accepted on the API")

	// The Raft transport.
	assert.Equal(t, connect.CodePermissionDenied, connect.CodeOf(raftSend(ctx, trusting, leader.URL(), leader.ID)),
		"no client certificate")
	assert.Equal(t, connect.CodePermissionDenied, connect.CodeOf(raftSend(ctx, withClientCert, leader.URL(), leader.ID)),
		"a client certificate that is not the cluster's")
	peerPair := ca.Issue(t, "controller-3-again")
	require.NoError(t, raftSend(ctx, ca.ClientTLS(t, peerPair), leader.URL(), leader.ID),
		"a certificate from the cluster's CA opens the transport")
	strangerCA := rpctest.NewCA(t, "stranger")
	strangerPair := strangerCA.Issue(t, "controller-3")
	require.Error(t, raftSend(ctx, ca.ClientTLS(t, strangerPair), leader.URL(), leader.ID),
		"a certificate from an unknown CA fails the handshake")

	// The same on the frame stream.
	frames := func(tlsConfig *tls.Config) int {
		status, _ := peertest.OpenFrames(t, leader.URL(), peertest.FramesRequest{Cluster: "test-cluster", From: "9", To: strconv.FormatUint(leader.ID, 10), TLS: tlsConfig})
		return status
	}
	assert.Equal(t, http.StatusForbidden, frames(trusting), "no client certificate")
	assert.Equal(t, http.StatusForbidden, frames(withClientCert), "a client certificate that is not the cluster's")
	assert.Equal(t, http.StatusSwitchingProtocols, frames(ca.ClientTLS(t, peerPair)), "a certificate from the cluster's CA")
	assert.Zero(t, frames(ca.ClientTLS(t, strangerPair)), "a certificate from an unknown CA fails the handshake")

	// A certificate that names its controller (CN controller-<id>) binds
	// the sender's id: controller 7 cannot send as controller 9.
	seventh := ca.ClientTLS(t, ca.Issue(t, "controller-7"))
	assert.Equal(t, connect.CodePermissionDenied, connect.CodeOf(raftSend(ctx, seventh, leader.URL(), leader.ID)),
		"a controller's certificate sending under another id")
	assert.Equal(t, http.StatusForbidden, frames(seventh), "the same on the frame stream")
	ninth := ca.ClientTLS(t, ca.Issue(t, "controller-9"))
	require.NoError(t, raftSend(ctx, ninth, leader.URL(), leader.ID), "its own id")
	assert.Equal(t, http.StatusSwitchingProtocols, frames(ninth))
}

// TestTLSRequireClientCert: with require-client-cert, a client without a
// certificate is refused at the handshake.
func TestTLSRequireClientCert(t *testing.T) {
	ca := rpctest.NewCA(t, "cluster")
	probe := ca.Issue(t, "probe")
	cluster := rpctest.Start(t, 1, func(c *rpctest.Controller) {
		c.TLS = ca.ControllerTLS(t, "controller-1")
		c.TLS.RequireClientCert = true
		c.ProbeTLS = ca.ClientTLS(t, probe)
	})
	leader := cluster.WaitLeader(t)
	list := func(cfg *tls.Config) error {
		_, err := metadatav1connect.NewMetadataServiceClient(wire.NewHTTPClient(cfg), leader.URL()).
			ListTopics(context.Background(), connect.NewRequest(&metadatav1.ListTopicsRequest{}))
		return err
	}
	require.Error(t, list(ca.ClientTLS(t, rpctest.KeyPair{})))
	require.NoError(t, list(ca.ClientTLS(t, probe)))
}

// TestControllerWithoutClusterCertificateCannotJoin: a controller whose
// certificate comes from another CA cannot even be added as a learner: the
// leader asks a controller it adds for its data directory over the
// cluster's mutual TLS, and the handshake fails. One with the cluster's
// certificate is added and catches up.
// The same controller holding a certificate of the cluster's CA catches
// up, which shows the test watches the right thing.
func TestControllerWithoutClusterCertificateCannotJoin(t *testing.T) {
	for _, tc := range []struct {
		name   string
		sameCA bool
	}{
		{"certificate from another CA", false},
		{"certificate from the cluster's CA", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ca := rpctest.NewCA(t, "cluster")
			cluster := tlsCluster(t, 3, ca, nil)
			trusting := ca.ClientTLS(t, rpctest.KeyPair{})
			leader := cluster.WaitLeader(t)
			ctx := context.Background()

			joinerCA := rpctest.NewCA(t, "stranger")
			if tc.sameCA {
				joinerCA = ca
			}
			listener, err := net.Listen("tcp", "127.0.0.1:0")
			require.NoError(t, err)
			joiner := &rpctest.Controller{ID: 4, Addr: listener.Addr().String(), Dir: t.TempDir(), Join: true, Peers: cluster[0].Peers,
				TLS: joinerCA.ControllerTLS(t, "controller-4")}
			require.NoError(t, listener.Close())
			joiner.Start(t)
			t.Cleanup(func() { joiner.Stop(t) })

			c := newClient(t, []string{leader.URL()}, trusting)
			_, err = c.AddLearner(ctx, &metadatav1.AddLearnerRequest{NodeId: 4, Url: "http://" + joiner.Addr})
			if !tc.sameCA {
				// The leader asks an added controller for its directory over
				// the cluster's mutual TLS: a stranger is not even added.
				require.Error(t, err, "a controller without the cluster's certificate was added")
				return
			}
			require.NoError(t, err)
			_, err = c.RegisterBroker(ctx, &metadatav1.RegisterBrokerRequest{Id: 1, Host: "localhost", Port: 9092})
			require.NoError(t, err)
			for i := range 20 {
				_, err := c.CreateTopic(ctx, &metadatav1.CreateTopicRequest{Name: fmt.Sprintf("t-%d", i), Partitions: 1})
				require.NoError(t, err)
			}
			clusterCommit := describeQuorum(t, leader.URL(), trusting).GetCommitIndex()
			joinerView := func() *metadatav1.DescribeQuorumResponse {
				return describeQuorum(t, joiner.URL(), joinerCA.ClientTLS(t, rpctest.KeyPair{}))
			}
			require.Eventually(t, func() bool {
				v := joinerView()
				return v.GetLeaderId() == leader.ID && v.GetAppliedIndex() >= clusterCommit
			}, 10*time.Second, 20*time.Millisecond)
		})
	}
}

func describeQuorum(t *testing.T, url string, cfg *tls.Config) *metadatav1.DescribeQuorumResponse {
	resp, err := metadatav1connect.NewQuorumServiceClient(wire.NewHTTPClient(cfg), url).
		DescribeQuorum(context.Background(), connect.NewRequest(&metadatav1.DescribeQuorumRequest{}))
	require.NoError(t, err)
	return resp.Msg
}

func newClient(t *testing.T, endpoints []string, cfg *tls.Config) *client.Client {
	c, err := client.New(client.Config{Endpoints: endpoints, TLS: cfg})
	require.NoError(t, err)
	return c
}

// TestTLSCertificateRotation: a controller serves a renewed certificate
// from the next handshake after its files change, without a restart, and
// keeps the last good one while the files are mid-rotation (unreadable).
func TestTLSCertificateRotation(t *testing.T) {
	ca := rpctest.NewCA(t, "cluster")
	cluster := tlsCluster(t, 1, ca, nil)
	leader := cluster.WaitLeader(t)
	servedName := func() string {
		conn, err := tls.Dial("tcp", leader.Addr, ca.ClientTLS(t, rpctest.KeyPair{}))
		require.NoError(t, err)
		defer conn.Close()
		return conn.ConnectionState().PeerCertificates[0].Subject.CommonName
	}
	require.Equal(t, "controller-1", servedName())

	renewed := ca.Issue(t, "controller-1-renewed")
	replace := func(from, to string, age time.Duration) {
		data, err := os.ReadFile(from)
		require.NoError(t, err)
		require.NoError(t, os.WriteFile(to, data, 0o600))
		later := time.Now().Add(age)
		require.NoError(t, os.Chtimes(to, later, later))
	}
	replace(renewed.CertFile, leader.TLS.CertFile, time.Second)
	replace(renewed.KeyFile, leader.TLS.KeyFile, time.Second)
	require.Equal(t, "controller-1-renewed", servedName())

	require.NoError(t, os.WriteFile(leader.TLS.CertFile, []byte("half-written"), 0o600))
	later := time.Now().Add(2 * time.Second)
	require.NoError(t, os.Chtimes(leader.TLS.CertFile, later, later))
	require.Equal(t, "controller-1-renewed", servedName(), "a broken rotation keeps the last good pair")
}
