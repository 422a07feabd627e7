package updater

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/sirupsen/logrus"
	"github.com/spf13/afero"

	"github.com/sdupdate/sdupdate/systemd"

	"github.com/sdupdate/sdupdate/config"
	"github.com/sdupdate/sdupdate/faultfs"
	"github.com/sdupdate/sdupdate/fsutil"
	"github.com/sdupdate/sdupdate/snapshot"
	"github.com/sdupdate/sdupdate/statindex"
)

// The crash fixture: from 1.0.0 to 1.1.0 one file changes, one changes mode only, one is
// unchanged, one is removed (and its directory with it) and two are added in new nested
// directories. config.cfg is the operator's and no manifest lists it.
const (
	oldVersion   = "1.0.0"
	newVersion   = "1.1.0"
	thirdVersion = "1.2.0"
	mixed        = "mixed"
)

var (
	crashV1 = map[string]agentFile{
		"agent.py":       {data: "print('agent 1.0.0')\n"},
		"bin/sd-agent":   {data: "#!/bin/sh\nexec python3 agent.py\n", mode: 0o755},
		"lib/common.py":  {data: "common = 1\n"},
		"plugins/old.py": {data: "old plugin\n"},
	}
	crashV2 = map[string]agentFile{
		"agent.py":                  {data: "print('agent 1.1.0')\n"},
		"bin/sd-agent":              {data: "#!/bin/sh\nexec python3 agent.py\n", mode: 0o700},
		"lib/common.py":             {data: "common = 1\n"},
		"lib/ext/collectors/new.py": {data: "new in 1.1.0\n"},
		"collectors/linux/cpu.py":   {data: "cpu = True\n"},
	}
	// 1.2.0 changes agent.py and lib/common.py again and drops new.py: what the store holds
	// for 1.0.0 and for 1.1.0 then differs, so retention has objects to remove.
	crashV3 = map[string]agentFile{
		"agent.py":                {data: "print('agent 1.2.0')\n"},
		"bin/sd-agent":            {data: "#!/bin/sh\nexec python3 agent.py\n", mode: 0o700},
		"lib/common.py":           {data: "common = 2\n"},
		"collectors/linux/cpu.py": {data: "cpu = True\n"},
	}
)

// versionOfTree names the version the install holds, or "mixed" when it is neither exactly.
func versionOfTree(t *testing.T, fsys afero.Fs) string {
	t.Helper()
	got := fmt.Sprint(tree(t, fsys, installDir))
	switch got {
	case fmt.Sprint(want(crashV1, untracked)):
		return oldVersion
	case fmt.Sprint(want(crashV2, untracked)):
		return newVersion
	case fmt.Sprint(want(crashV3, untracked)):
		return thirdVersion
	}
	return mixed
}

// crashConfig downloads one file at a time so that the n-th filesystem operation is the same
// one on every run and a failing N can be replayed.
func crashConfig(s *site) *config.Config {
	c := testConfig(s)
	c.Parallel = 1
	return c
}

// versionAgent is an agent unit that runs whatever agent.py is installed when it is restarted.
// The version whose agent.py is bad never comes up. It lives outside the machine's disk, so it
// survives a simulated crash like a real unit survives sdupdate being killed.
type versionAgent struct {
	mu       sync.Mutex
	fs       afero.Fs
	bad      string // agent.py content that crashes on start; "" = every version is healthy
	running  string // agent.py content of the running agent; "" = not running
	restarts int
}

func (a *versionAgent) Active(context.Context) (bool, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.running != "", nil
}

func (a *versionAgent) State(ctx context.Context) (systemd.UnitState, error) {
	if ok, _ := a.Active(ctx); ok {
		return systemd.UnitState{Active: "active", Sub: "running", Load: "loaded"}, nil
	}
	return systemd.UnitState{Active: "failed", Sub: "failed", Load: "loaded"}, nil
}

func (a *versionAgent) RestartAndWait(context.Context, *logrus.Entry) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.restarts++
	data, err := afero.ReadFile(a.fs, installDir+"/agent.py")
	if err != nil {
		a.running = ""
		return fmt.Errorf("agent cannot start: %w", err)
	}
	if a.bad != "" && string(data) == a.bad {
		a.running = ""
		return errors.New("agent exited with status 1 while settling")
	}
	a.running = string(data)
	return nil
}

