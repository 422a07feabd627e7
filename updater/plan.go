package updater

import (
	"context"
	"crypto/md5"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"time"

	"github.com/spf13/afero"

	"github.com/sdupdate/sdupdate/fsutil"
	"github.com/sdupdate/sdupdate/manifest"
	"github.com/sdupdate/sdupdate/snapshot"
	"github.com/sdupdate/sdupdate/statindex"
)

// Change is one file the update writes.
type Change struct {
	File  manifest.File // the manifest entry
	Add   bool          // the file does not exist yet
	Local bool          // the content is already installed; only the mode changes, so it is staged from the installed file
	// Resume: fetched through a partial file that survives a broken transfer (see partial.go).
	Resume bool
	// CopyOf names an earlier change of the plan with the same content (a release that ships
	// one program under two names): its verified staging file is copied, nothing is fetched.
	CopyOf string
	Mode   os.FileMode // the mode it will have
	UID    int         // owner it will have, when HasOwner
	GID    int
	// HasOwner is false on filesystems that do not report owners (in-memory tests).
	HasOwner bool
	// Sources are the ways to fetch the content, cheapest first, the file itself last; the
	// first is what the plan counts (none for a Local change).
	Sources []Source
	at      int // the position of its entry in the plan's Resolved.Files
}

// Cost is what fetching c is expected to take: the size of its first source (0 when unknown or
// nothing is fetched, or when that source is a pack, whose bytes the plan counts once, for the
// pack).
func (c *Change) Cost() int64 {
	if c.CopyOf != "" || c.inPack() != nil {
		return 0
	}
	if c.Local || len(c.Sources) == 0 {
		return max(c.File.Size, 0)
	}
	return max(c.Sources[0].Want.Size, 0)
}

// Plan is what an update changes.
type Plan struct {
	From, To string
	Changes  []Change // added or changed, in manifest order
	Removes  []string // listed by the installed manifest, not by the new one, and present
	// Resolved is the new manifest as it will be recorded: legacy entries get the sha256 and size
	// of what was verified, and every entry its final mode.
	Resolved *manifest.Manifest
	// Index holds the stat and sha256 of every installed file the plan looked at (trusted from
	// the old index or hashed): after apply, the stat index of the new version.
	Index *statindex.Index
	// Installed describes every managed file installed now, as the plan hashed it: the snapshot
	// records them without reading them again.
	Installed []snapshot.FileMeta
	// Leaving names the installed files the update replaces or removes: only they enter the
	// snapshot store.
	Leaving []string
	// Packs are the packs the update fetches, each the first source of the changes it stages.
	Packs []*PackUse
}

// Counts returns how many files are added, changed and removed.
func (p *Plan) Counts() (add, change, remove int) {
	for _, c := range p.Changes {
		if c.Add {
			add++
		} else {
			change++
		}
	}
	return add, change, len(p.Removes)
}

// DownloadBytes is the number of bytes to fetch, each file from its cheapest source (legacy
// entries of unknown size count 0) and each pack once, and how many files are fetched.
func (p *Plan) DownloadBytes() (bytes int64, files int) {
	for i := range p.Changes {
		if p.Changes[i].Local {
			continue
		}
		files++
		bytes += p.Changes[i].Cost()
	}
	for _, pu := range p.Packs {
		bytes += pu.Size
	}
	return bytes, files
}

// StagedBytes is how much staging takes on disk: every fetched file whole, whatever form it
// travels in. A pack is never stored, only decoded as it streams: its files count here like
// any other.
func (p *Plan) StagedBytes() int64 {
	var n int64
	for _, c := range p.Changes {
		if !c.Local && c.File.Size > 0 {
			n += c.File.Size
		}
	}
	return n
}

type installedFile struct {
	sha256, md5 string
	size        int64
	mode        os.FileMode
	uid, gid    int
	hasOwner    bool
	info        os.FileInfo // as stat said when the file was opened
	taken       time.Time   // when it was read
}

// snapshotEntry is how the snapshot records this file.
func (f *installedFile) snapshotEntry(name string) snapshot.FileMeta {
	return snapshot.FileFromInfo(name, f.sha256, f.size, f.info, f.taken)
}

