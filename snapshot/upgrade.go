package snapshot

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/sdupdate/sdupdate/fsutil"
)

// The earlier layout kept, per snapshot, <id>/meta.json and <id>/files/<name>: a hard link to
// every managed file, including the ones that stayed in the install (and so changed with them).
const (
	legacyMetaFile = "meta.json"
	legacyFilesDir = "files"
)

// Upgrade converts every snapshot of the earlier layout to the current one and returns their ids.
// It is safe to run again after a crash at any point: until a snapshot's record is written its
// legacy files are untouched, and once it is, they are only leftovers.
func (s *Store) Upgrade() ([]string, error) {
	metas, err := s.legacyRecords()
	var done []string
	var errs []error
	if err != nil {
		errs = append(errs, err)
	}
	for i := range metas {
		if err := s.upgrade(&metas[i]); err != nil {
			errs = append(errs, err)
			continue
		}
		done = append(done, metas[i].ID)
	}
	return done, errors.Join(errs...)
}

// legacyRecords reads the snapshots of the earlier layout, newest first. Every command that takes
// the lock looks for them, so a snapshot of the current layout is told by its record's name
// alone and never read here: reading every record whole would make a run that changes nothing
// cost snapshots × files.
func (s *Store) legacyRecords() ([]Meta, error) {
	metas, err := readEach(s, func(id string) (bool, error) {
		_, err := fsutil.Lstat(s.Fs, filepath.Join(s.snapDir(id), recordFile))
		if err == nil {
			return false, nil
		}
		if errors.Is(err, os.ErrNotExist) {
			return true, nil
		}
		return false, fmt.Errorf("cannot tell the layout of snapshot %s: %w", id, err)
	}, s.readRecord)
	sortNewestFirst(metas, func(m *Meta) (time.Time, string) { return m.Created, m.ID })
	return metas, err
}

// upgrade converts legacy snapshot m. Each linked file that no longer is the installed file has
// left the install: once it hashes to what was recorded, it becomes an object. One that is still
// the installed inode is dropped from the snapshot: its content is the install's, as for any
// snapshot of the current layout. A file whose bytes no longer match was changed in place while
// installed; it is dropped, so a restore leaves that file as modified locally.
func (s *Store) upgrade(m *Meta) error {
	c := &creation{s: s, m: m, sync: map[string]bool{}}
	if err := c.ensureDir(filepath.Join(s.Dir, objectsDir)); err != nil {
		return fmt.Errorf("cannot convert snapshot %s: %w", m.ID, err)
	}
	// A copy into the store may be cut short under a temporary name: Cleanup's to collect.
	var err error
	if c.owed, err = s.markPending(); err != nil {
		return fmt.Errorf("cannot convert snapshot %s: %w", m.ID, err)
	}
	dir := s.snapDir(m.ID)
	for i := range m.Files {
		if err := c.adopt(dir, &m.Files[i]); err != nil {
			return fmt.Errorf("cannot convert snapshot %s: %w", m.ID, err)
		}
	}
	if err := fsutil.SyncDirs(s.Fs, c.sync); err != nil {
		return fmt.Errorf("cannot convert snapshot %s: %w", m.ID, err)
	}
	if err := s.writeRecord(m); err != nil {
		return fmt.Errorf("cannot convert snapshot %s: %w", m.ID, err)
	}
	if !c.owed {
		s.clearPending()
	}
	if err := s.dropLegacyFiles(dir); err != nil {
		return fmt.Errorf("snapshot %s converted, but: %w", m.ID, err)
	}
	return nil
}

// adopt moves the legacy copy of f into the objects when it has left the install.
func (c *creation) adopt(dir string, f *FileMeta) error {
	s := c.s
	p := filepath.Join(dir, legacyFilesDir, filepath.FromSlash(f.Name))
	fi, err := fsutil.Lstat(s.Fs, p)
	if err != nil || !fi.Mode().IsRegular() {
		return nil // nothing kept for it
	}
	if sameFile(s.Fs, p, s.installPath(f.Name)) {
		return nil
	}
	obj := s.objectPath(f.SHA256)
	if ofi, err := fsutil.Lstat(s.Fs, obj); err == nil && ofi.Mode().IsRegular() && ofi.Size() == f.Size {
		f.Stored = true
		return nil
	}
	sum, size, err := fsutil.HashFile(s.Fs, p)
	if err != nil {
		return err
	}
	if sum != f.SHA256 || size != f.Size {
		return nil
	}
	if err := s.Fs.Remove(obj); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("cannot remove damaged object %s: %w", obj, err)
	}
	err = fsutil.HardLink(s.Fs, p, obj)
	switch {
	case err == nil:
		c.sync[filepath.Dir(obj)] = true
	case noLink(err):
		// No links: the legacy copy was a copy too, so a second one costs what the first did.
		if err := c.copyIn(p, f); err != nil {
			return err
		}
	default:
		return fmt.Errorf("cannot link %s into the snapshot store: %w", p, err)
	}
	f.Stored = f.SHA256 == sum
	return nil
}

// dropLegacyFiles removes a converted snapshot's legacy meta.json and files/: meta.json first,
// so that no crash leaves something that reads as a legacy snapshot missing files.
func (s *Store) dropLegacyFiles(dir string) error {
	if err := s.Fs.Remove(filepath.Join(dir, legacyMetaFile)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("cannot remove %s: %w", filepath.Join(dir, legacyMetaFile), err)
	}
	if err := s.Fs.RemoveAll(filepath.Join(dir, legacyFilesDir)); err != nil {
		return fmt.Errorf("cannot remove %s: %w", filepath.Join(dir, legacyFilesDir), err)
	}
	return nil
}
