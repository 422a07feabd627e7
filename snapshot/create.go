package snapshot

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"sort"
	"syscall"
	"time"

	"github.com/spf13/afero"

	"github.com/sdupdate/sdupdate/fsutil"
)

// Spec is what Create records.
type Spec struct {
	ID, Version, RunID string
	Manifest           []byte // the installed manifest's exact bytes; nil when none
	// Files is every managed file installed now, as the caller hashed it, with the Stamp taken
	// when it read it. Create reads none of them but those in Leaving.
	Files []FileMeta
	// Leaving names the files of Files that the update replaces or removes: their content
	// enters the store now.
	Leaving []string
}

// Create takes snapshot spec.ID. Its cost is the files leaving, not the install: only they are
// looked at (and hashed again only when their stamp shows a change since the caller hashed
// them, or cannot tell).
//
// Steps:
//  1. check the spec (nothing written yet);
//  2. make Dir/collect-pending durable, then Dir/<id>/ and Dir/objects/;
//  3. per leaving file, checking ctx between files: hard-link it into objects/<sha256> unless
//     that object exists already (a copy, verified while copying, where links are impossible);
//  4. record the owner and mode of every directory holding managed files;
//  5. write the manifest's exact bytes, fsync every directory touched;
//  6. write record.json last, atomically: only now is the snapshot complete; remove
//     Dir/collect-pending, unless an earlier change left it for Cleanup.
//
// On failure the snapshot directory and the objects this call added are removed; if even that
// fails (or the process dies), the snapshot stays incomplete and is never used, and Cleanup
// removes it and every object no record names.
func (s *Store) Create(ctx context.Context, spec Spec) (*Meta, error) {
	m, leaving, err := s.prepare(spec)
	if err != nil {
		return nil, fmt.Errorf("cannot create snapshot %s: %w", spec.ID, err)
	}
	c := &creation{s: s, m: m, sync: map[string]bool{}}
	if err := c.run(ctx, leaving, spec.Manifest); err != nil {
		// The marker stays: should undo miss an object, Cleanup collects it.
		c.undo()
		return nil, fmt.Errorf("cannot create snapshot %s: %w", spec.ID, err)
	}
	if !c.owed {
		s.clearPending()
	}
	if len(spec.Manifest) > 0 {
		m.Manifest = append([]byte(nil), spec.Manifest...)
	}
	return m, nil
}

// prepare checks spec and returns the record to write, with the indexes of the leaving files.
func (s *Store) prepare(spec Spec) (*Meta, []int, error) {
	if err := checkID(spec.ID); err != nil {
		return nil, nil, err
	}
	m := &Meta{Format: recordFormat, ID: spec.ID, Version: spec.Version, Created: s.now().UTC(), RunID: spec.RunID,
		Files: append([]FileMeta{}, spec.Files...)}
	sort.Slice(m.Files, func(i, j int) bool { return m.Files[i].Name < m.Files[j].Name })
	index := make(map[string]int, len(m.Files))
	for i := range m.Files {
		m.Files[i].Stored = false
		m.Bytes += m.Files[i].Size
		index[m.Files[i].Name] = i
	}
	if err := checkMeta(spec.ID, m); err != nil {
		return nil, nil, err
	}
	var leaving []int
	for _, n := range spec.Leaving {
		i, ok := index[n]
		if !ok {
			return nil, nil, fmt.Errorf("%q leaves the install but is not one of the snapshot's files", n)
		}
		leaving = append(leaving, i)
	}
	return m, leaving, nil
}

// creation is one Create in progress.
type creation struct {
	s       *Store
	m       *Meta
	sync    map[string]bool // directories to fsync
	added   []string        // objects this creation made
	snapDir string          // set once made: removed on failure
	owed    bool            // the marker was there before: an earlier change's collect is owed
}

