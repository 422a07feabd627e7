// Package fsutil owns every kind of filesystem operation sdupdate does, each written once: the
// ones crash safety rests on (an atomic file replace with fsync of the file and its directory,
// directory sync, hard-link-or-copy, a streamed copy or write that hashes and fsyncs), the walk
// that refuses a path through a symlink, directory creation and the removal of directories left
// empty, and giving a file its owner where this process may. Everything goes through afero.Fs so
// the engine runs unchanged on an in-memory filesystem in tests.
package fsutil

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"

	"github.com/spf13/afero"
)

// ErrNoHardLinks is returned by HardLink when the filesystem cannot make hard links.
var ErrNoHardLinks = errors.New("filesystem has no hard links")

// HardLinker is implemented by filesystems (or wrappers) that can make hard links.
type HardLinker interface {
	Link(oldname, newname string) error
}

// HardLink makes newname a hard link to oldname when fsys can; otherwise it returns an error
// wrapping ErrNoHardLinks so callers can fall back to a copy.
func HardLink(fsys afero.Fs, oldname, newname string) error {
	switch l := fsys.(type) {
	case HardLinker:
		return l.Link(oldname, newname)
	case *afero.OsFs:
		return os.Link(oldname, newname)
	}
	return fmt.Errorf("cannot link %s: %w", newname, ErrNoHardLinks)
}

// tempPrefix starts every name TempName makes, so a leftover one is recognisable.
const tempPrefix = ".sdupdate-"

// TempNameOverhead is how many bytes TempName adds to the base name it is made for: the prefix,
// 12 hex digits and a dash. A name whose last segment is longer than NAME_MAX minus this could be
// installed but never replaced atomically, so the manifest's name limits count it.
const TempNameOverhead = len(tempPrefix) + 12 + 1

// TempName returns a hidden, unique name in dir for a file that will later be renamed over base.
func TempName(dir, base string) string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return filepath.Join(dir, tempPrefix+hex.EncodeToString(b[:])+"-"+filepath.Base(base))
}

// tempPattern matches the names TempName makes: ".sdupdate-" + 12 hex digits + "-" + base.
var tempPattern = regexp.MustCompile(`^\.sdupdate-[0-9a-f]{12}-(.+)$`)

// TempBase returns the base a TempName was made for, and whether name (a path or base name)
// is such a name at all.
func TempBase(name string) (base string, ok bool) {
	m := tempPattern.FindStringSubmatch(filepath.Base(name))
	if m == nil {
		return "", false
	}
	return m[1], true
}

// IsTempName reports whether name (a path or base name) was made by TempName.
func IsTempName(name string) bool {
	_, ok := TempBase(name)
	return ok
}

// SyncDir fsyncs a directory so that renames and creations inside it survive a power loss.
func SyncDir(fsys afero.Fs, dir string) error {
	d, err := fsys.Open(dir)
	if err != nil {
		return fmt.Errorf("cannot open directory %s to sync it: %w", dir, err)
	}
	serr := d.Sync()
	cerr := d.Close()
	if serr != nil {
		// Some filesystems refuse fsync on a directory; the data is then as durable as it can be.
		if errors.Is(serr, syscall.EINVAL) {
			return cerr
		}
		return fmt.Errorf("cannot sync directory %s: %w", dir, serr)
	}
	return cerr
}

// WriteFileAtomic replaces path with data: a temporary file in the same directory is written,
// fsynced and renamed over path, then the directory is fsynced. A reader (or a crash) sees either
// the old content or the new, never a mix.
func WriteFileAtomic(fsys afero.Fs, path string, data []byte, perm os.FileMode) error {
	return WriteFileAtomicVia(fsys, path, filepath.Base(path), data, perm)
}

