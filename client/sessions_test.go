package client_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/dmq-project/metadata/client"
	metadatav1 "github.com/dmq-project/metadata/gen/dmq/metadata/v1"
	"github.com/dmq-project/metadata/gen/dmq/metadata/v1/metadatav1connect"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// scriptedController answers OpenSession with fresh sessions and
// CreateTopic from a script, recording the request ids it saw.
type scriptedController struct {
	metadatav1connect.UnimplementedMetadataServiceHandler
	timeoutMs int64
	answer    func(n int, id *metadatav1.RequestId) error

	mu       sync.Mutex
	sessions uint64
	seen     []*metadatav1.RequestId
}

func (f *scriptedController) OpenSession(context.Context, *connect.Request[metadatav1.OpenSessionRequest]) (*connect.Response[metadatav1.OpenSessionResponse], error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.sessions += 10
	return connect.NewResponse(&metadatav1.OpenSessionResponse{SessionId: f.sessions, TimeoutMs: f.timeoutMs}), nil
}

func (f *scriptedController) CreateTopic(_ context.Context, req *connect.Request[metadatav1.CreateTopicRequest]) (*connect.Response[metadatav1.CreateTopicResponse], error) {
	f.mu.Lock()
	f.seen = append(f.seen, req.Msg.GetRequestId())
	n := len(f.seen)
	f.mu.Unlock()
	if err := f.answer(n, req.Msg.GetRequestId()); err != nil {
		return nil, err
	}
	return connect.NewResponse(&metadatav1.CreateTopicResponse{Success: true}), nil
}

func (f *scriptedController) ids() []*metadatav1.RequestId {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]*metadatav1.RequestId(nil), f.seen...)
}

func startScripted(t *testing.T, f *scriptedController) *client.Client {
	mux := http.NewServeMux()
	mux.Handle(metadatav1connect.NewMetadataServiceHandler(f))
	server := httptest.NewServer(mux)
	t.Cleanup(server.Close)
	c, err := client.New(client.Config{Endpoints: []string{server.URL}, HTTPClient: server.Client(),
		BackoffMin: 10 * time.Millisecond, BackoffMax: 50 * time.Millisecond})
	require.NoError(t, err)
	return c
}

func sessionExpired() error {
	ce := connect.NewError(connect.CodeFailedPrecondition, errors.New("session expired"))
	detail, err := connect.NewErrorDetail(&metadatav1.ErrorDetail{ErrorCode: metadatav1.ErrorCode_SESSION_EXPIRED})
	if err != nil {
		panic(err)
	}
	ce.AddDetail(detail)
	return ce
}

func TestWritesOfOneClientShareASessionWithRisingSequences(t *testing.T) {
	f := &scriptedController{timeoutMs: 60_000, answer: func(int, *metadatav1.RequestId) error { return nil }}
	c := startScripted(t, f)
	for range 3 {
		_, err := c.CreateTopic(context.Background(), &metadatav1.CreateTopicRequest{Name: "t", Partitions: 1})
		require.NoError(t, err)
	}
	ids := f.ids()
	require.Len(t, ids, 3)
	for i, id := range ids {
		assert.Equal(t, uint64(10), id.GetSessionId())
		assert.Equal(t, uint64(i+1), id.GetSequence())
	}
}

// A first attempt refused with SESSION_EXPIRED was applied by no attempt:
// the client sends it again in a new session.
func TestFirstAttemptInAnExpiredSessionIsSentAgainInANewOne(t *testing.T) {
	f := &scriptedController{timeoutMs: 60_000, answer: func(n int, _ *metadatav1.RequestId) error {
		if n == 1 {
			return sessionExpired()
		}
		return nil
	}}
	c := startScripted(t, f)
	_, err := c.CreateTopic(context.Background(), &metadatav1.CreateTopicRequest{Name: "t", Partitions: 1})
	require.NoError(t, err)
	ids := f.ids()
	require.Len(t, ids, 2)
	assert.Equal(t, uint64(10), ids[0].GetSessionId())
	assert.Equal(t, uint64(20), ids[1].GetSessionId())
	assert.Equal(t, uint64(1), ids[1].GetSequence())
}

// A retry refused with SESSION_EXPIRED may follow an attempt that applied:
// the outcome is unknown, and the client says so instead of trying again.
func TestRetryInAnExpiredSessionReportsAnUnknownOutcome(t *testing.T) {
	f := &scriptedController{timeoutMs: 60_000, answer: func(n int, _ *metadatav1.RequestId) error {
		if n == 1 {
			return connect.NewError(connect.CodeUnavailable, nil)
		}
		return sessionExpired()
	}}
	c := startScripted(t, f)
	_, err := c.CreateTopic(context.Background(), &metadatav1.CreateTopicRequest{Name: "t", Partitions: 1})
	require.ErrorIs(t, err, client.ErrUnknownOutcome)
	ids := f.ids()
	require.Len(t, ids, 2, "no attempt after the refusal")
	assert.Equal(t, ids[0].GetSessionId(), ids[1].GetSessionId())
	assert.Equal(t, ids[0].GetSequence(), ids[1].GetSequence(), "a retry carries the same request id")
}

