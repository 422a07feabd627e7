package fsutil

import (
	"errors"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"strings"

	"github.com/spf13/afero"
)

// Kind is what a slash path inside a root turned out to be, by Inspect.
type Kind int

const (
	// Absent: the path does not exist. When it cannot (a regular file is where one of its
	// directories must be), Inspect names that file as the blocker.
	Absent Kind = iota
	Regular
	Dir
	// Special: neither a regular file nor a directory (device, socket, pipe), at the path itself
	// or on the way to it; Inspect names it as the blocker.
	Special
)

// Inspect walks the slash path name inside root one component at a time, never following a
// symlink, and says what name is. A symlink anywhere on the way is an error wrapping
// ErrUnsafePath; blocker is the slash prefix of name that stops the walk (a regular file where a
// directory must be, or a special file), "" when nothing does.
func Inspect(fsys afero.Fs, root, name string) (k Kind, blocker string, err error) {
	k, blocker, _, err = (&Inspector{fs: fsys, root: filepath.Clean(root)}).Inspect(name)
	return k, blocker, err
}

// CheckPath verifies that the slash path name inside root runs through real directories only
// (no symlink, no regular file where a directory is needed) and that name itself, if it exists,
// is a regular file. It returns whether name exists. Parents that do not exist yet are fine: they
// will be created as real directories.
func CheckPath(fsys afero.Fs, root, name string) (exists bool, err error) {
	exists, _, err = (&Inspector{fs: fsys, root: filepath.Clean(root)}).CheckPath(name)
	return exists, err
}

// Inspector is Inspect and CheckPath for many names under one root, as a plan asks them: each
// directory on the way is looked at once, however many names lie in it, and the name itself
// once. What it saw of a directory is what it answers for the rest of its use, so it serves one
// step that acts on what it found (a plan), not a tree that changes meanwhile.
type Inspector struct {
	fs   afero.Fs
	root string
	dirs map[string]lstatResult // nil: nothing remembered
}

type lstatResult struct {
	fi  os.FileInfo
	err error
}

// joinElem is filepath.Join(dir, elem) for dir clean already (the Inspector's root is cleaned
// once, and a plain name keeps a clean path clean) and elem one component of a slash path: a
// plain name is appended as it is, which spares a plan of 5,000 files 10,000 Cleans of long
// paths. Anything else ("", ".", "..", a separator) is left to filepath.Join.
func joinElem(dir, elem string) string {
	if elem == "" || elem == "." || elem == ".." || strings.ContainsRune(elem, filepath.Separator) || dir == "" || dir == "." {
		return filepath.Join(dir, elem)
	}
	if strings.HasSuffix(dir, string(filepath.Separator)) { // the root directory
		return dir + elem
	}
	return dir + string(filepath.Separator) + elem
}

// NewInspector returns an Inspector of the names under root.
func NewInspector(fsys afero.Fs, root string) *Inspector {
	return &Inspector{fs: fsys, root: filepath.Clean(root), dirs: map[string]lstatResult{}}
}

// Inspect is the package's Inspect; fi is the lstat of name itself when it exists.
func (in *Inspector) Inspect(name string) (k Kind, blocker string, fi os.FileInfo, err error) {
	cur := in.root
	for start := 0; ; {
		end := strings.IndexByte(name[start:], '/')
		last := end < 0
		if last {
			end = len(name)
		} else {
			end += start
		}
		prefix := name[:end]
		cur = joinElem(cur, name[start:end])
		fi, err := in.lstat(cur, prefix, last)
		if errors.Is(err, os.ErrNotExist) {
			return Absent, "", nil, nil
		}
		if err != nil {
			return Absent, "", nil, fmt.Errorf("cannot inspect %s: %w", cur, err)
		}
		switch {
		case fi.Mode()&os.ModeSymlink != 0:
			want := "directory"
			if last {
				want = "file"
			}
			return Absent, "", nil, fmt.Errorf("%s is a symlink; sdupdate never writes through symlinks (remove it or replace it with a real %s): %w",
				cur, want, ErrUnsafePath)
		case fi.IsDir():
			if last {
				return Dir, "", fi, nil
			}
		case fi.Mode().IsRegular():
			if last {
				return Regular, "", fi, nil
			}
			return Absent, prefix, nil, nil
		default:
			return Special, prefix, fi, nil
		}
		start = end + 1
	}
}

