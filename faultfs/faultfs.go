// Package faultfs wraps an afero.Fs and makes a chosen mutating operation
// fail, so that crash-safety can be tested by failing every step of an
// update in turn.
//
// Only operations that change the filesystem are counted and faulted:
// Create, OpenFile with a write or create flag, Mkdir, MkdirAll, Remove,
// RemoveAll, Rename, Chmod, Chown, Chtimes, Link, SymlinkIfPossible, and on
// open files Write, WriteAt, WriteString, Truncate and Sync (Sync also on
// directories, which is how a rename is made durable). Reads are never
// faulted, so code under test can always inspect what state it left behind.
//
// Two modes:
//
//   - FailAt(n, false): the n-th mutating operation fails, later ones succeed
//     (a transient error, e.g. ENOSPC for one write);
//   - FailAt(n, true): the n-th and every later mutating operation fail, as
//     if the machine lost power at that instant. The test then recovers using
//     the wrapped Fs directly, which holds exactly what reached "disk".
//
// A faulted operation has no effect on the wrapped Fs.
package faultfs

import (
	"errors"
	"os"
	"sync"
	"time"

	"github.com/spf13/afero"

	"github.com/sdupdate/sdupdate/fsutil"
)

// ErrInjected is the cause of every injected failure; test with errors.Is.
var ErrInjected = errors.New("faultfs: injected fault")

// FS is a fault-injecting afero.Fs. It is safe for concurrent use; with
// concurrent mutations the numbering follows the order in which they reach
// the FS.
type FS struct {
	base afero.Fs

	mu      sync.Mutex
	ops     int
	failAt  int
	crash   bool
	crashed bool
	failed  bool
}

var (
	_ afero.Fs        = (*FS)(nil)
	_ afero.Symlinker = (*FS)(nil)
	_ afero.File      = (*file)(nil)
)

// New wraps base. No fault is armed until FailAt is called.
func New(base afero.Fs) *FS {
	return &FS{base: base}
}

// FailAt arms a fault for the n-th mutating operation (1-based), counted
// from the FS's creation. With crash set, that operation and every later one
// fail. n = 0 disarms (and ends a simulated crash).
func (f *FS) FailAt(n int, crash bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.failAt = n
	f.crash = crash
	f.crashed = false
}

// Ops returns how many mutating operations were attempted so far, failed
// ones included.
func (f *FS) Ops() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.ops
}

// Failed reports whether an injected failure happened.
func (f *FS) Failed() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.failed
}

// Base returns the wrapped Fs.
func (f *FS) Base() afero.Fs { return f.base }

// step counts one mutating operation and reports whether it must fail.
func (f *FS) step() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.ops++
	fail := f.crashed || (f.failAt > 0 && f.ops == f.failAt)
	if fail {
		f.failed = true
		if f.crash {
			f.crashed = true
		}
	}
	return fail
}

func pathErr(op, name string) error {
	return &os.PathError{Op: op, Path: name, Err: ErrInjected}
}

func linkErr(op, oldname, newname string) error {
	return &os.LinkError{Op: op, Old: oldname, New: newname, Err: ErrInjected}
}

// Name names the wrapped Fs too, to make test failures readable.
func (f *FS) Name() string { return "faultfs(" + f.base.Name() + ")" }

func (f *FS) Create(name string) (afero.File, error) {
	if f.step() {
		return nil, pathErr("create", name)
	}
	fh, err := f.base.Create(name)
	if err != nil {
		return nil, err
	}
	return &file{File: fh, fs: f}, nil
}

func (f *FS) Mkdir(name string, perm os.FileMode) error {
	if f.step() {
		return pathErr("mkdir", name)
	}
	return f.base.Mkdir(name, perm)
}

func (f *FS) MkdirAll(path string, perm os.FileMode) error {
	if f.step() {
		return pathErr("mkdir", path)
	}
	return f.base.MkdirAll(path, perm)
}

// Open never fails by injection: opening for reading changes nothing. The
// returned file still counts writes and syncs made through it.
func (f *FS) Open(name string) (afero.File, error) {
	fh, err := f.base.Open(name)
	if err != nil {
		return nil, err
	}
	return &file{File: fh, fs: f}, nil
}

