// Package sandbox boots a real systemd, as PID 1 of fresh PID, mount, UTS,
// IPC and cgroup namespaces, on a throwaway copy of the host's root, for
// end-to-end tests and the demo. A sandbox behaves like a small server of its own: its own
// systemd, journald, system bus, hostname and machine id; loopback is shared
// with the host, so an HTTP server of the test on 127.0.0.1 serves it too.
//
// What a sandbox holds, host side and inside (the mounts exist only in the
// sandbox's mount namespace and vanish with it):
//
//	$TMPDIR/sdsandbox-NAME-XXXX/           host scratch directory (removed by Close)
//	├── boot.sh                            the script that builds the root and becomes systemd
//	├── console.log                        systemd's console (/dev/console inside)
//	└── mnt/                               tmpfs, inside the sandbox's mount namespace only
//	    ├── upper/, work/                  overlay upper layer: everything the sandbox writes
//	    └── root/                          overlay lowerdir=/ → "/" of the sandbox
//	<cgroup v2 mount>/<harness cgroup>/sdsandbox-NAME-XXXX/
//	                                       the sandbox's /sys/fs/cgroup and cgroup
//	                                       namespace: systemd's tree (removed by Close)
//
// Inside, /proc and /sys are read-only where they reach the host's kernel
// settings, /dev is private, /run and /tmp are fresh tmpfs, and units that
// would touch the host or start work of their own are masked (maskedUnits).
// The steps are in boot.sh; this file drives them: start, write the test's
// files, wait for systemd, and stop.
//
// Every sandbox needs root; tests call RequireOrSkip first.
package sandbox

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	_ "embed"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

//go:embed boot.sh
var bootScript []byte

// maskedUnits are linked to /dev/null in the sandbox's /etc/systemd/system:
// they would wait for a terminal, change state the kernel shares with the
// host, or start work of their own in the middle of a test.
var maskedUnits = []string{
	// Terminals nobody logs in on.
	"getty@tty1.service", "serial-getty@ttyS0.service", "console-getty.service",
	// The clock, the kernel's modules and the disks in /etc/fstab belong to the host.
	"systemd-timesyncd.service", "systemd-modules-load.service", "systemd-remount-fs.service",
	// Kernel file systems nothing here needs; the host's audit messages.
	"sys-kernel-debug.mount", "sys-kernel-tracing.mount", "sys-kernel-config.mount",
	"sys-fs-fuse-connections.mount", "dev-hugepages.mount", "proc-sys-fs-binfmt_misc.automount",
	"systemd-journald-audit.socket",
	// Periodic jobs.
	"apt-daily.timer", "apt-daily-upgrade.timer", "dpkg-db-backup.timer", "e2scrub_all.timer",
	"fstrim.timer", "man-db.timer", "systemd-tmpfiles-clean.timer",
	// The network is the host's (no network namespace): a unit that wants
	// network-online.target would otherwise run ifupdown, networkd or
	// NetworkManager on the real interfaces, and poweroff would take them down.
	"networking.service", "ifupdown-wait-online.service", "ifup@.service",
	"systemd-networkd.service", "systemd-networkd.socket", "systemd-networkd-wait-online.service",
	"NetworkManager.service", "NetworkManager-wait-online.service",
}

const (
	defaultBootTimeout = 30 * time.Second
	// poweroffTimeout bounds a clean shutdown; after it, systemd is killed.
	poweroffTimeout = 15 * time.Second
	pollInterval    = 50 * time.Millisecond
)

