package updater

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/spf13/afero"

	"github.com/sdupdate/sdupdate/fsutil"
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
}

// summary says in a few words how the run ended, e.g. for STATUS=.
func (lr *LastRun) summary() string {
	switch {
	case lr.Result == OutcomeUpdated:
		return fmt.Sprintf("updated %s -> %s", DisplayVersion(lr.From), DisplayVersion(lr.To))
	case lr.Result == OutcomeUpToDate:
		return fmt.Sprintf("already up to date (%s)", DisplayVersion(lr.From))
	case lr.Result == OutcomeFailed:
		return fmt.Sprintf("update to %s failed, install unchanged", DisplayVersion(lr.To))
	case lr.Result == OutcomeRolledBack && lr.Command == KindRollback:
		return fmt.Sprintf("rolled back %s -> %s", DisplayVersion(lr.From), DisplayVersion(lr.To))
	case lr.Result == OutcomeRolledBack:
		return fmt.Sprintf("rolled back: %s failed to come up, %s is running", DisplayVersion(lr.To), DisplayVersion(lr.From))
	}
	return "rollback failed, operator needed (see sdupdate status)"
}

func loadLastRun(fsys afero.Fs, path string) (*LastRun, error) {
	data, err := afero.ReadFile(fsys, path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("cannot read %s: %w", path, err)
	}
	var lr LastRun
	if err := json.Unmarshal(data, &lr); err != nil {
		return nil, fmt.Errorf("cannot parse %s: %w", path, err)
	}
	// Written before the field existed: the result tells.
	if lr.Result == OutcomeRolledBack {
		lr.RolledBack = true
	}
	return &lr, nil
}

func saveLastRun(fsys afero.Fs, path string, lr *LastRun) error {
	data, err := json.MarshalIndent(lr, "", "  ")
	if err != nil {
		return fmt.Errorf("cannot encode last run: %w", err)
	}
	return fsutil.WriteFileAtomic(fsys, path, data, 0o600)
}
