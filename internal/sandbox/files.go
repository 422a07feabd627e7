package sandbox

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"strings"

	"golang.org/x/sys/unix"
)

// The sandbox's files are reached from the host through /proc/PID/root. A
// plain open of /proc/PID/root/var/run/x would follow the absolute symlink
// /var/run → /run on the host; openat2 with RESOLVE_IN_ROOT resolves every
// path, symlinks included, as if the sandbox's root were "/".

// WriteFile writes a file inside the running sandbox, creating missing
// directories (0755). It replaces the file by a rename, never writing the
// old inode, so hard links to the old file (such as snapshots) keep their
// content. mode holds permission bits.
func (s *Sandbox) WriteFile(name string, data []byte, mode os.FileMode) error {
	return s.writeFrom(name, bytes.NewReader(data), mode)
}

// CopyFile copies the host file hostPath to name inside the sandbox, with
// the host file's permission bits.
func (s *Sandbox) CopyFile(name, hostPath string) error {
	f, err := os.Open(hostPath)
	if err != nil {
		return fmt.Errorf("cannot copy into sandbox %s: %w", s.name, err)
	}
	defer f.Close()
	info, err := f.Stat()
	if err != nil {
		return fmt.Errorf("cannot copy into sandbox %s: %w", s.name, err)
	}
	return s.writeFrom(name, f, info.Mode().Perm())
}

// ReadFile reads a file inside the running sandbox.
func (s *Sandbox) ReadFile(name string) ([]byte, error) {
	root, rel, err := s.openRoot(name)
	if err != nil {
		return nil, err
	}
	defer root.Close()
	f, err := openIn(root, rel, unix.O_RDONLY)
	if err != nil {
		return nil, fmt.Errorf("cannot read %s in sandbox %s: %w", name, s.name, err)
	}
	defer f.Close()
	data, err := io.ReadAll(f)
	if err != nil {
		return nil, fmt.Errorf("cannot read %s in sandbox %s: %w", name, s.name, err)
	}
	return data, nil
}

func (s *Sandbox) writeFrom(name string, r io.Reader, mode os.FileMode) error {
	if err := s.writeIn(name, r, mode); err != nil {
		return fmt.Errorf("cannot write %s in sandbox %s: %w", name, s.name, err)
	}
	return nil
}

func (s *Sandbox) writeIn(name string, r io.Reader, mode os.FileMode) error {
	root, rel, err := s.openRoot(name)
	if err != nil {
		return err
	}
	defer root.Close()
	dirName, base := path.Split(rel)
	if base == "" {
		return errors.New("not a file name")
	}
	dir, err := mkdirAllIn(root, dirName)
	if err != nil {
		return err
	}
	defer dir.Close()

	suffix := make([]byte, 6)
	if _, err := rand.Read(suffix); err != nil {
		return err
	}
	tmp := "." + base + ".sdsandbox-" + hex.EncodeToString(suffix)
	fd, err := unix.Openat(int(dir.Fd()), tmp, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return err
	}
	f := os.NewFile(uintptr(fd), tmp)
	_, err = io.Copy(f, r)
	if err == nil {
		err = f.Chmod(mode.Perm()) // not subject to the umask, unlike the mode given to open
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = unix.Renameat(int(dir.Fd()), tmp, int(dir.Fd()), base)
	}
	if err != nil {
		_ = unix.Unlinkat(int(dir.Fd()), tmp, 0)
	}
	return err
}

// openRoot opens the sandbox's root directory and returns name relative to it.
func (s *Sandbox) openRoot(name string) (*os.File, string, error) {
	if !path.IsAbs(name) {
		return nil, "", fmt.Errorf("cannot use %q in sandbox %s: not an absolute path", name, s.name)
	}
	s.mu.Lock()
	rootPath := s.root
	s.mu.Unlock()
	if rootPath == "" {
		return nil, "", fmt.Errorf("cannot use %s: sandbox %s has no root yet", name, s.name)
	}
	root, err := os.OpenFile(rootPath, unix.O_PATH|unix.O_DIRECTORY, 0)
	if err != nil {
		return nil, "", fmt.Errorf("cannot open the root of sandbox %s: %w", s.name, err)
	}
	return root, strings.TrimPrefix(path.Clean(name), "/"), nil
}

// openIn opens rel below root, resolved as if root were "/".
func openIn(root *os.File, rel string, flags int) (*os.File, error) {
	if rel == "" {
		rel = "."
	}
	how := unix.OpenHow{Flags: uint64(flags | unix.O_CLOEXEC), Resolve: unix.RESOLVE_IN_ROOT}
	fd, err := unix.Openat2(int(root.Fd()), rel, &how)
	if err != nil {
		return nil, &os.PathError{Op: "openat2", Path: "/" + rel, Err: err}
	}
	return os.NewFile(uintptr(fd), "/"+rel), nil
}

// mkdirAllIn opens directory rel below root, creating what is missing.
func mkdirAllIn(root *os.File, rel string) (*os.File, error) {
	rel = strings.Trim(rel, "/")
	dir, err := openIn(root, rel, unix.O_PATH|unix.O_DIRECTORY)
	if err == nil || !errors.Is(err, unix.ENOENT) {
		return dir, err
	}
	parentName, base := path.Split(rel)
	parent, err := mkdirAllIn(root, parentName)
	if err != nil {
		return nil, err
	}
	err = unix.Mkdirat(int(parent.Fd()), base, 0o755)
	parent.Close()
	if err != nil && !errors.Is(err, unix.EEXIST) {
		return nil, &os.PathError{Op: "mkdir", Path: "/" + rel, Err: err}
	}
	return openIn(root, rel, unix.O_PATH|unix.O_DIRECTORY)
}
