package updater

import (
	"context"
	"fmt"
	"strings"
	"sync"

	"github.com/sirupsen/logrus"

	"github.com/sdupdate/sdupdate/internal/human"
	"github.com/sdupdate/sdupdate/logging"
	"github.com/sdupdate/sdupdate/manifest"
	"github.com/sdupdate/sdupdate/snapshot"
)

// run drives a transaction from phase to its end. Update, Rollback and Recover all finish here,
// so a run resumed after a crash takes exactly the path an uninterrupted one would. Each phase
// is one method that acts and names the next phase; run records it in the journal before the
// next acts.
func (e *Engine) run(ctx context.Context, log *logrus.Entry, l *layout, rec *Record, phase Phase) (*Result, error) {
	j := e.journal(l)
	if rec.Phase != phase {
		if err := j.setPhase(rec, phase); err != nil {
			if rec.Phase != PhaseApplying || phase != PhaseRollingBack {
				return e.stuck(log, l, rec, err)
			}
			// Recovery from applying restores the snapshot, exactly what rolling back does, so
			// the journal on disk already asks for it. A journal that cannot be written (a full
			// disk that also failed the apply) is then no reason to leave a half-new tree.
			log.WithError(err).Warn("cannot record the rollback in the transaction journal; restoring the snapshot anyway")
			rec.Phase = phase
		}
	}
	for {
		var next Phase
		switch rec.Phase {
		case PhaseApplied:
			if next = e.afterApply(log, rec); next == PhaseDone {
				// Recovery from applied takes this decision again from the same record (the
				// unit was not watched, so no outcome was learnt that the record lacks): done
				// needs no record of its own, and finish ends the run.
				rec.Phase = next
				continue
			}
		case PhaseRestarting, PhaseRollbackRestarting:
			var interrupted bool
			if next, interrupted = e.watchRestart(ctx, log, rec); interrupted {
				return e.interrupted(log, rec)
			}
		case PhaseRollingBack:
			var err error
			if next, err = e.rollBack(ctx, log, l, rec); err != nil {
				// The journal stays in rolling-back: restoring again is the right next step,
				// and `sdupdate recover` retries it (a bounded number of times).
				_ = j.save(rec)
				return e.finish(log, l, rec, false)
			}
		case PhaseDone:
			return e.finish(log, l, rec, true)
		default:
			return e.stuck(log, l, rec, fmt.Errorf("unexpected phase %q", rec.Phase))
		}
		if err := j.setPhase(rec, next); err != nil {
			return e.stuck(log, l, rec, err)
		}
	}
}

// afterApply decides whether the new tree needs the agent restarted and watched; when it does
// not, the update is done.
func (e *Engine) afterApply(log *logrus.Entry, rec *Record) Phase {
	log = log.WithField(logging.FieldPhase, logging.PhaseRestart)
	switch {
	case e.Agent == nil:
		log.Infof("version %s is installed; Unit= is empty, so restart the agent yourself", rec.To)
	case len(rec.Ops) == 0:
		log.Infof("no file changed, so %s was not restarted", e.Config.Unit)
	case !rec.UnitWasActive:
		log.Infof("agent unit %s was not active before the update, so it was left stopped; start it when you are ready", e.Config.Unit)
	default:
		rec.Restarted = true
		return PhaseRestarting
	}
	rec.Outcome = OutcomeUpdated
	return PhaseDone
}

