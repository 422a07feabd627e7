package snapshot

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"sort"
	"syscall"

	"github.com/spf13/afero"

	"github.com/sdupdate/sdupdate/fsutil"
)

// Restored is what a Restore did.
type Restored struct {
	Kept int // files already holding their recorded content, left in place (attributes reset)
	Put  int // files put back from the store
	// BytesCopied is what was read from the store and written to the install.
	BytesCopied int64
	// ModifiedLocally names the files whose recorded content is neither in the store nor in the
	// install: changed in place (or deleted) after the snapshot, not by an update. They are left
	// as they are.
	ModifiedLocally []string
}

// Restore makes the install directory hold snapshot id's managed files. current names the files
// the currently installed manifest lists; those not in the snapshot are removed, with the
// directories their removal leaves empty (never InstallDir itself, never a directory that still
// holds anything). Files neither list names (config, logs, caches) are never touched. The
// snapshot's manifest is not written anywhere: the caller puts Get(id).Manifest back as the
// installed manifest once Restore succeeds. A snapshot of the earlier layout is converted first.
//
// Steps:
//  1. check every path (no symlink, nothing in the way that is not ours to remove);
//  2. decide, per file, where its recorded content is: the installed file when its stamp shows
//     it unchanged (nothing read), else the store's object, else the installed file when hashing
//     it shows the content; else the file is modified locally and stays as it is;
//  3. copy each object to put back into Dir/restoring/, verifying its sha256 while copying, with
//     the file's mode and owner — a failure in steps 1 to 3, ErrCorrupt included, leaves the
//     install untouched;
//  4. remove leftover temporary files of an interrupted earlier run, the names in current that
//     are not in the snapshot, then the directories emptied;
//  5. rename each copy into place; reset the attributes of the files kept and of the recorded
//     directories (made again where needed);
//  6. fsync every directory touched, remove Dir/restoring/.
//
// Every step converges, so a crash at any point followed by another Restore ends in the same
// tree. A restored file is always a copy: it never shares an inode with the store.
func (s *Store) Restore(ctx context.Context, id string, current []string) (*Restored, error) {
	m, err := s.Get(id)
	if err == nil && m.Legacy {
		if err = s.upgrade(m); err == nil {
			m, err = s.Get(id)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("cannot restore: %w", err)
	}
	current, err = cleanNames(current)
	if err != nil {
		return nil, fmt.Errorf("cannot restore snapshot %s: %w", id, err)
	}
	p := newRestorePlan(m, current)
	if err := s.precheck(p); err != nil {
		return nil, fmt.Errorf("cannot restore snapshot %s, install left unchanged: %w", id, err)
	}
	res := &Restored{}
	acts, err := s.decide(ctx, p, res)
	if err == nil {
		err = s.stage(ctx, m, acts, res)
	}
	if err != nil {
		_ = s.Fs.RemoveAll(filepath.Join(s.Dir, restoringDir))
		return nil, fmt.Errorf("cannot restore snapshot %s, install left unchanged: %w", id, err)
	}
	touched := map[string]bool{}
	err = s.applyRestore(p, acts, touched)
	// Sync even after a failure: what did change should be durable, so that the next Restore
	// starts from what is really on disk.
	serr := fsutil.SyncDirs(s.Fs, touched)
	if err != nil {
		return nil, fmt.Errorf("cannot restore snapshot %s (run the restore again; it resumes): %w", id, err)
	}
	if serr != nil {
		return nil, fmt.Errorf("cannot restore snapshot %s: %w", id, serr)
	}
	if err := s.Fs.RemoveAll(filepath.Join(s.Dir, restoringDir)); err != nil {
		return nil, fmt.Errorf("cannot restore snapshot %s: cannot remove %s: %w", id, filepath.Join(s.Dir, restoringDir), err)
	}
	// Best effort: a record still saying "stored" for a file moved back only makes a later
	// restore hash that installed file (and refuse, not report it modified, if it differs).
	_ = s.forgetMoved(m, acts)
	return res, nil
}

// forgetMoved rewrites m's record once the objects moved back are installed files: they are no
// longer in the store, and their old stamps describe other inodes.
func (s *Store) forgetMoved(m *Meta, acts []action) error {
	moved := false
	for i := range m.Files {
		if acts[i] == actMove || acts[i] == actMoved || acts[i] == actUnlink {
			m.Files[i].Stored, m.Files[i].Stamp, moved = false, nil, true
		}
	}
	if !moved {
		return nil
	}
	return s.writeRecord(m)
}

// Check does what Restore does before it changes anything, short of copying: it checks the
// paths and finds where each file's content is, so that a rollback can refuse before it starts.
// Only what Restore would then copy is left unverified (it is, while copying).
func (s *Store) Check(ctx context.Context, id string, current []string) error {
	m, err := s.Get(id)
	if err != nil {
		return err
	}
	current, err = cleanNames(current)
	if err != nil {
		return err
	}
	p := newRestorePlan(m, current)
	if err := s.precheck(p); err != nil {
		return err
	}
	if m.Legacy {
		return nil // converted, then decided, by Restore
	}
	_, err = s.decide(ctx, p, &Restored{})
	return err
}

type action int

const (
	actKeep   action = iota // the installed file holds the content
	actPut                  // copy the object back
	actMove                 // move the object back: no other snapshot names it
	actMoved                // the installed file holds the content, moved back by an interrupted restore
	actUnlink               // the installed file is the object's inode: drop the object's name
	actLocal                // modified locally: leave it
)

// decide works out, per file of the snapshot, where its recorded content is. It reads an
// installed file only when its stamp cannot vouch for it and the store has no object for it.
func (s *Store) decide(ctx context.Context, p *restorePlan, res *Restored) ([]action, error) {
	refs, err := s.references(p.meta.ID)
	unknown := 0 // a snapshot that cannot be read may name any object: none is moved then
	if errors.Is(err, ErrCorrupt) && refs != nil {
		unknown, err = 1, nil
	}
	if err != nil {
		return nil, err
	}
	for _, f := range p.meta.Files { // and the snapshot's own files, each
		refs[f.SHA256]++
	}
	acts := make([]action, len(p.meta.Files))
	for i, f := range p.meta.Files {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		if acts[i], err = s.decideOne(f, refs[f.SHA256]+unknown); err != nil {
			return nil, err
		}
		switch acts[i] {
		case actKeep, actMoved, actUnlink:
			res.Kept++
		case actLocal:
			res.ModifiedLocally = append(res.ModifiedLocally, f.Name)
		}
	}
	return acts, nil
}

// decideOne is decide for one file, whose sha256 refs files of all snapshots name.
func (s *Store) decideOne(f FileMeta, refs int) (action, error) {
	target := s.installPath(f.Name)
	k, _, err := inspect(s.Fs, s.InstallDir, f.Name)
	if err != nil {
		return 0, err
	}
	obj := s.objectPath(f.SHA256)
	ofi, oerr := fsutil.Lstat(s.Fs, obj)
	haveObj := oerr == nil && ofi.Mode().IsRegular() && ofi.Size() == f.Size
	if k == fsutil.Regular {
		fi, err := fsutil.Lstat(s.Fs, target)
		if err != nil {
			return 0, fmt.Errorf("cannot inspect %s: %w", target, err)
		}
		switch {
		case haveObj && sameFile(s.Fs, obj, target) && refs == 1:
			// Linked into the store by a Create whose apply never replaced it, and named by
			// this snapshot only: the installed file holds the content; drop the link.
			return actUnlink, nil
		case haveObj && sameFile(s.Fs, obj, target):
			return actPut, nil // a copy gives the install an inode of its own
		case f.Stamp.Unchanged(fi):
			return actKeep, nil
		}
	}
	if haveObj {
		// An object only this file names moves back: no copy, so a full disk does not stop
		// the rollback; the file then is what holds the content, as for one never replaced.
		if refs == 1 {
			return actMove, nil
		}
		return actPut, nil
	}
	if k == fsutil.Regular {
		sum, size, err := fsutil.HashFile(s.Fs, target)
		if err != nil {
			return 0, err
		}
		if sum == f.SHA256 && size == f.Size && f.Stored {
			return actMoved, nil
		}
		if sum == f.SHA256 && size == f.Size {
			return actKeep, nil
		}
	}
	if f.Stored {
		return 0, fmt.Errorf("the store lost the content of %s (object %s is missing): %w", f.Name, obj, ErrCorrupt)
	}
	return actLocal, nil
}

// stagedPath is where step 3 copies the i-th file of a snapshot.
func (s *Store) stagedPath(i int) string {
	return filepath.Join(s.Dir, restoringDir, fmt.Sprintf("%06d", i))
}

// references counts, per sha256, the complete snapshots other than except that name it, from
// their records' objects lines (none is decoded whole). A snapshot that cannot be read counts
// as naming everything: nothing is then moved.
//
// With such a snapshot, the counts of the readable ones come back together with the error
// (wrapping ErrCorrupt), for a caller that can act on "at least this many".
func (s *Store) references(except string) (map[string]int, error) {
	c, err := s.Catalog()
	if c == nil && err != nil {
		return nil, fmt.Errorf("cannot tell which snapshots need which object: %w", err)
	}
	refs := map[string]int{}
	for id, objs := range c.objects {
		if id == except {
			continue
		}
		for _, o := range objs {
			refs[o]++
		}
	}
	if err != nil {
		return refs, fmt.Errorf("cannot tell which snapshots need which object: %w", err)
	}
	return refs, nil
}

// stage verifies every object to put back: one to copy is copied into Dir/restoring/ and
// verified while copying, one to move is read once in place; each gets its file's attributes.
func (s *Store) stage(ctx context.Context, m *Meta, acts []action, res *Restored) error {
	dir := filepath.Join(s.Dir, restoringDir)
	if err := s.Fs.RemoveAll(dir); err != nil {
		return fmt.Errorf("cannot remove leftover %s: %w", dir, err)
	}
	made := false
	for i, f := range m.Files {
		if acts[i] != actPut && acts[i] != actMove {
			continue
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		if acts[i] == actPut && !made {
			err := fsutil.Mkdir(s.Fs, dir, 0o700)
			if err != nil && !noSpace(err) {
				return err
			}
			made = err == nil
		}
		var size int64
		var err error
		if acts[i] == actPut && made {
			size, err = s.stageOne(f, false, s.stagedPath(i))
		}
		if acts[i] == actPut && (!made || noSpace(err)) {
			// A full disk must not stop the rollback: the object moves back instead of a copy
			// (or only loses its name, when it is the installed inode already). The other
			// snapshots naming it then find that content in the install.
			_ = s.Fs.Remove(s.stagedPath(i))
			acts[i] = actMove
			if sameFile(s.Fs, s.objectPath(f.SHA256), s.installPath(f.Name)) {
				acts[i] = actUnlink
				res.Kept++
				continue
			}
		}
		if acts[i] == actMove {
			size, err = s.stageOne(f, true, "")
		}
		if err != nil {
			return err
		}
		res.Put++
		if acts[i] == actPut {
			res.BytesCopied += size
		}
	}
	if !made {
		return nil
	}
	return fsutil.SyncDir(s.Fs, dir)
}

// noSpace reports whether err means the disk is full, of bytes or of inodes.
func noSpace(err error) bool {
	return errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT)
}

// stageOne verifies the object of f and gives it (moved) or a copy at dst (not moved) the file's
// attributes; it returns the object's size.
func (s *Store) stageOne(f FileMeta, move bool, dst string) (int64, error) {
	obj := s.objectPath(f.SHA256)
	var sum string
	var size int64
	var err error
	if move {
		sum, size, err = fsutil.HashFile(s.Fs, obj)
		if err == nil {
			err = setAttrs(s.Fs, obj, f.Mode, f.UID, f.GID)
		}
	} else {
		attrs := fsutil.Attrs{Mode: f.Mode, Owner: f.UID >= 0 && f.GID >= 0, UID: f.UID, GID: f.GID}
		sum, size, err = fsutil.CopyFile(s.Fs, obj, dst, attrs)
	}
	if err != nil {
		return 0, err
	}
	if sum != f.SHA256 || size != f.Size {
		return 0, fmt.Errorf("object %s holds sha256 %s (%d bytes), recorded %s (%d bytes) for %s: %w", obj, sum, size, f.SHA256, f.Size, f.Name, ErrCorrupt)
	}
	return size, nil
}

func (s *Store) applyRestore(p *restorePlan, acts []action, touched map[string]bool) error {
	if err := s.removeStaleTemps(p, touched); err != nil {
		return err
	}
	for _, n := range p.removing {
		if err := s.removeName(n, p.keepDirs, touched); err != nil {
			return err
		}
	}
	for i, f := range p.meta.Files {
		switch acts[i] {
		case actPut:
			if err := s.place(f, s.stagedPath(i), touched); err != nil {
				return err
			}
		case actMove:
			if err := s.place(f, s.objectPath(f.SHA256), touched); err != nil {
				return err
			}
			touched[filepath.Join(s.Dir, objectsDir)] = true
		case actUnlink:
			obj := s.objectPath(f.SHA256)
			if err := s.Fs.Remove(obj); err != nil && !errors.Is(err, os.ErrNotExist) {
				return fmt.Errorf("cannot remove %s: %w", obj, err)
			}
			touched[filepath.Dir(obj)] = true
			fallthrough
		case actKeep, actMoved:
			if err := setAttrs(s.Fs, s.installPath(f.Name), f.Mode, f.UID, f.GID); err != nil {
				return err
			}
		}
	}
	for _, d := range p.meta.Dirs {
		abs := s.installPath(d.Name)
		if k, _, err := inspect(s.Fs, s.InstallDir, d.Name); err != nil || k != fsutil.Dir {
			continue
		}
		if err := setAttrs(s.Fs, abs, d.Mode, d.UID, d.GID); err != nil {
			return err
		}
	}
	return nil
}

// place renames the verified copy staged over f's target, making way for it first (the
// directories it makes get their recorded owner and mode afterwards).
func (s *Store) place(f FileMeta, staged string, touched map[string]bool) error {
	target := s.installPath(f.Name)
	if err := s.makeWay(f.Name, touched); err != nil {
		return err
	}
	if err := s.Fs.Rename(staged, target); err != nil {
		return fmt.Errorf("cannot restore %s: cannot rename %s over it: %w", target, staged, err)
	}
	touched[filepath.Dir(target)] = true
	return nil
}

// restorePlan is what a Restore must do, worked out from the snapshot and the current names.
type restorePlan struct {
	meta     *Meta
	removing []string        // current names not in the snapshot, sorted
	remove   map[string]bool // the same, as a set
	keepDirs map[string]bool // slash directories that hold snapshot files: never pruned
	bases    map[string]map[string]bool
}

func newRestorePlan(m *Meta, current []string) *restorePlan {
	p := &restorePlan{meta: m, remove: map[string]bool{}, keepDirs: map[string]bool{}, bases: map[string]map[string]bool{}}
	inSnap := make(map[string]bool, len(m.Files))
	addBase := func(name string) {
		d := path.Dir(name)
		if p.bases[d] == nil {
			p.bases[d] = map[string]bool{}
		}
		p.bases[d][path.Base(name)] = true
	}
	for _, f := range m.Files {
		inSnap[f.Name] = true
		addBase(f.Name)
		for d := path.Dir(f.Name); d != "."; d = path.Dir(d) {
			p.keepDirs[d] = true
		}
	}
	for _, n := range current {
		addBase(n)
		if !inSnap[n] {
			p.removing = append(p.removing, n)
			p.remove[n] = true
		}
	}
	return p
}

// inspect is fsutil.Inspect, refusing a special file anywhere on the way: Restore never removes
// or replaces one.
func inspect(fsys afero.Fs, root, name string) (k fsutil.Kind, blocker string, err error) {
	k, blocker, err = fsutil.Inspect(fsys, root, name)
	if err == nil && k == fsutil.Special {
		return k, "", fmt.Errorf("%s is neither a regular file nor a directory: %w", filepath.Join(root, filepath.FromSlash(blocker)), fsutil.ErrUnsafePath)
	}
	return k, blocker, err
}

// precheck refuses, before anything changes, every path Restore could not finish on: a symlink
// on the way to any name, a current name that is a directory, a file (not ours to remove) where
// a snapshot file needs a directory, or a directory holding untracked files where a snapshot
// file must go.
func (s *Store) precheck(p *restorePlan) error {
	for _, n := range p.removing {
		k, _, err := inspect(s.Fs, s.InstallDir, n)
		if err != nil {
			return err
		}
		if k == fsutil.Dir {
			return fmt.Errorf("%s is a directory, but the installed manifest lists it as a file: %w", s.installPath(n), fsutil.ErrUnsafePath)
		}
	}
	for _, f := range p.meta.Files {
		k, blocker, err := inspect(s.Fs, s.InstallDir, f.Name)
		if err != nil {
			return err
		}
		if blocker != "" && !p.remove[blocker] {
			return fmt.Errorf("%s is a file no manifest lists, but %s needs it to be a directory: %w", s.installPath(blocker), f.Name, fsutil.ErrUnsafePath)
		}
		if k == fsutil.Dir {
			if err := s.onlyOurs(p, f.Name); err != nil {
				return err
			}
		}
	}
	return nil
}

// onlyOurs checks that the directory dir (slash path) holds nothing but files Restore removes
// (and directories), so that it can give way to the snapshot's file of that name.
func (s *Store) onlyOurs(p *restorePlan, dir string) error {
	root := s.installPath(dir)
	return afero.Walk(s.Fs, root, func(abs string, fi os.FileInfo, err error) error {
		if err != nil {
			return fmt.Errorf("cannot inspect %s: %w", abs, err)
		}
		if fi.IsDir() {
			return nil
		}
		rel, rerr := filepath.Rel(s.InstallDir, abs)
		if rerr != nil {
			return fmt.Errorf("cannot inspect %s: %w", abs, rerr)
		}
		rel = filepath.ToSlash(rel)
		if fi.Mode().IsRegular() && (p.remove[rel] || isStaleTemp(path.Base(rel), p.bases[path.Dir(rel)])) {
			return nil
		}
		return fmt.Errorf("%s must become the file %s, but it is a directory holding %s, which no manifest lists: %w",
			root, dir, abs, fsutil.ErrUnsafePath)
	})
}

// isStaleTemp reports whether base is a temporary file made for one of the managed names in
// bases (all in one directory).
func isStaleTemp(base string, bases map[string]bool) bool {
	b, ok := fsutil.TempBase(base)
	return ok && bases[b]
}

// removeStaleTemps removes temporary files left beside managed names by an interrupted Restore
// or apply. They are ours (named by fsutil.TempName after a managed name), and leaving them would
// make a resumed Restore end in a different tree than an uninterrupted one.
func (s *Store) removeStaleTemps(p *restorePlan, touched map[string]bool) error {
	dirs := make([]string, 0, len(p.bases))
	for d := range p.bases {
		dirs = append(dirs, d)
	}
	sort.Strings(dirs)
	for _, d := range dirs {
		abs := s.InstallDir
		if d != "." {
			k, _, err := inspect(s.Fs, s.InstallDir, d)
			if err != nil {
				return err
			}
			if k != fsutil.Dir {
				continue
			}
			abs = s.installPath(d)
		}
		entries, err := afero.ReadDir(s.Fs, abs)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return fmt.Errorf("cannot list %s: %w", abs, err)
		}
		for _, e := range entries {
			if !e.Mode().IsRegular() || !isStaleTemp(e.Name(), p.bases[d]) {
				continue
			}
			tmp := filepath.Join(abs, e.Name())
			if err := s.Fs.Remove(tmp); err != nil && !errors.Is(err, os.ErrNotExist) {
				return fmt.Errorf("cannot remove leftover %s: %w", tmp, err)
			}
			touched[abs] = true
		}
	}
	return nil
}

