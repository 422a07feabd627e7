package snapshot

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/spf13/afero"

	"github.com/sdupdate/sdupdate/fsutil"
)

func TestNewID(t *testing.T) {
	now := time.Date(2026, 11, 25, 7, 15, 2, 0, time.FixedZone("CET", 3600))
	cases := []struct{ version, wantPrefix string }{
		{"1.0.0", "20261125T061502Z-1.0.0-"},
		{"", "20261125T061502Z-unknown-"},
		{"1.2.0-rc.1+build5", "20261125T061502Z-1.2.0-rc.1+build5-"},
		{"../../etc/x y", "20261125T061502Z-.._.._etc_x_y-"},
	}
	for _, c := range cases {
		id := NewID(now, c.version)
		if !strings.HasPrefix(id, c.wantPrefix) || !regexp.MustCompile(`-[0-9a-f]{6}$`).MatchString(id) {
			t.Errorf("NewID(%q) = %q, want %s<6 hex>", c.version, id, c.wantPrefix)
		}
		if err := checkID(id); err != nil {
			t.Errorf("NewID(%q) = %q is not a valid id: %v", c.version, id, err)
		}
	}
	seen := map[string]bool{}
	for i := 0; i < 200; i++ {
		id := NewID(now, "1.0.0")
		if seen[id] {
			t.Fatalf("NewID repeated %s within one second", id)
		}
		seen[id] = true
	}
	if a, b := NewID(now, "9.9.9"), NewID(now.Add(time.Second), "1.0.0"); a >= b {
		t.Errorf("ids do not sort by time: %s >= %s", a, b)
	}
	if long := NewID(now, strings.Repeat("9", 500)); len(long) > 128 {
		t.Errorf("id of a long version is %d bytes", len(long))
	}
}