// writeFlags are the open flags that can change the filesystem.
const writeFlags = os.O_WRONLY | os.O_RDWR | os.O_CREATE | os.O_TRUNC | os.O_APPEND

func (f *FS) OpenFile(name string, flag int, perm os.FileMode) (afero.File, error) {
	if flag&writeFlags != 0 && f.step() {
		return nil, pathErr("open", name)
	}
	fh, err := f.base.OpenFile(name, flag, perm)
	if err != nil {
		return nil, err
	}
	return &file{File: fh, fs: f}, nil
}

func (f *FS) Remove(name string) error {
	if f.step() {
		return pathErr("remove", name)
	}
	return f.base.Remove(name)
}

func (f *FS) RemoveAll(path string) error {
	if f.step() {
		return pathErr("removeall", path)
	}
	return f.base.RemoveAll(path)
}

func (f *FS) Rename(oldname, newname string) error {
	if f.step() {
		return linkErr("rename", oldname, newname)
	}
	return f.base.Rename(oldname, newname)
}

func (f *FS) Stat(name string) (os.FileInfo, error) { return f.base.Stat(name) }

func (f *FS) Chmod(name string, mode os.FileMode) error {
	if f.step() {
		return pathErr("chmod", name)
	}
	return f.base.Chmod(name, mode)
}

func (f *FS) Chown(name string, uid, gid int) error {
	if f.step() {
		return pathErr("chown", name)
	}
	return f.base.Chown(name, uid, gid)
}

func (f *FS) Chtimes(name string, atime, mtime time.Time) error {
	if f.step() {
		return pathErr("chtimes", name)
	}
	return f.base.Chtimes(name, atime, mtime)
}

// Link makes a hard link. It is counted like any mutation, then handed to
// fsutil.HardLink on the wrapped Fs, so a filesystem without hard links
// (MemMapFs) answers with fsutil.ErrNoHardLinks and callers copy instead,
// exactly as they would without this wrapper.
func (f *FS) Link(oldname, newname string) error {
	if f.step() {
		return linkErr("link", oldname, newname)
	}
	return fsutil.HardLink(f.base, oldname, newname)
}

// LstatIfPossible delegates to the wrapped Fs when it can Lstat, and
// otherwise falls back to Stat, reporting false as afero's contract says.
func (f *FS) LstatIfPossible(name string) (os.FileInfo, bool, error) {
	if l, ok := f.base.(afero.Lstater); ok {
		return l.LstatIfPossible(name)
	}
	fi, err := f.base.Stat(name)
	return fi, false, err
}

// SymlinkIfPossible is counted as a mutation; a wrapped Fs without symlinks
// gives afero's ErrNoSymlink.
func (f *FS) SymlinkIfPossible(oldname, newname string) error {
	if f.step() {
		return linkErr("symlink", oldname, newname)
	}
	if l, ok := f.base.(afero.Linker); ok {
		return l.SymlinkIfPossible(oldname, newname)
	}
	return &os.LinkError{Op: "symlink", Old: oldname, New: newname, Err: afero.ErrNoSymlink}
}

func (f *FS) ReadlinkIfPossible(name string) (string, error) {
	if l, ok := f.base.(afero.LinkReader); ok {
		return l.ReadlinkIfPossible(name)
	}
	return "", &os.PathError{Op: "readlink", Path: name, Err: afero.ErrNoReadlink}
}

// file counts the mutating methods of an open file.
type file struct {
	afero.File
	fs *FS
}

func (h *file) Write(p []byte) (int, error) {
	if h.fs.step() {
		return 0, pathErr("write", h.Name())
	}
	return h.File.Write(p)
}

func (h *file) WriteAt(p []byte, off int64) (int, error) {
	if h.fs.step() {
		return 0, pathErr("write", h.Name())
	}
	return h.File.WriteAt(p, off)
}

func (h *file) WriteString(s string) (int, error) {
	if h.fs.step() {
		return 0, pathErr("write", h.Name())
	}
	return h.File.WriteString(s)
}

func (h *file) Truncate(size int64) error {
	if h.fs.step() {
		return pathErr("truncate", h.Name())
	}
	return h.File.Truncate(size)
}

func (h *file) Sync() error {
	if h.fs.step() {
		return pathErr("sync", h.Name())
	}
	return h.File.Sync()
}
