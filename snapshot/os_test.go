package snapshot

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/spf13/afero"

	"github.com/sdupdate/sdupdate/fsutil"

	"github.com/sdupdate/sdupdate/internal/need"
)

// Symlinks exist only on the OS filesystem; these tests make sure nothing is ever read, written
// or removed through one.
func TestSymlinkedDirectoryRefused(t *testing.T) {
	ctx := context.Background()
	setup := func(t *testing.T) (*env, string) {
		e := newEnv(t, afero.NewOsFs(), t.TempDir())
		outside := filepath.Join(e.root, "outside")
		if err := os.MkdirAll(outside, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(outside, "secret"), []byte("not yours\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		e.installV1(t)
		return e, outside
	}
	pointAt := func(t *testing.T, e *env, rel, target string) {
		t.Helper()
		if err := os.RemoveAll(e.path(rel)); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(target, e.path(rel)); err != nil {
			t.Fatal(err)
		}
	}
	unchanged := func(t *testing.T, e *env, outside string, install, out map[string]string) {
		t.Helper()
		diffTrees(t, "install", tree(t, e.fs, e.install, ""), install)
		diffTrees(t, "directory outside the install", tree(t, e.fs, outside, ""), out)
	}

	t.Run("create through a symlinked directory", func(t *testing.T) {
		e, outside := setup(t)
		pointAt(t, e, "lib/x", outside)
		install, out := tree(t, e.fs, e.install, ""), tree(t, e.fs, outside, "")
		_, err := create(e.store, ctx, NewID(time.Now(), "1.0.0"), "1.0.0", nil, "", []string{"agent.py", "lib/x/secret"})
		if !errors.Is(err, fsutil.ErrUnsafePath) {
			t.Fatalf("Create = %v, want ErrUnsafePath", err)
		}
		if entries, _ := os.ReadDir(e.store.Dir); len(entries) != 0 {
			t.Fatalf("Create left %d entries in %s", len(entries), e.store.Dir)
		}
		unchanged(t, e, outside, install, out)
	})

	t.Run("create of a symlinked file", func(t *testing.T) {
		e, outside := setup(t)
		pointAt(t, e, "agent.py", filepath.Join(outside, "secret"))
		install, out := tree(t, e.fs, e.install, ""), tree(t, e.fs, outside, "")
		if _, err := create(e.store, ctx, NewID(time.Now(), "1.0.0"), "1.0.0", nil, "", v1Names); !errors.Is(err, fsutil.ErrUnsafePath) {
			t.Fatalf("Create = %v, want ErrUnsafePath", err)
		}
		if list, _ := e.store.List(); len(list) != 0 {
			t.Fatalf("List = %+v", list)
		}
		unchanged(t, e, outside, install, out)
	})

	t.Run("restore into a symlinked directory", func(t *testing.T) {
		e, outside := setup(t)
		m, err := create(e.store, ctx, NewID(time.Now(), "1.0.0"), "1.0.0", nil, "", v1Names)
		if err != nil {
			t.Fatal(err)
		}
		e.updateToV2(t)
		pointAt(t, e, "lib/x", outside) // y.py would land outside
		install, out := tree(t, e.fs, e.install, ""), tree(t, e.fs, outside, "")
		if _, err := e.store.Restore(ctx, m.ID, v2Names); !errors.Is(err, fsutil.ErrUnsafePath) {
			t.Fatalf("Restore = %v, want ErrUnsafePath", err)
		}
		unchanged(t, e, outside, install, out)
	})

	t.Run("restore removing through a symlinked directory", func(t *testing.T) {
		e, outside := setup(t)
		m, err := create(e.store, ctx, NewID(time.Now(), "1.0.0"), "1.0.0", nil, "", []string{"agent.py"})
		if err != nil {
			t.Fatal(err)
		}
		pointAt(t, e, "plugins", outside)
		install, out := tree(t, e.fs, e.install, ""), tree(t, e.fs, outside, "")
		// The current manifest lists plugins/secret: removing it would delete a file outside.
		if _, err := e.store.Restore(ctx, m.ID, []string{"agent.py", "plugins/secret"}); !errors.Is(err, fsutil.ErrUnsafePath) {
			t.Fatalf("Restore = %v, want ErrUnsafePath", err)
		}
		unchanged(t, e, outside, install, out)
	})

	t.Run("restore over a symlinked file", func(t *testing.T) {
		e, outside := setup(t)
		m, err := create(e.store, ctx, NewID(time.Now(), "1.0.0"), "1.0.0", nil, "", v1Names)
		if err != nil {
			t.Fatal(err)
		}
		pointAt(t, e, "agent.py", filepath.Join(outside, "secret"))
		install, out := tree(t, e.fs, e.install, ""), tree(t, e.fs, outside, "")
		if _, err := e.store.Restore(ctx, m.ID, v1Names); !errors.Is(err, fsutil.ErrUnsafePath) {
			t.Fatalf("Restore = %v, want ErrUnsafePath", err)
		}
		unchanged(t, e, outside, install, out)
	})
}

// With StateDirectory on another filesystem the snapshots live in <install>/.sdupdate/; the
// leaving files must still be hard-linked (not copied) into the store, no file that stays may
// share an inode with it, and Restore must leave that directory alone.
func TestSnapshotsInsideInstall(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, afero.NewOsFs(), t.TempDir())
	e.store.Dir = filepath.Join(e.install, ".sdupdate", "snapshots")
	e.installV1(t)
	before := tree(t, e.fs, e.install, ".sdupdate")
	m, err := create(e.store, ctx, NewID(time.Now(), "1.0.0"), "1.0.0", nil, "", v1Names)
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(e.store.Dir)
	if err != nil || fi.Mode().Perm() != 0o700 {
		t.Fatalf("snapshot directory: %v, mode %v; want 0700", err, fi.Mode().Perm())
	}
	for _, f := range m.Files {
		a, _ := os.Stat(e.path(f.Name))
		b, _ := os.Stat(e.objectOf(t, m, f.Name))
		if !os.SameFile(a, b) {
			t.Errorf("%s was copied, not hard-linked", f.Name)
		}
	}
	e.updateToV2(t)
	if _, err := e.store.Restore(ctx, m.ID, v2Names); err != nil {
		t.Fatal(err)
	}
	diffTrees(t, "install after Restore", tree(t, e.fs, e.install, ".sdupdate"), before)
	noSharedInodes(t, e)
}

// noSharedInodes fails t when any file of the install is the same inode as an object.
func noSharedInodes(t *testing.T, e *env) {
	t.Helper()
	objs, err := os.ReadDir(filepath.Join(e.store.Dir, objectsDir))
	if err != nil {
		t.Fatal(err)
	}
	_ = filepath.Walk(e.install, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		if fi.IsDir() && fi.Name() == ".sdupdate" {
			return filepath.SkipDir
		}
		if !fi.Mode().IsRegular() {
			return nil
		}
		for _, o := range objs {
			ofi, err := os.Stat(filepath.Join(e.store.Dir, objectsDir, o.Name()))
			if err == nil && os.SameFile(fi, ofi) {
				t.Errorf("installed %s shares its inode with object %s", p, o.Name())
			}
		}
		return nil
	})
}

