package version

import (
	"runtime/debug"
	"strings"
	"testing"
)

func TestFromBuild(t *testing.T) {
	vcs := func(rev, modified string) []debug.BuildSetting {
		return []debug.BuildSetting{{Key: "vcs", Value: "git"}, {Key: "vcs.revision", Value: rev}, {Key: "vcs.modified", Value: modified}}
	}
	const rev = "0123456789abcdef0123456789abcdef01234567"
	tests := []struct {
		desc   string
		linked string
		info   *debug.BuildInfo
		want   string
	}{
		{"linked version wins", "1.2.0", &debug.BuildInfo{Main: debug.Module{Version: "v9.9.9"}}, "1.2.0"},
		{"linked tag loses its v", "v1.2.0", nil, "1.2.0"},
		{"linked dev version as is", "0.0.0~git20261201.f599eb7", nil, "0.0.0~git20261201.f599eb7"},
		{"no build info", "", nil, "dev (no build information)"},
		{"go install of a tag", "", &debug.BuildInfo{Main: debug.Module{Version: "v1.3.0"}}, "1.3.0"},
		{"pseudo-version is a dev build", "", &debug.BuildInfo{Main: debug.Module{Version: "v0.0.0-20261201194400-0123456789ab"}, Settings: vcs(rev, "false")}, "dev (commit 0123456789ab)"},
		{"pseudo-version after a tag", "", &debug.BuildInfo{Main: debug.Module{Version: "v1.2.1-0.20261201194400-0123456789ab"}}, "dev (v1.2.1-0.20261201194400-0123456789ab)"},
		{"dirty tag is a dev build", "", &debug.BuildInfo{Main: debug.Module{Version: "v1.2.0+dirty"}, Settings: vcs(rev, "true")}, "dev (commit 0123456789ab, modified)"},
		{"checkout build", "", &debug.BuildInfo{Main: debug.Module{Version: "(devel)"}, Settings: vcs(rev, "false")}, "dev (commit 0123456789ab)"},
		{"no vcs stamp", "", &debug.BuildInfo{Main: debug.Module{Version: "(devel)"}}, "dev (unknown commit)"},
	}
	for _, tt := range tests {
		if got := fromBuild(tt.linked, tt.info); got != tt.want {
			t.Errorf("%s: got %q, want %q", tt.desc, got, tt.want)
		}
	}
}

// The test binary itself is built without -X: it must call itself a dev build.
func TestStringOfThisBuildIsDev(t *testing.T) {
	if got := String(); !strings.HasPrefix(got, "dev") {
		t.Errorf("String() of a build without -ldflags = %q, want it to start with dev", got)
	}
}