// lstat looks at path (the slash prefix of a name, inside root); a directory on the way
// (not last) is looked at once.
func (in *Inspector) lstat(path, prefix string, last bool) (os.FileInfo, error) {
	if last || in.dirs == nil {
		return Lstat(in.fs, path)
	}
	if r, ok := in.dirs[prefix]; ok {
		return r.fi, r.err
	}
	fi, err := Lstat(in.fs, path)
	in.dirs[prefix] = lstatResult{fi, err}
	return fi, err
}

// CheckPath is the package's CheckPath; fi is the lstat of name when it exists.
func (in *Inspector) CheckPath(name string) (exists bool, fi os.FileInfo, err error) {
	k, blocker, fi, err := in.Inspect(name)
	if err := Refusal(in.root, name, k, blocker, err); err != nil {
		return false, nil, err
	}
	return k == Regular, fi, nil
}

// Refusal is CheckPath's verdict on what Inspect found of name: nil when name is a regular
// file or absent with nothing in its way.
func Refusal(root, name string, k Kind, blocker string, err error) error {
	switch {
	case err != nil:
		return err
	case blocker != "" && blocker != name:
		return fmt.Errorf("%s is not a directory but %s needs it to be one: %w", filepath.Join(root, filepath.FromSlash(blocker)), name, ErrUnsafePath)
	case k == Dir || k == Special:
		return fmt.Errorf("%s is not a regular file: %w", filepath.Join(root, filepath.FromSlash(name)), ErrUnsafePath)
	}
	return nil
}

// MkdirAll makes dir and any missing parents with perm, each with exactly perm whatever the
// umask, and returns the directories it created, so that they (and their parents) can be synced.
// It is for sdupdate's own state paths, the operator's choice: a symlink on the way is followed.
// Under a directory someone else may write to, use MkdirsUnder.
func MkdirAll(fsys afero.Fs, dir string, perm os.FileMode) ([]string, error) {
	var missing []string
	for p := filepath.Clean(dir); ; p = filepath.Dir(p) {
		if _, err := fsys.Stat(p); err == nil {
			break
		} else if !errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("cannot inspect %s: %w", p, err)
		}
		missing = append(missing, p)
		if filepath.Dir(p) == p {
			break
		}
	}
	var created []string
	for i := len(missing) - 1; i >= 0; i-- {
		if err := Mkdir(fsys, missing[i], perm); err != nil {
			return created, err
		}
		created = append(created, missing[i])
	}
	return created, nil
}

// RemoveIfEmptyDir removes dir when it is an empty directory. It reports whether dir is gone,
// also when it did not exist; a file there, or a directory holding anything, stays.
func RemoveIfEmptyDir(fsys afero.Fs, dir string) (gone bool, err error) {
	fi, err := Lstat(fsys, dir)
	if errors.Is(err, os.ErrNotExist) {
		return true, nil
	}
	if err != nil {
		return false, fmt.Errorf("cannot inspect %s: %w", dir, err)
	}
	if !fi.IsDir() {
		return false, nil
	}
	// Check emptiness ourselves: an in-memory fs removes a non-empty directory without complaint.
	entries, err := afero.ReadDir(fsys, dir)
	if err != nil {
		return false, fmt.Errorf("cannot list %s: %w", dir, err)
	}
	if len(entries) > 0 {
		return false, nil
	}
	if err := fsys.Remove(dir); err != nil && !errors.Is(err, os.ErrNotExist) {
		return false, fmt.Errorf("cannot remove empty directory %s: %w", dir, err)
	}
	return true, nil
}

// RemoveEmptyParents removes, deepest first, the directories above the slash path name inside
// root that are left empty, up to (never including) root, stopping at the first that holds
// anything or that keep names (slash paths). Each removal marks the parent's entry in touched,
// to be synced. It runs even when name itself is already gone, so that a removal resumed after a
// crash between the file and its directories still prunes them.
func RemoveEmptyParents(fsys afero.Fs, root, name string, keep, touched map[string]bool) error {
	for d := path.Dir(name); d != "." && !keep[d]; d = path.Dir(d) {
		abs := filepath.Join(root, filepath.FromSlash(d))
		gone, err := RemoveIfEmptyDir(fsys, abs)
		if err != nil {
			return err
		}
		if !gone {
			return nil
		}
		delete(touched, abs)
		touched[filepath.Dir(abs)] = true
	}
	return nil
}
