package updater

import (
	"context"
	"fmt"
	"path/filepath"
	"time"

	"github.com/sdupdate/sdupdate/fetch"
	"github.com/sdupdate/sdupdate/fsutil"
	"github.com/sdupdate/sdupdate/internal/human"
	"github.com/sdupdate/sdupdate/logging"
	"github.com/sdupdate/sdupdate/snapshot"
)

// SnapshotInfo is one line of `sdupdate snapshots`.
type SnapshotInfo struct {
	// Corrupt is why a snapshot cannot be read ("" for a good one): it is listed so the operator
	// sees it, and skipped by rollback.
	Corrupt string    `json:"corrupt,omitempty"`
	ID      string    `json:"id"`
	Version string    `json:"version"`
	Created time.Time `json:"created"`
	Files   int       `json:"files"`
	// Bytes is the disk the snapshot holds in the store, each object counted once however many
	// snapshots name it; FilesBytes is the size of the version's files.
	Bytes      int64 `json:"bytes"`
	FilesBytes int64 `json:"files_bytes"`
	// Complete is false when some file's recorded content is neither in the store nor in an
	// installed file unchanged since: a rollback leaves such a file as modified locally.
	Complete bool   `json:"complete"`
	RunID    string `json:"run_id,omitempty"`
}

// Snapshots lists complete snapshots, newest first.
func (e *Engine) Snapshots() ([]SnapshotInfo, error) {
	l, err := e.resolveLayout()
	if err != nil {
		return nil, err
	}
	metas, _, damaged := e.listSnapshots(l)
	infos := snapshotInfos(metas)
	for _, d := range damaged {
		infos = append(infos, SnapshotInfo{ID: filepath.Base(d.Path), Corrupt: d.Message})
	}
	return infos, nil
}

func snapshotInfos(metas []snapshot.Summary) []SnapshotInfo {
	out := make([]SnapshotInfo, 0, len(metas))
	for _, m := range metas {
		out = append(out, SnapshotInfo{ID: m.ID, Version: m.Version, Created: m.Created, Files: len(m.Files),
			Bytes: m.Held, FilesBytes: m.Bytes, Complete: m.Complete, RunID: m.RunID})
	}
	return out
}

// InProgress describes a run whose journal is on disk.
type InProgress struct {
	RunID string `json:"run_id"`
	Kind  string `json:"kind"`
	Phase Phase  `json:"phase"`
	PID   int    `json:"pid"`
	From  string `json:"from"`
	To    string `json:"to"`
}

// StatusFormat is the version of the `status --json` document. Fields are only ever added
// under one format; it changes when a field changes meaning or goes.
const StatusFormat = 1

// Values of Status.UnitState that are not a systemd ActiveState.
const (
	UnitStateUnknown    = "unknown"     // systemd could not be asked (see unit_error)
	UnitStateNotManaged = "not-managed" // Unit= is empty: the operator restarts the agent
)

// Previous is the rollback target: what `sdupdate rollback` without --to would restore.
type Previous struct {
	Snapshot string    `json:"snapshot"`
	Version  string    `json:"version"` // "" when the version then installed was unknown
	Created  time.Time `json:"created"`
}

// Finding codes.
const (
	FindingStateUnsafe      = "state-directory-unsafe"     // StateDirectory fails its checks; nothing in it was read
	FindingLayout           = "layout"                     // the install or state directory cannot be used as it is
	FindingInstalledDamaged = "installed-manifest-damaged" // installed.json cannot be read; `update --repair` rebuilds it
	FindingSnapshotCorrupt  = "snapshot-corrupt"           // a snapshot cannot be read; it is skipped
	FindingLastRunDamaged   = "last-run-damaged"           // last-run.json cannot be read
	FindingJournalDamaged   = "journal-damaged"            // txn.json cannot be read or names paths sdupdate never writes
	FindingRecoveryNeeded   = "recovery-needed"            // a run was interrupted and is not finished
	FindingSourceMissing    = "source-not-configured"      // [Source] lacks ManifestURL= or a PublicKey=: update and check refuse until it is set
)

// Finding is damage found in the state (a journal, manifest or snapshot that cannot be read,
// say). Code is stable for tools; Message tells a person what is wrong and what to do.
type Finding struct {
	Code    string `json:"code"`
	Path    string `json:"path,omitempty"`
	Message string `json:"message"`
}

