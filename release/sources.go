package release

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"sync"

	"github.com/spf13/afero"

	"github.com/sdupdate/sdupdate/delta"
	"github.com/sdupdate/sdupdate/fsutil"
	"github.com/sdupdate/sdupdate/manifest"
)

// SourcesDir is the directory inside a version directory that holds the version's compressed
// objects and deltas, each named by the sha256 of its own bytes. No manifest name may start with
// it, so it never clashes with a released file.
const SourcesDir = manifest.ReservedName

// MaxDeltaFileSize is the largest file a delta is made for: the encoder holds the old and the new
// content in memory, and so does an updater that applies it.
const MaxDeltaFileSize = 128 << 20

// keepDelta says whether a delta of n bytes is worth listing beside an object of obj bytes: only
// when it saves at least a quarter, or a delta's extra work on the client buys too little.
func keepDelta(n, obj int64) bool { return n*4 <= obj*3 }

// earlier is a published version a delta can start from.
type earlier struct {
	version string
	dir     string
	files   map[string]*oldFile // by manifest name
	byBase  map[string][]*oldFile
	byStem  map[string][]*oldFile // by directory and base name without digits
}

type oldFile struct {
	name, path string
	size       int64
}

// earlierVersions returns the k newest versions published in out that are older than version,
// newest first, each with the files of its directory.
func earlierVersions(fsys afero.Fs, out, version string, k int) ([]*earlier, error) {
	if k <= 0 {
		return nil, nil
	}
	entries, err := afero.ReadDir(fsys, out)
	if err != nil {
		return nil, fmt.Errorf("cannot list earlier versions in %s: %w", out, err)
	}
	var versions []string
	for _, e := range entries {
		name := e.Name()
		if !e.IsDir() || strings.HasPrefix(name, ".") {
			continue
		}
		if c, err := manifest.CompareVersions(name, version); err == nil && c < 0 {
			versions = append(versions, name)
		}
	}
	sort.Slice(versions, func(i, j int) bool {
		c, _ := manifest.CompareVersions(versions[i], versions[j])
		return c > 0
	})
	if len(versions) > k {
		versions = versions[:k]
	}
	var list []*earlier
	for _, v := range versions {
		e, err := scanEarlier(fsys, filepath.Join(out, v), v)
		if err != nil {
			return nil, err
		}
		list = append(list, e)
	}
	return list, nil
}