func TestCreateListRestoreRoundTrip(t *testing.T) {
	forEachFs(t, func(t *testing.T, e *env) {
		ctx := context.Background()
		e.installV1(t)
		before := tree(t, e.fs, e.install, "")

		// Whitespace and <>& must come back byte for byte.
		manifest := []byte("{\n  \"version\": \"1.0.0\",\n  \"note\": \"<a&b>\"\n}\n")
		names := append([]string{"tool", "agent.py", "never-installed.py", "agent.py"}, v1Names...)
		m, err := create(e.store, ctx, "20261125T061502Z-1.0.0-abcdef", "1.0.0", manifest, "run-1", names)
		if err != nil {
			t.Fatal(err)
		}
		diffTrees(t, "install after Create", tree(t, e.fs, e.install, ""), before)

		var got []string
		for _, f := range m.Files {
			got = append(got, f.Name)
		}
		if strings.Join(got, " ") != strings.Join(v1Names, " ") {
			t.Fatalf("snapshot holds %v, want %v (sorted, no duplicates, no missing file)", got, v1Names)
		}
		if m.Bytes != int64(len("print('v1')\n")+len("#!/bin/sh\necho v1\n")+len("y = 1\n")+len("tool v1\n")) {
			t.Errorf("Bytes = %d", m.Bytes)
		}
		ySum := sha256.Sum256([]byte("y = 1\n"))
		if f := m.Files[2]; f.Name != "lib/x/y.py" || f.Mode != 0o600 || f.Size != 6 || f.SHA256 != hex.EncodeToString(ySum[:]) || !f.Stored {
			t.Errorf("lib/x/y.py recorded as %+v", f)
		}
		if d := m.Dirs; len(d) != 3 || d[0].Name != "bin" || d[1].Name != "lib" || d[2].Name != "lib/x" || d[2].Mode != 0o755 {
			t.Errorf("directories recorded as %+v, want bin, lib, lib/x", d)
		}
		if e.onOS {
			if m.Files[0].UID != os.Getuid() || m.Files[0].GID != os.Getgid() {
				t.Errorf("owner recorded as %d:%d, want %d:%d", m.Files[0].UID, m.Files[0].GID, os.Getuid(), os.Getgid())
			}
			a, _ := os.Stat(e.path("agent.py"))
			b, _ := os.Stat(e.objectOf(t, m, "agent.py"))
			if !os.SameFile(a, b) {
				t.Error("snapshot copied the leaving agent.py instead of hard-linking it")
			}
		} else if m.Files[0].UID != -1 {
			t.Errorf("owner on an in-memory fs recorded as %d, want -1", m.Files[0].UID)
		}
		objs, err := e.store.objects()
		if err != nil || len(objs) != 4 {
			t.Errorf("store holds %d objects (%v), want the 4 leaving files", len(objs), err)
		}

		list, err := e.store.List()
		if err != nil || len(list) != 1 || list[0].ID != m.ID || list[0].Version != "1.0.0" ||
			list[0].RunID != "run-1" || len(list[0].Files) != 4 || list[0].Bytes != m.Bytes || list[0].Held != m.Bytes ||
			!list[0].Complete || !list[0].Created.Equal(m.Created) {
			t.Fatalf("List = %+v, %v", list, err)
		}
		if g, err := e.store.Get(m.ID); err != nil || string(g.Manifest) != string(manifest) {
			t.Fatalf("Get manifest = %q, %v; want the exact bytes given", g.Manifest, err)
		}

		e.updateToV2(t)
		e.write(t, "logs/late.log", "written after the snapshot\n", 0o644)
		if got := e.read(t, e.objectOf(t, m, "agent.py")); got != "print('v1')\n" {
			t.Fatalf("after the update the store holds %q", got)
		}

		res, err := e.store.Restore(ctx, m.ID, v2Names)
		if err != nil {
			t.Fatal(err)
		}
		if res.Put != 4 || res.Kept != 0 || len(res.ModifiedLocally) != 0 {
			t.Errorf("Restore = %+v, want the 4 files put back", res)
		}
		want := before
		want["logs/late.log"] = tree(t, e.fs, e.install, "")["logs/late.log"]
		diffTrees(t, "install after Restore", tree(t, e.fs, e.install, ""), want)
		if e.onOS {
			noSharedInodes(t, e)
		}
		if _, err := e.fs.Stat(filepath.Join(e.store.Dir, restoringDir)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("Restore left %s behind", restoringDir)
		}
	})
}

