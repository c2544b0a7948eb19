// Package planted is the project's one mechanism for planted bugs: defects
// that a build with the plantedbugs tag can switch on, one at a time, to
// prove that the simulator's checkers catch them (sim's
// TestPlantedBugsAreCaught plants each one). In every other build On is
// false, Plant does not exist, and the compiler removes the defects.
//
// What this package must never do: plant anything in a default build.
// The state machine reaches it only from a plantedbugs-tagged file, so that
// its default build imports nothing of ours but the generated types.
package planted

// Bug names one defect. The constants are grouped by the package that
// carries the defect.
type Bug int

const (
	// node

	// AckBeforeCommit completes a proposal as soon as it is proposed.
	AckBeforeCommit Bug = iota + 1
	// ReadWithoutReadIndex serves linearizable reads from local state.
	ReadWithoutReadIndex
	// SkipFsync persists Readies without syncing.
	SkipFsync
	// NoFailoverGrace starts a new leader's sessions at their last
	// heartbeat as seen by nobody: brokers are fenced at once.
	NoFailoverGrace
	// SendBeforePersist sends every message of a Ready, votes and
	// acknowledgements included, before the Ready is persisted.
	SendBeforePersist
	// StepStrangers steps messages from outside the configuration.
	StepStrangers
	// ForgetDirectories founds a cluster on any empty directory and votes
	// whatever directory the membership names: amnesia.
	ForgetDirectories
	// PushOldEpoch stamps pushes with the term before the leader's.
	PushOldEpoch
	// UnfenceAtOnce unfences a returning broker at its first heartbeat,
	// caught up or not.
	UnfenceAtOnce
	// NoRebalance never moves leaders back to preferred replicas.
	NoRebalance
	// NoDrainReplan never plans again for a decommission whose plan left
	// replicas on the drained broker.
	NoDrainReplan

	// statemachine

	// ApplyRetryTwice makes Apply forget request ids: a retried request is
	// applied again.
	ApplyRetryTwice
	// SnapshotForgetsRequests leaves the request table out of the
	// encoding: snapshots and the state hash both forget it.
	SnapshotForgetsRequests
	// FenceLeavesOffline makes fencing a leader leave its partitions
	// offline even when another ISR member may lead.
	FenceLeavesOffline

	// client

	// AcceptStalePush makes the storage agent accept any push, whatever
	// its controller epoch and version.
	AcceptStalePush
	// GivingUpIsDefinite reports a write whose retries the caller's
	// deadline ended as failed, though an attempt may yet commit.
	GivingUpIsDefinite

	// wire

	// ForwardLossIsRefusal answers a forwarded call the leader never
	// answered NOT_CONTROLLER, as if nothing had reached the leader.
	ForwardLossIsRefusal

	// Count is one past the last bug: every Bug b has 0 < b < Count.
	Count
)
