package systemd

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeConn is a Conn whose behaviour each test sets through function fields.
type fakeConn struct {
	restartUnit    func(ctx context.Context, name, mode string, ch chan<- string) (int, error)
	unitProperties func(ctx context.Context, unit string) (map[string]any, error)
	typeProperties func(ctx context.Context, unit, unitType string) (map[string]any, error)
}

var _ Conn = &fakeConn{}

func (f *fakeConn) RestartUnitContext(ctx context.Context, name, mode string, ch chan<- string) (int, error) {
	return f.restartUnit(ctx, name, mode, ch)
}

func (f *fakeConn) GetUnitPropertiesContext(ctx context.Context, unit string) (map[string]any, error) {
	return f.unitProperties(ctx, unit)
}

func (f *fakeConn) GetUnitTypePropertiesContext(ctx context.Context, unit, unitType string) (map[string]any, error) {
	return f.typeProperties(ctx, unit, unitType)
}

func (f *fakeConn) Close() {}

// st is what the fake unit reports at one property read.
type st struct {
	active, sub string
	nRestarts   uint32
	mainPID     uint32
	result      string
	status      int32
	invocation  byte
}

var running = st{active: "active", sub: "running", nRestarts: 3, mainPID: 120, result: "success", invocation: 1}

// fakeUnit answers property reads from a script: read i (counting from 0) sees script[i], and
// every read after the script's end sees its last state.
type fakeUnit struct {
	mu       sync.Mutex
	script   []st
	reads    int
	restarts []string // "name mode" of each restart call
}

func (u *fakeUnit) current() st {
	i := min(u.reads-1, len(u.script)-1)
	return u.script[max(i, 0)]
}

// conn returns a Conn for the unit whose restart job ends with jobResult ("" = never answers).
func (u *fakeUnit) conn(jobResult string) *fakeConn {
	return &fakeConn{
		restartUnit: func(ctx context.Context, name, mode string, ch chan<- string) (int, error) {
			u.mu.Lock()
			u.restarts = append(u.restarts, name+" "+mode)
			u.mu.Unlock()
			if jobResult != "" {
				ch <- jobResult
			}
			return 42, nil
		},
		unitProperties: func(ctx context.Context, unit string) (map[string]any, error) {
			u.mu.Lock()
			defer u.mu.Unlock()
			u.reads++
			s := u.current()
			return map[string]any{
				"LoadState": "loaded", "ActiveState": s.active, "SubState": s.sub,
				"InvocationID": []byte{s.invocation, 0xab},
			}, nil
		},
		typeProperties: func(ctx context.Context, unit, unitType string) (map[string]any, error) {
			if unitType != "Service" {
				return nil, fmt.Errorf("unknown interface %s", unitType)
			}
			u.mu.Lock()
			defer u.mu.Unlock()
			s := u.current()
			return map[string]any{
				"Result": s.result, "NRestarts": s.nRestarts, "MainPID": s.mainPID,
				"ExecMainStatus": s.status,
			}, nil
		},
	}
}

// gate returns a gate with test-sized timings: a success waits out Settle (30ms); a failure
// must be seen well before it.
func gate(c Conn) *Gate {
	return &Gate{
		Unit:         "sd-agent.service",
		StartTimeout: 200 * time.Millisecond,
		Settle:       30 * time.Millisecond,
		Conn:         c,
		PollInterval: time.Millisecond,
	}
}

// wantGateError checks err is a *GateError at stage whose reason contains every part.
func wantGateError(t *testing.T, err error, stage string, parts ...string) {
	t.Helper()
	var ge *GateError
	if !errors.As(err, &ge) {
		t.Fatalf("error %v (%T), want *GateError", err, err)
	}
	if ge.Stage != stage {
		t.Errorf("stage %q, want %q (%v)", ge.Stage, stage, err)
	}
	if ge.Unit != "sd-agent.service" {
		t.Errorf("unit %q", ge.Unit)
	}
	for _, p := range parts {
		if !strings.Contains(ge.Reason, p) {
			t.Errorf("reason %q does not contain %q", ge.Reason, p)
		}
	}
}

