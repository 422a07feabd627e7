package updater

import (
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/sdupdate/sdupdate/fetch"
	"github.com/sdupdate/sdupdate/internal/human"
	"github.com/sdupdate/sdupdate/logging"
	"github.com/sdupdate/sdupdate/manifest"
	"github.com/sdupdate/sdupdate/snapshot"
	"github.com/sdupdate/sdupdate/statindex"
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
	// ModifiedLocally names the files a restore left as they were: changed in place since the
	// snapshot, by someone other than sdupdate (see LastRun).
	ModifiedLocally []string
}

// spaceMargin is added to the bytes to download before comparing with the free space: directory
// entries, the journal and the snapshot's own metadata need room too.
const spaceMargin = 16 << 20

// Update runs one update: fetch and verify the manifest, plan, stage, snapshot, apply, restart
// and watch the agent, roll back if it does not come up. The caller holds the lock and has run
// Recover.
//
// Each phase is one function. Up to the point of no return (applyUpdate) a phase fails in one
// way: it returns an error naming its SDUPDATE_PHASE (failIn), and endUpdate undoes what the run
// made, logs and records the failure; the install is unchanged. From there on, a failure is
// undone by restoring the snapshot, in run (machine.go), like a crash is by Recover.
func (e *Engine) Update(ctx context.Context, opts UpdateOptions) (*Result, error) {
	u, err := e.startUpdate(opts)
	if err != nil {
		return nil, err
	}
	finished, err := e.checkUpdate(ctx, u)
	if err != nil || finished {
		return e.endUpdate(u, err)
	}
	for _, phase := range []func(context.Context, *updateRun) error{e.stageUpdate, e.snapshotUpdate} {
		if err := phase(ctx, u); err != nil {
			return e.endUpdate(u, err)
		}
	}
	return e.applyUpdate(ctx, u)
}

// updateRun is one update in progress: what its phases share.
type updateRun struct {
	opts         UpdateOptions
	l            *layout
	log          *logrus.Entry
	started      time.Time
	installed    *manifest.Manifest // nil before the first update
	installedRaw []byte
	offered      string // the version record's sha256 of manifest bytes already parsed whole
	res          *Result
	f            *fetched // the verified manifest, once checkUpdate fetched it
	rec          *Record  // the journal, once stageUpdate wrote it
}

func (u *updateRun) from() string { return u.res.From }

// phaseError is a failure before the point of no return, in one SDUPDATE_PHASE.
type phaseError struct {
	phase logging.Phase
	err   error
}

func (e *phaseError) Error() string { return e.err.Error() }
func (e *phaseError) Unwrap() error { return e.err }

// failIn marks err (if any) as a failure in phase.
func failIn(phase logging.Phase, err error) error {
	if err == nil {
		return nil
	}
	return &phaseError{phase: phase, err: err}
}

func (e *Engine) startUpdate(opts UpdateOptions) (*updateRun, error) {
	l, err := e.writableLayout()
	if err != nil {
		return nil, err
	}
	runID := e.runID()
	e.index = nil
	u := &updateRun{opts: opts, l: l, log: e.runLog(runID), started: e.now()}
	var from string
	if opts.Repair {
		// A repair checks every file against the manifest: installed.json is read whole.
		u.installed, u.installedRaw, err = e.installedManifest(l)
		if errors.Is(err, errInstalledDamaged) {
			// What was installed is unknown, as before the first update: every file is checked
			// against the new manifest by its hash, and installed.json is written anew.
			e.Log.WithError(err).Warn("rebuilding the installed manifest (--repair): the installed version counts as unknown")
			u.installed, u.installedRaw, err = nil, nil, nil
		}
		from = versionOf(u.installed)
	} else {
		// Its version is enough until the run goes past "already up to date".
		from, err = e.readInstalled(u)
	}
	if err != nil {
		return nil, err
	}
	u.res = &Result{RunID: runID, From: from}
	return u, nil
}

