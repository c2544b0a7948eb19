// Package cmd holds the binaries: dmqd (the controller server), dmqctl (the
// operator CLI) and dmqsim (the simulation runner). They only wire the
// packages together: flags, configuration, signals. No logic lives here.
package cmd
