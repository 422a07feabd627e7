package snapshot

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/spf13/afero"

	"github.com/sdupdate/sdupdate/fsutil"
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
		_, err := e.store.Create(ctx, NewID(time.Now(), "1.0.0"), "1.0.0", nil, "", []string{"agent.py", "lib/x/secret"})
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
		if _, err := e.store.Create(ctx, NewID(time.Now(), "1.0.0"), "1.0.0", nil, "", v1Names); !errors.Is(err, fsutil.ErrUnsafePath) {
			t.Fatalf("Create = %v, want ErrUnsafePath", err)
		}
		if list, _ := e.store.List(); len(list) != 0 {
			t.Fatalf("List = %+v", list)
		}
		unchanged(t, e, outside, install, out)
	})

	t.Run("restore into a symlinked directory", func(t *testing.T) {
		e, outside := setup(t)
		m, err := e.store.Create(ctx, NewID(time.Now(), "1.0.0"), "1.0.0", nil, "", v1Names)
		if err != nil {
			t.Fatal(err)
		}
		e.updateToV2(t)
		pointAt(t, e, "lib/x", outside) // y.py would land outside
		install, out := tree(t, e.fs, e.install, ""), tree(t, e.fs, outside, "")
		if err := e.store.Restore(ctx, m.ID, v2Names); !errors.Is(err, fsutil.ErrUnsafePath) {
			t.Fatalf("Restore = %v, want ErrUnsafePath", err)
		}
		unchanged(t, e, outside, install, out)
	})

	t.Run("restore removing through a symlinked directory", func(t *testing.T) {
		e, outside := setup(t)
		m, err := e.store.Create(ctx, NewID(time.Now(), "1.0.0"), "1.0.0", nil, "", []string{"agent.py"})
		if err != nil {
			t.Fatal(err)
		}
		pointAt(t, e, "plugins", outside)
		install, out := tree(t, e.fs, e.install, ""), tree(t, e.fs, outside, "")
		// The current manifest lists plugins/secret: removing it would delete a file outside.
		if err := e.store.Restore(ctx, m.ID, []string{"agent.py", "plugins/secret"}); !errors.Is(err, fsutil.ErrUnsafePath) {
			t.Fatalf("Restore = %v, want ErrUnsafePath", err)
		}
		unchanged(t, e, outside, install, out)
	})

	t.Run("restore over a symlinked file", func(t *testing.T) {
		e, outside := setup(t)
		m, err := e.store.Create(ctx, NewID(time.Now(), "1.0.0"), "1.0.0", nil, "", v1Names)
		if err != nil {
			t.Fatal(err)
		}
		pointAt(t, e, "agent.py", filepath.Join(outside, "secret"))
		install, out := tree(t, e.fs, e.install, ""), tree(t, e.fs, outside, "")
		if err := e.store.Restore(ctx, m.ID, v1Names); !errors.Is(err, fsutil.ErrUnsafePath) {
			t.Fatalf("Restore = %v, want ErrUnsafePath", err)
		}
		unchanged(t, e, outside, install, out)
	})
}

// With StateDirectory on another filesystem the snapshots live in <install>/.sdupdate/; they must
// still be hard links and Restore must leave that directory alone.
func TestSnapshotsInsideInstall(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, afero.NewOsFs(), t.TempDir())
	e.store.Dir = filepath.Join(e.install, ".sdupdate", "snapshots")
	e.installV1(t)
	before := tree(t, e.fs, e.install, ".sdupdate")
	m, err := e.store.Create(ctx, NewID(time.Now(), "1.0.0"), "1.0.0", nil, "", v1Names)
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(e.store.Dir)
	if err != nil || fi.Mode().Perm() != 0o700 {
		t.Fatalf("snapshot directory: %v, mode %v; want 0700", err, fi.Mode().Perm())
	}
	for _, f := range m.Files {
		a, _ := os.Stat(e.path(f.Name))
		b, _ := os.Stat(e.store.filePath(m.ID, f.Name))
		if !os.SameFile(a, b) {
			t.Errorf("%s was copied, not hard-linked", f.Name)
		}
	}
	e.updateToV2(t)
	if err := e.store.Restore(ctx, m.ID, v2Names); err != nil {
		t.Fatal(err)
	}
	diffTrees(t, "install after Restore", tree(t, e.fs, e.install, ".sdupdate"), before)
	if err := e.store.Verify(m.ID); err != nil {
		t.Fatal(err)
	}
}

func TestRestoreOwner(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("giving files to another user needs root")
	}
	ctx := context.Background()
	e := newEnv(t, afero.NewOsFs(), t.TempDir())
	e.installV1(t)
	if err := os.Chown(e.path("agent.py"), 4321, 4322); err != nil {
		t.Fatal(err)
	}
	m, err := e.store.Create(ctx, NewID(time.Now(), "1.0.0"), "1.0.0", nil, "", v1Names)
	if err != nil {
		t.Fatal(err)
	}
	if m.Files[0].UID != 4321 || m.Files[0].GID != 4322 {
		t.Fatalf("owner recorded as %d:%d", m.Files[0].UID, m.Files[0].GID)
	}
	e.updateToV2(t) // agent.py now belongs to root
	if err := e.store.Restore(ctx, m.ID, v2Names); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(e.path("agent.py"))
	if err != nil {
		t.Fatal(err)
	}
	if st := fi.Sys().(*syscall.Stat_t); st.Uid != 4321 || st.Gid != 4322 {
		t.Fatalf("restored agent.py belongs to %d:%d, want 4321:4322", st.Uid, st.Gid)
	}
}
