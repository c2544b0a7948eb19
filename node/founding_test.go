package node

import (
	"math/rand/v2"
	"testing"

	"github.com/dmq-project/metadata/storage"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// The founding peers of the tests: three controllers, each with the
// directory it was formatted with (d1, d2, d3), and d2Wiped, the
// directory controller 2 was formatted with after its disk was lost.
const (
	foundingCluster = "c"
	d1, d2, d3      = 0xd1, 0xd2, 0xd3
	d2Wiped         = 0x2e
)

var foundingPeers = []Peer{{ID: 1, URL: "http://one"}, {ID: 2, URL: "http://two"}, {ID: 3, URL: "http://three"}}

func identityOf(id, directory uint64) storage.Identity {
	return storage.Identity{ClusterID: foundingCluster, ControllerID: id, DirectoryID: directory}
}

func formatted(id, directory uint64) FoundingAnswer {
	return FoundingAnswer{ClusterID: foundingCluster, ControllerID: id, DirectoryID: directory, State: PeerFormatted}
}

// foundedAnswer is controller id's answer once it founded with voters
// (nil: it no longer knows them) and has members now.
func foundedAnswer(id, directory uint64, voters, members []Peer) FoundingAnswer {
	return FoundingAnswer{ClusterID: foundingCluster, ControllerID: id, DirectoryID: directory, State: PeerFounded,
		FoundingVoters: voters, Members: members}
}

// allThree are the voters every founder of the three must found with.
var allThree = []Peer{{ID: 1, URL: "http://one", DirectoryID: d1}, {ID: 2, URL: "http://two", DirectoryID: d2}, {ID: 3, URL: "http://three", DirectoryID: d3}}

func TestFoundingDecisions(t *testing.T) {
	for _, tc := range []struct {
		name     string
		self     storage.Identity
		peers    []Peer
		answers  map[uint64]FoundingAnswer
		outcome  FoundingOutcome
		voters   []Peer
		waiting  []uint64
		replaced bool
	}{
		{
			name:    "a lone controller founds at once with its directory",
			self:    identityOf(1, d1),
			peers:   []Peer{{ID: 1, URL: "http://one"}},
			outcome: Found,
			voters:  []Peer{{ID: 1, URL: "http://one", DirectoryID: d1}},
		},
		{
			name:    "nobody answered: wait for every peer",
			self:    identityOf(1, d1),
			peers:   foundingPeers,
			outcome: KeepWaiting,
			waiting: []uint64{2, 3},
		},
		{
			name:    "one peer answered: a cluster is not founded without the other",
			self:    identityOf(1, d1),
			peers:   foundingPeers,
			answers: map[uint64]FoundingAnswer{2: formatted(2, d2)},
			outcome: KeepWaiting,
			waiting: []uint64{3},
		},
		{
			name:    "every peer is empty and answered: found with every directory",
			self:    identityOf(1, d1),
			peers:   foundingPeers,
			answers: map[uint64]FoundingAnswer{2: formatted(2, d2), 3: formatted(3, d3)},
			outcome: Found,
			voters:  allThree,
		},
		{
			name:    "another founder of the same start computes the same voters",
			self:    identityOf(3, d3),
			peers:   foundingPeers,
			answers: map[uint64]FoundingAnswer{1: formatted(1, d1), 2: formatted(2, d2)},
			outcome: Found,
			voters:  allThree,
		},
		{
			name:  "A founded while B was starting: B founds with A's voters",
			self:  identityOf(2, d2),
			peers: foundingPeers,
			answers: map[uint64]FoundingAnswer{
				1: foundedAnswer(1, d1, allThree, allThree),
				3: formatted(3, d3),
			},
			outcome: Found,
			voters:  allThree,
		},
		{
			name:  "a late founder reaches its peers at the addresses it was given",
			self:  identityOf(2, d2),
			peers: foundingPeers,
			answers: map[uint64]FoundingAnswer{1: foundedAnswer(1, d1,
				[]Peer{{ID: 1, URL: "http://proxy-one", DirectoryID: d1}, {ID: 2, URL: "http://proxy-two", DirectoryID: d2}, {ID: 3, URL: "http://proxy-three", DirectoryID: d3}}, nil)},
			outcome: Found,
			voters:  allThree,
		},
		{
			name:     "B's directory was wiped: its founded peer names the old one, B waits to be added",
			self:     identityOf(2, d2Wiped),
			peers:    foundingPeers,
			answers:  map[uint64]FoundingAnswer{1: foundedAnswer(1, d1, allThree, allThree), 3: foundedAnswer(3, d3, allThree, allThree)},
			outcome:  WaitToBeAdded,
			replaced: true,
		},
		{
			name:     "B's directory was wiped long after: the membership alone names the old one",
			self:     identityOf(2, d2Wiped),
			peers:    foundingPeers,
			answers:  map[uint64]FoundingAnswer{1: foundedAnswer(1, d1, nil, allThree)},
			outcome:  WaitToBeAdded,
			replaced: true,
		},
		{
			name:     "B's directory was wiped and the only peer that answers founded: B does not wait for the others",
			self:     identityOf(2, d2Wiped),
			peers:    foundingPeers,
			answers:  map[uint64]FoundingAnswer{3: foundedAnswer(3, d3, allThree, allThree)},
			outcome:  WaitToBeAdded,
			replaced: true,
		},
		{
			name:    "B's directory was wiped and its peers are down: B waits, it does not found",
			self:    identityOf(2, d2Wiped),
			peers:   foundingPeers,
			outcome: KeepWaiting,
			waiting: []uint64{1, 3},
		},
		{
			name:  "the cluster was founded without this controller: it waits to be added",
			self:  identityOf(3, d3),
			peers: foundingPeers,
			answers: map[uint64]FoundingAnswer{1: foundedAnswer(1, d1,
				[]Peer{{ID: 1, DirectoryID: d1}, {ID: 2, DirectoryID: d2}}, []Peer{{ID: 1, DirectoryID: d1}, {ID: 2, DirectoryID: d2}})},
			outcome: WaitToBeAdded,
		},
		{
			name:    "a member added with this directory restarts empty: it waits for the leader's state",
			self:    identityOf(3, d3),
			peers:   foundingPeers,
			answers: map[uint64]FoundingAnswer{1: foundedAnswer(1, d1, nil, allThree)},
			outcome: WaitToBeAdded,
		},
		{
			name:  "a founder removed since does not found again",
			self:  identityOf(3, d3),
			peers: foundingPeers,
			answers: map[uint64]FoundingAnswer{1: foundedAnswer(1, d1, allThree,
				[]Peer{{ID: 1, DirectoryID: d1}, {ID: 2, DirectoryID: d2}})},
			outcome: WaitToBeAdded,
		},
		{
			name:  "founding voters of an earlier version name no directory: an empty directory does not found",
			self:  identityOf(2, d2),
			peers: foundingPeers,
			answers: map[uint64]FoundingAnswer{1: foundedAnswer(1, d1,
				[]Peer{{ID: 1}, {ID: 2}, {ID: 3}}, []Peer{{ID: 1}, {ID: 2}, {ID: 3}})},
			outcome: WaitToBeAdded,
		},
		{
			name:  "a peer waits to be added: no new cluster is founded beside the one it knows of",
			self:  identityOf(1, d1),
			peers: foundingPeers,
			answers: map[uint64]FoundingAnswer{
				2: {ClusterID: foundingCluster, ControllerID: 2, DirectoryID: d2Wiped, State: PeerWaiting},
				3: formatted(3, d3),
			},
			outcome: KeepWaiting,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d, err := DecideFounding(tc.self, tc.peers, tc.answers)
			require.NoError(t, err)
			assert.Equal(t, tc.outcome, d.Outcome, d.Reason)
			assert.Equal(t, tc.voters, d.Voters)
			assert.Equal(t, tc.waiting, d.WaitingFor)
			assert.Equal(t, tc.replaced, d.Replaced)
			assert.NotEmpty(t, d.Reason, "every decision says why, for the log")
		})
	}
}

