package updater

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/sirupsen/logrus"
	"github.com/spf13/afero"

	"github.com/sdupdate/sdupdate/config"
	"github.com/sdupdate/sdupdate/fetch"
	"github.com/sdupdate/sdupdate/fsutil"
	"github.com/sdupdate/sdupdate/logging"
	"github.com/sdupdate/sdupdate/manifest"
	"github.com/sdupdate/sdupdate/statindex"
	"github.com/sdupdate/sdupdate/systemd"
)

// Fetcher gets manifests, signatures and files. fetch.Client is the real one.
type Fetcher interface {
	Open(ctx context.Context, rawURL string, limit int64) (io.ReadCloser, error)
	// OpenFrom continues a broken download at offset (see fetch.Client.OpenFrom).
	OpenFrom(ctx context.Context, rawURL string, limit, offset int64, etag string) (*fetch.Part, error)
	Get(ctx context.Context, rawURL string, limit int64) ([]byte, error)
}

// Verifier checks a manifest's detached signature. sign.Verifier is the real one.
type Verifier interface {
	Verify(message, signature []byte) error
}

// Agent is the restart seam: the agent's systemd unit. systemd.Gate is the real one; nil means
// Unit= is empty and the operator restarts the agent.
type Agent interface {
	Active(ctx context.Context) (bool, error)
	State(ctx context.Context) (systemd.UnitState, error)
	// RestartAndWait restarts the unit and watches it; log carries the run's fields.
	RestartAndWait(ctx context.Context, log *logrus.Entry) error
}

// Progress receives download progress; the CLI draws a bar on a terminal.
type Progress interface {
	Add(n int64)
	Done()
}

// Engine runs updates, rollbacks and recoveries on one install. The caller holds the lock.
type Engine struct {
	Fs       afero.Fs
	Config   *config.Config
	Fetcher  Fetcher
	Verifier Verifier // nil: no PublicKey configured (AllowUnsigned=yes)
	Agent    Agent    // nil: Unit= empty
	Log      *logrus.Logger
	// SelfVersion is sdupdate's own version, for status and metrics.
	SelfVersion string
	// Optional hooks.
	Notify      func(status string)                   // sd_notify STATUS=
	NewProgress func(files int, bytes int64) Progress // nil: no bar
	FreeSpace   func(path string) (uint64, error)     // nil: free space unknown, not checked
	Now         func() time.Time                      // nil: time.Now
	NewRunID    func() string                         // nil: logging.NewRunID
	RetryDelay  time.Duration                         // pause between tries of one file; 0: 200ms
	HookApplied func(r *Record)                       // tests: called after apply, before restart
	lay         *layout                               // resolved once per run
	index       *statindex.Index                      // the stat index an update wrote, refreshed after pruning
}

func (e *Engine) now() time.Time {
	if e.Now != nil {
		return e.Now().UTC()
	}
	return time.Now().UTC()
}

func (e *Engine) notify(status string) {
	if e.Notify != nil {
		e.Notify(status)
	}
}

func (e *Engine) runID() string {
	if e.NewRunID != nil {
		return e.NewRunID()
	}
	return logging.NewRunID()
}

// layout is where this install keeps its state.
type layout struct {
	install   string
	state     string
	work      string // state, or install/.sdupdate when state is on another filesystem
	staging   string
	snapshots string
	txn       string
	installed string
	lastRun   string
	lock      string
}

// LockPath is where the command lock lives for cfg.
func LockPath(cfg *config.Config) string { return filepath.Join(cfg.StateDirectory, "lock") }

// resolveLayout creates the state directory (0700) if missing, checks it, and decides where
// staging and snapshots go: they must sit on the install's filesystem.
func (e *Engine) resolveLayout() (*layout, error) { return e.layoutFor(false) }

// writableLayout is resolveLayout for a command that changes the install: a missing install
// directory is created (0755).
func (e *Engine) writableLayout() (*layout, error) { return e.layoutFor(true) }