// Options describe a sandbox to boot.
type Options struct {
	// Name shows in logs, in the scratch directory's name and as the
	// sandbox's hostname (letters, digits and '-' are kept). Default "sandbox".
	Name string
	// Files are written into the sandbox's root before systemd starts:
	// units, scripts, configuration. Keys are absolute paths inside.
	// Unless Files has them, the sandbox gets /etc/hostname (Name), a random
	// /etc/machine-id and /etc/systemd/journald.conf.d/sdsandbox.conf
	// (Storage=volatile).
	Files map[string]File
	// CopyFiles are copied into the root before systemd starts, with the
	// host file's permission bits: inside path → host path (e.g. a freshly
	// built binary).
	CopyFiles map[string]string
	// Log receives the harness's progress lines; nil discards them.
	Log io.Writer
	// BootTimeout bounds the wait for systemd to finish booting. Default 30s.
	BootTimeout time.Duration
}

// File is the content and permission bits of a file to write; a zero Mode
// in Options.Files means 0644.
type File struct {
	Data []byte
	Mode os.FileMode
}

// Sandbox is a running systemd in namespaces of its own. Its methods may be
// called from several goroutines.
type Sandbox struct {
	name      string
	log       io.Writer
	dir       string // host scratch directory
	cgroupDir string // host path of the sandbox's cgroup
	unshare   *exec.Cmd
	exited    chan struct{} // closed when unshare (and with it the sandbox) has ended
	stderr    lockedBuffer  // unshare's and boot.sh's stderr

	mu      sync.Mutex
	pid     int    // systemd's pid as the host sees it (boot.sh's, before exec)
	root    string // host path of the sandbox's "/"
	booted  bool   // systemd was started (boot.sh got "boot")
	closed  bool
	running map[*exec.Cmd]struct{} // commands started by Run, not yet finished

	closeOnce sync.Once
	closeErr  error
}

