//go:build plantedbugs

package statemachine

// plantedApplyRetryTwice, in plantedbugs builds, makes Apply forget request
// ids: a retried request is applied again. The simulator must notice.
var plantedApplyRetryTwice = false

// PlantApplyRetryTwice turns the planted bug on or off.
func PlantApplyRetryTwice(on bool) { plantedApplyRetryTwice = on }

// plantedSnapshotForgetsRequests, in plantedbugs builds, leaves the request
// table out of the encoding: snapshots and the state hash both forget it.
var plantedSnapshotForgetsRequests = false

// PlantSnapshotForgetsRequests turns the planted bug on or off.
func PlantSnapshotForgetsRequests(on bool) { plantedSnapshotForgetsRequests = on }

// plantedFenceLeavesOffline, in plantedbugs builds, makes fencing a leader
// leave its partitions offline even when another ISR member may lead.
var plantedFenceLeavesOffline = false

// PlantFenceLeavesOffline turns the planted bug on or off.
func PlantFenceLeavesOffline(on bool) { plantedFenceLeavesOffline = on }
