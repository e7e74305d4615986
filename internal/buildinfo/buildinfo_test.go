package buildinfo

import (
	"runtime"
	"runtime/debug"
	"testing"
)

func TestReadPrefersLinkerValues(t *testing.T) {
	t.Parallel()
	got := Read("v1.2.3", "abc123")
	want := Info{Version: "v1.2.3", Revision: "abc123", GoVersion: runtime.Version()}
	if got != want {
		t.Fatalf("Read() = %+v, want %+v", got, want)
	}
	if line, want := got.Line("speechctl"), "speechctl v1.2.3 (revision abc123, "+runtime.Version()+")"; line != want {
		t.Fatalf("Line() = %q, want %q", line, want)
	}
}

// TestReadWithoutStamps: go test stamps no VCS information, so an unset
// version and revision read as unknown rather than as empty strings.
func TestReadWithoutStamps(t *testing.T) {
	t.Parallel()
	got := Read("", "")
	if got.Version == "" || got.Revision == "" || got.GoVersion != runtime.Version() {
		t.Fatalf("Read() = %+v, want every field set", got)
	}
}

func TestVCSRevision(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name     string
		settings []debug.BuildSetting
		want     string
	}{
		{"none", nil, ""},
		{"clean", []debug.BuildSetting{{Key: "vcs.revision", Value: "3f2a"}, {Key: "vcs.modified", Value: "false"}}, "3f2a"},
		{"dirty", []debug.BuildSetting{{Key: "vcs", Value: "git"}, {Key: "vcs.revision", Value: "3f2a"}, {Key: "vcs.modified", Value: "true"}}, "3f2a-dirty"},
		{"modified without a revision", []debug.BuildSetting{{Key: "vcs.modified", Value: "true"}}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			if got := vcsRevision(tc.settings); got != tc.want {
				t.Errorf("vcsRevision() = %q, want %q", got, tc.want)
			}
		})
	}
}