// Boot starts a sandbox and returns once `systemctl is-system-running` says
// running or degraded. On any failure the sandbox is cleaned up and the
// error carries systemd's console and journal where there are any.
func Boot(ctx context.Context, opts Options) (*Sandbox, error) {
	if err := Available(); err != nil {
		return nil, err
	}
	name := hostName(opts.Name)
	timeout := opts.BootTimeout
	if timeout <= 0 {
		timeout = defaultBootTimeout
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()

	s := &Sandbox{name: name, log: opts.Log, exited: make(chan struct{}), running: map[*exec.Cmd]struct{}{}}
	if s.log == nil {
		s.log = io.Discard
	}
	start := time.Now()
	if err := s.start(ctx, opts); err != nil {
		if cerr := s.Close(); cerr != nil {
			err = fmt.Errorf("%w (and cleaning up: %v)", err, cerr)
		}
		return nil, fmt.Errorf("cannot boot sandbox %s: %w", name, err)
	}
	s.logf("booted in %v (systemd pid %d)", time.Since(start).Round(time.Millisecond), s.PID())
	return s, nil
}

// start boots the sandbox: boot.sh sets up the namespaces and stops at "ready <pid>", the
// initial files are written, and then systemd is started and waited for.
func (s *Sandbox) start(ctx context.Context, opts Options) error {
	script, err := s.prepare()
	if err != nil {
		return err
	}
	stdin, stdout, err := s.launch(script)
	if err != nil {
		return err
	}
	defer stdin.Close()

	pid, err := s.waitReady(ctx, stdout)
	if err != nil {
		return err
	}
	s.mu.Lock()
	s.pid = pid
	s.root = fmt.Sprintf("/proc/%d/root%s", pid, filepath.Join(s.dir, "mnt", "root"))
	s.mu.Unlock()

	procs := filepath.Join(s.cgroupDir, "cgroup.procs")
	if err := os.WriteFile(procs, []byte(strconv.Itoa(pid)), 0o644); err != nil {
		return fmt.Errorf("cannot move pid %d into %s: %w", pid, procs, err)
	}
	if err := s.writeInitialFiles(opts); err != nil {
		return err
	}

	s.mu.Lock()
	s.booted = true
	// After pivot_root, the pid's root is the sandbox's root.
	s.root = fmt.Sprintf("/proc/%d/root", pid)
	s.mu.Unlock()
	if _, err := io.WriteString(stdin, "boot\n"); err != nil {
		return fmt.Errorf("cannot tell boot.sh to start systemd: %w%s", err, s.diagnostics())
	}
	return s.waitRunning(ctx)
}

// prepare makes the sandbox's scratch directory (boot.sh, the mount point) and its cgroup, and
// returns the path of boot.sh.
func (s *Sandbox) prepare() (string, error) {
	cgroup2, ownCgroup, err := cgroup2Paths()
	if err != nil {
		return "", err
	}
	for _, dir := range removeStale(filepath.Join(cgroup2, ownCgroup)) {
		s.logf("removed %s, left behind by a sandbox that was never closed", dir)
	}
	s.dir, err = os.MkdirTemp("", "sdsandbox-"+s.name+"-")
	if err != nil {
		return "", fmt.Errorf("cannot create scratch directory: %w", err)
	}
	script := filepath.Join(s.dir, "boot.sh")
	if err := os.WriteFile(script, bootScript, 0o700); err != nil {
		return "", fmt.Errorf("cannot write %s: %w", script, err)
	}
	if err := os.Mkdir(filepath.Join(s.dir, "mnt"), 0o755); err != nil {
		return "", fmt.Errorf("cannot create mount point: %w", err)
	}
	// Each sandbox has a cgroup of its own, so that two sandboxes' systemd
	// do not build their trees in the same place.
	s.cgroupDir = filepath.Join(cgroup2, ownCgroup, filepath.Base(s.dir))
	if err := os.Mkdir(s.cgroupDir, 0o755); err != nil {
		return "", fmt.Errorf("cannot create cgroup: %w", err)
	}
	return script, nil
}

// launch starts boot.sh under unshare in new namespaces and returns its stdin (the caller
// closes it) and stdout; s.exited is closed when unshare ends.
func (s *Sandbox) launch(script string) (io.WriteCloser, io.ReadCloser, error) {
	args := []string{"--pid", "--mount", "--uts", "--ipc", "--fork", "--kill-child", "--propagation", "private",
		"bash", script, s.dir, s.cgroupDir}
	s.unshare = exec.Command("unshare", append(args, maskedUnits...)...)
	s.unshare.Env = []string{"PATH=" + insidePath}
	s.unshare.Stderr = &s.stderr
	// If the harness dies without Close, unshare dies, and --kill-child
	// takes the whole PID namespace with it. (Pdeathsig follows the thread
	// that started unshare; Go ends a thread only when a goroutine locked
	// to it exits, so do not Boot from such a goroutine.)
	s.unshare.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	stdin, err := s.unshare.StdinPipe()
	if err != nil {
		return nil, nil, err
	}
	// A pipe of our own rather than StdoutPipe: Wait runs in the background
	// from the start and must not close stdout under waitReady.
	stdout, stdoutW, err := os.Pipe()
	if err != nil {
		stdin.Close()
		return nil, nil, err
	}
	s.unshare.Stdout = stdoutW
	err = s.unshare.Start()
	stdoutW.Close()
	if err != nil {
		stdout.Close()
		stdin.Close()
		return nil, nil, fmt.Errorf("cannot start unshare: %w", err)
	}
	go func() {
		_ = s.unshare.Wait()
		close(s.exited)
	}()
	return stdin, stdout, nil
}

// waitReady reads boot.sh's "ready <pid>" line, then drains and closes
// stdout in the background until the sandbox ends.
func (s *Sandbox) waitReady(ctx context.Context, stdout io.ReadCloser) (int, error) {
	line := make(chan string, 1)
	go func() {
		defer stdout.Close()
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if strings.HasPrefix(sc.Text(), "ready ") {
				line <- sc.Text()
				break
			}
		}
		close(line)
		_, _ = io.Copy(io.Discard, stdout)
	}()
	select {
	case l, ok := <-line:
		if !ok {
			<-s.exited
			return 0, fmt.Errorf("boot.sh failed before systemd started: %s", strings.TrimSpace(s.stderr.String()))
		}
		pid, err := strconv.Atoi(strings.TrimPrefix(l, "ready "))
		if err != nil {
			return 0, fmt.Errorf("boot.sh said %q, want \"ready <pid>\"", l)
		}
		return pid, nil
	case <-ctx.Done():
		return 0, fmt.Errorf("boot.sh did not get ready: %w%s", ctx.Err(), s.diagnostics())
	}
}

