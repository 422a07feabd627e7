// Package release is the publisher side of sdupdate: it turns a directory of agent files into a
// published version that updaters can fetch.
//
// The output directory holds every version ever released beside the current manifest:
//
//	OUT/
//	├── manifest.json          the current version's manifest (base_url "<V>/")
//	├── manifest.json.zst      the same bytes, zstd-compressed
//	├── manifest.json.minisig  its minisign signature (signed releases)
//	├── 1.1.0/                 an earlier release, left as it was
//	└── 1.2.0/                 this release: FROM's files at their relative paths
//	    ├── agent.py
//	    ├── bin/sd-agent
//	    └── .sdupdate/         objects, deltas and packs, each named <sha256 of its bytes>.zst
//
// Each file gets a zstd-compressed object (kept when smaller than the file) and, from each of
// the Deltas latest earlier versions whose content of it differs, a zstd delta with that content
// as the dictionary (kept when markedly smaller than the object). The earlier content is the
// earlier version's file of the same name or, for a file that moved, the one with the same base
// name and the nearest size. Small files are also published together, in packs (see
// packThreshold). They are made by the built-in encoder or by the reference zstd program
// (Options.Zstd), and each is decoded back with the updater's own decoder and limits before it
// is published. Everything in a version directory is written once and never changed, so any
// server or CDN may cache it forever.
//
// A run never changes a published version: it refuses when OUT/<V> exists. The files are copied
// into OUT/.<V>.partial first and renamed to OUT/<V> only when all of them are written and
// synced, and the manifest is replaced last, atomically, so that a server never offers a
// manifest whose files are missing or half written. A leftover .partial directory from an
// interrupted run is removed by the next run of the same version.
package release

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"aead.dev/minisign"
	"github.com/spf13/afero"

	"github.com/sdupdate/sdupdate/delta"
	"github.com/sdupdate/sdupdate/fsutil"
	"github.com/sdupdate/sdupdate/manifest"
	"github.com/sdupdate/sdupdate/sign"
)

// ManifestName is the manifest's file name in the output directory; the signature is
// ManifestName + ".minisig".
const ManifestName = "manifest.json"

// ErrUsage is wrapped by every error caused by the arguments rather than by the files or the
// system (a missing or bad --from, --out, --version or --expires), so a command line can tell
// them apart with errors.Is.
var ErrUsage = errors.New("invalid arguments")

type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }
func (e *usageError) Unwrap() error { return ErrUsage }

func usagef(format string, args ...any) error {
	return &usageError{msg: fmt.Sprintf(format, args...)}
}

// MinExpiry is the shortest --expires accepted: a manifest that expires sooner would be refused
// by the updaters that fetch it while it is still being rolled out.
const MinExpiry = time.Hour

// maxExpiryDays is the most days a time.Duration holds (about 292 years).
const maxExpiryDays = int64(math.MaxInt64 / int64(24*time.Hour))

// ParseExpiry reads --expires: a whole number of days ("30d") or a Go duration ("720h"), at
// least MinExpiry. A value a time.Duration cannot hold is refused rather than wrapped around.
func ParseExpiry(s string) (time.Duration, error) {
	var d time.Duration
	if days, ok := strings.CutSuffix(s, "d"); ok {
		if days == "" || strings.Trim(days, "0123456789") != "" {
			return 0, usagef("expiry %q is not a whole number of days like 30d or a duration like 720h", s)
		}
		n, err := strconv.ParseInt(days, 10, 64)
		if err != nil || n > maxExpiryDays {
			return 0, usagef("expiry %q is too long: at most %dd", s, maxExpiryDays)
		}
		d = time.Duration(n) * 24 * time.Hour
	} else {
		var err error
		// ParseDuration refuses an overflow rather than wrapping it around.
		if d, err = time.ParseDuration(s); err != nil {
			return 0, usagef("expiry %q is not a whole number of days like 30d or a duration like 720h (at most %dd)", s, maxExpiryDays)
		}
	}
	if d < MinExpiry {
		return 0, usagef("expiry %q is too short: a manifest must stay valid at least %s after it is published", s, MinExpiry)
	}
	return d, nil
}

// Options describe one release.
type Options struct {
	From, Out, Version string
	SignKey            string                 // minisign secret key file, read through fsys; "" = unsigned
	Password           func() (string, error) // for an encrypted SignKey
	Expires            time.Duration          // 0 = no expires field
	// Deltas is how many of the latest earlier versions in Out each changed file gets a delta
	// from (the CLI's default is 3); 0 publishes compressed objects only.
	Deltas int
	// Zstd is the path of the reference zstd program (1.4.5 or later) to make the objects and
	// deltas with, `zstd -19`, instead of the built-in encoder; "" = the built-in encoder. It
	// reads the files where they are, so it needs fsys to be the operating system's.
	Zstd string
	Now  func() time.Time // nil = time.Now
}

