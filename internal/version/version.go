// Package version owns the version of sdupdate itself (not the agent's): the one string that
// `sdupdate --version`, `status --json` and the package's version all show.
//
// A release build sets it at link time from the VCS tag:
//
//	go build -ldflags "-X github.com/sdupdate/sdupdate/internal/version.version=1.2.0" ./cmd/sdupdate
//
// Any other build falls back to what the Go toolchain recorded (the module version of a
// `go install …@v1.2.0`, or the VCS revision of a build in a checkout), and says plainly that it is
// a development build.
package version

import (
	"runtime/debug"
	"strings"

	"golang.org/x/mod/module"
)

// version is set with -ldflags -X; empty means "not a release build".
var version string

// String is sdupdate's version: the release version when the build set one, otherwise a string
// that starts with "dev" and names the commit the build came from when it is known.
func String() string {
	info, _ := debug.ReadBuildInfo()
	return fromBuild(version, info)
}

// fromBuild is String on its inputs, so every case can be tested.
func fromBuild(linked string, info *debug.BuildInfo) string {
	if linked != "" {
		return strings.TrimPrefix(linked, "v")
	}
	if info == nil {
		return "dev (no build information)"
	}
	// `go install github.com/sdupdate/sdupdate/cmd/sdupdate@v1.2.0` records the module version.
	if v := info.Main.Version; v != "" && v != "(devel)" && !strings.Contains(v, "+dirty") && !module.IsPseudoVersion(v) {
		return strings.TrimPrefix(v, "v")
	}
	var rev, modified string
	for _, s := range info.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			modified = s.Value
		}
	}
	if rev == "" {
		if v := info.Main.Version; v != "" && v != "(devel)" {
			return "dev (" + v + ")"
		}
		return "dev (unknown commit)"
	}
	if len(rev) > 12 {
		rev = rev[:12]
	}
	if modified == "true" {
		return "dev (commit " + rev + ", modified)"
	}
	return "dev (commit " + rev + ")"
}
