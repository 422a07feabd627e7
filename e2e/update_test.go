package e2e

import (
	"strings"
	"testing"
	"time"

	"github.com/sdupdate/sdupdate/internal/fixture"
	"github.com/sdupdate/sdupdate/internal/sandbox"
	"github.com/sdupdate/sdupdate/logging"
)

var (
	v100       = fixture.Agent{Version: "1.0.0"}
	v110       = fixture.Agent{Version: "1.1.0"}
	v120broken = fixture.Agent{Version: "1.2.0", Broken: true}
	v130       = fixture.Agent{Version: "1.3.0"}
)

// TestUpdateUnderSystemd is a server's life in order: the first install, an update that
// restarts the agent, a broken release rolled back by itself, a rollback by hand, and an
// update while the agent is stopped.
func TestUpdateUnderSystemd(t *testing.T) {
	t.Parallel()
	s := bootServer(t, "e2e-update", 2*time.Second)
	var agentPID string

	ok := t.Run("first install, then the agent is started", func(t *testing.T) {
		s.t = t
		s.release(v100)
		if r := s.run("systemctl", "start", fixture.UpdateUnit); r.ExitCode != 0 {
			t.Fatalf("systemctl start %s: exit %d: %s", fixture.UpdateUnit, r.ExitCode, r.Stderr)
		}
		s.checkInstall(v100)
		if st := s.prop(fixture.AgentUnitID, "ActiveState"); st != "inactive" {
			t.Errorf("agent is %s after the first install, want it left inactive", st)
		}
		s.must("systemctl", "start", fixture.AgentUnitID)
		agentPID = s.waitAgentRuns("1.0.0")
	})
	if !ok {
		return
	}

	ok = t.Run("update restarts the agent into the new version", func(t *testing.T) {
		s.t = t
		s.release(v110)
		cursor := s.cursor()
		// Hold the downloads, to see the run's STATUS= while it is in the middle of one.
		unhold := s.site.Hold("/1.1.0/")
		defer unhold()
		done := make(chan sandbox.Result, 1)
		go func() {
			r, _ := s.sb.Run(s.ctx, "systemctl", "start", fixture.UpdateUnit)
			done <- r
		}()
		deadline := time.Now().Add(10 * time.Second)
		for !strings.HasPrefix(s.prop(fixture.UpdateUnit, "StatusText"), "downloading") {
			if time.Now().After(deadline) {
				t.Fatalf("StatusText of %s = %q, want it to say it is downloading", fixture.UpdateUnit, s.prop(fixture.UpdateUnit, "StatusText"))
			}
			time.Sleep(50 * time.Millisecond)
		}
		r := s.run("systemctl", "status", "--no-pager", fixture.UpdateUnit)
		if !strings.Contains(r.Stdout, `Status: "downloading 0/4 files"`) || !strings.Contains(r.Stdout, "activating (start)") {
			t.Errorf("systemctl status during the download does not show the run's status:\n%s", r.Stdout)
		}
		unhold()
		if r := <-done; r.ExitCode != 0 {
			t.Fatalf("systemctl start %s: exit %d: %s", fixture.UpdateUnit, r.ExitCode, r.Stderr)
		}

		newPID := s.waitAgentRuns("1.1.0")
		if newPID == agentPID {
			t.Errorf("agent's MainPID is still %s: it was not restarted", newPID)
		}
		agentPID = newPID
		s.checkInstall(v110)
		for _, p := range s.site.Requests() {
			if p == "/1.1.0/plugins/disk.py" {
				t.Errorf("plugins/disk.py was downloaded, though 1.1.0 did not change it")
			}
		}

		entries := s.updaterEntries(cursor)
		runs := checkEntries(t, entries)
		if len(runs) != 1 {
			t.Fatalf("run ids %v, want one run:\n%s", runs, list(entries))
		}
		started := event(t, entries, logging.MsgUpdateStarted)
		wantFields(t, started, map[string]string{logging.FieldFrom: "1.0.0", logging.FieldTo: "1.1.0"})
		updated := event(t, entries, logging.MsgUpdated)
		wantFields(t, updated, map[string]string{logging.FieldFrom: "1.0.0", logging.FieldTo: "1.1.0", logging.FieldPhase: "health"})

		st := s.status()
		if st.Version != "1.1.0" || st.LastRun.Result != "updated" || st.LastRun.From != "1.0.0" || st.LastRun.To != "1.1.0" {
			t.Errorf("status: version %q, last run %+v; want 1.1.0, updated 1.0.0 -> 1.1.0", st.Version, *st.LastRun)
		}
		if st.LastRun.RunID != runs[0] {
			t.Errorf("status says last run %s, the journal %s", st.LastRun.RunID, runs[0])
		}
		if snap := updated.get(logging.FieldSnapshot); snap == "" || !hasSnapshot(st, snap, "1.0.0") {
			t.Errorf("updated event names snapshot %q; want one of 1.0.0 in status %+v", snap, st.Snapshots)
		}
		if !strings.HasPrefix(st.UnitState, "active") {
			t.Errorf("status says unit state %q, want active", st.UnitState)
		}
	})
	if !ok {
		return
	}

	ok = t.Run("broken release is rolled back by itself", func(t *testing.T) {
		s.t = t
		s.release(v120broken)
		cursor := s.cursor()
		r := s.run("systemctl", "start", fixture.UpdateUnit)
		if r.ExitCode == 0 {
			t.Fatalf("systemctl start %s succeeded with a broken release", fixture.UpdateUnit)
		}
		for p, want := range map[string]string{"ActiveState": "failed", "Result": "exit-code", "ExecMainStatus": "3"} {
			if got := s.prop(fixture.UpdateUnit, p); got != want {
				t.Errorf("%s of %s = %q, want %q", p, fixture.UpdateUnit, got, want)
			}
		}
		newPID := s.waitAgentRuns("1.1.0")
		if newPID == agentPID {
			t.Errorf("agent's MainPID is still %s: the restored version was not restarted", newPID)
		}
		agentPID = newPID
		s.checkInstall(v110)

		st := s.status()
		if st.Version != "1.1.0" || st.LastRun.Result != "rolled-back" || st.LastRun.From != "1.1.0" || st.LastRun.To != "1.2.0" {
			t.Errorf("status: version %q, last run %+v; want 1.1.0, rolled-back 1.1.0 -> 1.2.0", st.Version, *st.LastRun)
		}
		// The gate saw the agent fail and be restarted by systemd.
		if !strings.Contains(st.LastRun.Reason, "NRestarts") && !strings.Contains(st.LastRun.Reason, "exit-code") {
			t.Errorf("status reason %q does not say what happened to the agent", st.LastRun.Reason)
		}
		if text := s.prop(fixture.UpdateUnit, "StatusText"); !strings.Contains(text, "rolled back") {
			t.Errorf("StatusText of the failed unit = %q, want the run's outcome", text)
		}

		entries := s.updaterEntries(cursor)
		runs := checkEntries(t, entries)
		if len(runs) != 1 {
			t.Fatalf("run ids %v, want one run:\n%s", runs, list(entries))
		}
		wantFields(t, event(t, entries, logging.MsgUpdateStarted), map[string]string{logging.FieldFrom: "1.1.0", logging.FieldTo: "1.2.0"})
		rolled := event(t, entries, logging.MsgRolledBack)
		wantFields(t, rolled, map[string]string{logging.FieldFrom: "1.1.0", logging.FieldTo: "1.2.0", logging.FieldPhase: "rollback",
			logging.FieldReason: st.LastRun.Reason})
		if snap := rolled.get(logging.FieldSnapshot); !hasSnapshot(st, snap, "1.1.0") {
			t.Errorf("rolled back event names snapshot %q; want one of 1.1.0 in status %+v", snap, st.Snapshots)
		}
		var health entry
		for _, e := range entries {
			if e.get(logging.FieldPhase) == "health" && e.get(logging.FieldReason) != "" {
				health = e
			}
		}
		if health == nil {
			t.Errorf("no entry of phase health with the reason the new version failed:\n%s", list(entries))
		}

		// journalctl -x explains the event with the catalog, its fields filled in.
		out := s.must("journalctl", "--no-pager", "-x", "-u", fixture.UpdateUnit, "MESSAGE_ID="+logging.MsgRolledBack, logging.FieldRunID+"="+runs[0])
		if !strings.Contains(out, "Subject: sd-agent rolled back") || !strings.Contains(out, "Defined-By: sdupdate") {
			t.Errorf("journalctl -x does not show the catalog's explanation:\n%s", out)
		}
	})
	if !ok {
		return
	}

	ok = t.Run("sdupdate rollback restores the previous version", func(t *testing.T) {
		s.t = t
		r := s.run("sdupdate", "rollback")
		if r.ExitCode != 0 || !strings.Contains(r.Stdout, "rolled back 1.1.0 -> 1.0.0") {
			t.Fatalf("sdupdate rollback: exit %d\n%s%s", r.ExitCode, r.Stdout, r.Stderr)
		}
		newPID := s.waitAgentRuns("1.0.0")
		if newPID == agentPID {
			t.Errorf("agent's MainPID is still %s: it was not restarted", newPID)
		}
		s.checkInstall(v100)
		st := s.status()
		if st.Version != "1.0.0" || st.LastRun.Result != "rolled-back" || st.LastRun.From != "1.1.0" || st.LastRun.To != "1.0.0" {
			t.Errorf("status: version %q, last run %+v; want 1.0.0, rolled-back 1.1.0 -> 1.0.0", st.Version, *st.LastRun)
		}
	})
	if !ok {
		return
	}

	t.Run("a stopped agent is updated but left stopped", func(t *testing.T) {
		s.t = t
		s.must("systemctl", "stop", fixture.AgentUnitID)
		s.release(v130)
		cursor := s.cursor()
		if r := s.run("systemctl", "start", fixture.UpdateUnit); r.ExitCode != 0 {
			t.Fatalf("systemctl start %s: exit %d: %s", fixture.UpdateUnit, r.ExitCode, r.Stderr)
		}
		s.checkInstall(v130)
		if st := s.prop(fixture.AgentUnitID, "ActiveState"); st != "inactive" {
			t.Errorf("agent is %s, want it left inactive", st)
		}
		entries := s.updaterEntries(cursor)
		checkEntries(t, entries)
		wantFields(t, event(t, entries, logging.MsgUpdated), map[string]string{logging.FieldFrom: "1.0.0", logging.FieldTo: "1.3.0"})
		said := false
		for _, e := range entries {
			said = said || strings.Contains(e.get("MESSAGE"), "left stopped")
		}
		if !said {
			t.Errorf("the journal does not say the agent was left stopped:\n%s", list(entries))
		}
		agent, err := s.sb.JournalJSON(s.ctx, cursor, "UNIT="+fixture.AgentUnitID)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range agent {
			if strings.HasPrefix(entry(e).get("MESSAGE"), "Start") {
				t.Errorf("systemd started the agent during the update: %q", entry(e).get("MESSAGE"))
			}
		}
		if st := s.status(); st.Version != "1.3.0" || st.LastRun.Result != "updated" {
			t.Errorf("status: version %q, last run %+v; want 1.3.0, updated", st.Version, *st.LastRun)
		}
	})
}

func hasSnapshot(st status, id, version string) bool {
	for _, s := range st.Snapshots {
		if s.ID == id && s.Version == version {
			return true
		}
	}
	return false
}
