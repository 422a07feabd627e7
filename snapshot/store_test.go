package snapshot

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spf13/afero"

	"github.com/sdupdate/sdupdate/fsutil"
)

// objectNames lists the store's objects, sorted.
func objectNames(t *testing.T, e *env) []string {
	t.Helper()
	objs, err := e.store.objects()
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for n := range objs {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

func sumOf(s string) string {
	h := sha256.Sum256([]byte(s))
	return hex.EncodeToString(h[:])
}

// An object is stored once however many snapshots name it, and it stays as long as any kept
// snapshot names it — also one that an older snapshot needs but a newer one stored.
func TestDedupAndRetentionByReference(t *testing.T) {
	forEachFs(t, func(t *testing.T, e *env) {
		ctx := context.Background()
		e.installV1(t)
		v1 := tree(t, e.fs, e.install, "")
		// 1.0.0 -> 1.1.0 changes agent.py only: "tool" stays and is not stored.
		a, err := createLeaving(e.store, ctx, NewID(time.Now(), "1.0.0"), "1.0.0", nil, "", v1Names, []string{"agent.py"})
		if err != nil {
			t.Fatal(err)
		}
		if got := objectNames(t, e); strings.Join(got, " ") != sumOf("print('v1')\n") {
			t.Fatalf("objects after the first snapshot: %v, want only agent.py's", got)
		}
		e.replace(t, "agent.py", "print('v2')\n", 0o644)

		// Rolled back, then updated again: agent.py's 1.0.0 content leaves a second time.
		if _, err := e.store.Restore(ctx, a.ID, v1Names); err != nil {
			t.Fatal(err)
		}
		b, err := createLeaving(e.store, ctx, NewID(time.Now(), "1.0.0"), "1.0.0", nil, "", v1Names, []string{"agent.py"})
		if err != nil {
			t.Fatal(err)
		}
		e.replace(t, "agent.py", "print('v2')\n", 0o644)
		// 1.1.0 -> 1.2.0 removes "tool": its content (named by a as well) now enters the store.
		c, err := createLeaving(e.store, ctx, NewID(time.Now(), "1.1.0"), "1.1.0", nil, "", v1Names, []string{"tool"})
		if err != nil {
			t.Fatal(err)
		}
		e.remove(t, "tool")
		want := []string{sumOf("print('v1')\n"), sumOf("tool v1\n")}
		sort.Strings(want)
		if got := objectNames(t, e); strings.Join(got, " ") != strings.Join(want, " ") {
			t.Fatalf("objects: %v, want one for agent.py 1.0.0 and one for tool", got)
		}
		if n, err := e.store.StoreBytes(); err != nil || n != int64(len("print('v1')\n")+len("tool v1\n")) {
			t.Fatalf("StoreBytes = %d, %v", n, err)
		}
		list, err := e.store.List()
		if err != nil || len(list) != 3 {
			t.Fatalf("List = %+v, %v", list, err)
		}
		held := map[string]int64{}
		for _, s := range list {
			held[s.ID] = s.Held
		}
		if held[a.ID] != int64(len("print('v1')\n")+len("tool v1\n")) || held[b.ID] != held[a.ID] || held[c.ID] != int64(len("tool v1\n")) {
			t.Errorf("bytes held: %v", held)
		}

		// Keep only the oldest: the object c stored is still needed by a.
		for _, id := range []string{b.ID, c.ID} {
			if err := e.store.Delete(id); err != nil {
				t.Fatal(err)
			}
		}
		if got := objectNames(t, e); strings.Join(got, " ") != strings.Join(want, " ") {
			t.Fatalf("objects after keeping only %s: %v, want %v", a.ID, got, want)
		}
		res, err := e.store.Restore(ctx, a.ID, v1Names)
		if err != nil {
			t.Fatal(err)
		}
		diffTrees(t, "install restored from the oldest snapshot", tree(t, e.fs, e.install, ""), v1)
		if e.onOS {
			noSharedInodes(t, e) // tool's object was named twice, so it was copied back
		}
		if res.Put != 2 || len(res.ModifiedLocally) != 0 {
			t.Errorf("Restore = %+v, want agent.py and tool put back", res)
		}
		if err := e.store.Delete(a.ID); err != nil {
			t.Fatal(err)
		}
		if got := objectNames(t, e); len(got) != 0 {
			t.Fatalf("objects after the last snapshot was deleted: %v", got)
		}
	})
}

// openLog records every file opened for reading, and the bytes of the regular files among them
// other than snapshot records.
type openLog struct {
	afero.Fs
	mu     sync.Mutex
	opened []string
	read   int64
}

func (o *openLog) Open(name string) (afero.File, error) {
	o.mu.Lock()
	o.opened = append(o.opened, name)
	if fi, err := o.Fs.Stat(name); err == nil && fi.Mode().IsRegular() && filepath.Base(name) != recordFile {
		o.read += fi.Size()
	}
	o.mu.Unlock()
	return o.Fs.Open(name)
}

func (o *openLog) LstatIfPossible(name string) (os.FileInfo, bool, error) {
	if l, ok := o.Fs.(afero.Lstater); ok {
		return l.LstatIfPossible(name)
	}
	fi, err := o.Fs.Stat(name)
	return fi, false, err
}

func (o *openLog) Link(oldname, newname string) error { return fsutil.HardLink(o.Fs, oldname, newname) }

// The cost of a snapshot is the files leaving and that of a restore the files put back: an
// update changing one file of many reads, in Create and Restore, only that file's bytes.
func TestSnapshotAndRestoreReadOnlyTheChangedFile(t *testing.T) {
	forEachFs(t, func(t *testing.T, e *env) {
		ctx := context.Background()
		e.installV1(t)
		before := tree(t, e.fs, e.install, "")
		// The caller hashed every file (as the plan does), well after they were installed.
		var files []FileMeta
		for _, n := range v1Names {
			f, err := Describe(e.fs, e.install, n)
			if err != nil {
				t.Fatal(err)
			}
			f.Stamp.TakenNs += int64(2 * racyWindow)
			files = append(files, *f)
		}
		log := &openLog{Fs: e.fs}
		counting := *e.store
		counting.Fs = log
		m, err := counting.Create(ctx, Spec{ID: NewID(time.Now(), "1.0.0"), Version: "1.0.0", Files: files, Leaving: []string{"agent.py"}})
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range log.opened {
			// Where hard links are impossible (in memory) the leaving file is copied, once.
			if strings.HasPrefix(p, e.install) && (e.onOS || p != e.path("agent.py")) {
				t.Errorf("Create read %s", p)
			}
		}
		e.replace(t, "agent.py", "print('v2')\n", 0o644)

		log.opened = nil
		res, err := counting.Restore(ctx, m.ID, v1Names)
		if err != nil {
			t.Fatal(err)
		}
		diffTrees(t, "install after Restore", tree(t, e.fs, e.install, ""), before)
		var read []string
		for _, p := range log.opened {
			if fi, err := e.fs.Stat(p); (err != nil || !fi.IsDir()) && filepath.Base(p) != recordFile {
				read = append(read, p)
			}
		}
		if len(read) != 1 || read[0] != e.objectOf(t, m, "agent.py") || res.Kept != 3 || res.Put != 1 {
			t.Fatalf("Restore read %v and did %+v; want only agent.py's object, 3 files kept", read, res)
		}
	})
}

// A file the update did not change, edited in place afterwards, is not the update's change to
// undo: the restore puts everything else back and leaves that file, reporting it.
func TestInPlaceEditIsLeftAsModifiedLocally(t *testing.T) {
	forEachFs(t, func(t *testing.T, e *env) {
		ctx := context.Background()
		e.installV1(t)
		before := tree(t, e.fs, e.install, "")
		m, err := createLeaving(e.store, ctx, NewID(time.Now(), "1.0.0"), "1.0.0", nil, "", v1Names, []string{"agent.py", "bin/sd-agent"})
		if err != nil {
			t.Fatal(err)
		}
		e.replace(t, "agent.py", "print('v2')\n", 0o644)
		e.replace(t, "bin/sd-agent", "#!/bin/sh\necho v2\n", 0o755)
		f, err := e.fs.OpenFile(e.path("lib/x/y.py"), os.O_WRONLY|os.O_APPEND, 0)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := f.Write([]byte("edited = True\n")); err != nil {
			t.Fatal(err)
		}
		f.Close()
		edited := tree(t, e.fs, e.install, "")["lib/x/y.py"]

		list, err := e.store.List()
		if err != nil || len(list) != 1 || list[0].Complete {
			t.Errorf("List = %+v, %v; want the snapshot listed as not complete", list, err)
		}
		res, err := e.store.Restore(ctx, m.ID, v1Names)
		if err != nil {
			t.Fatalf("Restore = %v, want success with lib/x/y.py left as modified locally", err)
		}
		if strings.Join(res.ModifiedLocally, " ") != "lib/x/y.py" || res.Put != 2 {
			t.Errorf("Restore = %+v, want agent.py and bin/sd-agent put back, lib/x/y.py modified locally", res)
		}
		want := before
		want["lib/x/y.py"] = edited
		diffTrees(t, "install after Restore", tree(t, e.fs, e.install, ""), want)
	})
}

// Retention's deletion under a crash at every one of its changes: after recovery (Cleanup), the
// snapshots kept restore whole and nothing a kept snapshot names is gone.
func TestDeleteCrashNeverLosesANeededObject(t *testing.T) {
	ctx := context.Background()
	// Three snapshots: the middle one alone names agent.py's 1.0.1 content.
	setup := func(t *testing.T) (*env, []string, map[string]string) {
		e := newEnv(t, afero.NewMemMapFs(), "/")
		e.installV1(t)
		v1 := tree(t, e.fs, e.install, "")
		var ids []string
		for i, step := range []struct {
			leaving []string
			next    string
		}{{[]string{"agent.py"}, "print('v1.0.1')\n"}, {[]string{"agent.py"}, "print('v1.0.2')\n"}, {[]string{"tool", "lib/x/y.py"}, ""}} {
			m, err := createLeaving(e.store, ctx, NewID(time.Now().Add(time.Duration(i)*time.Hour), "1.0.0"), "1.0.0", nil, "", v1Names, step.leaving)
			if err != nil {
				t.Fatal(err)
			}
			ids = append(ids, m.ID)
			if step.next != "" {
				e.replace(t, "agent.py", step.next, 0o644)
			}
		}
		return e, ids, v1
	}
	for n := 0; ; n++ {
		e, ids, v1 := setup(t)
		hook, crashed := crashAfter(n)
		crashing := *e.store
		crashing.Fs = &hookFs{Fs: e.fs, hook: hook}
		err := crashing.Delete(ids[1])
		if !crashed() && err != nil {
			t.Fatal(err)
		}
		if _, err := e.store.Cleanup(); err != nil {
			t.Fatalf("Cleanup after a crash after %d changes: %v", n, err)
		}
		list, err := e.store.List()
		if err != nil {
			t.Fatal(err)
		}
		objs, _ := e.store.objects()
		named := map[string]bool{}
		for _, s := range list {
			for _, f := range s.Files {
				named[f.SHA256] = true
				if _, ok := objs[f.SHA256]; f.Stored && !ok {
					t.Fatalf("crash after %d changes: kept snapshot %s lost the object of %s", n, s.ID, f.Name)
				}
			}
		}
		// A crash after the directory went and before the objects did leaves no trace of the
		// snapshot but the marker: Cleanup must still have collected its object.
		for sum := range objs {
			if !named[sum] {
				t.Fatalf("crash after %d changes: object %s is left, named by no snapshot", n, sum)
			}
		}
		if ok, _ := afero.Exists(e.fs, filepath.Join(e.store.Dir, pendingFile)); ok {
			t.Fatalf("crash after %d changes: Cleanup left the marker", n)
		}
		for _, id := range []string{ids[2], ids[0]} {
			if res, err := e.store.Restore(ctx, id, v1Names); err != nil || len(res.ModifiedLocally) > 0 {
				t.Fatalf("crash after %d changes: Restore %s = %+v, %v", n, id, res, err)
			}
		}
		diffTrees(t, "install restored from the oldest snapshot", tree(t, e.fs, e.install, ""), v1)
		if !crashed() {
			if _, ok := objs[sumOf("print('v1.0.1')\n")]; ok || len(list) != 2 || n < 3 {
				t.Fatalf("uninterrupted Delete after %d changes kept %d snapshots", n, len(list))
			}
			t.Logf("Delete left every needed object after a crash at each of its %d changes", n)
			return
		}
	}
}

// writeLegacy lays out a snapshot of the earlier layout, as that sdupdate made it: meta.json and
// a hard link (here a copy on the in-memory fs) of every named file in files/.
func writeLegacy(t *testing.T, e *env, id string, names []string, manifest []byte) {
	t.Helper()
	dir := filepath.Join(e.store.Dir, id)
	m := Meta{ID: id, Version: "1.0.0", Created: time.Now().UTC(), Files: []FileMeta{}}
	for _, n := range names {
		f, err := Describe(e.fs, e.install, n)
		if err != nil {
			t.Fatal(err)
		}
		f.Stamp = nil
		dst := filepath.Join(dir, legacyFilesDir, filepath.FromSlash(n))
		if err := e.fs.MkdirAll(filepath.Dir(dst), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := fsutil.LinkOrCopy(e.fs, e.path(n), dst, f.Mode); err != nil {
			t.Fatal(err)
		}
		m.Files = append(m.Files, *f)
		m.Bytes += f.Size
	}
	if manifest != nil {
		m.ManifestSHA256 = sumOf(string(manifest))
		if err := afero.WriteFile(e.fs, filepath.Join(dir, manifestFile), manifest, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	data, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	if err := afero.WriteFile(e.fs, filepath.Join(dir, legacyMetaFile), data, 0o600); err != nil {
		t.Fatal(err)
	}
}

// An operator upgrading sdupdate keeps the rollback it had: a snapshot of the earlier layout is
// listed, and restoring it converts it, after which no installed file shares its inode.
func TestLegacySnapshotListedAndRestored(t *testing.T) {
	forEachFs(t, func(t *testing.T, e *env) {
		ctx := context.Background()
		e.installV1(t)
		before := tree(t, e.fs, e.install, "")
		id := NewID(time.Now(), "1.0.0")
		writeLegacy(t, e, id, v1Names, []byte(`{"version": "1.0.0"}`))
		list, err := e.store.List()
		if err != nil || len(list) != 1 || list[0].ID != id || !list[0].Legacy || len(list[0].Files) != 4 || list[0].Held != list[0].Bytes {
			t.Fatalf("List = %+v, %v; want the legacy snapshot", list, err)
		}
		e.updateToV2(t)
		if _, err := e.store.Restore(ctx, id, v2Names); err != nil {
			t.Fatal(err)
		}
		diffTrees(t, "install restored from a legacy snapshot", tree(t, e.fs, e.install, ""), before)
		m, err := e.store.Get(id)
		if err != nil || m.Legacy || string(m.Manifest) != `{"version": "1.0.0"}` {
			t.Fatalf("Get after the restore = %+v, %v; want a converted snapshot with its manifest", m, err)
		}
		for _, gone := range []string{legacyMetaFile, legacyFilesDir} {
			if _, err := e.fs.Stat(filepath.Join(e.store.Dir, id, gone)); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("%s left after the conversion", gone)
			}
		}
		if e.onOS {
			noSharedInodes(t, e)
		}
	})
}

// A legacy snapshot shares the inodes of files that stayed installed: converting it drops those
// links, so an edit in place no longer changes the snapshot, and is then modified locally.
func TestUpgradeDropsLinksToInstalledFiles(t *testing.T) {
	e := newEnv(t, afero.NewOsFs(), t.TempDir())
	e.installV1(t)
	id := NewID(time.Now(), "1.0.0")
	writeLegacy(t, e, id, v1Names, nil)
	e.replace(t, "agent.py", "print('v2')\n", 0o644) // agent.py left the install; the rest stayed
	done, err := e.store.Upgrade()
	if err != nil || len(done) != 1 || done[0] != id {
		t.Fatalf("Upgrade = %v, %v", done, err)
	}
	noSharedInodes(t, e)
	m, err := e.store.Get(id)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range m.Files {
		if f.Stored != (f.Name == "agent.py") {
			t.Errorf("%s converted with Stored=%v", f.Name, f.Stored)
		}
	}
	if err := os.WriteFile(e.path("tool"), []byte("tool edited\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	res, err := e.store.Restore(context.Background(), id, v1Names)
	if err != nil || strings.Join(res.ModifiedLocally, " ") != "tool" {
		t.Fatalf("Restore = %+v, %v; want tool left as modified locally", res, err)
	}
	if got := e.read(t, e.path("agent.py")); got != "print('v1')\n" {
		t.Errorf("agent.py = %q after the restore", got)
	}
}

// A directory the update emptied, and so removed, comes back with its recorded mode, not the
// 0755 a new directory gets.
func TestRestoreGivesDirectoriesTheirRecordedMode(t *testing.T) {
	forEachFs(t, func(t *testing.T, e *env) {
		ctx := context.Background()
		e.installV1(t)
		if err := e.fs.Chmod(e.path("lib/x"), os.ModeDir|0o770); err != nil {
			t.Fatal(err)
		}
		before := tree(t, e.fs, e.install, "")
		m, err := create(e.store, ctx, NewID(time.Now(), "1.0.0"), "1.0.0", nil, "", v1Names)
		if err != nil {
			t.Fatal(err)
		}
		e.updateToV2(t) // removes lib/x/y.py and lib/x
		if _, err := e.store.Restore(ctx, m.ID, v2Names); err != nil {
			t.Fatal(err)
		}
		diffTrees(t, "install after Restore", tree(t, e.fs, e.install, ""), before)
		if got := tree(t, e.fs, e.install, "")["lib/x"]; got != "dir 0770" {
			t.Errorf("lib/x restored as %s, want dir 0770", got)
		}
	})
}
