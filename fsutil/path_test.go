package fsutil

import (
	"errors"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/spf13/afero"
)

// A tree on the real filesystem: MemMapFs has no symlinks and no special files.
func inspectTree(t *testing.T) string {
	t.Helper()
	root := t.TempDir()
	for _, d := range []string{"dir/sub"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(root, "dir/file"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("dir", filepath.Join(root, "link")); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mkfifo(filepath.Join(root, "fifo"), 0o600); err != nil {
		t.Fatal(err)
	}
	return root
}

var inspectCases = []struct {
	name    string
	kind    Kind
	blocker string
	unsafe  bool
}{
	{name: "dir", kind: Dir},
	{name: "dir/file", kind: Regular},
	{name: "dir/missing/deeper", kind: Absent},
	{name: "dir/file/below", kind: Absent, blocker: "dir/file"},
	{name: "fifo", kind: Special, blocker: "fifo"},
	{name: "fifo/below", kind: Special, blocker: "fifo"},
	{name: "link", unsafe: true},
	{name: "link/file", unsafe: true},
	{name: "dir/sub/../../link/file", unsafe: true},
}

func TestInspect(t *testing.T) {
	root := inspectTree(t)
	fsys := afero.NewOsFs()
	for _, tc := range inspectCases {
		k, blocker, err := Inspect(fsys, root, tc.name)
		if tc.unsafe {
			if !errors.Is(err, ErrUnsafePath) {
				t.Errorf("Inspect(%s) = %v, want ErrUnsafePath", tc.name, err)
			}
			continue
		}
		if err != nil || k != tc.kind || blocker != tc.blocker {
			t.Errorf("Inspect(%s) = %v, %q, %v; want %v, %q", tc.name, k, blocker, err, tc.kind, tc.blocker)
		}
	}
}

// One Inspector asked every name, twice and in both orders, answers each as Inspect does: what
// it remembers of a directory changes no verdict, a symlink on the way included.
func TestInspectorAnswersAsInspect(t *testing.T) {
	root := inspectTree(t)
	in := NewInspector(afero.NewOsFs(), root)
	n := len(inspectCases)
	for i := 0; i < 4*n; i++ {
		tc := inspectCases[i%n]
		if i/n%2 == 1 {
			tc = inspectCases[n-1-i%n]
		}
		k, blocker, fi, err := in.Inspect(tc.name)
		if tc.unsafe {
			if !errors.Is(err, ErrUnsafePath) {
				t.Errorf("Inspect(%s) = %v, want ErrUnsafePath", tc.name, err)
			}
			continue
		}
		if err != nil || k != tc.kind || blocker != tc.blocker {
			t.Errorf("Inspect(%s) = %v, %q, %v; want %v, %q", tc.name, k, blocker, err, tc.kind, tc.blocker)
		}
		if k == Regular && (fi == nil || fi.Size() != 1 || !fi.Mode().IsRegular()) {
			t.Errorf("Inspect(%s) gave file info %v, want the file's", tc.name, fi)
		}
	}
}

// countingFs counts the stats made through it.
type countingFs struct {
	afero.Fs
	stats map[string]int
}

func (c *countingFs) Stat(name string) (os.FileInfo, error) {
	c.stats[name]++
	return c.Fs.Stat(name)
}

// A plan asks about every file of a release: each directory is looked at once, not once per
// file in it, and each file once.
func TestInspectorLooksAtEachDirectoryOnce(t *testing.T) {
	mem := afero.NewMemMapFs()
	var names []string
	for d := 0; d < 5; d++ {
		for f := 0; f < 10; f++ {
			name := filepath.ToSlash(filepath.Join("lib", string(rune('a'+d)), string(rune('a'+f))))
			if err := afero.WriteFile(mem, filepath.Join("/root", name), []byte("x"), 0o644); err != nil {
				t.Fatal(err)
			}
			names = append(names, name)
		}
	}
	fsys := &countingFs{Fs: mem, stats: map[string]int{}}
	in := NewInspector(fsys, "/root")
	for _, name := range names {
		if exists, _, err := in.CheckPath(name); err != nil || !exists {
			t.Fatalf("CheckPath(%s) = %v, %v", name, exists, err)
		}
	}
	total := 0
	for p, n := range fsys.stats {
		total += n
		if n != 1 {
			t.Errorf("%s looked at %d times, want once", p, n)
		}
	}
	if want := 1 + 5 + 50; total != want {
		t.Errorf("%d stats for 50 files in 5 directories of one, want %d", total, want)
	}
}

func TestCheckPath(t *testing.T) {
	root := inspectTree(t)
	fsys := afero.NewOsFs()
	for name, want := range map[string]bool{"dir/file": true, "dir/new": false, "new/deeper": false} {
		if exists, err := CheckPath(fsys, root, name); err != nil || exists != want {
			t.Errorf("CheckPath(%s) = %v, %v; want %v", name, exists, err, want)
		}
	}
	for _, name := range []string{"dir", "fifo", "fifo/below", "dir/file/below", "link/file"} {
		if _, err := CheckPath(fsys, root, name); !errors.Is(err, ErrUnsafePath) {
			t.Errorf("CheckPath(%s) = %v, want ErrUnsafePath", name, err)
		}
	}
}

func TestRemoveEmptyParents(t *testing.T) {
	fsys := afero.NewMemMapFs()
	for _, d := range []string{"/root/a/b/c", "/root/keep/x"} {
		if err := fsys.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := afero.WriteFile(fsys, "/root/a/untracked", []byte("u"), 0o644); err != nil {
		t.Fatal(err)
	}
	touched := map[string]bool{}
	// The file a/b/c/f is already gone: its emptied directories still go, up to a, which holds
	// an untracked file.
	if err := RemoveEmptyParents(fsys, "/root", "a/b/c/f", nil, touched); err != nil {
		t.Fatal(err)
	}
	for d, want := range map[string]bool{"/root/a/b": false, "/root/a": true} {
		if _, err := fsys.Stat(d); (err == nil) != want {
			t.Errorf("%s exists: %v, want %v", d, err == nil, want)
		}
	}
	if !touched["/root/a"] || touched["/root/a/b"] {
		t.Errorf("touched %v, want /root/a and not the removed /root/a/b", touched)
	}
	// A kept directory stays even when it is empty.
	if err := RemoveEmptyParents(fsys, "/root", "keep/x/f", map[string]bool{"keep": true}, touched); err != nil {
		t.Fatal(err)
	}
	if _, err := fsys.Stat("/root/keep"); err != nil {
		t.Errorf("kept directory removed: %v", err)
	}
	if _, err := fsys.Stat("/root/keep/x"); err == nil {
		t.Error("empty /root/keep/x stayed")
	}
}

func TestCopyFileHashesAndSetsTheExactMode(t *testing.T) {
	fsys := afero.NewMemMapFs()
	if err := afero.WriteFile(fsys, "/src", []byte("hello"), 0o600); err != nil {
		t.Fatal(err)
	}
	sum, size, err := CopyFile(fsys, "/src", "/dst", Attrs{Mode: 0o751})
	if err != nil {
		t.Fatal(err)
	}
	if want, _, _ := HashFile(fsys, "/src"); sum != want || size != 5 {
		t.Errorf("CopyFile = %s, %d; want %s, 5", sum, size, want)
	}
	if sum != "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824" {
		t.Errorf("sha256 of %q = %s", "hello", sum)
	}
	if fi, err := fsys.Stat("/dst"); err != nil || fi.Mode().Perm() != 0o751 {
		t.Errorf("dst mode %v, %v; want 0751", fi.Mode(), err)
	}
}

// Inspect builds each path a component at a time without filepath.Join: the paths must be the
// ones Join gives.
func TestJoinElemIsFilepathJoin(t *testing.T) {
	for _, dir := range []string{"/", "/opt/sd-agent", "opt", ".", ""} {
		dir = filepath.Clean(dir)
		for _, elem := range []string{"a", "agent.py", "", ".", "..", "a/b", ".hidden", "..."} {
			if got, want := joinElem(dir, elem), filepath.Join(dir, elem); got != want {
				t.Errorf("joinElem(%q, %q) = %q, want %q", dir, elem, got, want)
			}
		}
	}
}
