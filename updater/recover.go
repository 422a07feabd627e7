package updater

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/sirupsen/logrus"

	"github.com/sdupdate/sdupdate/fsutil"
	"github.com/sdupdate/sdupdate/internal/human"
	"github.com/sdupdate/sdupdate/logging"
)

// maxRecoverAttempts bounds how often one interrupted run is retried, so a recovery that
// itself keeps failing (or crashing) asks for an operator instead of looping.
const maxRecoverAttempts = 3

// Recover finishes or undoes a run found in the journal. Which, per phase, and why:
//
//   - staging … snapshotted: the install was never touched. Undo: remove staging and this run's
//     snapshot; the old tree stays. Nothing verified would be lost that a new run cannot fetch.
//   - applying: some files may be new and some old. Undo: restore the snapshot (complete and
//     fsynced before applying began). Rolling forward would install a version nobody saw come
//     up; the agent was not restarted yet, so it still runs the old code, which now matches.
//   - applied, restarting: the tree is exactly new, but the agent was not proven healthy.
//     Finish: restart and watch it again; if it does not come up, roll back as a run would.
//   - rolling-back, rollback-restarting: finish the rollback (restore is idempotent).
//   - done: only cleanup remains.
//
// Recovery is itself journaled through the same phases, so a kill during recovery is recovered
// by the next command. It returns (nil, nil) when there was nothing to do.
func (e *Engine) Recover(ctx context.Context) (*Result, error) {
	l, err := e.resolveLayout()
	if err != nil {
		return nil, err
	}
	j := e.journal(l)
	rec, err := j.load()
	if err != nil {
		return nil, withCode(CodeOperator, err)
	}
	if rec == nil {
		e.cleanupStale(l, nil)
		return nil, nil
	}
	if err := l.checkRecord(rec); err != nil {
		return nil, withCode(CodeOperator, err)
	}
	log := e.runLog(rec.RunID)
	rlog := log.WithFields(logrus.Fields{logging.FieldPhase: logging.PhaseRecover, logging.FieldFrom: human.Version(rec.From), logging.FieldTo: human.Version(rec.To)})
	rec.RecoverAttempts++
	if rec.RecoverAttempts > maxRecoverAttempts {
		err := fmt.Errorf("run %s (%s %s -> %s) is stuck in phase %s after %d recovery attempts; operator needed: inspect %s, `sdupdate status` and `journalctl SDUPDATE_RUN_ID=%s`",
			rec.RunID, rec.Kind, human.Version(rec.From), human.Version(rec.To), rec.Phase, maxRecoverAttempts, l.txn, rec.RunID)
		rlog.WithFields(logrus.Fields{logging.FieldMessageID: logging.MsgRollbackFailed, logging.FieldReason: err.Error()}).Error(err.Error())
		return &Result{RunID: rec.RunID, Outcome: OutcomeRollbackFailed, From: rec.From, To: rec.To, Reason: err.Error()}, withCode(CodeOperator, err)
	}
	if err := j.save(rec); err != nil {
		return nil, withCode(CodeOperator, err)
	}
	rlog.Warnf("recovering run %s (%s %s -> %s) interrupted in phase %s", rec.RunID, rec.Kind, human.Version(rec.From), human.Version(rec.To), rec.Phase)
	var res *Result
	switch rec.Phase {
	case PhaseStaging, PhaseStaged, PhaseSnapshotting, PhaseSnapshotted:
		if err := e.abortBeforeApply(l, rec); err != nil {
			return nil, withCode(CodeOperator, fmt.Errorf("cannot clean up interrupted run %s: %w", rec.RunID, err))
		}
		reason := fmt.Sprintf("interrupted in phase %s, before any installed file changed", rec.Phase)
		rlog.WithFields(logrus.Fields{logging.FieldMessageID: logging.MsgFailed, logging.FieldReason: reason}).
			Warnf("update failed, install unchanged: %s", reason)
		e.recordLastRun(l, &LastRun{RunID: rec.RunID, Command: rec.Kind, Result: OutcomeFailed, From: rec.From, To: rec.To, Started: rec.Started, Reason: reason})
		res, err = &Result{RunID: rec.RunID, Outcome: OutcomeFailed, From: rec.From, To: rec.To, Reason: reason}, nil
	case PhaseApplying:
		rec.Reason = joinReason(rec.Reason, "interrupted while applying")
		res, err = e.run(ctx, log, l, rec, PhaseRollingBack)
	default:
		res, err = e.run(ctx, log, l, rec, rec.Phase)
	}
	e.cleanupStale(l, nil)
	// An operator is needed, or a signal stopped the recovery itself: that is this command's
	// outcome, not the interrupted run's.
	interrupted := ExitCode(err) == CodeFailed && res != nil && res.Outcome == OutcomeInterrupted
	if ExitCode(err) == CodeOperator || interrupted {
		return res, err
	}
	if res != nil {
		rlog.Infof("recovered run %s: %s", rec.RunID, res.Outcome)
	}
	// The interrupted run's outcome (rolled back, failed) is its own; recovering it succeeded.
	return res, nil
}

// cleanupStale removes garbage of crashed runs that no journal refers to: staging directories,
// incomplete snapshots and rename probes.
func (e *Engine) cleanupStale(l *layout, keep *Record) {
	// Probes first: the probe file in StateDirectory is what tells a stale probe link in the
	// install from a file of the same name that is not ours.
	e.removeStaleProbes(l)
	// Temp files of an atomic write (journal, installed.json, last-run.json) that a crash cut
	// short: StateDirectory holds nothing else of that name, and the lock is held. Parts of a
	// journal go only when no journal is left to name them.
	_, jerr := fsutil.Lstat(e.Fs, l.txn)
	noJournal := errors.Is(jerr, os.ErrNotExist)
	if names, err := readDirNames(e, l.state); err == nil {
		for _, n := range names {
			if fsutil.IsTempName(n) || (noJournal && isPartName(n)) {
				if err := e.Fs.Remove(filepath.Join(l.state, n)); err != nil {
					e.Log.WithError(err).Warnf("cannot remove stale temp file %s", filepath.Join(l.state, n))
				}
			}
		}
	}
	for _, staging := range e.stagingDirs(l) {
		entries, err := readDirNames(e, staging)
		if err != nil {
			continue
		}
		for _, name := range entries {
			dir := filepath.Join(staging, name)
			if keep != nil && keep.StagingDir == dir {
				continue
			}
			if err := e.Fs.RemoveAll(dir); err != nil {
				e.Log.WithError(err).Warnf("cannot remove stale staging directory %s", dir)
			}
		}
	}
	e.upgradeSnapshots(l)
	for _, dir := range e.snapshotDirs(l) {
		if removed, err := e.storeAt(l, dir).Cleanup(); err != nil {
			e.Log.WithError(err).Warn("cannot remove incomplete snapshots")
		} else if len(removed) > 0 {
			e.Log.Debugf("removed incomplete snapshots %v", removed)
		}
	}
}
