package node

import (
	"cmp"
	"errors"
	"fmt"
	"github.com/dmq-project/metadata/internal/planted"
	"slices"
	"strings"

	"github.com/dmq-project/metadata/statemachine"
	"github.com/dmq-project/metadata/storage"
	"go.etcd.io/raft/v3/raftpb"
)

// The founding handshake decides whether a controller whose store holds no
// Raft state founds the cluster (Bootstrap) or starts without a
// configuration and waits to be added. A voter is a controller id and a
// directory id; a founder must record every founding voter's directory,
// and a directory formatted after the cluster was founded (the one it
// replaces was lost) must never found it again: it would vote with an
// empty log, and a committed write could be lost.
//
// Each controller formats its directory (persisting its directory id)
// before it tells anyone that id, and founds only once every founding
// peer has answered with its own: every founder then computes the same
// voters, each with its directory. A founder that finds a peer already
// founded takes the voters that peer founded with, and founds only if they
// name this directory for it. DecideFounding is that decision, without
// I/O: the caller asks the peers and calls it again until it says Found or
// WaitToBeAdded.

// FoundingPeerState is what a founding peer says of its store.
type FoundingPeerState int

const (
	// PeerFormatted: its directory is formatted and its store holds no
	// Raft state; it is deciding whether to found.
	PeerFormatted FoundingPeerState = iota + 1
	// PeerWaiting: it decided not to found (or was told to join) and runs
	// without a configuration, waiting to be added to a running cluster.
	PeerWaiting
	// PeerFounded: its store holds the cluster's state (it founded, or
	// was added and received it).
	PeerFounded
)

func (s FoundingPeerState) String() string {
	switch s {
	case PeerFormatted:
		return "formatted"
	case PeerWaiting:
		return "waiting"
	case PeerFounded:
		return "founded"
	}
	return fmt.Sprintf("founding-peer-state(%d)", int(s))
}

// FoundingAnswer is what a founding peer answered about itself.
type FoundingAnswer struct {
	ClusterID    string
	ControllerID uint64
	DirectoryID  uint64
	State        FoundingPeerState
	// FoundingVoters are, for a founded peer that still knows them, the
	// voters it founded with, each with its directory (the membership of
	// its snapshot at index 1); nil when unknown (its store was compacted
	// since, or it was added rather than founding).
	FoundingVoters []Peer
	// Members is a founded peer's current membership, with directories.
	Members []Peer
}

// FoundingOutcome is what a controller with an empty store does next.
type FoundingOutcome int

const (
	// KeepWaiting: ask the peers again; some have not answered, or say
	// something that does not settle it yet.
	KeepWaiting FoundingOutcome = iota
	// Found: bootstrap with FoundingDecision.Voters.
	Found
	// WaitToBeAdded: the cluster exists without this directory among its
	// founders: start without bootstrapping, never vote, wait to be added.
	WaitToBeAdded
)

func (o FoundingOutcome) String() string {
	switch o {
	case KeepWaiting:
		return "keep-waiting"
	case Found:
		return "found"
	case WaitToBeAdded:
		return "wait-to-be-added"
	}
	return fmt.Sprintf("founding-outcome(%d)", int(o))
}

// FoundingDecision is DecideFounding's answer.
type FoundingDecision struct {
	Outcome FoundingOutcome
	// Voters, for Found, are the founding voters sorted by id, every one
	// with its directory.
	Voters []Peer
	// WaitingFor, for KeepWaiting, are the peers that have not answered.
	WaitingFor []uint64
	// Replaced, for WaitToBeAdded, says that a founded peer names another
	// directory for this controller: this directory replaced a lost one.
	Replaced bool
	// Reason says why, for the log.
	Reason string
}

