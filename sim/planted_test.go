//go:build plantedbugs

package sim

import (
	"testing"
	"time"

	"github.com/dmq-project/metadata/client"
	"github.com/dmq-project/metadata/node"
	"github.com/dmq-project/metadata/statemachine"
	"github.com/stretchr/testify/require"
)

// TestPlantedBugsAreCaught plants one bug at a time and runs seeds until
// the simulator reports a violation: proof that the checkers can fail.
// (Without a planted bug the same seeds pass: TestSeeds.)
func TestPlantedBugsAreCaught(t *testing.T) {
	bugs := []struct {
		name  string
		plant func(on bool)
		// caughtBy, if set, is what the first violation must say: the
		// checker this bug was planted for.
		caughtBy string
	}{
		{name: "acknowledge before commit", plant: func(on bool) { node.Plant(node.BugAckBeforeCommit, on) }},
		{name: "read without ReadIndex", plant: func(on bool) { node.Plant(node.BugReadWithoutReadIndex, on) }},
		{name: "skip the fsync", plant: func(on bool) { node.Plant(node.BugSkipFsync, on) }, caughtBy: "durable image"},
		{name: "send votes and acknowledgements before persisting", plant: func(on bool) { node.Plant(node.BugSendBeforePersist, on) },
			caughtBy: "durable image"},
		{name: "no failover grace for sessions", plant: func(on bool) { node.Plant(node.BugNoFailoverGrace, on) }},
		{name: "step messages from strangers", plant: func(on bool) { node.Plant(node.BugStepStrangers, on) }},
		{name: "found and vote on a wiped disk", plant: func(on bool) { node.Plant(node.BugForgetDirectories, on) }},
		{name: "push with an older epoch", plant: func(on bool) { node.Plant(node.BugPushOldEpoch, on) }},
		{name: "unfence a returning broker before it caught up", plant: func(on bool) { node.Plant(node.BugUnfenceAtOnce, on) },
			caughtBy: "only once caught up"},
		{name: "never move leaders back to preferred replicas", plant: func(on bool) { node.Plant(node.BugNoRebalance, on) },
			caughtBy: "preferred leaders come back"},
		{name: "apply a retried request twice", plant: statemachine.PlantApplyRetryTwice},
		{name: "snapshots (and the state hash) forget the request table", plant: statemachine.PlantSnapshotForgetsRequests},
		{name: "fencing leaves a partition offline beside an eligible ISR member", plant: statemachine.PlantFenceLeavesOffline,
			caughtBy: "is offline though ISR member"},
		{name: "the agent accepts a stale push", plant: func(on bool) { client.Plant(client.BugAcceptStalePush, on) }},
		{name: "the client takes a write it gave up on for failed", plant: func(on bool) { client.Plant(client.BugGivingUpIsDefinite, on) }},
	}
	const seedsMax = 40
	for _, bug := range bugs {
		t.Run(bug.name, func(t *testing.T) {
			bug.plant(true)
			defer bug.plant(false)
			for seed := uint64(1); seed <= seedsMax; seed++ {
				opts := OptionsFromSeed(seed, 60*time.Second, 0)
				result := Run(opts)
				if !result.OK() {
					t.Logf("caught by seed %d: %s", seed, result.Violations[0])
					require.Contains(t, result.Violations[0], bug.caughtBy, "caught, but not by the checker it was planted for")
					return
				}
			}
			require.Failf(t, "planted bug not caught", "%s survived %d seeds", bug.name, seedsMax)
		})
	}
}
