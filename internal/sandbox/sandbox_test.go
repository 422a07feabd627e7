package sandbox_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sdupdate/sdupdate/internal/sandbox"
)

const helloUnit = `[Unit]
Description=sandbox test unit

[Service]
Type=oneshot
ExecStart=/usr/local/bin/hello
SyslogIdentifier=sandbox-hello
`

const helloScript = `#!/bin/sh
echo "hello from $(hostname), config says $(cat /etc/hello.conf)"
`

// hostState is what a sandbox must leave alone on the host.
type hostState struct {
	hostname, nrOpen, cgroupMount string
	devLog, devInitctl            bool
}

func readHostState(t *testing.T) hostState {
	t.Helper()
	var st hostState
	st.hostname, _ = os.Hostname()
	b, _ := os.ReadFile("/proc/sys/fs/nr_open")
	st.nrOpen = string(b)
	mounts, _ := os.ReadFile("/proc/self/mounts")
	for _, line := range strings.Split(string(mounts), "\n") {
		if f := strings.Fields(line); len(f) > 3 && f[1] == "/sys/fs/cgroup" {
			st.cgroupMount = line
		}
	}
	_, err := os.Lstat("/dev/log")
	st.devLog = err == nil
	_, err = os.Lstat("/dev/initctl")
	st.devInitctl = err == nil
	return st
}

