//go:build !plantedbugs

package statemachine

// Outside plantedbugs builds no bug is planted (internal/planted).

func plantedApplyRetryTwice() bool         { return false }
func plantedSnapshotForgetsRequests() bool { return false }
func plantedFenceLeavesOffline() bool      { return false }
