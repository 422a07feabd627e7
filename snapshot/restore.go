package snapshot

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"sort"

	"github.com/spf13/afero"

	"github.com/sdupdate/sdupdate/fsutil"
)

// Restore makes the install directory hold exactly snapshot id's managed files. current names
// the files the currently installed manifest lists; those not in the snapshot are removed, with
// the directories their removal leaves empty (never InstallDir itself, never a directory that
// still holds anything). Files neither list names (config, logs, caches) are never touched. The
// snapshot's manifest is not written anywhere: the caller puts Get(id).Manifest back as the
// installed manifest once Restore succeeds.
//
// Steps:
//  1. check every path (no symlink, nothing in the way that is not ours to remove) and re-hash
//     the whole snapshot — a failure here, ErrCorrupt included, leaves the install untouched;
//  2. remove leftover temporary files of an interrupted earlier run (".sdupdate-<hex>-<name>"
//     beside a managed name);
//  3. remove the names in current that are not in the snapshot, then the directories emptied;
//  4. put back each snapshot file: link (or copy) it to a temporary name beside its target,
//     check its sha256 once more, set mode and owner, rename it over the target;
//  5. fsync every directory touched.
//
// Every step converges, so a crash (or a cancelled ctx, checked between files) at any point
// followed by another Restore ends in the same tree.
func (s *Store) Restore(ctx context.Context, id string, current []string) error {
	m, err := s.Get(id)
	if err != nil {
		return fmt.Errorf("cannot restore: %w", err)
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("cannot restore snapshot %s: %w", id, err)
	}
	current, err = cleanNames(current)
	if err != nil {
		return fmt.Errorf("cannot restore snapshot %s: %w", id, err)
	}
	p := newRestorePlan(m, current)
	if err := s.precheck(p); err != nil {
		return fmt.Errorf("cannot restore snapshot %s, install left unchanged: %w", id, err)
	}
	if err := s.verifyFiles(ctx, m); err != nil {
		return fmt.Errorf("cannot restore snapshot %s, install left unchanged: %w", id, err)
	}

	touched := map[string]bool{}
	err = s.applyRestore(ctx, p, touched)
	// Sync even after a failure: what did change should be durable, so that the next Restore
	// starts from what is really on disk.
	serr := fsutil.SyncDirs(s.Fs, touched)
	if err != nil {
		return fmt.Errorf("cannot restore snapshot %s (run the restore again; it resumes): %w", id, err)
	}
	if serr != nil {
		return fmt.Errorf("cannot restore snapshot %s: %w", id, serr)
	}
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

func (s *Store) applyRestore(ctx context.Context, p *restorePlan, touched map[string]bool) error {
	if err := s.removeStaleTemps(p, touched); err != nil {
		return err
	}
	for _, n := range p.removing {
		if err := s.removeName(n, p.keepDirs, touched); err != nil {
			return err
		}
	}
	for _, f := range p.meta.Files {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := s.place(p.meta, f, touched); err != nil {
			return err
		}
	}
	return nil
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

// place puts snapshot file f back at its target: linked (or copied) to a temporary name in the
// target's directory, checked against the recorded sha256 before it replaces anything, given
// its mode and owner, renamed over the target.
func (s *Store) place(m *Meta, f FileMeta, touched map[string]bool) error {
	target := s.installPath(f.Name)
	dir := filepath.Dir(target)
	if err := s.makeWay(f.Name, touched); err != nil {
		return err
	}
	exists, err := fsutil.CheckPath(s.Fs, s.InstallDir, f.Name)
	if err != nil {
		return fmt.Errorf("cannot restore %s: %w", target, err)
	}
	src := s.filePath(m.ID, f.Name)
	if exists && sameFile(s.Fs, src, target) {
		// Already the snapshot's inode (never replaced, or restored before): the bytes are the
		// ones verified, only the attributes may need putting back. Renaming a hard link over
		// another link to the same inode would do nothing and leave the temporary name behind.
		return setAttrs(s.Fs, target, f)
	}

	tmp := fsutil.TempName(dir, target)
	if err := fsutil.LinkOrCopy(s.Fs, src, tmp, f.Mode); err != nil {
		return fmt.Errorf("cannot restore %s: %w", target, err)
	}
	committed := false
	defer func() {
		if !committed {
			_ = s.Fs.Remove(tmp)
		}
	}()
	touched[dir] = true
	sum, size, err := fsutil.HashFile(s.Fs, tmp)
	if err != nil {
		return fmt.Errorf("cannot restore %s: %w", target, err)
	}
	if sum != f.SHA256 || size != f.Size {
		return fmt.Errorf("cannot restore %s: snapshot %s holds %s with sha256 %s (%d bytes), recorded %s (%d bytes); the installed file was left as it was: %w",
			target, m.ID, src, sum, size, f.SHA256, f.Size, ErrCorrupt)
	}
	if err := setAttrs(s.Fs, tmp, f); err != nil {
		return fmt.Errorf("cannot restore %s: %w", target, err)
	}
	if err := s.Fs.Rename(tmp, target); err != nil {
		return fmt.Errorf("cannot restore %s: cannot rename %s over it: %w", target, tmp, err)
	}
	committed = true
	// POSIX rename between two links to one inode succeeds doing nothing; never leave the
	// temporary name behind.
	if _, err := fsutil.Lstat(s.Fs, tmp); err == nil {
		if err := s.Fs.Remove(tmp); err != nil {
			return fmt.Errorf("cannot remove %s: %w", tmp, err)
		}
	}
	return nil
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

// setAttrs gives p the recorded owner (when known) and mode. The owner goes first because
// changing it may clear mode bits.
func setAttrs(fsys afero.Fs, p string, f FileMeta) error {
	fi, err := fsutil.Lstat(fsys, p)
	if err != nil {
		return fmt.Errorf("cannot inspect %s: %w", p, err)
	}
	if f.UID >= 0 && f.GID >= 0 {
		uid, gid, ok := fsutil.Owner(fi)
		if !ok || uid != f.UID || gid != f.GID {
			if err := fsutil.Chown(fsys, p, f.UID, f.GID); err != nil {
				return err
			}
		}
	}
	if fi.Mode().Perm() != f.Mode {
		if err := fsys.Chmod(p, f.Mode); err != nil {
			return fmt.Errorf("cannot set mode of %s to %04o: %w", p, f.Mode, err)
		}
	}
	return nil
}