// TestFoundingRefusesAMisconfiguredPeer: a peer of another cluster, or
// answering as another controller than configured, stops the founding
// with an error naming both; asking again would not mend it.
func TestFoundingRefusesAMisconfiguredPeer(t *testing.T) {
	for _, tc := range []struct {
		name    string
		peers   []Peer
		answers map[uint64]FoundingAnswer
		says    []string
	}{
		{
			name:    "a peer of another cluster",
			peers:   foundingPeers,
			answers: map[uint64]FoundingAnswer{2: {ClusterID: "other", ControllerID: 2, DirectoryID: d2, State: PeerFounded}},
			says:    []string{`"other"`, `"c"`, "controller 2", "http://two"},
		},
		{
			name:    "a peer answering as another controller",
			peers:   foundingPeers,
			answers: map[uint64]FoundingAnswer{3: formatted(2, d2)},
			says:    []string{"configured as controller 3", "answers as controller 2", "http://three"},
		},
		{
			name:  "two peers founded with different voters",
			peers: foundingPeers,
			answers: map[uint64]FoundingAnswer{
				2: foundedAnswer(2, d2, []Peer{{ID: 1, DirectoryID: d1}, {ID: 2, DirectoryID: d2}, {ID: 3, DirectoryID: d3}}, nil),
				3: foundedAnswer(3, d3, []Peer{{ID: 1, DirectoryID: d1}, {ID: 2, DirectoryID: d2Wiped}, {ID: 3, DirectoryID: d3}}, nil),
			},
			says: []string{"controllers 2 and 3", "founded twice"},
		},
		{
			name:  "a controller that is not among its founding peers",
			peers: []Peer{{ID: 2, URL: "http://two"}, {ID: 3, URL: "http://three"}},
			says:  []string{"controller 1 is not among its founding peers"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := DecideFounding(identityOf(1, d1), tc.peers, tc.answers)
			require.Error(t, err)
			for _, s := range tc.says {
				assert.Contains(t, err.Error(), s)
			}
		})
	}
}

