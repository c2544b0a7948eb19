package sim

import (
	"github.com/dmq-project/metadata/storage"
	"go.etcd.io/raft/v3/raftpb"
)

// promises are what a controller has told others about its disk, which
// must survive any crash (persist before you send):
//   - an acknowledged append or snapshot: it holds the log up to index,
//     matching the leader of term (within a term a leader only appends,
//     so only a higher term may replace what it acknowledged);
//   - a vote granted in voteTerm to voteFor.
type promises struct {
	term, index       uint64
	voteTerm, voteFor uint64
}

// note records the promise a message makes, when the node emits it
// (whether or not the network delivers it).
func (p *promises) note(m *raftpb.Message) {
	switch {
	case m.GetType() == raftpb.MsgAppResp && !m.GetReject():
		switch {
		case m.GetTerm() > p.term:
			p.term, p.index = m.GetTerm(), m.GetIndex()
		case m.GetTerm() == p.term:
			p.index = max(p.index, m.GetIndex())
		}
	case m.GetType() == raftpb.MsgVoteResp && !m.GetReject() && m.GetTerm() >= p.voteTerm:
		p.voteTerm, p.voteFor = m.GetTerm(), m.GetTo()
	}
}

// checkDurable reopens a crashed controller's durable image, as its next
// process will, and checks that it keeps every promise: the term and the
// log it acknowledged (the snapshot counts), and its vote.
func (s *Sim) checkDurable(n *simNode) {
	p := n.promises
	if p == (promises{}) {
		return
	}
	store, err := storage.OpenMem(n.disk)
	if err != nil {
		s.violate("durable image: node %d's disk does not reopen after its crash: %v", n.id, err)
		return
	}
	hs, _, err := store.InitialState()
	if err != nil {
		s.violate("durable image: node %d's hard state does not read: %v", n.id, err)
		return
	}
	last, _ := store.LastIndex()
	term := hs.GetTerm()
	switch {
	case term < p.term || term < p.voteTerm:
		s.violate("durable image: node %d acknowledged in term %d and voted in term %d, its disk holds term %d",
			n.id, p.term, p.voteTerm, term)
	case term == p.term && last < p.index:
		s.violate("durable image: node %d acknowledged index %d in term %d, its disk holds the log to %d",
			n.id, p.index, p.term, last)
	case term == p.voteTerm && hs.GetVote() != p.voteFor:
		s.violate("durable image: node %d granted its vote in term %d to %d, its disk says %d",
			n.id, p.voteTerm, p.voteFor, hs.GetVote())
	}
}
