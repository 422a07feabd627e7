package systemd

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"

	"github.com/sdupdate/sdupdate/logging"
)

// Defaults used when a Gate field is zero; they match the contract's [Agent] defaults.
const (
	DefaultStartTimeout = 90 * time.Second
	DefaultPollInterval = 250 * time.Millisecond
)

// outputTail is how much of the health command's combined output goes into a failure reason.
const outputTail = 2048

// Stages of the gate, as GateError.Stage reports them.
const (
	StageRestartJob    = "restart job"
	StageSettle        = "settle"
	StageHealthCommand = "health command"
)

// GateError says why the agent did not come up: at which stage, and a Reason written for the
// operator (it becomes SDUPDATE_REASON).
type GateError struct {
	Unit   string
	Stage  string // StageRestartJob, StageSettle or StageHealthCommand
	Reason string
}

func (e *GateError) Error() string {
	return fmt.Sprintf("%s did not come up (%s): %s", e.Unit, e.Stage, e.Reason)
}

// Gate restarts the agent's unit and decides whether it came up: the restart job must finish
// with "done", the unit must then stay active for Settle with the same main process and no
// automatic restart, and HealthCommand, if set, must then exit 0. It is the systemd analogue of
// a service manager's "okay delay": a unit that starts and crashes a second later counts as down.
type Gate struct {
	Unit          string
	StartTimeout  time.Duration // the restart job and HealthCommand each get this long
	Settle        time.Duration // how long the unit must stay up unchanged
	HealthCommand string        // run as /bin/sh -c; exit 0 = healthy
	Conn          Conn
	Log           *logrus.Entry
	Notify        func(status string) // sd_notify STATUS=; may be nil
	PollInterval  time.Duration       // how often properties are read while settling
}

func (g *Gate) unit() string { return UnitName(g.Unit) }

func (g *Gate) startTimeout() time.Duration {
	if g.StartTimeout > 0 {
		return g.StartTimeout
	}
	return DefaultStartTimeout
}

func (g *Gate) pollInterval() time.Duration {
	if g.PollInterval > 0 {
		return g.PollInterval
	}
	return DefaultPollInterval
}

func (g *Gate) log() *logrus.Entry {
	if g.Log != nil {
		return g.Log
	}
	l := logrus.New()
	l.SetOutput(io.Discard)
	return logrus.NewEntry(l)
}

func (g *Gate) notify(s string) {
	if g.Notify != nil {
		g.Notify(s)
	}
}

// Active reports whether the unit is active now (a unit reloading its configuration counts).
func (g *Gate) Active(ctx context.Context) (bool, error) {
	p, err := readProps(ctx, g.Conn, g.unit())
	if err != nil {
		return false, err
	}
	return isActive(p.active), nil
}

// State returns the unit's state as systemd's properties name it.
func (g *Gate) State(ctx context.Context) (UnitState, error) {
	p, err := readProps(ctx, g.Conn, g.unit())
	if err != nil {
		return UnitState{}, err
	}
	return UnitState{Active: p.active, Sub: p.sub, Load: p.load}, nil
}

// RestartAndWait restarts the unit and waits until it counts as up. A verdict that the unit did
// not come up is a *GateError; an error wrapping ctx.Err() means the wait was cancelled before a
// verdict.
func (g *Gate) RestartAndWait(ctx context.Context) error {
	unit := g.unit()
	if err := g.restart(ctx, unit); err != nil {
		return err
	}
	if err := g.settle(ctx, unit); err != nil {
		return err
	}
	if g.HealthCommand != "" {
		if err := g.health(ctx, unit); err != nil {
			return err
		}
	}
	g.log().WithField(logging.FieldPhase, logging.PhaseRestart).Infof("%s is up", unit)
	return nil
}