// A Found decision stands only if a second round of answers, asked after
// the first was complete, agrees with it. 3 asked 1 and 2 at once: 1
// answered at once, 3's request to 2 was slow; meanwhile 1 and 2 founded
// with {d1,d2,d3} and 2 lost its directory; the new 2 answered
// 'formatted d2Wiped'. Without the confirmation 3 founded with the wiped
// directory recorded, and the wiped 2 could then found from 3's answer and
// elect with 3 without the writes 1 and 2 committed (found by review).
func TestFoundingIsConfirmedByASecondRound(t *testing.T) {
	decided, err := DecideFounding(identityOf(3, d3), foundingPeers, map[uint64]FoundingAnswer{
		1: formatted(1, d1), 2: formatted(2, d2Wiped)})
	require.NoError(t, err)
	require.Equal(t, Found, decided.Outcome, "the first round alone is fooled")
	founded := []Peer{{ID: 1, DirectoryID: d1}, {ID: 2, DirectoryID: d2}, {ID: 3, DirectoryID: d3}}
	second := map[uint64]FoundingAnswer{1: foundedAnswer(1, d1, founded, founded), 2: formatted(2, d2Wiped)}
	assert.False(t, ConfirmFounding(identityOf(3, d3), decided, second), "1 founded with another directory for 2")

	again, err := DecideFounding(identityOf(3, d3), foundingPeers, second)
	require.NoError(t, err)
	require.Equal(t, Found, again.Outcome)
	assert.True(t, sameVoters(founded, again.Voters), "3 founds late with the voters 1 founded with: %s", describeVoters(again.Voters))

	// Peers that are still formatted with the same directories confirm.
	clean, err := DecideFounding(identityOf(3, d3), foundingPeers, map[uint64]FoundingAnswer{1: formatted(1, d1), 2: formatted(2, d2)})
	require.NoError(t, err)
	assert.True(t, ConfirmFounding(identityOf(3, d3), clean, map[uint64]FoundingAnswer{1: formatted(1, d1), 2: formatted(2, d2)}))
	assert.True(t, ConfirmFounding(identityOf(3, d3), clean, map[uint64]FoundingAnswer{1: foundedAnswer(1, d1, founded, founded), 2: formatted(2, d2)}))
	assert.False(t, ConfirmFounding(identityOf(3, d3), clean, map[uint64]FoundingAnswer{1: formatted(1, d1)}), "a peer that did not answer")
}

// A late founder is confirmed by a peer that founded with the decided
// voters, whatever another founding peer says now (wiped, it waits).
func TestLateFoundingIsConfirmedByAFoundedPeer(t *testing.T) {
	founded := []Peer{{ID: 1, DirectoryID: d1}, {ID: 2, DirectoryID: d2}, {ID: 3, DirectoryID: d3}}
	answers := map[uint64]FoundingAnswer{1: foundedAnswer(1, d1, founded, founded)}
	d, err := DecideFounding(identityOf(3, d3), foundingPeers, answers)
	require.NoError(t, err)
	require.Equal(t, Found, d.Outcome)
	waiting := formatted(2, d2Wiped)
	waiting.State = PeerWaiting
	assert.True(t, ConfirmFounding(identityOf(3, d3), d, map[uint64]FoundingAnswer{1: foundedAnswer(1, d1, founded, founded), 2: waiting}))
}

// A data directory is formatted once, for one controller of one cluster:
// started as another controller, or in another cluster, it is refused with
// both named, and its identity is unchanged.
func TestDirectoryOfAnotherControllerOrClusterIsRefused(t *testing.T) {
	store, err := storage.OpenMem(storage.NewDisk())
	require.NoError(t, err)
	rng := rand.New(rand.NewPCG(1, 2))
	formatted, err := Format(store, "prod", 1, rng)
	require.NoError(t, err)

	_, err = Format(store, "prod", 2, rng)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "holds controller 1, not controller 2")
	_, err = Format(store, "staging", 1, rng)
	require.Error(t, err)
	assert.Contains(t, err.Error(), `belongs to cluster "prod", not cluster "staging"`)

	again, err := Format(store, "prod", 1, rng)
	require.NoError(t, err)
	assert.Equal(t, formatted, again, "the identity is the one formatted first")
}
