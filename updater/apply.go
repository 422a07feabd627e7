package updater

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

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
		if err := e.mkdirs(l.install, dir, touched); err != nil {
			return err
		}
		if err := e.Fs.Rename(op.Staged, target); err != nil {
			return fmt.Errorf("cannot move %s into place as %s: %w", op.Staged, target, err)
		}
		touched[dir] = true
	}
	for _, op := range rec.Ops {
		if op.Remove {
			e.removeEmptyParents(l.install, filepath.Join(l.install, filepath.FromSlash(op.Name)), touched)
		}
	}
	return e.syncDirs(touched)
}

// mkdirs creates dir and its missing parents inside root as real directories, recording each
// one created so its parent is fsynced too.
func (e *Engine) mkdirs(root, dir string, touched map[string]bool) error {
	if _, err := e.Fs.Stat(dir); err == nil {
		return nil
	}
	rel, err := filepath.Rel(root, dir)
	if err != nil || rel == "." || strings.HasPrefix(rel, "..") {
		return fmt.Errorf("directory %s is not inside %s", dir, root)
	}
	cur := root
	for _, part := range strings.Split(rel, string(filepath.Separator)) {
		parent := cur
		cur = filepath.Join(cur, part)
		if _, err := fsutil.Lstat(e.Fs, cur); err == nil {
			continue
		}
		if err := e.Fs.Mkdir(cur, 0o755); err != nil && !errors.Is(err, os.ErrExist) {
			return fmt.Errorf("cannot create directory %s: %w", cur, err)
		}
		touched[parent] = true
		touched[cur] = true
	}
	return nil
}

// removeEmptyParents removes the directories a removed file leaves empty, up to root. A
// directory holding anything, even an untracked file, stays.
func (e *Engine) removeEmptyParents(root, path string, touched map[string]bool) {
	for dir := filepath.Dir(path); dir != root && strings.HasPrefix(dir, root+string(filepath.Separator)); dir = filepath.Dir(dir) {
		entries, err := readDirNames(e, dir)
		if err != nil || len(entries) > 0 {
			return
		}
		if err := e.Fs.Remove(dir); err != nil {
			return
		}
		delete(touched, dir)
		touched[filepath.Dir(dir)] = true
	}
}

func readDirNames(e *Engine, dir string) ([]string, error) {
	f, err := e.Fs.Open(dir)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return f.Readdirnames(-1)
}

// syncDirs fsyncs directories deepest first, so a new directory's entry in its parent is
// durable after its own contents are.
func (e *Engine) syncDirs(dirs map[string]bool) error {
	list := make([]string, 0, len(dirs))
	for d := range dirs {
		if _, err := e.Fs.Stat(d); err == nil {
			list = append(list, d)
		}
	}
	sort.Slice(list, func(i, j int) bool { return len(list[i]) > len(list[j]) })
	for _, d := range list {
		if err := fsutil.SyncDir(e.Fs, d); err != nil {
			return err
		}
	}
	return nil
}
