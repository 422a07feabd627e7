package sandbox

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// insidePath is PATH for commands inside: the environment of a root shell on
// a server, not the test's.
const insidePath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// Result is what a command run inside the sandbox produced.
type Result struct {
	Stdout, Stderr string
	// ExitCode is the command's exit status; -1 if a signal ended it.
	ExitCode int
}

// Run runs a command inside the sandbox, as root, in the sandbox's
// namespaces, with a clean environment (PATH, HOME, LANG; add more with
// `env NAME=value cmd ...`) and no stdin, like a shell of an operator on
// the machine. (It is not in any of systemd's cgroups: /proc/self/cgroup
// says "/..".) A command that runs and exits non-zero is not an error: look
// at ExitCode. When ctx ends first, the command and everything it started
// are killed, children first, and the error says so.
func (s *Sandbox) Run(ctx context.Context, args ...string) (Result, error) {
	if s.isClosed() {
		return Result{}, fmt.Errorf("cannot run %q: sandbox %s is closed", strings.Join(args, " "), s.name)
	}
	return s.command(ctx, args...)
}

// Output runs a command inside and returns its stdout; an exit status other
// than 0 is an error that carries stderr.
func (s *Sandbox) Output(ctx context.Context, args ...string) (string, error) {
	r, err := s.Run(ctx, args...)
	if err != nil {
		return "", err
	}
	if r.ExitCode != 0 {
		return r.Stdout, fmt.Errorf("%q in sandbox %s exited with status %d: %s",
			strings.Join(args, " "), s.name, r.ExitCode, strings.TrimSpace(r.Stderr))
	}
	return r.Stdout, nil
}

// Systemctl runs systemctl inside the sandbox with args.
func (s *Sandbox) Systemctl(ctx context.Context, args ...string) (Result, error) {
	return s.Run(ctx, append([]string{"systemctl"}, args...)...)
}

func (s *Sandbox) command(ctx context.Context, args ...string) (Result, error) {
	if len(args) == 0 {
		return Result{}, errors.New("cannot run an empty command")
	}
	pid := s.PID()
	nsArgs := append([]string{"-t", strconv.Itoa(pid), "--mount", "--uts", "--ipc", "--pid", "--cgroup", "--"}, args...)
	cmd := exec.CommandContext(ctx, "nsenter", nsArgs...)
	cmd.Env = []string{"PATH=" + insidePath, "HOME=/root", "LANG=C.UTF-8"}
	var stdout, stderr lockedBuffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	// nsenter forks the command into the sandbox's PID namespace and waits
	// for it. Killing only nsenter would leave the command running inside,
	// holding the namespace open, so the whole tree goes.
	cmd.Cancel = func() error {
		killTree(cmd.Process)
		return nil
	}
	// A background process inside may hold stdout open after the command
	// exits; do not wait for it for ever.
	cmd.WaitDelay = time.Second

	if err := cmd.Start(); err != nil {
		return Result{}, fmt.Errorf("cannot run %q in sandbox %s: %w", strings.Join(args, " "), s.name, err)
	}
	s.mu.Lock()
	s.running[cmd] = struct{}{}
	s.mu.Unlock()
	err := cmd.Wait()
	s.mu.Lock()
	delete(s.running, cmd)
	s.mu.Unlock()

	r := Result{Stdout: stdout.String(), Stderr: stderr.String(), ExitCode: cmd.ProcessState.ExitCode()}
	if ctx.Err() != nil {
		return r, fmt.Errorf("cannot run %q in sandbox %s: %w", strings.Join(args, " "), s.name, ctx.Err())
	}
	if r.ExitCode == -1 && s.isClosed() {
		return r, fmt.Errorf("cannot run %q: sandbox %s was closed while it ran", strings.Join(args, " "), s.name)
	}
	var exitErr *exec.ExitError
	if err != nil && !errors.As(err, &exitErr) && !errors.Is(err, exec.ErrWaitDelay) {
		return r, fmt.Errorf("cannot run %q in sandbox %s: %w", strings.Join(args, " "), s.name, err)
	}
	return r, nil
}

// killTree kills p and every process below it, deepest first: a child
// whose parent died first would be reparented, out of reach, and reaped
// late. It looks again in case a process forked meanwhile.
func killTree(p *os.Process) {
	for range 5 {
		tree := descendants(p.Pid)
		if len(tree) == 0 {
			break
		}
		for i := len(tree) - 1; i >= 0; i-- {
			_ = syscall.Kill(tree[i], syscall.SIGKILL)
		}
	}
	_ = p.Kill()
}

// descendants lists the processes below pid, parents before their children.
func descendants(pid int) []int {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	children := map[int][]int{}
	for _, e := range entries {
		p, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if pp, ok := parentPID(p); ok {
			children[pp] = append(children[pp], p)
		}
	}
	var tree []int
	for queue := children[pid]; len(queue) > 0; queue = queue[1:] {
		tree = append(tree, queue[0])
		queue = append(queue, children[queue[0]]...)
	}
	return tree
}

// parentPID reads the parent pid from /proc/PID/stat: the fourth field,
// counted after the command name, which may itself hold spaces and ")".
func parentPID(pid int) (int, bool) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, false
	}
	s := string(b)
	fields := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(fields) < 2 {
		return 0, false
	}
	pp, err := strconv.Atoi(fields[1])
	return pp, err == nil
}
