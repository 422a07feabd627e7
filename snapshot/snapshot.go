// Package snapshot owns the versioned backups of the agent's managed files: creating one before
// the first installed file changes, restoring one (automatic or manual rollback, crash recovery),
// verifying, listing and deleting them.
//
// On-disk layout, under Store.Dir (created 0700):
//
//	<Dir>/
//	├── 20261125T061502Z-1.0.0-3f9a2c/   one snapshot; the id sorts by creation time
//	│   ├── files/                      the managed files, at their install-relative paths
//	│   │   ├── agent.py                a hard link to the old installed inode (or a copy)
//	│   │   └── bin/sd-agent
//	│   ├── manifest                    the installed manifest's exact bytes (absent when none)
//	│   └── meta.json                   written last: a snapshot without it is incomplete
//	└── 20261126T080000Z-1.1.0-77b01e/
//
// Hard links cost nothing and are safe because installed files are only ever replaced by rename,
// never written in place: the old inode keeps the old bytes for as long as the snapshot links it.
// A snapshot is complete exactly when meta.json exists; a crash during Create leaves a directory
// without it, which List and Get ignore and Cleanup removes.
//
// A Store does no locking of its own: callers hold the sdupdate lock around every change.
package snapshot

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/spf13/afero"

	"github.com/sdupdate/sdupdate/fsutil"
	"github.com/sdupdate/sdupdate/manifest"
)

var (
	// ErrNotFound marks an id that names no complete snapshot.
	ErrNotFound = errors.New("no such snapshot")
	// ErrCorrupt marks a snapshot whose files, manifest or meta.json no longer match what was
	// recorded when it was created. Such a snapshot is never restored.
	ErrCorrupt = errors.New("snapshot is corrupt")
	// ErrExists marks a Create for an id that is already a complete snapshot.
	ErrExists = errors.New("snapshot already exists")
)

const (
	metaFile     = "meta.json"
	manifestFile = "manifest"
	filesDir     = "files"
)

// FileMeta records one managed file as it was when the snapshot was taken.
type FileMeta struct {
	Name   string      `json:"name"` // slash path relative to the install directory
	SHA256 string      `json:"sha256"`
	Size   int64       `json:"size"`
	Mode   os.FileMode `json:"mode"` // permission bits
	UID    int         `json:"uid"`  // -1 when unknown (in-memory fs)
	GID    int         `json:"gid"`
}

// Meta describes one complete snapshot.
type Meta struct {
	ID      string     `json:"id"`
	Version string     `json:"version"` // "" when the installed version was unknown
	Created time.Time  `json:"created"`
	Files   []FileMeta `json:"files"` // sorted by Name
	Bytes   int64      `json:"bytes"`
	// Manifest is the installed manifest at the time (opaque bytes), for the caller to put back
	// with the files. Get fills it with the exact bytes given to Create; List leaves it nil so
	// listing stays cheap. It is kept in its own file rather than inside meta.json because
	// encoding/json would re-encode raw JSON (compacting it, escaping <>&), and the bytes must
	// come back unchanged.
	Manifest json.RawMessage `json:"manifest,omitempty"`
	// ManifestSHA256 is the sha256 of Manifest, so a damaged manifest file is noticed.
	ManifestSHA256 string `json:"manifest_sha256,omitempty"`
	RunID          string `json:"run_id,omitempty"`
}

// Store keeps the snapshots of one install directory.
type Store struct {
	Fs         afero.Fs
	Dir        string // where snapshots live, e.g. /var/lib/sdupdate/snapshots
	InstallDir string
	Now        func() time.Time // nil = time.Now
}

func (s *Store) now() time.Time {
	if s.Now != nil {
		return s.Now()
	}
	return time.Now()
}

func (s *Store) snapDir(id string) string { return filepath.Join(s.Dir, id) }

func (s *Store) filePath(id, name string) string {
	return filepath.Join(s.Dir, id, filesDir, filepath.FromSlash(name))
}

func (s *Store) installPath(name string) string {
	return filepath.Join(s.InstallDir, filepath.FromSlash(name))
}

// NewID returns a snapshot id such as "20261125T061502Z-1.0.0-3f9a2c": it sorts by creation
// time, is safe as a directory name (the version is sanitized, "unknown" when empty) and carries
// a random suffix so two snapshots taken within one second do not collide.
func NewID(now time.Time, version string) string {
	v := sanitizeVersion(version)
	var b [3]byte
	_, _ = rand.Read(b[:])
	return now.UTC().Format("20060102T150405Z") + "-" + v + "-" + hex.EncodeToString(b[:])
}

