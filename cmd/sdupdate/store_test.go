package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/sdupdate/sdupdate/internal/need"
)

// objects lists the snapshot store's objects (the state directory is on the install's
// filesystem here).
func (e *env) objects(t *testing.T) []os.DirEntry {
	t.Helper()
	entries, err := os.ReadDir(filepath.Join(e.state, "snapshots", "objects"))
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	return entries
}

// noSharedInode fails t when an installed file is the same inode as an object of the store.
func (e *env) noSharedInode(t *testing.T) {
	t.Helper()
	for _, o := range e.objects(t) {
		ofi, err := os.Stat(filepath.Join(e.state, "snapshots", "objects", o.Name()))
		if err != nil {
			t.Fatal(err)
		}
		_ = filepath.Walk(e.install, func(p string, fi os.FileInfo, err error) error {
			if err == nil && fi.Mode().IsRegular() && os.SameFile(fi, ofi) {
				t.Errorf("installed %s shares its inode with the snapshot store", p)
			}
			return nil
		})
	}
}

type statusDoc struct {
	StoreBytes int64 `json:"store_bytes"`
	Snapshots  []struct {
		ID       string `json:"id"`
		Version  string `json:"version"`
		Bytes    int64  `json:"bytes"`
		Complete bool   `json:"complete"`
	} `json:"snapshots"`
	LastRun struct {
		Result          string   `json:"result"`
		ModifiedLocally []string `json:"modified_locally"`
	} `json:"last_run"`
}

func (e *env) status(t *testing.T) statusDoc {
	t.Helper()
	r := sdupdate(t, "--config="+e.conf, "status", "--json").expect(t, 0, "status --json")
	var st statusDoc
	if err := json.Unmarshal([]byte(r.stdout), &st); err != nil {
		t.Fatalf("status --json: %v\n%s", err, r.stdout)
	}
	return st
}