func TestRestoreTwiceGivesSameTree(t *testing.T) {
	forEachFs(t, func(t *testing.T, e *env) {
		ctx := context.Background()
		e.installV1(t)
		before := tree(t, e.fs, e.install, "")
		m, err := create(e.store, ctx, NewID(time.Now(), "1.0.0"), "1.0.0", nil, "", v1Names)
		if err != nil {
			t.Fatal(err)
		}
		// Nothing changed since the snapshot but a mode set in place: the record's mode wins.
		if err := e.fs.Chmod(e.path("agent.py"), 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := e.store.Restore(ctx, m.ID, v1Names); err != nil {
			t.Fatal(err)
		}
		diffTrees(t, "Restore of an unchanged install", tree(t, e.fs, e.install, ""), before)

		// The objects moved back are installed files again: the next update snapshots anew.
		m, err = create(e.store, ctx, NewID(time.Now(), "1.0.0"), "1.0.0", nil, "", v1Names)
		if err != nil {
			t.Fatal(err)
		}
		e.updateToV2(t)
		for i := 0; i < 2; i++ {
			if _, err := e.store.Restore(ctx, m.ID, v2Names); err != nil {
				t.Fatalf("Restore #%d: %v", i+1, err)
			}
			diffTrees(t, "install after Restore", tree(t, e.fs, e.install, ""), before)
		}
	})
}

func TestRestoreCorruptSnapshotChangesNothing(t *testing.T) {
	corruptions := map[string]func(t *testing.T, e *env, id string){
		"object content": func(t *testing.T, e *env, id string) {
			// Bit rot in the store: same size, other bytes.
			m, _ := e.store.Get(id)
			if err := afero.WriteFile(e.fs, e.objectOf(t, m, "agent.py"), []byte("print('v?')\n"), 0o644); err != nil {
				t.Fatal(err)
			}
		},
		"object missing": func(t *testing.T, e *env, id string) {
			m, _ := e.store.Get(id)
			if err := e.fs.Remove(e.objectOf(t, m, "tool")); err != nil {
				t.Fatal(err)
			}
		},
		"record": func(t *testing.T, e *env, id string) {
			p := filepath.Join(e.store.Dir, id, recordFile)
			data, _ := afero.ReadFile(e.fs, p)
			damaged := strings.Replace(string(data), `"size":6,`, `"size":7,`, 1)
			if damaged == string(data) {
				t.Fatalf("no file of 6 bytes in %s", data)
			}
			if err := afero.WriteFile(e.fs, p, []byte(damaged), 0o600); err != nil {
				t.Fatal(err)
			}
		},
		"manifest": func(t *testing.T, e *env, id string) {
			if err := afero.WriteFile(e.fs, filepath.Join(e.store.Dir, id, "manifest"), []byte(`{"version":"6.6.6"}`), 0o600); err != nil {
				t.Fatal(err)
			}
		},
	}
	for name, corrupt := range corruptions {
		t.Run(name, func(t *testing.T) {
			forEachFs(t, func(t *testing.T, e *env) {
				ctx := context.Background()
				e.installV1(t)
				m, err := create(e.store, ctx, NewID(time.Now(), "1.0.0"), "1.0.0", []byte(`{"version":"1.0.0"}`), "", v1Names)
				if err != nil {
					t.Fatal(err)
				}
				e.updateToV2(t)
				corrupt(t, e, m.ID)
				updated := tree(t, e.fs, e.install, "")

				_, err = e.store.Restore(ctx, m.ID, v2Names)
				if !errors.Is(err, ErrCorrupt) {
					t.Fatalf("Restore = %v, want ErrCorrupt", err)
				}
				diffTrees(t, "install after a refused Restore", tree(t, e.fs, e.install, ""), updated)
			})
		})
	}
}

func TestRestoreResumesAfterCrash(t *testing.T) {
	forEachFs(t, func(t *testing.T, e *env) {
		ctx := context.Background()
		// One fresh install per crash point, each in its own directory.
		setup := func(n int) (*env, string) {
			e2 := newEnv(t, e.fs, filepath.Join(e.root, "crash", string(rune('a'+n%26))+strings.Repeat("z", n/26)))
			e2.installV1(t)
			m, err := create(e2.store, ctx, NewID(time.Now(), "1.0.0"), "1.0.0", nil, "", v1Names)
			if err != nil {
				t.Fatal(err)
			}
			e2.updateToV2(t)
			return e2, m.ID
		}
		ref, refID := setup(0)
		if _, err := ref.store.Restore(ctx, refID, v2Names); err != nil {
			t.Fatal(err)
		}
		want := tree(t, ref.fs, ref.install, "")

		for n := 0; ; n++ {
			e2, id := setup(n + 1)
			hook, crashed := crashAfter(n)
			crashing := *e2.store
			crashing.Fs = &hookFs{Fs: e2.fs, hook: hook}
			_, err := crashing.Restore(ctx, id, v2Names)
			if !crashed() {
				if err != nil {
					t.Fatalf("Restore without a crash: %v", err)
				}
				diffTrees(t, "uninterrupted Restore", tree(t, e2.fs, e2.install, ""), want)
				if n < 10 {
					t.Fatalf("Restore finished after %d changes; the crash points do not cover it", n)
				}
				t.Logf("Restore resumed correctly after a crash at each of its %d changes", n)
				break
			}
			// A crash in the last, best-effort step (the record's update) is not an error.
			if err != nil && !errors.Is(err, errCrash) {
				t.Fatalf("crash after %d changes: Restore = %v", n, err)
			}
			if _, err := e2.store.Restore(ctx, id, v2Names); err != nil {
				t.Fatalf("Restore after a crash after %d changes: %v", n, err)
			}
			diffTrees(t, "Restore resumed after a crash", tree(t, e2.fs, e2.install, ""), want)
		}
	})
}

func TestIncompleteSnapshotIgnoredAndCleanedUp(t *testing.T) {
	forEachFs(t, func(t *testing.T, e *env) {
		ctx := context.Background()
		e.installV1(t)
		good, err := create(e.store, ctx, NewID(time.Now(), "1.0.0"), "1.0.0", nil, "", v1Names)
		if err != nil {
			t.Fatal(err)
		}
		// What a crash during Create leaves: files, no meta.json.
		bad := NewID(time.Now().Add(time.Hour), "1.0.0")
		if err := e.fs.MkdirAll(filepath.Join(e.store.Dir, bad), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := afero.WriteFile(e.fs, filepath.Join(e.store.Dir, bad, manifestFile), []byte("half"), 0o600); err != nil {
			t.Fatal(err)
		}

		list, err := e.store.List()
		if err != nil || len(list) != 1 || list[0].ID != good.ID {
			t.Fatalf("List = %+v, %v; want only %s", list, err, good.ID)
		}
		if _, err := e.store.Get(bad); !errors.Is(err, ErrNotFound) || !strings.Contains(err.Error(), "incomplete") {
			t.Fatalf("Get(incomplete) = %v", err)
		}
		if _, err := e.store.Restore(ctx, bad, v1Names); !errors.Is(err, ErrNotFound) {
			t.Fatalf("Restore(incomplete) = %v", err)
		}
		removed, err := e.store.Cleanup()
		if err != nil || len(removed) != 1 || removed[0] != bad {
			t.Fatalf("Cleanup = %v, %v; want [%s]", removed, err, bad)
		}
		if _, err := e.fs.Stat(filepath.Join(e.store.Dir, bad)); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("incomplete snapshot still there: %v", err)
		}
		if _, err := e.store.Restore(ctx, good.ID, v1Names); err != nil {
			t.Fatalf("complete snapshot damaged by Cleanup: %v", err)
		}
		if removed, err := e.store.Cleanup(); err != nil || len(removed) != 0 {
			t.Fatalf("second Cleanup = %v, %v", removed, err)
		}
	})
}

// cancelAfter is a context whose Err turns to Canceled after n calls.
type cancelAfter struct {
	context.Context
	n int
}

func (c *cancelAfter) Err() error {
	if c.n <= 0 {
		return context.Canceled
	}
	c.n--
	return nil
}

func TestCreateCancelled(t *testing.T) {
	forEachFs(t, func(t *testing.T, e *env) {
		e.installV1(t)
		before := tree(t, e.fs, e.install, "")
		cancelled, cancel := context.WithCancel(context.Background())
		cancel()
		for name, ctx := range map[string]context.Context{
			"before the start":     cancelled,
			"after the first file": &cancelAfter{Context: context.Background(), n: 2},
		} {
			id := NewID(time.Now(), "1.0.0")
			if _, err := create(e.store, ctx, id, "1.0.0", nil, "", v1Names); !errors.Is(err, context.Canceled) {
				t.Fatalf("Create cancelled %s = %v, want context.Canceled", name, err)
			}
			if list, err := e.store.List(); err != nil || len(list) != 0 {
				t.Fatalf("cancelled %s: List = %+v, %v; want nothing", name, list, err)
			}
			if _, err := e.store.Get(id); !errors.Is(err, ErrNotFound) {
				t.Fatalf("cancelled %s: Get = %v", name, err)
			}
			if _, err := e.fs.Stat(filepath.Join(e.store.Dir, id)); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("cancelled %s: the partial snapshot was left behind", name)
			}
		}
		diffTrees(t, "install after cancelled Creates", tree(t, e.fs, e.install, ""), before)
	})
}

