package updater

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/sirupsen/logrus"

	"github.com/sdupdate/sdupdate/fetch"
	"github.com/sdupdate/sdupdate/logging"
	"github.com/sdupdate/sdupdate/snapshot"
)

// UpdateOptions are the flags of `sdupdate update`.
type UpdateOptions struct {
	DryRun         bool
	AllowDowngrade bool
	Repair         bool
}

// Result is what a run did.
type Result struct {
	RunID    string
	Outcome  string
	From, To string
	Snapshot string
	Reason   string
	Plan     *Plan // set by update, also with DryRun
}

// spaceMargin is added to the bytes to download before comparing with the free space: directory
// entries, the journal and the snapshot's own metadata need room too.
const spaceMargin = 16 << 20

// Update runs one update: fetch and verify the manifest, plan, stage, snapshot, apply, restart
// and watch the agent, roll back if it does not come up. The caller holds the lock and has run
// Recover.
func (e *Engine) Update(ctx context.Context, opts UpdateOptions) (*Result, error) {
	l, err := e.resolveLayout()
	if err != nil {
		return nil, err
	}
	runID := e.runID()
	started := e.now()
	log := e.runLog(runID)
	installed, installedRaw, err := e.installedManifest(l)
	if err != nil {
		return nil, err
	}
	from := versionOf(installed)
	res := &Result{RunID: runID, From: from}
	fail := func(phase logging.Phase, err error) (*Result, error) {
		res.Outcome, res.Reason = OutcomeFailed, err.Error()
		log.WithFields(logrus.Fields{
			logging.FieldPhase: phase, logging.FieldMessageID: logging.MsgFailed,
			logging.FieldFrom: DisplayVersion(from), logging.FieldTo: res.To, logging.FieldReason: err.Error(),
		}).Errorf("update failed, install unchanged: %v", err)
		if !opts.DryRun {
			e.recordLastRun(l, &LastRun{RunID: runID, Command: KindUpdate, Result: OutcomeFailed, From: from, To: res.To, Started: started, Reason: err.Error()})
		}
		if ExitCode(err) == CodeOK {
			err = withCode(CodeFailed, err)
		}
		return res, err
	}

	log.WithFields(logrus.Fields{logging.FieldPhase: logging.PhaseCheck, logging.FieldFrom: DisplayVersion(from)}).
		Infof("installed version %s; checking %s", DisplayVersion(from), fetch.Redact(e.Config.ManifestURL))
	e.notify("fetching manifest")
	f, err := e.fetchManifest(ctx, log)
	if err != nil {
		return fail(logging.PhaseCheck, err)
	}
	res.To = f.m.Version
	cmp, err := compareVersions(from, f.m.Version)
	if err != nil {
		return fail(logging.PhaseCheck, err)
	}
	switch {
	case cmp == 0 && !opts.Repair:
		res.Outcome = OutcomeUpToDate
		log.WithFields(logrus.Fields{logging.FieldPhase: logging.PhaseCheck, logging.FieldMessageID: logging.MsgUpToDate, logging.FieldFrom: from, logging.FieldTo: f.m.Version}).
			Infof("already up to date (version %s)", from)
		if !opts.DryRun {
			e.recordLastRun(l, &LastRun{RunID: runID, Command: KindUpdate, Result: OutcomeUpToDate, From: from, To: from, Started: started})
		}
		return res, nil
	case cmp < 0 && !opts.AllowDowngrade:
		return fail(logging.PhaseCheck, fmt.Errorf("refusing to downgrade from %s to %s: the server offers an older version (a replayed manifest?); use --allow-downgrade if you mean it", from, f.m.Version))
	case cmp < 0:
		log.WithField(logging.FieldPhase, logging.PhaseCheck).Warnf("downgrading from %s to %s (--allow-downgrade)", from, f.m.Version)
	}
	p, err := e.plan(ctx, l, f.m, installed)
	if err != nil {
		return fail(logging.PhaseCheck, err)
	}
	res.Plan = p
	if opts.DryRun {
		PrintPlan(e.out(), p)
		res.Outcome = OutcomeDryRun
		return res, nil
	}
	bytes, files := p.DownloadBytes()
	log.WithFields(logrus.Fields{logging.FieldPhase: logging.PhaseDownload, logging.FieldMessageID: logging.MsgUpdateStarted, logging.FieldFrom: DisplayVersion(from), logging.FieldTo: p.To}).
		Infof("update started: %s -> %s, %d files to download (%s), %d to remove", DisplayVersion(from), p.To, files, HumanBytes(bytes), len(p.Removes))
	if err := e.checkSpace(l, bytes-e.preparePartials(l, p)); err != nil {
		return fail(logging.PhaseDownload, err)
	}

	rec := &Record{
		RunID: runID, Kind: KindUpdate, Phase: PhaseStaging, PID: os.Getpid(), Started: started,
		From: from, To: p.To, StagingDir: filepath.Join(l.staging, runID), OldManifest: installedRaw,
	}
	for i, c := range p.Changes {
		rec.Ops = append(rec.Ops, Op{Name: c.File.Name, Staged: filepath.Join(rec.StagingDir, fmt.Sprintf("%05d", i))})
	}
	for _, name := range p.Removes {
		rec.Ops = append(rec.Ops, Op{Name: name, Remove: true})
	}
	j := e.journal(l)
	if err := j.save(rec); err != nil {
		return fail(logging.PhaseDownload, err)
	}
	abort := func(phase logging.Phase, err error) (*Result, error) {
		if cerr := e.abortBeforeApply(l, rec); cerr != nil {
			log.WithError(cerr).Warn("cleanup after failure incomplete; the next command finishes it")
		}
		if errors.Is(err, context.Canceled) {
			err = fmt.Errorf("%w; nothing was changed", ErrInterrupted)
		}
		return fail(phase, err)
	}
	got, err := e.stageAll(ctx, log, l, rec, f, p)
	if err != nil {
		return abort(logging.PhaseDownload, err)
	}
	resolveVerified(p, got)
	newRaw, err := p.Resolved.Marshal()
	if err != nil {
		return abort(logging.PhaseDownload, fmt.Errorf("cannot encode the new manifest: %w", err))
	}
	rec.NewManifest = newRaw
	if err := j.setPhase(rec, PhaseStaged); err != nil {
		return abort(logging.PhaseDownload, err)
	}
	if ctx.Err() != nil {
		return abort(logging.PhaseDownload, ctx.Err())
	}

	if e.Agent != nil {
		active, err := e.Agent.Active(ctx)
		if err != nil {
			return abort(logging.PhaseRestart, fmt.Errorf("cannot tell whether the agent unit %s is running (set Unit= empty to restart it yourself): %w", e.Config.Unit, err))
		}
		rec.UnitWasActive = active
	}

	rec.Snapshot = snapshot.NewID(e.now(), from)
	if err := j.setPhase(rec, PhaseSnapshotting); err != nil {
		return abort(logging.PhaseSnapshot, err)
	}
	e.notify("taking snapshot")
	store := e.storeAt(l, l.snapshots)
	if _, err := store.Create(ctx, rec.Snapshot, from, installedRaw, runID, managedNames(installed, f.m)); err != nil {
		return abort(logging.PhaseSnapshot, fmt.Errorf("cannot snapshot the install before changing it: %w", err))
	}
	log.WithFields(logrus.Fields{logging.FieldPhase: logging.PhaseSnapshot, logging.FieldSnapshot: rec.Snapshot}).Infof("snapshot %s taken", rec.Snapshot)
	if err := j.setPhase(rec, PhaseSnapshotted); err != nil {
		return abort(logging.PhaseSnapshot, err)
	}
	if ctx.Err() != nil {
		return abort(logging.PhaseSnapshot, ctx.Err())
	}

	// Point of no return: from the journal write below on, installed files change, and a
	// failure or crash is undone by restoring the snapshot.
	if err := j.setPhase(rec, PhaseApplying); err != nil {
		return abort(logging.PhaseApply, err)
	}
	e.notify("applying")
	rec.Restarted = false
	if err := e.apply(l, rec); err != nil {
		rec.Reason = fmt.Sprintf("apply failed: %v", err)
		log.WithFields(logrus.Fields{logging.FieldPhase: logging.PhaseApply, logging.FieldReason: rec.Reason}).Error("apply failed; restoring the snapshot")
		return e.run(ctx, log, l, rec, PhaseRollingBack)
	}
	if err := e.setInstalled(l, newRaw); err != nil {
		rec.Reason = fmt.Sprintf("apply failed: %v", err)
		return e.run(ctx, log, l, rec, PhaseRollingBack)
	}
	if err := j.setPhase(rec, PhaseApplied); err != nil {
		rec.Reason = fmt.Sprintf("apply failed: %v", err)
		return e.run(ctx, log, l, rec, PhaseRollingBack)
	}
	log.WithFields(logrus.Fields{logging.FieldPhase: logging.PhaseApply, logging.FieldFrom: DisplayVersion(from), logging.FieldTo: p.To}).
		Infof("version %s in place (%d files written, %d removed)", p.To, len(p.Changes), len(p.Removes))
	if e.HookApplied != nil {
		e.HookApplied(rec)
	}
	if ctx.Err() != nil {
		// A signal arrived while applying: the tree is consistent now, and the agent has not been
		// restarted, so undoing is the least surprising answer to "stop".
		rec.Reason = "interrupted by a signal while applying; the old version was restored"
		return e.run(ctx, log, l, rec, PhaseRollingBack)
	}
	return e.run(ctx, log, l, rec, PhaseApplied)
}

