package updater

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"sort"

	"github.com/sirupsen/logrus"

	"github.com/sdupdate/sdupdate/delta"
	"github.com/sdupdate/sdupdate/fetch"
	"github.com/sdupdate/sdupdate/fsutil"
	"github.com/sdupdate/sdupdate/manifest"
	"github.com/sdupdate/sdupdate/snapshot"
)

// SourceKind says in which form a file's content is fetched.
type SourceKind string

const (
	SourceDelta  SourceKind = "delta"  // a zstd delta from content already on this machine
	SourceObject SourceKind = "object" // the zstd-compressed content
	SourceFile   SourceKind = "file"   // the file itself
	SourcePack   SourceKind = "pack"   // a zstd stream of several files, this one among them (see packs.go)
)

// Source is one way to fetch a change's content, verified by its own size and sha256 before the
// result is verified by the file's.
type Source struct {
	Kind SourceKind
	URL  string     // relative to the file base URL, like a name
	Want delta.Want // the fetched bytes; for SourceFile the file's own (Size -1: legacy, unknown)
	// A delta's base: the name (below the install directory) of a file that held the content
	// From when the plan was made, or (BaseStore set) that store's object of that content; it
	// is checked again when read.
	BaseName  string
	BaseStore *snapshot.Store
	BaseWant  delta.Want
	Pack      *PackUse // a pack's: what it gives this run
}

// String is how the plan names the source: its kind, and for a delta whose base is not an
// installed file, where the base is.
func (s Source) String() string {
	if s.Kind == SourceDelta && s.BaseStore != nil {
		return "delta from a snapshot"
	}
	return string(s.Kind)
}

// bigDecode is the size (output plus base) above which decodes take turns: with Parallel
// workers, several large files decoded at once would each hold their base and window.
const bigDecode = 16 << 20

// localContent is content this machine already has, by sha256: where to read it.
type localContent map[string]baseFile

type baseFile struct {
	name  string          // below the install directory
	store *snapshot.Store // or, when set, this store's object of the content
	size  int64
}

// sourcesFor lists the sources of f, cheapest first; the file itself is always last. A delta is
// listed only when its base is on hand and neither file nor base is over maxDelta; a delta or an
// object only when it costs less than the sources after it.
func sourcesFor(f manifest.File, have localContent, maxDelta int64) []Source {
	plain := Source{Kind: SourceFile, URL: f.Name, Want: delta.Want{SHA256: f.SHA256, Size: f.Size}}
	if f.SHA256 == "" { // legacy: no sources, size unknown
		return []Source{plain}
	}
	list := []Source{plain}
	if f.Object != nil && f.Object.Size < f.Size {
		list = append([]Source{{Kind: SourceObject, URL: f.Object.URL, Want: delta.Want{SHA256: f.Object.SHA256, Size: f.Object.Size}}}, list...)
	}
	if f.Size > maxDelta {
		return list
	}
	var deltas []Source
	for _, d := range f.Deltas {
		base, ok := have[d.From]
		if !ok || base.size > maxDelta || d.Size >= list[0].Want.Size {
			continue
		}
		deltas = append(deltas, Source{Kind: SourceDelta, URL: d.URL, Want: delta.Want{SHA256: d.SHA256, Size: d.Size},
			BaseName: base.name, BaseStore: base.store, BaseWant: delta.Want{SHA256: d.From, Size: base.size}})
	}
	sort.SliceStable(deltas, func(i, j int) bool { return deltas[i].Want.Size < deltas[j].Want.Size })
	return append(deltas, list...)
}

// badSourceError is a source that cannot give the file (it does not verify or decode, or its
// delta base is gone): the next source is tried, the same one is not fetched again.
type badSourceError struct{ err error }

func (e *badSourceError) Error() string { return e.err.Error() }
func (e *badSourceError) Unwrap() error { return e.err }

// stageFromSources tries c's sources in order until one gives the verified content; each is
// tried as stageWith decides (with retries). Every fallback is logged.
func (e *Engine) stageFromSources(ctx context.Context, log *logrus.Entry, baseURL string, c *Change,
	stageWith func(u string, src Source) (verified, error)) (verified, error) {
	var err error
	for i, src := range c.Sources {
		var v verified
		u, jerr := fetch.Join(baseURL, src.URL)
		if jerr != nil {
			err = &badSourceError{fmt.Errorf("cannot build URL of %s %s: %w", c.File.Name, src.Kind, jerr)}
		} else {
			v, err = stageWith(u, src)
		}
		if err == nil {
			return v, nil
		}
		var le *localError
		if ctx.Err() != nil || errors.As(err, &le) || i == len(c.Sources)-1 {
			return verified{}, err
		}
		log.WithFields(logrus.Fields{"file": c.File.Name, "source": string(src.Kind), "next": string(c.Sources[i+1].Kind), "error": err.Error()}).
			Warnf("cannot use the %s of %s; fetching its %s instead", src.Kind, c.File.Name, c.Sources[i+1].Kind)
	}
	return verified{}, err
}

