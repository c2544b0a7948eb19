//go:build !plantedbugs

package statemachine

// plantedApplyRetryTwice is always false outside plantedbugs builds.
const plantedApplyRetryTwice = false

// plantedSnapshotForgetsRequests is always false outside plantedbugs builds.
const plantedSnapshotForgetsRequests = false

// plantedFenceLeavesOffline is always false outside plantedbugs builds.
const plantedFenceLeavesOffline = false