func TestRestartOK(t *testing.T) {
	u := &fakeUnit{script: []st{running}}
	var status []string
	g := gate(u.conn("done"))
	g.Notify = func(s string) { status = append(status, s) }
	start := time.Now()
	if err := g.RestartAndWait(context.Background()); err != nil {
		t.Fatal(err)
	}
	if el := time.Since(start); el < g.Settle {
		t.Errorf("returned after %s, before Settle %s", el, g.Settle)
	}
	if len(u.restarts) != 1 || u.restarts[0] != "sd-agent.service replace" {
		t.Errorf("restart calls %v, want one with mode replace", u.restarts)
	}
	if u.reads < 2 {
		t.Errorf("unit read %d times while settling, want it watched", u.reads)
	}
	if len(status) == 0 || !strings.Contains(status[0], "Restarting sd-agent.service") {
		t.Errorf("status reports %q", status)
	}
}

func TestRestartJobResults(t *testing.T) {
	failed := st{active: "failed", sub: "failed", result: "exit-code", status: 1, nRestarts: 3}
	for _, result := range []string{"failed", "timeout", "canceled", "dependency"} {
		t.Run(result, func(t *testing.T) {
			u := &fakeUnit{script: []st{failed}}
			err := gate(u.conn(result)).RestartAndWait(context.Background())
			wantGateError(t, err, StageRestartJob, `result "`+result+`"`, "unit is failed (failed), Result=exit-code, ExecMainStatus=1")
		})
	}
}

func TestRestartJobNeverAnswers(t *testing.T) {
	u := &fakeUnit{script: []st{running}}
	g := gate(u.conn(""))
	g.StartTimeout = 40 * time.Millisecond
	start := time.Now()
	err := g.RestartAndWait(context.Background())
	wantGateError(t, err, StageRestartJob, "did not finish within 40ms")
	if el := time.Since(start); el > 2*time.Second {
		t.Errorf("took %s to give up", el)
	}
}

func TestRestartRefused(t *testing.T) {
	c := (&fakeUnit{script: []st{running}}).conn("done")
	c.restartUnit = func(context.Context, string, string, chan<- string) (int, error) {
		return 0, errors.New("Unit sd-agent.service not found.")
	}
	err := gate(c).RestartAndWait(context.Background())
	wantGateError(t, err, StageRestartJob, "not found")
}

func TestSettleFailures(t *testing.T) {
	crashed := running
	crashed.nRestarts, crashed.mainPID, crashed.result, crashed.status, crashed.invocation = 4, 133, "exit-code", 2, 2
	activating := running
	activating.active, activating.sub = "activating", "start"
	unitFailed := st{active: "failed", sub: "failed", result: "exit-code", status: 1, nRestarts: 3, invocation: 1}
	newPID := running
	newPID.mainPID = 133
	newPID.invocation = 2
	again := running
	again.invocation = 9
	// Read as systemd answers when the process exits between the unit's and the service's
	// properties: still active, but no main process and a failed result.
	exited := running
	exited.mainPID, exited.result, exited.status = 0, "exit-code", 1

	tests := []struct {
		desc   string
		script []st
		parts  []string
	}{
		{"crash loop", []st{running, running, running, crashed}, []string{"NRestarts went 3→4", "Result=exit-code, ExecMainStatus=2"}},
		{"flapping", []st{running, running, activating, running}, []string{"ActiveState became activating (start)"}},
		{"main pid changed", []st{running, running, newPID}, []string{"MainPID changed 120→133"}},
		{"main process exited between reads", []st{running, running, exited}, []string{"main process 120 exited (Result=exit-code, ExecMainStatus=1)"}},
		{"unit failed", []st{running, unitFailed}, []string{"ActiveState became failed (Result=exit-code, ExecMainStatus=1)"}},
		{"not active after the job", []st{unitFailed}, []string{"ActiveState became failed"}},
		{"started again", []st{running, running, again}, []string{"InvocationID changed"}},
	}
	for _, tc := range tests {
		t.Run(tc.desc, func(t *testing.T) {
			u := &fakeUnit{script: tc.script}
			g := gate(u.conn("done"))
			// Long enough that the scripted change is always read before the period ends; a
			// failure returns as soon as it is seen.
			g.Settle = 5 * time.Second
			start := time.Now()
			err := g.RestartAndWait(context.Background())
			wantGateError(t, err, StageSettle, tc.parts...)
			if el := time.Since(start); el > time.Second {
				t.Errorf("failure noticed after %s", el)
			}
		})
	}
}

