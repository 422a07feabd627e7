package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sdupdate/sdupdate/internal/fixture"
	"github.com/sdupdate/sdupdate/internal/sandbox"
	"github.com/sdupdate/sdupdate/logging"
)

// testTimeout bounds one test's sandbox and every command run in it.
const testTimeout = 2 * time.Minute

var build struct {
	once     sync.Once
	dir, bin string
	err      error
}

func TestMain(m *testing.M) {
	code := m.Run()
	for _, dir := range []string{build.dir, packages.dir} {
		if dir != "" {
			os.RemoveAll(dir)
		}
	}
	os.Exit(code)
}

// sdupdateBinary builds cmd/sdupdate once for every test of the package.
func sdupdateBinary(t *testing.T) string {
	t.Helper()
	build.once.Do(func() {
		build.dir, build.err = os.MkdirTemp("", "sdupdate-e2e-")
		if build.err == nil {
			build.bin, build.err = fixture.Build(build.dir)
		}
	})
	if build.err != nil {
		t.Fatal(build.err)
	}
	return build.bin
}

// server is one machine under test, booted in a sandbox, with the publisher and HTTP site it
// updates from.
type server struct {
	t    *testing.T
	ctx  context.Context
	sb   *sandbox.Sandbox
	pub  *fixture.Publisher
	site *fixture.Site
}