func (a *versionAgent) runs() string {
	a.mu.Lock()
	defer a.mu.Unlock()
	switch a.running {
	case crashV1["agent.py"].data:
		return oldVersion
	case crashV2["agent.py"].data:
		return newVersion
	case crashV3["agent.py"].data:
		return thirdVersion
	case "":
		return "nothing"
	}
	return mixed
}

// sweepCase is one operation swept by fault injection.
type sweepCase struct {
	name string
	// agent: nil for Unit= empty; otherwise the agent of a fresh machine on fsys.
	agent func(fsys afero.Fs) *versionAgent
	// prepare brings a fresh machine (healthy fs) to the starting version; site serves the
	// version the operation goes to when it returns.
	prepare func(t *testing.T, s *site, e *Engine)
	act     func(ctx context.Context, e *Engine) (*Result, error)
	// start is the version before the operation, done the one after an uninterrupted run, and
	// doneCode that run's exit status.
	start, done string
	doneCode    int
	// settled lists the versions allowed after recovery.
	settled []string
	// latest is the version the site offers once prepared ("" = newVersion): what an update
	// after recovery installs.
	latest string
}

func installCrashV1(t *testing.T, s *site, e *Engine) {
	t.Helper()
	if err := afero.WriteFile(e.Fs, installDir+"/config.cfg", []byte("key=secret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	s.publish(t, oldVersion, crashV1)
	if _, err := e.Update(context.Background(), UpdateOptions{}); err != nil {
		t.Fatalf("install %s: %v", oldVersion, err)
	}
	if v := versionOfTree(t, e.Fs); v != oldVersion {
		t.Fatalf("install of %s gave a %s tree", oldVersion, v)
	}
}

func update(ctx context.Context, e *Engine) (*Result, error) { return e.Update(ctx, UpdateOptions{}) }

var sweepCases = []sweepCase{
	{
		name: "update, Unit= empty",
		prepare: func(t *testing.T, s *site, e *Engine) {
			installCrashV1(t, s, e)
			s.publish(t, newVersion, crashV2)
		},
		act: update, start: oldVersion, done: newVersion, doneCode: CodeOK,
		settled: []string{oldVersion, newVersion},
	},
	{
		name:  "update, agent healthy",
		agent: func(fsys afero.Fs) *versionAgent { return &versionAgent{fs: fsys} },
		prepare: func(t *testing.T, s *site, e *Engine) {
			installCrashV1(t, s, e)
			s.publish(t, newVersion, crashV2)
		},
		act: update, start: oldVersion, done: newVersion, doneCode: CodeOK,
		settled: []string{oldVersion, newVersion},
	},
	{
		// The new agent never comes up, so every run ends in a rollback: the sweep covers the
		// rollback path, and after recovery only the old version is acceptable.
		name: "update, new agent fails",
		agent: func(fsys afero.Fs) *versionAgent {
			return &versionAgent{fs: fsys, bad: crashV2["agent.py"].data}
		},
		prepare: func(t *testing.T, s *site, e *Engine) {
			installCrashV1(t, s, e)
			s.publish(t, newVersion, crashV2)
		},
		act: update, start: oldVersion, done: oldVersion, doneCode: CodeRolledBack,
		settled: []string{oldVersion},
	},
	{
		name:  "rollback, agent healthy",
		agent: func(fsys afero.Fs) *versionAgent { return &versionAgent{fs: fsys} },
		prepare: func(t *testing.T, s *site, e *Engine) {
			installCrashV1(t, s, e)
			s.publish(t, newVersion, crashV2)
			if _, err := e.Update(context.Background(), UpdateOptions{}); err != nil {
				t.Fatalf("update to %s: %v", newVersion, err)
			}
		},
		act:   func(ctx context.Context, e *Engine) (*Result, error) { return e.Rollback(ctx, "") },
		start: newVersion, done: oldVersion, doneCode: CodeOK,
		settled: []string{oldVersion, newVersion},
	},
	{
		// KeepSnapshots=1: the update's retention deletes the 1.0.0 snapshot and the objects
		// only it names, while the new snapshot's objects must all survive.
		name: "update with retention",
		prepare: func(t *testing.T, s *site, e *Engine) {
			e.Config.KeepSnapshots = 1
			installCrashV1(t, s, e)
			updateTo(t, s, e, newVersion, crashV2)
			s.publish(t, thirdVersion, crashV3)
		},
		act: update, start: newVersion, done: thirdVersion, doneCode: CodeOK,
		settled: []string{newVersion, thirdVersion}, latest: thirdVersion,
	},
	{
		name:  "rollback two versions back",
		agent: func(fsys afero.Fs) *versionAgent { return &versionAgent{fs: fsys} },
		prepare: func(t *testing.T, s *site, e *Engine) {
			installCrashV1(t, s, e)
			updateTo(t, s, e, newVersion, crashV2)
			updateTo(t, s, e, thirdVersion, crashV3)
		},
		act: func(ctx context.Context, e *Engine) (*Result, error) {
			list, err := e.Snapshots()
			if err != nil {
				return nil, err
			}
			for _, s := range list {
				if s.Version == oldVersion {
					return e.Rollback(ctx, s.ID)
				}
			}
			return nil, errors.New("no snapshot of 1.0.0")
		},
		start: thirdVersion, done: oldVersion, doneCode: CodeOK,
		settled: []string{oldVersion, thirdVersion}, latest: thirdVersion,
	},
}

// updateTo publishes version and updates e to it.
func updateTo(t *testing.T, s *site, e *Engine, version string, files map[string]agentFile) {
	t.Helper()
	s.publish(t, version, files)
	if _, err := e.Update(context.Background(), UpdateOptions{}); err != nil {
		t.Fatalf("update to %s: %v", version, err)
	}
	if v := versionOfTree(t, e.Fs); v != version {
		t.Fatalf("update to %s gave a %s tree", version, v)
	}
}

// freshMachine is a new in-memory machine prepared by c, with its agent (nil for Unit= empty).
func freshMachine(t *testing.T, c sweepCase, s *site) (afero.Fs, *versionAgent, *config.Config) {
	t.Helper()
	fsys := afero.NewMemMapFs()
	cfg := crashConfig(s)
	var agent *versionAgent
	if c.agent != nil {
		cfg.Unit = "sd-agent.service"
		agent = c.agent(fsys)
		// The agent runs before sdupdate ever does: nothing is installed, but it is "up".
		agent.running = "preinstalled"
	}
	e := newEngine(fsys, cfg, nil)
	if agent != nil {
		e.Agent = agent
		bad := agent.bad
		agent.bad = "" // the starting version must come up
		c.prepare(t, s, e)
		agent.bad = bad
	} else {
		c.prepare(t, s, e)
	}
	if v := versionOfTree(t, fsys); v != c.start {
		t.Fatalf("prepared machine holds %s, want %s", v, c.start)
	}
	return fsys, agent, cfg
}

func engineOn(fsys afero.Fs, cfg *config.Config, agent *versionAgent) *Engine {
	e := newEngine(fsys, cfg, nil)
	if agent != nil {
		e.Agent = agent
	}
	return e
}

// settledState checks what an operator checks after the machine came back: the tree is exactly
// one version, installed.json names it and every file matches it, no journal and no staged file
// remain, and no incomplete snapshot is left. It returns the version.
func settledState(t *testing.T, e *Engine, allowed []string) string {
	t.Helper()
	v := versionOfTree(t, e.Fs)
	ok := false
	for _, a := range allowed {
		ok = ok || v == a
	}
	if !ok {
		t.Errorf("install is %s, want one of %v:\n%v", v, allowed, tree(t, e.Fs, installDir))
	}
	installed, mismatches, err := e.Verify(context.Background())
	if err != nil || len(mismatches) > 0 || installed != v {
		t.Errorf("verify: installed.json says %q, tree is %s, mismatches %v, err %v", installed, v, mismatches, err)
	}
	noLeftovers(t, e.Fs)
	if incomplete := incompleteSnapshots(t, e.Fs); len(incomplete) > 0 {
		t.Errorf("incomplete snapshots left: %v", incomplete)
	}
	if damage := storeDamage(t, e.Fs); len(damage) > 0 {
		t.Errorf("snapshot store damaged: %v", damage)
	}
	return v
}

func incompleteSnapshots(t *testing.T, fsys afero.Fs) []string {
	t.Helper()
	dir := filepath.Join(stateDir, "snapshots")
	entries, _ := afero.ReadDir(fsys, dir)
	var out []string
	for _, en := range entries {
		if en.Name() == "objects" || !en.IsDir() {
			continue
		}
		if ok, _ := afero.Exists(fsys, filepath.Join(dir, en.Name(), "record.json")); !ok {
			out = append(out, en.Name())
		}
	}
	return out
}

// storeDamage lists what is wrong with the snapshot store on fsys once recovered: content a
// kept snapshot stored that is neither in the store nor in the install (a restore may have
// moved it back), or an object no snapshot names.
func storeDamage(t *testing.T, fsys afero.Fs) []string {
	t.Helper()
	dir := filepath.Join(stateDir, "snapshots")
	named := map[string]bool{}
	var out []string
	entries, _ := afero.ReadDir(fsys, dir)
	for _, en := range entries {
		data, err := afero.ReadFile(fsys, filepath.Join(dir, en.Name(), "record.json"))
		if err != nil {
			continue
		}
		m, err := parseRecord(data)
		if err != nil {
			out = append(out, fmt.Sprintf("%s: %v", en.Name(), err))
			continue
		}
		for _, f := range m.Files {
			named[f.SHA256] = true
			if ok, _ := afero.Exists(fsys, filepath.Join(dir, "objects", f.SHA256)); !f.Stored || ok {
				continue
			}
			data, _ := afero.ReadFile(fsys, filepath.Join(installDir, f.Name))
			if sum := sha256.Sum256(data); hex.EncodeToString(sum[:]) != f.SHA256 {
				out = append(out, fmt.Sprintf("%s lost the content of %s", m.ID, f.Name))
			}
		}
	}
	objs, _ := afero.ReadDir(fsys, filepath.Join(dir, "objects"))
	for _, o := range objs {
		if !named[o.Name()] {
			out = append(out, "object "+o.Name()+" is named by no snapshot")
		}
	}
	return out
}

// parseRecord reads a record.json as its format lays it out, apart from the snapshot
// package's own reader: JSON Lines, a head, the objects, the directories, then one line per file.
func parseRecord(data []byte) (*snapshot.Meta, error) {
	lines := bytes.Split(bytes.TrimSuffix(data, []byte("\n")), []byte("\n"))
	if len(lines) < 3 {
		return nil, fmt.Errorf("%d lines, want at least 3", len(lines))
	}
	var head struct {
		ID    string `json:"id"`
		Files int    `json:"files"`
	}
	if err := json.Unmarshal(lines[0], &head); err != nil {
		return nil, fmt.Errorf("head: %v", err)
	}
	if head.Files != len(lines)-3 {
		return nil, fmt.Errorf("head says %d files, %d lines follow", head.Files, len(lines)-3)
	}
	m := snapshot.Meta{ID: head.ID, Files: make([]snapshot.FileMeta, head.Files)}
	for i, line := range lines[3:] {
		if err := json.Unmarshal(line, &m.Files[i]); err != nil {
			return nil, fmt.Errorf("file %d: %v", i+1, err)
		}
	}
	return &m, nil
}

// journalPhase is the phase the journal on fsys records, or "" when there is none.
func journalPhase(t *testing.T, fsys afero.Fs) Phase {
	t.Helper()
	data, err := afero.ReadFile(fsys, filepath.Join(stateDir, "txn.json"))
	if errors.Is(err, os.ErrNotExist) {
		return ""
	}
	if err != nil {
		t.Fatal(err)
	}
	var r Record
	if err := json.Unmarshal(data, &r); err != nil {
		t.Fatalf("journal does not parse after a crash: %v", err)
	}
	return r.Phase
}

// tally counts outcomes for the log.
type tally map[string]int

func (c tally) String() string {
	keys := make([]string, 0, len(c))
	for k := range c {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, 0, len(keys))
	for _, k := range keys {
		parts = append(parts, fmt.Sprintf("%s=%d", k, c[k]))
	}
	return strings.Join(parts, " ")
}

// TestFaultSweep fails the 1st, 2nd, 3rd … mutating filesystem operation of an update (or
// rollback), once as a transient error and once as a power loss, until a run completes
// untouched. After every failure the engine's own answer is checked, then the machine is
// "rebooted" (a fresh Engine on what reached the disk) and recovered: the install must be
// exactly one version, and a following update must work.
func TestFaultSweep(t *testing.T) {
	for _, c := range sweepCases {
		t.Run(c.name, func(t *testing.T) {
			for _, crash := range []bool{false, true} {
				mode := map[bool]string{false: "transient", true: "crash"}[crash]
				t.Run(mode, func(t *testing.T) { sweep(t, c, crash) })
			}
		})
	}
}

func sweep(t *testing.T, c sweepCase, crash bool) {
	s := newSite(t)
	ctx := context.Background()
	immediate, recovered, phases, damage := tally{}, tally{}, tally{}, tally{}
	for n := 1; ; n++ {
		base, agent, cfg := freshMachine(t, c, s)
		damage[damageIndex(t, base, uint64(n))]++
		ffs := faultfs.New(base)
		ffs.FailAt(n, crash)
		_, err := c.act(ctx, engineOn(ffs, cfg, agent))
		code := ExitCode(err)
		if !ffs.Failed() {
			// The first N past the last operation: an untouched run.
			if code != c.doneCode {
				t.Fatalf("untouched run: exit %d (%v), want %d", code, err, c.doneCode)
			}
			if v := settledState(t, engineOn(base, cfg, agent), []string{c.done}); v != c.done {
				t.Fatalf("untouched run left %s", v)
			}
			t.Logf("swept N = 1..%d (%d operations); right after the failure: %v; journal phase at the failure: %v; after recovery: %v; stat index before the run: %v",
				n-1, ffs.Ops(), immediate, phases, recovered, damage)
			return
		}
		if n > 5000 {
			t.Fatal("the sweep does not end: more than 5000 operations")
		}
		if p := journalPhase(t, base); p != "" {
			phases[string(p)]++
		} else {
			phases["none"]++
		}
		now := versionOfTree(t, base)
		immediate[fmt.Sprintf("exit %d %s", code, now)]++
		if !crash {
			// One failed operation: the engine's own error path must keep its promise.
			switch code {
			case CodeOK:
				if now != c.done {
					t.Errorf("N=%d: exit 0 but the install is %s, want %s", n, now, c.done)
				}
			case CodeFailed:
				if now != c.start {
					t.Errorf("N=%d: exit 1 (%v) but the install is %s, want it unchanged (%s)", n, err, now, c.start)
				}
			case CodeRolledBack:
				if now != oldVersion {
					t.Errorf("N=%d: exit 3 (%v) but the install is %s, want %s", n, err, now, oldVersion)
				}
			case CodeOperator:
				// The engine asks for recovery; what recovery does is checked below.
			default:
				t.Errorf("N=%d: exit %d (%v)", n, code, err)
			}
		}

		// Reboot: a new process on what reached the disk.
		re := engineOn(base, cfg, agent)
		if _, err := re.Recover(ctx); err != nil {
			t.Errorf("N=%d: recover: %v", n, err)
		}
		v := settledState(t, re, c.settled)
		recovered[v]++
		// The agent runs the code that is installed: a version never restarted into still
		// runs the old code, which is then what the tree holds.
		if agent != nil && agent.runs() != v {
			t.Errorf("N=%d: install is %s but the agent runs %s", n, v, agent.runs())
		}

		// And the machine is usable: an update to the new version goes through, whatever
		// became of the stat index.
		if agent != nil {
			agent.bad = ""
		}
		damageIndex(t, base, uint64(n)+1<<32)
		latest := c.latest
		if latest == "" {
			latest = newVersion
		}
		if _, err := re.Update(ctx, UpdateOptions{}); err != nil {
			t.Errorf("N=%d: update after recovery: %v", n, err)
		}
		if v := settledState(t, re, []string{latest}); v != latest {
			t.Errorf("N=%d: update after recovery left %s", n, v)
		}
		if t.Failed() {
			t.Fatalf("stopped at N=%d (crash=%v): the run returned exit %d: %v", n, crash, code, err)
		}
	}
}

// damageIndex does one thing, chosen by seed, to the stat index on fsys, as a bad disk, a
// stray edit or a bug might: nothing, remove it, cut it, change a byte, make it describe
// another installed manifest, or give every entry other stats and sums (checksum intact). Each
// must cost at most a hash of every file. It returns what it did.
func damageIndex(t *testing.T, fsys afero.Fs, seed uint64) string {
	t.Helper()
	path := filepath.Join(stateDir, "stat-index")
	data, err := afero.ReadFile(fsys, path)
	if err != nil || len(data) == 0 {
		return "absent"
	}
	rng := rand.New(rand.NewPCG(seed, 0x1d))
	kinds := []string{"kept", "removed", "cut", "byte changed", "stale", "other stats"}
	kind := kinds[rng.IntN(len(kinds))]
	switch kind {
	case "removed":
		err = fsys.Remove(path)
	case "cut":
		err = afero.WriteFile(fsys, path, data[:rng.IntN(len(data))], 0o600)
	case "byte changed":
		data[rng.IntN(len(data))] ^= byte(1 + rng.IntN(255))
		err = afero.WriteFile(fsys, path, data, 0o600)
	case "stale", "other stats":
		x, lerr := statindex.Load(fsys, path)
		if lerr != nil {
			return "left damaged" // by an earlier call, and not rewritten since
		}
		if kind == "stale" {
			x.Installed = strings.Repeat("0", 64)
		}
		for _, name := range x.Names() {
			if kind == "other stats" {
				x.Set(name, statindex.Stat{Size: rng.Int64N(100), Mtime: rng.Int64(), Ino: rng.Uint64()}, fmt.Sprintf("%064x", rng.Uint64()))
			}
		}
		err = x.Save(fsys, path)
	}
	if err != nil {
		t.Fatal(err)
	}
	return kind
}

// cloneFs copies a machine's disk, so one interrupted state can be recovered many times.
func cloneFs(t *testing.T, src afero.Fs) afero.Fs {
	t.Helper()
	dst := afero.NewMemMapFs()
	err := afero.Walk(src, "/", func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		if fi.IsDir() {
			if err := dst.MkdirAll(p, 0o700); err != nil {
				return err
			}
			return dst.Chmod(p, fi.Mode().Perm())
		}
		data, err := afero.ReadFile(src, p)
		if err != nil {
			return err
		}
		if err := afero.WriteFile(dst, p, data, fi.Mode().Perm()); err != nil {
			return err
		}
		return dst.Chmod(p, fi.Mode().Perm())
	})
	if err != nil {
		t.Fatal(err)
	}
	return dst
}

// interruptedIn crashes runs of c at N = 1, 2, … and returns the first disk whose journal is in
// phase and whose tree is a mix of both versions: the hardest state to recover from. The agent
// of that machine is returned too.
func interruptedIn(t *testing.T, c sweepCase, s *site, phase Phase) (afero.Fs, *versionAgent, *config.Config) {
	t.Helper()
	for n := 1; n < 5000; n++ {
		base, agent, cfg := freshMachine(t, c, s)
		ffs := faultfs.New(base)
		ffs.FailAt(n, true)
		_, _ = c.act(context.Background(), engineOn(ffs, cfg, agent))
		if !ffs.Failed() {
			break
		}
		if journalPhase(t, base) == phase && versionOfTree(t, base) == mixed {
			t.Logf("a crash at operation %d leaves phase %s with a mixed tree", n, phase)
			return base, agent, cfg
		}
	}
	t.Fatalf("no crash of %q leaves phase %s with a mixed tree", c.name, phase)
	return nil, nil, nil
}

// TestRecoveryIsIdempotent crashes Recover itself at every operation, once and twice in a
// row, on a journal left mid-apply and one left mid-rollback: the next Recover must still end
// in exactly the old version (both phases are undone, see recover.go), with the agent running
// it.
func TestRecoveryIsIdempotent(t *testing.T) {
	cases := []struct {
		name  string
		c     sweepCase
		phase Phase
	}{
		{"applying", sweepCases[1], PhaseApplying},
		{"rolling-back", sweepCases[2], PhaseRollingBack},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := newSite(t)
			ctx := context.Background()
			state, agent0, cfg := interruptedIn(t, tc.c, s, tc.phase)
			for _, crashes := range []int{1, 2} {
				swept := 0
				for n := 1; ; n++ {
					fsys := cloneFs(t, state)
					agent := &versionAgent{fs: fsys, bad: agent0.bad, running: agent0.running}
					reached := false
					for i := 0; i < crashes; i++ {
						ffs := faultfs.New(fsys)
						ffs.FailAt(n, true)
						_, _ = engineOn(ffs, cfg, agent).Recover(ctx)
						reached = reached || ffs.Failed()
					}
					re := engineOn(fsys, cfg, agent)
					if _, err := re.Recover(ctx); err != nil {
						t.Fatalf("N=%d, %d crashed recoveries: recover: %v", n, crashes, err)
					}
					if v := settledState(t, re, []string{oldVersion}); v != oldVersion || agent.runs() != oldVersion {
						t.Fatalf("N=%d, %d crashed recoveries: install %s, agent runs %s", n, crashes, v, agent.runs())
					}
					if !reached {
						// N is past the last operation of a recovery: it ran untouched.
						swept = n - 1
						break
					}
					agent.bad = ""
					if _, err := re.Update(ctx, UpdateOptions{}); err != nil {
						t.Fatalf("N=%d: update after recovery: %v", n, err)
					}
					if v := settledState(t, re, []string{newVersion}); v != newVersion {
						t.Fatalf("N=%d: update after recovery left %s", n, v)
					}
				}
				t.Logf("recovery crashed %d× at each of N = 1..%d: every time the next one restored %s", crashes, swept, oldVersion)
				if swept == 0 {
					t.Errorf("recovery did not write anything: nothing swept")
				}
			}
		})
	}
}

