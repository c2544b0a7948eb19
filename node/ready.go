package node

import (
	"fmt"
	"github.com/dmq-project/metadata/internal/planted"
	"slices"

	metadatav1 "github.com/dmq-project/metadata/gen/dmq/metadata/v1"
	"github.com/dmq-project/metadata/storage"
	"go.etcd.io/raft/v3"
	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"
)

// The Ready loop: one raft.Ready handled in the order etcd raft requires,
// and each committed entry applied.

// HandleReady processes one Raft Ready in the order etcd raft requires:
// persist hard state, entries and snapshot (synced when MustSync) before
// sending any message that depends on them; send; apply committed entries
// and complete the proposals and reads they resolve; Advance. A returned
// error is a storage failure: the node must be discarded and restarted
// from its store.
//
// A leader's appends and heartbeats leave before its own write, so that
// the followers' fsyncs run in parallel with the leader's (Raft thesis
// §10.2.1; etcd raft's contract allows messages to be sent while the
// entries of the same Ready are persisted). This is safe because the
// leader's own copy counts towards a commit only once it is durable:
// acknowledgements are stepped after HandleReady returns, and an entry can
// only be acknowledged once its Ready has been handled. Everything else —
// votes, acknowledgements, anything sent with a new term or vote — waits
// for the fsync.
func (n *Node) HandleReady() error {
	if n.storageErr != nil {
		return n.storageErr
	}
	if n.readsWaiting() {
		n.issueReads()
	}
	if !n.rn.HasReady() {
		return nil
	}
	rd := n.rn.Ready()
	early, late := n.splitMessages(&rd)
	if len(early) > 0 {
		n.env.Transport.Send(early)
	}
	// NB: persistence before every other message. A vote or an appended
	// entry acknowledged before it is durable could be forgotten by a crash
	// and contradicted after restart.
	if err := n.store.Save(storage.Update{
		HardState: rd.HardState, Entries: rd.Entries, Snapshot: rd.Snapshot, MustSync: rd.MustSync && !planted.On(planted.SkipFsync),
	}); err != nil {
		return err
	}
	if !raft.IsEmptyHardState(rd.HardState) {
		n.durableTerm, n.durableVote = rd.HardState.GetTerm(), rd.HardState.GetVote()
	}
	n.noteAddedInLog(rd.Entries)
	if rd.Snapshot != nil && rd.Snapshot.GetMetadata().GetIndex() != 0 {
		if err := n.restoreSnapshot(rd.Snapshot); err != nil {
			return err
		}
		n.emit(Event{Kind: EventSnapshotInstalled, Index: rd.Snapshot.GetMetadata().GetIndex(), Bytes: len(rd.Snapshot.GetData())})
		n.serveReads()
	}
	if len(late) > 0 && !n.directoryReplaced() {
		// (A directory that replaced a lost one stays silent from the
		// snapshot that tells it so: see Step.)
		n.env.Transport.Send(late)
	}
	n.observeGainedLeadership()
	changed := n.sm.ChangedPartitions()
	for _, entry := range rd.CommittedEntries {
		n.applyEntry(entry)
	}
	// What replaying the entries would cost counts towards the next
	// snapshot, besides their bytes: without it, a log of small records
	// that made millions of partitions was never snapshotted by followers,
	// which replayed all of it at restart.
	n.loggedBytes += partitionSnapshotBytes * int(n.sm.ChangedPartitions()-changed)
	n.observeLeadership()
	if len(n.addedInLog) > 0 {
		n.forgetAppliedAdds()
	}
	for _, rs := range rd.ReadStates {
		n.resolveRead(rs)
	}
	n.serveReads()
	n.rn.Advance(rd)
	if n.controller.changed {
		n.controller.changed = false
		if n.active {
			n.pushAll(n.env.Clock.Now())
		}
	}
	return n.maybeSnapshot()
}

// splitMessages divides a Ready's messages into those that may leave
// before the Ready is persisted (a leader's appends and heartbeats, when
// the Ready changes neither term nor vote and restores no snapshot) and
// those that must wait for it.
func (n *Node) splitMessages(rd *raft.Ready) (early, late []*raftpb.Message) {
	if planted.On(planted.SendBeforePersist) {
		return rd.Messages, nil
	}
	termOrVoteChanges := !raft.IsEmptyHardState(rd.HardState) &&
		(rd.HardState.GetTerm() != n.durableTerm || rd.HardState.GetVote() != n.durableVote)
	if termOrVoteChanges || (rd.Snapshot != nil && rd.Snapshot.GetMetadata().GetIndex() != 0) {
		return nil, rd.Messages
	}
	for _, m := range rd.Messages {
		switch m.GetType() {
		case raftpb.MsgApp, raftpb.MsgHeartbeat:
			early = append(early, m)
		default:
			late = append(late, m)
		}
	}
	return early, late
}

// applyEntry applies one committed entry and completes what waits on it.
func (n *Node) applyEntry(entry *raftpb.Entry) {
	index := entry.GetIndex()
	if index <= n.sm.AppliedIndex() {
		// Covered by a snapshot restored in this same Ready.
		return
	}
	if n.env.Observer != nil {
		n.env.Observer.Applied(entry)
	}
	n.loggedBytes += len(entry.GetData())
	switch entry.GetType() {
	case raftpb.EntryNormal:
		if len(entry.GetData()) == 0 {
			n.sm.Advance(index)
			break
		}
		record := &metadatav1.Record{}
		if err := proto.Unmarshal(entry.GetData(), record); err != nil {
			n.sm.ApplyEntry(index, entry.GetData())
			break
		}
		joined := false
		if r := record.GetRegisterBroker(); r != nil {
			// A broker never seen before (not registered, not departed).
			joined = !n.sm.BrokerStatus(r.GetBrokerId()).Registered && !slices.Contains(n.sm.DepartedBrokers(), r.GetBrokerId())
		}
		result := n.sm.Apply(index, record)
		if record.GetProposerId() == n.cfg.ID {
			if p, ok := n.proposals[record.GetProposalSeq()]; ok && p.term == entry.GetTerm() {
				delete(n.proposals, record.GetProposalSeq())
				p.done(Outcome{Result: result, LeaderID: n.leader})
			}
		}
		if result.Err == nil && !result.Duplicate {
			n.afterApply(record, result, joined)
		}
	case raftpb.EntryConfChange, raftpb.EntryConfChangeV2:
		n.applyConfChange(entry)
	default:
		panic(fmt.Sprintf("node: committed entry %d has unknown type %v", index, entry.GetType()))
	}
	if n.isLeader && !n.active && entry.GetTerm() == n.term {
		n.becomeActive()
	}
}