// removeName removes the managed file name if it exists, then every directory above it that is
// left empty, up to (not including) InstallDir or a directory a snapshot file needs. The
// directories are pruned even when the file is already gone, so that a Restore resumed after a
// crash between the two still prunes them.
func (s *Store) removeName(name string, keepDirs, touched map[string]bool) error {
	k, _, err := inspect(s.Fs, s.InstallDir, name)
	if err != nil {
		return err
	}
	target := s.installPath(name)
	switch k {
	case fsutil.Dir:
		return fmt.Errorf("cannot remove %s: it is a directory, but the installed manifest lists it as a file", target)
	case fsutil.Regular:
		if err := s.Fs.Remove(target); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("cannot remove %s: %w", target, err)
		}
		touched[filepath.Dir(target)] = true
	}
	return fsutil.RemoveEmptyParents(s.Fs, s.InstallDir, name, keepDirs, touched)
}

// makeWay readies the install for the file name: an empty directory in its place goes (precheck
// refused one that is not empty), and its missing directories are made.
func (s *Store) makeWay(name string, touched map[string]bool) error {
	target := s.installPath(name)
	k, blocker, err := inspect(s.Fs, s.InstallDir, name)
	if err != nil {
		return err
	}
	if blocker != "" {
		return fmt.Errorf("cannot restore %s: %s is a file where a directory must be: %w", target, s.installPath(blocker), fsutil.ErrUnsafePath)
	}
	if k == fsutil.Dir {
		gone, err := fsutil.RemoveIfEmptyDir(s.Fs, target)
		if err != nil {
			return err
		}
		if !gone {
			return fmt.Errorf("cannot restore %s: a directory that is not empty is in the way: %w", target, fsutil.ErrUnsafePath)
		}
		touched[filepath.Dir(target)] = true
	}
	created, err := fsutil.MkdirsUnder(s.Fs, s.InstallDir, path.Dir(name), 0o755)
	for _, d := range created {
		touched[d] = true
		touched[filepath.Dir(d)] = true
	}
	if err != nil {
		return fmt.Errorf("cannot restore %s: %w", target, err)
	}
	return nil
}

