package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/sdupdate/sdupdate/internal/fixture"
	"github.com/sdupdate/sdupdate/internal/sandbox"
)

// fleetTimeout bounds the whole fleet test: four sandboxes and five playbook runs.
const fleetTimeout = 4 * time.Minute

const textfileDir = "/var/lib/prometheus/node-exporter"

// A release that comes up everywhere, and one that does not come up on the server whose
// sd-agent.cfg still has a setting it dropped: the second batch's host.
var (
	fleetGood = fixture.Agent{Version: "1.1.0"}
	fleetBad  = fixture.Agent{Version: "1.2.0", RefusesConfig: "legacy_plugins"}
)

// fleet is four servers, each a sandbox with its own systemd, agent and sdupdate, updating
// from one publisher's loopback site, reached by Ansible through community.docker.nsenter.
type fleet struct {
	t       *testing.T
	ctx     context.Context
	pub     *fixture.Publisher
	site    *fixture.Site
	hosts   []*server
	dir     string // inventory, summaries, ansible's temp files
	ansible string // the repository's packaging/ansible
}

// summaryRow is one line of the playbooks' summary (sdupdate_summary_file), with the records
// of status --json and check --json taken before and after the host's update.
type summaryRow struct {
	Host, Before, After, Result, Reason string
	Records                             struct{ Before, After *hostRecord }
}

func bootFleet(t *testing.T) *fleet {
	t.Helper()
	sandbox.RequireOrSkip(t)
	requireTools(t, "ansible-playbook")
	bin := sdupdateBinary(t)
	root, err := fixture.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), fleetTimeout)
	t.Cleanup(cancel)
	pub, err := fixture.NewPublisher(t.TempDir(), bin)
	if err != nil {
		t.Fatal(err)
	}
	site := fixture.Serve(pub.Site)
	t.Cleanup(site.Close)
	f := &fleet{t: t, ctx: ctx, pub: pub, site: site, dir: t.TempDir(), ansible: filepath.Join(root, "packaging", "ansible")}

	start := time.Now()
	f.hosts = make([]*server, 4)
	errs := make([]error, 4)
	var wg sync.WaitGroup
	for i := range f.hosts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			h := fixture.Host{
				Name: fmt.Sprintf("fleet-h%d", i+1),
				Bin:  bin,
				Config: fixture.Config{
					ManifestURL: site.ManifestURL(), PublicKey: pub.PublicKey,
					Settle: time.Second, StartTimeout: 10 * time.Second, TextfileDirectory: textfileDir,
				},
				Log: sandbox.TestLog(t),
			}
			if i == 1 {
				h.OperatorConfig = "api_key = 0123456789abcdef\nlegacy_plugins = yes\n"
			}
			sb, err := h.Boot(ctx)
			if err != nil {
				errs[i] = err
				return
			}
			f.hosts[i] = &server{t: t, ctx: ctx, sb: sb, pub: pub, site: site}
		}()
	}
	wg.Wait()
	for _, s := range f.hosts {
		if s != nil {
			t.Cleanup(func() {
				if err := s.sb.Close(); err != nil {
					t.Error(err)
				}
			})
		}
	}
	for _, err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("4 sandboxes ready in %v", time.Since(start).Round(time.Millisecond))
	var inv strings.Builder
	inv.WriteString("[sd_agent]\n")
	for _, s := range f.hosts {
		fmt.Fprintf(&inv, "%s ansible_connection=community.docker.nsenter ansible_nsenter_pid=%d ansible_python_interpreter=/usr/bin/python3\n", s.sb.Name(), s.sb.PID())
	}
	if err := os.WriteFile(filepath.Join(f.dir, "inventory"), []byte(inv.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	return f
}

// each runs fn on every host at once and waits.
func (f *fleet) each(fn func(s *server)) {
	var wg sync.WaitGroup
	for _, s := range f.hosts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			fn(s)
		}()
	}
	wg.Wait()
}