// restart runs the restart job and waits for its result.
func (g *Gate) restart(ctx context.Context, unit string) error {
	timeout := g.startTimeout()
	g.notify("Restarting " + unit)
	g.log().WithField(logging.FieldPhase, logging.PhaseRestart).Infof("restarting %s", unit)

	jobCtx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	// Buffered: if we stop waiting (timeout, cancel), go-systemd's send still completes and
	// its connection is not blocked for later jobs, such as the rollback's restart.
	done := make(chan string, 1)
	// "replace": a start or stop job already queued for the unit must not make ours fail.
	if _, err := g.Conn.RestartUnitContext(jobCtx, unit, "replace", done); err != nil {
		if ctx.Err() != nil {
			return fmt.Errorf("cannot restart %s: %w", unit, ctx.Err())
		}
		if jobCtx.Err() != nil {
			return &GateError{unit, StageRestartJob,
				fmt.Sprintf("systemd did not accept the restart job within %s", fmtDuration(timeout))}
		}
		return &GateError{unit, StageRestartJob, fmt.Sprintf("systemd refused the restart job: %v", err)}
	}
	select {
	case result := <-done:
		if result == "done" {
			return nil
		}
		reason := fmt.Sprintf("restart job finished with result %q", result)
		// What the unit says about itself is worth more than the bare job result.
		rctx, cancel := context.WithTimeout(ctx, timeout)
		defer cancel()
		if p, err := readProps(rctx, g.Conn, unit); err == nil {
			reason += "; unit is " + p.state()
			if w := p.why(); w != "" {
				reason += ", " + w
			}
		}
		return &GateError{unit, StageRestartJob, reason}
	case <-jobCtx.Done():
		if ctx.Err() != nil {
			return fmt.Errorf("cannot restart %s: %w", unit, ctx.Err())
		}
		return &GateError{unit, StageRestartJob,
			fmt.Sprintf("restart job did not finish within %s", fmtDuration(timeout))}
	}
}

// settle watches the unit for g.Settle: it must stay active, with the same main process, the
// same invocation and no automatic restart. Properties are polled rather than taken from D-Bus
// signals: a crash and restart between two polls still shows in NRestarts, MainPID and
// InvocationID, so nothing is missed, and polling needs no subscription to get wrong.
func (g *Gate) settle(ctx context.Context, unit string) error {
	g.notify(fmt.Sprintf("Waiting %s for %s to settle", fmtDuration(g.Settle), unit))
	g.log().WithField(logging.FieldPhase, logging.PhaseRestart).
		Infof("watching %s for %s", unit, fmtDuration(g.Settle))

	first, err := g.settleRead(ctx, unit)
	if err != nil {
		return err
	}
	if reason := changed(first, first); reason != "" {
		return &GateError{unit, StageSettle, reason}
	}

	deadline := time.NewTimer(g.Settle)
	defer deadline.Stop()
	tick := time.NewTicker(g.pollInterval())
	defer tick.Stop()
	for {
		last := false
		select {
		case <-ctx.Done():
			return fmt.Errorf("cannot wait for %s to settle: %w", unit, ctx.Err())
		case <-tick.C:
		case <-deadline.C:
			last = true // one more look, so the verdict reflects the end of the period
		}
		cur, err := g.settleRead(ctx, unit)
		if err != nil {
			return err
		}
		if reason := changed(first, cur); reason != "" {
			return &GateError{unit, StageSettle, reason}
		}
		if last {
			return nil
		}
	}
}

func (g *Gate) settleRead(ctx context.Context, unit string) (props, error) {
	// Bounded, so a systemd that stopped answering cannot hold the gate past its deadline by
	// much; the poll interval is far below this.
	rctx, cancel := context.WithTimeout(ctx, g.startTimeout())
	defer cancel()
	p, err := readProps(rctx, g.Conn, unit)
	if err != nil {
		if ctx.Err() != nil {
			return p, fmt.Errorf("cannot wait for %s to settle: %w", unit, ctx.Err())
		}
		return p, &GateError{unit, StageSettle, err.Error()}
	}
	return p, nil
}