func sanitizeVersion(version string) string {
	const maxLen = 64
	var sb strings.Builder
	for _, r := range version {
		if sb.Len() >= maxLen {
			break
		}
		if idChar(r) {
			sb.WriteRune(r)
		} else {
			sb.WriteByte('_')
		}
	}
	if sb.Len() == 0 {
		return "unknown"
	}
	return sb.String()
}

func idChar(r rune) bool {
	return r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' ||
		r == '.' || r == '_' || r == '+' || r == '-'
}

// checkID refuses an id that could name anything but a direct child of Dir (a user may type one
// with `sdupdate rollback --to`).
func checkID(id string) error {
	if id == "" || len(id) > 128 || id[0] == '.' || id[0] == '-' {
		return fmt.Errorf("%q is not a snapshot id", id)
	}
	for _, r := range id {
		if !idChar(r) {
			return fmt.Errorf("%q is not a snapshot id", id)
		}
	}
	return nil
}

// checkName refuses a managed name that is not a plain relative slash path inside the install
// directory. The manifest package validates names too; this keeps the snapshot safe on its own,
// since names are joined to paths that are written and removed.
func checkName(name string) error {
	if name == "" || strings.HasPrefix(name, "/") || strings.ContainsRune(name, '\\') {
		return fmt.Errorf("%q is not a relative slash path: %w", name, fsutil.ErrUnsafePath)
	}
	for _, r := range name {
		if r < 0x20 || r == 0x7f {
			return fmt.Errorf("%q contains a control character: %w", name, fsutil.ErrUnsafePath)
		}
	}
	for i, seg := range strings.Split(name, "/") {
		if seg == "" || seg == "." || seg == ".." {
			return fmt.Errorf("%q has an empty, . or .. segment: %w", name, fsutil.ErrUnsafePath)
		}
		if i == 0 && seg == manifest.ReservedName {
			return fmt.Errorf("%q lies in the reserved %s directory: %w", name, manifest.ReservedName, fsutil.ErrUnsafePath)
		}
	}
	return nil
}

// cleanNames validates names and returns them sorted without duplicates.
func cleanNames(names []string) ([]string, error) {
	seen := make(map[string]bool, len(names))
	out := make([]string, 0, len(names))
	for _, n := range names {
		if err := checkName(n); err != nil {
			return nil, err
		}
		if !seen[n] {
			seen[n] = true
			out = append(out, n)
		}
	}
	sort.Strings(out)
	return out, nil
}

// Create snapshots the managed files named in names that exist as regular files under
// InstallDir; a missing name is simply not in the snapshot (Restore then removes it). A name that
// runs through a symlink, or is not a regular file, fails Create before anything is written.
//
// Steps:
//  1. check every name (nothing written yet);
//  2. make Dir/<id>/files/, then per file: hard-link (or copy) it in, hash the snapshot's copy,
//     record size, mode and owner — checking ctx between files;
//  3. write the manifest's exact bytes (fsynced), fsync every directory made;
//  4. write meta.json last, atomically: only now is the snapshot complete.
//
// On failure the partial directory is removed; if even that fails (or the process dies), it stays
// incomplete and is never used, and Cleanup removes it.
func (s *Store) Create(ctx context.Context, id, version string, manifest []byte, runID string, names []string) (*Meta, error) {
	if err := checkID(id); err != nil {
		return nil, fmt.Errorf("cannot create snapshot: %w", err)
	}
	m, err := s.create(ctx, id, version, manifest, runID, names)
	if err != nil {
		return nil, fmt.Errorf("cannot create snapshot %s: %w", id, err)
	}
	return m, nil
}

