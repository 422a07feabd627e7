// Package lock keeps two sdupdate runs from changing the install at once.
//
// The lock is an flock(2) on a file in StateDirectory (by convention
// <StateDirectory>/lock), which holds the holder's pid for the message a
// second run prints. Because the kernel drops an flock when its holder
// exits, however it dies, a lock file left behind never blocks anyone and
// the pid in it means nothing unless the lock is actually held. The file is
// never removed: deleting a lock file races with a process that has just
// opened it and would let two runs each lock a different inode.
package lock

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/gofrs/flock"
)

// Lock is a held lock; Release it when done (also safe after the process
// is gone: the kernel releases it then).
type Lock struct {
	fl   *flock.Flock
	path string
}

// HeldError says the lock is held by another process.
type HeldError struct {
	PID  int // 0 when the holder could not be told
	Path string
}

func (e *HeldError) Error() string {
	if e.PID > 0 {
		return fmt.Sprintf("another sdupdate is running (pid %d)", e.PID)
	}
	return fmt.Sprintf("another sdupdate is running (it holds %s)", e.Path)
}

// Acquire takes the lock at path without waiting. If another process holds
// it, the error is a *HeldError. The file is created 0600, and its
// directory 0700 if missing.
func Acquire(path string) (*Lock, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("cannot create lock directory: %w", err)
	}
	// Read-only is enough for flock and keeps the descriptor from being a
	// way to write; the pid is written through a second descriptor. The
	// descriptor is close-on-exec, so a child (HealthCommand) never holds
	// the lock past our exit.
	// O_NOFOLLOW: a symlink planted as the lock must not make root create, lock or truncate
	// the file it points to.
	fl := flock.New(path, flock.SetFlag(os.O_CREATE|os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK), flock.SetPermissions(0o600))
	ok, err := fl.TryLock()
	if err != nil {
		return nil, fmt.Errorf("cannot lock %s: %w", path, err)
	}
	if !ok {
		// The holder writes its pid just after it takes the lock; a command arriving in that
		// instant waits a few milliseconds for it rather than report no pid.
		pid := readPID(path)
		for i := 0; pid == 0 && i < 10; i++ {
			time.Sleep(5 * time.Millisecond)
			pid = readPID(path)
		}
		return nil, &HeldError{PID: pid, Path: path}
	}
	l := &Lock{fl: fl, path: path}
	if err := writePID(path, os.Getpid()); err != nil {
		l.Release()
		return nil, fmt.Errorf("cannot record pid in lock %s: %w", path, err)
	}
	return l, nil
}

// Release drops the lock. The pid is cleared first so that a later reader
// never sees ours.
func (l *Lock) Release() error {
	if l == nil || l.fl == nil {
		return nil
	}
	// Best effort: a stale pid is harmless, since only a held lock's pid
	// is ever shown.
	_ = writePID(l.path, 0)
	err := l.fl.Unlock()
	l.fl = nil
	if err != nil {
		return fmt.Errorf("cannot unlock %s: %w", l.path, err)
	}
	return nil
}

func writePID(path string, pid int) error {
	f, err := os.OpenFile(path, os.O_WRONLY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK, 0)
	if err != nil {
		return err
	}
	if fi, err := f.Stat(); err != nil || !fi.Mode().IsRegular() {
		f.Close()
		return fmt.Errorf("lock %s is not a regular file", path)
	}
	content := ""
	if pid > 0 {
		content = strconv.Itoa(pid) + "\n"
	}
	if err := f.Truncate(0); err != nil {
		f.Close()
		return err
	}
	if _, err := f.WriteString(content); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// readPID returns the pid recorded in the lock file, or 0 if there is none
// or it names no live process (the holder may not have written its pid yet,
// in which case the file still holds an earlier, dead one).
func readPID(path string) int {
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK, 0)
	if err != nil {
		return 0
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, 32))
	if err != nil {
		return 0
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 0 {
		return 0
	}
	if err := syscall.Kill(pid, 0); errors.Is(err, syscall.ESRCH) {
		return 0
	}
	return pid
}
