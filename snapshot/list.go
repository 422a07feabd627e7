package snapshot

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"sync"
	"time"

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

// readRecordFile reads Dir/<id>/record.json, or the legacy meta.json when there is no record.
// It returns an error wrapping os.ErrNotExist when the snapshot is absent or incomplete.
func (s *Store) readRecordFile(id string) (data []byte, p string, legacy bool, err error) {
	p = filepath.Join(s.snapDir(id), recordFile)
	data, err = afero.ReadFile(s.Fs, p)
	legacy = errors.Is(err, os.ErrNotExist)
	if legacy {
		p = filepath.Join(s.snapDir(id), legacyMetaFile)
		data, err = afero.ReadFile(s.Fs, p)
	}
	if err != nil {
		return nil, p, legacy, fmt.Errorf("cannot read %s: %w", p, err)
	}
	return data, p, legacy, nil
}

// readRecord loads snapshot id whole. It returns an error wrapping os.ErrNotExist when the
// snapshot is absent or incomplete, and ErrCorrupt when what it finds does not describe a sound
// snapshot.
func (s *Store) readRecord(id string) (*Meta, error) {
	data, p, legacy, err := s.readRecordFile(id)
	if err != nil {
		return nil, err
	}
	var m *Meta
	if !legacy && isFormat3(data) {
		m, err = parseRecord(id, data)
	} else {
		m, err = parseDocument(id, data, legacy)
	}
	if err != nil {
		return nil, fmt.Errorf("%s: %s: %w", p, err, ErrCorrupt)
	}
	return m, nil
}

// readEntry loads what a listing and retention need of snapshot id: its head and the objects it
// names. A record of format 3 is hashed, not decoded; an older one is decoded whole.
func (s *Store) readEntry(id string) (*entry, error) {
	data, p, legacy, err := s.readRecordFile(id)
	if err != nil {
		return nil, err
	}
	if !legacy && isFormat3(data) {
		e, err := parseEntry(id, data)
		if err != nil {
			return nil, fmt.Errorf("%s: %s: %w", p, err, ErrCorrupt)
		}
		return e, nil
	}
	m, err := parseDocument(id, data, legacy)
	if err != nil {
		return nil, fmt.Errorf("%s: %s: %w", p, err, ErrCorrupt)
	}
	return &entry{Header: m.Header(), objects: namedObjects(m.Files)}, nil
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

// records reads every complete snapshot whole, newest first (by Created, then ID). A snapshot
// that cannot be read is reported in err (wrapping ErrCorrupt), while the slice still holds
// every readable one.
func (s *Store) records() ([]Meta, error) {
	metas, err := readEach(s, func(string) (bool, error) { return true, nil }, s.readRecord)
	sortNewestFirst(metas, func(m *Meta) (time.Time, string) { return m.Created, m.ID })
	return metas, err
}

// readEach reads, with read, the snapshots that want admits; want is asked before a record is
// read. A snapshot that is absent or incomplete is skipped. The records are read a few at once,
// as many as there are CPUs: each is hashed whole, and an update's retention reads every one.
func readEach[T any](s *Store, want func(id string) (bool, error), read func(id string) (*T, error)) ([]T, error) {
	ids, err := s.ids()
	if err != nil {
		return nil, err
	}
	vals := make([]*T, len(ids))
	errs := make([]error, len(ids))
	slots := make(chan struct{}, runtime.GOMAXPROCS(0))
	var wg sync.WaitGroup
	for i, id := range ids {
		ok, err := want(id)
		if err != nil || !ok {
			errs[i] = err
			continue
		}
		slots <- struct{}{}
		wg.Go(func() {
			defer func() { <-slots }()
			vals[i], errs[i] = read(id)
		})
	}
	wg.Wait()
	out := []T{}
	var failed []error
	for i := range ids {
		if errs[i] == nil && vals[i] != nil {
			out = append(out, *vals[i])
		}
		if errs[i] != nil && !errors.Is(errs[i], os.ErrNotExist) { // not there: incomplete
			failed = append(failed, errs[i])
		}
	}
	if len(failed) > 0 {
		return out, fmt.Errorf("cannot read every snapshot in %s: %w", s.Dir, errors.Join(failed...))
	}
	return out, nil
}

// Catalog is what the records of one store say, each read once and none decoded whole: the
// complete snapshots, newest first, and the objects each names.
type Catalog struct {
	Snapshots []Header
	objects   map[string][]string // by id
}

// Catalog reads the head and objects of every complete snapshot: what choosing a rollback
// target or the snapshots to prune needs, at a small part of the cost of List. A snapshot that
// cannot be read (its record damaged anywhere) is reported in err, wrapping ErrCorrupt, while
// the Catalog still holds every readable one.
func (s *Store) Catalog() (*Catalog, error) {
	entries, err := readEach(s, func(string) (bool, error) { return true, nil }, s.readEntry)
	if entries == nil {
		return nil, err
	}
	sortNewestFirst(entries, func(e *entry) (time.Time, string) { return e.Created, e.ID })
	c := &Catalog{Snapshots: make([]Header, 0, len(entries)), objects: make(map[string][]string, len(entries))}
	for _, e := range entries {
		c.Snapshots = append(c.Snapshots, e.Header)
		c.objects[e.ID] = e.objects
	}
	return c, err
}

// Objects returns the content snapshot id names, each sha256 once, sorted; nil when c does not
// hold it.
func (c *Catalog) Objects(id string) []string {
	objs, _ := c.objectsOf(id)
	return objs
}

// objectsOf returns the objects snapshot id names, and whether c holds it; c may be nil.
func (c *Catalog) objectsOf(id string) ([]string, bool) {
	if c == nil {
		return nil, false
	}
	objs, ok := c.objects[id]
	return objs, ok
}

// sortNewestFirst orders snapshots by Created, then ID, newest first; key gives both.
func sortNewestFirst[T any](list []T, key func(*T) (time.Time, string)) {
	sort.Slice(list, func(i, j int) bool {
		ci, idi := key(&list[i])
		cj, idj := key(&list[j])
		if !ci.Equal(cj) {
			return ci.After(cj)
		}
		return idi > idj
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
