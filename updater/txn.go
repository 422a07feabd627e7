package updater

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"time"

	"github.com/spf13/afero"

	"github.com/sdupdate/sdupdate/fsutil"
	"github.com/sdupdate/sdupdate/manifest"
)

// Phase names are persisted: they are part of the on-disk format and never renamed.
type Phase string

// An update records staging, snapshotting, applying and applied, then restarting and done when
// it watches the agent. Staged and snapshotted, which an earlier sdupdate also recorded, are
// still read: each is recovered exactly as the phase before it is, so recording them cost two
// fsyncs each and changed no outcome.
const (
	// The install is untouched in every phase up to and including PhaseSnapshotted.
	PhaseStaging      Phase = "staging"      // downloading into the staging directory
	PhaseStaged       Phase = "staged"       // every file verified and fsynced in staging (read only)
	PhaseSnapshotting Phase = "snapshotting" // the snapshot named in the record is being written
	PhaseSnapshotted  Phase = "snapshotted"  // the snapshot is complete and fsynced (read only)
	// The point of no return: from here on installed files change.
	PhaseApplying           Phase = "applying"            // staged files are being renamed into place
	PhaseApplied            Phase = "applied"             // the new tree and installed.json are in place
	PhaseRestarting         Phase = "restarting"          // the agent is being restarted and watched
	PhaseRollingBack        Phase = "rolling-back"        // the snapshot is being restored
	PhaseRollbackRestarting Phase = "rollback-restarting" // the restored agent is being restarted and watched
	PhaseDone               Phase = "done"                // outcome recorded; only cleanup remains
)

// Kinds of transaction.
const (
	KindUpdate   = "update"
	KindRollback = "rollback"
)

// Op is one planned change of the install directory.
type Op struct {
	Name   string `json:"name"`
	Staged string `json:"staged,omitempty"` // file in the staging dir renamed onto Name
	Remove bool   `json:"remove,omitempty"`
}

// Record is the transaction journal: what the run is doing and everything needed to finish or
// undo it after a crash. It is rewritten atomically before every phase acts.
type Record struct {
	Format        int       `json:"format"`
	RunID         string    `json:"run_id"`
	Kind          string    `json:"kind"`
	Phase         Phase     `json:"phase"`
	PID           int       `json:"pid"`
	Started       time.Time `json:"started"`
	From          string    `json:"from"`
	To            string    `json:"to"`
	StagingDir    string    `json:"staging_dir,omitempty"`
	Snapshot      string    `json:"snapshot,omitempty"`
	UnitWasActive bool      `json:"unit_was_active"`
	// Restarted is true once the agent may be running files of the new tree, so a rollback
	// must restart it again; an agent never restarted still runs the old code.
	Restarted       bool            `json:"restarted"`
	Outcome         string          `json:"outcome,omitempty"` // set on entering PhaseDone
	OldManifest     json.RawMessage `json:"old_manifest,omitempty"`
	NewManifest     json.RawMessage `json:"new_manifest,omitempty"`
	Ops             []Op            `json:"ops,omitempty"`
	Reason          string          `json:"reason,omitempty"`
	RecoverAttempts int             `json:"recover_attempts,omitempty"`
	// ModifiedLocally names the files the restore left as they were: changed in place since
	// the snapshot, their recorded content nowhere.
	ModifiedLocally []string `json:"modified_locally,omitempty"`
	// Parts names the files holding OldManifest, NewManifest and Ops on disk (format 2; see
	// txnparts.go). In memory those fields hold the content.
	Parts *Parts     `json:"parts,omitempty"`
	saved savedParts // what the journal on disk holds of the large fields
}

// Journal formats: 1 held every field in txn.json, so each phase change rewrote both manifests
// (sdupdate up to this change wrote it; it is still read); 2 keeps the large fields in parts
// written once.
const (
	recordFormatInline = 1
	recordFormat       = 2
)

type journal struct {
	fs   afero.Fs
	path string
}