// cancelOnApply cancels a context at the first rename into the install directory: a signal
// arriving while files are being replaced.
type cancelOnApply struct {
	afero.Fs
	cancel func()
	once   sync.Once
}

func (c *cancelOnApply) Rename(oldname, newname string) error {
	if strings.HasPrefix(newname, installDir+"/") && !strings.HasPrefix(filepath.Base(newname), ".sdupdate-") {
		c.once.Do(c.cancel)
	}
	return c.Fs.Rename(oldname, newname)
}

func (c *cancelOnApply) Link(oldname, newname string) error {
	return &os.LinkError{Op: "link", Old: oldname, New: newname, Err: fsutil.ErrNoHardLinks}
}

// TestSignalDuringApplyIsHeldUntilTheTreeIsConsistent cancels the run's context (what SIGINT or
// SIGTERM does) at the first file replaced: apply must still run to the end — the new tree is
// whole when it returns — and then the old version is put back, exit 1.
func TestSignalDuringApplyIsHeldUntilTheTreeIsConsistent(t *testing.T) {
	s := newSite(t)
	base := afero.NewMemMapFs()
	cfg := crashConfig(s)
	cfg.Unit = "sd-agent.service"
	agent := &versionAgent{fs: base, running: "preinstalled"}
	installCrashV1(t, s, engineOn(base, cfg, agent))
	restarts := agent.restarts
	s.publish(t, newVersion, crashV2)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	fsys := &cancelOnApply{Fs: base, cancel: cancel}
	e := engineOn(fsys, cfg, agent)
	var atApplied string
	e.HookApplied = func(*Record) {
		if ctx.Err() == nil {
			t.Error("the context was not cancelled during apply")
		}
		atApplied = versionOfTree(t, base)
	}
	res, err := e.Update(ctx, UpdateOptions{})
	if atApplied != newVersion {
		t.Errorf("when apply returned the tree was %s, want all of %s: apply stopped halfway", atApplied, newVersion)
	}
	if ExitCode(err) != CodeFailed || !strings.Contains(err.Error(), "interrupted") {
		t.Fatalf("exit %d (%v), want 1 and a message saying it was interrupted", ExitCode(err), err)
	}
	if res.Outcome != OutcomeFailed {
		t.Errorf("outcome %q, want %q", res.Outcome, OutcomeFailed)
	}
	if v := settledState(t, engineOn(base, cfg, agent), []string{oldVersion}); v != oldVersion {
		t.Errorf("after the interrupted run the install is %s", v)
	}
	if agent.restarts != restarts || agent.runs() != oldVersion {
		t.Errorf("agent restarted %d times and runs %s; an interrupted update must leave it alone", agent.restarts-restarts, agent.runs())
	}
}