// Result describes what was published.
type Result struct {
	ManifestPath  string
	SignaturePath string // "" when unsigned
	Files         int
	Bytes         int64
	Objects       int // files published with a compressed object
	Deltas        int // deltas published, all files together
	Packs         int // packs of small files published
	// EmptyDirs lists directories under From (relative slash paths) that hold no file and so
	// cannot be part of the release: a manifest lists files only. Worth a warning.
	EmptyDirs []string
	// Warnings are what the publisher should know though the release succeeded: a source the
	// reference encoder made that the updater's decoder refuses, and so was made again.
	Warnings []string
}

// source is one regular file found under From.
type source struct {
	name string // manifest name (relative slash path)
	path string // path in fsys
	mode os.FileMode
}

// Run publishes From as version Version into Out.
func Run(fsys afero.Fs, opts Options) (*Result, error) {
	return RunContext(context.Background(), fsys, opts)
}

// RunContext is Run; ctx ends the encoder programs it runs.
func RunContext(ctx context.Context, fsys afero.Fs, opts Options) (*Result, error) {
	now := time.Now
	if opts.Now != nil {
		now = opts.Now
	}
	if err := checkOptions(fsys, &opts); err != nil {
		return nil, err
	}
	versionDir := filepath.Join(opts.Out, opts.Version)
	manifestPath := filepath.Join(opts.Out, ManifestName)
	sigPath := manifestPath + ".minisig"

	// Everything that can be refused is refused before anything is written.
	key, err := signingKey(fsys, opts, sigPath)
	if err != nil {
		return nil, err
	}
	if err := checkUnpublished(fsys, versionDir); err != nil {
		return nil, err
	}
	sources, emptyDirs, err := scan(fsys, opts.From)
	if err != nil {
		return nil, err
	}
	p, err := newPublisher(ctx, fsys, opts)
	if err != nil {
		return nil, err
	}
	defer p.close()

	if err := fsys.MkdirAll(opts.Out, 0o755); err != nil {
		return nil, fmt.Errorf("cannot create %s: %w", opts.Out, err)
	}
	bases, err := earlierVersions(fsys, opts.Out, opts.Version, opts.Deltas)
	if err != nil {
		return nil, err
	}
	files, packs, total, err := copyVersion(p, sources, opts.Out, opts.Version, bases)
	if err != nil {
		return nil, err
	}

	m := &manifest.Manifest{Version: opts.Version, BaseURL: opts.Version + "/", Files: files, Packs: packs}
	if opts.Expires > 0 {
		m.Expires = now().Add(opts.Expires).UTC().Truncate(time.Second)
	}
	data, err := m.Marshal()
	if err != nil {
		return nil, fmt.Errorf("cannot write manifest: %w", err)
	}
	res := newResult(manifestPath, files, total, emptyDirs)
	res.Packs, res.Warnings = len(packs), p.warnings
	if key != nil {
		res.SignaturePath = sigPath
	}
	if err := publishManifest(fsys, data, manifestPath, sigPath, key, now()); err != nil {
		return nil, err
	}
	return res, nil
}

// signingKey reads opts.SignKey; with none, it refuses to leave an old signature beside the
// new unsigned manifest. It returns nil for an unsigned release.
func signingKey(fsys afero.Fs, opts Options, sigPath string) (*minisign.PrivateKey, error) {
	if opts.SignKey == "" {
		if _, err := fsys.Stat(sigPath); err == nil {
			// Left beside an unsigned manifest, the old signature would make every updater
			// that has a PublicKey report a tampered manifest.
			return nil, fmt.Errorf("%s exists from a signed release: sign this one too (--sign-key) or remove it first", sigPath)
		}
		return nil, nil
	}
	data, err := afero.ReadFile(fsys, opts.SignKey)
	if err != nil {
		return nil, fmt.Errorf("cannot read secret key: %w", err)
	}
	k, err := sign.ParseSecretKey(data, opts.Password)
	if err != nil {
		return nil, fmt.Errorf("secret key %s: %w", opts.SignKey, err)
	}
	return &k, nil
}

// checkUnpublished refuses a version that already has a directory in Out.
func checkUnpublished(fsys afero.Fs, versionDir string) error {
	if _, err := fsutil.Lstat(fsys, versionDir); err == nil {
		return fmt.Errorf("%s already exists: a published version is never changed, so release a new version (if an earlier run of this one was interrupted, remove it and run again)", versionDir)
	} else if !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("cannot check %s: %w", versionDir, err)
	}
	return nil
}