// WriteFileAtomicVia is WriteFileAtomic with the temporary file named TempName(dir, tempBase),
// for a directory whose reader picks files by their name: node_exporter reads every *.prom file,
// so a metrics file must not be written under a temporary name that also ends in .prom.
func WriteFileAtomicVia(fsys afero.Fs, path, tempBase string, data []byte, perm os.FileMode) error {
	dir := filepath.Dir(path)
	tmp := TempName(dir, tempBase)
	f, err := fsys.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, perm)
	if err != nil {
		return fmt.Errorf("cannot create %s: %w", tmp, err)
	}
	committed := false
	defer func() {
		if !committed {
			_ = fsys.Remove(tmp)
		}
	}()
	if _, err := f.Write(data); err != nil {
		f.Close()
		return fmt.Errorf("cannot write %s: %w", tmp, err)
	}
	if err := chmodOpen(fsys, f, tmp, perm); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("cannot sync %s: %w", tmp, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("cannot close %s: %w", tmp, err)
	}
	if err := fsys.Rename(tmp, path); err != nil {
		return fmt.Errorf("cannot rename %s to %s: %w", tmp, path, err)
	}
	committed = true
	return SyncDir(fsys, dir)
}

// chmodOpen sets the mode of the file just created as f (umask narrowed it) through the open
// file itself: the directory may be writable by another user (a node_exporter textfile
// directory), who could swap the name for a symlink between the close and a chmod by path, and
// root's chmod would follow it. Only a file without fchmod (the in-memory one) is set by path.
func chmodOpen(fsys afero.Fs, f afero.File, name string, perm os.FileMode) error {
	var err error
	if fc, ok := f.(interface{ Chmod(os.FileMode) error }); ok {
		err = fc.Chmod(perm)
	} else {
		err = fsys.Chmod(name, perm)
	}
	if err != nil {
		return fmt.Errorf("cannot set mode of %s: %w", name, err)
	}
	return nil
}

// LinkOrCopy makes dst hold src's content: a hard link where the filesystem has them (free, and
// safe because installed files are only ever replaced by rename, never written in place),
// otherwise a streamed, fsynced copy with perm.
func LinkOrCopy(fsys afero.Fs, src, dst string, perm os.FileMode) error {
	err := HardLink(fsys, src, dst)
	if err == nil {
		return nil
	}
	if !errors.Is(err, ErrNoHardLinks) && !isCrossDevice(err) {
		return fmt.Errorf("cannot link %s to %s: %w", src, dst, err)
	}
	_, _, err = CopyFile(fsys, src, dst, Attrs{Mode: perm})
	return err
}

func isCrossDevice(err error) bool {
	return errors.Is(err, syscall.EXDEV) || errors.Is(err, syscall.EPERM) || errors.Is(err, syscall.EMLINK)
}

// Lstat stats name without following a final symlink where fsys can; an in-memory filesystem has
// no symlinks, so a plain Stat is then exact.
func Lstat(fsys afero.Fs, name string) (os.FileInfo, error) {
	if l, ok := fsys.(afero.Lstater); ok {
		fi, _, err := l.LstatIfPossible(name)
		return fi, err
	}
	return fsys.Stat(name)
}

// ErrNotRegular marks a file that OpenRegular refused because it is a FIFO, a device, a socket or
// a directory.
var ErrNotRegular = errors.New("not a regular file")

// OpenRegular opens name for reading only if it is a regular file. It opens without blocking
// (O_NONBLOCK), so a FIFO planted where a file is expected is refused at once instead of waiting,
// uncancellably, for a writer; the type is checked on the opened file, not on the name, so it
// cannot change in between. O_NONBLOCK has no effect on reading a regular file.
func OpenRegular(fsys afero.Fs, name string) (afero.File, os.FileInfo, error) {
	f, err := fsys.OpenFile(name, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, nil, err
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, nil, fmt.Errorf("cannot stat %s: %w", name, err)
	}
	if !fi.Mode().IsRegular() {
		f.Close()
		return nil, nil, fmt.Errorf("%s is a %s, %w", name, FileKind(fi.Mode()), ErrNotRegular)
	}
	return f, fi, nil
}