// inodeFs is a disk with a fixed number of free inodes: creating a file or directory takes one
// and fails with ENOSPC when none is left; removing or replacing one gives it back. It has no
// hard links, so snapshots and restores copy (and take inodes).
type inodeFs struct {
	afero.Fs
	mu      sync.Mutex
	limited bool
	free    int
}

func (f *inodeFs) take(name string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.limited {
		return nil
	}
	if _, err := f.Fs.Stat(name); err == nil {
		return nil
	}
	if f.free == 0 {
		return &os.PathError{Op: "create", Path: name, Err: syscall.ENOSPC}
	}
	f.free--
	return nil
}

func (f *inodeFs) give(n int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.free += n
}

func (f *inodeFs) count(path string) int {
	n := 0
	_ = afero.Walk(f.Fs, path, func(string, os.FileInfo, error) error { n++; return nil })
	return n
}

func (f *inodeFs) Create(name string) (afero.File, error) {
	if err := f.take(name); err != nil {
		return nil, err
	}
	return f.Fs.Create(name)
}

func (f *inodeFs) OpenFile(name string, flag int, perm os.FileMode) (afero.File, error) {
	if flag&os.O_CREATE != 0 {
		if err := f.take(name); err != nil {
			return nil, err
		}
	}
	return f.Fs.OpenFile(name, flag, perm)
}