func (e *Engine) layoutFor(create bool) (*layout, error) {
	if e.lay != nil {
		return e.lay, nil
	}
	c := e.Config
	l := &layout{
		install:   filepath.Clean(c.Directory),
		state:     filepath.Clean(c.StateDirectory),
		txn:       filepath.Join(c.StateDirectory, "txn.json"),
		installed: filepath.Join(c.StateDirectory, "installed.json"),
		lastRun:   filepath.Join(c.StateDirectory, "last-run.json"),
		lock:      LockPath(c),
	}
	if err := e.checkNotInside(l); err != nil {
		return nil, err
	}
	if err := PrepareStateDirectory(e.Fs, l.state); err != nil {
		return nil, err
	}
	exists, err := e.checkInstallDir(l.install, create)
	if err != nil {
		return nil, err
	}
	if !exists {
		// Nothing is installed yet: a reading command answers without creating the directory
		// (and the layout is not kept, so a command that writes makes it).
		l.work = l.state
		l.staging, l.snapshots = filepath.Join(l.work, "staging"), filepath.Join(l.work, "snapshots")
		return l, nil
	}
	if err := e.chooseWork(l); err != nil {
		return nil, err
	}
	l.staging = filepath.Join(l.work, "staging")
	l.snapshots = filepath.Join(l.work, "snapshots")
	e.lay = l
	return l, nil
}

// checkInstallDir checks that install is a directory (not a symlink to one). A missing one is
// created when create is set, else reported as not there (false).
func (e *Engine) checkInstallDir(install string, create bool) (bool, error) {
	fi, err := fsutil.Lstat(e.Fs, install)
	if errors.Is(err, os.ErrNotExist) && !create {
		return false, nil
	}
	if errors.Is(err, os.ErrNotExist) {
		if err := e.Fs.MkdirAll(install, 0o755); err != nil {
			return false, fmt.Errorf("cannot create install directory %s: %w", install, err)
		}
		fi, err = fsutil.Lstat(e.Fs, install)
	}
	if err != nil {
		return false, fmt.Errorf("cannot inspect install directory %s: %w", install, err)
	}
	if !fi.IsDir() {
		return false, fmt.Errorf("install directory %s is not a directory (a symlink to one is not accepted either)", install)
	}
	return true, nil
}

// chooseWork sets l.work, the directory staging and snapshots go under: the state directory when
// a file can be renamed from it into the install, else the reserved directory inside the install.
func (e *Engine) chooseWork(l *layout) error {
	same, err := fsutil.CanRenameBetween(e.Fs, l.state, l.install)
	if errors.Is(err, syscall.EROFS) {
		// A read-only install cannot take a staged file anyway: reading commands (status,
		// verify) still answer, and a command that writes fails at its first write, naming it.
		same, err = true, nil
	}
	if err != nil {
		// A probe that could not be removed must not stay in the operator's directory.
		e.removeStaleProbes(l)
		return err
	}
	l.work = l.state
	if same {
		return nil
	}
	l.work = reservedDir(l)
	if err := e.checkReserved(l, "staging", "snapshots", "partial"); err != nil {
		return err
	}
	if err := e.Fs.MkdirAll(l.work, 0o700); errors.Is(err, syscall.EROFS) {
		l.work = l.state // read-only install: as above, reading commands still answer
	} else if err != nil {
		return fmt.Errorf("cannot create %s: %w", l.work, err)
	}
	return nil
}

// checkNotInside refuses a StateDirectory that lies inside Directory (or the reverse) once
// symlinks are resolved: the configuration compares the paths as written, and a symlinked parent
// would let an update overwrite sdupdate's own state.
func (e *Engine) checkNotInside(l *layout) error { return CheckSeparate(e.Fs, l.state, l.install) }

// CheckSeparate refuses state and install directories that lie inside one another once symlinks
// are resolved (the parts that exist; a missing directory is placed where it would be created).
// It runs before the state directory is created.
func CheckSeparate(fsys afero.Fs, state, install string) error {
	if _, ok := fsys.(*afero.OsFs); !ok {
		return nil // no symlinks
	}
	rs, rd := resolveExisting(state), resolveExisting(install)
	if within(rs, rd) || within(rd, rs) {
		return fmt.Errorf("StateDirectory %s (%s) and Directory %s (%s) lie inside one another once symlinks are resolved; give them separate places",
			state, rs, install, rd)
	}
	return nil
}

