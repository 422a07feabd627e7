package updater

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"

	"github.com/sdupdate/sdupdate/fsutil"
	"github.com/sdupdate/sdupdate/manifest"
	"github.com/sdupdate/sdupdate/snapshot"
	"github.com/sdupdate/sdupdate/statindex"
)

// Snapshots and staging areas can be in two places: StateDirectory, or Directory/.sdupdate when
// a rename from StateDirectory into the install fails (another filesystem, or another mount of
// the same one, as systemd's ReadWritePaths= makes). Which one works can differ between a run
// under the unit and one from a shell, so new ones go where renames work now, and every lookup
// reads both.

// snapshotDirs lists the existing snapshot directories, the one in use first.
func (e *Engine) snapshotDirs(l *layout) []string {
	dirs := []string{l.snapshots}
	for _, d := range []string{filepath.Join(l.state, "snapshots"), filepath.Join(reservedDir(l), "snapshots")} {
		if d == l.snapshots || !e.trusted(l, d) {
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
	for _, d := range []string{filepath.Join(l.state, "staging"), filepath.Join(reservedDir(l), "staging")} {
		if d != l.staging && e.trusted(l, d) {
			dirs = append(dirs, d)
		}
	}
	return dirs
}

// reservedDir is <Directory>/.sdupdate, where staging and snapshots live when StateDirectory
// cannot rename into the install.
func reservedDir(l *layout) string { return filepath.Join(l.install, manifest.ReservedName) }

// trusted reports whether dir, one of the places staging or snapshots may be, can be read and
// cleaned up: the state directory's are the operator's choice; those under the reserved
// directory must pass checkReserved, and one that does not is left alone, with a warning.
func (e *Engine) trusted(l *layout, dir string) bool {
	if filepath.Dir(dir) != reservedDir(l) {
		return true
	}
	if err := e.checkReserved(l, filepath.Base(dir)); err != nil {
		e.Log.WithError(err).Warnf("ignoring %s", dir)
		return false
	}
	return true
}

// checkReserved refuses <Directory>/.sdupdate, and each of its sub-directories subs, unless it is
// a real directory (not a symlink), the top one owned by this process's user and writable by no
// one else; a path that does not exist yet is fine. The install directory may belong to the
// agent's user: without this, a symlink or a directory planted there would make sdupdate, as
// root, write snapshots into any directory of the machine, or empty one as "stale staging".
func (e *Engine) checkReserved(l *layout, subs ...string) error {
	top := reservedDir(l)
	paths := []string{top}
	for _, s := range subs {
		paths = append(paths, filepath.Join(top, s))
	}
	for i, p := range paths {
		fi, err := fsutil.Lstat(e.Fs, p)
		if errors.Is(err, os.ErrNotExist) {
			if i == 0 {
				return nil
			}
			continue
		}
		if err != nil {
			return fmt.Errorf("cannot inspect %s: %w", p, err)
		}
		if fi.Mode()&os.ModeSymlink != 0 || !fi.IsDir() {
			return fmt.Errorf("%s is a symlink or not a directory; sdupdate keeps its staging files and snapshots there and never follows a symlink out of the install directory (remove it): %w",
				p, fsutil.ErrUnsafePath)
		}
		if i > 0 {
			continue // inside a directory only this user can write to
		}
		if err := fsutil.CheckPrivateDir(e.Fs, p, "sdupdate's directory in the install"); err != nil {
			return fmt.Errorf("%w; sdupdate keeps its staging files and snapshots there", err)
		}
	}
	return nil
}

func (e *Engine) storeAt(l *layout, dir string) *snapshot.Store {
	return &snapshot.Store{Fs: e.Fs, Dir: dir, InstallDir: l.install, Now: e.Now}
}

// listSnapshots merges every snapshot directory, newest first, with the store holding each. A
// snapshot that cannot be read (a damaged record.json, say) is left out of the list and reported in
// damaged: it is never a rollback target, and the others still are. Each record is read whole,
// for what `status` and `snapshots` show of each snapshot (the bytes it holds, whether complete).
func (e *Engine) listSnapshots(l *layout) ([]snapshot.Summary, map[string]*snapshot.Store, []Finding) {
	all, where, _, damaged := mergeStores(e, l, func(st *snapshot.Store) ([]snapshot.Summary, *snapshot.Catalog, error) {
		metas, err := st.List()
		return metas, nil, err
	}, func(m *snapshot.Summary) snapshot.Header { return m.Header() })
	return all, where, damaged
}

// catalogSnapshots is listSnapshots for choosing snapshots (a rollback target, those to prune):
// it reads each record's head and objects, not its files, and returns each store's Catalog too.
func (e *Engine) catalogSnapshots(l *layout) ([]snapshot.Header, map[string]*snapshot.Store, map[*snapshot.Store]*snapshot.Catalog, []Finding) {
	return mergeStores(e, l, func(st *snapshot.Store) ([]snapshot.Header, *snapshot.Catalog, error) {
		c, err := st.Catalog()
		if c == nil {
			return nil, nil, err
		}
		return c.Snapshots, c, err
	}, func(h *snapshot.Header) snapshot.Header { return *h })
}

// mergeStores lists every snapshot directory with list and merges the lists, newest first, an
// id found twice counted once (the directory in use first).
func mergeStores[T any](e *Engine, l *layout, list func(*snapshot.Store) ([]T, *snapshot.Catalog, error), header func(*T) snapshot.Header) (
	[]T, map[string]*snapshot.Store, map[*snapshot.Store]*snapshot.Catalog, []Finding) {
	var all []T
	var damaged []Finding
	where := map[string]*snapshot.Store{}
	catalogs := map[*snapshot.Store]*snapshot.Catalog{}
	for _, dir := range e.snapshotDirs(l) {
		st := e.storeAt(l, dir)
		items, c, err := list(st)
		if c != nil {
			catalogs[st] = c
		}
		var good []string
		for i := range items {
			id := header(&items[i]).ID
			good = append(good, id)
			if _, dup := where[id]; dup {
				continue
			}
			where[id] = st
			all = append(all, items[i])
		}
		if err != nil {
			damaged = append(damaged, e.unreadableSnapshots(dir, good, err)...)
		}
	}
	sort.SliceStable(all, func(i, j int) bool {
		a, b := header(&all[i]), header(&all[j])
		if !a.Created.Equal(b.Created) {
			return a.Created.After(b.Created)
		}
		return a.ID > b.ID
	})
	return all, where, catalogs, damaged
}

// unreadableSnapshots names the snapshots in dir that could not be read: complete ones (with a
// record.json, or the meta.json of an older sdupdate) whose ids are not among good.
func (e *Engine) unreadableSnapshots(dir string, good []string, err error) []Finding {
	names, rerr := readDirNames(e, dir)
	if rerr != nil {
		return []Finding{{Code: FindingSnapshotCorrupt, Path: dir, Message: err.Error()}}
	}
	ok := map[string]bool{}
	for _, id := range good {
		ok[id] = true
	}
	var out []Finding
	for _, n := range names {
		if ok[n] {
			continue
		}
		_, rerr := fsutil.Lstat(e.Fs, filepath.Join(dir, n, "record.json"))
		_, merr := fsutil.Lstat(e.Fs, filepath.Join(dir, n, "meta.json")) // before the store
		if rerr != nil && merr != nil {
			continue // incomplete, or not a snapshot: Cleanup's business
		}
		out = append(out, Finding{Code: FindingSnapshotCorrupt, Path: filepath.Join(dir, n),
			Message: fmt.Sprintf("snapshot %s cannot be read, so it is skipped and never restored (remove %s when you have looked at it): %v", n, filepath.Join(dir, n), err)})
	}
	if len(out) == 0 {
		out = append(out, Finding{Code: FindingSnapshotCorrupt, Path: dir, Message: err.Error()})
	}
	return out
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

// storeBytes is the disk every snapshot store holds: its objects, and the files of snapshots
// of the earlier layout not converted yet.
func (e *Engine) storeBytes(l *layout, all []snapshot.Summary) int64 {
	var n int64
	for _, dir := range e.snapshotDirs(l) {
		if b, err := e.storeAt(l, dir).StoreBytes(); err == nil {
			n += b
		}
	}
	for _, s := range all {
		if s.Legacy {
			n += s.Held
		}
	}
	return n
}

// upgradeSnapshots converts snapshots of the earlier layout, in every snapshot directory.
func (e *Engine) upgradeSnapshots(l *layout) {
	for _, dir := range e.snapshotDirs(l) {
		done, err := e.storeAt(l, dir).Upgrade()
		if err != nil {
			e.Log.WithError(err).Warn("cannot convert every snapshot to the current layout; the next command tries again")
		}
		if len(done) > 0 {
			e.Log.Infof("converted snapshots %v to the content-addressed store", done)
		}
	}
}

// pruneSnapshots keeps the newest keep snapshots across all directories, and protect. It also
// returns what content the store may have deleted with them. Each record is read once, and only
// its head and objects: which snapshots to delete comes from the heads, which objects the
// others still need (and which content went) from their objects lines.
func (e *Engine) pruneSnapshots(l *layout, keep int, protect string) ([]string, removedContent, error) {
	all, where, catalogs, damaged := e.catalogSnapshots(l)
	if len(damaged) > 0 {
		// Which snapshots are the newest cannot be told while one cannot be read.
		return nil, removedContent{}, fmt.Errorf("not pruning snapshots: %s", damaged[0].Message)
	}
	var stores []*snapshot.Store // in the order their first snapshot to go comes
	doomed := map[*snapshot.Store][]string{}
	var tried []prunedSnapshot
	kept := map[string]bool{}
	for i, m := range all {
		st := where[m.ID]
		objects := catalogs[st].Objects(m.ID)
		if i < keep || m.ID == protect {
			for _, sum := range objects {
				kept[sum] = true
			}
			continue
		}
		tried = append(tried, prunedSnapshot{legacy: m.Legacy, objects: objects})
		if doomed[st] == nil {
			stores = append(stores, st)
		}
		doomed[st] = append(doomed[st], m.ID)
	}
	var removed []string
	var errs []error
	for _, st := range stores {
		gone, err := st.DeleteSome(catalogs[st], doomed[st])
		removed = append(removed, gone...)
		if err != nil {
			errs = append(errs, fmt.Errorf("cannot remove every old snapshot: %w", err))
		}
	}
	return removed, contentOnlyIn(tried, kept), errors.Join(errs...)
}

// prunedSnapshot is a snapshot pruning tried to delete: whether it was of the earlier layout,
// and the content its files name.
type prunedSnapshot struct {
	legacy  bool
	objects []string
}

// removedContent is what deleting snapshots may have taken out of the store: the objects of
// the content only they named (retention keeps every object a remaining snapshot names), or,
// when one was of the earlier layout, whose files/ linked installed inodes, anything.
type removedContent struct {
	sums map[string]bool
	any  bool
}

// contentOnlyIn is the content the snapshots tried name and no kept one does.
func contentOnlyIn(tried []prunedSnapshot, kept map[string]bool) removedContent {
	gone := removedContent{sums: map[string]bool{}}
	for _, m := range tried {
		gone.any = gone.any || m.legacy
		for _, sum := range m.objects {
			if !kept[sum] {
				gone.sums[sum] = true
			}
		}
	}
	return gone
}

// names is which entries of x removing that content may have touched.
func (g removedContent) names(x *statindex.Index) []string {
	switch {
	case x == nil:
		return nil
	case g.any:
		return x.Names()
	}
	return x.NamesHolding(g.sums)
}