// decodeTo fetches a compressed object or delta from u and decodes it into staged, verified on
// both sides (see package delta). Decodes of large files take turns.
func (e *Engine) decodeTo(ctx context.Context, l *layout, u, staged string, c *Change, src Source, sh *stageShared) (verified, error) {
	var base []byte
	if src.Kind == SourceDelta {
		var err error
		if base, err = e.readBase(l, src); err != nil {
			return verified{}, err
		}
	}
	turnDone, err := sh.takeTurn(ctx, c.File.Size+int64(len(base)))
	if err != nil {
		return verified{}, err
	}
	defer turnDone()
	// delta.Decode hashes its output to check it: the staging file need not hash it again.
	r, w, done, err := e.openStream(ctx, u, src.Want.Size, staged, false, sh.progress)
	if err != nil {
		return verified{}, err
	}
	defer done()
	_, err = delta.Decode(w, r, src.Want, base, delta.Want{SHA256: c.File.SHA256, Size: c.File.Size}, delta.Limits{})
	var we *delta.WriteError
	switch {
	case errors.As(err, &we):
		return verified{}, &localError{fmt.Errorf("cannot write staging file %s: %w", staged, we.Err)}
	case errors.Is(err, delta.ErrBadSource):
		return verified{}, &badSourceError{fmt.Errorf("%s (%s from %s): %w", c.File.Name, src.Kind, fetch.Redact(u), err)}
	case err != nil:
		return verified{}, err
	}
	if err := w.CommitVia(stagedAttrs(c), sh.syncs); err != nil {
		return verified{}, &localError{err}
	}
	// Decode returned no error: what it wrote has exactly the file's sha256 and size.
	return verified{sha256: c.File.SHA256, size: w.Size()}, nil
}

// readBase reads a delta's base, only reading: the installed file or the snapshot object is
// opened read-only and must still be the content the delta was made from.
func (e *Engine) readBase(l *layout, src Source) ([]byte, error) {
	if src.BaseStore != nil {
		f, _, err := src.BaseStore.OpenObject(src.BaseWant.SHA256)
		if err != nil {
			return nil, &badSourceError{fmt.Errorf("delta base in the snapshot store: %w", err)}
		}
		defer f.Close()
		b, err := delta.LoadBase(f, src.BaseWant)
		if err != nil {
			return nil, &badSourceError{fmt.Errorf("snapshot object %s: %w", f.Name(), err)}
		}
		return b, nil
	}
	if _, err := fsutil.CheckPath(e.Fs, l.install, src.BaseName); err != nil {
		return nil, &badSourceError{fmt.Errorf("delta base %s: %w", src.BaseName, err)}
	}
	p := filepath.Join(l.install, filepath.FromSlash(src.BaseName))
	f, err := e.Fs.Open(p)
	if err != nil {
		return nil, &badSourceError{fmt.Errorf("cannot open delta base %s: %w", p, err)}
	}
	defer f.Close()
	b, err := delta.LoadBase(f, src.BaseWant)
	if err != nil {
		return nil, &badSourceError{fmt.Errorf("%s: %w", p, err)}
	}
	return b, nil
}

// storedBases offers, for each delta of p whose base is not installed, the content of that
// base when a snapshot store holds it: content that left the install (an update replaced or
// removed it, or a rollback put other content back) is often what a newer release's delta
// starts from. Each store is one this engine trusts (see snapshotDirs); the object is checked
// when read, like every base.
func (e *Engine) storedBases(l *layout, p *Plan, onHand localContent) {
	var stores []*snapshot.Store
	for i := range p.Changes {
		c := &p.Changes[i]
		if c.Local || c.File.Size > e.Config.MaxDeltaFileSize {
			continue
		}
		for _, d := range c.File.Deltas {
			if _, known := onHand[d.From]; known {
				continue
			}
			if stores == nil {
				for _, dir := range e.snapshotDirs(l) {
					stores = append(stores, e.storeAt(l, dir))
				}
			}
			for _, st := range stores {
				if size, ok := st.ObjectSize(d.From); ok {
					onHand[d.From] = baseFile{store: st, size: size}
					break
				}
			}
		}
	}
}