// bootServer boots a server whose sdupdate watches the restarted agent for settle.
func bootServer(t *testing.T, name string, settle time.Duration) *server {
	t.Helper()
	s := newServer(t)
	start := time.Now()
	sb, err := fixture.Host{
		Name: name,
		Bin:  sdupdateBinary(t),
		Config: fixture.Config{
			ManifestURL: s.site.ManifestURL(), PublicKey: s.pub.PublicKey,
			Settle: settle, StartTimeout: 10 * time.Second,
		},
		Log: sandbox.TestLog(t),
	}.Boot(s.ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("sandbox %s ready in %v (boot, catalog, masks)", name, time.Since(start).Round(time.Millisecond))
	s.attach(sb)
	return s
}

// newServer makes a server's publisher and HTTP site, and the context that bounds the test;
// its sandbox is booted next and given to attach.
func newServer(t *testing.T) *server {
	t.Helper()
	sandbox.RequireOrSkip(t)
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	t.Cleanup(cancel)
	pub, err := fixture.NewPublisher(t.TempDir(), sdupdateBinary(t))
	if err != nil {
		t.Fatal(err)
	}
	site := fixture.Serve(pub.Site)
	t.Cleanup(site.Close)
	return &server{t: t, ctx: ctx, pub: pub, site: site}
}

// attach makes sb the server's machine, closed when the test ends, after its journal is shown
// if the test failed.
func (s *server) attach(sb *sandbox.Sandbox) {
	t := s.t
	s.sb = sb
	t.Cleanup(func() {
		if err := sb.Close(); err != nil {
			t.Error(err)
		}
	})
	// Runs before Close: on failure, what an operator would look at first.
	t.Cleanup(func() {
		if t.Failed() {
			r, _ := sb.Run(context.Background(), "journalctl", "--no-pager", "-o", "short-precise",
				"-u", fixture.UpdateUnit, "-u", fixture.AgentUnitID, "SYSLOG_IDENTIFIER=sdupdate")
			t.Logf("journal of the update and agent units:\n%s", r.Stdout)
		}
	})
}

// release publishes a version of the agent.
func (s *server) release(a fixture.Agent) {
	s.t.Helper()
	if _, err := s.pub.Release(a); err != nil {
		s.t.Fatal(err)
	}
}

// run runs a command inside; only a failure to run it at all is fatal.
func (s *server) run(args ...string) sandbox.Result {
	s.t.Helper()
	r, err := s.sb.Run(s.ctx, args...)
	if err != nil {
		s.t.Fatal(err)
	}
	return r
}

// must runs a command inside that has to succeed and returns its stdout.
func (s *server) must(args ...string) string {
	s.t.Helper()
	out, err := s.sb.Output(s.ctx, args...)
	if err != nil {
		s.t.Fatal(err)
	}
	return out
}

func (s *server) prop(unit, property string) string {
	s.t.Helper()
	v, err := s.sb.UnitProperty(s.ctx, unit, property)
	if err != nil {
		s.t.Fatal(err)
	}
	return v
}

func (s *server) cursor() string {
	s.t.Helper()
	c, err := s.sb.JournalCursor(s.ctx)
	if err != nil {
		s.t.Fatal(err)
	}
	return c
}

// entry is one journal entry as `journalctl -o json` shows it.
type entry map[string]any

// get returns a field's value; a field sent more than once reads as its values joined by "|".
func (e entry) get(field string) string {
	switch v := e[field].(type) {
	case string:
		return v
	case []any:
		parts := make([]string, len(v))
		for i, p := range v {
			parts[i] = fmt.Sprint(p)
		}
		return strings.Join(parts, "|")
	case nil:
		return ""
	default:
		return fmt.Sprint(v)
	}
}

func (e entry) String() string {
	var fields []string
	for _, f := range []string{"_TRANSPORT", "MESSAGE_ID", logging.FieldRunID, logging.FieldPhase, logging.FieldFrom,
		logging.FieldTo, logging.FieldSnapshot, logging.FieldReason} {
		if v := e.get(f); v != "" {
			fields = append(fields, f+"="+v)
		}
	}
	return fmt.Sprintf("%q {%s}", e.get("MESSAGE"), strings.Join(fields, " "))
}

// updaterEntries returns what sdupdate logged after cursor: every entry of a process in the
// update unit, and every entry with sdupdate's identifier (a short-lived process's entry may
// reach journald before its unit is known, see internal/sandbox).
func (s *server) updaterEntries(cursor string) []entry {
	s.t.Helper()
	raw, err := s.sb.JournalJSON(s.ctx, cursor, "_SYSTEMD_UNIT="+fixture.UpdateUnit, "+", "SYSLOG_IDENTIFIER="+logging.Identifier)
	if err != nil {
		s.t.Fatal(err)
	}
	entries := make([]entry, len(raw))
	for i, e := range raw {
		entries[i] = entry(e)
	}
	return entries
}

// checkEntries checks what holds for every entry sdupdate logs under systemd: it came by the
// native protocol (a plain stdout or stderr line would be a duplicate without fields), carries
// sdupdate's identifier and a run id. It returns the run ids in order of first appearance.
func checkEntries(t *testing.T, entries []entry) []string {
	t.Helper()
	var runs []string
	for _, e := range entries {
		if tr := e.get("_TRANSPORT"); tr != "journal" {
			t.Errorf("entry arrived as a plain %s line, not by the native protocol (a duplicate without fields): %v", tr, e)
		}
		if id := e.get("SYSLOG_IDENTIFIER"); id != logging.Identifier {
			t.Errorf("entry has SYSLOG_IDENTIFIER=%q, want %q: %v", id, logging.Identifier, e)
		}
		run := e.get(logging.FieldRunID)
		if len(run) != 32 {
			t.Errorf("entry has no valid %s: %v", logging.FieldRunID, e)
			continue
		}
		if len(runs) == 0 || !contains(runs, run) {
			runs = append(runs, run)
		}
	}
	return runs
}

// event returns the one entry with MESSAGE_ID id, failing unless there is exactly one.
func event(t *testing.T, entries []entry, id string) entry {
	t.Helper()
	var found []entry
	for _, e := range entries {
		if e.get("MESSAGE_ID") == id {
			found = append(found, e)
		}
	}
	if len(found) != 1 {
		t.Fatalf("%d journal entries with MESSAGE_ID=%s, want 1; entries:\n%s", len(found), id, list(entries))
	}
	return found[0]
}

// wantFields checks fields of an entry.
func wantFields(t *testing.T, e entry, want map[string]string) {
	t.Helper()
	for f, v := range want {
		if got := e.get(f); got != v {
			t.Errorf("%s=%q, want %q in %v", f, got, v, e)
		}
	}
}

func list(entries []entry) string {
	var b strings.Builder
	for _, e := range entries {
		fmt.Fprintf(&b, "  %v\n", e)
	}
	return b.String()
}

func contains(list []string, s string) bool {
	for _, l := range list {
		if l == s {
			return true
		}
	}
	return false
}

// waitAgentRuns waits until the agent unit is active and its main process has said, in the
// journal, that it runs version v. It returns the main pid.
func (s *server) waitAgentRuns(v string) string {
	s.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	var state, pid, said string
	for {
		state = s.prop(fixture.AgentUnitID, "ActiveState")
		pid = s.prop(fixture.AgentUnitID, "MainPID")
		if state == "active" && pid != "0" {
			// The agent's first line comes from its main process itself (its shell execs sleep).
			said = s.must("journalctl", "--no-pager", "-o", "cat", "SYSLOG_IDENTIFIER=sd-agent", "_PID="+pid)
			if strings.Contains(said, fixture.RunningLine(v)) {
				return pid
			}
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("agent is %s with MainPID %s, which said %q; want it active and running %s", state, pid, said, v)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// checkInstall checks that /opt/sd-agent holds exactly version a: each of its files with its
// content and mode, no file of another version, the operator's own file untouched, and no
// transaction or staged file left behind.
func (s *server) checkInstall(a fixture.Agent) {
	s.t.Helper()
	files := a.Files()
	for name, f := range files {
		p := path.Join(fixture.InstallDir, name)
		got, err := s.sb.ReadFile(p)
		if err != nil {
			s.t.Errorf("version %s: %v", a.Version, err)
			continue
		}
		if string(got) != f.Data {
			s.t.Errorf("%s holds %q, want version %s's %q", p, got, a.Version, f.Data)
		}
		if mode := strings.TrimSpace(s.must("stat", "-c", "%a", p)); mode != fmt.Sprintf("%o", f.Mode) {
			s.t.Errorf("%s has mode %s, want %o", p, mode, f.Mode)
		}
	}
	// The union of every version's names: a file of another version must not be there.
	for name := range (fixture.Agent{Version: "9.9.9"}).Files() {
		if _, ok := files[name]; !ok {
			if r := s.run("test", "-e", path.Join(fixture.InstallDir, name)); r.ExitCode == 0 {
				s.t.Errorf("%s exists, but version %s has no such file", name, a.Version)
			}
		}
	}
	if got, err := s.sb.ReadFile(fixture.OperatorFile); err != nil || !strings.HasPrefix(string(got), "api_key = ") {
		s.t.Errorf("the operator's %s = %q, %v; want it untouched", fixture.OperatorFile, got, err)
	}
	if out := s.must("sdupdate", "verify"); !strings.Contains(out, "version "+a.Version) {
		s.t.Errorf("sdupdate verify: %q, want every file of version %s intact", out, a.Version)
	}
	s.checkNoTransaction()
}

// checkNoTransaction checks that no run is left half done: no transaction journal and no
// staged file, wherever staging lives.
func (s *server) checkNoTransaction() {
	s.t.Helper()
	if r := s.run("test", "-e", path.Join(fixture.StateDir, "txn.json")); r.ExitCode == 0 {
		s.t.Errorf("%s/txn.json remains: %s", fixture.StateDir, s.must("cat", path.Join(fixture.StateDir, "txn.json")))
	}
	out := s.must("sh", "-c", "find "+fixture.StateDir+"/staging "+fixture.InstallDir+"/.sdupdate/staging -mindepth 1 2>/dev/null; true")
	if strings.TrimSpace(out) != "" {
		s.t.Errorf("staged files remain:\n%s", out)
	}
}

// status is the part of `sdupdate status --json` the tests read.
type status struct {
	Version   string `json:"version"`
	Unit      string `json:"unit"`
	UnitState string `json:"unit_state"`
	Snapshots []struct {
		ID      string `json:"id"`
		Version string `json:"version"`
	} `json:"snapshots"`
	LastRun *struct {
		RunID    string `json:"run_id"`
		Result   string `json:"result"`
		From     string `json:"from"`
		To       string `json:"to"`
		Reason   string `json:"reason"`
		Snapshot string `json:"snapshot"`
	} `json:"last_run"`
}

func (s *server) status() status {
	s.t.Helper()
	out := s.must("sdupdate", "status", "--json")
	var st status
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		s.t.Fatalf("sdupdate status --json: %v\n%s", err, out)
	}
	if st.LastRun == nil {
		s.t.Fatalf("sdupdate status --json has no last_run:\n%s", out)
	}
	return st
}

// waitLogged waits until sdupdate logs, after cursor, an entry whose message starts with
// prefix, and returns it.
func (s *server) waitLogged(cursor, prefix string) entry {
	s.t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		for _, e := range s.updaterEntries(cursor) {
			if strings.HasPrefix(e.get("MESSAGE"), prefix) {
				return e
			}
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("sdupdate did not log %q; it logged:\n%s", prefix, list(s.updaterEntries(cursor)))
		}
		time.Sleep(100 * time.Millisecond)
	}
}