// watchRestart restarts the agent and watches it come up: the new version (a failure rolls
// back) or, in rollback-restarting, the restored one (a failure needs an operator). It reports a
// signal during the watch as interrupted, with the journal left for recovery.
func (e *Engine) watchRestart(ctx context.Context, log *logrus.Entry, rec *Record) (next Phase, interrupted bool) {
	rollingBack := rec.Phase == PhaseRollbackRestarting
	if e.Agent == nil {
		endUnwatched(log, rec, rollingBack)
		return PhaseDone, false
	}
	e.notify(fmt.Sprintf("waiting for %s to come up", e.Config.Unit))
	log.WithField(logging.FieldPhase, logging.PhaseRestart).Debugf("handing %s to the restart gate", e.Config.Unit)
	err := e.Agent.RestartAndWait(ctx, log)
	if ctx.Err() != nil {
		return rec.Phase, true
	}
	switch {
	case err == nil && rollingBack:
		rec.Outcome = OutcomeRolledBack
	case err == nil:
		rec.Outcome = OutcomeUpdated
	case rollingBack:
		rec.Reason = joinReason(rec.Reason, "the restored version did not come up either: "+err.Error())
		rec.Outcome = OutcomeRollbackFailed
	default:
		rec.Reason = joinReason(rec.Reason, err.Error())
		log.WithFields(logrus.Fields{logging.FieldPhase: logging.PhaseHealth, logging.FieldReason: err.Error()}).
			Errorf("version %s did not come up: %v; rolling back to %s", rec.To, err, human.Version(rec.From))
		return PhaseRollingBack, false
	}
	return PhaseDone, false
}

// rollBack restores the run's snapshot and decides what follows: restarting the restored agent
// if the new one may have run, else the end. An error means the restore failed twice; the
// outcome is then rollback-failed.
func (e *Engine) rollBack(ctx context.Context, log *logrus.Entry, l *layout, rec *Record) (Phase, error) {
	e.notify("rolling back")
	err := e.restore(ctx, log, l, rec)
	if err != nil {
		// Restore is idempotent: a passing fault (one failed write) should not leave a mixed
		// tree for an operator when a second try can finish it now.
		log.WithError(err).Warn("restoring the snapshot failed; trying once more")
		err = e.restore(ctx, log, l, rec)
	}
	if err != nil {
		rec.Reason = joinReason(rec.Reason, err.Error())
		rec.Outcome = OutcomeRollbackFailed
		return rec.Phase, err
	}
	switch {
	case rec.Restarted && e.Agent != nil:
		return PhaseRollbackRestarting, nil
	case rec.Kind == KindRollback:
		rec.Outcome = OutcomeRolledBack
		if e.Agent != nil {
			log.WithField(logging.FieldPhase, logging.PhaseRollback).Infof("agent unit %s was not active, so it was left stopped", e.Config.Unit)
		} else {
			log.WithField(logging.FieldPhase, logging.PhaseRollback).Info("Unit= is empty, so restart the agent yourself")
		}
	default:
		// The agent was never restarted into the new files, so it still runs the old version:
		// the install is back to exactly what it was. Only now is that true.
		rec.Outcome = OutcomeFailed
		rec.Reason = joinReason(rec.Reason, "the old version was restored")
	}
	return PhaseDone, nil
}

// endUnwatched ends a run that was stopped while it watched the agent, found again after Unit= was
// emptied: there is no unit to watch any more and the tree is consistent, so the run ends as it
// would have with Unit= empty from the start.
func endUnwatched(log *logrus.Entry, rec *Record, rollingBack bool) {
	rec.Outcome, rec.Restarted = OutcomeUpdated, false
	installed := rec.To
	if rollingBack {
		rec.Outcome, installed = OutcomeRolledBack, human.Version(rec.From)
	}
	log.WithField(logging.FieldPhase, logging.PhaseRestart).Warnf("version %s is installed; the interrupted run was watching the agent, but Unit= is now empty, so its health was not checked: restart the agent yourself", installed)
}