// ReadRegularFile reads the whole of name if it is a regular file (see OpenRegular).
func ReadRegularFile(fsys afero.Fs, name string) ([]byte, error) {
	f, fi, err := OpenRegular(fsys, name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	buf := bytes.NewBuffer(make([]byte, 0, fi.Size()+512))
	if _, err := buf.ReadFrom(f); err != nil {
		return nil, fmt.Errorf("cannot read %s: %w", name, err)
	}
	return buf.Bytes(), nil
}

// FileKind names the type of a file mode for messages ("named pipe (FIFO)", "directory").
func FileKind(m os.FileMode) string {
	switch t := m.Type(); {
	case t == 0:
		return "regular file"
	case t&os.ModeDir != 0:
		return "directory"
	case t&os.ModeSymlink != 0:
		return "symlink"
	case t&os.ModeNamedPipe != 0:
		return "named pipe (FIFO)"
	case t&os.ModeSocket != 0:
		return "socket"
	case t&os.ModeCharDevice != 0:
		return "character device"
	case t&os.ModeDevice != 0:
		return "block device"
	}
	return "special file"
}

// CheckPrivateDir refuses dir unless it is a real directory (not a symlink), owned by the user
// running sdupdate and writable by no one else: only then can nothing in it have been planted by
// another user, so what sdupdate opens, creates or removes there is its own. what names the
// directory's role in the message ("StateDirectory").
func CheckPrivateDir(fsys afero.Fs, dir, what string) error {
	fi, err := Lstat(fsys, dir)
	if err != nil {
		return fmt.Errorf("cannot inspect %s %s: %w", what, dir, err)
	}
	if fi.Mode()&os.ModeSymlink != 0 || !fi.IsDir() {
		return fmt.Errorf("%s %s is a %s, not a directory; sdupdate never follows a symlink there (replace it with a real directory): %w",
			what, dir, FileKind(fi.Mode()), ErrUnsafePath)
	}
	if uid, _, ok := Owner(fi); ok && uid != os.Geteuid() {
		return fmt.Errorf("%s %s belongs to uid %d, not to uid %d running sdupdate, so another user could plant files there (chown it to uid %d): %w",
			what, dir, uid, os.Geteuid(), os.Geteuid(), ErrUnsafePath)
	}
	if fi.Mode().Perm()&0o022 != 0 {
		return fmt.Errorf("%s %s is writable by others (mode %04o), so another user could plant files there (chmod 0700 it): %w",
			what, dir, fi.Mode().Perm(), ErrUnsafePath)
	}
	return nil
}

// ErrUnsafePath marks a path that runs through a symlink or a non-directory.
var ErrUnsafePath = errors.New("unsafe path")

// Owner returns the uid and gid of fi when the filesystem reports them.
func Owner(fi os.FileInfo) (uid, gid int, ok bool) {
	if st, isStat := fi.Sys().(*syscall.Stat_t); isStat {
		return int(st.Uid), int(st.Gid), true
	}
	return 0, 0, false
}

// CanRenameBetween reports whether a file can be renamed (and so hard-linked) from directory a
// into directory b. Comparing device numbers is not enough: systemd's ReadWritePaths= makes each
// listed path a mount of its own, and rename(2) and link(2) both refuse to cross mounts (EXDEV)
// even on one filesystem. So this tries it: a probe file made in a is hard-linked into b under the
// same name, then both are removed. The name in b is only ever removed while it is the very inode
// of the probe in a, so a file of that name that sdupdate did not make is never touched (see
// RemoveStaleProbes). A filesystem without hard links is taken at its word by a rename.
func CanRenameBetween(fsys afero.Fs, a, b string) (bool, error) {
	same, err := SameFilesystem(fsys, a, b)
	if err != nil || !same {
		return false, err
	}
	src := TempName(a, probeBase)
	dst := filepath.Join(b, filepath.Base(src))
	f, err := fsys.OpenFile(src, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return false, fmt.Errorf("cannot create probe file %s: %w", src, err)
	}
	f.Close()
	defer fsys.Remove(src)
	err = HardLink(fsys, src, dst)
	if errors.Is(err, ErrNoHardLinks) {
		return true, nil // an in-memory filesystem: one filesystem, no mounts
	}
	if err != nil {
		if errors.Is(err, syscall.EXDEV) {
			return false, nil
		}
		return false, fmt.Errorf("cannot link probe file %s to %s: %w", src, dst, err)
	}
	if err := fsys.Remove(dst); err != nil && !errors.Is(err, os.ErrNotExist) {
		return true, fmt.Errorf("cannot remove probe file %s: %w", dst, err)
	}
	return true, nil
}

const probeBase = "probe"

// RemoveStaleProbes removes what a CanRenameBetween(a, b) killed half way left behind: a probe
// link in b only while it is still the same inode as its probe file in a (so a file of that name
// that someone else made is left alone), and the probe file in a, which lies in sdupdate's own
// directory. It returns the directories it changed.
func RemoveStaleProbes(fsys afero.Fs, a, b string) (changed []string, err error) {
	var errs []error
	for _, dir := range []string{b, a} {
		entries, err := afero.ReadDir(fsys, dir)
		if err != nil {
			continue
		}
		removed := false
		for _, fi := range entries {
			if base, ok := TempBase(fi.Name()); !ok || base != probeBase {
				continue
			}
			p := filepath.Join(dir, fi.Name())
			if dir == b {
				mine, err := Lstat(fsys, filepath.Join(a, fi.Name()))
				if err != nil || !os.SameFile(mine, fi) {
					continue // not the link of a probe of ours
				}
			}
			if err := fsys.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
				errs = append(errs, fmt.Errorf("cannot remove probe file %s: %w", p, err))
				continue
			}
			removed = true
		}
		if removed {
			changed = append(changed, dir)
		}
	}
	return changed, errors.Join(errs...)
}