// resolveExisting resolves the symlinks of the longest existing prefix of p and appends the rest.
func resolveExisting(p string) string {
	rest := ""
	for dir := filepath.Clean(p); ; dir = filepath.Dir(dir) {
		if r, err := filepath.EvalSymlinks(dir); err == nil {
			return filepath.Join(r, rest)
		}
		if filepath.Dir(dir) == dir {
			return p
		}
		rest = filepath.Join(filepath.Base(dir), rest)
	}
}

// within reports whether p is dir or lies below it.
func within(p, dir string) bool {
	rel, err := filepath.Rel(dir, p)
	return err == nil && rel != ".." && !strings.HasPrefix(rel, "../")
}

// PrepareStateDirectory creates dir 0700 if it is missing and then refuses it under the same rules
// as <Directory>/.sdupdate: a real directory owned by the running user and writable by no one
// else, whose staging, snapshots and partial entries are real directories too. Otherwise another
// user could plant a symlink named lock, staging or txn.json and have root truncate or empty
// whatever it points to. The command lock lives there, so this runs before it is taken.
func PrepareStateDirectory(fsys afero.Fs, dir string) error {
	if _, err := fsutil.Lstat(fsys, dir); errors.Is(err, os.ErrNotExist) {
		if err := fsys.MkdirAll(filepath.Dir(dir), 0o755); err != nil {
			return fmt.Errorf("cannot create the parent of state directory %s: %w", dir, err)
		}
		if err := fsutil.Mkdir(fsys, dir, 0o700); err != nil && !errors.Is(err, os.ErrExist) {
			return err
		}
	}
	if err := fsutil.CheckPrivateDir(fsys, dir, "StateDirectory"); err != nil {
		return err
	}
	for _, sub := range []string{"staging", "snapshots", "partial"} {
		p := filepath.Join(dir, sub)
		if fi, err := fsutil.Lstat(fsys, p); err == nil && (fi.Mode()&os.ModeSymlink != 0 || !fi.IsDir()) {
			return fmt.Errorf("%s is a %s, not a directory; sdupdate never follows a symlink in StateDirectory (remove it): %w",
				p, fsutil.FileKind(fi.Mode()), fsutil.ErrUnsafePath)
		}
	}
	return nil
}

// removeStaleProbes removes rename probes left in the install or state directory by a run that
// was killed (or whose removal failed) between creating and removing one. Only sdupdate's own
// probes go: a name in the install is removed only while it is the inode of a probe in the state
// directory, so an operator's file of the same name stays.
func (e *Engine) removeStaleProbes(l *layout) {
	changed, err := fsutil.RemoveStaleProbes(e.Fs, l.state, l.install)
	if err != nil {
		e.Log.WithError(err).Warn("cannot remove a rename probe")
	}
	for _, dir := range changed {
		_ = fsutil.SyncDir(e.Fs, dir)
	}
}

func (e *Engine) journal(l *layout) journal { return journal{fs: e.Fs, path: l.txn} }

// errInstalledDamaged marks an installed manifest that exists but cannot be read.
var errInstalledDamaged = errors.New("installed manifest damaged")

// installedManifest is the manifest recorded by the last successful update, or nil before it.
func (e *Engine) installedManifest(l *layout) (*manifest.Manifest, []byte, error) {
	data, err := e.readInstalledRaw(l)
	if err != nil {
		return nil, nil, err
	}
	m, err := e.parseInstalled(l, data)
	if err != nil {
		return nil, nil, err
	}
	return m, data, nil
}

// setInstalled records raw as the installed manifest; nil removes the record (version unknown).
func (e *Engine) setInstalled(l *layout, raw []byte) error {
	if raw == nil {
		if err := e.Fs.Remove(l.installed); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("cannot remove %s: %w", l.installed, err)
		}
		return fsutil.SyncDir(e.Fs, l.state)
	}
	if err := fsutil.WriteFileAtomic(e.Fs, l.installed, raw, 0o600); err != nil {
		return fmt.Errorf("cannot record installed manifest: %w", err)
	}
	return nil
}

func versionOf(m *manifest.Manifest) string {
	if m == nil {
		return ""
	}
	return m.Version
}

func dirOf(p string) string { return filepath.Dir(p) }

// runLog returns the logger every entry of one run goes through, carrying its run id.
func (e *Engine) runLog(runID string) *logrus.Entry {
	return e.Log.WithField(logging.FieldRunID, runID)
}
