//go:build plantedbugs

package sim

import (
	"testing"
	"time"

	"github.com/dmq-project/metadata/internal/planted"
	"github.com/stretchr/testify/require"
)

// TestPlantedBugsAreCaught plants one bug at a time and runs seeds until
// the simulator reports a violation: proof that the checkers can fail.
// (Without a planted bug the same seeds pass: TestSeeds.) Every bug of
// internal/planted must be here.
func TestPlantedBugsAreCaught(t *testing.T) {
	bugs := []struct {
		bug  planted.Bug
		name string
		// caughtBy, if set, is what the first violation must say: the
		// checker this bug was planted for.
		caughtBy string
	}{
		{bug: planted.AckBeforeCommit, name: "acknowledge before commit"},
		{bug: planted.ReadWithoutReadIndex, name: "read without ReadIndex"},
		{bug: planted.SkipFsync, name: "skip the fsync", caughtBy: "durable image"},
		{bug: planted.SendBeforePersist, name: "send votes and acknowledgements before persisting", caughtBy: "durable image"},
		{bug: planted.NoFailoverGrace, name: "no failover grace for sessions"},
		{bug: planted.StepStrangers, name: "step messages from strangers"},
		{bug: planted.ForgetDirectories, name: "found and vote on a wiped disk"},
		{bug: planted.PushOldEpoch, name: "push with an older epoch"},
		{bug: planted.UnfenceAtOnce, name: "unfence a returning broker before it caught up", caughtBy: "only once caught up"},
		{bug: planted.NoRebalance, name: "never move leaders back to preferred replicas", caughtBy: "preferred leaders come back"},
		{bug: planted.NoDrainReplan, name: "never plan again for replicas a decommission left", caughtBy: "decommissioned at version"},
		{bug: planted.ApplyRetryTwice, name: "apply a retried request twice"},
		{bug: planted.SnapshotForgetsRequests, name: "snapshots (and the state hash) forget the request table"},
		{bug: planted.FenceLeavesOffline, name: "fencing leaves a partition offline beside an eligible ISR member",
			caughtBy: "is offline though ISR or ELR member"},
		{bug: planted.AcceptStalePush, name: "the agent accepts a stale push"},
		{bug: planted.GivingUpIsDefinite, name: "the client takes a write it gave up on for failed"},
		{bug: planted.ForwardLossIsRefusal, name: "a forward the leader never answered is answered not the controller",
			caughtBy: "answered NOT_CONTROLLER to a call it forwarded"},
	}
	covered := map[planted.Bug]bool{}
	for _, b := range bugs {
		covered[b.bug] = true
	}
	for b := planted.Bug(1); b < planted.Count; b++ {
		require.True(t, covered[b], "planted bug %d has no entry here: which checker catches it?", b)
	}
	// Every timing change draws each seed's history anew. The rarest
	// catch needs a decommission whose plan leaves a replica behind: seed
	// 58 since elections start a tick short of the timeout after a
	// restart (seed 27 before).
	const seedsMax = 80
	for _, bug := range bugs {
		t.Run(bug.name, func(t *testing.T) {
			planted.Plant(bug.bug, true)
			defer planted.Plant(bug.bug, false)
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