func TestCreateCrashLeavesOnlyAnIncompleteSnapshot(t *testing.T) {
	e := newEnv(t, afero.NewMemMapFs(), "/")
	e.installV1(t)
	for n := 0; ; n++ {
		hook, crashed := crashAfter(n)
		crashing := *e.store
		crashing.Fs = &hookFs{Fs: e.fs, hook: hook}
		id := NewID(time.Now(), "1.0.0")
		_, err := create(&crashing, context.Background(), id, "1.0.0", []byte(`{}`), "", v1Names)
		if !crashed() {
			if err != nil {
				t.Fatal(err)
			}
			break
		}
		list, err := e.store.List()
		if err != nil {
			t.Fatal(err)
		}
		if len(list) == 1 && list[0].ID == id {
			// Only the last change, removing the marker, comes after the record: the
			// snapshot is complete and the marker is left, for Cleanup to collect.
			if ok, _ := afero.Exists(e.fs, filepath.Join(e.store.Dir, pendingFile)); !ok {
				t.Fatalf("crash after %d changes: a complete snapshot without the marker", n)
			}
			if err := e.store.Delete(id); err != nil {
				t.Fatal(err)
			}
		} else if len(list) != 0 {
			t.Fatalf("crash after %d changes: List = %+v; want nothing", n, list)
		}
		if _, err := e.store.Cleanup(); err != nil {
			t.Fatal(err)
		}
		if objs, _ := e.store.objects(); len(objs) != 0 {
			t.Fatalf("crash after %d changes: Cleanup left objects %v", n, objs)
		}
		if ok, _ := afero.Exists(e.fs, filepath.Join(e.store.Dir, pendingFile)); ok {
			t.Fatalf("crash after %d changes: Cleanup left the marker", n)
		}
	}
	if list, _ := e.store.List(); len(list) != 1 {
		t.Fatalf("List = %+v, want the one completed snapshot", list)
	}
}