// A write stops retrying at its session's horizon, well before the caller's
// deadline, and reports an unknown outcome.
func TestRetriesStopAtTheSessionsHorizon(t *testing.T) {
	f := &scriptedController{timeoutMs: 1_000, answer: func(int, *metadatav1.RequestId) error {
		return connect.NewError(connect.CodeUnavailable, nil)
	}}
	c := startScripted(t, f)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	_, err := c.CreateTopic(ctx, &metadatav1.CreateTopicRequest{Name: "t", Partitions: 1})
	require.ErrorIs(t, err, client.ErrUnknownOutcome)
	assert.NoError(t, ctx.Err(), "the horizon, not the caller's deadline, ended the retries")
	ids := f.ids()
	require.NotEmpty(t, ids)
	for _, id := range ids {
		assert.Equal(t, ids[0].GetSequence(), id.GetSequence())
	}
}

// A definite answer is the caller's, as it is, and the session carries on.
func TestDefiniteErrorIsReturnedAndTheSessionReused(t *testing.T) {
	f := &scriptedController{timeoutMs: 60_000, answer: func(n int, _ *metadatav1.RequestId) error {
		if n == 1 {
			ce := connect.NewError(connect.CodeAlreadyExists, errors.New("exists"))
			detail, err := connect.NewErrorDetail(&metadatav1.ErrorDetail{ErrorCode: metadatav1.ErrorCode_TOPIC_ALREADY_EXISTS})
			require.NoError(t, err)
			ce.AddDetail(detail)
			return ce
		}
		return nil
	}}
	c := startScripted(t, f)
	_, err := c.CreateTopic(context.Background(), &metadatav1.CreateTopicRequest{Name: "t", Partitions: 1})
	assert.Equal(t, connect.CodeAlreadyExists, connect.CodeOf(err))
	assert.NotErrorIs(t, err, client.ErrUnknownOutcome)
	_, err = c.CreateTopic(context.Background(), &metadatav1.CreateTopicRequest{Name: "u", Partitions: 1})
	require.NoError(t, err)
	ids := f.ids()
	require.Len(t, ids, 2)
	assert.Equal(t, ids[0].GetSessionId(), ids[1].GetSessionId())
	assert.Equal(t, uint64(2), ids[1].GetSequence())
}

// A write whose attempts may have been proposed is an unknown outcome when
// the caller's deadline ends it, never a plain "no leader"; sending the
// same request again is a retry under the same id, not a new write.
func TestWriteEndedByTheCallerIsAnUnknownOutcomeAndKeepsItsID(t *testing.T) {
	f := &scriptedController{timeoutMs: 60_000, answer: func(n int, _ *metadatav1.RequestId) error {
		if n <= 2 {
			return connect.NewError(connect.CodeUnavailable, nil)
		}
		return nil
	}}
	c := startScripted(t, f)
	req := &metadatav1.CreateTopicRequest{Name: "t", Partitions: 1}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Millisecond)
	defer cancel()
	_, err := c.CreateTopic(ctx, req)
	require.ErrorIs(t, err, client.ErrUnknownOutcome)
	assert.ErrorIs(t, err, client.ErrNoLeader, "the cause is kept")
	_, err = c.CreateTopic(context.Background(), req)
	require.NoError(t, err)
	ids := f.ids()
	for _, id := range ids {
		assert.Equal(t, ids[0].GetSequence(), id.GetSequence(), "every send is the same request")
		assert.Equal(t, ids[0].GetSessionId(), id.GetSessionId())
	}
}

// A first attempt refused before any proposal (here: not authorised) is a
// definite answer.
func TestRefusalBeforeProposalIsNotAnUnknownOutcome(t *testing.T) {
	f := &scriptedController{timeoutMs: 60_000, answer: func(int, *metadatav1.RequestId) error {
		return connect.NewError(connect.CodePermissionDenied, errors.New("no"))
	}}
	c := startScripted(t, f)
	_, err := c.CreateTopic(context.Background(), &metadatav1.CreateTopicRequest{Name: "t", Partitions: 1})
	assert.Equal(t, connect.CodePermissionDenied, connect.CodeOf(err))
	assert.NotErrorIs(t, err, client.ErrUnknownOutcome)
}

