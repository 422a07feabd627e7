package release

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"

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
	sum        string // filled in when first needed
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

// publishSources writes each file's compressed object and its deltas from the earlier versions
// into dir/SourcesDir and records them in files. An object is kept only when smaller than the
// file, a delta only when markedly smaller than the object (keepDelta).
func publishSources(fsys afero.Fs, dir string, files []manifest.File, bases []*earlier) error {
	objDir := filepath.Join(dir, SourcesDir)
	if err := fsys.Mkdir(objDir, 0o755); err != nil {
		return fmt.Errorf("cannot create %s: %w", objDir, err)
	}
	for i := range files {
		f := &files[i]
		content, err := readSmall(fsys, filepath.Join(dir, filepath.FromSlash(f.Name)), f.Size)
		if err != nil {
			return err
		}
		bar, err := publishObject(fsys, dir, objDir, f, content)
		if err != nil {
			return err
		}
		if content == nil {
			continue
		}
		if err := publishDeltas(fsys, objDir, f, content, bar, bases); err != nil {
			return err
		}
	}
	return fsutil.SyncDir(fsys, objDir)
}

// publishObject writes f's compressed object and lists it when smaller than the file. It returns
// what a delta must beat: the object's size, or the file's when there is no object. A file
// whose first MiB does not compress gets none, without compressing the rest.
func publishObject(fsys afero.Fs, dir, objDir string, f *manifest.File, content []byte) (int64, error) {
	src := filepath.Join(dir, filepath.FromSlash(f.Name))
	open := func() (io.ReadCloser, error) {
		if content != nil {
			return io.NopCloser(bytes.NewReader(content)), nil
		}
		return fsys.Open(src)
	}
	in, err := open()
	if err != nil {
		return 0, fmt.Errorf("cannot read %s: %w", src, err)
	}
	sample, err := io.ReadAll(io.LimitReader(in, 1<<20))
	in.Close()
	if err != nil {
		return 0, fmt.Errorf("cannot read %s: %w", src, err)
	}
	if !delta.Compressible(sample) {
		return f.Size, nil
	}
	obj, err := writeSource(fsys, objDir, func(w io.Writer) error {
		in, err := open()
		if err != nil {
			return err
		}
		defer in.Close()
		return delta.Encode(w, in, f.Size, nil)
	})
	if err != nil {
		return 0, fmt.Errorf("cannot compress %s: %w", src, err)
	}
	if obj.Size < f.Size {
		f.Object = obj
		return obj.Size, nil
	}
	if err := fsys.Remove(filepath.Join(dir, filepath.FromSlash(obj.URL))); err != nil {
		return 0, fmt.Errorf("cannot remove an object larger than its file: %w", err)
	}
	return f.Size, nil
}

// publishDeltas adds f's deltas from each earlier version's content of it, newest first.
func publishDeltas(fsys afero.Fs, objDir string, f *manifest.File, content []byte, bar int64, bases []*earlier) error {
	seen := map[string]bool{f.SHA256: true}
	for _, e := range bases {
		o := e.pair(*f)
		if o == nil || o.size > MaxDeltaFileSize || len(f.Deltas) >= manifest.MaxDeltas {
			continue
		}
		old, err := readSmall(fsys, o.path, o.size)
		if err != nil {
			return err
		}
		sum := sha256.Sum256(old)
		o.sum = hex.EncodeToString(sum[:])
		if seen[o.sum] {
			continue
		}
		seen[o.sum] = true
		var buf bytes.Buffer
		if err := delta.Encode(&buf, bytes.NewReader(content), f.Size, old); err != nil {
			return fmt.Errorf("cannot make the delta of %s from %s %s: %w", f.Name, e.version, o.name, err)
		}
		if !keepDelta(int64(buf.Len()), bar) {
			continue
		}
		s, err := writeSource(fsys, objDir, func(w io.Writer) error { _, err := w.Write(buf.Bytes()); return err })
		if err != nil {
			return fmt.Errorf("cannot write the delta of %s from %s: %w", f.Name, e.version, err)
		}
		f.Deltas = append(f.Deltas, manifest.Delta{From: o.sum, Source: *s})
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

// writeSource writes what fill produces to objDir/<sha256>.zst, synced, and returns it as a
// source whose URL is relative to the version directory.
func writeSource(fsys afero.Fs, objDir string, fill func(io.Writer) error) (*manifest.Source, error) {
	tmp := fsutil.TempName(objDir, "object")
	defer fsys.Remove(tmp) // gone after the rename; removes a failed one
	w, err := fsutil.Create(fsys, tmp)
	if err != nil {
		return nil, err
	}
	defer w.Close()
	if err := fill(w); err != nil {
		return nil, err
	}
	if err := w.Commit(fsutil.Attrs{Mode: 0o644}); err != nil {
		return nil, err
	}
	sum := w.SHA256()
	name := sum + ".zst"
	// Named by content: a second file with the same object is the same file.
	if err := fsys.Rename(tmp, filepath.Join(objDir, name)); err != nil && !errors.Is(err, os.ErrExist) {
		return nil, err
	}
	return &manifest.Source{URL: SourcesDir + "/" + name, SHA256: sum, Size: w.Size()}, nil
}