// checkUpdate fetches and verifies the manifest, compares versions and plans. It reports the run
// finished when the install is up to date, or when planning was all a dry run asked for.
func (e *Engine) checkUpdate(ctx context.Context, u *updateRun) (finished bool, err error) {
	from := u.from()
	log := u.log.WithField(logging.FieldPhase, logging.PhaseCheck)
	log.WithField(logging.FieldFrom, human.Version(from)).
		Infof("installed version %s; checking %s", human.Version(from), fetch.Redact(e.Config.ManifestURL))
	e.notify("fetching manifest")
	if u.f, err = e.fetchManifest(ctx, u.log, u.offered); err != nil {
		return false, failIn(logging.PhaseCheck, err)
	}
	to := u.f.m.Version
	u.res.To = to
	cmp, err := compareVersions(from, to)
	if err != nil {
		return false, failIn(logging.PhaseCheck, err)
	}
	if u.f.head && (cmp != 0 || u.opts.Repair) {
		// Only a forged version record gets here: the run needs the files after all.
		if u.f.m, err = manifest.Parse(u.f.raw); err != nil {
			return false, failIn(logging.PhaseCheck, fmt.Errorf("refusing manifest %s: %w", fetch.Redact(e.Config.ManifestURL), err))
		}
		u.f.head = false
	}
	switch {
	case cmp == 0 && !u.opts.Repair:
		u.res.Outcome = OutcomeUpToDate
		log.WithFields(logrus.Fields{logging.FieldMessageID: logging.MsgUpToDate, logging.FieldFrom: from, logging.FieldTo: to}).
			Infof("already up to date (version %s)", from)
		// The next run skips the parses this one had to do. A dry run may run beside an update
		// that holds the lock: it leaves the record alone.
		if !u.opts.DryRun && (u.installed != nil || u.f.offered() != u.offered) {
			e.recordVersion(u.l, from, u.f.offered(), u.installedRaw)
		}
		if !u.opts.DryRun {
			e.recordLastRun(u.l, &LastRun{RunID: u.res.RunID, Command: KindUpdate, Result: OutcomeUpToDate, From: from, To: from, Started: u.started})
		}
		return true, nil
	case cmp < 0 && !u.opts.AllowDowngrade:
		return false, failIn(logging.PhaseCheck, fmt.Errorf("refusing to downgrade from %s to %s: the server offers an older version (a replayed manifest?); use --allow-downgrade if you mean it", from, to))
	case cmp < 0:
		log.Warnf("downgrading from %s to %s (--allow-downgrade)", from, to)
	}
	// Past "already up to date", the plan needs the installed manifest whole.
	if err := e.needInstalled(u); err != nil {
		return false, failIn(logging.PhaseCheck, err)
	}
	var idx *statindex.Index
	if !u.opts.Repair {
		idx = e.loadIndex(u.l, u.installedRaw)
	}
	if u.res.Plan, err = e.plan(ctx, u.l, u.f.m, u.installed, idx); err != nil {
		return false, failIn(logging.PhaseCheck, err)
	}
	if u.opts.DryRun {
		u.res.Outcome = OutcomeDryRun
		return true, nil
	}
	return false, nil
}

// stageUpdate checks the free space, writes the journal and downloads and verifies every changed
// file into staging; the new manifest, with what was verified, goes into the journal.
func (e *Engine) stageUpdate(ctx context.Context, u *updateRun) error {
	p, from := u.res.Plan, u.from()
	bytes, files := p.DownloadBytes()
	u.log.WithFields(logrus.Fields{logging.FieldPhase: logging.PhaseDownload, logging.FieldMessageID: logging.MsgUpdateStarted, logging.FieldFrom: human.Version(from), logging.FieldTo: p.To}).
		Infof("update started: %s -> %s, %d files to download (%s), %d to remove", human.Version(from), p.To, files, human.Bytes(bytes), len(p.Removes))
	if err := e.checkSpace(u.l, p.StagedBytes()-e.preparePartials(u.l, p)); err != nil {
		return failIn(logging.PhaseDownload, err)
	}
	rec := newUpdateRecord(u, p)
	if err := e.journal(u.l).save(rec); err != nil {
		return failIn(logging.PhaseDownload, err)
	}
	u.rec = rec
	got, err := e.stageAll(ctx, u.log, u.l, rec, u.f, p)
	if err != nil {
		return failIn(logging.PhaseDownload, err)
	}
	resolveVerified(p, got)
	if rec.NewManifest == nil {
		if rec.NewManifest, err = p.Resolved.Marshal(); err != nil {
			return failIn(logging.PhaseDownload, fmt.Errorf("cannot encode the new manifest: %w", err))
		}
	}
	// No record of its own says "staged": the next one, snapshotting, follows at once, and
	// recovery treats both as it treats staging (see Recover), so a record between them would
	// cost two fsyncs and change no outcome. The new manifest, when it had to wait for
	// staging, is written with that record.
	return failIn(logging.PhaseDownload, ctx.Err())
}

// recordedManifest is the new manifest as the journal and installed.json keep it, when the
// verified bytes themselves can be: in the modern form with every entry's mode spelt out (as
// `release` writes them), their parse is exactly what Resolved holds, so they need no second
// encoding — at 5,000 entries, encoding and checking Resolved again cost an eighth of an
// update's CPU. Otherwise nil: a legacy manifest's entries get the sha256 staging verified, a
// mode left to its default is spelt out, and Resolved is encoded once staging is done.
func recordedManifest(f *fetched) []byte {
	if f.head || f.m.Legacy {
		return nil
	}
	for i := range f.m.Files {
		if !f.m.Files[i].HasMode {
			return nil
		}
	}
	return f.raw
}