func TestSettleReloadingCountsAsUp(t *testing.T) {
	reloading := running
	reloading.active, reloading.sub = "reloading", "reload"
	u := &fakeUnit{script: []st{running, reloading, running}}
	if err := gate(u.conn("done")).RestartAndWait(context.Background()); err != nil {
		t.Fatal(err)
	}
}

func TestSettleReadError(t *testing.T) {
	u := &fakeUnit{script: []st{running}}
	c := u.conn("done")
	inner := c.unitProperties
	c.unitProperties = func(ctx context.Context, unit string) (map[string]any, error) {
		u.mu.Lock()
		n := u.reads
		u.mu.Unlock()
		if n >= 2 {
			return nil, errors.New("connection closed")
		}
		return inner(ctx, unit)
	}
	err := gate(c).RestartAndWait(context.Background())
	wantGateError(t, err, StageSettle, "cannot read properties of sd-agent.service: connection closed")
}

func TestCancelMidSettle(t *testing.T) {
	u := &fakeUnit{script: []st{running}}
	g := gate(u.conn("done"))
	g.Settle = 10 * time.Second
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(20*time.Millisecond, cancel)
	start := time.Now()
	err := g.RestartAndWait(ctx)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("error %v, want context.Canceled", err)
	}
	var ge *GateError
	if errors.As(err, &ge) {
		t.Errorf("cancellation reported as a verdict: %v", err)
	}
	if el := time.Since(start); el > time.Second {
		t.Errorf("returned %s after cancel", el)
	}
}

func TestHealthCommand(t *testing.T) {
	tests := []struct {
		desc    string
		command string
		stage   string
		parts   []string
	}{
		{"ok", "exit 0", "", nil},
		{"fails with output", "echo to-stdout; echo to-stderr >&2; exit 1", StageHealthCommand,
			[]string{"health command exited with status 1", "to-stdout", "to-stderr"}},
		{"killed", "kill -9 $$", StageHealthCommand, []string{"health command was killed by SIGKILL"}},
		{"long output keeps the tail", "head -c 10000 /dev/zero | tr '\\0' x; echo END; exit 3", StageHealthCommand,
			[]string{"exited with status 3", "…", "xEND"}},
	}
	for _, tc := range tests {
		t.Run(tc.desc, func(t *testing.T) {
			u := &fakeUnit{script: []st{running}}
			g := gate(u.conn("done"))
			g.StartTimeout = 10 * time.Second // never reached: each command ends by itself
			g.HealthCommand = tc.command
			err := g.RestartAndWait(context.Background())
			if tc.stage == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			wantGateError(t, err, tc.stage, tc.parts...)
			var ge *GateError
			errors.As(err, &ge)
			if len(ge.Reason) > outputTail+200 {
				t.Errorf("reason is %d bytes long", len(ge.Reason))
			}
		})
	}
}

// A health command that hangs is killed at StartTimeout, with everything it started.
func TestHealthCommandTimeoutKillsProcessGroup(t *testing.T) {
	pidFile := filepath.Join(t.TempDir(), "pid")
	u := &fakeUnit{script: []st{running}}
	g := gate(u.conn("done"))
	// Long enough for a loaded machine to start the shell and its child, which the test checks.
	g.StartTimeout = 500 * time.Millisecond
	g.HealthCommand = "echo waiting; sleep 30 & echo $! > " + pidFile + "; wait"
	start := time.Now()
	err := g.RestartAndWait(context.Background())
	wantGateError(t, err, StageHealthCommand, "health command timed out after 500ms", "waiting")
	if el := time.Since(start); el > 2*time.Second {
		t.Errorf("took %s", el)
	}
	wantDead(t, pidFile)
}