func (s *Sandbox) writeInitialFiles(opts Options) error {
	machineID := make([]byte, 16)
	if _, err := rand.Read(machineID); err != nil {
		return err
	}
	files := map[string]File{
		"/etc/hostname":   {Data: []byte(s.name + "\n"), Mode: 0o644},
		"/etc/machine-id": {Data: []byte(hex.EncodeToString(machineID) + "\n"), Mode: 0o444},
		// Keep the journal in /run: flushing it to /var/log/journal only slows the boot.
		"/etc/systemd/journald.conf.d/sdsandbox.conf": {Data: []byte("[Journal]\nStorage=volatile\n"), Mode: 0o644},
	}
	for path, f := range opts.Files {
		files[path] = f
	}
	for path, f := range files {
		if f.Mode == 0 {
			f.Mode = 0o644
		}
		if err := s.WriteFile(path, f.Data, f.Mode); err != nil {
			return err
		}
	}
	for path, host := range opts.CopyFiles {
		if err := s.CopyFile(path, host); err != nil {
			return err
		}
	}
	return nil
}

// waitRunning waits until systemd has finished booting. Until systemd
// listens, `systemctl is-system-running --wait` fails at once and is tried
// again; then it returns when the boot is done, without polling.
func (s *Sandbox) waitRunning(ctx context.Context) error {
	state := ""
	for {
		r, err := s.Systemctl(ctx, "is-system-running", "--wait")
		if err == nil {
			state = strings.TrimSpace(r.Stdout)
		}
		switch state {
		case "running":
			return nil
		case "degraded":
			failed, _ := s.Systemctl(ctx, "--failed", "--no-legend")
			s.logf("degraded; failed units:\n%s", failed.Stdout)
			return nil
		}
		select {
		case <-s.exited:
			return fmt.Errorf("systemd exited while booting%s", s.diagnostics())
		case <-ctx.Done():
			return fmt.Errorf("systemd did not finish booting (state when last asked: %q): %w%s", state, ctx.Err(), s.diagnostics())
		case <-time.After(pollInterval):
		}
	}
}

// diagnostics returns what might explain a failed boot: boot.sh's stderr,
// systemd's console and the end of the journal, each when there is any.
func (s *Sandbox) diagnostics() string {
	var b strings.Builder
	if e := strings.TrimSpace(s.stderr.String()); e != "" {
		fmt.Fprintf(&b, "\n--- boot.sh stderr:\n%s", e)
	}
	if s.dir != "" {
		if c, err := os.ReadFile(filepath.Join(s.dir, "console.log")); err == nil && len(c) > 0 {
			fmt.Fprintf(&b, "\n--- console:\n%s", tail(c, 4000))
		}
	}
	select {
	case <-s.exited:
	default:
		if s.isBooted() {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			if r, err := s.Run(ctx, "journalctl", "-b", "--no-pager", "-n", "60"); err == nil {
				fmt.Fprintf(&b, "\n--- journal:\n%s", r.Stdout)
			}
			if r, err := s.Run(ctx, "systemctl", "list-jobs", "--no-pager"); err == nil {
				fmt.Fprintf(&b, "\n--- jobs:\n%s", r.Stdout)
			}
		}
	}
	return b.String()
}

// Name is the sandbox's name, which is also its hostname.
func (s *Sandbox) Name() string { return s.name }

// PID is systemd's pid as the host sees it.
func (s *Sandbox) PID() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.pid
}

func (s *Sandbox) isBooted() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.booted
}

