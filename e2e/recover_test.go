package e2e

import (
	"strings"
	"testing"
	"time"

	"github.com/sdupdate/sdupdate/internal/fixture"
	"github.com/sdupdate/sdupdate/logging"
)

// TestRecoveryByExecStopPost stops the update unit while sdupdate watches the restarted agent.
// The unit's ExecStopPost=sdupdate recover must then finish the check or restore the old
// version, as the run itself would have, logging under the interrupted run's id.
func TestRecoveryByExecStopPost(t *testing.T) {
	t.Parallel()
	// Long enough to catch the run while it watches the agent.
	s := bootServer(t, "e2e-recover", 6*time.Second)
	s.release(v100)
	s.must("systemctl", "start", fixture.UpdateUnit)
	s.must("systemctl", "start", fixture.AgentUnitID)
	s.waitAgentRuns("1.0.0")

	// interrupt starts an update without waiting for it, waits until sdupdate watches the
	// agent, then runs stop (a systemctl command line). It returns the run's id and the
	// journal cursor from before the run.
	interrupt := func(stop ...string) (runID, cursor string) {
		cursor = s.cursor()
		s.must("systemctl", "start", "--no-block", fixture.UpdateUnit)
		watching := s.waitLogged(cursor, "watching "+fixture.AgentUnitID)
		runID = watching.get(logging.FieldRunID)
		s.must(stop...)
		return runID, cursor
	}
	// recovered checks that the journal after cursor shows one run, recovered under its own id,
	// ending in the event outcome, and returns that event.
	recovered := func(t *testing.T, runID, cursor, outcome string) entry {
		entries := s.updaterEntries(cursor)
		if runs := checkEntries(t, entries); len(runs) != 1 || runs[0] != runID {
			t.Errorf("run ids %v, want only the interrupted run's %s:\n%s", runs, runID, list(entries))
		}
		n := 0
		for _, e := range entries {
			if e.get(logging.FieldPhase) == "recover" {
				n++
			}
		}
		if n == 0 {
			t.Errorf("no entry with %s=recover:\n%s", logging.FieldPhase, list(entries))
		}
		return event(t, entries, outcome)
	}

	t.Run("SIGTERM while watching: recover finishes the check", func(t *testing.T) {
		s.t = t
		s.release(v110)
		runID, cursor := interrupt("systemctl", "stop", fixture.UpdateUnit)
		// `systemctl stop` returns once ExecStopPost= has run.
		if st := s.prop(fixture.UpdateUnit, "ActiveState"); st == "activating" || st == "deactivating" {
			t.Fatalf("%s is %s after systemctl stop returned", fixture.UpdateUnit, st)
		}
		s.waitAgentRuns("1.1.0")
		s.checkInstall(v110)
		updated := recovered(t, runID, cursor, logging.MsgUpdated)
		wantFields(t, updated, map[string]string{logging.FieldFrom: "1.0.0", logging.FieldTo: "1.1.0"})
		if st := s.status(); st.Version != "1.1.0" || st.LastRun.Result != "updated" || st.LastRun.RunID != runID {
			t.Errorf("status: version %q, last run %+v; want 1.1.0, updated, run %s", st.Version, *st.LastRun, runID)
		}
	})

	t.Run("SIGKILL while watching a crashing version: recover restores the old one", func(t *testing.T) {
		s.t = t
		// Passes the restart job, then dies while watched: only the recovery can notice.
		s.release(fixture.Agent{Version: "1.2.0", CrashAfter: 2 * time.Second})
		runID, cursor := interrupt("systemctl", "kill", "--signal=KILL", fixture.UpdateUnit)
		// ExecStopPost= runs while the unit is deactivating; then it has failed (killed).
		if err := s.sb.WaitState(s.ctx, fixture.UpdateUnit, "failed"); err != nil {
			t.Fatal(err)
		}
		if r := s.prop(fixture.UpdateUnit, "Result"); r != "signal" {
			t.Errorf("Result of %s = %q, want signal", fixture.UpdateUnit, r)
		}
		s.waitAgentRuns("1.1.0")
		s.checkInstall(v110)
		rolled := recovered(t, runID, cursor, logging.MsgRolledBack)
		wantFields(t, rolled, map[string]string{logging.FieldFrom: "1.1.0", logging.FieldTo: "1.2.0"})
		// Depending on when the gate looked: the restart systemd made, or how the process ended.
		reason := rolled.get(logging.FieldReason)
		t.Logf("reason: %s", reason)
		if !strings.Contains(reason, "NRestarts") && !strings.Contains(reason, "exit-code") {
			t.Errorf("rolled back event's reason %q does not say what happened to the agent", reason)
		}
		if st := s.status(); st.Version != "1.1.0" || st.LastRun.Result != "rolled-back" || st.LastRun.RunID != runID {
			t.Errorf("status: version %q, last run %+v; want 1.1.0, rolled-back, run %s", st.Version, *st.LastRun, runID)
		}
	})
}
