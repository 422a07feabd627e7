package snapshot

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"

	"github.com/spf13/afero"

	"github.com/sdupdate/sdupdate/fsutil"
)

// Summary is a complete snapshot as `sdupdate snapshots` shows it.
type Summary struct {
	Meta
	// Held is how many bytes of the store this snapshot's content takes, each object counted
	// once however many of its files name it (a legacy snapshot: the size of its files).
	Held int64
	// Complete is false when some file's content is neither in the store nor, as far as stat
	// tells, in the install: the installed file is missing, has another size, or its stamp
	// shows a change. A restore hashes such a file, and leaves it as modified locally if it
	// differs.
	Complete bool
}

// readRecord loads Dir/<id>/record.json, or the legacy meta.json when there is no record. It
// returns an error wrapping os.ErrNotExist when the snapshot is absent or incomplete, and
// ErrCorrupt when what it finds does not describe a sound snapshot.
func (s *Store) readRecord(id string) (*Meta, error) {
	p := filepath.Join(s.snapDir(id), recordFile)
	data, err := afero.ReadFile(s.Fs, p)
	legacy := errors.Is(err, os.ErrNotExist)
	if legacy {
		p = filepath.Join(s.snapDir(id), legacyMetaFile)
		data, err = afero.ReadFile(s.Fs, p)
	}
	if err != nil {
		return nil, fmt.Errorf("cannot read %s: %w", p, err)
	}
	var m Meta
	if err := json.Unmarshal(data, &m); err != nil {
		return nil, fmt.Errorf("cannot parse %s (%v): %w", p, err, ErrCorrupt)
	}
	if !legacy && m.Format != recordFormat {
		return nil, fmt.Errorf("%s has format %d, this sdupdate knows %d: %w", p, m.Format, recordFormat, ErrCorrupt)
	}
	if err := checkMeta(id, &m); err != nil {
		return nil, fmt.Errorf("%s: %s: %w", p, err, ErrCorrupt)
	}
	m.Legacy = legacy
	if legacy {
		m.Dirs = nil
		for i := range m.Files {
			m.Files[i].Stored, m.Files[i].Stamp = false, nil
		}
	}
	return &m, nil
}

// ids lists the entries of Dir that may be snapshots.
func (s *Store) ids() ([]string, error) {
	entries, err := afero.ReadDir(s.Fs, s.Dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("cannot list snapshots in %s: %w", s.Dir, err)
	}
	var out []string
	for _, e := range entries {
		if e.IsDir() && checkID(e.Name()) == nil {
			out = append(out, e.Name())
		}
	}
	return out, nil
}

// records reads every complete snapshot, newest first (by Created, then ID). A snapshot that
// cannot be read is reported in err (wrapping ErrCorrupt), while the slice still holds every
// readable one.
func (s *Store) records() ([]Meta, error) {
	return s.readEach(func(string) (bool, error) { return true, nil })
}

// readEach is records for the snapshots that want admits; want is asked before a record is read.
func (s *Store) readEach(want func(id string) (bool, error)) ([]Meta, error) {
	ids, err := s.ids()
	if err != nil {
		return nil, err
	}
	out := []Meta{}
	var errs []error
	for _, id := range ids {
		ok, err := want(id)
		if err == nil && ok {
			var m *Meta
			if m, err = s.readRecord(id); err == nil {
				out = append(out, *m)
			}
		}
		if err != nil && !errors.Is(err, os.ErrNotExist) { // not there: incomplete
			errs = append(errs, err)
		}
	}
	sortNewestFirst(out)
	if len(errs) > 0 {
		return out, fmt.Errorf("cannot read every snapshot in %s: %w", s.Dir, errors.Join(errs...))
	}
	return out, nil
}

// sortNewestFirst orders snapshots by Created, then ID, newest first.
func sortNewestFirst(metas []Meta) {
	sort.Slice(metas, func(i, j int) bool {
		if !metas[i].Created.Equal(metas[j].Created) {
			return metas[i].Created.After(metas[j].Created)
		}
		return metas[i].ID > metas[j].ID
	})
}

// objects returns the size of every object in the store, by sha256.
func (s *Store) objects() (map[string]int64, error) {
	dir := filepath.Join(s.Dir, objectsDir)
	entries, err := afero.ReadDir(s.Fs, dir)
	if errors.Is(err, os.ErrNotExist) {
		return map[string]int64{}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("cannot list %s: %w", dir, err)
	}
	out := make(map[string]int64, len(entries))
	for _, e := range entries {
		if e.Mode().IsRegular() && checkSum(e.Name()) == nil {
			out[e.Name()] = e.Size()
		}
	}
	return out, nil
}

// List returns the complete snapshots, newest first, with the bytes each holds and whether each
// is complete. Incomplete ones are skipped; one that cannot be read is reported in err (wrapping
// ErrCorrupt) while the slice still holds every readable one. Manifest is left nil; Get fills it.
func (s *Store) List() ([]Summary, error) {
	metas, rerr := s.records()
	if metas == nil {
		return nil, rerr
	}
	objs, err := s.objects()
	if err != nil {
		return nil, err
	}
	out := make([]Summary, 0, len(metas))
	for _, m := range metas {
		out = append(out, s.summarize(m, objs))
	}
	return out, rerr
}

func (s *Store) summarize(m Meta, objs map[string]int64) Summary {
	sum := Summary{Meta: m, Complete: true}
	if m.Legacy {
		sum.Held = m.Bytes
		return sum
	}
	seen := map[string]bool{}
	for _, f := range m.Files {
		if size, ok := objs[f.SHA256]; ok && size == f.Size {
			if !seen[f.SHA256] {
				seen[f.SHA256] = true
				sum.Held += size
			}
			continue
		}
		fi, err := fsutil.Lstat(s.Fs, s.installPath(f.Name))
		if err != nil || !fi.Mode().IsRegular() || fi.Size() != f.Size || f.Stamp.Known() && !f.Stamp.Unchanged(fi) {
			sum.Complete = false
		}
	}
	return sum
}

// StoreBytes is the disk the store's objects take, each counted once.
func (s *Store) StoreBytes() (int64, error) {
	objs, err := s.objects()
	if err != nil {
		return 0, err
	}
	var n int64
	for _, size := range objs {
		n += size
	}
	return n, nil
}

// Get returns the complete snapshot id with its Manifest filled in. An unknown or incomplete id
// wraps ErrNotFound; a damaged record or manifest wraps ErrCorrupt.
func (s *Store) Get(id string) (*Meta, error) {
	if err := checkID(id); err != nil {
		return nil, fmt.Errorf("unknown snapshot %q (run \"sdupdate snapshots\" to list them): %w", id, ErrNotFound)
	}
	m, err := s.readRecord(id)
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
