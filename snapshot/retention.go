package snapshot

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"

	"github.com/spf13/afero"

	"github.com/sdupdate/sdupdate/fsutil"
)

// Delete removes snapshot id, complete or not, then every object no remaining snapshot names.
// The record goes first (and that is synced), so a crash halfway leaves an incomplete snapshot,
// never one that looks whole but lacks objects.
func (s *Store) Delete(id string) error {
	if err := s.deleteRecord(id); err != nil {
		return err
	}
	if err := s.collect(); err != nil {
		return fmt.Errorf("snapshot %s deleted, but: %w", id, err)
	}
	return nil
}

func (s *Store) deleteRecord(id string) error {
	if err := checkID(id); err != nil {
		return fmt.Errorf("cannot delete snapshot: unknown snapshot %q: %w", id, ErrNotFound)
	}
	dir := s.snapDir(id)
	fi, err := fsutil.Lstat(s.Fs, dir)
	if errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("cannot delete snapshot: unknown snapshot %q (run \"sdupdate snapshots\" to list them): %w", id, ErrNotFound)
	}
	if err != nil {
		return fmt.Errorf("cannot delete snapshot %s: %w", id, err)
	}
	if !fi.IsDir() {
		return fmt.Errorf("cannot delete snapshot %s: %s is not a directory: %w", id, dir, ErrNotFound)
	}
	for _, f := range []string{recordFile, legacyMetaFile} {
		if err := s.Fs.Remove(filepath.Join(dir, f)); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("cannot delete snapshot %s: %w", id, err)
		}
	}
	if err := fsutil.SyncDir(s.Fs, dir); err != nil {
		return fmt.Errorf("cannot delete snapshot %s: %w", id, err)
	}
	if err := s.Fs.RemoveAll(dir); err != nil {
		return fmt.Errorf("cannot delete snapshot %s: %w", id, err)
	}
	if err := fsutil.SyncDir(s.Fs, s.Dir); err != nil {
		return fmt.Errorf("cannot delete snapshot %s: %w", id, err)
	}
	return nil
}

