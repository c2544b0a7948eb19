//go:build !invariants

package statemachine

// invariantsChecked: only builds with the invariants tag check every
// invariant after every Apply (the simulator checks them in every build).
const invariantsChecked = false
