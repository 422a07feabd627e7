package updater

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spf13/afero"

	"github.com/sdupdate/sdupdate/fsutil"
)

// 1.1.0 changes only a; conf.ini ships unchanged in both.
var (
	editV1 = map[string]agentFile{"a": {data: "a 1.0.0\n"}, "conf.ini": {data: "[main]\nkey=1\n"}, "agent.py": {data: crashV1["agent.py"].data}}
	editV2 = map[string]agentFile{"a": {data: "a 1.1.0\n"}, "conf.ini": {data: "[main]\nkey=1\n"}, "agent.py": {data: crashV2["agent.py"].data}}
)

func appendInPlace(t *testing.T, fsys afero.Fs, name, data string) {
	t.Helper()
	f, err := fsys.OpenFile(installDir+"/"+name, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write([]byte(data)); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
}

// The case that matters: after the update an operator appends to conf.ini in place; `sdupdate
// rollback` must restore a, leave conf.ini as edited and say so, with the server gone (a
// rollback never needs the network).
func TestRollbackAfterAnInPlaceEditLeavesItAndNeedsNoNetwork(t *testing.T) {
	s := newSite(t)
	fsys := afero.NewMemMapFs()
	e := newEngine(fsys, testConfig(s), nil)
	s.publish(t, "1.0.0", editV1)
	if _, err := e.Update(context.Background(), UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	s.publish(t, "1.1.0", editV2)
	if _, err := e.Update(context.Background(), UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	appendInPlace(t, fsys, "conf.ini", "x\n")
	s.Close()

	res, err := e.Rollback(context.Background(), "")
	if err != nil || res.Outcome != OutcomeRolledBack {
		t.Fatalf("rollback = %+v, %v; want rolled back", res, err)
	}
	wantTree := want(editV1, nil)
	wantTree["conf.ini"] = "[main]\nkey=1\nx\n 0644"
	equalTrees(t, tree(t, fsys, installDir), wantTree)
	st, err := e.Status(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if st.LastRun == nil || strings.Join(st.LastRun.ModifiedLocally, ",") != "conf.ini" {
		t.Fatalf("status last run %+v, want conf.ini named as modified locally", st.LastRun)
	}
}

// The same during an automatic rollback: the new agent rewrites conf.ini in place, then fails
// its check. The rollback restores the old version and ends "rolled back" (exit 3), not exit 4.
func TestAutomaticRollbackAfterAnInPlaceEditEndsRolledBack(t *testing.T) {
	s := newSite(t)
	fsys := afero.NewMemMapFs()
	agent := &versionAgent{fs: fsys, running: "preinstalled"}
	cfg := testConfig(s)
	cfg.Unit = "sd-agent.service"
	e := newEngine(fsys, cfg, agent)
	s.publish(t, "1.0.0", editV1)
	if _, err := e.Update(context.Background(), UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	agent.bad = editV2["agent.py"].data
	e.HookApplied = func(*Record) { appendInPlace(t, fsys, "conf.ini", "written by 1.1.0\n") }
	s.publish(t, "1.1.0", editV2)
	res, err := e.Update(context.Background(), UpdateOptions{})
	if ExitCode(err) != CodeRolledBack || res.Outcome != OutcomeRolledBack {
		t.Fatalf("update = %+v, exit %d (%v); want rolled back, exit 3", res, ExitCode(err), err)
	}
	if got, _ := afero.ReadFile(fsys, installDir+"/a"); string(got) != editV1["a"].data {
		t.Errorf("a = %q after the rollback", got)
	}
	if agent.runs() != oldVersion {
		t.Errorf("the agent runs %s, want %s", agent.runs(), oldVersion)
	}
}

// A snapshot holds only what the update changed: one file of many changes, one object is
// stored, and the listing and status count its bytes once.
func TestSnapshotStoresOnlyTheChangedFile(t *testing.T) {
	s := newSite(t)
	fsys := afero.NewMemMapFs()
	e := newEngine(fsys, testConfig(s), nil)
	s.publish(t, "1.0.0", editV1)
	if _, err := e.Update(context.Background(), UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	next := map[string]agentFile{"a": {data: "a 1.1.0\n"}, "conf.ini": editV1["conf.ini"], "agent.py": editV1["agent.py"]}
	s.publish(t, "1.1.0", next)
	if _, err := e.Update(context.Background(), UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	objs, err := afero.ReadDir(fsys, stateDir+"/snapshots/objects")
	if err != nil || len(objs) != 1 {
		t.Fatalf("the store holds %d objects (%v), want 1", len(objs), err)
	}
	st, err := e.Status(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	held := int64(len(editV1["a"].data))
	if st.StoreBytes != held || len(st.Snapshots) != 2 || st.Snapshots[0].Bytes != held || st.Snapshots[0].Files != 3 || !st.Snapshots[0].Complete {
		t.Fatalf("status: store %d bytes, snapshots %+v; want %d bytes held by the newest, complete", st.StoreBytes, st.Snapshots, held)
	}
}

// On the real filesystem, with the stat index: an update that changes one file and removes
// another reads no installed file (the plan trusts the index, the snapshot links), and rolling
// it back reads no installed file either (the store's objects are read, the unchanged files'
// stamps vouch for them).
func TestUpdateAndRollbackReadNoUnchangedFile(t *testing.T) {
	s := newSite(t)
	e, fs := osEngine(t, s)
	s.publish(t, "1.0.0", v1)
	if _, err := e.Update(context.Background(), UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	s.publish(t, "1.1.0", v2)
	if _, err := e.Update(context.Background(), UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	// Older than the stamps' and the index's racy windows, as an install is between updates.
	time.Sleep(1100 * time.Millisecond)
	s.publish(t, "1.2.0", map[string]agentFile{
		"agent.py": {data: "print('agent 1.2.0')\n"}, "bin/sd-agent": v2["bin/sd-agent"], "lib/common.py": v2["lib/common.py"],
	})
	fs.reset()
	if _, err := e.Update(context.Background(), UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	files := []string{"agent.py", "bin/sd-agent", "lib/common.py", "lib/new.py"}
	opened := fs.reset()
	for _, n := range files {
		if opened[n] > 0 {
			t.Errorf("the update opened installed %s", n)
		}
	}
	res, err := e.Rollback(context.Background(), "")
	if err != nil || res.Outcome != OutcomeRolledBack {
		t.Fatalf("rollback = %+v, %v", res, err)
	}
	opened = fs.reset()
	for _, n := range files {
		if opened[n] > 0 {
			t.Errorf("the rollback opened installed %s", n)
		}
	}
	if got, _ := afero.ReadFile(e.Fs, filepath.Join(e.Config.Directory, "lib", "new.py")); string(got) != v2["lib/new.py"].data {
		t.Errorf("lib/new.py = %q after the rollback", got)
	}
}

// Link makes the counting filesystem link like the OS one it wraps, so that snapshots link the
// files that leave instead of copying them.
func (c *openCounter) Link(oldname, newname string) error {
	return fsutil.HardLink(c.Fs, oldname, newname)
}