func TestSandbox(t *testing.T) {
	sandbox.RequireOrSkip(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	before := readHostState(t)

	hostFile := filepath.Join(t.TempDir(), "hello.conf")
	if err := os.WriteFile(hostFile, []byte("copied"), 0o640); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	sb, err := sandbox.Boot(ctx, sandbox.Options{
		Name: "Test One",
		Files: map[string]sandbox.File{
			"/etc/systemd/system/hello.service": {Data: []byte(helloUnit), Mode: 0o644},
			"/usr/local/bin/hello":              {Data: []byte(helloScript), Mode: 0o755},
		},
		CopyFiles: map[string]string{"/etc/hello.conf": hostFile},
		Log:       sandbox.TestLog(t),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("boot took %v", time.Since(start))
	defer sb.Close() // Close may be called again; the last subtest does

	t.Run("system is running", func(t *testing.T) {
		r, err := sb.Systemctl(ctx, "is-system-running")
		if err != nil {
			t.Fatal(err)
		}
		if state := strings.TrimSpace(r.Stdout); state != "running" && state != "degraded" {
			t.Fatalf("is-system-running = %q, want running or degraded", state)
		}
		if got := sb.Name(); got != "test-one" {
			t.Errorf("Name() = %q, want test-one", got)
		}
	})

	t.Run("unit output reaches the journal", func(t *testing.T) {
		// A first run logs before the cursor; only the second may be returned.
		if out, err := sb.Output(ctx, "systemctl", "start", "hello.service"); err != nil {
			t.Fatalf("start hello.service: %v (%s)", err, out)
		}
		cursor, err := sb.JournalCursor(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if out, err := sb.Output(ctx, "systemctl", "start", "hello.service"); err != nil {
			t.Fatalf("start hello.service: %v (%s)", err, out)
		}
		entries, err := sb.JournalJSON(ctx, cursor, "SYSLOG_IDENTIFIER=sandbox-hello")
		if err != nil {
			t.Fatal(err)
		}
		want := "hello from test-one, config says copied"
		if len(entries) != 1 || entries[0]["MESSAGE"] != want {
			t.Fatalf("journal entries = %v, want one with MESSAGE %q", entries, want)
		}
		if mode, err := sb.Output(ctx, "stat", "-c", "%a", "/etc/hello.conf", "/usr/local/bin/hello"); err != nil || mode != "640\n755\n" {
			t.Errorf("modes inside = %q, %v; want 640 (copied from host) and 755", mode, err)
		}
	})

	t.Run("loopback server of the test is reachable", func(t *testing.T) {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			io.WriteString(w, "token-4711")
		}))
		defer srv.Close()
		port := srv.Listener.Addr().(*net.TCPAddr).Port
		// bash's /dev/tcp needs nothing installed beyond bash itself.
		script := fmt.Sprintf(`exec 3<>/dev/tcp/127.0.0.1/%d && printf 'GET / HTTP/1.0\r\n\r\n' >&3 && cat <&3`, port)
		out, err := sb.Output(ctx, "bash", "-c", script)
		if err != nil || !strings.Contains(out, "token-4711") {
			t.Fatalf("HTTP from inside = %q, %v; want the body token-4711", out, err)
		}
	})

	t.Run("systemd is on the system bus", func(t *testing.T) {
		// dbus.service is socket-activated by the first client; systemd joins
		// the bus right after, so allow it a moment.
		deadline := time.Now().Add(5 * time.Second)
		for {
			out, err := sb.Output(ctx, "busctl", "--system", "--no-pager", "list")
			if err == nil && strings.Contains(out, "org.freedesktop.systemd1") {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("busctl list = %q, %v; want org.freedesktop.systemd1", out, err)
			}
			time.Sleep(100 * time.Millisecond)
		}
	})

	t.Run("files are written inside, not on the host", func(t *testing.T) {
		// /var/run is an absolute symlink to /run: it must resolve to the
		// sandbox's /run, not the host's.
		if err := sb.WriteFile("/var/run/sdsandbox-probe/x", []byte("inside"), 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := os.Stat("/run/sdsandbox-probe"); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("host /run/sdsandbox-probe: %v; want it absent", err)
		}
		if out, err := sb.Output(ctx, "cat", "/run/sdsandbox-probe/x"); err != nil || out != "inside" {
			t.Fatalf("cat inside = %q, %v; want inside", out, err)
		}
		// Replacing a file leaves a hard link to the old one untouched.
		if _, err := sb.Output(ctx, "ln", "/run/sdsandbox-probe/x", "/run/sdsandbox-probe/old"); err != nil {
			t.Fatal(err)
		}
		if err := sb.WriteFile("/run/sdsandbox-probe/x", []byte("new"), 0o644); err != nil {
			t.Fatal(err)
		}
		for name, want := range map[string]string{"/run/sdsandbox-probe/x": "new", "/run/sdsandbox-probe/old": "inside"} {
			if got, err := sb.ReadFile(name); err != nil || string(got) != want {
				t.Errorf("ReadFile(%s) = %q, %v; want %q", name, got, err, want)
			}
		}
		if _, err := sb.ReadFile("/etc/hostname"); err != nil {
			t.Error(err)
		}
		if err := os.WriteFile("/tmp/sdsandbox-host-only", nil, 0o600); err == nil {
			defer os.Remove("/tmp/sdsandbox-host-only")
			if r, _ := sb.Run(ctx, "test", "-e", "/tmp/sdsandbox-host-only"); r.ExitCode == 0 {
				t.Error("host /tmp is visible inside; want a fresh /tmp")
			}
		}
	})

	t.Run("cancelled command is killed with its children", func(t *testing.T) {
		runCtx, stop := context.WithTimeout(ctx, 300*time.Millisecond)
		defer stop()
		begin := time.Now()
		_, err := sb.Run(runCtx, "sh", "-c", "sleep 301 & sleep 302; wait")
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("Run = %v, want a deadline error", err)
		}
		if d := time.Since(begin); d > 5*time.Second {
			t.Errorf("Run returned after %v, want soon after the deadline", d)
		}
		if r, _ := sb.Run(ctx, "pgrep", "-f", "sleep 30[12]"); r.ExitCode != 1 {
			t.Errorf("sleep still running inside: %q", r.Stdout)
		}
	})

	t.Run("two sandboxes at once do not collide", func(t *testing.T) {
		second, err := sandbox.Boot(ctx, sandbox.Options{Name: "test-two", Log: sandbox.TestLog(t)})
		if err != nil {
			t.Fatal(err)
		}
		defer second.Close()
		if err := second.WriteFile("/etc/only-in-two", []byte("2"), 0o644); err != nil {
			t.Fatal(err)
		}
		if r, _ := sb.Run(ctx, "test", "-e", "/etc/only-in-two"); r.ExitCode == 0 {
			t.Error("a file written in one sandbox shows in the other")
		}
		host, _ := second.Output(ctx, "hostname")
		if host != "test-two\n" {
			t.Errorf("hostname in second = %q, want test-two", host)
		}
		cg1, _ := sb.ReadFile("/proc/1/cgroup")
		cg2, _ := second.ReadFile("/proc/1/cgroup")
		if string(cg1) == string(cg2) {
			t.Errorf("both systemd share a cgroup: %s", cg1)
		}
		r, err := second.Systemctl(ctx, "is-system-running")
		if err != nil || (r.Stdout != "running\n" && r.Stdout != "degraded\n") {
			t.Errorf("second is-system-running = %q, %v", r.Stdout, err)
		}
	})

	t.Run("close stops everything and cleans up", func(t *testing.T) {
		pid := sb.PID()
		cgroup := cgroupOf(t, pid)
		mountNS, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/mnt", pid))
		if err != nil {
			t.Fatal(err)
		}
		// A command still running inside must not hold the sandbox open.
		leftover := make(chan error, 1)
		go func() {
			_, err := sb.Run(context.Background(), "sleep", "300")
			leftover <- err
		}()
		for r, _ := sb.Run(ctx, "pgrep", "-x", "sleep"); r.ExitCode != 0; r, _ = sb.Run(ctx, "pgrep", "-x", "sleep") {
			time.Sleep(20 * time.Millisecond)
		}

		begin := time.Now()
		if err := sb.Close(); err != nil {
			t.Fatal(err)
		}
		t.Logf("close took %v", time.Since(begin))
		if d := time.Since(begin); d > 10*time.Second {
			t.Errorf("Close took %v", d)
		}
		select {
		case err := <-leftover:
			if err == nil {
				t.Error("Run of a command killed by Close returned no error")
			}
		case <-time.After(5 * time.Second):
			t.Error("Run of the leftover command did not return after Close")
		}
		if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
			t.Errorf("systemd (pid %d) still exists after Close: %v", pid, err)
		}
		if _, err := os.Stat(cgroup); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("cgroup %s still exists after Close: %v", cgroup, err)
		}
		mounts, _ := os.ReadFile("/proc/self/mounts")
		if strings.Contains(string(mounts), "sdsandbox") {
			t.Errorf("host mounts mention the sandbox:\n%s", mounts)
		}
		// The sandbox's mounts live as long as any process is in its mount
		// namespace (a leftover nsenter would do).
		nsLinks, _ := filepath.Glob("/proc/[0-9]*/ns/mnt")
		for _, l := range nsLinks {
			if ns, _ := os.Readlink(l); ns == mountNS {
				t.Errorf("%s is still in the sandbox's mount namespace %s", l, ns)
			}
		}
		if err := sb.Close(); err != nil {
			t.Errorf("second Close: %v", err)
		}
		if _, err := sb.Run(ctx, "true"); err == nil {
			t.Error("Run after Close succeeded")
		}
	})

	if after := readHostState(t); after != before {
		t.Errorf("host changed:\nbefore %+v\nafter  %+v", before, after)
	}
}

