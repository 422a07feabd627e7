package snapshot

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/spf13/afero"

	"github.com/sdupdate/sdupdate/fsutil"
)

// Delete removes snapshot id, complete or not, then every object no remaining snapshot names.
// The record goes first (and that is synced), so a crash halfway leaves an incomplete snapshot,
// never one that looks whole but lacks objects.
func (s *Store) Delete(id string) error {
	_, err := s.DeleteSome(nil, []string{id})
	return err
}

// DeleteSome removes snapshots ids, as Delete does, then every object none of the others names,
// once for all of them. The others' records are read at most once, and not at all when c, a
// Catalog of this store read since any record in it was written, already holds them. It returns
// the ids it removed; the error names each one it could not remove, and the others still go.
//
// Steps: make Dir/collect-pending durable; delete each record, then its directory; remove the
// objects no remaining record names; remove the marker. A crash at any point leaves every
// object a kept record names, and the marker, so the next Cleanup collects what is left over.
func (s *Store) DeleteSome(c *Catalog, ids []string) ([]string, error) {
	var found []string
	var errs []error
	for _, id := range ids {
		if err := s.checkSnapshotDir(id); err != nil {
			errs = append(errs, err)
			continue
		}
		found = append(found, id)
	}
	if len(found) == 0 {
		return nil, errors.Join(errs...)
	}
	if _, err := s.markPending(); err != nil {
		return nil, errors.Join(append(errs, fmt.Errorf("cannot delete snapshots %s: %w", strings.Join(found, ", "), err))...)
	}
	var removed []string
	for _, id := range found {
		if err := s.deleteRecord(id); err != nil {
			errs = append(errs, err)
			continue
		}
		removed = append(removed, id)
	}
	if len(removed) == 0 {
		return nil, errors.Join(errs...)
	}
	if err := s.collect(c); err != nil {
		errs = append(errs, fmt.Errorf("snapshot %s deleted, but: %w", strings.Join(removed, ", "), err))
	} else {
		// Every object is named again, whatever change had left the marker.
		s.clearPending()
	}
	return removed, errors.Join(errs...)
}

// checkSnapshotDir refuses an id that names no snapshot directory.
func (s *Store) checkSnapshotDir(id string) error {
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
	return nil
}

// deleteRecord removes snapshot id, whose directory checkSnapshotDir found: its record first.
func (s *Store) deleteRecord(id string) error {
	dir := s.snapDir(id)
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
// left among the objects. What each snapshot names comes from c when it holds that snapshot
// (c may be nil), else from its record, read once. It removes nothing when a snapshot cannot be
// read. Call it only under the sdupdate lock: a Create running meanwhile has objects its record
// does not name yet.
func (s *Store) collect(c *Catalog) error {
	needed, err := s.needed(c)
	if err != nil {
		return fmt.Errorf("cannot tell which objects are still needed, so none was removed: %w", err)
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
		if _, ok := needed[e.Name()]; ok || (checkSum(e.Name()) != nil && !fsutil.IsTempName(e.Name())) {
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

// needed returns the objects some complete snapshot names, from c where it holds the snapshot.
func (s *Store) needed(c *Catalog) (map[string]struct{}, error) {
	ids, err := s.ids()
	if err != nil {
		return nil, err
	}
	needed := map[string]struct{}{}
	var errs []error
	for _, id := range ids {
		objs, ok := c.objectsOf(id)
		if !ok {
			e, err := s.readEntry(id)
			if errors.Is(err, os.ErrNotExist) {
				continue // incomplete: its objects are named by no record
			}
			if err != nil {
				errs = append(errs, err)
				continue
			}
			objs = e.objects
		}
		for _, o := range objs {
			needed[o] = struct{}{}
		}
	}
	return needed, errors.Join(errs...)
}

// markPending makes Dir/collect-pending durable before objects are added or removed. It
// reports whether the marker was there already: an earlier change was cut short, or its
// collect failed, and a collect is still owed.
func (s *Store) markPending() (bool, error) {
	p := filepath.Join(s.Dir, pendingFile)
	if _, err := fsutil.Lstat(s.Fs, p); err == nil {
		return true, nil
	}
	f, err := s.Fs.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return false, fmt.Errorf("cannot create %s: %w", p, err)
	}
	_, err = f.WriteString("objects are being added or removed; if this stays, a crash cut that short and the next sdupdate command removes the objects no snapshot names\n")
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = fsutil.SyncDir(s.Fs, s.Dir)
	}
	if err != nil {
		return false, fmt.Errorf("cannot write %s: %w", p, err)
	}
	return false, nil
}

// clearPending removes the marker once every object is named. Failing costs the next Cleanup a
// collect, nothing more, so the error is dropped; nor is the removal synced.
func (s *Store) clearPending() {
	_ = s.Fs.Remove(filepath.Join(s.Dir, pendingFile))
}

// collectOwed reports whether a change was cut short (or its collect failed): the marker is
// there, or cannot be looked at.
func (s *Store) collectOwed() bool {
	_, err := fsutil.Lstat(s.Fs, filepath.Join(s.Dir, pendingFile))
	return !errors.Is(err, os.ErrNotExist)
}

// Cleanup removes what crashes left: incomplete snapshots (a directory with no record), the
// remains of a conversion, copies of an interrupted Restore, and objects no snapshot names —
// looked for only when the collect-pending marker (or an incomplete snapshot) says a change of
// the objects was cut short, so that after a run that was not, no record is read. It returns
// the ids of the incomplete snapshots it removed. Call it only under the sdupdate lock, when no
// Create or Restore is under way.
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
	if len(removed) > 0 || s.collectOwed() {
		if err := s.collect(nil); err != nil {
			errs = append(errs, err)
		} else {
			s.clearPending()
		}
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
	refs, err := s.references("")
	if err != nil {
		return err
	}
	// A copy is made under a temporary name among the objects: a crash leaves it for Cleanup.
	owed, err := s.markPending()
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
	if len(errs) == 0 && !owed {
		s.clearPending()
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