func (f *inodeFs) Mkdir(name string, perm os.FileMode) error {
	if err := f.take(name); err != nil {
		return err
	}
	return f.Fs.Mkdir(name, perm)
}

func (f *inodeFs) MkdirAll(path string, perm os.FileMode) error {
	var missing []string
	for p := filepath.Clean(path); p != "/"; p = filepath.Dir(p) {
		if _, err := f.Fs.Stat(p); err == nil {
			break
		}
		missing = append(missing, p)
	}
	for i := len(missing) - 1; i >= 0; i-- {
		if err := f.Mkdir(missing[i], perm); err != nil && !errors.Is(err, os.ErrExist) {
			return err
		}
	}
	return nil
}

func (f *inodeFs) Remove(name string) error {
	if err := f.Fs.Remove(name); err != nil {
		return err
	}
	f.give(1)
	return nil
}

func (f *inodeFs) RemoveAll(path string) error {
	n := f.count(path)
	if err := f.Fs.RemoveAll(path); err != nil {
		return err
	}
	f.give(n)
	return nil
}

func (f *inodeFs) Rename(oldname, newname string) error {
	replaced := 0
	if fi, err := f.Fs.Stat(newname); err == nil && !fi.IsDir() {
		replaced = 1
	}
	if err := f.Fs.Rename(oldname, newname); err != nil {
		return err
	}
	f.give(replaced)
	return nil
}