// Status is `sdupdate status --json`, a stable interface for fleet tools: the README documents
// it field by field. Every field is always present; a list is empty, never null.
type Status struct {
	Format          int            `json:"format"`
	SdupdateVersion string         `json:"sdupdate_version"`
	Version         string         `json:"version"` // "" before the first recorded update
	Directory       string         `json:"directory"`
	StateDirectory  string         `json:"state_directory"`
	ManifestURL     string         `json:"manifest_url"` // without a password
	Files           int            `json:"files"`
	Unit            string         `json:"unit"`
	UnitState       string         `json:"unit_state"` // ActiveState, or UnitStateUnknown / UnitStateNotManaged
	UnitSubState    string         `json:"unit_sub_state"`
	UnitLoadState   string         `json:"unit_load_state"`
	UnitError       string         `json:"unit_error"` // why unit_state is unknown; "" otherwise
	InProgress      *InProgress    `json:"in_progress"`
	Previous        *Previous      `json:"previous"`
	Snapshots       []SnapshotInfo `json:"snapshots"`
	StoreBytes      int64          `json:"store_bytes"` // disk the snapshot store holds
	Findings        []Finding      `json:"findings"`
	LastRun         *LastRun       `json:"last_run"`
	ConfigFiles     []string       `json:"config_files"`
}

// Status gathers what an operator or a fleet tool wants to know about this install. It always
// answers: damage it finds in the state is reported in Findings, never as an error.
func (e *Engine) Status(ctx context.Context) (*Status, error) {
	c := e.Config
	st := &Status{Format: StatusFormat, SdupdateVersion: e.SelfVersion, Directory: filepath.Clean(c.Directory), StateDirectory: filepath.Clean(c.StateDirectory),
		ManifestURL: fetch.Redact(c.ManifestURL), Unit: c.Unit, ConfigFiles: append([]string{}, c.Files...),
		Snapshots: []SnapshotInfo{}, Findings: []Finding{}}
	e.unitStatus(ctx, st)
	find := func(code, path string, err error) {
		st.Findings = append(st.Findings, Finding{Code: code, Path: path, Message: err.Error()})
	}
	if err := CheckSeparate(e.Fs, st.StateDirectory, st.Directory); err != nil {
		find(FindingLayout, st.StateDirectory, err)
		return st, nil
	}
	if err := PrepareStateDirectory(e.Fs, st.StateDirectory); err != nil {
		find(FindingStateUnsafe, st.StateDirectory, err)
		return st, nil
	}
	l, err := e.resolveLayout()
	if err != nil {
		find(FindingLayout, st.Directory, err)
		return st, nil
	}
	if m, _, err := e.installedManifest(l); err != nil {
		find(FindingInstalledDamaged, l.installed, err)
	} else if m != nil {
		st.Version, st.Files = m.Version, len(m.Files)
	}
	metas, _, damaged := e.listSnapshots(l)
	st.Snapshots = snapshotInfos(metas)
	st.StoreBytes = e.storeBytes(l, metas)
	st.Findings = append(st.Findings, damaged...)
	heads := make([]snapshot.Header, 0, len(metas))
	for i := range metas {
		heads = append(heads, metas[i].Header())
	}
	if p := rollbackTarget(heads, st.Version); p != nil {
		st.Previous = &Previous{Snapshot: p.ID, Version: p.Version, Created: p.Created}
	}
	if st.LastRun, err = loadLastRun(e.Fs, l.lastRun); err != nil {
		find(FindingLastRunDamaged, l.lastRun, err)
	}
	rec, err := e.journal(l).load()
	if err == nil && rec != nil {
		err = l.checkRecord(rec)
	}
	switch {
	case err != nil:
		find(FindingJournalDamaged, l.txn, err)
	case rec != nil:
		st.InProgress = &InProgress{RunID: rec.RunID, Kind: rec.Kind, Phase: rec.Phase, PID: rec.PID, From: rec.From, To: rec.To}
		if rec.RecoverAttempts > 0 {
			find(FindingRecoveryNeeded, l.txn, fmt.Errorf("run %s was interrupted in phase %s and recovery has not finished it (%d attempts); `sdupdate recover` tries again, `journalctl SDUPDATE_RUN_ID=%s` tells why", rec.RunID, rec.Phase, rec.RecoverAttempts, rec.RunID))
		}
	}
	return st, nil
}

// unitStatus fills the unit's state: values only, the error (if systemd cannot be asked) apart.
func (e *Engine) unitStatus(ctx context.Context, st *Status) {
	if e.Agent == nil {
		st.UnitState = UnitStateNotManaged
		return
	}
	s, err := e.Agent.State(ctx)
	if err != nil || s.Active == "" {
		st.UnitState = UnitStateUnknown
		if err != nil {
			st.UnitError = err.Error()
		}
		return
	}
	st.UnitState, st.UnitSubState, st.UnitLoadState = s.Active, s.Sub, s.Load
}