// restore puts the run's snapshot back and records its manifest as installed. It ignores
// cancellation: stopping halfway would leave a mixed tree.
func (e *Engine) restore(ctx context.Context, log *logrus.Entry, l *layout, rec *Record) error {
	ctx = context.WithoutCancel(ctx)
	store, meta, err := e.findSnapshot(l, rec.Snapshot)
	if err != nil {
		return fmt.Errorf("cannot restore snapshot %s: %w", rec.Snapshot, err)
	}
	current, err := restoreNames(rec, meta)
	if err != nil {
		return err
	}
	done, err := store.Restore(ctx, rec.Snapshot, current)
	if err != nil {
		return fmt.Errorf("cannot restore snapshot %s: %w", rec.Snapshot, err)
	}
	var raw []byte
	if len(meta.Manifest) > 0 && string(meta.Manifest) != "null" {
		raw = meta.Manifest
	}
	if err := e.setInstalled(l, raw); err != nil {
		return err
	}
	rlog := log.WithFields(logrus.Fields{logging.FieldPhase: logging.PhaseRollback, logging.FieldSnapshot: rec.Snapshot})
	rlog.Infof("restored snapshot %s (version %s, %d files: %d put back from the store, %d already in place)",
		rec.Snapshot, human.Version(meta.Version), len(meta.Files), done.Put, done.Kept)
	rec.ModifiedLocally = done.ModifiedLocally
	if len(done.ModifiedLocally) > 0 {
		rlog.Warnf("left as modified locally (changed in place since the snapshot, not by an update; its recorded content is nowhere): %s",
			strings.Join(done.ModifiedLocally, ", "))
	}
	return nil
}

// restoreNames is what a restore of rec's snapshot must put back or remove: every name the
// journal's manifests and the snapshot's own list.
func restoreNames(rec *Record, meta *snapshot.Meta) ([]string, error) {
	var current []*manifest.Manifest
	for _, raw := range [][]byte{rec.OldManifest, rec.NewManifest, meta.Manifest} {
		if len(raw) == 0 || string(raw) == "null" {
			continue
		}
		m, err := manifest.ParseRecorded(raw)
		if err != nil {
			return nil, fmt.Errorf("cannot read a manifest recorded in the journal: %w", err)
		}
		current = append(current, m)
	}
	return managedNames(current...), nil
}