// DecideFounding decides, for the controller whose directory is self and
// whose store holds no Raft state, whether it founds the cluster with the
// founding peers (itself among them), waits to be added, or asks again.
// answers holds what each peer (other than self) answered; a peer that
// did not answer is absent. A peer of another cluster, or answering under
// another controller id than configured, is an error naming both: the
// configuration is wrong, and asking again will not mend it.
func DecideFounding(self storage.Identity, peers []Peer, answers map[uint64]FoundingAnswer) (FoundingDecision, error) {
	configured := map[uint64]Peer{}
	for _, p := range peers {
		configured[p.ID] = p
	}
	if _, ok := configured[self.ControllerID]; !ok {
		return FoundingDecision{}, fmt.Errorf("node: controller %d is not among its founding peers %v: list it among them, or start it to join a running cluster",
			self.ControllerID, sortedKeys(configured))
	}
	var founded, waiting, missing []uint64
	for _, id := range sortedKeys(configured) {
		if id == self.ControllerID {
			continue
		}
		a, ok := answers[id]
		if !ok {
			missing = append(missing, id)
			continue
		}
		if a.ClusterID != self.ClusterID {
			return FoundingDecision{}, fmt.Errorf("node: the founding peer configured as controller %d at %s belongs to cluster %q, not cluster %q: check the peers' addresses and metadata.cluster-id",
				id, configured[id].URL, a.ClusterID, self.ClusterID)
		}
		if a.ControllerID != id {
			return FoundingDecision{}, fmt.Errorf("node: the founding peer configured as controller %d at %s answers as controller %d: check the peers' ids and addresses",
				id, configured[id].URL, a.ControllerID)
		}
		switch a.State {
		case PeerFounded:
			founded = append(founded, id)
		case PeerWaiting:
			waiting = append(waiting, id)
		}
	}
	if len(founded) > 0 {
		return decideLate(self, configured, answers, founded)
	}
	if len(waiting) > 0 {
		// A peer that waits to be added learnt that the cluster exists
		// (or was told so): founding one beside it would split it in two.
		return FoundingDecision{Outcome: KeepWaiting, WaitingFor: missing,
			Reason: fmt.Sprintf("founding peers %v wait to be added to a running cluster: this controller waits for a founded peer to answer", waiting)}, nil
	}
	if len(missing) > 0 {
		return FoundingDecision{Outcome: KeepWaiting, WaitingFor: missing,
			Reason: fmt.Sprintf("founding peers %v have not answered yet: a cluster is founded only once every founding peer has named its directory", missing)}, nil
	}
	voters := make([]Peer, 0, len(configured))
	for _, id := range sortedKeys(configured) {
		p := configured[id]
		p.DirectoryID = answers[id].DirectoryID
		if id == self.ControllerID {
			p.DirectoryID = self.DirectoryID
		}
		voters = append(voters, p)
	}
	reason := "every founding peer answered with its directory and none has founded yet"
	if len(voters) == 1 {
		reason = "a lone controller founds its cluster at once"
	}
	return FoundingDecision{Outcome: Found, Voters: voters, Reason: reason}, nil
}

