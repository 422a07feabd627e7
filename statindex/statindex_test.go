package statindex

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spf13/afero"
)

const sumA = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"

func statFile(t *testing.T, fsys afero.Fs, p string) Stat {
	t.Helper()
	fi, err := fsys.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	return StatOf(fi)
}

// saved writes a file, records it, and saves the index a moment later, so the file is not racy.
func saved(t *testing.T, fsys afero.Fs, dir string) (*Index, string) {
	t.Helper()
	p := filepath.Join(dir, "bin", "my agent")
	fsys.MkdirAll(filepath.Dir(p), 0o755)
	if err := afero.WriteFile(fsys, p, []byte("v1"), 0o644); err != nil {
		t.Fatal(err)
	}
	x := New("manifest-sum")
	x.Set("bin/my agent", statFile(t, fsys, p), sumA)
	time.Sleep(20 * time.Millisecond) // past the filesystem's timestamp granularity
	if err := x.Save(fsys, filepath.Join(dir, "index")); err != nil {
		t.Fatal(err)
	}
	return x, p
}

func TestRoundTripAndLookup(t *testing.T) {
	for name, fsys := range map[string]afero.Fs{"os": afero.NewOsFs(), "mem": afero.NewMemMapFs()} {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			_, p := saved(t, fsys, dir)
			x, err := Load(fsys, filepath.Join(dir, "index"))
			if err != nil {
				t.Fatal(err)
			}
			if x.Installed != "manifest-sum" || x.Len() != 1 {
				t.Fatalf("loaded index: installed %q, %d entries", x.Installed, x.Len())
			}
			if sum, ok := x.Lookup("bin/my agent", statFile(t, fsys, p)); !ok || sum != sumA {
				t.Fatalf("unchanged file not trusted: %q %v", sum, ok)
			}
			// Same size, new content: the mtime (and ctime) move on.
			time.Sleep(10 * time.Millisecond)
			afero.WriteFile(fsys, p, []byte("v2"), 0o644)
			if _, ok := x.Lookup("bin/my agent", statFile(t, fsys, p)); ok {
				t.Fatal("rewritten file trusted")
			}
			if _, ok := x.Lookup("other", statFile(t, fsys, p)); ok {
				t.Fatal("unknown name trusted")
			}
		})
	}
}

func TestMtimeRestoredIsCaughtByCtime(t *testing.T) {
	fsys := afero.NewOsFs()
	dir := t.TempDir()
	_, p := saved(t, fsys, dir)
	before, _ := os.Stat(p)
	x, _ := Load(fsys, filepath.Join(dir, "index"))
	os.WriteFile(p, []byte("v2"), 0o644)
	os.Chtimes(p, before.ModTime(), before.ModTime())
	if _, ok := x.Lookup("bin/my agent", statFile(t, fsys, p)); ok {
		t.Fatal("a file rewritten with its mtime put back was trusted")
	}
}

func TestRacyEntryIsNotTrusted(t *testing.T) {
	fsys := afero.NewMemMapFs()
	x := New("m")
	afero.WriteFile(fsys, "/f", []byte("x"), 0o644)
	st := statFile(t, fsys, "/f")
	x.Set("f", st, sumA)
	x.Save(fsys, "/index")
	// The index was written after the file, within the same tick of a coarse clock.
	fsys.Chtimes("/index", time.Unix(0, st.Mtime), time.Unix(0, st.Mtime))
	y, err := Load(fsys, "/index")
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := y.Lookup("f", st); ok {
		t.Fatal("entry whose mtime is not older than the index was trusted")
	}
	if _, ok := x.Lookup("f", st); ok {
		t.Fatal("an index never loaded from disk was trusted")
	}
}

func TestDamagedIndexIsRefused(t *testing.T) {
	fsys := afero.NewMemMapFs()
	x := New("m")
	for i, n := range []string{"a", "b/c", "d e"} {
		x.Set(n, Stat{Size: int64(i), Mtime: 1, Ctime: 2, Ino: 3, Dev: 4}, sumA)
	}
	x.Save(fsys, "/index")
	good, _ := afero.ReadFile(fsys, "/index")
	for i := range good {
		for _, b := range []byte{'0', ' ', '\n', 'x'} {
			if good[i] == b {
				continue
			}
			bad := append([]byte(nil), good...)
			bad[i] = b
			afero.WriteFile(fsys, "/index", bad, 0o600)
			if _, err := Load(fsys, "/index"); !errors.Is(err, ErrDamaged) {
				t.Fatalf("byte %d set to %q: err = %v, want ErrDamaged", i, b, err)
			}
		}
	}
	for n := 0; n < len(good); n++ {
		afero.WriteFile(fsys, "/index", good[:n], 0o600)
		if _, err := Load(fsys, "/index"); !errors.Is(err, ErrDamaged) {
			t.Fatalf("cut at %d: err = %v, want ErrDamaged", n, err)
		}
	}
	afero.WriteFile(fsys, "/index", append(good, '\n'), 0o600)
	if _, err := Load(fsys, "/index"); !errors.Is(err, ErrDamaged) || !strings.Contains(err.Error(), "/index") {
		t.Fatalf("trailing data: err = %v", err)
	}
}

func TestMissingIndexIsEmpty(t *testing.T) {
	x, err := Load(afero.NewMemMapFs(), "/nope")
	if err != nil || x.Len() != 0 || x.Installed != "" {
		t.Fatalf("missing index: %+v, %v", x, err)
	}
}

func TestRefreshAfterAHardLink(t *testing.T) {
	fsys := afero.NewOsFs()
	dir := t.TempDir()
	_, p := saved(t, fsys, dir)
	x, _ := Load(fsys, filepath.Join(dir, "index"))
	time.Sleep(10 * time.Millisecond)
	if err := os.Link(p, filepath.Join(dir, "snapshot-link")); err != nil {
		t.Fatal(err)
	}
	now := statFile(t, fsys, p)
	if _, ok := x.Lookup("bin/my agent", now); ok {
		t.Fatal("entry still matches after a link changed the ctime: the test proves nothing")
	}
	x.Refresh("bin/my agent", func() (Stat, error) { return now, nil })
	if _, ok := x.Lookup("bin/my agent", now); !ok {
		t.Fatal("refreshed entry not trusted")
	}
	// A refresh of a file that was rewritten drops the entry.
	os.WriteFile(p, []byte("v3"), 0o644)
	x.Refresh("bin/my agent", func() (Stat, error) { return statFile(t, fsys, p), nil })
	if x.Len() != 0 {
		t.Fatal("rewritten file kept its entry on refresh")
	}
}