// hashInstalled reads an installed file once, in large chunks. st is the file's stat before it
// was read, stable whether it was the same after: only then may an index remember the hash.
func (e *Engine) hashInstalled(path string, withMD5 bool) (have *installedFile, st statindex.Stat, stable bool, err error) {
	// Wall time, not e.now(): it is compared with the filesystem's timestamps.
	taken := time.Now()
	// Whoever may write in the install could leave a FIFO under a managed name: refused, not waited on.
	f, fi, err := fsutil.OpenRegular(e.Fs, path)
	if err != nil {
		return nil, st, false, fmt.Errorf("cannot open installed file %s: %w", path, err)
	}
	defer f.Close()
	hs := sha256.New()
	var w io.Writer = hs
	hm := md5.New()
	if withMD5 {
		w = io.MultiWriter(hs, hm)
	}
	n, err := copyChunks(w, f)
	if err != nil {
		return nil, st, false, fmt.Errorf("cannot read installed file %s: %w", path, err)
	}
	have = &installedFile{sha256: hex.EncodeToString(hs.Sum(nil)), size: n, mode: fi.Mode().Perm(), info: fi, taken: taken}
	if withMD5 {
		have.md5 = hex.EncodeToString(hm.Sum(nil))
	}
	have.uid, have.gid, have.hasOwner = fsutil.Owner(fi)
	st = statindex.StatOf(fi)
	after, err := f.Stat()
	stable = err == nil && statindex.StatOf(after) == st && n == fi.Size()
	return have, st, stable, nil
}

// installedState is what the plan needs of the installed file of f, whose lstat was fi: from
// idx when that matches its entry, otherwise by hashing it. Either way fresh records it (fresh
// may be idx itself, whose entry is then already right); a file that changed while it was
// hashed is forgotten.
func (e *Engine) installedState(target string, fi os.FileInfo, f manifest.File, legacy bool, idx, fresh *statindex.Index) (*installedFile, error) {
	if idx != nil && f.SHA256 != "" {
		if fi.Mode().IsRegular() {
			st := statindex.StatOf(fi)
			if sum, ok := idx.Lookup(f.Name, st); ok {
				// The index vouches for the content as it is now.
				have := &installedFile{sha256: sum, size: fi.Size(), mode: fi.Mode().Perm(), info: fi, taken: time.Now()}
				have.uid, have.gid, have.hasOwner = fsutil.Owner(fi)
				if fresh != idx {
					fresh.Set(f.Name, st, sum)
				}
				return have, nil
			}
		}
	}
	have, st, stable, err := e.hashInstalled(target, legacy && f.SHA256 == "")
	if err != nil {
		return nil, err
	}
	if stable {
		fresh.Set(f.Name, st, have.sha256)
	} else {
		fresh.Delete(f.Name)
	}
	return have, nil
}

// freshIndex is the index a plan of n files records what it finds in: idx itself when there is
// one, since nearly every entry stays as it is (setting 150,000 entries of a new map one by one
// costs a plan a tenth of its time), else an empty one. It describes no installed manifest
// until the update that follows is applied.
func freshIndex(idx *statindex.Index, n int) *statindex.Index {
	if idx == nil {
		return statindex.NewSized("", n)
	}
	idx.Installed = ""
	return idx
}

// forgetOthers removes from p's index the entries of names next does not list: the index it
// started from describes the installed manifest, whose dropped names go. found is how many
// files the plan found installed; an index holding more entries still holds others too (a
// damaged one), which a walk over it removes.
func forgetOthers(p *Plan, next *manifest.Manifest, dropped map[string]bool, found int) {
	for name := range dropped {
		p.Index.Delete(name)
	}
	if p.Index.Len() > found {
		p.Index.Retain(func(name string) bool {
			_, ok := next.Lookup(name)
			return ok
		})
	}
}