// decideLate decides for a controller some of whose peers have founded.
func decideLate(self storage.Identity, configured map[uint64]Peer, answers map[uint64]FoundingAnswer, founded []uint64) (FoundingDecision, error) {
	var founding []Peer
	foundingFrom := uint64(0)
	for _, id := range founded {
		a := answers[id]
		for _, list := range [][]Peer{a.FoundingVoters, a.Members} {
			for _, p := range list {
				if p.ID == self.ControllerID && p.DirectoryID != 0 && p.DirectoryID != self.DirectoryID {
					return FoundingDecision{Outcome: WaitToBeAdded, Replaced: true,
						Reason: fmt.Sprintf("controller %d names directory %x for controller %d, and this directory is %x: it replaced a lost one, so it must not found the cluster again nor vote as the voter it replaces; remove controller %d and add it back under a new id",
							id, p.DirectoryID, self.ControllerID, self.DirectoryID, self.ControllerID)}, nil
				}
			}
		}
		if a.FoundingVoters == nil {
			continue
		}
		if founding != nil && !sameVoters(founding, a.FoundingVoters) {
			return FoundingDecision{}, fmt.Errorf("node: controllers %d and %d founded the cluster with different voters (%s and %s): it was founded twice",
				foundingFrom, id, describeVoters(founding), describeVoters(a.FoundingVoters))
		}
		founding, foundingFrom = a.FoundingVoters, id
	}
	for _, id := range founded {
		if members := answers[id].Members; len(members) > 0 && !slices.ContainsFunc(members, func(p Peer) bool { return p.ID == self.ControllerID }) {
			return FoundingDecision{Outcome: WaitToBeAdded,
				Reason: fmt.Sprintf("controller %d has founded the cluster and its membership does not name controller %d: it waits to be added", id, self.ControllerID)}, nil
		}
	}
	isSelf := func(p Peer) bool { return p.ID == self.ControllerID && p.DirectoryID == self.DirectoryID }
	if !slices.ContainsFunc(founding, isSelf) {
		for _, id := range founded {
			if slices.ContainsFunc(answers[id].Members, isSelf) {
				return FoundingDecision{Outcome: WaitToBeAdded,
					Reason: fmt.Sprintf("controller %d names this directory %x as a member: it was added, and the leader sends it the state", id, self.DirectoryID)}, nil
			}
		}
		return FoundingDecision{Outcome: WaitToBeAdded,
			Reason: fmt.Sprintf("controllers %v have founded the cluster, and no founding voter they know of is this directory %x: it waits to be added",
				founded, self.DirectoryID)}, nil
	}
	// A late founder: its peers founded with its directory (it crashed, or
	// was slow, between announcing it and bootstrapping). It bootstraps
	// with the same voters and directories, so that its snapshot at index
	// 1 is theirs; the founders may be too few to elect a leader without
	// it. Where its peers are reached stays its own configuration's
	// business.
	voters := make([]Peer, 0, len(founding))
	for _, p := range founding {
		if c, ok := configured[p.ID]; ok && c.URL != "" {
			p.URL = c.URL
		}
		voters = append(voters, p)
	}
	slices.SortFunc(voters, func(a, b Peer) int { return cmp.Compare(a.ID, b.ID) })
	return FoundingDecision{Outcome: Found, Voters: voters,
		Reason: fmt.Sprintf("controller %d founded the cluster with this directory among its voters", foundingFrom)}, nil
}

// sameVoters compares founding voters by id and directory (peers may name
// each other by different URLs).
func sameVoters(a, b []Peer) bool {
	key := func(list []Peer) []Peer {
		out := make([]Peer, 0, len(list))
		for _, p := range list {
			out = append(out, Peer{ID: p.ID, DirectoryID: p.DirectoryID})
		}
		slices.SortFunc(out, func(x, y Peer) int { return cmp.Compare(x.ID, y.ID) })
		return out
	}
	return slices.Equal(key(a), key(b))
}

func describeVoters(list []Peer) string {
	parts := make([]string, 0, len(list))
	for _, p := range list {
		parts = append(parts, fmt.Sprintf("%d:%x", p.ID, p.DirectoryID))
	}
	return "{" + strings.Join(parts, " ") + "}"
}

// ConfirmFounding checks a Found decision against a second round of
// answers, asked after every answer of the first was in: each other
// founding voter must still be formatted with the directory the decision
// records for it, or have founded with exactly the decided voters. The
// answers of one round arrive at different times: a peer may found, lose
// its directory and answer from a new one while another's answer is on
// its way, and a decision built from such a round would record a wiped
// directory as a founding voter (found by review). A decision that is not
// confirmed is made again from fresh answers.
func ConfirmFounding(self storage.Identity, d FoundingDecision, answers map[uint64]FoundingAnswer) bool {
	if d.Outcome != Found {
		return false
	}
	for _, a := range answers { // determinism: any one settles it, whichever is seen first
		if a.State == PeerFounded && a.FoundingVoters != nil && sameVoters(a.FoundingVoters, d.Voters) {
			// The cluster was founded with these voters: a fact, whatever
			// the others say now (one may be wiped and waiting).
			return true
		}
	}
	for _, v := range d.Voters {
		if v.ID == self.ControllerID {
			continue
		}
		a, ok := answers[v.ID]
		switch {
		case !ok:
			return false
		case a.State == PeerFormatted && a.DirectoryID == v.DirectoryID:
		case a.State == PeerFounded && a.FoundingVoters != nil && sameVoters(a.FoundingVoters, d.Voters):
		default:
			return false
		}
	}
	return true
}

