package updater

import (
	"context"
	"fmt"
	"os"

	"github.com/sirupsen/logrus"

	"github.com/sdupdate/sdupdate/internal/human"
	"github.com/sdupdate/sdupdate/logging"
	"github.com/sdupdate/sdupdate/snapshot"
)

// Rollback restores a snapshot (the newest one of another version than the installed one, or
// the one named), then restarts and watches the agent if it was running.
func (e *Engine) Rollback(ctx context.Context, to string) (*Result, error) {
	l, err := e.writableLayout()
	if err != nil {
		return nil, err
	}
	installed, installedRaw, err := e.installedManifest(l)
	if err != nil {
		return nil, err
	}
	var (
		meta  *snapshot.Meta
		store *snapshot.Store
	)
	if to != "" {
		if store, meta, err = e.findSnapshot(l, to); err != nil {
			return nil, withCode(CodeFailed, err)
		}
	} else {
		heads, where, _, damaged := e.catalogSnapshots(l)
		for _, d := range damaged {
			e.Log.Warn(d.Message)
		}
		target := rollbackTarget(heads, versionOf(installed))
		if target == nil {
			return nil, withCode(CodeFailed, fmt.Errorf("no snapshot to roll back to in %s: snapshots are taken by `sdupdate update`", l.snapshots))
		}
		store = where[target.ID]
		if meta, err = store.Get(target.ID); err != nil {
			return nil, withCode(CodeFailed, err)
		}
	}
	runID := e.runID()
	log := e.runLog(runID)
	log.WithFields(logrus.Fields{logging.FieldPhase: logging.PhaseRollback, logging.FieldFrom: human.Version(versionOf(installed)), logging.FieldTo: human.Version(meta.Version), logging.FieldSnapshot: meta.ID}).
		Infof("rolling back from %s to %s (snapshot %s)", human.Version(versionOf(installed)), human.Version(meta.Version), meta.ID)
	rec := &Record{
		RunID: runID, Kind: KindRollback, Phase: PhaseRollingBack, PID: os.Getpid(), Started: e.now(),
		From: versionOf(installed), To: meta.Version, Snapshot: meta.ID, OldManifest: installedRaw, NewManifest: meta.Manifest,
	}
	// Checks first: a snapshot whose content the store lost, or a symlink in the way, refuses
	// the rollback before any file changes.
	current, err := restoreNames(rec, meta)
	if err != nil {
		return nil, withCode(CodeFailed, err)
	}
	if err := store.Check(ctx, meta.ID, current); err != nil {
		return nil, withCode(CodeFailed, fmt.Errorf("refusing to roll back to snapshot %s: %w", meta.ID, err))
	}
	if e.Agent != nil {
		active, err := e.Agent.Active(ctx)
		if err != nil {
			return nil, withCode(CodeFailed, fmt.Errorf("cannot tell whether the agent unit %s is running: %w", e.Config.Unit, err))
		}
		rec.UnitWasActive, rec.Restarted = active, active
	}
	if err := e.journal(l).save(rec); err != nil {
		return nil, withCode(CodeFailed, err)
	}
	return e.run(ctx, log, l, rec, PhaseRollingBack)
}
