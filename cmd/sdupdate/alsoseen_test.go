package main

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// A second `rollback` used to restore the empty snapshot taken before the first install, which
// uninstalled the agent with exit 0. That snapshot is no target of a plain rollback.
func TestSecondRollbackDoesNotUninstall(t *testing.T) {
	e := newEnv(t)
	c := "--config=" + e.conf
	e.release(t, "1.0.0", files1)
	sdupdate(t, c, "update").expect(t, 0, "update to 1.0.0")
	v1 := hashTree(t, e.install)
	e.release(t, "1.1.0", files2)
	sdupdate(t, c, "update").expect(t, 0, "update to 1.1.0")
	sdupdate(t, c, "rollback").expect(t, 0, "rollback to 1.0.0")
	sameTree(t, "after the first rollback", hashTree(t, e.install), v1)
	sdupdate(t, c, "rollback")
	if tree := hashTree(t, e.install); len(tree) == 0 {
		t.Fatal("the second rollback uninstalled the agent")
	}
	if r := sdupdate(t, c, "status").expect(t, 0, "status"); strings.Contains(r.stdout, "version:    unknown") {
		t.Errorf("the installed version became unknown:\n%s", r.stdout)
	}
}

// A name with a bidi override is shown escaped in a plan, so it cannot pass for another name.
func TestPlanEscapesBidiNames(t *testing.T) {
	e := newEnv(t)
	e.writeSiteManifest(t, "1.0.0", map[string]string{"evil\u202etxt.exe": "x\n"})
	r := sdupdate(t, "--config="+e.conf, "update", "--dry-run").expect(t, 0, "dry run")
	if strings.Contains(r.stdout, "\u202e") || !strings.Contains(r.stdout, `"evil\u202etxt.exe"`) {
		t.Errorf("plan shows the name raw:\n%q", r.stdout)
	}
}

// Reading commands answer without creating a missing install directory; update creates it.
func TestReadingCommandsDoNotCreateTheInstall(t *testing.T) {
	e := newEnv(t)
	c := "--config=" + e.conf
	e.release(t, "1.0.0", files1)
	sdupdate(t, c, "status").expect(t, 0, "status")
	sdupdate(t, c, "snapshots").expect(t, 0, "snapshots")
	sdupdate(t, c, "check").expect(t, 100, "check")
	sdupdate(t, c, "verify").expect(t, 1, "verify before an install")
	if _, err := os.Lstat(e.install); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("a reading command created %s: %v", e.install, err)
	}
	sdupdate(t, c, "update").expect(t, 0, "update")
	if len(hashTree(t, e.install)) != 3 {
		t.Error("update did not install")
	}
}

// StateDirectory inside Directory is refused by the configuration when the paths say so; through
// a symlinked parent it is refused too, once the paths are resolved.
func TestStateInsideInstallThroughASymlinkIsRefused(t *testing.T) {
	e := newEnv(t)
	if err := os.MkdirAll(filepath.Join(e.install, "var"), 0o755); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(e.root, "varlink")
	if err := os.Symlink(filepath.Join(e.install, "var"), link); err != nil {
		t.Fatal(err)
	}
	e.state = filepath.Join(link, "sdupdate")
	e.writeConf(t, "")
	e.release(t, "1.0.0", files1)
	r := sdupdate(t, "--config="+e.conf, "update").expect(t, 1, "update with the state inside the install")
	if !strings.Contains(r.stderr, "inside one another once symlinks are resolved") {
		t.Errorf("stderr: %s", r.stderr)
	}
	if _, err := os.Lstat(filepath.Join(e.install, "var", "sdupdate")); err == nil {
		t.Error("the state directory was created inside the install")
	}
}