func scanEarlier(fsys afero.Fs, dir, version string) (*earlier, error) {
	e := &earlier{version: version, dir: dir, files: map[string]*oldFile{}, byBase: map[string][]*oldFile{}, byStem: map[string][]*oldFile{}}
	err := afero.Walk(fsys, dir, func(p string, info os.FileInfo, err error) error {
		if err != nil {
			return fmt.Errorf("cannot read earlier version %s: %w", dir, err)
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil {
			return err
		}
		name := filepath.ToSlash(rel)
		if info.IsDir() && name == SourcesDir {
			return filepath.SkipDir
		}
		if !info.Mode().IsRegular() {
			return nil
		}
		f := &oldFile{name: name, path: p, size: info.Size()}
		e.files[name] = f
		base := path.Base(name)
		e.byBase[base] = append(e.byBase[base], f)
		e.byStem[stem(name)] = append(e.byStem[stem(name)], f)
		return nil
	})
	return e, err
}

// pair finds the earlier file a new file f continues: the same name; else, of the files with
// the same base name (a file that moved), the one whose size is nearest; else, of the files in
// the same directory whose names differ only in digits (a library named by its version,
// libdns-9.18.49-1~deb12u1-Debian.so → …u3…), the one whose size is nearest.
func (e *earlier) pair(f manifest.File) *oldFile {
	if o, ok := e.files[f.Name]; ok {
		return o
	}
	if o := nearest(e.byBase[path.Base(f.Name)], f.Size); o != nil {
		return o
	}
	return nearest(e.byStem[stem(f.Name)], f.Size)
}

func nearest(candidates []*oldFile, size int64) *oldFile {
	var best *oldFile
	for _, o := range candidates {
		if best == nil || abs(o.size-size) < abs(best.size-size) {
			best = o
		}
	}
	return best
}

// stem is name with the digits of its base name removed.
func stem(name string) string {
	dir, base := path.Split(name)
	return dir + strings.Map(func(r rune) rune {
		if r >= '0' && r <= '9' {
			return -1
		}
		return r
	}, base)
}

func abs(n int64) int64 {
	if n < 0 {
		return -n
	}
	return n
}

// publisher writes one version's objects and deltas into objDir with enc, and publishes only
// what the client's decoder accepts under the client's limits.
type publisher struct {
	ctx      context.Context
	fsys     afero.Fs
	dir      string // the version directory being written
	objDir   string // dir/SourcesDir
	enc      encoder
	builtin  encoder             // what a refused output of enc is made with instead
	workers  int                 // files made at once
	decoders chan *delta.Decoder // one per worker
	mu       sync.Mutex          // guards warnings
	warnings []string
}

// newPublisher sets up the encoder opts ask for, checking a reference zstd before anything is
// written, and the decoder every source is checked with.
func newPublisher(ctx context.Context, fsys afero.Fs, opts Options) (*publisher, error) {
	p := &publisher{ctx: ctx, fsys: fsys, builtin: builtin{fsys}}
	p.enc = p.builtin
	if opts.Zstd != "" {
		if _, ok := fsys.(*afero.OsFs); !ok {
			return nil, usagef("--zstd runs a program that reads the release's files, so they must be on the operating system's filesystem")
		}
		z, err := newReferenceZstd(ctx, opts.Zstd)
		if err != nil {
			return nil, err
		}
		p.enc = z
	}
	// One file's sources are made on one core, by zstd or the built-in encoder alike.
	p.workers = runtime.GOMAXPROCS(0)
	p.decoders = make(chan *delta.Decoder, p.workers)
	for range p.workers {
		dec, err := delta.NewDecoder()
		if err != nil {
			p.close()
			return nil, err
		}
		p.decoders <- dec
	}
	return p, nil
}

// close releases the decoders.
func (p *publisher) close() {
	for len(p.decoders) > 0 {
		(<-p.decoders).Close()
	}
}

func (p *publisher) warn(msg string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.warnings = append(p.warnings, msg)
}

// publishSources writes each file's compressed object and its deltas from the earlier versions
// into p.objDir and records them in files, then the packs of small files, which it returns. An
// object is kept only when smaller than the file, a delta only when markedly smaller than the
// object (keepDelta), a pack only when markedly smaller than its members' objects.
func (p *publisher) publishSources(files []manifest.File, bases []*earlier) ([]manifest.Pack, error) {
	if err := p.fsys.Mkdir(p.objDir, 0o755); err != nil {
		return nil, fmt.Errorf("cannot create %s: %w", p.objDir, err)
	}
	err := parallel(p.ctx, len(files), p.workers, func(i int) error {
		f := &files[i]
		content, err := readSmall(p.fsys, p.path(f.Name), f.Size)
		if err != nil {
			return err
		}
		bar, err := p.publishObject(f, content)
		if err != nil || content == nil {
			return err
		}
		return p.publishDeltas(f, content, bar, bases)
	})
	if err != nil {
		return nil, err
	}
	packs, err := p.publishPacks(files)
	if err != nil {
		return nil, err
	}
	return packs, fsutil.SyncDir(p.fsys, p.objDir)
}

// parallel calls do(i) for each i in 0..n-1 on up to workers goroutines. After the first error
// (or the end of ctx) no new call starts, and that error is returned once the calls running
// have returned.
func parallel(ctx context.Context, n, workers int, do func(i int) error) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	next := make(chan int)
	var wg sync.WaitGroup
	for range min(workers, n) {
		wg.Go(func() {
			for i := range next {
				if err := do(i); err != nil {
					cancel(err)
				}
			}
		})
	}
feed:
	for i := range n {
		select {
		case next <- i:
		case <-ctx.Done():
			break feed
		}
	}
	close(next)
	wg.Wait()
	if ctx.Err() != nil {
		return context.Cause(ctx)
	}
	return nil
}

// path is where the release's file name is in the version directory being written.
func (p *publisher) path(name string) string { return filepath.Join(p.dir, filepath.FromSlash(name)) }

// publishObject writes f's compressed object and lists it when smaller than the file. It returns
// what a delta must beat: the object's size, or the file's when there is no object. A file
// whose first MiB does not compress gets none, without compressing the rest.
func (p *publisher) publishObject(f *manifest.File, content []byte) (int64, error) {
	in := input{path: p.path(f.Name), size: f.Size, content: content}
	sample := content[:min(len(content), 1<<20)]
	if content == nil {
		r, err := p.fsys.Open(in.path)
		if err != nil {
			return 0, fmt.Errorf("cannot read %s: %w", in.path, err)
		}
		sample, err = io.ReadAll(io.LimitReader(r, 1<<20))
		r.Close()
		if err != nil {
			return 0, fmt.Errorf("cannot read %s: %w", in.path, err)
		}
	}
	if !delta.Compressible(sample) {
		return f.Size, nil
	}
	keep := func(n int64) bool { return n < f.Size }
	obj, err := p.make(fileRecipe("the object of "+f.Name, *f, nil, keep, func(enc encoder, w io.Writer) error {
		return enc.object(p.ctx, w, in)
	}))
	if err != nil || obj == nil {
		return f.Size, err
	}
	f.Object = obj
	return obj.Size, nil
}

