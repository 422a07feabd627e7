package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// An operator's own file named like the rename probe, `.sdupdate-000000000000-probe` at the
// install root, used to be removed by any command that took the lock, verify included. Only a
// probe sdupdate made itself goes now; and a manifest cannot name a file in that shape.
func TestProbeNameCannotCollide(t *testing.T) {
	e := newEnv(t)
	c := "--config=" + e.conf
	e.release(t, "1.0.0", files1)
	sdupdate(t, c, "update").expect(t, 0, "update")
	mine := filepath.Join(e.install, ".sdupdate-000000000000-probe")
	if err := os.WriteFile(mine, []byte("the operator's\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	// A probe of sdupdate's own left by a kill between its link and its removal.
	stale := ".sdupdate-0123456789ab-probe"
	if err := os.WriteFile(filepath.Join(e.state, stale), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Link(filepath.Join(e.state, stale), filepath.Join(e.install, stale)); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{{"verify"}, {"status"}, {"update"}, {"recover"}} {
		sdupdate(t, append([]string{c}, args...)...).expect(t, 0, strings.Join(args, " "))
		if got, err := os.ReadFile(mine); err != nil || string(got) != "the operator's\n" {
			t.Fatalf("after %v the operator's file is %q, %v", args, got, err)
		}
	}
	for _, dir := range []string{e.install, e.state} {
		if _, err := os.Lstat(filepath.Join(dir, stale)); err == nil {
			t.Errorf("sdupdate's own stale probe is still in %s", dir)
		}
	}

	e.writeSiteManifest(t, "2.0.0", map[string]string{"agent.py": "2\n", ".sdupdate-000000000000-probe": "pwned\n"})
	r := sdupdate(t, c, "update").expect(t, 1, "a manifest naming a probe-shaped file")
	if !strings.Contains(r.stderr, "shaped like sdupdate's temp names") {
		t.Errorf("stderr: %s", r.stderr)
	}
}