func TestCreateExistingID(t *testing.T) {
	e := newEnv(t, afero.NewMemMapFs(), "/")
	e.installV1(t)
	id := NewID(time.Now(), "1.0.0")
	if _, err := create(e.store, context.Background(), id, "1.0.0", nil, "", v1Names); err != nil {
		t.Fatal(err)
	}
	if _, err := create(e.store, context.Background(), id, "1.0.0", nil, "", v1Names[:1]); !errors.Is(err, ErrExists) {
		t.Fatalf("second Create = %v, want ErrExists", err)
	}
	if m, err := e.store.Get(id); err != nil || len(m.Files) != len(v1Names) {
		t.Fatalf("Get after the refused Create = %+v, %v", m, err)
	}
}

func TestListReportsAnUnreadableSnapshot(t *testing.T) {
	e := newEnv(t, afero.NewMemMapFs(), "/")
	e.installV1(t)
	var ids []string
	for i := 0; i < 2; i++ {
		m, err := create(e.store, context.Background(), NewID(time.Now(), "1.0.0"), "1.0.0", nil, "", v1Names)
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, m.ID)
	}
	if err := afero.WriteFile(e.fs, filepath.Join(e.store.Dir, ids[1], recordFile), []byte("{garbage"), 0o600); err != nil {
		t.Fatal(err)
	}
	list, err := e.store.List()
	if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), ids[1]) {
		t.Fatalf("List = %v, want ErrCorrupt naming %s", err, ids[1])
	}
	if len(list) != 1 || list[0].ID != ids[0] {
		t.Fatalf("List returned %+v, want the readable snapshot", list)
	}
	// Which objects the unreadable one needs is unknown, so deleting another removes none.
	objs, _ := e.store.objects()
	if err := e.store.Delete(ids[0]); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("Delete beside an unreadable snapshot = %v, want the objects kept and ErrCorrupt", err)
	}
	if left, _ := e.store.objects(); len(left) != len(objs) || len(objs) == 0 {
		t.Fatalf("objects %d before, %d after a Delete beside an unreadable snapshot", len(objs), len(left))
	}
	if _, err := e.store.Get(ids[1]); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("Get = %v, want ErrCorrupt", err)
	}
}

