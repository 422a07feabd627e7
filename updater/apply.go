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
	for _, op := range rec.Ops {
		target := filepath.Join(l.install, filepath.FromSlash(op.Name))
		exists, err := fsutil.CheckPath(e.Fs, l.install, op.Name)
		if err != nil {
			return fmt.Errorf("cannot apply %q: %w", op.Name, err)
		}
		if op.Remove {
			if exists {
				if err := e.Fs.Remove(target); err != nil && !errors.Is(err, os.ErrNotExist) {
					return fmt.Errorf("cannot remove %s: %w", target, err)
				}
			}
			touched[filepath.Dir(target)] = true
			continue
		}
		dir := filepath.Dir(target)
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
		touched[dir] = true
	}
	for _, op := range rec.Ops {
		if !op.Remove {
			continue
		}
		// A directory holding anything, even an untracked file, stays. One that cannot be
		// removed stays too: the tree is the new one either way.
		if err := fsutil.RemoveEmptyParents(e.Fs, l.install, op.Name, nil, touched); err != nil {
			e.Log.WithError(err).Warnf("cannot remove the directories %q leaves empty", op.Name)
		}
	}
	return fsutil.SyncDirs(e.Fs, touched)
}

func readDirNames(e *Engine, dir string) ([]string, error) {
	f, err := e.Fs.Open(dir)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return f.Readdirnames(-1)
}