// newUpdateRecord is the journal of an update about to stage p: one op per file to write (its
// staging file named by position) and per file to remove.
func newUpdateRecord(u *updateRun, p *Plan) *Record {
	rec := &Record{
		RunID: u.res.RunID, Kind: KindUpdate, Phase: PhaseStaging, PID: os.Getpid(), Started: u.started,
		From: u.from(), To: p.To, StagingDir: filepath.Join(u.l.staging, u.res.RunID), OldManifest: u.installedRaw,
		NewManifest: recordedManifest(u.f),
	}
	for i, c := range p.Changes {
		rec.Ops = append(rec.Ops, Op{Name: c.File.Name, Staged: filepath.Join(rec.StagingDir, fmt.Sprintf("%05d", i))})
	}
	for _, name := range p.Removes {
		rec.Ops = append(rec.Ops, Op{Name: name, Remove: true})
	}
	return rec
}

// snapshotUpdate notes whether the agent runs (so a rollback knows whether to restart it) and
// snapshots the files the update may change, before any of them does.
func (e *Engine) snapshotUpdate(ctx context.Context, u *updateRun) error {
	rec, j := u.rec, e.journal(u.l)
	if e.Agent != nil {
		active, err := e.Agent.Active(ctx)
		if err != nil {
			return failIn(logging.PhaseRestart, fmt.Errorf("cannot tell whether the agent unit %s is running (set Unit= empty to restart it yourself): %w", e.Config.Unit, err))
		}
		rec.UnitWasActive = active
	}
	rec.Snapshot = snapshot.NewID(e.now(), u.from())
	if err := j.setPhase(rec, PhaseSnapshotting); err != nil {
		return failIn(logging.PhaseSnapshot, err)
	}
	e.notify("taking snapshot")
	store := e.storeAt(u.l, u.l.snapshots)
	p := u.res.Plan
	spec := snapshot.Spec{ID: rec.Snapshot, Version: u.from(), Manifest: u.installedRaw, RunID: rec.RunID, Files: p.Installed, Leaving: p.Leaving}
	if _, err := store.Create(ctx, spec); err != nil {
		return failIn(logging.PhaseSnapshot, fmt.Errorf("cannot snapshot the install before changing it: %w", err))
	}
	u.log.WithFields(logrus.Fields{logging.FieldPhase: logging.PhaseSnapshot, logging.FieldSnapshot: rec.Snapshot}).Infof("snapshot %s taken", rec.Snapshot)
	// The snapshot's hard links changed the ctime of the files they link: those the update
	// replaces or removes, no other.
	e.refreshIndex(u.l, u.res.Plan.Index, u.res.Plan.Leaving)
	// No record says "snapshotted" before applying's: Create returns only once the snapshot is
	// complete and durable, which is all applying's record needs. A crash between the two is
	// recovered from snapshotting (the snapshot is removed, the install was never touched),
	// just as it would be from snapshotted.
	return failIn(logging.PhaseSnapshot, ctx.Err())
}

// endUpdate ends a run that never touched the install. With err, the one way such a run fails:
// staging and this run's snapshot and journal go, the failure is logged as an event in the
// phase it names and recorded for `status` (except on a dry run).
func (e *Engine) endUpdate(u *updateRun, err error) (*Result, error) {
	if err == nil {
		return u.res, nil
	}
	phase := logging.PhaseCheck
	var pe *phaseError
	if errors.As(err, &pe) {
		phase, err = pe.phase, pe.err
	}
	if u.rec != nil {
		if cerr := e.abortBeforeApply(u.l, u.rec); cerr != nil {
			u.log.WithError(cerr).Warn("cleanup after failure incomplete; the next command finishes it")
		}
		if errors.Is(err, context.Canceled) {
			err = fmt.Errorf("%w; nothing was changed", ErrInterrupted)
		}
	}
	from, res := u.from(), u.res
	res.Outcome, res.Reason = OutcomeFailed, err.Error()
	u.log.WithFields(logrus.Fields{
		logging.FieldPhase: phase, logging.FieldMessageID: logging.MsgFailed,
		logging.FieldFrom: human.Version(from), logging.FieldTo: res.To, logging.FieldReason: err.Error(),
	}).Errorf("update failed, install unchanged: %v", err)
	if !u.opts.DryRun {
		e.recordLastRun(u.l, &LastRun{RunID: res.RunID, Command: KindUpdate, Result: OutcomeFailed, From: from, To: res.To, Started: u.started, Reason: err.Error()})
	}
	if ExitCode(err) == CodeOK {
		err = withCode(CodeFailed, err)
	}
	return res, err
}

