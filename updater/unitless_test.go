package updater

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"

	"github.com/spf13/afero"
)

// A run stopped while it watched the agent, then Unit= emptied (what the D-Bus error suggests):
// every command used to panic on the missing agent until txn.json was removed by hand. Recovery
// now ends the run on the tree it left, and status answers.
func TestRecoverAfterUnitEmptiedWhileWatching(t *testing.T) {
	for _, tc := range []struct {
		phase   Phase
		fail    func(n int) error // the watched restart that is interrupted, and the ones before it
		wantOut string
		tree    map[string]agentFile
	}{
		{PhaseRestarting, nil, OutcomeUpdated, v2},
		{PhaseRollbackRestarting, func(n int) error { return errors.New("did not come up") }, OutcomeRolledBack, v1},
	} {
		t.Run(string(tc.phase), func(t *testing.T) {
			s := newSite(t)
			fsys := afero.NewMemMapFs()
			cfg := testConfig(s)
			s.publish(t, "1.0.0", v1)
			if _, err := newEngine(fsys, cfg, nil).Update(context.Background(), UpdateOptions{}); err != nil {
				t.Fatal(err)
			}
			s.publish(t, "1.1.0", v2)

			ctx, stop := context.WithCancel(context.Background())
			agent := &fakeAgent{active: true}
			agent.fail = func(n int) error {
				if rec, _ := newEngine(fsys, cfg, nil).journalAt(); rec != nil && rec.Phase == tc.phase {
					stop() // killed while watching, in the phase under test
					return context.Canceled
				}
				return tc.fail(n)
			}
			watched := *cfg
			watched.Unit = "sd-agent.service"
			if _, err := newEngine(fsys, &watched, agent).Update(ctx, UpdateOptions{}); !errors.Is(err, ErrInterrupted) {
				t.Fatalf("update: %v, want interrupted while watching", err)
			}
			if rec, _ := newEngine(fsys, cfg, nil).journalAt(); rec == nil || rec.Phase != tc.phase {
				t.Fatalf("journal left in %v, want %s", rec, tc.phase)
			}

			e := newEngine(fsys, cfg, nil) // Unit= empty now
			res, err := e.Recover(context.Background())
			if err != nil || res == nil || res.Outcome != tc.wantOut {
				t.Fatalf("recover: %+v, %v; want %s", res, err, tc.wantOut)
			}
			equalTrees(t, tree(t, fsys, installDir), want(tc.tree, nil))
			noLeftovers(t, fsys)
			if _, err := e.Status(context.Background()); err != nil {
				t.Errorf("status after recovery: %v", err)
			}
		})
	}
}

// journalAt reads the journal as a command would find it.
func (e *Engine) journalAt() (*Record, error) {
	l, err := e.resolveLayout()
	if err != nil {
		return nil, err
	}
	return e.journal(l).load()
}

// A restore that fails after an interrupted apply used to say "rollback failed, operator needed:
// … the old version was restored; cannot restore snapshot …". A message states only what is true:
// "restored" only once the snapshot is back, and never beside a failed restore.
func TestFailedRestoreDoesNotSayRestored(t *testing.T) {
	s := newSite(t)
	fsys := afero.NewMemMapFs()
	cfg := testConfig(s)
	s.publish(t, "1.0.0", v1)
	if _, err := newEngine(fsys, cfg, nil).Update(context.Background(), UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	s.publish(t, "1.1.0", v2)
	ctx, stop := context.WithCancel(context.Background())
	e := newEngine(fsys, cfg, nil)
	e.HookApplied = func(rec *Record) {
		stop() // a signal while applying: the run undoes itself
		// ... and the snapshot it would restore is gone.
		if err := fsys.RemoveAll(filepath.Join(stateDir, "snapshots", rec.Snapshot)); err != nil {
			t.Fatal(err)
		}
	}
	_, err := e.Update(ctx, UpdateOptions{})
	if ExitCode(err) != CodeOperator {
		t.Fatalf("got %v (exit %d), want a failed rollback", err, ExitCode(err))
	}
	if msg := err.Error(); strings.Contains(msg, "restored;") || strings.Contains(msg, "was restored") || !strings.Contains(msg, "interrupted by a signal while applying") {
		t.Errorf("message says something untrue or hides the cause: %s", msg)
	}

	// The successful case says it, once the snapshot is back.
	fsys = afero.NewMemMapFs()
	s.publish(t, "1.0.0", v1)
	if _, err := newEngine(fsys, cfg, nil).Update(context.Background(), UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	s.publish(t, "1.1.0", v2)
	ctx, stop = context.WithCancel(context.Background())
	e = newEngine(fsys, cfg, nil)
	e.HookApplied = func(*Record) { stop() }
	_, err = e.Update(ctx, UpdateOptions{})
	if ExitCode(err) != CodeFailed || !strings.Contains(err.Error(), "interrupted by a signal while applying; the old version was restored") {
		t.Errorf("interrupted apply, restored: %v (exit %d)", err, ExitCode(err))
	}
	equalTrees(t, tree(t, fsys, installDir), want(v1, nil))
}