func (s *Store) create(ctx context.Context, id, version string, manifest []byte, runID string, names []string) (*Meta, error) {
	// 1. Check every name; nothing is written yet.
	names, err := cleanNames(names)
	if err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	for _, n := range names {
		if _, err := fsutil.CheckPath(s.Fs, s.InstallDir, n); err != nil {
			return nil, err
		}
	}
	// 2. The snapshot's directories, then its files.
	toSync := map[string]bool{}
	dir, err := s.makeSnapDir(id, toSync)
	if err != nil {
		return nil, err
	}
	complete := false
	defer func() {
		if !complete {
			_ = s.Fs.RemoveAll(dir)
		}
	}()
	m := &Meta{ID: id, Version: version, Created: s.now().UTC(), RunID: runID, Files: []FileMeta{}}
	for _, n := range names {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		fm, made, err := s.addFile(id, n)
		for _, d := range made {
			toSync[d] = true
		}
		if err != nil {
			return nil, err
		}
		if fm != nil {
			m.Files = append(m.Files, *fm)
			m.Bytes += fm.Size
		}
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	// 3 and 4. The manifest, the directories, and meta.json last.
	if err := s.seal(m, manifest, toSync); err != nil {
		return nil, err
	}
	complete = true
	if len(manifest) > 0 {
		m.Manifest = append(json.RawMessage(nil), manifest...)
	}
	return m, nil
}

// makeSnapDir makes Dir (as needed) and Dir/<id>/files/, empty, and marks in toSync every
// directory whose entries it changed. A directory of the same id left by an interrupted Create
// is incomplete, so never used: it is started over.
func (s *Store) makeSnapDir(id string, toSync map[string]bool) (string, error) {
	created, err := fsutil.MkdirAll(s.Fs, s.Dir, 0o700)
	if err != nil {
		return "", err
	}
	for _, d := range created {
		toSync[d] = true
		toSync[filepath.Dir(d)] = true
	}
	dir := s.snapDir(id)
	if _, err := fsutil.Lstat(s.Fs, dir); err == nil {
		if _, err := fsutil.Lstat(s.Fs, filepath.Join(dir, metaFile)); err == nil {
			return "", ErrExists
		}
		if err := s.Fs.RemoveAll(dir); err != nil {
			return "", fmt.Errorf("cannot remove the incomplete %s: %w", dir, err)
		}
	}
	if err := s.Fs.Mkdir(dir, 0o700); err != nil {
		return "", fmt.Errorf("cannot create directory %s: %w", dir, err)
	}
	toSync[s.Dir] = true
	toSync[dir] = true
	if err := fsutil.Mkdir(s.Fs, filepath.Join(dir, filesDir), 0o700); err != nil {
		_ = s.Fs.RemoveAll(dir)
		return "", err
	}
	toSync[filepath.Join(dir, filesDir)] = true
	return dir, nil
}

// seal makes snapshot m complete: the manifest's exact bytes (fsynced), every directory in
// toSync, then meta.json, atomically.
func (s *Store) seal(m *Meta, manifest []byte, toSync map[string]bool) error {
	dir := s.snapDir(m.ID)
	if len(manifest) > 0 {
		sum := sha256.Sum256(manifest)
		m.ManifestSHA256 = hex.EncodeToString(sum[:])
		if err := fsutil.WriteFileAtomic(s.Fs, filepath.Join(dir, manifestFile), manifest, 0o600); err != nil {
			return err
		}
	}
	// Files written by copy were fsynced by fsutil.CopyFile; links and new directories only
	// exist once the directories holding them are synced.
	if err := fsutil.SyncDirs(s.Fs, toSync); err != nil {
		return err
	}
	data, err := json.MarshalIndent(onDisk(m), "", "  ")
	if err != nil {
		return fmt.Errorf("cannot encode its meta.json: %w", err)
	}
	return fsutil.WriteFileAtomic(s.Fs, filepath.Join(dir, metaFile), append(data, '\n'), 0o600)
}

// addFile puts one installed file into snapshot id. It returns nil when the file does not exist,
// and the directories it created (to be synced) in every case.
func (s *Store) addFile(id, name string) (*FileMeta, []string, error) {
	exists, err := fsutil.CheckPath(s.Fs, s.InstallDir, name)
	if err != nil || !exists {
		return nil, nil, err
	}
	src := s.installPath(name)
	fi, err := fsutil.Lstat(s.Fs, src)
	if err != nil {
		return nil, nil, fmt.Errorf("cannot inspect %s: %w", src, err)
	}
	made, err := fsutil.MkdirsUnder(s.Fs, filepath.Join(s.snapDir(id), filesDir), path.Dir(name), 0o700)
	if err != nil {
		return nil, made, err
	}
	dst := s.filePath(id, name)
	if err := fsutil.LinkOrCopy(s.Fs, src, dst, fi.Mode().Perm()); err != nil {
		return nil, made, err
	}
	// Hash what the snapshot holds, not what the install held a moment ago.
	sum, size, err := fsutil.HashFile(s.Fs, dst)
	if err != nil {
		return nil, made, err
	}
	fm := &FileMeta{Name: name, SHA256: sum, Size: size, Mode: fi.Mode().Perm(), UID: -1, GID: -1}
	if uid, gid, ok := fsutil.Owner(fi); ok {
		fm.UID, fm.GID = uid, gid
	}
	return fm, made, nil
}

// onDisk is m as meta.json holds it: the manifest lives in its own file.
func onDisk(m *Meta) *Meta {
	c := *m
	c.Manifest = nil
	return &c
}

// readMeta loads Dir/<id>/meta.json. It returns an error wrapping os.ErrNotExist when the
// snapshot is absent or incomplete, and ErrCorrupt when meta.json does not describe a sound
// snapshot.
func (s *Store) readMeta(id string) (*Meta, error) {
	p := filepath.Join(s.snapDir(id), metaFile)
	data, err := afero.ReadFile(s.Fs, p)
	if err != nil {
		return nil, fmt.Errorf("cannot read %s: %w", p, err)
	}
	var m Meta
	if err := json.Unmarshal(data, &m); err != nil {
		return nil, fmt.Errorf("cannot parse %s (%v): %w", p, err, ErrCorrupt)
	}
	if err := checkMeta(id, &m); err != nil {
		return nil, fmt.Errorf("%s: %s: %w", p, err, ErrCorrupt)
	}
	m.Manifest = nil
	return &m, nil
}

func checkMeta(id string, m *Meta) error {
	if m.ID != id {
		return fmt.Errorf("it names snapshot %q", m.ID)
	}
	var total int64
	for i, f := range m.Files {
		if err := checkName(f.Name); err != nil {
			return err
		}
		if i > 0 && m.Files[i-1].Name >= f.Name {
			return fmt.Errorf("files are not sorted or repeat %q", f.Name)
		}
		if b, err := hex.DecodeString(f.SHA256); err != nil || len(b) != sha256.Size {
			return fmt.Errorf("%s has no valid sha256", f.Name)
		}
		if f.Size < 0 || f.Mode&^os.ModePerm != 0 {
			return fmt.Errorf("%s has an invalid size or mode", f.Name)
		}
		total += f.Size
	}
	if total != m.Bytes {
		return fmt.Errorf("bytes %d do not add up to %d", m.Bytes, total)
	}
	return nil
}

// List returns the complete snapshots, newest first (by Created, then ID). Incomplete ones are
// skipped. A snapshot whose meta.json is unreadable is reported in err (wrapping ErrCorrupt),
// while the slice still holds every readable snapshot. Manifest is left nil; Get fills it.
func (s *Store) List() ([]Meta, error) {
	entries, err := afero.ReadDir(s.Fs, s.Dir)
	if errors.Is(err, os.ErrNotExist) {
		return []Meta{}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("cannot list snapshots in %s: %w", s.Dir, err)
	}
	out := []Meta{}
	var errs []error
	for _, e := range entries {
		if !e.IsDir() || checkID(e.Name()) != nil {
			continue
		}
		m, err := s.readMeta(e.Name())
		if errors.Is(err, os.ErrNotExist) {
			continue // incomplete
		}
		if err != nil {
			errs = append(errs, err)
			continue
		}
		out = append(out, *m)
	}
	sort.Slice(out, func(i, j int) bool {
		if !out[i].Created.Equal(out[j].Created) {
			return out[i].Created.After(out[j].Created)
		}
		return out[i].ID > out[j].ID
	})
	if len(errs) > 0 {
		return out, fmt.Errorf("cannot read every snapshot in %s: %w", s.Dir, errors.Join(errs...))
	}
	return out, nil
}

// Get returns the complete snapshot id with its Manifest filled in. An unknown or incomplete id
// wraps ErrNotFound; a damaged meta.json or manifest wraps ErrCorrupt.
func (s *Store) Get(id string) (*Meta, error) {
	if err := checkID(id); err != nil {
		return nil, fmt.Errorf("unknown snapshot %q (run \"sdupdate snapshots\" to list them): %w", id, ErrNotFound)
	}
	m, err := s.readMeta(id)
	if errors.Is(err, os.ErrNotExist) {
		if _, derr := fsutil.Lstat(s.Fs, s.snapDir(id)); derr == nil {
			return nil, fmt.Errorf("snapshot %s is incomplete (its creation was interrupted) and cannot be used; run \"sdupdate snapshots\" to list usable ones: %w", id, ErrNotFound)
		}
		return nil, fmt.Errorf("unknown snapshot %q (run \"sdupdate snapshots\" to list them): %w", id, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("cannot use snapshot %s: %w", id, err)
	}
	if m.ManifestSHA256 != "" {
		p := filepath.Join(s.snapDir(id), manifestFile)
		data, err := afero.ReadFile(s.Fs, p)
		if err != nil {
			return nil, fmt.Errorf("cannot use snapshot %s: cannot read its manifest %s (%v): %w", id, p, err, ErrCorrupt)
		}
		sum := sha256.Sum256(data)
		if hex.EncodeToString(sum[:]) != m.ManifestSHA256 {
			return nil, fmt.Errorf("cannot use snapshot %s: its manifest %s does not match the recorded sha256: %w", id, p, ErrCorrupt)
		}
		m.Manifest = data
	}
	return m, nil
}

// Verify re-hashes the snapshot's files (and manifest) against its meta. Every mismatch is
// named in one error wrapping ErrCorrupt.
func (s *Store) Verify(id string) error {
	m, err := s.Get(id)
	if err != nil {
		return err
	}
	return s.verifyFiles(context.Background(), m)
}

func (s *Store) verifyFiles(ctx context.Context, m *Meta) error {
	var problems []string
	for _, f := range m.Files {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("cannot verify snapshot %s: %w", m.ID, err)
		}
		p := s.filePath(m.ID, f.Name)
		fi, err := fsutil.Lstat(s.Fs, p)
		switch {
		case errors.Is(err, os.ErrNotExist):
			problems = append(problems, f.Name+" is missing")
			continue
		case err != nil:
			return fmt.Errorf("cannot verify snapshot %s: cannot inspect %s: %w", m.ID, p, err)
		case !fi.Mode().IsRegular():
			problems = append(problems, f.Name+" is not a regular file")
			continue
		}
		sum, size, err := fsutil.HashFile(s.Fs, p)
		if err != nil {
			return fmt.Errorf("cannot verify snapshot %s: %w", m.ID, err)
		}
		if sum != f.SHA256 || size != f.Size {
			problems = append(problems, fmt.Sprintf("%s has sha256 %s (%d bytes), recorded %s (%d bytes)", f.Name, sum, size, f.SHA256, f.Size))
		}
	}
	if len(problems) > 0 {
		return fmt.Errorf("snapshot %s in %s: %s: %w", m.ID, s.snapDir(m.ID), strings.Join(problems, "; "), ErrCorrupt)
	}
	return nil
}

// Delete removes snapshot id, complete or not. meta.json goes first (and that is synced), so a
// crash halfway leaves an incomplete snapshot, never one that looks whole but lacks files.
func (s *Store) Delete(id string) error {
	if err := checkID(id); err != nil {
		return fmt.Errorf("cannot delete snapshot: unknown snapshot %q: %w", id, ErrNotFound)
	}
	dir := s.snapDir(id)
	fi, err := fsutil.Lstat(s.Fs, dir)
	if errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("cannot delete snapshot: unknown snapshot %q (run \"sdupdate snapshots\" to list them): %w", id, ErrNotFound)
	}
	if err != nil {
		return fmt.Errorf("cannot delete snapshot %s: %w", id, err)
	}
	if !fi.IsDir() {
		return fmt.Errorf("cannot delete snapshot %s: %s is not a directory: %w", id, dir, ErrNotFound)
	}
	if err := s.Fs.Remove(filepath.Join(dir, metaFile)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("cannot delete snapshot %s: %w", id, err)
	}
	if err := fsutil.SyncDir(s.Fs, dir); err != nil {
		return fmt.Errorf("cannot delete snapshot %s: %w", id, err)
	}
	if err := s.Fs.RemoveAll(dir); err != nil {
		return fmt.Errorf("cannot delete snapshot %s: %w", id, err)
	}
	if err := fsutil.SyncDir(s.Fs, s.Dir); err != nil {
		return fmt.Errorf("cannot delete snapshot %s: %w", id, err)
	}
	return nil
}

// Cleanup removes incomplete snapshots (a directory without meta.json), the garbage of a crash
// during Create, and returns their ids. Call it only under the sdupdate lock: a Create running
// meanwhile looks incomplete too.
func (s *Store) Cleanup() ([]string, error) {
	entries, err := afero.ReadDir(s.Fs, s.Dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("cannot list snapshots in %s: %w", s.Dir, err)
	}
	var removed []string
	var errs []error
	for _, e := range entries {
		if !e.IsDir() || checkID(e.Name()) != nil {
			continue
		}
		_, err := fsutil.Lstat(s.Fs, filepath.Join(s.snapDir(e.Name()), metaFile))
		if err == nil {
			continue
		}
		if !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, fmt.Errorf("cannot inspect snapshot %s: %w", e.Name(), err))
			continue
		}
		if err := s.Fs.RemoveAll(s.snapDir(e.Name())); err != nil {
			errs = append(errs, fmt.Errorf("cannot remove incomplete snapshot %s: %w", e.Name(), err))
			continue
		}
		removed = append(removed, e.Name())
	}
	if len(removed) > 0 {
		if err := fsutil.SyncDir(s.Fs, s.Dir); err != nil {
			errs = append(errs, err)
		}
	}
	return removed, errors.Join(errs...)
}
