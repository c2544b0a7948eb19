package client

import (
	"testing"
	"time"

	"connectrpc.com/connect"
	metadatav1 "github.com/dmq-project/metadata/gen/dmq/metadata/v1"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func noJitter(int64) int64 { return 0 }

func notLeader(url string) Failure {
	return Failure{Code: connect.CodeUnavailable, ErrorCode: metadatav1.ErrorCode_NOT_CONTROLLER, LeaderURL: url}
}

func TestRetrierFollowsAHintOnceThenBacksOff(t *testing.T) {
	guess := NewLeaderGuess("a")
	r := NewRetrier([]string{"a", "b", "c"}, guess, 50*time.Millisecond, 200*time.Millisecond)

	again, wait := r.Next(notLeader("c"), noJitter)
	require.True(t, again)
	assert.Zero(t, wait, "a leader hint is followed at once")
	assert.Equal(t, "c", r.Endpoint())

	// c names a in turn: a second hint in a row waits, so that two
	// controllers naming each other make no busy loop.
	again, wait = r.Next(notLeader("a"), noJitter)
	require.True(t, again)
	assert.Equal(t, 50*time.Millisecond, wait)
	assert.Equal(t, "a", r.Endpoint())

	// Timeouts go round the endpoints with a doubling backoff, capped.
	var waits []time.Duration
	var targets []string
	for range 3 {
		_, wait := r.Next(TimedOut(), noJitter)
		waits, targets = append(waits, wait), append(targets, r.Endpoint())
	}
	assert.Equal(t, []time.Duration{100 * time.Millisecond, 200 * time.Millisecond, 200 * time.Millisecond}, waits)
	assert.Equal(t, []string{"b", "c", "a"}, targets)
	assert.Equal(t, "a", guess.Endpoint(), "the guess follows every failure: the next call starts where this one would go")

	r.Next(TimedOut(), noJitter)
	r.Succeeded()
	assert.Equal(t, "b", guess.Endpoint(), "the endpoint that answered leads")
}

func TestRetrierStopsAtADefiniteAnswer(t *testing.T) {
	guess := NewLeaderGuess("a")
	r := NewRetrier([]string{"a", "b"}, guess, time.Millisecond, time.Millisecond)
	again, _ := r.Next(Failure{Code: connect.CodeAlreadyExists, ErrorCode: metadatav1.ErrorCode_TOPIC_ALREADY_EXISTS}, noJitter)
	assert.False(t, again)
	assert.Equal(t, "a", guess.Endpoint())
	assert.Panics(t, func() { r.Next(TimedOut(), noJitter) }, "no attempt after the retrier said to stop")
}

func TestJudgeWrite(t *testing.T) {
	expired := Failure{Code: connect.CodeFailedPrecondition, ErrorCode: metadatav1.ErrorCode_SESSION_EXPIRED}
	exists := Failure{Code: connect.CodeAlreadyExists, ErrorCode: metadatav1.ErrorCode_TOPIC_ALREADY_EXISTS}
	denied := Failure{Code: connect.CodePermissionDenied, FromServer: true}
	tooLarge := Failure{Code: connect.CodeResourceExhausted} // reading the answer, on the client
	hinted := notLeader("b")
	timedOut := TimedOut()
	cases := []struct {
		name    string
		end     WriteEnd
		verdict WriteVerdict
		keep    bool
	}{
		{"success", WriteEnd{Attempts: 3}, WriteAnswered, true},
		{"a definite error", WriteEnd{Last: &exists, Attempts: 2}, WriteAnswered, true},
		{"expired at the first attempt: applied by none", WriteEnd{Last: &expired, Attempts: 1}, WriteResend, false},
		{"expired at a retry: an earlier attempt may have applied", WriteEnd{Last: &expired, Attempts: 2}, WriteUnknown, false},
		{"expired again in a new session", WriteEnd{Last: &expired, Attempts: 1, Reopened: true}, WriteUnknown, false},
		{"the horizon passed", WriteEnd{Last: &timedOut, Attempts: 4, HorizonPassed: true}, WriteUnknown, false},
		{"the caller gave up", WriteEnd{Last: &timedOut, Attempts: 1, CallerGaveUp: true}, WriteUnknown, false},
		{"the caller gave up after a refusal", WriteEnd{Last: &hinted, Attempts: 1, CallerGaveUp: true}, WriteUnknown, false},
		{"refused before proposal at once", WriteEnd{Last: &denied, Attempts: 1}, WriteAnswered, true},
		{"a client-side error proves nothing", WriteEnd{Last: &tooLarge, Attempts: 1}, WriteUnknown, false},
		{"refused after an attempt that may have been proposed", WriteEnd{Last: &denied, Attempts: 2}, WriteUnknown, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			verdict, keep := JudgeWrite(c.end)
			assert.Equal(t, c.verdict, verdict)
			assert.Equal(t, c.keep, keep)
		})
	}
	assert.Panics(t, func() { JudgeWrite(WriteEnd{}) }, "a write is judged after an attempt")
}

// Leader hints name the leader's peer URL, which a client outside the
// controllers' network may not reach. After such a hint fails, the rotation
// goes on from where it was, so the leader's configured endpoint is tried.
func TestRetrierReachesTheLeaderPastAnUnreachableHint(t *testing.T) {
	r := NewRetrier([]string{"http://a", "http://b", "http://c"}, NewLeaderGuess("http://a"), time.Millisecond, time.Millisecond)
	var seen []string
	for range 8 {
		f := TimedOut()
		if r.Endpoint() != "http://peer-c:9000" {
			f = notLeader("http://peer-c:9000") // c's peer URL
		}
		if r.Endpoint() == "http://c" {
			break
		}
		r.Next(f, noJitter)
		seen = append(seen, r.Endpoint())
	}
	require.Contains(t, seen, "http://c", "the leader's configured endpoint is tried: %v", seen)
}
