package sandbox

import (
	"bufio"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

const systemdBinary = "/lib/systemd/systemd"

// Available reports whether this machine can run a sandbox: nil if so,
// otherwise an error that lists everything missing.
func Available() error {
	var missing []string
	if os.Geteuid() != 0 {
		missing = append(missing, "not running as root")
	}
	for _, tool := range []string{"unshare", "nsenter", "bash", "mount", "umount", "pivot_root"} {
		if _, err := exec.LookPath(tool); err != nil {
			missing = append(missing, tool+" not found in PATH")
		}
	}
	if info, err := os.Stat(systemdBinary); err != nil || info.Mode().Perm()&0o111 == 0 {
		missing = append(missing, systemdBinary+" missing (install systemd)")
	}
	if b, err := os.ReadFile("/proc/filesystems"); err != nil || !strings.Contains(string(b), "\toverlay\n") {
		missing = append(missing, "overlayfs not in /proc/filesystems (modprobe overlay)")
	}
	if _, _, err := cgroup2Paths(); err != nil {
		missing = append(missing, err.Error())
	}
	if len(missing) > 0 {
		return fmt.Errorf("cannot run a systemd sandbox here: %s", strings.Join(missing, "; "))
	}
	return nil
}

// RequireOrSkip skips the test when this machine cannot run a sandbox, and
// fails it instead when CI=true: in CI a test that needs a sandbox must run.
func RequireOrSkip(t testing.TB) {
	t.Helper()
	err := Available()
	if err == nil {
		return
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("%v (CI=true, so this is a failure, not a skip)", err)
	}
	t.Skip(err)
}

// TestLog returns a writer for Options.Log that sends each line to t.Log.
func TestLog(t testing.TB) *TestWriter { return &TestWriter{t: t} }

// TestWriter writes to a test's log; see TestLog.
type TestWriter struct{ t testing.TB }

func (w *TestWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// cgroup2Paths returns where the host mounts the cgroup v2 hierarchy
// (/sys/fs/cgroup on a unified host, /sys/fs/cgroup/unified on a hybrid one)
// and this process's cgroup, relative to that mount.
func cgroup2Paths() (mountPoint, own string, err error) {
	mounts, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return "", "", err
	}
	defer mounts.Close()
	mountRoot := ""
	sc := bufio.NewScanner(mounts)
	for sc.Scan() {
		// 36 25 0:31 / /sys/fs/cgroup/unified rw,relatime shared:9 - cgroup2 cgroup2 rw
		fields := strings.Fields(sc.Text())
		sep := slices.Index(fields, "-")
		if sep > 4 && sep+1 < len(fields) && fields[sep+1] == "cgroup2" {
			mountRoot, mountPoint = fields[3], fields[4]
			break
		}
	}
	if mountPoint == "" {
		return "", "", errors.New("no cgroup v2 hierarchy mounted")
	}
	cgroups, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		return "", "", err
	}
	for _, line := range strings.Split(string(cgroups), "\n") {
		if p, ok := strings.CutPrefix(line, "0::"); ok {
			return mountPoint, strings.TrimPrefix(p, mountRoot), nil
		}
	}
	return "", "", errors.New("no cgroup v2 entry in /proc/self/cgroup")
}

// removeCgroup removes a cgroup and the tree systemd built below it, deepest
// first. A cgroup whose last process just died may stay busy for a moment.
func removeCgroup(dir string) error {
	var dirs []string
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.IsDir() {
			dirs = append(dirs, p)
		}
		return err
	})
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("cannot remove cgroup: %w", err)
	}
	deadline := time.Now().Add(3 * time.Second)
	for i := len(dirs) - 1; i >= 0; i-- {
		for {
			err := os.Remove(dirs[i])
			if err == nil || errors.Is(err, fs.ErrNotExist) {
				break
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("cannot remove cgroup: %w", err)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	return nil
}

// removeStale removes what sandboxes of harness processes that died without
// Close (a killed `go test`) left behind: a scratch directory whose cgroup
// tree holds no process any more. Young ones are left alone, since a
// sandbox being booted has its directories a moment before its first
// process, and so is a directory without a cgroup beside ours: it may
// belong to a harness in another cgroup, and removing a mount point that is
// in use in another mount namespace would unmount it there.
func removeStale(cgroupParent string) []string {
	var removed []string
	dirs, _ := filepath.Glob(filepath.Join(os.TempDir(), "sdsandbox-*"))
	for _, dir := range dirs {
		info, err := os.Stat(dir)
		if err != nil || time.Since(info.ModTime()) < time.Minute {
			continue
		}
		cgroup := filepath.Join(cgroupParent, filepath.Base(dir))
		events, err := os.ReadFile(filepath.Join(cgroup, "cgroup.events"))
		if err != nil || !strings.Contains(string(events), "populated 0") {
			continue
		}
		if removeCgroup(cgroup) == nil && os.RemoveAll(dir) == nil {
			removed = append(removed, dir)
		}
	}
	return removed
}
