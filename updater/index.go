package updater

import (
	"path/filepath"

	"github.com/sirupsen/logrus"

	"github.com/sdupdate/sdupdate/fsutil"
	"github.com/sdupdate/sdupdate/logging"
	"github.com/sdupdate/sdupdate/statindex"
)

// The stat index (StateDirectory/stat-index, see package statindex) lets a plan trust the files
// whose stat has not changed since their sha256 was last computed or verified, so an update
// hashes what changed, not what is installed. It names the installed manifest it was written
// for: written right after installed.json, it describes that manifest's files, and one written
// for any other manifest (a crash between the two writes, a rollback, a restored snapshot) is
// not used. It is an optimisation only: missing, stale or damaged, it costs a full hash.
//
// Steps that change the ctime of installed files without changing their content — the
// snapshot's hard links, and the removal of those links when old snapshots are pruned — are
// followed by a refresh of the entries they can have touched (one lstat each): the files the
// update replaces or removes, the content the pruned snapshots alone named. `verify` and
// `update --repair` never read it.

func (l *layout) indexPath() string { return filepath.Join(l.state, "stat-index") }

// installedSum is what an index records of the installed manifest's bytes ("" before the first
// update).
func installedSum(raw []byte) string {
	if raw == nil {
		return ""
	}
	return statindex.SumOf(raw)
}

// loadIndex returns the index written for the installed manifest raw, or nil when there is no
// usable one.
func (e *Engine) loadIndex(l *layout, raw []byte) *statindex.Index {
	x, err := statindex.Load(e.Fs, l.indexPath())
	if err != nil {
		// Damaged or unreadable: every file is hashed, and a new index written after.
		e.Log.WithError(err).Warn("ignoring the stat index; every installed file is hashed")
		return nil
	}
	if x.Installed != installedSum(raw) {
		return nil
	}
	return x
}

// lstat is the index's view of path.
func (e *Engine) lstat(path string) (statindex.Stat, error) {
	fi, err := fsutil.Lstat(e.Fs, path)
	if err != nil {
		return statindex.Stat{}, err
	}
	return statindex.StatOf(fi), nil
}

// refreshIndex re-stats the entries of x named after a step that changed their ctimes.
func (e *Engine) refreshIndex(l *layout, x *statindex.Index, names []string) {
	if x == nil {
		return
	}
	for _, name := range names {
		target := filepath.Join(l.install, filepath.FromSlash(name))
		x.Refresh(name, func() (statindex.Stat, error) { return e.lstat(target) })
	}
}

// pruneAfterUpdate prunes old snapshots. An installed file that shared its inode with an object
// the store then deleted has a new ctime, so the entries of the content that went are
// refreshed, and the index written by the update saved again: only when there are any.
func (e *Engine) pruneAfterUpdate(log *logrus.Entry, l *layout, protect string) {
	removed, gone, err := e.pruneSnapshots(l, e.Config.KeepSnapshots, protect)
	if err != nil {
		log.WithError(err).Warn("cannot prune old snapshots")
	}
	if len(removed) > 0 {
		log.WithField(logging.FieldPhase, logging.PhaseSnapshot).Debugf("pruned snapshots %v", removed)
	}
	if names := gone.names(e.index); len(names) > 0 {
		e.refreshIndex(l, e.index, names)
		e.saveIndex(l, e.index)
	}
}

// recordApplied brings p's index to the tree apply left: the written files with the sha256 they
// were verified against, the removed ones forgotten; it is then the index of newRaw.
func (e *Engine) recordApplied(l *layout, p *Plan, newRaw []byte) {
	x := p.Index
	if x == nil {
		return
	}
	for _, c := range p.Changes {
		st, err := e.lstat(filepath.Join(l.install, filepath.FromSlash(c.File.Name)))
		// The resolved manifest has the sha256 of legacy (md5) entries too, as verified.
		if sum := p.Resolved.Files[c.at].SHA256; err == nil && sum != "" {
			x.Set(c.File.Name, st, sum)
			continue
		}
		x.Delete(c.File.Name)
	}
	for _, name := range p.Removes {
		x.Delete(name)
	}
	x.Installed = installedSum(newRaw)
}

// saveIndex writes x; a failure costs the next run a full hash, nothing else.
func (e *Engine) saveIndex(l *layout, x *statindex.Index) {
	if x == nil {
		return
	}
	if err := x.Save(e.Fs, l.indexPath()); err != nil {
		// An index left from before names another manifest, so it is not used either.
		e.Log.WithError(err).Warn("cannot record the stat index; the next update hashes every installed file")
	}
}
