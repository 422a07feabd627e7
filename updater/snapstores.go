package updater

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"

	"github.com/sdupdate/sdupdate/snapshot"
)

// Snapshots and staging areas can be in two places: StateDirectory, or Directory/.sdupdate when
// a rename from StateDirectory into the install fails (another filesystem, or another mount of
// the same one, as systemd's ReadWritePaths= makes). Which one works can differ between a run
// under the unit and one from a shell, so new ones go where renames work now, and every lookup
// reads both.

// snapshotDirs lists the existing snapshot directories, the one in use first.
func (e *Engine) snapshotDirs(l *layout) []string {
	dirs := []string{l.snapshots}
	for _, d := range []string{filepath.Join(l.state, "snapshots"), filepath.Join(l.install, ".sdupdate", "snapshots")} {
		if d == l.snapshots {
			continue
		}
		if fi, err := e.Fs.Stat(d); err == nil && fi.IsDir() {
			dirs = append(dirs, d)
		}
	}
	return dirs
}

func (e *Engine) stagingDirs(l *layout) []string {
	dirs := []string{l.staging}
	for _, d := range []string{filepath.Join(l.state, "staging"), filepath.Join(l.install, ".sdupdate", "staging")} {
		if d != l.staging {
			dirs = append(dirs, d)
		}
	}
	return dirs
}

func (e *Engine) storeAt(l *layout, dir string) *snapshot.Store {
	return &snapshot.Store{Fs: e.Fs, Dir: dir, InstallDir: l.install, Now: e.Now}
}

// listSnapshots merges every snapshot directory, newest first, with the store holding each.
func (e *Engine) listSnapshots(l *layout) ([]snapshot.Meta, map[string]*snapshot.Store, error) {
	var all []snapshot.Meta
	where := map[string]*snapshot.Store{}
	for _, dir := range e.snapshotDirs(l) {
		st := e.storeAt(l, dir)
		metas, err := st.List()
		if err != nil {
			return nil, nil, err
		}
		for _, m := range metas {
			if _, dup := where[m.ID]; dup {
				continue
			}
			where[m.ID] = st
			all = append(all, m)
		}
	}
	sort.SliceStable(all, func(i, j int) bool {
		if !all[i].Created.Equal(all[j].Created) {
			return all[i].Created.After(all[j].Created)
		}
		return all[i].ID > all[j].ID
	})
	return all, where, nil
}

// findSnapshot returns the store holding id and its metadata.
func (e *Engine) findSnapshot(l *layout, id string) (*snapshot.Store, *snapshot.Meta, error) {
	var firstErr error
	for _, dir := range e.snapshotDirs(l) {
		st := e.storeAt(l, dir)
		m, err := st.Get(id)
		if err == nil {
			return st, m, nil
		}
		if firstErr == nil {
			firstErr = err
		}
	}
	return nil, nil, firstErr
}

// deleteSnapshot removes id wherever it is; a missing one is not an error.
func (e *Engine) deleteSnapshot(l *layout, id string) error {
	var errs []error
	for _, dir := range e.snapshotDirs(l) {
		if _, err := e.Fs.Stat(filepath.Join(dir, id)); err != nil {
			continue
		}
		if err := e.storeAt(l, dir).Delete(id); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// pruneSnapshots keeps the newest keep snapshots across all directories, and protect.
func (e *Engine) pruneSnapshots(l *layout, keep int, protect string) ([]string, error) {
	all, where, err := e.listSnapshots(l)
	if err != nil {
		return nil, err
	}
	var removed []string
	var errs []error
	for i, m := range all {
		if i < keep || m.ID == protect {
			continue
		}
		if err := where[m.ID].Delete(m.ID); err != nil {
			errs = append(errs, fmt.Errorf("cannot remove snapshot %s: %w", m.ID, err))
			continue
		}
		removed = append(removed, m.ID)
	}
	return removed, errors.Join(errs...)
}
