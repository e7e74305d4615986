// Package buildinfo says which build of a binary is running: its version,
// its source revision and the Go toolchain that built it. The Makefile and
// the Dockerfile set the version (and, where the build has no git metadata,
// the revision) with -ldflags "-X main.version=... -X main.revision=...";
// otherwise both come from the VCS information that go build stamps into
// the binary (runtime/debug.ReadBuildInfo). It has no state: every call
// reads the binary's own build information again.
package buildinfo

import (
	"fmt"
	"runtime/debug"
)

// Unknown stands for a version or revision that the build did not record,
// e.g. under go run or go test, which stamp no VCS information.
const Unknown = "unknown"

// Info is what a binary reports with --version.
type Info struct {
	// Version is the release, as `git describe --tags --always --dirty`
	// gives it in the Makefile, or the module version Go derived from VCS
	// tags, or Unknown.
	Version string
	// Revision is the commit the binary was built from, with "-dirty" when
	// the work tree had uncommitted changes, or Unknown.
	Revision string
	// GoVersion is the toolchain that built the binary, e.g. "go1.26.8".
	GoVersion string
}

// Read returns the running binary's build information. version and
// revision are the values set with -ldflags -X (each binary's main.version
// and main.revision); each one that is empty is taken from the stamped
// build information instead.
func Read(version, revision string) Info {
	info := Info{Version: version, Revision: revision, GoVersion: Unknown}
	bi, ok := debug.ReadBuildInfo()
	if ok {
		info.GoVersion = bi.GoVersion
		if info.Version == "" && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
			info.Version = bi.Main.Version
		}
		if info.Revision == "" {
			info.Revision = vcsRevision(bi.Settings)
		}
	}
	if info.Version == "" {
		info.Version = Unknown
	}
	if info.Revision == "" {
		info.Revision = Unknown
	}
	return info
}

// vcsRevision is the stamped commit, marked dirty when the tree had local
// changes, or "" when go build recorded none.
func vcsRevision(settings []debug.BuildSetting) string {
	var rev string
	var dirty bool
	for _, s := range settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			dirty = s.Value == "true"
		}
	}
	if rev != "" && dirty {
		rev += "-dirty"
	}
	return rev
}

// Line is the one line that --version prints for the binary named name:
// "speech-gateway v1.2.0 (revision 3f2a…, go1.26.8)".
func (i Info) Line(name string) string {
	return fmt.Sprintf("%s %s (revision %s, %s)", name, i.Version, i.Revision, i.GoVersion)
}