// collect removes every object that no complete snapshot names, and temporary files a crash
// left among the objects. It removes nothing when a snapshot cannot be read. Call it only under
// the sdupdate lock: a Create running meanwhile has objects its record does not name yet.
func (s *Store) collect() error {
	metas, err := s.records()
	if err != nil {
		return fmt.Errorf("cannot tell which objects are still needed, so none was removed: %w", err)
	}
	needed := map[string]bool{}
	for _, m := range metas {
		for _, f := range m.Files {
			needed[f.SHA256] = true
		}
	}
	dir := filepath.Join(s.Dir, objectsDir)
	entries, err := afero.ReadDir(s.Fs, dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("cannot list %s: %w", dir, err)
	}
	var errs []error
	removed := false
	for _, e := range entries {
		if needed[e.Name()] || (checkSum(e.Name()) != nil && !fsutil.IsTempName(e.Name())) {
			continue
		}
		if err := s.Fs.Remove(filepath.Join(dir, e.Name())); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, fmt.Errorf("cannot remove unneeded object %s: %w", e.Name(), err))
			continue
		}
		removed = true
	}
	if removed {
		if err := fsutil.SyncDir(s.Fs, dir); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// Cleanup removes what crashes left: incomplete snapshots (a directory with no record), the
// remains of a conversion, copies of an interrupted Restore, and objects no snapshot names. It
// returns the ids of the incomplete snapshots it removed. Call it only under the sdupdate lock,
// when no Create or Restore is under way.
func (s *Store) Cleanup() ([]string, error) {
	ids, err := s.ids()
	if err != nil {
		return nil, err
	}
	var removed []string
	var errs []error
	for _, id := range ids {
		gone, err := s.cleanupOne(id)
		if err != nil {
			errs = append(errs, err)
		}
		if gone {
			removed = append(removed, id)
		}
	}
	if err := s.Fs.RemoveAll(filepath.Join(s.Dir, restoringDir)); err != nil {
		errs = append(errs, fmt.Errorf("cannot remove %s: %w", filepath.Join(s.Dir, restoringDir), err))
	}
	if len(removed) > 0 {
		if err := fsutil.SyncDir(s.Fs, s.Dir); err != nil {
			errs = append(errs, err)
		}
	}
	if err := s.collect(); err != nil {
		errs = append(errs, err)
	}
	return removed, errors.Join(errs...)
}

// cleanupOne removes snapshot directory id when it holds no record, or the legacy files left
// beside a record by an interrupted conversion; it reports whether the snapshot was removed.
func (s *Store) cleanupOne(id string) (bool, error) {
	dir := s.snapDir(id)
	has := func(name string) (bool, error) {
		_, err := fsutil.Lstat(s.Fs, filepath.Join(dir, name))
		if errors.Is(err, os.ErrNotExist) {
			return false, nil
		}
		return err == nil, err
	}
	rec, err := has(recordFile)
	if err != nil {
		return false, fmt.Errorf("cannot inspect snapshot %s: %w", id, err)
	}
	legacy, err := has(legacyMetaFile)
	if err != nil {
		return false, fmt.Errorf("cannot inspect snapshot %s: %w", id, err)
	}
	files, err := has(legacyFilesDir)
	if err != nil {
		return false, fmt.Errorf("cannot inspect snapshot %s: %w", id, err)
	}
	switch {
	case rec && (legacy || files):
		return false, s.dropLegacyFiles(dir)
	case rec || legacy:
		return false, nil
	}
	if err := s.Fs.RemoveAll(dir); err != nil {
		return false, fmt.Errorf("cannot remove incomplete snapshot %s: %w", id, err)
	}
	return true, nil
}

// Unshare makes sure that none of the installed files names is the same inode as an object:
// what an interrupted Create leaves when it linked a file the update then never replaced, and
// that deleting its snapshot does not remove because another snapshot names the same content.
// Such an object is replaced by a copy when a snapshot names it, and removed otherwise. Only
// objects with another link are looked at, so with none it costs one listing.
func (s *Store) Unshare(names []string) error {
	dir := filepath.Join(s.Dir, objectsDir)
	linked, err := linkedObjects(s.Fs, dir)
	if err != nil || len(linked) == 0 {
		return err
	}
	refs, err := s.references()
	if err != nil {
		return err
	}
	var errs []error
	for _, n := range names {
		// Names come from the journal: only a plain one, reached through no symlink.
		if checkName(n) != nil {
			continue
		}
		if exists, err := fsutil.CheckPath(s.Fs, s.InstallDir, n); err != nil || !exists {
			continue
		}
		fi, err := fsutil.Lstat(s.Fs, s.installPath(n))
		if err != nil {
			continue
		}
		for sum, ofi := range linked {
			if !os.SameFile(fi, ofi) {
				continue
			}
			if err := s.unshareOne(dir, sum, refs[sum] > 0); err != nil {
				errs = append(errs, err)
			}
		}
	}
	if err := fsutil.SyncDir(s.Fs, dir); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// linkedObjects returns the objects in dir that have more than one link, by sha256.
func linkedObjects(fsys afero.Fs, dir string) (map[string]os.FileInfo, error) {
	entries, err := afero.ReadDir(fsys, dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("cannot list %s: %w", dir, err)
	}
	out := map[string]os.FileInfo{}
	for _, e := range entries {
		if st, ok := e.Sys().(*syscall.Stat_t); ok && st.Nlink > 1 && e.Mode().IsRegular() && checkSum(e.Name()) == nil {
			out[e.Name()] = e
		}
	}
	return out, nil
}

// unshareOne gives object sum an inode of its own (a verified copy) when it is needed, and
// removes it otherwise.
func (s *Store) unshareOne(dir, sum string, needed bool) error {
	obj := filepath.Join(dir, sum)
	if !needed {
		if err := s.Fs.Remove(obj); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("cannot remove object %s: %w", obj, err)
		}
		return nil
	}
	tmp := fsutil.TempName(dir, "object")
	got, _, err := fsutil.CopyFile(s.Fs, obj, tmp, fsutil.Attrs{Mode: 0o600})
	if err == nil && got != sum {
		err = fmt.Errorf("object %s changed while it was shared with the install (it now holds %s): %w", obj, got, ErrCorrupt)
	}
	if err == nil {
		err = s.Fs.Rename(tmp, obj)
	}
	if err != nil {
		_ = s.Fs.Remove(tmp)
		return fmt.Errorf("cannot give object %s an inode of its own: %w", obj, err)
	}
	return nil
}
