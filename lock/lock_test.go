package lock

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/gofrs/flock"
)

// The test binary doubles as a second sdupdate: with helperEnv set it takes
// the lock, says so on stdout, and waits until stdin closes or it is killed.
const helperEnv = "SDUPDATE_LOCK_TEST_HELPER"

func TestMain(m *testing.M) {
	if path := os.Getenv(helperEnv); path != "" {
		os.Exit(helper(path))
	}
	os.Exit(m.Run())
}

func helper(path string) int {
	l, err := Acquire(path)
	if err != nil {
		fmt.Println("error:", err)
		return 1
	}
	// Optionally start a long-lived child, as HealthCommand would be, to
	// show it does not inherit the lock.
	if os.Getenv(helperEnv+"_CHILD") != "" {
		c := exec.Command("sleep", "60")
		if err := c.Start(); err != nil {
			fmt.Println("error:", err)
			return 1
		}
		fmt.Println("child", c.Process.Pid)
	}
	fmt.Println("locked")
	io.Copy(io.Discard, os.Stdin)
	if err := l.Release(); err != nil {
		fmt.Println("error:", err)
		return 1
	}
	return 0
}

type holder struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
	child int
}

// startHolder runs a second process that holds the lock at path.
func startHolder(t *testing.T, path string, withChild bool) *holder {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), helperEnv+"="+path)
	if withChild {
		cmd.Env = append(cmd.Env, helperEnv+"_CHILD=1")
	}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	h := &holder{cmd: cmd, stdin: stdin}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		if h.child > 0 {
			syscall.Kill(h.child, syscall.SIGKILL)
		}
	})
	sc := bufio.NewScanner(stdout)
	for sc.Scan() {
		line := sc.Text()
		switch {
		case line == "locked":
			return h
		case strings.HasPrefix(line, "child "):
			h.child, _ = strconv.Atoi(strings.TrimPrefix(line, "child "))
		default:
			t.Fatalf("helper: %s", line)
		}
	}
	t.Fatalf("helper exited before locking: %v", sc.Err())
	return nil
}

func (h *holder) kill(t *testing.T) {
	t.Helper()
	if err := h.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	h.cmd.Wait()
}

func TestSecondProcessIsRefusedUntilHolderDies(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state", "lock")
	h := startHolder(t, path, false)
	pid := h.cmd.Process.Pid

	l, err := Acquire(path)
	var he *HeldError
	if !errors.As(err, &he) {
		t.Fatalf("Acquire while held: %v, %v; want *HeldError", l, err)
	}
	if he.PID != pid || he.Path != path {
		t.Fatalf("HeldError = %+v, want pid %d path %s", he, pid, path)
	}
	if want := fmt.Sprintf("another sdupdate is running (pid %d)", pid); err.Error() != want {
		t.Fatalf("message %q, want %q", err, want)
	}
	if gotPID, held, err := heldBy(path); err != nil || !held || gotPID != pid {
		t.Fatalf("Holder = %d, %v, %v; want %d, true", gotPID, held, err, pid)
	}

	// Killed with SIGKILL: no chance to clean up, its pid stays in the file.
	h.kill(t)
	if b, _ := os.ReadFile(path); strings.TrimSpace(string(b)) != strconv.Itoa(pid) {
		t.Fatalf("lock file holds %q; the test needs the dead pid left in it", b)
	}
	if gotPID, held, err := heldBy(path); err != nil || held || gotPID != 0 {
		t.Fatalf("Holder after kill = %d, %v, %v; want not held", gotPID, held, err)
	}
	l, err = Acquire(path)
	if err != nil {
		t.Fatalf("Acquire after the holder died: %v", err)
	}
	defer l.Release()
	if b, _ := os.ReadFile(path); strings.TrimSpace(string(b)) != strconv.Itoa(os.Getpid()) {
		t.Fatalf("lock file holds %q, want our pid %d", b, os.Getpid())
	}
}