// cgroupOf returns the host path of the cgroup v2 that pid's systemd made its root.
func cgroupOf(t *testing.T, pid int) string {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if p, ok := strings.CutPrefix(line, "0::"); ok {
			mount := "/sys/fs/cgroup"
			if _, err := os.Stat("/sys/fs/cgroup/unified/cgroup.procs"); err == nil {
				mount = "/sys/fs/cgroup/unified"
			}
			return filepath.Join(mount, filepath.Dir(p)) // p is <sandbox cgroup>/init.scope
		}
	}
	t.Fatalf("no cgroup v2 line in %s", b)
	return ""
}

func TestBootTimeoutCleansUp(t *testing.T) {
	sandbox.RequireOrSkip(t)
	_, err := sandbox.Boot(context.Background(), sandbox.Options{
		Name:        "too-slow",
		BootTimeout: time.Millisecond,
		Log:         sandbox.TestLog(t),
	})
	if err == nil {
		t.Fatal("Boot with a 1ms timeout succeeded")
	}
	t.Logf("error: %v", err)
	dirs, _ := filepath.Glob(filepath.Join(os.TempDir(), "sdsandbox-too-slow-*"))
	if len(dirs) != 0 {
		t.Errorf("scratch directories left behind: %v", dirs)
	}
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range procs {
		if b, _ := os.ReadFile(p); strings.Contains(string(b), "sdsandbox-too-slow") {
			t.Errorf("process left behind: %s: %q", p, b)
		}
	}
}

func TestBootTimeoutShowsJournal(t *testing.T) {
	sandbox.RequireOrSkip(t)
	begin := time.Now()
	sb, err := sandbox.Boot(context.Background(), sandbox.Options{
		Name:        "stuck",
		BootTimeout: 3 * time.Second,
		Files: map[string]sandbox.File{
			"/etc/systemd/system/basic.target.d/stuck.conf": {Data: []byte("[Unit]\nWants=stuck.service\nAfter=stuck.service\n")},
			"/etc/systemd/system/stuck.service":             {Data: []byte("[Unit]\nDefaultDependencies=no\n[Service]\nType=oneshot\nExecStart=/bin/sleep 600\n")},
		},
		Log: sandbox.TestLog(t),
	})
	if err == nil {
		sb.Close()
		t.Fatal("Boot succeeded although basic.target waits for a ten-minute unit")
	}
	t.Logf("failed after %v", time.Since(begin))
	// The journal's tail and the job list show what the boot waits for.
	for _, want := range []string{"did not finish booting", "--- journal:", "systemd[1]: "} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error does not mention %q:\n%v", want, err)
		}
	}
	if !regexp.MustCompile(`stuck\.service\s+start\s+running`).MatchString(err.Error()) {
		t.Errorf("error does not list the running start job of stuck.service:\n%v", err)
	}
	if d := time.Since(begin); d > 10*time.Second {
		t.Errorf("failed Boot took %v, want about the 3s timeout plus cleanup", d)
	}
}
