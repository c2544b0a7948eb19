//go:build plantedbugs

package statemachine

import "github.com/dmq-project/metadata/internal/planted"

// The state machine's planted bugs (internal/planted), reached from this
// tagged file only: the default build imports nothing of ours but gen/.

func plantedApplyRetryTwice() bool         { return planted.On(planted.ApplyRetryTwice) }
func plantedSnapshotForgetsRequests() bool { return planted.On(planted.SnapshotForgetsRequests) }
func plantedFenceLeavesOffline() bool      { return planted.On(planted.FenceLeavesOffline) }