// changed returns what makes cur not count as the unit staying up since base, or "".
func changed(base, cur props) string {
	why := cur.why()
	if cur.isService && cur.nRestarts != base.nRestarts {
		s := fmt.Sprintf("NRestarts went %d→%d", base.nRestarts, cur.nRestarts)
		if why != "" {
			s += " (" + why + ")"
		}
		return s
	}
	if !isActive(cur.active) {
		var detail []string
		if cur.sub != "" && cur.sub != cur.active {
			detail = append(detail, cur.sub)
		}
		if why != "" {
			detail = append(detail, why)
		}
		s := "ActiveState became " + cur.active
		if cur.active == "" {
			s = "ActiveState is unknown"
		}
		if len(detail) > 0 {
			s += " (" + strings.Join(detail, "; ") + ")"
		}
		return s
	}
	// A MainPID of 0 at the start (e.g. RemainAfterExit=yes) gives nothing to compare.
	if base.mainPID != 0 && cur.mainPID != base.mainPID {
		if cur.mainPID == 0 {
			// The unit's and the service's properties are two reads: the main process can
			// exit between them, so the unit still reads active while the service already
			// tells how its process ended.
			s := fmt.Sprintf("main process %d exited", base.mainPID)
			if why != "" {
				s += " (" + why + ")"
			}
			return s
		}
		return fmt.Sprintf("MainPID changed %d→%d", base.mainPID, cur.mainPID)
	}
	if base.invocation != "" && cur.invocation != base.invocation {
		return "the unit was started again (InvocationID changed)"
	}
	return ""
}

// health runs HealthCommand under /bin/sh in a process group of its own, so that a timeout or
// cancellation kills everything it started, not only the shell.
func (g *Gate) health(ctx context.Context, unit string) error {
	timeout := g.startTimeout()
	g.notify("Running health command for " + unit)
	log := g.log().WithField(logging.FieldPhase, logging.PhaseHealth)
	log.WithField("command", g.HealthCommand).Info("running health command")

	hctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	out := &tailWriter{max: outputTail}
	cmd := exec.CommandContext(hctx, "/bin/sh", "-c", g.HealthCommand)
	cmd.Dir = "/"
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	// A background process left holding the output pipe must not make Wait hang.
	cmd.WaitDelay = time.Second
	err := cmd.Run()

	if err == nil {
		log.Info("health command succeeded")
		return nil
	}
	if ctx.Err() != nil {
		return fmt.Errorf("cannot run health command for %s: %w", unit, ctx.Err())
	}
	var exitErr *exec.ExitError
	exited := errors.As(err, &exitErr) && exitErr.Exited()
	// A command that exited by itself just as the deadline passed gets its own verdict.
	if hctx.Err() != nil && !exited {
		return &GateError{unit, StageHealthCommand,
			withOutput(fmt.Sprintf("health command timed out after %s", fmtDuration(timeout)), out)}
	}
	if exitErr != nil {
		msg := fmt.Sprintf("health command exited with status %d", exitErr.ExitCode())
		if ws, ok := exitErr.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			msg = "health command was killed by " + unix.SignalName(ws.Signal())
		}
		return &GateError{unit, StageHealthCommand, withOutput(msg, out)}
	}
	if errors.Is(err, exec.ErrWaitDelay) && cmd.ProcessState != nil && cmd.ProcessState.Success() {
		// The command itself said healthy; only something it left behind kept the pipe open.
		log.Warn("health command succeeded but left a process holding its output open")
		return nil
	}
	return &GateError{unit, StageHealthCommand, fmt.Sprintf("cannot run health command: %v", err)}
}

func withOutput(msg string, out *tailWriter) string {
	if o := out.String(); o != "" {
		return msg + ", output:\n" + o
	}
	return msg + " (no output)"
}

// tailWriter keeps the last max bytes written to it.
type tailWriter struct {
	mu        sync.Mutex
	max       int
	buf       []byte
	truncated bool
}

func (w *tailWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf = append(w.buf, p...)
	if len(w.buf) > w.max {
		w.buf = append(w.buf[:0], w.buf[len(w.buf)-w.max:]...)
		w.truncated = true
	}
	return len(p), nil
}

// String returns the kept output, trimmed, marked when its start was cut off, and valid UTF-8
// (the cut may fall inside a character; it goes into a journal field).
func (w *tailWriter) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	s := strings.TrimSpace(strings.ToValidUTF8(string(w.buf), ""))
	if w.truncated && s != "" {
		s = "…" + s
	}
	return s
}

// fmtDuration prints whole seconds as the config spells them ("90s", not "1m30s").
func fmtDuration(d time.Duration) string {
	if d >= time.Second && d%time.Second == 0 {
		return fmt.Sprintf("%ds", d/time.Second)
	}
	return d.String()
}
