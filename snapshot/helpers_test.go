package snapshot

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/spf13/afero"

	"github.com/sdupdate/sdupdate/fsutil"
)

// env is one install directory with a snapshot store beside it, on one filesystem.
type env struct {
	fs      afero.Fs
	root    string
	install string
	store   *Store
	onOS    bool
}

// forEachFs runs fn on an in-memory filesystem and on the OS filesystem under t.TempDir().
func forEachFs(t *testing.T, fn func(t *testing.T, e *env)) {
	t.Run("mem", func(t *testing.T) { fn(t, newEnv(t, afero.NewMemMapFs(), "/")) })
	t.Run("os", func(t *testing.T) { fn(t, newEnv(t, afero.NewOsFs(), t.TempDir())) })
}

func newEnv(t *testing.T, fsys afero.Fs, root string) *env {
	t.Helper()
	e := &env{fs: fsys, root: root, install: filepath.Join(root, "opt", "sd-agent")}
	_, e.onOS = fsys.(*afero.OsFs)
	if err := fsys.MkdirAll(e.install, 0o755); err != nil {
		t.Fatal(err)
	}
	clock := time.Date(2026, 11, 25, 6, 15, 2, 0, time.UTC)
	e.store = &Store{
		Fs:         fsys,
		Dir:        filepath.Join(root, "var", "lib", "sdupdate", "snapshots"),
		InstallDir: e.install,
		Now: func() time.Time {
			clock = clock.Add(time.Minute)
			return clock
		},
	}
	return e
}

func (e *env) path(rel string) string { return filepath.Join(e.install, filepath.FromSlash(rel)) }

// write creates or truncates an install file in place (fixture setup only).
func (e *env) write(t *testing.T, rel, content string, mode os.FileMode) {
	t.Helper()
	p := e.path(rel)
	if err := e.fs.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := afero.WriteFile(e.fs, p, []byte(content), mode); err != nil {
		t.Fatal(err)
	}
	if err := e.fs.Chmod(p, mode); err != nil {
		t.Fatal(err)
	}
}

// replace installs new content the way the engine does: a new file renamed over the old one.
func (e *env) replace(t *testing.T, rel, content string, mode os.FileMode) {
	t.Helper()
	p := e.path(rel)
	if err := e.fs.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	tmp := fsutil.TempName(filepath.Dir(p), p)
	if err := afero.WriteFile(e.fs, tmp, []byte(content), mode); err != nil {
		t.Fatal(err)
	}
	if err := e.fs.Chmod(tmp, mode); err != nil {
		t.Fatal(err)
	}
	if err := e.fs.Rename(tmp, p); err != nil {
		t.Fatal(err)
	}
}

func (e *env) remove(t *testing.T, rel string) {
	t.Helper()
	if err := e.fs.Remove(e.path(rel)); err != nil {
		t.Fatal(err)
	}
}

