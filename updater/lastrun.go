package updater

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/spf13/afero"

	"github.com/sdupdate/sdupdate/fsutil"
	"github.com/sdupdate/sdupdate/internal/human"
)

// Outcomes, as `status --json` reports them in last_run.result.
const (
	OutcomeUpdated        = "updated"
	OutcomeUpToDate       = "up-to-date"
	OutcomeFailed         = "failed"
	OutcomeRolledBack     = "rolled-back"
	OutcomeRollbackFailed = "rollback-failed"
)

// Outcomes of a Result that are never a last run's.
const (
	OutcomeDryRun      = "dry-run"     // update --dry-run: planned, nothing changed
	OutcomeInterrupted = "interrupted" // a signal stopped the watch of the restarted agent; recovery finishes it
)

// LastRun is the outcome of the last run that could change the install.
type LastRun struct {
	RunID    string    `json:"run_id"`
	Command  string    `json:"command"`
	Result   string    `json:"result"`
	From     string    `json:"from"`
	To       string    `json:"to"`
	Started  time.Time `json:"started"`
	Finished time.Time `json:"finished"`
	Reason   string    `json:"reason"`
	Snapshot string    `json:"snapshot,omitempty"`
	// RolledBack is true when the run restored a snapshot and left the old version in place:
	// a new version that did not come up (result rolled-back), an apply that failed (result
	// failed), or `sdupdate rollback`.
	RolledBack bool `json:"rolled_back"`
	// ModifiedLocally names the files a rollback left as they were because they were changed in
	// place since the snapshot (by an operator, say), not by an update.
	ModifiedLocally []string `json:"modified_locally"`
}

// summary says in a few words how the run ended, e.g. for STATUS=.
func (lr *LastRun) summary() string {
	switch {
	case lr.Result == OutcomeUpdated:
		return fmt.Sprintf("updated %s -> %s", human.Version(lr.From), human.Version(lr.To))
	case lr.Result == OutcomeUpToDate:
		return fmt.Sprintf("already up to date (%s)", human.Version(lr.From))
	case lr.Result == OutcomeFailed:
		return fmt.Sprintf("update to %s failed, install unchanged", human.Version(lr.To))
	case lr.Result == OutcomeRolledBack && lr.Command == KindRollback:
		return fmt.Sprintf("rolled back %s -> %s", human.Version(lr.From), human.Version(lr.To))
	case lr.Result == OutcomeRolledBack:
		return fmt.Sprintf("rolled back: %s failed to come up, %s is running", human.Version(lr.To), human.Version(lr.From))
	}
	return "rollback failed, operator needed (see sdupdate status)"
}

// lastRunFile is last-run.json: the last run, and the totals of every run recorded so far
// (for metrics), kept in the same file so that recording a run stays one atomic write.
type lastRunFile struct {
	LastRun
	Totals totals `json:"totals"`
}

// totals count recorded runs, for metrics.
type totals struct {
	Runs      map[string]uint64 `json:"runs"`      // by result
	Rollbacks uint64            `json:"rollbacks"` // runs with RolledBack
}

func loadLastRun(fsys afero.Fs, path string) (*LastRun, error) {
	f, err := loadLastRunFile(fsys, path)
	if f == nil {
		return nil, err
	}
	return &f.LastRun, nil
}

func loadLastRunFile(fsys afero.Fs, path string) (*lastRunFile, error) {
	data, err := fsutil.ReadRegularFile(fsys, path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("cannot read %s: %w", path, err)
	}
	var f lastRunFile
	if err := json.Unmarshal(data, &f); err != nil {
		return nil, fmt.Errorf("cannot parse %s: %w", path, err)
	}
	// Written before the field existed: the result tells.
	if f.Result == OutcomeRolledBack {
		f.RolledBack = true
	}
	if f.ModifiedLocally == nil {
		f.ModifiedLocally = []string{}
	}
	return &f, nil
}

// saveLastRun records lr and adds it to the totals of the file it replaces. A run recorded
// again (a failed rollback that recovery finishes later) is counted once, under its final result.
func saveLastRun(fsys afero.Fs, path string, lr *LastRun) error {
	f := &lastRunFile{LastRun: *lr}
	prev, err := loadLastRunFile(fsys, path)
	if err != nil {
		// The outcome matters more than the totals: record it, with them started again.
		err = fmt.Errorf("run totals start again from 0: %w", err)
	}
	if prev != nil {
		f.Totals = prev.Totals
		if prev.RunID == lr.RunID {
			f.Totals.add(&prev.LastRun, -1)
		}
	}
	f.Totals.add(lr, 1)
	data, merr := json.MarshalIndent(f, "", "  ")
	if merr != nil {
		return fmt.Errorf("cannot encode last run: %w", merr)
	}
	if werr := fsutil.WriteFileAtomic(fsys, path, data, 0o600); werr != nil {
		return werr
	}
	return err
}

// add counts lr once more (n = 1) or once less (n = -1).
func (t *totals) add(lr *LastRun, n int) {
	if t.Runs == nil {
		t.Runs = map[string]uint64{}
	}
	step := func(v *uint64) {
		if n > 0 || *v > 0 {
			*v = uint64(int64(*v) + int64(n))
		}
	}
	r := t.Runs[lr.Result]
	step(&r)
	t.Runs[lr.Result] = r
	if lr.RolledBack {
		step(&t.Rollbacks)
	}
}