// Rollback gives files and directories back their recorded owner and mode: a directory the
// update emptied (and so removed) comes back as the agent user's 0770, not as root's 0755.
func TestRestoreOwnerAndMode(t *testing.T) {
	need.Root(t, "giving files to another user")
	ctx := context.Background()
	e := newEnv(t, afero.NewOsFs(), t.TempDir())
	e.installV1(t)
	for _, p := range []string{"agent.py", "lib", "lib/x", "lib/x/y.py"} {
		if err := os.Chown(e.path(p), 4321, 4322); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Chmod(e.path("lib/x"), 0o770); err != nil {
		t.Fatal(err)
	}
	m, err := create(e.store, ctx, NewID(time.Now(), "1.0.0"), "1.0.0", nil, "", v1Names)
	if err != nil {
		t.Fatal(err)
	}
	if m.Files[0].UID != 4321 || m.Files[0].GID != 4322 {
		t.Fatalf("owner recorded as %d:%d", m.Files[0].UID, m.Files[0].GID)
	}
	e.updateToV2(t) // agent.py now belongs to root; lib/x is gone
	if _, err := e.store.Restore(ctx, m.ID, v2Names); err != nil {
		t.Fatal(err)
	}
	for p, want := range map[string]string{
		"agent.py": "4321:4322 0644", "lib": "4321:4322 0755", "lib/x": "4321:4322 0770",
		"lib/x/y.py": "4321:4322 0600", "bin/sd-agent": "0:0 0755",
	} {
		fi, err := os.Stat(e.path(p))
		if err != nil {
			t.Fatal(err)
		}
		st := fi.Sys().(*syscall.Stat_t)
		if got := fmt.Sprintf("%d:%d %04o", st.Uid, st.Gid, fi.Mode().Perm()); got != want {
			t.Errorf("restored %s is %s, want %s", p, got, want)
		}
	}
	noSharedInodes(t, e)
}

// What a Create killed after linking leaves, when another snapshot names the same content:
// an object that is the installed file's inode. Unshare gives it an inode of its own and keeps
// it; an object nothing names goes.
func TestUnshareGivesALinkedObjectItsOwnInode(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, afero.NewOsFs(), t.TempDir())
	e.installV1(t)
	a, err := createLeaving(e.store, ctx, NewID(time.Now(), "1.0.0"), "1.0.0", nil, "", v1Names, []string{"agent.py"})
	if err != nil {
		t.Fatal(err)
	}
	e.replace(t, "agent.py", "print('v2')\n", 0o644)
	named := e.objectOf(t, a, "tool")
	unnamed := filepath.Join(e.store.Dir, objectsDir, sumOf("unnamed"))
	if err := os.WriteFile(e.path("extra"), []byte("unnamed"), 0o644); err != nil {
		t.Fatal(err)
	}
	for from, to := range map[string]string{e.path("tool"): named, e.path("extra"): unnamed} {
		if err := os.Link(from, to); err != nil {
			t.Fatal(err)
		}
	}
	if err := e.store.Unshare([]string{"tool", "extra", "../escape", "agent.py"}); err != nil {
		t.Fatal(err)
	}
	noSharedInodes(t, e)
	if got := e.read(t, named); got != "tool v1\n" {
		t.Errorf("the object tool's snapshot needs holds %q", got)
	}
	if _, err := os.Stat(unnamed); !os.IsNotExist(err) {
		t.Errorf("an object no snapshot names was kept: %v", err)
	}
	if got := e.read(t, e.path("tool")); got != "tool v1\n" {
		t.Errorf("installed tool = %q", got)
	}
}