func sameFile(fsys afero.Fs, a, b string) bool {
	fa, err := fsutil.Lstat(fsys, a)
	if err != nil {
		return false
	}
	fb, err := fsutil.Lstat(fsys, b)
	if err != nil {
		return false
	}
	return os.SameFile(fa, fb)
}

// setAttrs gives p the owner uid:gid (when known, >= 0) and the mode. The owner goes first
// because changing it may clear mode bits. A non-root sdupdate cannot give files away; it then
// keeps the owner it has (see fsutil.Chown).
func setAttrs(fsys afero.Fs, p string, mode os.FileMode, uid, gid int) error {
	fi, err := fsutil.Lstat(fsys, p)
	if err != nil {
		return fmt.Errorf("cannot inspect %s: %w", p, err)
	}
	if uid >= 0 && gid >= 0 {
		have, hgid, ok := fsutil.Owner(fi)
		if !ok || have != uid || hgid != gid {
			if err := fsutil.Chown(fsys, p, uid, gid); err != nil {
				return err
			}
		}
	}
	if fi.Mode().Perm() != mode {
		if err := fsys.Chmod(p, mode|(fi.Mode()&os.ModeDir)); err != nil {
			return fmt.Errorf("cannot set mode of %s to %04o: %w", p, mode, err)
		}
	}
	return nil
}