// publishDeltas adds f's deltas from each earlier version's content of it, newest first.
func (p *publisher) publishDeltas(f *manifest.File, content []byte, bar int64, bases []*earlier) error {
	seen := map[string]bool{f.SHA256: true}
	in := input{path: p.path(f.Name), size: f.Size, content: content}
	keep := func(n int64) bool { return keepDelta(n, bar) }
	for _, e := range bases {
		o := e.pair(*f)
		if o == nil || o.size > MaxDeltaFileSize || len(f.Deltas) >= manifest.MaxDeltas {
			continue
		}
		old, err := readSmall(p.fsys, o.path, o.size)
		if err != nil {
			return err
		}
		h := sha256.Sum256(old)
		sum := hex.EncodeToString(h[:])
		if seen[sum] {
			continue
		}
		seen[sum] = true
		base := input{path: o.path, size: int64(len(old)), content: old}
		what := fmt.Sprintf("the delta of %s from %s %s", f.Name, e.version, o.name)
		s, err := p.make(fileRecipe(what, *f, old, keep, func(enc encoder, w io.Writer) error {
			return enc.delta(p.ctx, w, in, base)
		}))
		if err != nil {
			return err
		}
		if s != nil {
			f.Deltas = append(f.Deltas, manifest.Delta{From: sum, Source: *s})
		}
	}
	return nil
}

// refusedError is a source the client's decoder does not accept.
type refusedError struct{ err error }

func (e *refusedError) Error() string { return e.err.Error() }
func (e *refusedError) Unwrap() error { return e.err }

// recipe is how one source is made and checked.
type recipe struct {
	what   string                // what it is, for messages
	keep   func(size int64) bool // whether a source of that size is worth publishing
	encode func(encoder, io.Writer) error
	// decode decodes the source r, which must be src, as an updater does.
	decode func(dec *delta.Decoder, r io.Reader, src delta.Want) error
}

// fileRecipe is the recipe of an object (base nil) or a delta of f.
func fileRecipe(what string, f manifest.File, base []byte, keep func(int64) bool, encode func(encoder, io.Writer) error) recipe {
	out := delta.Want{SHA256: f.SHA256, Size: f.Size}
	return recipe{what: what, keep: keep, encode: encode, decode: func(dec *delta.Decoder, r io.Reader, src delta.Want) error {
		// delta.Limits{}: the limits the updater passes.
		_, err := dec.Decode(io.Discard, r, src, base, out, delta.Limits{})
		return err
	}}
}

// make writes one source with r.encode, and publishes it when r.keep accepts its size and the
// updater's decoder its bytes. When the updater would refuse what the reference encoder made,
// the built-in encoder makes it instead, with a warning. It returns nil when keep refuses.
func (p *publisher) make(r recipe) (*manifest.Source, error) {
	enc := p.enc
	s, err := p.try(enc, r)
	var refused *refusedError
	if errors.As(err, &refused) && p.enc != p.builtin {
		p.warn(fmt.Sprintf("%s: the updater's decoder refuses what %s made (%v); made with the built-in encoder instead", r.what, p.enc, err))
		enc = p.builtin
		s, err = p.try(enc, r)
	}
	if err != nil {
		return nil, fmt.Errorf("cannot make %s with %s: %w", r.what, enc, err)
	}
	return s, nil
}

// try makes one source with enc in a temporary file of objDir, checks it, and renames it to
// objDir/<sha256>.zst. Nothing is left behind when it is not kept or fails.
func (p *publisher) try(enc encoder, r recipe) (*manifest.Source, error) {
	tmp := fsutil.TempName(p.objDir, "source")
	defer p.fsys.Remove(tmp) // gone after the rename; removes a refused one
	w, err := fsutil.Create(p.fsys, tmp)
	if err != nil {
		return nil, err
	}
	defer w.Close()
	if err := r.encode(enc, w); err != nil {
		return nil, err
	}
	if !r.keep(w.Size()) {
		return nil, nil
	}
	src := delta.Want{SHA256: w.SHA256(), Size: w.Size()}
	if err := p.check(tmp, src, r); err != nil {
		return nil, err
	}
	if err := w.Commit(fsutil.Attrs{Mode: 0o644}); err != nil {
		return nil, err
	}
	name := src.SHA256 + ".zst"
	// Named by content: a second file with the same source is the same file.
	if err := p.fsys.Rename(tmp, filepath.Join(p.objDir, name)); err != nil && !errors.Is(err, os.ErrExist) {
		return nil, err
	}
	return &manifest.Source{URL: SourcesDir + "/" + name, SHA256: src.SHA256, Size: src.Size}, nil
}

// check decodes the source written at tmp as an updater would, with its decoder and limits.
// A refusal is a *refusedError.
func (p *publisher) check(tmp string, src delta.Want, r recipe) error {
	f, err := p.fsys.Open(tmp)
	if err != nil {
		return fmt.Errorf("cannot read back %s: %w", tmp, err)
	}
	defer f.Close()
	dec := <-p.decoders
	defer func() { p.decoders <- dec }()
	if err := r.decode(dec, f, src); err != nil {
		if errors.Is(err, delta.ErrBadSource) {
			return &refusedError{err}
		}
		return fmt.Errorf("cannot read back %s: %w", tmp, err)
	}
	return nil
}

// readSmall returns a file's content when it is small enough to make deltas of, nil otherwise.
func readSmall(fsys afero.Fs, p string, size int64) ([]byte, error) {
	if size > MaxDeltaFileSize {
		return nil, nil
	}
	b, err := afero.ReadFile(fsys, p)
	if err != nil {
		return nil, fmt.Errorf("cannot read %s: %w", p, err)
	}
	return b, nil
}