// plan compares the new manifest with the installed manifest and the files' real hashes (or
// those idx remembers for files whose stat has not changed; nil: hash every file). A file that
// already matches is not downloaded; a file no manifest lists is never looked at. Any name whose
// path runs through a symlink refuses the whole update before anything is fetched.
func (e *Engine) plan(ctx context.Context, l *layout, next, installed *manifest.Manifest, idx *statindex.Index) (*Plan, error) {
	// Sized for a release whose files are all installed, the common case: growing a slice of
	// 150,000 entries one by one costs a plan a tenth of its time.
	p := &Plan{From: versionOf(installed), To: next.Version, Index: freshIndex(idx, len(next.Files)),
		Installed: make([]snapshot.FileMeta, 0, len(next.Files))}
	resolved := *next
	resolved.Files = append([]manifest.File(nil), next.Files...)
	rootUID, rootGID, rootHasOwner, err := e.rootOwner(l)
	if err != nil {
		return nil, err
	}
	dropped := droppedNames(installed, next)
	in := fsutil.NewInspector(e.Fs, l.install)
	for i, f := range next.Files {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		target := filepath.Join(l.install, filepath.FromSlash(f.Name))
		exists, fi, err := e.checkTarget(l, in, f.Name, dropped)
		if err != nil {
			return nil, withCode(CodeFailed, fmt.Errorf("refusing %q: %w", f.Name, err))
		}
		c := Change{File: f, Mode: manifest.DefaultMode, UID: rootUID, GID: rootGID, HasOwner: rootHasOwner, Add: !exists, at: i}
		// A modern manifest's missing mode means 0644; only the legacy form, which never had
		// modes, keeps the mode of the file it replaces.
		keepMode := next.Legacy && !f.HasMode
		if f.HasMode {
			c.Mode = f.Mode
		}
		if !exists {
			p.Index.Delete(f.Name)
		} else {
			unchanged, err := e.matchInstalled(p, &c, &resolved.Files[i], target, fi, next.Legacy, keepMode, idx)
			if err != nil {
				return nil, err
			}
			if unchanged {
				continue
			}
		}
		resolved.Files[i].Mode, resolved.Files[i].HasMode = c.Mode, true
		c.File.Mode, c.File.HasMode = c.Mode, true
		p.Changes = append(p.Changes, c)
		if exists {
			p.Leaving = append(p.Leaving, f.Name)
		}
	}
	found := len(p.Installed)
	if err := e.planRemoves(l, in, p, installed, dropped, idx); err != nil {
		return nil, err
	}
	forgetOthers(p, next, dropped, found)
	p.Resolved = &resolved
	e.chooseSources(l, p)
	return p, nil
}

// rootOwner returns the owner of the install directory, which new files get; none (false)
// while it is missing, as for `check` before the first install.
func (e *Engine) rootOwner(l *layout) (uid, gid int, ok bool, err error) {
	rootInfo, err := e.Fs.Stat(l.install)
	if errors.Is(err, os.ErrNotExist) {
		return 0, 0, false, nil
	} else if err != nil {
		return 0, 0, false, fmt.Errorf("cannot stat install directory %s: %w", l.install, err)
	}
	uid, gid, ok = fsutil.Owner(rootInfo)
	return uid, gid, ok, nil
}

// matchInstalled compares the installed file at target with c.File, the manifest's entry: it
// records the installed file in p, gives c its owner (and, with keepMode, its mode) and offers
// its content for the choice of delta bases. When the content already matches it sets the
// resolved entry r's hash and size from it, and reports true when the mode matches too: nothing
// to do; with only the mode to change, c becomes Local.
func (e *Engine) matchInstalled(p *Plan, c *Change, r *manifest.File, target string, fi os.FileInfo, legacy, keepMode bool, idx *statindex.Index) (bool, error) {
	f := c.File
	have, err := e.installedState(target, fi, f, legacy, idx, p.Index)
	if err != nil {
		return false, err
	}
	p.Installed = append(p.Installed, have.snapshotEntry(f.Name))
	c.UID, c.GID, c.HasOwner = have.uid, have.gid, have.hasOwner
	if keepMode {
		c.Mode = have.mode
	}
	same := have.sha256 == f.SHA256 && have.size == f.Size
	if f.SHA256 == "" {
		same = have.md5 == f.MD5
	}
	if !same {
		return false, nil
	}
	r.SHA256, r.Size = have.sha256, have.size
	c.File = *r
	if have.mode == c.Mode {
		r.Mode, r.HasMode = c.Mode, true
		return true, nil
	}
	c.Local = true
	return false, nil
}

// planRemoves adds to p the files installed lists and next does not (dropped), and that are there: they are
// removed, and so looked at (only these, of the files not in next: trusted from idx, else
// hashed) because their content enters the snapshot store. They are not in the new index. Their
// content is offered as a base (chooseSources): a file that moved (libdns-1.0.so to
// libdns-1.1.so) has its delta from the old name's.
func (e *Engine) planRemoves(l *layout, in *fsutil.Inspector, p *Plan, installed *manifest.Manifest, dropped map[string]bool, idx *statindex.Index) error {
	if installed == nil {
		return nil
	}
	gone := statindex.New("")
	for _, f := range installed.Files {
		if !dropped[f.Name] {
			continue
		}
		exists, fi, err := in.CheckPath(f.Name)
		if err != nil {
			return withCode(CodeFailed, fmt.Errorf("refusing to remove %q: %w", f.Name, err))
		}
		if !exists {
			continue
		}
		have, err := e.installedState(filepath.Join(l.install, filepath.FromSlash(f.Name)), fi, f, installed.Legacy, idx, gone)
		if err != nil {
			return err
		}
		p.Removes = append(p.Removes, f.Name)
		p.Installed = append(p.Installed, have.snapshotEntry(f.Name))
		p.Leaving = append(p.Leaving, f.Name)
	}
	sort.Strings(p.Removes)
	return nil
}