// newResult counts what the release published.
func newResult(manifestPath string, files []manifest.File, total int64, emptyDirs []string) *Result {
	res := &Result{ManifestPath: manifestPath, Files: len(files), Bytes: total, EmptyDirs: emptyDirs}
	for _, f := range files {
		if f.Object != nil {
			res.Objects++
		}
		res.Deltas += len(f.Deltas)
	}
	return res
}

// publishManifest writes the signature (when key is set), the compressed manifest and then
// the manifest itself, each atomically.
func publishManifest(fsys afero.Fs, data []byte, manifestPath, sigPath string, key *minisign.PrivateKey, now time.Time) error {
	if key != nil {
		sig := sign.Sign(*key, data, sign.TrustedComment(ManifestName, now))
		// The signature goes first and the manifest last: the manifest is what makes the
		// new version live.
		if err := fsutil.WriteFileAtomic(fsys, sigPath, sig, 0o644); err != nil {
			return fmt.Errorf("cannot write signature: %w", err)
		}
	}
	// The compressed copy before the manifest, for the same reason; the signature is over the
	// uncompressed bytes, which the copy decodes to exactly.
	var zst bytes.Buffer
	if err := delta.Encode(&zst, bytes.NewReader(data), int64(len(data)), nil); err != nil {
		return fmt.Errorf("cannot compress manifest: %w", err)
	}
	if err := fsutil.WriteFileAtomic(fsys, manifestPath+".zst", zst.Bytes(), 0o644); err != nil {
		return fmt.Errorf("cannot write compressed manifest: %w", err)
	}
	if err := fsutil.WriteFileAtomic(fsys, manifestPath, data, 0o644); err != nil {
		return fmt.Errorf("cannot write manifest: %w", err)
	}
	return nil
}

// checkOptions refuses bad arguments with errors wrapping ErrUsage.
func checkOptions(fsys afero.Fs, opts *Options) error {
	switch {
	case opts.From == "":
		return usagef("no source directory given (--from)")
	case opts.Out == "":
		return usagef("no output directory given (--out)")
	case opts.Version == "":
		return usagef("no version given (--version)")
	case opts.Expires < 0:
		return usagef("expiry %s is negative (--expires)", opts.Expires)
	case opts.Deltas < 0:
		return usagef("the number of earlier versions to make deltas from is negative (--deltas %d)", opts.Deltas)
	case opts.Expires > 0 && opts.Expires < MinExpiry:
		return usagef("expiry %s is shorter than %s (--expires)", opts.Expires, MinExpiry)
	}
	if _, err := manifest.CompareVersions(opts.Version, opts.Version); err != nil {
		return usagef("bad version (--version): %v", err)
	}
	// The version names a directory in Out and base_url: one plain path segment.
	if err := manifest.ValidateName(opts.Version); err != nil || strings.Contains(opts.Version, "/") {
		return usagef("version %q cannot be used as a directory name (--version)", opts.Version)
	}

	info, err := fsys.Stat(opts.From)
	if errors.Is(err, os.ErrNotExist) {
		return usagef("source directory %s does not exist (--from)", opts.From)
	} else if err != nil {
		return fmt.Errorf("cannot read source directory %s: %w", opts.From, err)
	}
	if !info.IsDir() {
		return usagef("source %s is not a directory (--from)", opts.From)
	}
	if _, ok := fsys.(*afero.OsFs); ok {
		// Walk would not enter a From that is itself a symlink to a directory.
		if resolved, err := filepath.EvalSymlinks(opts.From); err == nil {
			opts.From = resolved
		}
	}
	if inside(opts.From, opts.Out) {
		return usagef("output directory %s is inside the source directory %s: the release would copy itself", opts.Out, opts.From)
	}
	return nil
}

// inside reports whether path is dir or below it.
func inside(dir, path string) bool {
	absDir, err1 := filepath.Abs(dir)
	absPath, err2 := filepath.Abs(path)
	if err1 != nil || err2 != nil {
		return false
	}
	rel, err := filepath.Rel(absDir, absPath)
	return err == nil && rel != ".." && !strings.HasPrefix(rel, ".."+string(filepath.Separator))
}