// resolveVerified records in the new manifest what was verified (got, in the order of
// p.Changes): legacy (md5) entries get the sha256 and size of the bytes staged, so the installed
// manifest is always in the sha256 form and `verify` later uses sha256.
func resolveVerified(p *Plan, got []verified) {
	index := make(map[string]int, len(p.Resolved.Files))
	for i, f := range p.Resolved.Files {
		index[f.Name] = i
	}
	for k, c := range p.Changes {
		if i, ok := index[c.File.Name]; ok && p.Resolved.Files[i].SHA256 == "" {
			p.Resolved.Files[i].SHA256, p.Resolved.Files[i].Size = got[k].sha256, got[k].size
		}
	}
	p.Resolved.Legacy = false
}

func (e *Engine) checkSpace(l *layout, need int64) error {
	if e.FreeSpace == nil {
		return nil
	}
	free, err := e.FreeSpace(l.work)
	if err != nil {
		return fmt.Errorf("cannot read free space of %s: %w", l.work, err)
	}
	want := uint64(need) + spaceMargin
	if free < want {
		return fmt.Errorf("not enough free space on the filesystem of %s: the update needs %s (%s to download + %s margin), %s is free; free some space and run it again",
			l.work, HumanBytes(int64(want)), HumanBytes(need), HumanBytes(spaceMargin), HumanBytes(int64(free)))
	}
	return nil
}

// abortBeforeApply undoes a run that never touched the install: staging and any snapshot of this
// run go, and so does the journal.
func (e *Engine) abortBeforeApply(l *layout, rec *Record) error {
	var errs []error
	if rec.StagingDir != "" {
		if err := e.Fs.RemoveAll(rec.StagingDir); err != nil {
			errs = append(errs, fmt.Errorf("cannot remove staging directory %s: %w", rec.StagingDir, err))
		}
	}
	if rec.Snapshot != "" {
		if err := e.deleteSnapshot(l, rec.Snapshot); err != nil {
			errs = append(errs, err)
		}
	}
	if len(errs) == 0 {
		if err := e.journal(l).clear(); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func (e *Engine) recordLastRun(l *layout, lr *LastRun) {
	if lr.Finished.IsZero() {
		lr.Finished = e.now()
	}
	// The last STATUS= stays on a unit that failed: `systemctl status` must show how the run
	// ended, not the step it was at.
	e.notify(lr.summary())
	if err := saveLastRun(e.Fs, l.lastRun, lr); err != nil {
		e.Log.WithError(err).Warn("cannot record the outcome for `sdupdate status`")
	}
	e.writeMetrics(l)
}