// A pooled session whose horizon is near would end a write in an unknown
// outcome after one slow failover, though nothing was proposed and the
// caller had time: such a session is not used (a new one is opened).
func TestPooledSessionNearItsHorizonIsNotUsed(t *testing.T) {
	f := &scriptedController{timeoutMs: 1000} // horizon: 500 ms after activity
	f.answer = func(n int, id *metadatav1.RequestId) error {
		if n >= 2 && n <= 4 { // an election: nobody leads, nothing proposed
			time.Sleep(100 * time.Millisecond)
			return connect.NewError(connect.CodeUnavailable, nil)
		}
		return nil
	}
	mux := http.NewServeMux()
	mux.Handle(metadatav1connect.NewMetadataServiceHandler(f))
	server := httptest.NewServer(mux)
	t.Cleanup(server.Close)
	c, err := client.New(client.Config{Endpoints: []string{server.URL}, HTTPClient: server.Client(),
		AttemptTimeout: 150 * time.Millisecond, BackoffMin: 10 * time.Millisecond, BackoffMax: 20 * time.Millisecond})
	require.NoError(t, err)
	_, err = c.CreateTopic(context.Background(), &metadatav1.CreateTopicRequest{Name: "a", Partitions: 1})
	require.NoError(t, err)
	time.Sleep(300 * time.Millisecond) // the horizon is 200 ms away: more than one attempt, less than a failover
	_, err = c.CreateTopic(context.Background(), &metadatav1.CreateTopicRequest{Name: "b", Partitions: 1})
	require.NoError(t, err, "a patient caller, nothing proposed: no unknown outcome")
}

// bigAnswer applies a CreateTopic and answers it with more than the
// client accepts to read.
type bigAnswer struct{ *scriptedController }

func (b bigAnswer) CreateTopic(ctx context.Context, req *connect.Request[metadatav1.CreateTopicRequest]) (*connect.Response[metadatav1.CreateTopicResponse], error) {
	if _, err := b.scriptedController.CreateTopic(ctx, req); err != nil {
		return nil, err
	}
	return connect.NewResponse(&metadatav1.CreateTopicResponse{Success: true, Topic: &metadatav1.Topic{Name: strings.Repeat("x", 4096)}}), nil
}

// A write applied at its first attempt whose answer the client cannot read
// (too large, or undecodable) fails on the client with a code a server
// refusal could carry: only the server's word proves "not proposed".
func TestAppliedWriteWhoseAnswerCannotBeReadIsUnknown(t *testing.T) {
	f := &scriptedController{timeoutMs: 60_000, answer: func(int, *metadatav1.RequestId) error { return nil }}
	mux := http.NewServeMux()
	mux.Handle(metadatav1connect.NewMetadataServiceHandler(bigAnswer{f}))
	server := httptest.NewServer(mux)
	t.Cleanup(server.Close)
	c, err := client.New(client.Config{Endpoints: []string{server.URL}, HTTPClient: server.Client(),
		Options: []connect.ClientOption{connect.WithReadMaxBytes(1024)}})
	require.NoError(t, err)
	_, err = c.CreateTopic(context.Background(), &metadatav1.CreateTopicRequest{Name: "t", Partitions: 1})
	require.Len(t, f.ids(), 1)
	require.ErrorIs(t, err, client.ErrUnknownOutcome, "applied once: not a definite refusal")
}

// After an unknown outcome the caller may resend the same request to learn
// what happened. The session must not carry other writes meanwhile (they
// would make the resend stale), and a resend refused because the session
// expired is an unknown outcome still, not a definite failure.
func TestResendOfAnUnknownWriteLearnsItsOutcome(t *testing.T) {
	var last uint64
	f := &scriptedController{timeoutMs: 60_000}
	f.answer = func(n int, id *metadatav1.RequestId) error {
		if n == 1 {
			time.Sleep(60 * time.Millisecond) // the caller gives up
			return connect.NewError(connect.CodeUnavailable, nil)
		}
		if id.GetSequence() < last {
			return sessionExpired()
		}
		last = id.GetSequence()
		return nil
	}
	c := startScripted(t, f)
	req := &metadatav1.CreateTopicRequest{Name: "t", Partitions: 1}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Millisecond)
	_, err := c.CreateTopic(ctx, req)
	cancel()
	require.ErrorIs(t, err, client.ErrUnknownOutcome)
	_, err = c.CreateTopic(context.Background(), &metadatav1.CreateTopicRequest{Name: "u", Partitions: 1})
	require.NoError(t, err)
	_, err = c.CreateTopic(context.Background(), req) // the resend, same request id
	require.NoError(t, err, "the session was not reused: the resend is a plain retry")
	assert.Equal(t, req.GetRequestId().GetSessionId(), f.ids()[len(f.ids())-1].GetSessionId())

	// A resend after the session expired says the outcome is unknown.
	expired := &metadatav1.CreateTopicRequest{Name: "v", Partitions: 1,
		RequestId: &metadatav1.RequestId{ClientId: "c", SessionId: 1, Sequence: 1}}
	last = 1 << 40
	_, err = c.CreateTopic(context.Background(), expired)
	require.ErrorIs(t, err, client.ErrUnknownOutcome)
}