func (c *creation) run(ctx context.Context, leaving []int, manifest []byte) error {
	s := c.s
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := c.ensureDir(s.Dir); err != nil {
		return err
	}
	// Made durable before the first object is linked, so that a crash from now on is
	// followed by a collect.
	var err error
	if c.owed, err = s.markPending(); err != nil {
		return err
	}
	if err := c.makeSnapDir(); err != nil {
		return err
	}
	if err := c.ensureDir(filepath.Join(s.Dir, objectsDir)); err != nil {
		return err
	}
	for _, i := range leaving {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := c.retire(&c.m.Files[i]); err != nil {
			return err
		}
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	c.recordDirs()
	syncer := fsutil.NewSyncer()
	if len(manifest) > 0 {
		sum := sha256.Sum256(manifest)
		c.m.ManifestSHA256 = hex.EncodeToString(sum[:])
		if err := c.writeManifest(manifest, syncer); err != nil {
			_ = syncer.Wait()
			return err
		}
	}
	// Links and new directories only exist once the directories holding them are synced; the
	// manifest's own fsync runs meanwhile.
	err = fsutil.SyncDirs(s.Fs, c.sync)
	if serr := syncer.Wait(); err == nil {
		err = serr
	}
	if err != nil {
		return err
	}
	return s.writeRecord(c.m)
}

// writeManifest writes the manifest's exact bytes into the new snapshot's directory and hands
// the file to syncer. It needs no temporary file and no fsync of its own for the directory:
// until record.json is written the snapshot is incomplete and never read (Cleanup or the next
// Create of its id removes it whole), the directory is among those run syncs before the record,
// and a reader checks the manifest against the sha256 the record gives.
func (c *creation) writeManifest(manifest []byte, syncer *fsutil.Syncer) error {
	w, err := fsutil.CreateUnhashed(c.s.Fs, filepath.Join(c.snapDir, manifestFile))
	if err != nil {
		return err
	}
	defer w.Close()
	if _, err := w.Write(manifest); err != nil {
		return err
	}
	return w.CommitVia(fsutil.Attrs{Mode: 0o600}, syncer)
}

// writeRecord replaces m's record.json atomically (manifest kept apart, see Meta).
func (s *Store) writeRecord(m *Meta) error {
	m.Format, m.Legacy = recordFormat, false
	data, err := encodeRecord(m)
	if err != nil {
		return fmt.Errorf("cannot encode the record of snapshot %s: %w", m.ID, err)
	}
	return fsutil.WriteFileAtomic(s.Fs, filepath.Join(s.snapDir(m.ID), recordFile), data, 0o600)
}

// ensureDir makes the store's directory p (0700) if it is missing, with its parents: it is our
// own state path, so a symlink on the way is the operator's choice and is followed.
func (c *creation) ensureDir(p string) error {
	created, err := fsutil.MkdirAll(c.s.Fs, p, 0o700)
	for _, d := range created {
		c.sync[d], c.sync[filepath.Dir(d)] = true, true
	}
	return err
}

func (c *creation) makeSnapDir() error {
	s := c.s
	dir := s.snapDir(c.m.ID)
	if _, err := fsutil.Lstat(s.Fs, dir); err == nil {
		for _, f := range []string{recordFile, legacyMetaFile} {
			if _, err := fsutil.Lstat(s.Fs, filepath.Join(dir, f)); err == nil {
				return ErrExists
			}
		}
		// Left by an interrupted Create of the same id: incomplete, so never used; start over.
		if err := s.Fs.RemoveAll(dir); err != nil {
			return fmt.Errorf("cannot remove incomplete snapshot %s: %w", dir, err)
		}
	}
	if err := fsutil.Mkdir(s.Fs, dir, 0o700); err != nil {
		return err
	}
	c.snapDir = dir
	c.sync[dir], c.sync[s.Dir] = true, true
	return nil
}

// retire puts the content of the leaving file f into the store. The file is hashed again only
// when its stamp does not show it unchanged since the caller hashed it; f is updated to what
// the store then holds.
func (c *creation) retire(f *FileMeta) error {
	s := c.s
	exists, err := fsutil.CheckPath(s.Fs, s.InstallDir, f.Name)
	if err != nil {
		return err
	}
	src := s.installPath(f.Name)
	if !exists {
		return fmt.Errorf("%s disappeared while the update ran", src)
	}
	fi, err := fsutil.Lstat(s.Fs, src)
	if err != nil {
		return fmt.Errorf("cannot inspect %s: %w", src, err)
	}
	if !f.Stamp.Unchanged(fi) {
		if err := describe(s.Fs, src, fi, f); err != nil {
			return err
		}
	}
	f.Stored = true
	obj := s.objectPath(f.SHA256)
	if ofi, err := fsutil.Lstat(s.Fs, obj); err == nil && ofi.Mode().IsRegular() && ofi.Size() == f.Size {
		return nil // stored once already, by this snapshot or an older one
	}
	// A wrong-sized leftover under this name cannot be the content: replace it.
	if err := s.Fs.Remove(obj); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("cannot remove damaged object %s: %w", obj, err)
	}
	err = fsutil.HardLink(s.Fs, src, obj)
	if err == nil {
		c.added = append(c.added, obj)
		c.sync[filepath.Dir(obj)] = true
		return nil
	}
	if !noLink(err) {
		return fmt.Errorf("cannot link %s into the snapshot store as %s: %w", src, obj, err)
	}
	return c.copyIn(src, f)
}