// applyUpdate is the point of no return: from the journal write that starts it on, installed
// files change, and a failure or crash is undone by restoring the snapshot.
func (e *Engine) applyUpdate(ctx context.Context, u *updateRun) (*Result, error) {
	rec := u.rec
	if err := e.journal(u.l).setPhase(rec, PhaseApplying); err != nil {
		return e.endUpdate(u, failIn(logging.PhaseApply, err))
	}
	e.notify("applying")
	rec.Restarted = false
	if err := e.applyFiles(u); err != nil {
		rec.Reason = fmt.Sprintf("apply failed: %v", err)
		return e.run(ctx, u.log, u.l, rec, PhaseRollingBack)
	}
	p := u.res.Plan
	u.log.WithFields(logrus.Fields{logging.FieldPhase: logging.PhaseApply, logging.FieldFrom: human.Version(u.from()), logging.FieldTo: p.To}).
		Infof("version %s in place (%d files written, %d removed)", p.To, len(p.Changes), len(p.Removes))
	if e.HookApplied != nil {
		e.HookApplied(rec)
	}
	if ctx.Err() != nil {
		// A signal arrived while applying: the tree is consistent now, and the agent has not been
		// restarted, so undoing is the least surprising answer to "stop".
		rec.Reason = "interrupted by a signal while applying"
		return e.run(ctx, u.log, u.l, rec, PhaseRollingBack)
	}
	return e.run(ctx, u.log, u.l, rec, PhaseApplied)
}

// applyFiles puts the staged files in place, records the new manifest as installed and moves the
// journal to applied.
func (e *Engine) applyFiles(u *updateRun) error {
	if err := e.apply(u.l, u.rec); err != nil {
		u.log.WithFields(logrus.Fields{logging.FieldPhase: logging.PhaseApply, logging.FieldReason: fmt.Sprintf("apply failed: %v", err)}).
			Error("apply failed; restoring the snapshot")
		return err
	}
	if err := e.recordInstalled(u); err != nil {
		return err
	}
	return e.journal(u.l).setPhase(u.rec, PhaseApplied)
}

// recordInstalled records the new manifest as installed, with the stat index and the version
// record that describe it. Only installed.json must be durable before the journal says applied;
// the other two are checked against its bytes whenever they are read (the index names them by
// their sha256, the version record hashes them), so whichever of the three a crash or a failure
// keeps, neither is trusted for bytes it was not written for. None has to wait for another, so
// they are written at once and the waits of their fsyncs overlap.
func (e *Engine) recordInstalled(u *updateRun) error {
	p, raw := u.res.Plan, u.rec.NewManifest
	e.recordApplied(u.l, p, raw)
	var wg sync.WaitGroup
	wg.Go(func() { e.saveIndex(u.l, p.Index) })
	wg.Go(func() { e.recordVersion(u.l, p.To, u.f.offered(), raw) })
	err := e.setInstalled(u.l, raw)
	wg.Wait()
	if err != nil {
		return err
	}
	e.index = p.Index
	return nil
}

// resolveVerified records in the new manifest what was verified (got, in the order of
// p.Changes): legacy (md5) entries get the sha256 and size of the bytes staged, so the installed
// manifest is always in the sha256 form and `verify` later uses sha256.
func resolveVerified(p *Plan, got []verified) {
	for k, c := range p.Changes {
		if r := &p.Resolved.Files[c.at]; r.SHA256 == "" {
			r.SHA256, r.Size = got[k].sha256, got[k].size
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
	// need is at most MaxInt64 (the manifest refuses totals past it), so want cannot wrap.
	want := uint64(need) + spaceMargin
	if free < want {
		return fmt.Errorf("not enough free space on the filesystem of %s: the update needs %s (%s to download + %s margin), %s is free; free some space and run it again",
			l.work, human.Bytes(int64(min(want, math.MaxInt64))), human.Bytes(need), human.Bytes(spaceMargin), human.Bytes(int64(min(free, math.MaxInt64))))
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
		// The snapshot linked the files it was about to replace; any object that stays
		// because another snapshot names its content must not keep sharing their inodes.
		names := make([]string, 0, len(rec.Ops))
		for _, op := range rec.Ops {
			names = append(names, op.Name)
		}
		for _, dir := range e.snapshotDirs(l) {
			if err := e.storeAt(l, dir).Unshare(names); err != nil {
				errs = append(errs, err)
			}
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
