package updater

import (
	"errors"
	"fmt"
	"os"
	"path"
	"path/filepath"

	"github.com/sdupdate/sdupdate/fsutil"
)

// apply renames every staged file into place and removes the files the new manifest dropped,
// then fsyncs every directory it touched. It does not look at ctx: once started it runs to the
// end so the tree is consistent (a signal is acted on after it). Each step can be redone, and a
// crash inside it is undone by restoring the snapshot (see recover.go).
func (e *Engine) apply(l *layout, rec *Record) error {
	touched := map[string]bool{}
	// Dropped files go first, so that a file the new version replaces with a directory (or a
	// directory of dropped files it replaces with a file) is out of the way; a directory a new
	// file needs is kept, with its owner and mode, even when it is empty for a moment.
	needed := map[string]bool{}
	for _, op := range rec.Ops {
		if !op.Remove {
			for d := path.Dir(op.Name); d != "."; d = path.Dir(d) {
				needed[d] = true
			}
		}
	}
	for _, op := range rec.Ops {
		if op.Remove {
			if err := e.applyRemove(l, op.Name, needed, touched); err != nil {
				return err
			}
		}
	}
	for _, op := range rec.Ops {
		if op.Remove {
			continue
		}
		target := filepath.Join(l.install, filepath.FromSlash(op.Name))
		if _, err := fsutil.CheckPath(e.Fs, l.install, op.Name); err != nil {
			return fmt.Errorf("cannot apply %q: %w", op.Name, err)
		}
		created, err := fsutil.MkdirsUnder(e.Fs, l.install, path.Dir(op.Name), 0o755)
		for _, d := range created {
			// A new directory's entry in its parent must be made durable too.
			touched[d], touched[filepath.Dir(d)] = true, true
		}
		if err != nil {
			return fmt.Errorf("cannot create the directory of %q: %w", op.Name, err)
		}
		if err := e.Fs.Rename(op.Staged, target); err != nil {
			return fmt.Errorf("cannot move %s into place as %s: %w", op.Staged, target, err)
		}
		touched[filepath.Dir(target)] = true
	}
	return fsutil.SyncDirs(e.Fs, touched)
}

// applyRemove removes a dropped file and the directories it leaves empty, but not one in keep.
// A directory holding anything, even an untracked file, stays; one that cannot be removed stays
// too (the tree is the new one either way), unless a new file must take its place, which then
// fails at its own step.
func (e *Engine) applyRemove(l *layout, name string, keep, touched map[string]bool) error {
	exists, err := fsutil.CheckPath(e.Fs, l.install, name)
	if err != nil {
		return fmt.Errorf("cannot apply %q: %w", name, err)
	}
	target := filepath.Join(l.install, filepath.FromSlash(name))
	if exists {
		if err := e.Fs.Remove(target); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("cannot remove %s: %w", target, err)
		}
	}
	touched[filepath.Dir(target)] = true
	if err := fsutil.RemoveEmptyParents(e.Fs, l.install, name, keep, touched); err != nil {
		e.Log.WithError(err).Warnf("cannot remove the directories %q leaves empty", name)
	}
	return nil
}

func readDirNames(e *Engine, dir string) ([]string, error) {
	f, err := e.Fs.Open(dir)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return f.Readdirnames(-1)
}