func (e *env) read(t *testing.T, p string) string {
	t.Helper()
	b, err := afero.ReadFile(e.fs, p)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// v1Names are the files the 1.0.0 manifest lists; v2Names those of 1.1.0.
var (
	v1Names = []string{"agent.py", "bin/sd-agent", "lib/x/y.py", "tool"}
	v2Names = []string{"agent.py", "bin/sd-agent", "new/plugin.py", "share/doc/README", "tool/main.py"}
)

// installV1 lays out version 1.0.0 plus files no manifest lists.
func (e *env) installV1(t *testing.T) {
	t.Helper()
	e.write(t, "agent.py", "print('v1')\n", 0o644)
	e.write(t, "bin/sd-agent", "#!/bin/sh\necho v1\n", 0o755)
	e.write(t, "lib/x/y.py", "y = 1\n", 0o600)
	e.write(t, "tool", "tool v1\n", 0o755)
	// untracked: config, logs, a user's own file inside a managed directory
	e.write(t, "agent.conf", "token=abc\n", 0o600)
	e.write(t, "logs/agent.log", "started\n", 0o644)
	e.write(t, "lib/local.py", "mine = True\n", 0o644)
}

// updateToV2 does what an update to 1.1.0 does to the tree: files replaced by rename (one with a
// new mode), one removed with its directory, a file turned into a directory, new nested files.
func (e *env) updateToV2(t *testing.T) {
	t.Helper()
	e.replace(t, "agent.py", "print('v2')\n", 0o644)
	e.replace(t, "bin/sd-agent", "#!/bin/sh\necho v2\n", 0o750)
	e.remove(t, "lib/x/y.py")
	e.remove(t, "lib/x")
	e.remove(t, "tool")
	e.replace(t, "tool/main.py", "main v2\n", 0o644)
	e.replace(t, "new/plugin.py", "plugin v2\n", 0o644)
	e.replace(t, "share/doc/README", "readme v2\n", 0o644)
}

// tree describes every entry under root, without following symlinks: type, permission bits and,
// for files, the sha256 of the content. Entries under skip (a relative path) are left out.
func tree(t *testing.T, fsys afero.Fs, root, skip string) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := afero.Walk(fsys, root, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		rel = filepath.ToSlash(rel)
		if skip != "" && (rel == skip || strings.HasPrefix(rel, skip+"/")) {
			if fi.IsDir() {
				return filepath.SkipDir
			}
			return nil
		}
		switch {
		case fi.Mode()&os.ModeSymlink != 0:
			out[rel] = "symlink"
		case fi.IsDir():
			out[rel] = fmt.Sprintf("dir %04o", fi.Mode().Perm())
		default:
			b, err := afero.ReadFile(fsys, p)
			if err != nil {
				return err
			}
			sum := sha256.Sum256(b)
			out[rel] = fmt.Sprintf("file %04o %s", fi.Mode().Perm(), hex.EncodeToString(sum[:8]))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// diffTrees fails t with every difference between two tree descriptions.
func diffTrees(t *testing.T, what string, got, want map[string]string) {
	t.Helper()
	var diffs []string
	for k, w := range want {
		if g, ok := got[k]; !ok {
			diffs = append(diffs, fmt.Sprintf("missing %s (%s)", k, w))
		} else if g != w {
			diffs = append(diffs, fmt.Sprintf("%s is %s, want %s", k, g, w))
		}
	}
	for k, g := range got {
		if _, ok := want[k]; !ok {
			diffs = append(diffs, fmt.Sprintf("unexpected %s (%s)", k, g))
		}
	}
	if len(diffs) > 0 {
		sort.Strings(diffs)
		t.Fatalf("%s:\n  %s", what, strings.Join(diffs, "\n  "))
	}
}

var errCrash = errors.New("simulated crash")

// hookFs calls hook before every operation (op is "read" for the ones that change nothing), so a
// test can fail one, or all from some point on, as a crash would.
type hookFs struct {
	afero.Fs
	hook func(op, name string) error
}

func (h *hookFs) Create(name string) (afero.File, error) {
	if err := h.hook("create", name); err != nil {
		return nil, err
	}
	return h.Fs.Create(name)
}

func (h *hookFs) Mkdir(name string, perm os.FileMode) error {
	if err := h.hook("mkdir", name); err != nil {
		return err
	}
	return h.Fs.Mkdir(name, perm)
}

func (h *hookFs) MkdirAll(name string, perm os.FileMode) error {
	if err := h.hook("mkdir", name); err != nil {
		return err
	}
	return h.Fs.MkdirAll(name, perm)
}

func (h *hookFs) Open(name string) (afero.File, error) {
	if err := h.hook("read", name); err != nil {
		return nil, err
	}
	return h.Fs.Open(name)
}

func (h *hookFs) OpenFile(name string, flag int, perm os.FileMode) (afero.File, error) {
	op := "read"
	if flag&(os.O_WRONLY|os.O_RDWR|os.O_CREATE|os.O_TRUNC|os.O_APPEND) != 0 {
		op = "write"
	}
	if err := h.hook(op, name); err != nil {
		return nil, err
	}
	return h.Fs.OpenFile(name, flag, perm)
}

func (h *hookFs) Remove(name string) error {
	if err := h.hook("remove", name); err != nil {
		return err
	}
	return h.Fs.Remove(name)
}

func (h *hookFs) RemoveAll(name string) error {
	if err := h.hook("removeall", name); err != nil {
		return err
	}
	return h.Fs.RemoveAll(name)
}

func (h *hookFs) Rename(oldname, newname string) error {
	if err := h.hook("rename", newname); err != nil {
		return err
	}
	return h.Fs.Rename(oldname, newname)
}

func (h *hookFs) Stat(name string) (os.FileInfo, error) {
	if err := h.hook("read", name); err != nil {
		return nil, err
	}
	return h.Fs.Stat(name)
}

func (h *hookFs) LstatIfPossible(name string) (os.FileInfo, bool, error) {
	if err := h.hook("read", name); err != nil {
		return nil, false, err
	}
	if l, ok := h.Fs.(afero.Lstater); ok {
		return l.LstatIfPossible(name)
	}
	fi, err := h.Fs.Stat(name)
	return fi, false, err
}

func (h *hookFs) Chmod(name string, mode os.FileMode) error {
	if err := h.hook("chmod", name); err != nil {
		return err
	}
	return h.Fs.Chmod(name, mode)
}

func (h *hookFs) Chown(name string, uid, gid int) error {
	if err := h.hook("chown", name); err != nil {
		return err
	}
	return h.Fs.Chown(name, uid, gid)
}

func (h *hookFs) Chtimes(name string, atime, mtime time.Time) error {
	if err := h.hook("chtimes", name); err != nil {
		return err
	}
	return h.Fs.Chtimes(name, atime, mtime)
}

func (h *hookFs) Link(oldname, newname string) error {
	if err := h.hook("link", newname); err != nil {
		return err
	}
	return fsutil.HardLink(h.Fs, oldname, newname)
}

// crashAfter returns a hook that lets n changing operations through and then fails every
// operation, reads included, as if the process had died: not even deferred cleanup runs.
func crashAfter(n int) (hook func(op, name string) error, crashed func() bool) {
	done := false
	return func(op, name string) error {
		if done {
			return errCrash
		}
		if op == "read" {
			return nil
		}
		if n == 0 {
			done = true
			return errCrash
		}
		n--
		return nil
	}, func() bool { return done }
}

// create snapshots the named files that exist as an update replacing or removing all of them
// would: each is described (hashed, stamped) and leaves the install.
func create(s *Store, ctx context.Context, id, version string, manifest []byte, runID string, names []string) (*Meta, error) {
	return createLeaving(s, ctx, id, version, manifest, runID, names, nil)
}

// createLeaving is create where only the names in leaving leave the install (nil: all).
func createLeaving(s *Store, ctx context.Context, id, version string, manifest []byte, runID string, names, leaving []string) (*Meta, error) {
	names, err := cleanNames(names)
	if err != nil {
		return nil, err
	}
	spec := Spec{ID: id, Version: version, Manifest: manifest, RunID: runID, Leaving: leaving}
	for _, n := range names {
		f, err := Describe(s.Fs, s.InstallDir, n)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, err
		}
		spec.Files = append(spec.Files, *f)
		if leaving == nil {
			spec.Leaving = append(spec.Leaving, n)
		}
	}
	return s.Create(ctx, spec)
}

// objectOf is the store's object path for the content of file name in snapshot m.
func (e *env) objectOf(t *testing.T, m *Meta, name string) string {
	t.Helper()
	for _, f := range m.Files {
		if f.Name == name {
			return e.store.objectPath(f.SHA256)
		}
	}
	t.Fatalf("snapshot %s has no %s", m.ID, name)
	return ""
}