// noLink reports whether err means a hard link is impossible here, so a copy must do.
func noLink(err error) bool {
	return errors.Is(err, fsutil.ErrNoHardLinks) || errors.Is(err, syscall.EXDEV) ||
		errors.Is(err, syscall.EPERM) || errors.Is(err, syscall.EMLINK)
}

// copyIn copies src into the store, named by the sha256 of the bytes copied (which is what the
// record then says the file held).
func (c *creation) copyIn(src string, f *FileMeta) error {
	s := c.s
	dir := filepath.Join(s.Dir, objectsDir)
	tmp := fsutil.TempName(dir, "object")
	sum, size, err := fsutil.CopyFile(s.Fs, src, tmp, fsutil.Attrs{Mode: 0o600})
	if err != nil {
		_ = s.Fs.Remove(tmp)
		return err
	}
	f.SHA256, f.Size = sum, size
	obj := s.objectPath(sum)
	if err := s.Fs.Rename(tmp, obj); err != nil {
		_ = s.Fs.Remove(tmp)
		return fmt.Errorf("cannot rename %s to %s: %w", tmp, obj, err)
	}
	c.added = append(c.added, obj)
	c.sync[dir] = true
	return nil
}

// recordDirs records the owner and mode of every directory above a managed file. A directory
// that is missing or not one is left out: there is nothing of it to restore.
func (c *creation) recordDirs() {
	seen := map[string]bool{}
	for _, f := range c.m.Files {
		for d := path.Dir(f.Name); d != "." && !seen[d]; d = path.Dir(d) {
			seen[d] = true
		}
	}
	names := make([]string, 0, len(seen))
	for d := range seen {
		names = append(names, d)
	}
	sort.Strings(names)
	for _, d := range names {
		fi, err := fsutil.Lstat(c.s.Fs, c.s.installPath(d))
		if err != nil || !fi.IsDir() {
			continue
		}
		dm := DirMeta{Name: d, Mode: fi.Mode().Perm(), UID: -1, GID: -1}
		if uid, gid, ok := fsutil.Owner(fi); ok {
			dm.UID, dm.GID = uid, gid
		}
		c.m.Dirs = append(c.m.Dirs, dm)
	}
}

func (c *creation) undo() {
	if c.snapDir != "" {
		_ = c.s.Fs.RemoveAll(c.snapDir)
	}
	for _, obj := range c.added {
		_ = c.s.Fs.Remove(obj)
	}
}

// Describe hashes the installed file name (a slash path under root) and records it as a
// snapshot's FileMeta, stamp included. It is for callers that have not hashed the file already.
func Describe(fsys afero.Fs, root, name string) (*FileMeta, error) {
	p := filepath.Join(root, filepath.FromSlash(name))
	if exists, err := fsutil.CheckPath(fsys, root, name); err != nil {
		return nil, err
	} else if !exists {
		return nil, fmt.Errorf("cannot describe %s: %w", p, os.ErrNotExist)
	}
	fi, err := fsutil.Lstat(fsys, p)
	if err != nil {
		return nil, fmt.Errorf("cannot inspect %s: %w", p, err)
	}
	f := &FileMeta{Name: name}
	if err := describe(fsys, p, fi, f); err != nil {
		return nil, err
	}
	return f, nil
}

// describe fills f from the file p (whose Lstat is fi): content hash, size, mode, owner, stamp.
func describe(fsys afero.Fs, p string, fi os.FileInfo, f *FileMeta) error {
	taken := time.Now()
	sum, size, err := fsutil.HashFile(fsys, p)
	if err != nil {
		return err
	}
	f.SHA256, f.Size, f.Mode, f.UID, f.GID = sum, size, fi.Mode().Perm(), -1, -1
	if uid, gid, ok := fsutil.Owner(fi); ok {
		f.UID, f.GID = uid, gid
	}
	f.Stamp = StampOf(fi, taken)
	return nil
}

// FileFromInfo records a file the caller hashed itself (sha256 and size of the bytes it read)
// as a snapshot's FileMeta; fi is the file's stat taken when it opened it, at taken.
func FileFromInfo(name, sum string, size int64, fi os.FileInfo, taken time.Time) FileMeta {
	f := FileMeta{Name: name, SHA256: sum, Size: size, Mode: fi.Mode().Perm(), UID: -1, GID: -1, Stamp: StampOf(fi, taken)}
	if uid, gid, ok := fsutil.Owner(fi); ok {
		f.UID, f.GID = uid, gid
	}
	if size != fi.Size() {
		f.Stamp = nil // it changed while it was read
	}
	return f
}