// rollbackTarget is the snapshot a rollback without --to restores: the newest one (metas are
// newest first) of another version than the installed one, else the newest; nil when none.
//
// The snapshot taken before the very first update, of an unknown version with no managed file,
// is never the target: rolling back to it would uninstall the agent (a second `rollback` did
// exactly that). `rollback --to ID` still restores it for whoever means it.
func rollbackTarget(heads []snapshot.Header, installed string) *snapshot.Header {
	var candidates []*snapshot.Header
	for i := range heads {
		if heads[i].Version != "" || heads[i].Files > 0 {
			candidates = append(candidates, &heads[i])
		}
	}
	for _, h := range candidates {
		if h.Version != installed {
			return h
		}
	}
	if len(candidates) > 0 {
		return candidates[0]
	}
	return nil
}

// CheckResult is `sdupdate check --json`.
type CheckResult struct {
	Installed       string `json:"installed"`
	Available       string `json:"available"`
	UpdateAvailable bool   `json:"update_available"`
	FilesChanged    int    `json:"files_changed"`
	FilesRemoved    int    `json:"files_removed"`
	BytesToDownload int64  `json:"bytes_to_download"`
}

// Check fetches and verifies the manifest and tells whether it is newer; it changes nothing.
func (e *Engine) Check(ctx context.Context) (*CheckResult, error) {
	l, err := e.resolveLayout()
	if err != nil {
		return nil, err
	}
	// As for an update, the version is enough unless a newer one is offered.
	installedRaw, from, installed, err := e.versionOfInstalled(l)
	if err != nil {
		return nil, err
	}
	log := e.runLog(e.runID())
	f, err := e.fetchManifest(ctx, log, "")
	if err != nil {
		return nil, withCode(CodeFailed, err)
	}
	cmp, err := compareVersions(from, f.m.Version)
	if err != nil {
		return nil, withCode(CodeFailed, err)
	}
	e.recordCheck(l, f.m.Version)
	e.writeMetrics(l)
	res := &CheckResult{Installed: from, Available: f.m.Version, UpdateAvailable: cmp > 0}
	if res.UpdateAvailable && installed == nil && installedRaw != nil {
		if installed, err = e.parseVouched(l, installedRaw, from); err != nil {
			return nil, err
		}
	}
	if res.UpdateAvailable {
		p, err := e.plan(ctx, l, f.m, installed, e.loadIndex(l, installedRaw))
		if err != nil {
			return nil, withCode(CodeFailed, err)
		}
		add, change, remove := p.Counts()
		res.FilesChanged, res.FilesRemoved = add+change, remove
		res.BytesToDownload, _ = p.DownloadBytes()
	}
	log.WithField(logging.FieldPhase, logging.PhaseCheck).Debugf("installed %s, available %s", human.Version(res.Installed), res.Available)
	return res, nil
}

// Mismatch is one installed file that differs from the installed manifest.
type Mismatch struct {
	Name    string `json:"name"`
	Problem string `json:"problem"`
}

// Verify compares the installed files with the installed manifest.
func (e *Engine) Verify(ctx context.Context) (string, []Mismatch, error) {
	l, err := e.resolveLayout()
	if err != nil {
		return "", nil, err
	}
	m, _, err := e.installedManifest(l)
	if err != nil {
		return "", nil, err
	}
	if m == nil {
		return "", nil, withCode(CodeFailed, fmt.Errorf("nothing to verify: no version was installed by sdupdate yet (%s is missing); run `sdupdate update`", l.installed))
	}
	var out []Mismatch
	for _, f := range m.Files {
		if err := ctx.Err(); err != nil {
			return "", nil, err
		}
		exists, err := fsutil.CheckPath(e.Fs, l.install, f.Name)
		switch {
		case err != nil:
			out = append(out, Mismatch{f.Name, err.Error()})
			continue
		case !exists:
			out = append(out, Mismatch{f.Name, "missing"})
			continue
		}
		have, _, _, err := e.hashInstalled(filepath.Join(l.install, filepath.FromSlash(f.Name)), f.SHA256 == "")
		if err != nil {
			out = append(out, Mismatch{f.Name, err.Error()})
			continue
		}
		switch {
		case f.SHA256 != "" && have.size != f.Size:
			out = append(out, Mismatch{f.Name, fmt.Sprintf("size %d, expected %d", have.size, f.Size)})
		case f.SHA256 != "" && have.sha256 != f.SHA256:
			out = append(out, Mismatch{f.Name, fmt.Sprintf("sha256 %s, expected %s", have.sha256, f.SHA256)})
		case f.SHA256 == "" && have.md5 != f.MD5:
			out = append(out, Mismatch{f.Name, fmt.Sprintf("md5 %s, expected %s", have.md5, f.MD5)})
		case f.HasMode && have.mode != f.Mode:
			out = append(out, Mismatch{f.Name, fmt.Sprintf("mode %04o, expected %04o", have.mode, f.Mode)})
		}
	}
	return m.Version, out, nil
}
