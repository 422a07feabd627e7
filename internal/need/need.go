// Package need is how a test asks for something of the machine it runs on — a program, root —
// that a workstation may lack: there the test is skipped, saying what to install; in CI
// (CI=true), where .ci/run installs everything the tests need, a missing one fails the test, so
// that no test ever stops running there unnoticed.
package need

import (
	"os"
	"os/exec"
	"testing"
)

// Program returns the path of the program name, found on PATH; pkg is the Debian package that
// provides it, for the message.
func Program(t testing.TB, name, pkg string) string {
	t.Helper()
	path, err := exec.LookPath(name)
	if err != nil {
		Missing(t, "the "+name+" program is needed (apt-get install "+pkg+")")
	}
	return path
}

// Root is for a test that must run as root.
func Root(t testing.TB, why string) {
	t.Helper()
	if os.Geteuid() != 0 {
		Missing(t, why+" needs root")
	}
}

// Missing ends a test that cannot run here: a failure in CI, a skip elsewhere.
func Missing(t testing.TB, what string) {
	t.Helper()
	if os.Getenv("CI") == "true" {
		t.Fatal("CI=true: " + what)
	}
	t.Skip(what)
}