// Format gives an unformatted directory its identity: the cluster, the
// controller, and a random directory id drawn from rand. A directory
// already formatted keeps its identity, which must name the same cluster
// and controller: a directory of another controller or cluster is refused
// with both named, before anything is read from it.
func Format(store storage.Storage, clusterID string, controllerID uint64, rand Rand) (storage.Identity, error) {
	id, ok, err := store.Identity()
	if err != nil {
		return storage.Identity{}, err
	}
	if ok {
		return id, checkIdentity(id, clusterID, controllerID)
	}
	id = storage.Identity{ClusterID: clusterID, ControllerID: controllerID}
	for id.DirectoryID == 0 {
		id.DirectoryID = rand.Uint64()
	}
	return id, store.Format(id)
}

func checkIdentity(id storage.Identity, clusterID string, controllerID uint64) error {
	if id.ControllerID != controllerID {
		return fmt.Errorf("node: the data directory holds controller %d, not controller %d: give each controller its own directory", id.ControllerID, controllerID)
	}
	if clusterID != "" && id.ClusterID != clusterID {
		return fmt.Errorf("node: the data directory belongs to cluster %q, not cluster %q", id.ClusterID, clusterID)
	}
	return nil
}

// Bootstrap founds a new cluster on a formatted, empty store: a snapshot
// at index 1 whose conf state names the voters and whose membership
// records each voter's directory. Every founding controller bootstraps
// with the same peers and so writes the same snapshot. A store that
// already holds state is left alone. A store whose directory is not the
// one the founding peers name for this controller is refused: it is a
// directory formatted after the cluster was founded (the one it replaces
// was lost), and founding again would let it vote with an empty log.
func Bootstrap(store storage.Storage, peers []Peer) error {
	sm := statemachine.New()
	sm.Advance(1)
	return found(store, peers, 1, sm.Snapshot())
}

// found writes the founding snapshot of a cluster whose voters are peers:
// the state machine bytes stateMachine at index, in term 1. An empty store
// only; a store with state is left alone (founded before).
func found(store storage.Storage, peers []Peer, index uint64, stateMachine []byte) error {
	identity, formatted, err := store.Identity()
	if err != nil {
		return err
	}
	if !formatted {
		return errors.New("node: bootstrap needs a formatted directory")
	}
	last, err := store.LastIndex()
	if err != nil {
		return err
	}
	snap, err := store.Snapshot()
	if err != nil {
		return err
	}
	if last != 0 || snap.GetMetadata().GetIndex() != 0 {
		return nil
	}
	if len(peers) == 0 {
		return errors.New("node: bootstrap needs at least one peer")
	}
	urls := map[uint64]string{}
	directories := map[uint64]uint64{}
	voters := make([]uint64, 0, len(peers))
	for _, p := range peers {
		if p.ID == 0 {
			return errors.New("node: peer id 0 is reserved")
		}
		if _, dup := urls[p.ID]; dup {
			return fmt.Errorf("node: peer %d listed twice", p.ID)
		}
		urls[p.ID] = p.URL
		if p.DirectoryID != 0 {
			directories[p.ID] = p.DirectoryID
		}
		voters = append(voters, p.ID)
	}
	if own, listed := directories[identity.ControllerID]; listed && own != identity.DirectoryID && !planted.On(planted.ForgetDirectories) {
		return fmt.Errorf("%w: the founding voters name directory %x for controller %d, this directory is %x",
			ErrNotFoundingDirectory, own, identity.ControllerID, identity.DirectoryID)
	}
	slices.Sort(voters)
	return store.Save(storage.Update{
		HardState: &raftpb.HardState{Term: new(uint64(1)), Commit: new(index)},
		Snapshot: &raftpb.Snapshot{
			Metadata: &raftpb.SnapshotMetadata{Index: new(index), Term: new(uint64(1)), ConfState: &raftpb.ConfState{Voters: voters}},
			Data:     encodeSnapshot(urls, directories, nil, stateMachine),
		},
		MustSync: true,
	})
}

// ErrNotFoundingDirectory refuses to found a cluster on a directory that
// is not the one the founding voters name: it must wait to be added.
var ErrNotFoundingDirectory = errors.New("node: this directory is not a founding voter's")