func (f *inodeFs) Link(oldname, newname string) error {
	return &os.LinkError{Op: "link", Old: oldname, New: newname, Err: fsutil.ErrNoHardLinks}
}

// TestDiskFullAfterDownloadLeavesInstallUnchanged runs out of inodes at every point after the
// download (0, 1, 2 … spare), until the update fits: each time the update must fail with exit
// 1, the install unchanged and staging removed, or succeed with the new version. A full disk
// fails the apply and the journal write that would record the rollback alike; the snapshot
// must still be restored.
func TestDiskFullAfterDownloadLeavesInstallUnchanged(t *testing.T) {
	s := newSite(t)
	ctx := context.Background()
	var outcomes []string
	for spare := 0; spare < 200; spare++ {
		fsys := &inodeFs{Fs: afero.NewMemMapFs()}
		cfg := crashConfig(s)
		installCrashV1(t, s, engineOn(fsys, cfg, nil))
		s.publish(t, newVersion, crashV2)
		e := engineOn(fsys, cfg, nil)
		// The disk fills up as the download ends, so only what follows it runs short.
		e.Notify = func(status string) {
			if strings.HasPrefix(status, "taking snapshot") {
				fsys.mu.Lock()
				fsys.limited, fsys.free = true, spare
				fsys.mu.Unlock()
			}
		}
		_, err := e.Update(ctx, UpdateOptions{})
		v := versionOfTree(t, fsys)
		outcomes = append(outcomes, fmt.Sprintf("%d:exit %d %s", spare, ExitCode(err), v))
		fsys.mu.Lock()
		fsys.limited = false
		fsys.mu.Unlock()
		if err == nil {
			if v != newVersion {
				t.Fatalf("%d spare inodes: exit 0 but the install is %s", spare, v)
			}
			settledState(t, e, []string{newVersion})
			t.Logf("%d spare inodes were needed after the download; outcomes %v", spare, outcomes)
			return
		}
		if ExitCode(err) != CodeFailed || v != oldVersion || !errors.Is(err, syscall.ENOSPC) && !strings.Contains(err.Error(), "no space left") {
			t.Fatalf("%d spare inodes: exit %d (%v), install %s; want exit 1, a disk-full message and %s unchanged", spare, ExitCode(err), err, v, oldVersion)
		}
		if ok, _ := afero.Exists(fsys, filepath.Join(stateDir, "txn.json")); ok {
			t.Errorf("%d spare inodes: the journal was left behind", spare)
		}
		noLeftovers(t, fsys)
	}
	t.Fatalf("the update never fit: %v", outcomes)
}