// playbook runs one of packaging/ansible's playbooks against the fleet and returns its exit
// status, its output and the summary it wrote.
func (f *fleet) playbook(name string, extra ...string) (int, string, []summaryRow) {
	f.t.Helper()
	summary := filepath.Join(f.dir, "summary.json")
	os.Remove(summary)
	args := []string{"-i", filepath.Join(f.dir, "inventory"), filepath.Join(f.ansible, name),
		"-e", "sdupdate_summary_file=" + summary}
	for _, e := range extra {
		args = append(args, "-e", e)
	}
	cmd := exec.CommandContext(f.ctx, "ansible-playbook", args...)
	cmd.Env = append(os.Environ(), "ANSIBLE_NOCOLOR=1", "ANSIBLE_RETRY_FILES_ENABLED=0",
		"ANSIBLE_LOCAL_TEMP="+filepath.Join(f.dir, "tmp"), "ANSIBLE_FORKS=10")
	start := time.Now()
	out, err := cmd.CombinedOutput()
	code := 0
	if err != nil {
		ee, ok := err.(*exec.ExitError)
		if !ok {
			f.t.Fatalf("ansible-playbook %s: %v\n%s", name, err, out)
		}
		code = ee.ExitCode()
	}
	f.t.Logf("ansible-playbook %s %v: exit %d in %v", name, extra, code, time.Since(start).Round(time.Millisecond))
	if os.Getenv("FLEET_DEBUG") != "" {
		f.t.Log(string(out))
	}
	var rows []summaryRow
	data, err := os.ReadFile(summary)
	if err != nil {
		f.t.Fatalf("%s wrote no summary: %v\n%s", name, err, out)
	}
	if err := json.Unmarshal(data, &rows); err != nil {
		f.t.Fatalf("summary %s: %v\n%s", summary, err, data)
	}
	return code, string(out), rows
}

// wantSummary checks the summary file and the table printed in the output against want:
// host → before, after, result.
func (f *fleet) wantSummary(out string, rows []summaryRow, want map[string][3]string) {
	f.t.Helper()
	if len(rows) != len(want) {
		f.t.Errorf("summary has %d rows, want %d: %+v", len(rows), len(want), rows)
	}
	for _, r := range rows {
		w, ok := want[r.Host]
		if !ok {
			f.t.Errorf("summary names %s", r.Host)
			continue
		}
		if got := [3]string{r.Before, r.After, r.Result}; got != w {
			f.t.Errorf("summary for %s: %q, want %q (reason %q)", r.Host, got, w, r.Reason)
		}
		// The same row in the printed table, as the operator reads it.
		line := regexp.MustCompile(`"` + regexp.QuoteMeta(r.Host) + `\s+` + regexp.QuoteMeta(w[0]) + `\s+` + regexp.QuoteMeta(w[1]) + `\s+` + regexp.QuoteMeta(w[2]) + `"`)
		if !line.MatchString(out) {
			f.t.Errorf("the printed summary has no row %q for %s:\n%s", w, r.Host, tail(out, 40))
		}
	}
}

// recap returns the PLAY RECAP counters of host, e.g. "ok=9 changed=0 ...".
func recap(out, host string) string {
	m := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(host) + `\s+:\s+(.*)$`).FindStringSubmatch(out)
	if m == nil {
		return ""
	}
	return strings.Join(strings.Fields(m[1]), " ")
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// metric returns one sample of the host's sdupdate.prom, parsed as node_exporter would.
func (s *server) metric(name string, labels ...string) float64 {
	s.t.Helper()
	data, err := s.sb.ReadFile(textfileDir + "/sdupdate.prom")
	if err != nil {
		s.t.Fatalf("%s: no metrics: %v", s.sb.Name(), err)
	}
	p := expfmt.NewTextParser(model.LegacyValidation)
	fams, err := p.TextToMetricFamilies(bytes.NewReader(data))
	if err != nil {
		s.t.Fatalf("%s: sdupdate.prom does not parse: %v\n%s", s.sb.Name(), err, data)
	}
	for _, m := range fams[name].GetMetric() {
		have := map[string]string{}
		for _, l := range m.GetLabel() {
			have[l.GetName()] = l.GetValue()
		}
		match := true
		for i := 0; i+1 < len(labels); i += 2 {
			match = match && have[labels[i]] == labels[i+1]
		}
		if match {
			if m.Counter != nil {
				return m.GetCounter().GetValue()
			}
			return m.GetGauge().GetValue()
		}
	}
	s.t.Fatalf("%s: no sample %s%v in\n%s", s.sb.Name(), name, labels, data)
	return 0
}

