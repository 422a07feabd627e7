package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// A file that becomes a directory between versions (v1 ships x, v2 ships x/y) used to be refused
// as an unsafe path forever, though x is sdupdate's own file being replaced. Both directions
// install, and rollback restores either way.
func TestFileBecomesDirectoryAndBack(t *testing.T) {
	e := newEnv(t)
	c := "--config=" + e.conf
	v1 := map[string]string{"agent.py": "1\n", "plugins": "a file in 1.0.0\n"}
	v2 := map[string]string{"agent.py": "2\n", "plugins/cpu.py": "a directory in 1.1.0\n", "plugins/sub/mem.py": "deeper\n"}
	v3 := map[string]string{"agent.py": "3\n", "plugins": "a file again in 1.2.0\n"}

	e.release(t, "1.0.0", v1)
	sdupdate(t, c, "update").expect(t, 0, "update to 1.0.0")
	tree1 := hashTree(t, e.install)
	e.release(t, "1.1.0", v2)
	sdupdate(t, c, "update").expect(t, 0, "update 1.0.0 -> 1.1.0: file to directory")
	tree2 := hashTree(t, e.install)
	if _, ok := tree2["plugins/sub/mem.py"]; !ok {
		t.Fatalf("1.1.0 not installed: %v", tree2)
	}
	sdupdate(t, c, "verify").expect(t, 0, "verify 1.1.0")
	sdupdate(t, c, "rollback").expect(t, 0, "rollback 1.1.0 -> 1.0.0: directory back to file")
	sameTree(t, "after rollback to 1.0.0", hashTree(t, e.install), tree1)

	sdupdate(t, c, "update").expect(t, 0, "update to 1.1.0 again")
	e.release(t, "1.2.0", v3)
	sdupdate(t, c, "update").expect(t, 0, "update 1.1.0 -> 1.2.0: directory to file")
	if got := mustRead(t, filepath.Join(e.install, "plugins")); got != v3["plugins"] {
		t.Fatalf("plugins is %q", got)
	}
	sdupdate(t, c, "verify").expect(t, 0, "verify 1.2.0")
	sdupdate(t, c, "rollback").expect(t, 0, "rollback 1.2.0 -> 1.1.0: file back to directory")
	sameTree(t, "after rollback to 1.1.0", hashTree(t, e.install), tree2)

	// A directory holding a file no manifest lists is the operator's: it is not replaced.
	if err := os.WriteFile(filepath.Join(e.install, "plugins", "local.cfg"), []byte("mine\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	r := sdupdate(t, c, "update").expect(t, 1, "update to 1.2.0 over a directory holding an untracked file")
	if !strings.Contains(r.stderr, "plugins") {
		t.Errorf("stderr: %s", r.stderr)
	}
	if got := mustRead(t, filepath.Join(e.install, "plugins", "local.cfg")); got != "mine\n" {
		t.Errorf("the untracked file is %q", got)
	}
}
