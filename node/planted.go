package node

// Bug names a defect that can be planted in a build with the plantedbugs
// tag, to prove that the simulator's checkers catch it. In every other
// build Planted is a constant false and the compiler removes the defects.
type Bug int

const (
	// BugAckBeforeCommit completes a proposal as soon as it is proposed.
	BugAckBeforeCommit Bug = iota + 1
	// BugReadWithoutReadIndex serves linearizable reads from local state.
	BugReadWithoutReadIndex
	// BugSkipFsync persists Readies without syncing.
	BugSkipFsync
	// BugNoFailoverGrace starts a new leader's sessions at their last
	// heartbeat as seen by nobody: brokers are fenced at once.
	BugNoFailoverGrace
	// BugSendBeforePersist sends every message of a Ready, votes and
	// acknowledgements included, before the Ready is persisted.
	BugSendBeforePersist
	// BugStepStrangers steps messages from outside the configuration.
	BugStepStrangers
	// BugForgetDirectories founds a cluster on any empty directory and
	// votes whatever directory the membership names: amnesia.
	BugForgetDirectories
	// BugPushOldEpoch stamps pushes with the term before the leader's.
	BugPushOldEpoch
	// BugUnfenceAtOnce unfences a returning broker at its first
	// heartbeat, caught up or not.
	BugUnfenceAtOnce
	// BugNoRebalance never moves leaders back to preferred replicas.
	BugNoRebalance
)
