package updater

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spf13/afero"

	"github.com/sdupdate/sdupdate/snapshot"
)

// failRemoveFs fails every Remove of a path containing match.
type failRemoveFs struct {
	afero.Fs
	match string
}

func (f *failRemoveFs) Remove(name string) error {
	if f.match != "" && strings.Contains(name, f.match) {
		return &os.PathError{Op: "remove", Path: name, Err: os.ErrPermission}
	}
	return f.Fs.Remove(name)
}

// snapshotsOf sets up an installed 1.0.0 with n snapshots of it, oldest first.
func snapshotsOf(t *testing.T, n int) (*Engine, *layout, *failRemoveFs, []string) {
	t.Helper()
	s := newSite(t)
	fsys := &failRemoveFs{Fs: afero.NewMemMapFs()}
	e := newEngine(fsys, testConfig(s), nil)
	installV1(t, s, fsys, e)
	l, err := e.resolveLayout()
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range listed(t, e, l) {
		if err := e.deleteSnapshot(l, m); err != nil {
			t.Fatal(err)
		}
	}
	tick := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	e.Now = func() time.Time { tick = tick.Add(time.Minute); return tick }
	var ids []string
	for i := 0; i < n; i++ {
		f, err := snapshot.Describe(e.Fs, l.install, "agent.py")
		if err != nil {
			t.Fatal(err)
		}
		spec := snapshot.Spec{ID: snapshot.NewID(e.now(), "1.0.0"), Version: "1.0.0", Files: []snapshot.FileMeta{*f}, Leaving: []string{"agent.py"}}
		m, err := e.storeAt(l, l.snapshots).Create(context.Background(), spec)
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, m.ID)
	}
	return e, l, fsys, ids
}

func listed(t *testing.T, e *Engine, l *layout) []string {
	t.Helper()
	all, _, err := e.listSnapshots(l)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, m := range all {
		out = append(out, m.ID)
	}
	return out
}

func TestPruneKeepsTheNewestAndTheProtected(t *testing.T) {
	e, l, fsys, ids := snapshotsOf(t, 5)
	if got, want := strings.Join(listed(t, e, l), " "), strings.Join([]string{ids[4], ids[3], ids[2], ids[1], ids[0]}, " "); got != want {
		t.Fatalf("listed %s, want newest first: %s", got, want)
	}
	removed, _, err := e.pruneSnapshots(l, 2, ids[0])
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(removed, " ") != ids[2]+" "+ids[1] {
		t.Fatalf("pruned %v, want %s and %s", removed, ids[2], ids[1])
	}
	if got := strings.Join(listed(t, e, l), " "); got != strings.Join([]string{ids[4], ids[3], ids[0]}, " ") {
		t.Fatalf("after pruning: %s", got)
	}

	// A deletion that fails is reported; the others still happen.
	fsys.match = ids[3]
	removed, _, err = e.pruneSnapshots(l, 0, ids[4])
	if !errors.Is(err, os.ErrPermission) || !strings.Contains(err.Error(), ids[3]) {
		t.Fatalf("pruning with a failing delete = %v", err)
	}
	if len(removed) != 1 || removed[0] != ids[0] {
		t.Fatalf("pruning with a failing delete removed %v, want [%s]", removed, ids[0])
	}
	fsys.match = ""
	if got := strings.Join(listed(t, e, l), " "); got != ids[4]+" "+ids[3] {
		t.Fatalf("after the failing prune: %s", got)
	}
}

func TestPruneRemovesNothingWhenASnapshotIsUnreadable(t *testing.T) {
	e, l, _, ids := snapshotsOf(t, 2)
	if err := afero.WriteFile(e.Fs, filepath.Join(l.snapshots, ids[1], "record.json"), []byte("{garbage"), 0o600); err != nil {
		t.Fatal(err)
	}
	if removed, _, err := e.pruneSnapshots(l, 0, ""); err == nil || len(removed) != 0 {
		t.Fatalf("prune = %v, %v; want a refusal that removes nothing", removed, err)
	}
	if _, err := e.storeAt(l, l.snapshots).Get(ids[0]); err != nil {
		t.Fatalf("the readable snapshot is gone: %v", err)
	}
}