// SameFilesystem reports whether a and b (existing paths) live on one filesystem, so a rename or
// hard link between them works. Filesystems that do not report devices count as one.
func SameFilesystem(fsys afero.Fs, a, b string) (bool, error) {
	fa, err := fsys.Stat(a)
	if err != nil {
		return false, fmt.Errorf("cannot stat %s: %w", a, err)
	}
	fb, err := fsys.Stat(b)
	if err != nil {
		return false, fmt.Errorf("cannot stat %s: %w", b, err)
	}
	sa, okA := fa.Sys().(*syscall.Stat_t)
	sb, okB := fb.Sys().(*syscall.Stat_t)
	if !okA || !okB {
		return true, nil
	}
	return sa.Dev == sb.Dev, nil
}

// MkdirsUnder makes the directories of the slash path rel ("." for none) under root, one level at
// a time, so that a symlink or non-directory on the way is refused rather than followed. It
// returns the directories it created.
func MkdirsUnder(fsys afero.Fs, root, rel string, perm os.FileMode) ([]string, error) {
	if rel == "." || rel == "" {
		return nil, nil
	}
	var created []string
	cur := root
	for _, seg := range strings.Split(rel, "/") {
		cur = filepath.Join(cur, seg)
		fi, err := Lstat(fsys, cur)
		switch {
		case err == nil && fi.Mode()&os.ModeSymlink != 0:
			return created, fmt.Errorf("%s is a symlink; sdupdate never writes through symlinks: %w", cur, ErrUnsafePath)
		case err == nil && !fi.IsDir():
			return created, fmt.Errorf("%s is not a directory: %w", cur, ErrUnsafePath)
		case err == nil:
			continue
		case !errors.Is(err, os.ErrNotExist):
			return created, fmt.Errorf("cannot inspect %s: %w", cur, err)
		}
		if err := Mkdir(fsys, cur, perm); err != nil {
			return created, err
		}
		created = append(created, cur)
	}
	return created, nil
}

// Mkdir makes one directory with exactly perm, whatever the umask.
func Mkdir(fsys afero.Fs, p string, perm os.FileMode) error {
	if err := fsys.Mkdir(p, perm); err != nil {
		return fmt.Errorf("cannot create directory %s: %w", p, err)
	}
	if err := fsys.Chmod(p, perm|os.ModeDir); err != nil {
		return fmt.Errorf("cannot set mode of %s: %w", p, err)
	}
	return nil
}

// SyncDirs fsyncs every directory in dirs that still exists, many at once (see Syncer): an
// update that adds files to 100 directories waits for one round of their syncs, not 100.
func SyncDirs(fsys afero.Fs, dirs map[string]bool) error {
	s := NewSyncer()
	for d := range dirs {
		s.jobs <- func() error {
			fi, err := Lstat(fsys, d)
			if errors.Is(err, os.ErrNotExist) || err == nil && !fi.IsDir() {
				return nil
			}
			return SyncDir(fsys, d)
		}
	}
	return s.Wait()
}
