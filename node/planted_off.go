//go:build !plantedbugs

package node

// planted is always false outside plantedbugs builds.
func planted(Bug) bool { return false }
