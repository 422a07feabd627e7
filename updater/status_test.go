package updater

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"testing"

	"github.com/spf13/afero"

	"github.com/sdupdate/sdupdate/systemd"
)

// statusKeys are the keys of `status --json` that the contract and the README promise.
var statusKeys = []string{"format", "sdupdate_version", "version", "directory", "unit", "unit_state",
	"in_progress", "previous", "snapshots", "findings", "last_run"}

// statusDoc encodes the status as `status --json` prints it and decodes it as a tool would.
func statusDoc(t *testing.T, e *Engine) map[string]any {
	t.Helper()
	st, err := e.Status(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	raw, err := json.Marshal(st)
	if err != nil {
		t.Fatal(err)
	}
	var doc map[string]any
	if err := json.Unmarshal(raw, &doc); err != nil {
		t.Fatal(err)
	}
	for _, k := range statusKeys {
		if _, ok := doc[k]; !ok {
			t.Errorf("status --json has no %q: %s", k, raw)
		}
	}
	return doc
}

func TestStatusBeforeAnyUpdateHasEveryKeyAndEmptyLists(t *testing.T) {
	s := newSite(t)
	e := newEngine(afero.NewMemMapFs(), testConfig(s), nil)
	doc := statusDoc(t, e)
	if doc["format"] != float64(StatusFormat) || doc["version"] != "" || doc["unit_state"] != UnitStateNotManaged {
		t.Errorf("format %v, version %q, unit_state %q; want %d, \"\", not-managed", doc["format"], doc["version"], doc["unit_state"], StatusFormat)
	}
	// A tool iterates the lists and tests the objects: [] and null, never a missing key.
	if f, ok := doc["findings"].([]any); !ok || len(f) != 0 {
		t.Errorf("findings %#v, want []", doc["findings"])
	}
	if sn, ok := doc["snapshots"].([]any); !ok || len(sn) != 0 {
		t.Errorf("snapshots %#v, want []", doc["snapshots"])
	}
	for _, k := range []string{"in_progress", "previous", "last_run"} {
		if doc[k] != nil {
			t.Errorf("%s = %v, want null before any run", k, doc[k])
		}
	}
}

func TestStatusAfterUpdateNamesPreviousAndLastRun(t *testing.T) {
	s := newSite(t)
	fsys := afero.NewMemMapFs()
	cfg := testConfig(s)
	cfg.Unit = "sd-agent.service"
	e := newEngine(fsys, cfg, &fakeAgent{active: true})
	installV1(t, s, fsys, e)
	s.publish(t, "1.1.0", v2)
	if _, err := e.Update(context.Background(), UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	st, err := e.Status(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if st.UnitState != "active" || st.UnitSubState != "running" || st.UnitLoadState != "loaded" || st.UnitError != "" {
		t.Errorf("unit state %q/%q/%q (%q), want active/running/loaded", st.UnitState, st.UnitSubState, st.UnitLoadState, st.UnitError)
	}
	// The rollback target is the snapshot of 1.0.0, the one `sdupdate rollback` restores.
	if st.Previous == nil || st.Previous.Version != "1.0.0" {
		t.Fatalf("previous %+v, want the snapshot of 1.0.0", st.Previous)
	}
	lr := st.LastRun
	if lr == nil || lr.Result != OutcomeUpdated || lr.From != "1.0.0" || lr.To != "1.1.0" || lr.RolledBack ||
		lr.Started.IsZero() || lr.Finished.Before(lr.Started) || len(lr.RunID) != 32 {
		t.Errorf("last run %+v, want updated 1.0.0 -> 1.1.0, not rolled back, with times and a run id", lr)
	}

	res, err := e.Rollback(context.Background(), "")
	if err != nil {
		t.Fatal(err)
	}
	if res.Snapshot != st.Previous.Snapshot {
		t.Errorf("rollback restored %s, status said previous is %s", res.Snapshot, st.Previous.Snapshot)
	}
	st, _ = e.Status(context.Background())
	if st.LastRun.Result != OutcomeRolledBack || !st.LastRun.RolledBack || st.Version != "1.0.0" {
		t.Errorf("after rollback: version %q, last run %+v", st.Version, st.LastRun)
	}
	// A rollback takes no snapshot: back on 1.0.0, the only older one is the empty install before
	// the first update, which is no rollback target (it would uninstall the agent).
	if st.Previous != nil && st.Previous.Version == "" {
		t.Errorf("previous after rollback %+v: the empty snapshot taken before 1.0.0", st.Previous)
	}
}

func TestStatusOfAnUpdateThatWasRolledBack(t *testing.T) {
	s, _, e, agent := installedWithAgent(t)
	updateThatDoesNotComeUp(t, s, e, agent)
	st, _ := e.Status(context.Background())
	lr := st.LastRun
	if st.Version != "1.0.0" || lr.Result != OutcomeRolledBack || !lr.RolledBack || lr.From != "1.0.0" || lr.To != "1.1.0" || lr.Reason == "" {
		t.Errorf("version %q, last run %+v; want 1.0.0, rolled-back 1.0.0 -> 1.1.0 with a reason", st.Version, lr)
	}
}

// brokenBus is an agent whose systemd cannot be asked.
type brokenBus struct{ *fakeAgent }

func (*brokenBus) State(context.Context) (systemd.UnitState, error) {
	return systemd.UnitState{}, errors.New("cannot connect to systemd over D-Bus: no such file")
}

func TestStatusUnitStateIsAValueEvenWhenSystemdCannotBeAsked(t *testing.T) {
	s := newSite(t)
	cfg := testConfig(s)
	cfg.Unit = "sd-agent.service"
	e := newEngine(afero.NewMemMapFs(), cfg, &brokenBus{&fakeAgent{}})
	st, err := e.Status(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if st.UnitState != UnitStateUnknown || st.UnitError == "" {
		t.Errorf("unit_state %q, unit_error %q; want unknown with the reason apart", st.UnitState, st.UnitError)
	}
	states := []string{"active", "reloading", "inactive", "failed", "activating", "deactivating", "maintenance", "refreshing", UnitStateUnknown, UnitStateNotManaged}
	if !slices.Contains(states, st.UnitState) {
		t.Errorf("unit_state %q is not a value a tool can compare", st.UnitState)
	}
}

// updateThatDoesNotComeUp publishes 1.1.0 and updates to it with an agent whose first restart
// fails: the update must end rolled back (exit 3).
func updateThatDoesNotComeUp(t *testing.T, s *site, e *Engine, agent *fakeAgent) {
	t.Helper()
	agent.restarts = 0
	agent.fail = func(n int) error {
		if n == 1 {
			return errors.New("NRestarts went 0→3 while settling")
		}
		return nil
	}
	s.publish(t, "1.1.0", v2)
	if _, err := e.Update(context.Background(), UpdateOptions{}); ExitCode(err) != CodeRolledBack {
		t.Fatalf("exit %d (%v), want 3", ExitCode(err), err)
	}
}
