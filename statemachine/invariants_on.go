//go:build invariants

package statemachine

// invariantsChecked: this build checks every invariant after every Apply.
const invariantsChecked = true
