package client

// Bug names a defect that can be planted in a build with the plantedbugs
// tag, to prove that the simulator's checkers catch bugs in this package's
// deciding logic, which the simulator runs. In every other build planted
// is a constant false and the compiler removes the defects.
type Bug int

const (
	// BugAcceptStalePush makes the agent accept any push, whatever its
	// controller epoch and version.
	BugAcceptStalePush Bug = iota + 1
	// BugGivingUpIsDefinite reports a write whose retries the caller's
	// deadline ended as failed, though an attempt may yet commit.
	BugGivingUpIsDefinite
)

func plantedAcceptStalePush() bool { return planted(BugAcceptStalePush) }
