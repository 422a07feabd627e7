package fsutil

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/spf13/afero"
)

func TestWriteFileAtomicLeavesNoTemp(t *testing.T) {
	for name, fsys := range map[string]afero.Fs{"mem": afero.NewMemMapFs(), "os": afero.NewOsFs()} {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			if name == "mem" {
				dir = "/state"
				_ = fsys.MkdirAll(dir, 0o700)
			}
			p := filepath.Join(dir, "txn.json")
			for _, content := range []string{"first", "second"} {
				if err := WriteFileAtomic(fsys, p, []byte(content), 0o600); err != nil {
					t.Fatal(err)
				}
				got, _ := afero.ReadFile(fsys, p)
				if string(got) != content {
					t.Fatalf("content %q, want %q", got, content)
				}
			}
			entries, _ := afero.ReadDir(fsys, dir)
			if len(entries) != 1 {
				t.Fatalf("directory holds %d entries, want only txn.json", len(entries))
			}
			fi, _ := fsys.Stat(p)
			if fi.Mode().Perm() != 0o600 {
				t.Fatalf("mode %v, want 0600", fi.Mode().Perm())
			}
		})
	}
}

func TestLinkOrCopySharesInodeOnOS(t *testing.T) {
	fsys := afero.NewOsFs()
	dir := t.TempDir()
	src, dst := filepath.Join(dir, "a"), filepath.Join(dir, "b")
	if err := os.WriteFile(src, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := LinkOrCopy(fsys, src, dst, 0o644); err != nil {
		t.Fatal(err)
	}
	a, _ := os.Stat(src)
	b, _ := os.Stat(dst)
	if !os.SameFile(a, b) {
		t.Fatal("expected a hard link on the OS filesystem")
	}
	mem := afero.NewMemMapFs()
	_ = afero.WriteFile(mem, "/a", []byte("y"), 0o644)
	if err := LinkOrCopy(mem, "/a", "/b", 0o644); err != nil {
		t.Fatal(err)
	}
	if got, _ := afero.ReadFile(mem, "/b"); string(got) != "y" {
		t.Fatalf("copy holds %q", got)
	}
}

func TestCheckPathRefusesSymlinks(t *testing.T) {
	fsys := afero.NewOsFs()
	root := t.TempDir()
	outside := t.TempDir()
	_ = os.MkdirAll(filepath.Join(root, "real"), 0o755)
	_ = os.WriteFile(filepath.Join(root, "real", "f"), nil, 0o644)
	_ = os.WriteFile(filepath.Join(root, "file"), nil, 0o644)
	_ = os.Symlink(outside, filepath.Join(root, "lib"))
	_ = os.Symlink(filepath.Join(root, "real", "f"), filepath.Join(root, "link"))
	cases := []struct {
		name       string
		wantExists bool
		wantErr    bool
	}{
		{"real/f", true, false},
		{"real/new", false, false},
		{"new/dir/f", false, false},
		{"lib/x", false, true},
		{"link", false, true},
		{"file/x", false, true},
		{"real", false, true},
	}
	for _, c := range cases {
		exists, err := CheckPath(fsys, root, c.name)
		if (err != nil) != c.wantErr || exists != c.wantExists {
			t.Errorf("CheckPath(%q) = %v, %v; want exists=%v err=%v", c.name, exists, err, c.wantExists, c.wantErr)
		}
		if err != nil && !errors.Is(err, ErrUnsafePath) {
			t.Errorf("CheckPath(%q) error %v does not wrap ErrUnsafePath", c.name, err)
		}
	}
}

// noPathChmod is the real filesystem with chmod by path refused: in a directory another user may
// write, a chmod by path after the close can be sent through a symlink swapped in for the name.
type noPathChmod struct{ afero.Fs }

func (noPathChmod) Chmod(name string, _ os.FileMode) error {
	return fmt.Errorf("chmod by path of %s", name)
}

func TestWriteFileAtomicSetsTheModeThroughTheOpenFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "sdupdate.prom")
	old := syscall.Umask(0o077)
	defer syscall.Umask(old)
	if err := WriteFileAtomicVia(noPathChmod{afero.NewOsFs()}, path, "sdupdate.prom.tmp", []byte("x\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o644 {
		t.Errorf("mode %v, want 0644 despite umask 077", fi.Mode().Perm())
	}
}
