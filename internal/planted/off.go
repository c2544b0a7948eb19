//go:build !plantedbugs

package planted

// On is false outside plantedbugs builds: the compiler removes every
// defect it guards.
func On(Bug) bool { return false }