// The case that matters: 1.1.0 changes only a; after the update an operator appends to conf.ini in
// place. The rollback must restore a, leave conf.ini as the operator left it, say so, and end
// "rolled back" (exit 0), not "snapshot is corrupt".
func TestInPlaceEditAfterUpdateStillRollsBack(t *testing.T) {
	e := newEnv(t)
	c := "--config=" + e.conf
	v1 := map[string]string{"a": "a 1.0.0\n", "conf.ini": "[main]\nkey=1\n"}
	e.release(t, "1.0.0", v1)
	sdupdate(t, c, "update").expect(t, 0, "install 1.0.0")
	e.release(t, "1.1.0", map[string]string{"a": "a 1.1.0\n", "conf.ini": v1["conf.ini"]})
	sdupdate(t, c, "update").expect(t, 0, "update to 1.1.0")
	if n := len(e.objects(t)); n != 1 {
		t.Errorf("the store holds %d objects after a one-file change, want 1 (a's old content)", n)
	}
	e.noSharedInode(t)
	f, err := os.OpenFile(filepath.Join(e.install, "conf.ini"), os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteString("x\n"); err != nil {
		t.Fatal(err)
	}
	f.Close()

	r := sdupdate(t, c, "rollback").expect(t, 0, "rollback after an in-place edit")
	if !strings.Contains(r.stderr, "modified locally") || !strings.Contains(r.stderr, "conf.ini") {
		t.Errorf("rollback does not name conf.ini as modified locally:\n%s", r.stderr)
	}
	if !strings.Contains(r.stdout, "left as modified locally: conf.ini\n") {
		t.Errorf("rollback's outcome on stdout does not name conf.ini as left as it is:\n%s", r.stdout)
	}
	if got := mustRead(t, filepath.Join(e.install, "a")); got != v1["a"] {
		t.Errorf("a = %q after the rollback, want %q", got, v1["a"])
	}
	if got := mustRead(t, filepath.Join(e.install, "conf.ini")); got != v1["conf.ini"]+"x\n" {
		t.Errorf("conf.ini = %q after the rollback, want the operator's edit kept", got)
	}
	e.noSharedInode(t)
	st := e.status(t)
	if st.LastRun.Result != "rolled-back" || strings.Join(st.LastRun.ModifiedLocally, ",") != "conf.ini" {
		t.Errorf("status --json last_run: %+v, want rolled-back with conf.ini modified locally", st.LastRun)
	}
	if r := sdupdate(t, c, "status").expect(t, 0, "status"); !strings.Contains(r.stdout, "modified locally") {
		t.Errorf("status does not say conf.ini is modified locally:\n%s", r.stdout)
	}
}

// Three versions, then `rollback --to` the first snapshot: every file of 1.0.0 comes back,
// from the store or from the install, and the store holds each content once.
func TestRollbackTwoVersionsBack(t *testing.T) {
	e := newEnv(t)
	c := "--config=" + e.conf
	e.release(t, "1.0.0", files1)
	sdupdate(t, c, "update").expect(t, 0, "install 1.0.0")
	v1 := hashTree(t, e.install)
	e.release(t, "1.1.0", files2)
	sdupdate(t, c, "update").expect(t, 0, "update to 1.1.0")
	e.release(t, "1.2.0", map[string]string{"agent.py": "print('1.2.0')\n", "bin/sd-agent": files2["bin/sd-agent"], "lib/new.py": "newer\n"})
	sdupdate(t, c, "update").expect(t, 0, "update to 1.2.0")

	st := e.status(t)
	var id string
	for _, s := range st.Snapshots {
		if s.Version == "1.0.0" {
			id = s.ID
		}
		if !s.Complete {
			t.Errorf("snapshot %s (%s) listed as incomplete", s.ID, s.Version)
		}
	}
	// agent.py 1.0.0 and 1.1.0, plugins/old.py, lib/new.py 1.1.0: four contents, each once.
	want := int64(len(files1["agent.py"]) + len(files2["agent.py"]) + len(files1["plugins/old.py"]) + len(files2["lib/new.py"]))
	if id == "" || st.StoreBytes != want || len(e.objects(t)) != 4 {
		t.Fatalf("status: snapshot of 1.0.0 %q, store_bytes %d (want %d), %d objects (want 4)", id, st.StoreBytes, want, len(e.objects(t)))
	}
	sdupdate(t, c, "rollback", "--to", id).expect(t, 0, "rollback two versions back")
	sameTree(t, "after rollback --to the 1.0.0 snapshot", hashTree(t, e.install), v1)
	sdupdate(t, c, "verify").expect(t, 0, "verify after rollback")
	e.noSharedInode(t)
}

// Run as root: a directory the update empties (and so removes) comes back on rollback with its
// recorded owner and mode (the agent's user, 0770), and so do the files in it.
func TestRollbackRestoresOwnersAndModes(t *testing.T) {
	need.Root(t, "restoring another user's files")
	e := newEnv(t)
	c := "--config=" + e.conf
	e.release(t, "1.0.0", files1)
	sdupdate(t, c, "update").expect(t, 0, "install 1.0.0")
	plugins := filepath.Join(e.install, "plugins")
	for _, p := range []string{plugins, filepath.Join(plugins, "old.py"), filepath.Join(e.install, "agent.py")} {
		if err := os.Chown(p, 4321, 4322); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Chmod(plugins, 0o770); err != nil {
		t.Fatal(err)
	}
	e.release(t, "1.1.0", files2) // drops plugins/old.py: plugins/ goes with it
	sdupdate(t, c, "update").expect(t, 0, "update to 1.1.0")
	if _, err := os.Stat(plugins); !os.IsNotExist(err) {
		t.Fatalf("plugins/ still there after the update: %v", err)
	}
	sdupdate(t, c, "rollback").expect(t, 0, "rollback")
	for p, want := range map[string][3]uint32{
		plugins: {4321, 4322, 0o770}, filepath.Join(plugins, "old.py"): {4321, 4322, 0o644},
		filepath.Join(e.install, "agent.py"): {4321, 4322, 0o644}, filepath.Join(e.install, "bin"): {0, 0, 0o755},
	} {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		st := fi.Sys().(*syscall.Stat_t)
		if got := [3]uint32{st.Uid, st.Gid, uint32(fi.Mode().Perm())}; got != want {
			t.Errorf("%s after rollback: %d:%d %04o, want %d:%d %04o", p, got[0], got[1], got[2], want[0], want[1], want[2])
		}
	}
}