// finish logs the outcome as one journal event, records it for `status`, prunes snapshots and
// removes what the run left behind. clear is false when the journal must stay for a retry.
func (e *Engine) finish(log *logrus.Entry, l *layout, rec *Record, clear bool) (*Result, error) {
	res := &Result{RunID: rec.RunID, Outcome: rec.Outcome, From: rec.From, To: rec.To, Snapshot: rec.Snapshot, Reason: rec.Reason,
		ModifiedLocally: rec.ModifiedLocally}
	fields := logrus.Fields{logging.FieldFrom: human.Version(rec.From), logging.FieldTo: human.Version(rec.To), logging.FieldSnapshot: rec.Snapshot}
	if rec.Reason != "" {
		fields[logging.FieldReason] = rec.Reason
	}
	var err error
	switch rec.Outcome {
	case OutcomeUpdated:
		fields[logging.FieldPhase], fields[logging.FieldMessageID] = logging.PhaseHealth, logging.MsgUpdated
		msg := fmt.Sprintf("updated %s -> %s", human.Version(rec.From), rec.To)
		if rec.Restarted {
			msg += fmt.Sprintf("; %s restarted and healthy", e.Config.Unit)
		}
		log.WithFields(fields).Info(msg)
	case OutcomeRolledBack:
		fields[logging.FieldPhase], fields[logging.FieldMessageID] = logging.PhaseRollback, logging.MsgRolledBack
		if rec.Kind == KindRollback {
			log.WithFields(fields).Infof("rolled back from %s to %s (snapshot %s)", human.Version(rec.From), human.Version(rec.To), rec.Snapshot)
		} else {
			log.WithFields(fields).Errorf("rolled back: version %s failed to come up, %s restored and running (%s)", rec.To, human.Version(rec.From), rec.Reason)
			err = withCode(CodeRolledBack, fmt.Errorf("version %s failed to come up and was rolled back; %s is running: %s", rec.To, human.Version(rec.From), rec.Reason))
		}
	case OutcomeFailed:
		fields[logging.FieldPhase], fields[logging.FieldMessageID] = logging.PhaseRollback, logging.MsgFailed
		log.WithFields(fields).Errorf("update failed, install unchanged: %s", rec.Reason)
		err = withCode(CodeFailed, fmt.Errorf("update to %s failed, install unchanged: %s", rec.To, rec.Reason))
	default:
		rec.Outcome, res.Outcome = OutcomeRollbackFailed, OutcomeRollbackFailed
		fields[logging.FieldPhase], fields[logging.FieldMessageID] = logging.PhaseRollback, logging.MsgRollbackFailed
		log.WithFields(fields).Errorf("rollback failed, operator needed: %s", rec.Reason)
		err = withCode(CodeOperator, fmt.Errorf("rollback failed, operator needed: %s (see `sdupdate status` and `journalctl SDUPDATE_RUN_ID=%s`)", rec.Reason, rec.RunID))
	}
	// A run ends failed here only after its snapshot was restored (see PhaseRollingBack).
	restored := rec.Outcome == OutcomeRolledBack || rec.Outcome == OutcomeFailed
	lr := &LastRun{RunID: rec.RunID, Command: rec.Kind, Result: rec.Outcome, From: rec.From, To: rec.To, ModifiedLocally: rec.ModifiedLocally,
		Started: rec.Started, Reason: rec.Reason, Snapshot: rec.Snapshot, RolledBack: restored}
	if !clear {
		e.recordLastRun(l, lr)
		return res, err
	}
	// The outcome is recorded while old snapshots are pruned (neither reads what the other
	// writes), so the waits of their fsyncs overlap; both are done before the journal goes.
	var wg sync.WaitGroup
	wg.Go(func() { e.recordLastRun(l, lr) })
	if rec.Outcome == OutcomeUpdated {
		e.pruneAfterUpdate(log, l, rec.Snapshot)
	}
	wg.Wait()
	if rec.StagingDir != "" {
		if rerr := e.Fs.RemoveAll(rec.StagingDir); rerr != nil {
			log.WithError(rerr).Warn("cannot remove staging directory; the next run removes it")
		}
	}
	if cerr := e.journal(l).clear(); cerr != nil {
		log.WithError(cerr).Warn("cannot clear the transaction journal")
	}
	return res, err
}

// stuck reports a run that could not even record its progress (the state directory failing):
// the journal on disk still says where it was, and recovery resumes from there.
func (e *Engine) stuck(log *logrus.Entry, l *layout, rec *Record, err error) (*Result, error) {
	log.WithFields(logrus.Fields{logging.FieldReason: err.Error(), logging.FieldMessageID: logging.MsgRollbackFailed}).
		Errorf("run %s stopped in phase %s: %v; `sdupdate recover` resumes it", rec.RunID, rec.Phase, err)
	return &Result{RunID: rec.RunID, Outcome: OutcomeRollbackFailed, From: rec.From, To: rec.To, Snapshot: rec.Snapshot, Reason: err.Error()},
		withCode(CodeOperator, fmt.Errorf("run stopped in phase %s and could not record its progress (%w); run `sdupdate recover`", rec.Phase, err))
}

// interrupted leaves a run whose agent is being watched for recovery: under systemd the unit's
// ExecStopPost= runs `sdupdate recover` at once, which finishes the watch or restores the old
// version.
func (e *Engine) interrupted(log *logrus.Entry, rec *Record) (*Result, error) {
	log.WithField(logging.FieldPhase, logging.PhaseRestart).Warnf("interrupted while %s was being watched; `sdupdate recover` finishes the check or restores %s", e.Config.Unit, human.Version(rec.From))
	return &Result{RunID: rec.RunID, Outcome: OutcomeInterrupted, From: rec.From, To: rec.To, Snapshot: rec.Snapshot},
		withCode(CodeFailed, fmt.Errorf("%w while %s was being watched; run `sdupdate recover` to finish", ErrInterrupted, e.Config.Unit))
}

func joinReason(a, b string) string {
	if a == "" {
		return b
	}
	return a + "; " + b
}
