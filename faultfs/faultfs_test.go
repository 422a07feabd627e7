package faultfs

import (
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spf13/afero"

	"github.com/sdupdate/sdupdate/fsutil"
)

// mutations is one call of every counted operation, in order, on a fresh
// MemMapFs-backed FS; "a" is a directory and "a/f" a file beforehand.
var mutations = []struct {
	name string
	do   func(t *testing.T, f *FS) error
}{
	{"Create", func(t *testing.T, f *FS) error { _, err := f.Create("/a/new"); return err }},
	{"OpenFile write", func(t *testing.T, f *FS) error { _, err := f.OpenFile("/a/f", os.O_WRONLY, 0); return err }},
	{"OpenFile create", func(t *testing.T, f *FS) error {
		_, err := f.OpenFile("/a/g", os.O_RDONLY|os.O_CREATE, 0o644)
		return err
	}},
	{"Mkdir", func(t *testing.T, f *FS) error { return f.Mkdir("/b", 0o755) }},
	{"MkdirAll", func(t *testing.T, f *FS) error { return f.MkdirAll("/c/d", 0o755) }},
	{"Remove", func(t *testing.T, f *FS) error { return f.Remove("/a/f") }},
	{"RemoveAll", func(t *testing.T, f *FS) error { return f.RemoveAll("/a") }},
	{"Rename", func(t *testing.T, f *FS) error { return f.Rename("/a/f", "/a/h") }},
	{"Chmod", func(t *testing.T, f *FS) error { return f.Chmod("/a/f", 0o600) }},
	{"Chown", func(t *testing.T, f *FS) error { return f.Chown("/a/f", 1, 1) }},
	{"Chtimes", func(t *testing.T, f *FS) error { return f.Chtimes("/a/f", time.Unix(1, 0), time.Unix(1, 0)) }},
	{"SymlinkIfPossible", func(t *testing.T, f *FS) error { return f.SymlinkIfPossible("/a/f", "/a/l") }},
	{"Link", func(t *testing.T, f *FS) error { return f.Link("/a/f", "/a/l") }},
	{"File.Write", func(t *testing.T, f *FS) error { _, err := openRW(t, f).Write([]byte("x")); return err }},
	{"File.WriteAt", func(t *testing.T, f *FS) error { _, err := openRW(t, f).WriteAt([]byte("x"), 1); return err }},
	{"File.WriteString", func(t *testing.T, f *FS) error { _, err := openRW(t, f).WriteString("x"); return err }},
	{"File.Truncate", func(t *testing.T, f *FS) error { return openRW(t, f).Truncate(0) }},
	{"File.Sync", func(t *testing.T, f *FS) error { return openRW(t, f).Sync() }},
	{"directory Sync", func(t *testing.T, f *FS) error {
		d, err := f.Open("/a")
		if err != nil {
			t.Fatal(err)
		}
		return d.Sync()
	}},
}