// chooseSources gives every fetched change its sources. Bases are the installed files the plan
// looked at (those of the new manifest and those it removes: each one's content as it is now,
// not as a state file says) and then the snapshot stores' objects; every base is checked again
// when read. They are gathered only when a change has a delta to use them.
func (e *Engine) chooseSources(l *layout, p *Plan) {
	var onHand localContent
	for _, c := range p.Changes {
		if !c.Local && len(c.File.Deltas) > 0 {
			onHand = contentOf(p.Installed)
			e.storedBases(l, p, onHand)
			break
		}
	}
	fetched := map[string]string{} // sha256 and size → the first change that fetches them
	for i := range p.Changes {
		c := &p.Changes[i]
		if c.Local {
			continue
		}
		key := fmt.Sprintf("%s %d", c.File.SHA256, c.File.Size)
		if first, ok := fetched[key]; ok && c.File.SHA256 != "" && c.File.Size >= 0 {
			c.CopyOf = first
			continue
		}
		fetched[key] = c.File.Name
		c.Sources = sourcesFor(c.File, onHand, e.Config.MaxDeltaFileSize)
	}
	choosePacks(p)
}

// contentOf is the content of files by sha256, the first file of each.
func contentOf(files []snapshot.FileMeta) localContent {
	have := make(localContent, len(files))
	for _, f := range files {
		if _, known := have[f.SHA256]; !known && f.SHA256 != "" {
			have[f.SHA256] = baseFile{name: f.Name, size: f.Size}
		}
	}
	return have
}

// droppedNames is the set of names installed lists and next does not: the update removes them.
func droppedNames(installed, next *manifest.Manifest) map[string]bool {
	dropped := map[string]bool{}
	if installed == nil {
		return dropped
	}
	for _, f := range installed.Files {
		if _, keep := next.Lookup(f.Name); !keep {
			dropped[f.Name] = true
		}
	}
	return dropped
}

// checkTarget says whether name exists as a regular file in the install. What stands in its way
// is accepted only when it is the installed version's own and the update drops it: a file where
// a directory must go (1.0.0 ships x, 1.1.0 x/y), or a directory holding only such files where
// the file must go (the reverse); apply removes the dropped files first. Anything else — a
// symlink, a special file, a file or directory no dropped name accounts for — is refused, as
// CheckPath does.
//
// fi is the lstat of the file when it exists.
func (e *Engine) checkTarget(l *layout, in *fsutil.Inspector, name string, dropped map[string]bool) (exists bool, fi os.FileInfo, err error) {
	k, blocker, fi, err := in.Inspect(name)
	switch {
	case err != nil:
		return false, nil, err
	case k == fsutil.Absent && blocker != "" && dropped[blocker]:
		return false, nil, nil
	case k == fsutil.Dir && e.holdsOnly(l, name, dropped):
		return false, nil, nil
	}
	if err := fsutil.Refusal(l.install, name, k, blocker, nil); err != nil {
		return false, nil, err
	}
	return k == fsutil.Regular, fi, nil
}

// holdsOnly reports whether the directory dir (slash path in the install) holds nothing but
// directories and regular files named in names.
func (e *Engine) holdsOnly(l *layout, dir string, names map[string]bool) bool {
	ok := true
	_ = afero.Walk(e.Fs, filepath.Join(l.install, filepath.FromSlash(dir)), func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			ok = false
			return err
		}
		if fi.IsDir() {
			return nil
		}
		rel, rerr := filepath.Rel(l.install, p)
		if rerr != nil || !fi.Mode().IsRegular() || !names[filepath.ToSlash(rel)] {
			ok = false
			return filepath.SkipAll
		}
		return nil
	})
	return ok
}

// managedNames is every name either manifest lists: what a snapshot must hold and what a
// restore must put back or remove.
func managedNames(ms ...*manifest.Manifest) []string {
	seen := map[string]bool{}
	var names []string
	for _, m := range ms {
		if m == nil {
			continue
		}
		for _, f := range m.Files {
			if !seen[f.Name] {
				seen[f.Name] = true
				names = append(names, f.Name)
			}
		}
	}
	sort.Strings(names)
	return names
}