func TestHolderReleasesCleanly(t *testing.T) {
	path := filepath.Join(t.TempDir(), "lock")
	h := startHolder(t, path, false)
	h.stdin.Close() // lets it Release and exit normally
	if err := h.cmd.Wait(); err != nil {
		t.Fatalf("helper: %v", err)
	}
	if b, _ := os.ReadFile(path); len(b) != 0 {
		t.Fatalf("lock file after Release holds %q, want it empty", b)
	}
	l, err := Acquire(path)
	if err != nil {
		t.Fatal(err)
	}
	l.Release()
}

// A child started while holding the lock (HealthCommand, say) must not keep
// it after sdupdate dies: ExecStopPost=sdupdate recover needs it at once.
func TestChildDoesNotInheritLock(t *testing.T) {
	path := filepath.Join(t.TempDir(), "lock")
	h := startHolder(t, path, true)
	if h.child == 0 {
		t.Fatal("helper started no child")
	}
	h.kill(t)
	if syscall.Kill(h.child, 0) != nil {
		t.Fatal("child died with the helper; the test proves nothing")
	}
	l, err := Acquire(path)
	if err != nil {
		t.Fatalf("Acquire with the holder's child still alive: %v", err)
	}
	l.Release()
}

func TestSameProcessTwice(t *testing.T) {
	path := filepath.Join(t.TempDir(), "lock")
	l, err := Acquire(path)
	if err != nil {
		t.Fatal(err)
	}
	_, err = Acquire(path)
	var he *HeldError
	if !errors.As(err, &he) || he.PID != os.Getpid() {
		t.Fatalf("second Acquire: %v; want HeldError with our pid", err)
	}
	if err := l.Release(); err != nil {
		t.Fatal(err)
	}
	if err := l.Release(); err != nil {
		t.Fatalf("second Release: %v", err)
	}
	l, err = Acquire(path)
	if err != nil {
		t.Fatalf("Acquire after Release: %v", err)
	}
	l.Release()
}

func TestStalePIDDoesNotMatter(t *testing.T) {
	path := filepath.Join(t.TempDir(), "lock")
	// pid 1 is alive, but it does not hold the lock.
	if err := os.WriteFile(path, []byte("1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if pid, held, err := heldBy(path); err != nil || held || pid != 0 {
		t.Fatalf("Holder = %d, %v, %v; want not held", pid, held, err)
	}
	l, err := Acquire(path)
	if err != nil {
		t.Fatal(err)
	}
	l.Release()
}

func TestCreatesPrivateFileAndDir(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "var", "lib", "sdupdate")
	path := filepath.Join(dir, "lock")
	l, err := Acquire(path)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Release()
	if fi, err := os.Stat(dir); err != nil || fi.Mode().Perm() != 0o700 {
		t.Fatalf("dir mode %v, %v; want 0700", fi.Mode(), err)
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("file mode %v, %v; want 0600", fi.Mode(), err)
	}
	if l.path != path {
		t.Fatalf("path = %q", l.path)
	}
}

func TestHolderOfMissingFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "lock")
	if pid, held, err := heldBy(path); err != nil || held || pid != 0 {
		t.Fatalf("Holder = %d, %v, %v; want not held, no error", pid, held, err)
	}
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		t.Fatalf("Holder created the lock file: %v", err)
	}
}

func TestHeldErrorWithoutPID(t *testing.T) {
	e := &HeldError{Path: "/var/lib/sdupdate/lock"}
	if got := e.Error(); got != "another sdupdate is running (it holds /var/lib/sdupdate/lock)" {
		t.Fatalf("Error() = %q", got)
	}
}

// heldBy reports whether the lock at path is held and, if so, by which pid
// (0 if unknown), as another process sees it. It never creates the file.
func heldBy(path string) (pid int, held bool, err error) {
	fl := flock.New(path, flock.SetFlag(os.O_RDONLY))
	ok, err := fl.TryRLock()
	if errors.Is(err, fs.ErrNotExist) {
		return 0, false, nil
	}
	if err != nil {
		return 0, false, fmt.Errorf("cannot check lock %s: %w", path, err)
	}
	if ok {
		if err := fl.Unlock(); err != nil {
			return 0, false, fmt.Errorf("cannot check lock %s: %w", path, err)
		}
		return 0, false, nil
	}
	return readPID(path), true, nil
}
