package wire

import (
	"fmt"
	"runtime"
	"runtime/debug"
	"strings"
)

// VersionPath is where a controller serves its BuildInfo as JSON.
const VersionPath = "/version"

// BuildInfo is what a binary knows of its own build, from the Go
// toolchain's build information: the module version ("(devel)" for a build
// in the repository), the VCS revision and time, whether the working tree
// had changes, and the Go version.
type BuildInfo struct {
	Version  string `json:"version"`
	Revision string `json:"revision,omitempty"`
	Time     string `json:"time,omitempty"`
	Modified bool   `json:"modified,omitempty"`
	Go       string `json:"go"`
}

// Build is this binary's BuildInfo.
func Build() BuildInfo {
	b := BuildInfo{Version: "unknown", Go: runtime.Version()}
	info, ok := debug.ReadBuildInfo()
	if !ok {
		return b
	}
	b.Version = info.Main.Version
	for _, s := range info.Settings {
		switch s.Key {
		case "vcs.revision":
			b.Revision = s.Value
		case "vcs.time":
			b.Time = s.Value
		case "vcs.modified":
			b.Modified = s.Value == "true"
		}
	}
	return b
}

// String is one line: version, short revision (+dirty), time, Go version.
func (b BuildInfo) String() string {
	s := b.Version
	if b.Revision != "" {
		rev := b.Revision
		if len(rev) > 12 {
			rev = rev[:12]
		}
		if b.Modified {
			rev += "+dirty"
		}
		if !strings.Contains(s, rev) { // a pseudo-version names its revision already
			s += " " + rev
		}
	}
	if b.Time != "" {
		s += " " + b.Time
	}
	return fmt.Sprintf("%s %s", s, b.Go)
}