// scan lists the regular files under from, sorted by name, and refuses anything a manifest
// cannot carry faithfully: symlinks, special files, names the contract refuses, and modes
// beyond permission bits. It also returns the directories that hold no file.
func scan(fsys afero.Fs, from string) ([]source, []string, error) {
	var sources []source
	var dirs []string
	err := afero.Walk(fsys, from, func(path string, info os.FileInfo, err error) error {
		if err != nil {
			return fmt.Errorf("cannot read %s: %w", path, err)
		}
		rel, err := filepath.Rel(from, path)
		if err != nil {
			return fmt.Errorf("cannot make %s relative to %s: %w", path, from, err)
		}
		if rel == "." {
			return nil
		}
		name := filepath.ToSlash(rel)
		switch t := info.Mode().Type(); {
		case t == os.ModeDir:
			dirs = append(dirs, name)
			return nil
		case t == os.ModeSymlink:
			return fmt.Errorf("%s is a symlink: a release holds regular files only (copy the file it points to, or remove it)", path)
		case t != 0:
			return fmt.Errorf("%s is a %s, not a regular file: a release holds regular files only", path, fsutil.FileKind(t))
		}
		if err := manifest.ValidateName(name); err != nil {
			return fmt.Errorf("%s cannot be published: %w", path, err)
		}
		if special := info.Mode() & (os.ModeSetuid | os.ModeSetgid | os.ModeSticky); special != 0 {
			return fmt.Errorf("%s has mode %v: a manifest carries permission bits only, so clear the setuid/setgid/sticky bit (chmod u-s,g-s,-t)", path, info.Mode())
		}
		sources = append(sources, source{name: name, path: path, mode: info.Mode().Perm()})
		return nil
	})
	if err != nil {
		return nil, nil, err
	}
	if len(sources) == 0 {
		return nil, nil, fmt.Errorf("%s holds no files to release", from)
	}
	// Walk visits a directory's entries in lexical order of their own names, which is not
	// the byte order of the full names ("a.b" < "a/b" but "a" is walked first); the manifest
	// lists files by full name.
	sort.Slice(sources, func(i, j int) bool { return sources[i].name < sources[j].name })
	return sources, emptyDirs(sources, dirs), nil
}

// emptyDirs returns those of dirs that hold no file of sources, at any depth.
func emptyDirs(sources []source, dirs []string) []string {
	holding := map[string]bool{}
	for _, s := range sources {
		for d := s.name; strings.Contains(d, "/"); {
			d = d[:strings.LastIndexByte(d, '/')]
			if holding[d] {
				break
			}
			holding[d] = true
		}
	}
	var empty []string
	for _, d := range dirs {
		if !holding[d] {
			empty = append(empty, d)
		}
	}
	return empty
}

// copyVersion copies sources into out/.<version>.partial with their objects, deltas and packs,
// syncs everything and renames it to out/<version>. It returns the manifest entries, hashed from
// the bytes actually written, and the packs.
func copyVersion(p *publisher, sources []source, out, version string, bases []*earlier) ([]manifest.File, []manifest.Pack, int64, error) {
	fsys := p.fsys
	final := filepath.Join(out, version)
	partial := filepath.Join(out, "."+version+".partial")
	if err := fsys.RemoveAll(partial); err != nil {
		return nil, nil, 0, fmt.Errorf("cannot remove the leftover %s of an interrupted release: %w", partial, err)
	}
	if err := fsys.Mkdir(partial, 0o755); err != nil {
		return nil, nil, 0, fmt.Errorf("cannot create %s: %w", partial, err)
	}
	done := false
	defer func() {
		if !done {
			_ = fsys.RemoveAll(partial)
		}
	}()

	dirs := map[string]bool{partial: true}
	files := make([]manifest.File, 0, len(sources))
	var total int64
	for _, s := range sources {
		created, err := fsutil.MkdirsUnder(fsys, partial, path.Dir(s.name), 0o755)
		if err != nil {
			return nil, nil, 0, err
		}
		for _, d := range created {
			dirs[d] = true
		}
		dst := filepath.Join(partial, filepath.FromSlash(s.name))
		sum, size, err := fsutil.CopyFile(fsys, s.path, dst, fsutil.Attrs{Mode: s.mode})
		if err != nil {
			return nil, nil, 0, err
		}
		files = append(files, manifest.File{Name: s.name, SHA256: sum, Size: size, Mode: s.mode, HasMode: true})
		total += size
	}
	p.dir, p.objDir = partial, filepath.Join(partial, SourcesDir)
	packs, err := p.publishSources(files, bases)
	if err != nil {
		return nil, nil, 0, err
	}
	// New directory entries must be durable before the rename publishes them.
	for d := range dirs {
		if err := fsutil.SyncDir(fsys, d); err != nil {
			return nil, nil, 0, err
		}
	}
	if err := fsys.Rename(partial, final); err != nil {
		return nil, nil, 0, fmt.Errorf("cannot rename %s to %s: %w", partial, final, err)
	}
	done = true
	if err := fsutil.SyncDir(fsys, out); err != nil {
		return nil, nil, 0, err
	}
	return files, packs, total, nil
}