func (j journal) load() (*Record, error) {
	data, err := fsutil.ReadRegularFile(j.fs, j.path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("cannot read transaction journal %s: %w", j.path, err)
	}
	var r Record
	if err := json.Unmarshal(data, &r); err != nil {
		return nil, fmt.Errorf("cannot parse transaction journal %s (move it away and run `sdupdate verify`): %w", j.path, err)
	}
	switch r.Format {
	case recordFormatInline:
		if r.Parts != nil {
			return nil, fmt.Errorf("transaction journal %s of format %d names parts, which sdupdate never writes (move it away and run `sdupdate verify`)", j.path, r.Format)
		}
	case recordFormat:
		if err := j.loadParts(&r); err != nil {
			return nil, err
		}
	default:
		return nil, fmt.Errorf("transaction journal %s has format %d, this sdupdate knows %d and %d", j.path, r.Format, recordFormatInline, recordFormat)
	}
	return &r, nil
}

var (
	runIDPattern  = regexp.MustCompile(`^[0-9a-f]{32}$`)
	stagedPattern = regexp.MustCompile(`^[0-9]{5,}$`)
)

// checkRecord refuses a journal whose paths are not the ones sdupdate derives for its run id: the
// journal is state on disk, and recovery removes its staging directory and renames its staged
// files into the install, so a staging_dir pointing anywhere else, or a name that leaves the
// install, is never acted on.
func (l *layout) checkRecord(r *Record) error {
	bad := func(what string) error {
		return fmt.Errorf("transaction journal %s %s, which sdupdate never writes; nothing was changed: inspect it, then move it away and run `sdupdate verify`", l.txn, what)
	}
	if !runIDPattern.MatchString(r.RunID) {
		return bad(fmt.Sprintf("has run id %q", r.RunID))
	}
	if r.StagingDir != "" && r.StagingDir != filepath.Join(l.state, "staging", r.RunID) &&
		r.StagingDir != filepath.Join(reservedDir(l), "staging", r.RunID) {
		return bad(fmt.Sprintf("names staging directory %q", r.StagingDir))
	}
	for _, op := range r.Ops {
		if err := manifest.ValidateName(op.Name); err != nil {
			return bad(fmt.Sprintf("names a file that cannot be installed (%v)", err))
		}
		if op.Staged != "" && (r.StagingDir == "" || filepath.Dir(op.Staged) != r.StagingDir || !stagedPattern.MatchString(filepath.Base(op.Staged))) {
			return bad(fmt.Sprintf("names staged file %q", op.Staged))
		}
	}
	return nil
}

// save persists r durably: the phase it names must be on disk before the phase acts. Only the
// large fields that changed since the last save are written (as parts), so a phase change
// writes a record of a few hundred bytes, however many files the run changes.
func (j journal) save(r *Record) error {
	if err := j.write(r); err != nil {
		// Every later step depends on this record, so one passing fault gets a second try
		// before the run has to stop and leave the rest to recovery.
		if err2 := j.write(r); err2 != nil {
			return fmt.Errorf("cannot write transaction journal: %w", err)
		}
	}
	return nil
}

// write writes the parts of r that changed, then the record naming them, then removes the
// parts no longer named. A crash in between leaves the previous record and every part it names.
func (j journal) write(r *Record) error {
	saved, err := j.saveParts(r)
	if err != nil {
		return err
	}
	head := *r
	head.Format = recordFormat
	head.OldManifest, head.NewManifest, head.Ops = nil, nil, nil
	head.Parts = &saved.sums
	data, err := json.Marshal(&head)
	if err != nil {
		return fmt.Errorf("cannot encode transaction journal: %w", err)
	}
	if err := fsutil.WriteFileAtomic(j.fs, j.path, data, 0o600); err != nil {
		return err
	}
	prev := r.saved
	r.Format, r.saved = recordFormat, saved
	j.dropParts(prev.sums, saved.sums)
	return nil
}

func (j journal) setPhase(r *Record, p Phase) error {
	prev := r.Phase
	r.Phase = p
	if err := j.save(r); err != nil {
		r.Phase = prev
		return err
	}
	return nil
}

func (j journal) clear() error {
	if err := j.fs.Remove(j.path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("cannot remove transaction journal %s: %w", j.path, err)
	}
	if err := fsutil.SyncDir(j.fs, dirOf(j.path)); err != nil {
		return err
	}
	// Named by no journal now: what cannot be removed is removed by the next command.
	removeParts(j.fs, dirOf(j.path))
	return nil
}