func TestGetAndDeleteUnknown(t *testing.T) {
	e := newEnv(t, afero.NewMemMapFs(), "/")
	for _, id := range []string{"20990101T000000Z-9.9.9-000000", "../../etc", "", ".hidden", "a/b"} {
		_, err := e.store.Get(id)
		if !errors.Is(err, ErrNotFound) || !strings.Contains(err.Error(), "sdupdate snapshots") {
			t.Errorf("Get(%q) = %v, want ErrNotFound that says how to list snapshots", id, err)
		}
		if err := e.store.Delete(id); !errors.Is(err, ErrNotFound) {
			t.Errorf("Delete(%q) = %v, want ErrNotFound", id, err)
		}
	}
}

func TestDelete(t *testing.T) {
	forEachFs(t, func(t *testing.T, e *env) {
		e.installV1(t)
		before := tree(t, e.fs, e.install, "")
		m, err := create(e.store, context.Background(), NewID(time.Now(), "1.0.0"), "1.0.0", nil, "", v1Names)
		if err != nil {
			t.Fatal(err)
		}
		if err := e.store.Delete(m.ID); err != nil {
			t.Fatal(err)
		}
		if _, err := e.store.Get(m.ID); !errors.Is(err, ErrNotFound) {
			t.Fatalf("Get after Delete = %v", err)
		}
		if _, err := e.fs.Stat(filepath.Join(e.store.Dir, m.ID)); !errors.Is(err, os.ErrNotExist) {
			t.Fatal("snapshot directory left after Delete")
		}
		// The install shared inodes with the snapshot; its files must be intact.
		diffTrees(t, "install after Delete", tree(t, e.fs, e.install, ""), before)
	})
}

func TestUnsafeNamesRefused(t *testing.T) {
	e := newEnv(t, afero.NewMemMapFs(), "/")
	e.installV1(t)
	m, err := create(e.store, context.Background(), NewID(time.Now(), "1.0.0"), "1.0.0", nil, "", v1Names)
	if err != nil {
		t.Fatal(err)
	}
	before := tree(t, e.fs, "/", "")
	for _, bad := range []string{"../agent.conf", "/etc/passwd", "a//b", "./agent.py", "a\\b", "", "bin/\x01", ".sdupdate/snapshots/x"} {
		if _, err := create(e.store, context.Background(), NewID(time.Now(), "x"), "x", nil, "", []string{"agent.py", bad}); !errors.Is(err, fsutil.ErrUnsafePath) {
			t.Errorf("Create with %q = %v, want ErrUnsafePath", bad, err)
		}
		if _, err := e.store.Restore(context.Background(), m.ID, []string{bad}); !errors.Is(err, fsutil.ErrUnsafePath) {
			t.Errorf("Restore with current %q = %v, want ErrUnsafePath", bad, err)
		}
	}
	diffTrees(t, "filesystem after refusals", tree(t, e.fs, "/", ""), before)
}

func TestRestoreRefusesDirectoryWithUntrackedFiles(t *testing.T) {
	forEachFs(t, func(t *testing.T, e *env) {
		ctx := context.Background()
		e.installV1(t)
		m, err := create(e.store, ctx, NewID(time.Now(), "1.0.0"), "1.0.0", nil, "", v1Names)
		if err != nil {
			t.Fatal(err)
		}
		e.updateToV2(t)
		// The operator keeps a file of their own in tool/, which "tool" the file would replace.
		e.write(t, "tool/local.cfg", "keep me\n", 0o644)
		before := tree(t, e.fs, e.install, "")
		if _, err := e.store.Restore(ctx, m.ID, v2Names); !errors.Is(err, fsutil.ErrUnsafePath) || !strings.Contains(err.Error(), "local.cfg") {
			t.Fatalf("Restore = %v, want a refusal naming tool/local.cfg", err)
		}
		diffTrees(t, "install after a refused Restore", tree(t, e.fs, e.install, ""), before)
	})
}