// openRW opens /a/f for writing without counting the open: it disarms the
// fault around the open so that only the file method is under test.
func openRW(t *testing.T, f *FS) afero.File {
	t.Helper()
	f.mu.Lock()
	failAt, crash := f.failAt, f.crash
	f.mu.Unlock()
	f.FailAt(0, false)
	h, err := f.OpenFile("/a/f", os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	// Re-arm relative to the open just counted, so the next op is the target.
	if failAt > 0 {
		f.FailAt(f.Ops()+1, crash)
	}
	return h
}

func newTree(t *testing.T) afero.Fs {
	t.Helper()
	base := afero.NewMemMapFs()
	if err := afero.WriteFile(base, "/a/f", []byte("old"), 0o644); err != nil {
		t.Fatal(err)
	}
	return base
}

func TestEveryMutationIsCountedAndCanFail(t *testing.T) {
	for _, m := range mutations {
		t.Run(m.name, func(t *testing.T) {
			// Unarmed: counted once, and (except Link/Symlink on MemMapFs)
			// succeeds.
			f := New(newTree(t))
			before := f.Ops()
			err := m.do(t, f)
			if m.name != "Link" && m.name != "SymlinkIfPossible" && err != nil {
				t.Fatalf("unarmed %s: %v", m.name, err)
			}
			if got := f.Ops() - before; got < 1 {
				t.Fatalf("%s not counted", m.name)
			}
			if f.Failed() {
				t.Fatal("Failed() true without a fault")
			}

			// Armed at the next op: fails with ErrInjected.
			base := newTree(t)
			f = New(base)
			f.FailAt(1, false)
			err = m.do(t, f)
			if !errors.Is(err, ErrInjected) {
				t.Fatalf("%s with fault armed: err = %v, want ErrInjected", m.name, err)
			}
			if !f.Failed() {
				t.Fatal("Failed() false after injected fault")
			}
			// A faulted operation changes nothing.
			if b, err := afero.ReadFile(base, "/a/f"); err != nil || string(b) != "old" {
				t.Fatalf("/a/f after faulted %s = %q, %v; want unchanged", m.name, b, err)
			}
		})
	}
}

func TestReadsAreNotCounted(t *testing.T) {
	f := New(newTree(t))
	f.FailAt(1, true)
	if _, err := f.Stat("/a/f"); err != nil {
		t.Fatal(err)
	}
	if _, _, err := f.LstatIfPossible("/a/f"); err != nil {
		t.Fatal(err)
	}
	h, err := f.Open("/a/f")
	if err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(h)
	if err != nil || string(b) != "old" {
		t.Fatalf("read = %q, %v", b, err)
	}
	if _, err := h.Seek(0, io.SeekStart); err != nil {
		t.Fatal(err)
	}
	if _, err := h.Stat(); err != nil {
		t.Fatal(err)
	}
	if err := h.Close(); err != nil {
		t.Fatal(err)
	}
	h, err = f.OpenFile("/a/f", os.O_RDONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	h.Close()
	d, err := f.Open("/a")
	if err != nil {
		t.Fatal(err)
	}
	if names, err := d.Readdirnames(-1); err != nil || len(names) != 1 {
		t.Fatalf("Readdirnames = %v, %v", names, err)
	}
	if f.Ops() != 0 || f.Failed() {
		t.Fatalf("after reads: Ops() = %d, Failed() = %v; want 0, false", f.Ops(), f.Failed())
	}
}

// writeTree is a small "update": five counted mutations.
func writeTree(f afero.Fs) error {
	if err := f.MkdirAll("/d", 0o755); err != nil { // 1
		return err
	}
	h, err := f.Create("/d/tmp") // 2
	if err != nil {
		return err
	}
	if _, err := h.Write([]byte("new")); err != nil { // 3
		h.Close()
		return err
	}
	if err := h.Sync(); err != nil { // 4
		h.Close()
		return err
	}
	h.Close()
	return f.Rename("/d/tmp", "/d/file") // 5
}

func TestFailOnceThenRecover(t *testing.T) {
	base := afero.NewMemMapFs()
	f := New(base)
	f.FailAt(3, false)
	err := writeTree(f)
	if !errors.Is(err, ErrInjected) {
		t.Fatalf("err = %v, want ErrInjected at the write", err)
	}
	if !strings.Contains(err.Error(), "/d/tmp") {
		t.Errorf("error %q does not name the file", err)
	}
	if f.Ops() != 3 {
		t.Fatalf("Ops() = %d, want 3", f.Ops())
	}
	// Not a crash: the next operations work again.
	if err := writeTree(f); err != nil {
		t.Fatalf("second run: %v", err)
	}
	if b, _ := afero.ReadFile(base, "/d/file"); string(b) != "new" {
		t.Fatalf("/d/file = %q", b)
	}
	if f.Ops() != 8 {
		t.Fatalf("Ops() = %d, want 8", f.Ops())
	}
}

func TestCrashFailsEverythingAfter(t *testing.T) {
	base := afero.NewMemMapFs()
	f := New(base)
	f.FailAt(2, true)
	if err := writeTree(f); !errors.Is(err, ErrInjected) {
		t.Fatalf("err = %v, want ErrInjected", err)
	}
	// The machine is "dead": every later mutation fails, reads still work.
	if err := f.Mkdir("/other", 0o755); !errors.Is(err, ErrInjected) {
		t.Fatalf("Mkdir after crash: %v", err)
	}
	if err := f.Remove("/d"); !errors.Is(err, ErrInjected) {
		t.Fatalf("Remove after crash: %v", err)
	}
	if _, err := f.Stat("/d"); err != nil {
		t.Fatalf("Stat after crash: %v", err)
	}
	// Only the first mutation reached the wrapped Fs.
	if _, err := base.Stat("/d"); err != nil {
		t.Fatalf("/d missing: %v", err)
	}
	if _, err := base.Stat("/d/tmp"); !os.IsNotExist(err) {
		t.Fatalf("/d/tmp exists after crash at Create: %v", err)
	}
	if _, err := base.Stat("/other"); !os.IsNotExist(err) {
		t.Fatalf("/other created after crash: %v", err)
	}
	// FailAt(0) revives it.
	f.FailAt(0, false)
	if err := f.Mkdir("/other", 0o755); err != nil {
		t.Fatalf("after FailAt(0): %v", err)
	}
}

// The crash-test loop callers will write: count the ops of a clean run,
// then crash at each one and check only a prefix of the work happened.
func TestCrashAtEveryStep(t *testing.T) {
	clean := New(afero.NewMemMapFs())
	if err := writeTree(clean); err != nil {
		t.Fatal(err)
	}
	total := clean.Ops()
	if total != 5 {
		t.Fatalf("clean run: %d ops, want 5", total)
	}
	for n := 1; n <= total; n++ {
		base := afero.NewMemMapFs()
		f := New(base)
		f.FailAt(n, true)
		if err := writeTree(f); !errors.Is(err, ErrInjected) {
			t.Fatalf("n=%d: err = %v", n, err)
		}
		_, errFinal := base.Stat("/d/file")
		if !os.IsNotExist(errFinal) {
			t.Fatalf("n=%d: final file exists though the rename was faulted", n)
		}
		b, errTmp := afero.ReadFile(base, "/d/tmp")
		switch {
		case n <= 2 && !os.IsNotExist(errTmp):
			t.Fatalf("n=%d: tmp exists", n)
		case n == 3 && (errTmp != nil || len(b) != 0):
			t.Fatalf("n=%d: tmp = %q, %v; want empty", n, b, errTmp)
		case n >= 4 && string(b) != "new":
			t.Fatalf("n=%d: tmp = %q, %v; want written", n, b, errTmp)
		}
	}
	// n beyond the run: nothing fails.
	f := New(afero.NewMemMapFs())
	f.FailAt(total+1, true)
	if err := writeTree(f); err != nil || f.Failed() {
		t.Fatalf("FailAt past the end: %v, Failed() = %v", err, f.Failed())
	}
}

func TestLink(t *testing.T) {
	t.Run("MemMapFs has none", func(t *testing.T) {
		f := New(newTree(t))
		err := f.Link("/a/f", "/a/l")
		if !errors.Is(err, fsutil.ErrNoHardLinks) {
			t.Fatalf("err = %v, want fsutil.ErrNoHardLinks so callers copy instead", err)
		}
		if f.Ops() != 1 {
			t.Fatalf("Ops() = %d, want 1", f.Ops())
		}
	})
	t.Run("OsFs links", func(t *testing.T) {
		dir := t.TempDir()
		old := filepath.Join(dir, "old")
		if err := os.WriteFile(old, []byte("x"), 0o644); err != nil {
			t.Fatal(err)
		}
		f := New(afero.NewOsFs())
		if err := f.Link(old, filepath.Join(dir, "new")); err != nil {
			t.Fatal(err)
		}
		a, _ := os.Stat(old)
		b, _ := os.Stat(filepath.Join(dir, "new"))
		if !os.SameFile(a, b) {
			t.Fatal("new is not a hard link to old")
		}
	})
	t.Run("base with Link method", func(t *testing.T) {
		lf := &linkFs{Fs: afero.NewMemMapFs()}
		f := New(lf)
		if err := f.Link("/x", "/y"); err != nil {
			t.Fatal(err)
		}
		if lf.calls != 1 {
			t.Fatalf("base Link called %d times", lf.calls)
		}
		f.FailAt(2, false)
		if err := f.Link("/x", "/y"); !errors.Is(err, ErrInjected) || lf.calls != 1 {
			t.Fatalf("faulted Link: err = %v, base calls = %d", err, lf.calls)
		}
	})
}

type linkFs struct {
	afero.Fs
	calls int
}

func (l *linkFs) Link(oldname, newname string) error { l.calls++; return nil }

func TestSymlinksOnOsFs(t *testing.T) {
	dir := t.TempDir()
	f := New(afero.NewOsFs())
	link := filepath.Join(dir, "l")
	if err := f.SymlinkIfPossible("target", link); err != nil {
		t.Fatal(err)
	}
	if got, err := f.ReadlinkIfPossible(link); err != nil || got != "target" {
		t.Fatalf("Readlink = %q, %v", got, err)
	}
	fi, lstat, err := f.LstatIfPossible(link)
	if err != nil || !lstat || fi.Mode()&os.ModeSymlink == 0 {
		t.Fatalf("Lstat = %v, %v, %v; want a symlink", fi, lstat, err)
	}
	if f.Ops() != 1 {
		t.Fatalf("Ops() = %d, want 1", f.Ops())
	}
}

func TestConcurrentCounting(t *testing.T) {
	f := New(afero.NewMemMapFs())
	f.FailAt(50, false)
	var wg sync.WaitGroup
	var mu sync.Mutex
	injected := 0
	for i := range 100 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			err := f.MkdirAll(filepath.Join("/c", string(rune('a'+i%26)), "x"), 0o755)
			if errors.Is(err, ErrInjected) {
				mu.Lock()
				injected++
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if f.Ops() != 100 || injected != 1 {
		t.Fatalf("Ops() = %d, injected = %d; want 100, 1", f.Ops(), injected)
	}
}