func (s *Sandbox) isClosed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closed
}

// Close stops the sandbox: it kills commands Run left behind (children
// first: a command still inside keeps the namespace alive), powers systemd
// off (killing it if it takes longer than poweroffTimeout), waits for the
// namespaces to end, and removes the cgroup and scratch directory. It takes
// bounded time and may be called more than once.
func (s *Sandbox) Close() error {
	s.closeOnce.Do(func() { s.closeErr = s.close() })
	return s.closeErr
}

func (s *Sandbox) close() error {
	start := time.Now()
	s.mu.Lock()
	s.closed = true
	running := make([]*exec.Cmd, 0, len(s.running))
	for cmd := range s.running {
		running = append(running, cmd)
	}
	s.mu.Unlock()
	for _, cmd := range running {
		killTree(cmd.Process)
	}

	var errs []error
	if s.unshare != nil && s.unshare.Process != nil {
		if s.isBooted() {
			s.powerOff()
		}
		select {
		case <-s.exited:
		default:
			// Killing the namespace's PID 1 kills every process in it.
			if pid := s.PID(); pid > 0 {
				_ = syscall.Kill(pid, syscall.SIGKILL)
			}
			_ = s.unshare.Process.Kill()
			select {
			case <-s.exited:
			case <-time.After(5 * time.Second):
				errs = append(errs, fmt.Errorf("unshare (pid %d) did not exit", s.unshare.Process.Pid))
			}
		}
	}
	if s.cgroupDir != "" {
		if err := removeCgroup(s.cgroupDir); err != nil {
			errs = append(errs, err)
		}
	}
	if s.dir != "" {
		if err := os.RemoveAll(s.dir); err != nil {
			errs = append(errs, fmt.Errorf("cannot remove scratch directory: %w", err))
		}
	}
	s.logf("closed in %v", time.Since(start).Round(time.Millisecond))
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("cannot clean up sandbox %s: %w", s.name, err)
	}
	return nil
}

// powerOff asks systemd to power off and waits, within poweroffTimeout,
// for the sandbox to end.
func (s *Sandbox) powerOff() {
	ctx, cancel := context.WithTimeout(context.Background(), poweroffTimeout)
	defer cancel()
	// Not `systemctl poweroff`: it first asks logind, over the system bus,
	// to set a wall message; that starts dbus-daemon just to shut down, or
	// hangs for 90s when dbus.service waits for a boot that is stuck. This
	// asks systemd alone, over its private socket.
	r, err := s.command(ctx, "systemctl", "start", "poweroff.target", "--job-mode=replace-irreversibly", "--no-block")
	if err != nil || r.ExitCode != 0 {
		// If systemd did not get the request, do not wait long for it.
		var cancelShort context.CancelFunc
		ctx, cancelShort = context.WithTimeout(ctx, 2*time.Second)
		defer cancelShort()
	}
	select {
	case <-s.exited:
	case <-ctx.Done():
		s.logf("did not power off in time; killing it")
	}
}

func (s *Sandbox) logf(format string, args ...any) {
	_, _ = s.log.Write([]byte(fmt.Sprintf("sandbox %s: %s\n", s.name, fmt.Sprintf(format, args...))))
}

// hostName makes name usable as a hostname and in file names.
func hostName(name string) string {
	var b strings.Builder
	for _, r := range strings.ToLower(name) {
		switch {
		case r >= 'a' && r <= 'z', r >= '0' && r <= '9', r == '-':
			b.WriteRune(r)
		default:
			b.WriteRune('-')
		}
	}
	n := strings.Trim(b.String(), "-")
	if len(n) > 40 {
		n = strings.Trim(n[:40], "-")
	}
	if n == "" {
		n = "sandbox"
	}
	return n
}

func tail(b []byte, n int) string {
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(b)
}

// lockedBuffer is a bytes.Buffer that exec's copying goroutine and the
// harness may use at once.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