// TestFleetRolloutWithAnsible updates four real-systemd servers with packaging/ansible: a good
// release everywhere, the same again (nothing changes), a release that does not come up on the
// second batch's host (the rollout stops there, that host rolls back by itself, the rest are
// never touched), rollback.yml for the host that had taken it, and a pinned target that the
// manifest does not offer.
func TestFleetRolloutWithAnsible(t *testing.T) {
	t.Parallel()
	f := bootFleet(t)
	f.release(v100)
	f.each(func(s *server) {
		s.must("sdupdate", "update")
		s.must("systemctl", "start", fixture.AgentUnitID)
		s.waitAgentRuns("1.0.0")
	})
	h1, h2, h3, h4 := f.hosts[0], f.hosts[1], f.hosts[2], f.hosts[3]
	names := func(v [4][3]string) map[string][3]string {
		m := map[string][3]string{}
		for i, s := range f.hosts {
			m[s.sb.Name()] = v[i]
		}
		return m
	}

	ok := t.Run("a good release reaches every host", func(t *testing.T) {
		f.t = t
		f.release(fleetGood)
		code, out, rows := f.playbook("update.yml")
		if code != 0 {
			t.Fatalf("update.yml: exit %d\n%s", code, tail(out, 60))
		}
		u := [3]string{"1.0.0", "1.1.0", "updated"}
		f.wantSummary(out, rows, names([4][3]string{u, u, u, u}))
		f.each(func(s *server) {
			s.t = t
			if st := s.status(); st.Version != "1.1.0" || st.LastRun.Result != "updated" {
				t.Errorf("%s: version %s, last run %+v", s.sb.Name(), st.Version, *st.LastRun)
			}
			s.waitAgentRuns("1.1.0")
		})
		// What was recorded around h1's update: an update waiting before, none after.
		var r summaryRow
		for _, row := range rows {
			if row.Host == h1.sb.Name() {
				r = row
			}
		}
		if r.Records.Before == nil || r.Records.After == nil {
			t.Fatalf("no records of %s in the summary: %+v", r.Host, r)
		}
		before, after := r.Records.Before, r.Records.After
		if fmt.Sprint(before.CheckRC) != "100" || before.Check.Available != "1.1.0" || before.Status.Version != "1.0.0" ||
			fmt.Sprint(after.CheckRC) != "0" || after.Status.Version != "1.1.0" {
			t.Errorf("records of %s: before %+v, after %+v", r.Host, *before, *after)
		}
	})
	if !ok {
		return
	}

	ok = t.Run("again: every host ok, nothing changed", func(t *testing.T) {
		f.t = t
		cursor := map[*server]string{}
		for _, s := range f.hosts {
			s.t = t
			cursor[s] = s.cursor()
		}
		code, out, rows := f.playbook("update.yml")
		if code != 0 {
			t.Fatalf("update.yml: exit %d\n%s", code, tail(out, 60))
		}
		u := [3]string{"1.1.0", "1.1.0", "up to date"}
		f.wantSummary(out, rows, names([4][3]string{u, u, u, u}))
		for _, s := range f.hosts {
			if r := recap(out, s.sb.Name()); !strings.Contains(r, "changed=0") || !strings.Contains(r, "failed=0") {
				t.Errorf("%s: recap %q, want changed=0 failed=0", s.sb.Name(), r)
			}
			if runs := s.unitRuns(cursor[s]); len(runs) != 0 {
				t.Errorf("%s: %s ran again: %v", s.sb.Name(), fixture.UpdateUnit, runs)
			}
		}
	})
	if !ok {
		return
	}

	ok = t.Run("a release that fails on the second batch stops the rollout there", func(t *testing.T) {
		f.t = t
		f.release(fleetBad)
		cursor := map[*server]string{}
		for _, s := range f.hosts {
			s.t = t
			cursor[s] = s.cursor()
		}
		code, out, rows := f.playbook("update.yml")
		if code == 0 {
			t.Errorf("update.yml exited 0 although a host rolled back\n%s", tail(out, 40))
		}
		notReached := [3]string{"-", "-", "not reached"}
		f.wantSummary(out, rows, names([4][3]string{
			{"1.1.0", "1.2.0", "updated"}, {"1.1.0", "1.1.0", "rolled back"}, notReached, notReached}))
		for _, r := range rows {
			if r.Host == h2.sb.Name() && !strings.Contains(r.Reason, "did not come up") {
				t.Errorf("summary gives %s's reason as %q, want sdupdate's", r.Host, r.Reason)
			}
		}
		// h2 rolled back by itself: the old version runs again, and status and metrics say so.
		st := h2.status()
		if st.Version != "1.1.0" || st.LastRun.Result != "rolled-back" || st.LastRun.To != "1.2.0" {
			t.Errorf("%s: version %s, last run %+v; want 1.1.0 after 1.2.0 rolled back", h2.sb.Name(), st.Version, *st.LastRun)
		}
		h2.waitAgentRuns("1.1.0")
		if v := h2.metric("sdupdate_rollbacks_total"); v != 1 {
			t.Errorf("%s: sdupdate_rollbacks_total %v, want 1", h2.sb.Name(), v)
		}
		if v := h2.metric("sdupdate_last_run_result", "result", "rolled-back"); v != 1 {
			t.Errorf("%s: last_run_result{rolled-back} %v, want 1", h2.sb.Name(), v)
		}
		if v := h2.metric("sdupdate_update_available", "available", "1.2.0"); v != 1 {
			t.Errorf("%s: update_available{1.2.0} %v, want 1", h2.sb.Name(), v)
		}
		if v := h1.metric("sdupdate_info", "version", "1.2.0"); v != 1 {
			t.Errorf("%s: sdupdate_info{version=1.2.0} %v", h1.sb.Name(), v)
		}
		h1.waitAgentRuns("1.2.0")
		// The hosts after it were never touched: no sdupdate run, no check, still 1.1.0.
		for _, s := range []*server{h3, h4} {
			if e := s.updaterEntries(cursor[s]); len(e) != 0 {
				t.Errorf("%s was touched after the rollout stopped:\n%s", s.sb.Name(), list(e))
			}
			if runs := s.unitRuns(cursor[s]); len(runs) != 0 {
				t.Errorf("%s: %s ran: %v", s.sb.Name(), fixture.UpdateUnit, runs)
			}
			if st := s.status(); st.Version != "1.1.0" {
				t.Errorf("%s runs %s, want 1.1.0", s.sb.Name(), st.Version)
			}
		}
	})
	if !ok {
		return
	}

	t.Run("rollback.yml brings the updated host back", func(t *testing.T) {
		f.t = t
		for _, s := range f.hosts {
			s.t = t
		}
		code, out, rows := f.playbook("rollback.yml", "sdupdate_rollback_from=1.2.0")
		if code != 0 {
			t.Fatalf("rollback.yml: exit %d\n%s", code, tail(out, 60))
		}
		same := [3]string{"1.1.0", "1.1.0", "unchanged"}
		f.wantSummary(out, rows, names([4][3]string{{"1.2.0", "1.1.0", "rolled back"}, same, same, same}))
		f.each(func(s *server) {
			if st := s.status(); st.Version != "1.1.0" {
				t.Errorf("%s runs %s after the rollback, want 1.1.0", s.sb.Name(), st.Version)
			}
		})
		h1.waitAgentRuns("1.1.0")
		h1.checkInstall(fleetGood)
	})

	t.Run("a target the manifest does not offer stops at the canary, nothing changed", func(t *testing.T) {
		f.t = t
		cursor := map[*server]string{}
		for _, s := range f.hosts {
			s.t = t
			cursor[s] = s.cursor()
		}
		code, out, rows := f.playbook("update.yml", "sdupdate_target_version=1.3.0")
		if code == 0 {
			t.Errorf("update.yml exited 0 with a target nobody offers\n%s", tail(out, 40))
		}
		notReached := [3]string{"-", "-", "not reached"}
		f.wantSummary(out, rows, names([4][3]string{{"1.1.0", "1.1.0", "failed"}, notReached, notReached, notReached}))
		if len(rows) > 0 && !strings.Contains(rows[0].Reason, "offers 1.2.0, not the target 1.3.0") {
			t.Errorf("reason %q, want that the manifest offers 1.2.0, not 1.3.0", rows[0].Reason)
		}
		for _, s := range f.hosts {
			if runs := s.unitRuns(cursor[s]); len(runs) != 0 {
				t.Errorf("%s: %s ran: %v", s.sb.Name(), fixture.UpdateUnit, runs)
			}
		}
	})
}

func (f *fleet) release(a fixture.Agent) {
	f.t.Helper()
	if _, err := f.pub.Release(a); err != nil {
		f.t.Fatal(err)
	}
}

// hostRecord is what the playbooks record of a host before and after.
type hostRecord struct {
	Status struct {
		Version string `json:"version"`
	} `json:"status"`
	Check struct {
		Available string `json:"available"`
	} `json:"check"`
	CheckRC any `json:"check_rc"` // a number or its text, as Ansible's templating leaves it
}

// unitRuns returns the start messages of the update unit logged by systemd after cursor.
func (s *server) unitRuns(cursor string) []string {
	s.t.Helper()
	raw, err := s.sb.JournalJSON(s.ctx, cursor, "UNIT="+fixture.UpdateUnit, "_PID=1")
	if err != nil {
		s.t.Fatal(err)
	}
	var runs []string
	for _, e := range raw {
		if m := entry(e).get("MESSAGE"); strings.HasPrefix(m, "Starting") {
			runs = append(runs, m)
		}
	}
	return runs
}