func TestHealthCommandCancelled(t *testing.T) {
	pidFile := filepath.Join(t.TempDir(), "pid")
	u := &fakeUnit{script: []st{running}}
	g := gate(u.conn("done"))
	g.StartTimeout = 10 * time.Second
	g.HealthCommand = "sleep 30 & echo $! > " + pidFile + "; wait"
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	// Cancel once the command has started its child.
	go func() {
		for ctx.Err() == nil {
			if b, err := os.ReadFile(pidFile); err == nil && strings.HasSuffix(string(b), "\n") {
				cancel()
				return
			}
			time.Sleep(5 * time.Millisecond)
		}
	}()
	err := g.RestartAndWait(ctx)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("error %v, want context.Canceled", err)
	}
	wantDead(t, pidFile)
}

// wantDead checks that the process whose pid is in pidFile is gone (or a zombie).
func wantDead(t *testing.T, pidFile string) {
	t.Helper()
	b, err := os.ReadFile(pidFile)
	if err != nil {
		t.Fatalf("health command did not start its child: %v", err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(2 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			return // gone
		}
		// The state follows the parenthesised command name.
		if i := strings.LastIndexByte(string(stat), ')'); i > 0 && strings.HasPrefix(string(stat[i+1:]), " Z") {
			return
		}
	}
	t.Errorf("child %d of the health command still runs", pid)
}

func TestActiveAndState(t *testing.T) {
	tests := []struct {
		s      st
		load   string
		active bool
		state  string
	}{
		{running, "loaded", true, "active (running)"},
		{st{active: "reloading", sub: "reload"}, "loaded", true, "reloading (reload)"},
		{st{active: "activating", sub: "auto-restart"}, "loaded", false, "activating (auto-restart)"},
		{st{active: "inactive", sub: "dead"}, "not-found", false, "inactive (dead); not-found"},
	}
	for _, tc := range tests {
		u := &fakeUnit{script: []st{tc.s}}
		c := u.conn("done")
		inner := c.unitProperties
		c.unitProperties = func(ctx context.Context, unit string) (map[string]any, error) {
			m, err := inner(ctx, unit)
			m["LoadState"] = tc.load
			return m, err
		}
		g := gate(c)
		active, err := g.Active(context.Background())
		if err != nil || active != tc.active {
			t.Errorf("%v: Active = %v, %v; want %v", tc.s, active, err, tc.active)
		}
		state, err := g.State(context.Background())
		if err != nil || state.String() != tc.state {
			t.Errorf("State = %q, %v; want %q", state, err, tc.state)
		}
		// Tools read the values one by one: each exactly as systemd has it.
		if state.Active != tc.s.active || state.Sub != tc.s.sub || state.Load != tc.load {
			t.Errorf("State = %+v; want ActiveState %q, SubState %q, LoadState %q", state, tc.s.active, tc.s.sub, tc.load)
		}
	}
}

func TestUnitName(t *testing.T) {
	for in, want := range map[string]string{
		"sd-agent":         "sd-agent.service",
		"sd-agent.service": "sd-agent.service",
		"agent@1.service":  "agent@1.service",
		"sd.agent":         "sd.agent.service",
		"agent.socket":     "agent.socket",
	} {
		if got := UnitName(in); got != want {
			t.Errorf("UnitName(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestGateErrorMessage(t *testing.T) {
	err := &GateError{Unit: "sd-agent.service", Stage: StageSettle, Reason: "NRestarts went 3→4"}
	if got, want := err.Error(), "sd-agent.service did not come up (settle): NRestarts went 3→4"; got != want {
		t.Errorf("%q, want %q", got, want)
	}
}
