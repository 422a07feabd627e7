package main

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// sdupdateWithin runs sdupdate as sdupdate does, but kills it if it is still running after d: a
// hang is a failure of the case, not of the whole test binary.
func sdupdateWithin(t *testing.T, d time.Duration, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	return runCmd(ctx, t, exec.CommandContext(ctx, binary, args...))
}

func mkfifo(t *testing.T, path string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	_ = os.Remove(path)
	if err := syscall.Mkfifo(path, 0o644); err != nil {
		t.Fatal(err)
	}
}

// A FIFO where sdupdate expects a file used to block the open with no writer and no way to stop
// it (SIGTERM ignored, staging left behind). Now it is refused at once, with the install unchanged.
func TestFIFOsAreRefusedNotWaitedOn(t *testing.T) {
	const within = 20 * time.Second
	t.Run("file on a file:// site", func(t *testing.T) {
		e := newEnv(t)
		e.release(t, "1.0.0", files1)
		mkfifo(t, filepath.Join(e.site, "1.0.0", "agent.py"))
		r := sdupdateWithin(t, within, "--config="+e.conf, "update").expect(t, 1, "update with a FIFO for a file")
		if !strings.Contains(r.stderr, "named pipe (FIFO), not a regular file") {
			t.Errorf("the message does not say what is wrong: %s", r.stderr)
		}
		if tree := hashTree(t, e.install); len(tree) != 0 {
			t.Errorf("install changed: %v", tree)
		}
		if entries, _ := os.ReadDir(filepath.Join(e.state, "staging")); len(entries) != 0 {
			t.Errorf("staging left behind: %v", entries)
		}
	})
	t.Run("manifest on a file:// site", func(t *testing.T) {
		e := newEnv(t)
		mkfifo(t, filepath.Join(e.site, "manifest.json"))
		r := sdupdateWithin(t, within, "--config="+e.conf, "check").expect(t, 1, "check with a FIFO for the manifest")
		if !strings.Contains(r.stderr, "not a regular file") {
			t.Errorf("the message does not say what is wrong: %s", r.stderr)
		}
	})
	t.Run("configuration drop-in", func(t *testing.T) {
		e := newEnv(t)
		dropin := filepath.Join(e.conf+".d", "x.conf")
		mkfifo(t, dropin)
		r := sdupdateWithin(t, within, "--config="+e.conf, "status").expect(t, 2, "status with a FIFO drop-in")
		if !strings.Contains(r.stderr, dropin) || !strings.Contains(r.stderr, "not a regular file") {
			t.Errorf("the message does not name the drop-in: %s", r.stderr)
		}
	})
	t.Run("drop-in masked by /dev/null", func(t *testing.T) {
		e := newEnv(t)
		if err := os.MkdirAll(e.conf+".d", 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(os.DevNull, filepath.Join(e.conf+".d", "masked.conf")); err != nil {
			t.Fatal(err)
		}
		sdupdateWithin(t, within, "--config="+e.conf, "status").expect(t, 0, "status with a drop-in linked to /dev/null")
	})
	t.Run("managed file in the install", func(t *testing.T) {
		e := newEnv(t)
		e.release(t, "1.0.0", files1)
		sdupdate(t, "--config="+e.conf, "update").expect(t, 0, "update")
		// Whoever can write in the install can put a FIFO under a managed name.
		mkfifo(t, filepath.Join(e.install, "agent.py"))
		r := sdupdateWithin(t, within, "--config="+e.conf, "verify").expect(t, 1, "verify with a FIFO for a managed file")
		if !strings.Contains(r.stdout+r.stderr, "agent.py") {
			t.Errorf("verify does not name the file: %s%s", r.stdout, r.stderr)
		}
	})
}
