// Package statindex remembers, for each managed file, the stat of the inode whose sha256 was
// last computed or verified, so that a plan trusts a file whose stat has not changed and hashes
// only the rest — git's index, for the same reason: reading a gigabyte to learn that ten files
// changed costs what is installed, not what changed.
//
// The index is an optimisation only. A missing, stale or damaged index costs time, never
// correctness: an entry is trusted only when the file's size, mtime, ctime, inode and device all
// match it and its mtime is older than the index's own write time (git's "racy" rule: a file
// changed within the timestamp granularity of the moment it was recorded has the same mtime,
// so it is hashed again). ctime changes with every content or metadata change, link and unlink
// of other names of the inode included — a snapshot's hard links and their removal too — so the
// engine refreshes the entries of the files such a step touched (see Refresh).
//
// On disk, one text file written atomically (temp file, fsync, rename, fsync of the directory):
//
//	sdupdate-index 1
//	installed <sha256 of the installed manifest's bytes this index describes>
//	<size> <mtime ns> <ctime ns> <inode> <device> <sha256> <name>     one line per file
//	end <sha256 of every byte above this line>
//
// Names come last on their line: a manifest name has no control characters, so no newline.
package statindex

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"strconv"
	"syscall"

	"github.com/spf13/afero"

	"github.com/sdupdate/sdupdate/fsutil"
)

const header = "sdupdate-index 1\n"

// Stat is what the index compares of a file.
type Stat struct {
	Size         int64
	Mtime, Ctime int64 // nanoseconds since the epoch
	Ino, Dev     uint64
}

// StatOf returns fi's Stat. A filesystem that reports no inode (afero's in-memory one in tests)
// gives size and mtime only, which such a filesystem keeps exactly.
func StatOf(fi os.FileInfo) Stat {
	st := Stat{Size: fi.Size(), Mtime: fi.ModTime().UnixNano()}
	if sys, ok := fi.Sys().(*syscall.Stat_t); ok {
		st.Ctime = sys.Ctim.Sec*1e9 + sys.Ctim.Nsec
		st.Ino, st.Dev = sys.Ino, uint64(sys.Dev)
	}
	return st
}

type entry struct {
	st  Stat
	sum string
}

// Index maps managed names to the stat and sha256 of their installed file. Not safe for
// concurrent use.
type Index struct {
	// Installed is the sha256 of the installed manifest this index describes; an index loaded
	// for another manifest is not used.
	Installed string
	written   int64 // mtime of the index file as loaded: the racy limit; 0 = not loaded
	entries   map[string]entry
}

// New returns an empty index for the installed manifest whose bytes hash to installed.
func New(installed string) *Index { return NewSized(installed, 0) }

// NewSized is New for an index that will hold about n entries: a plan of 150,000 files would
// otherwise spend a tenth of its time growing the map.
func NewSized(installed string, n int) *Index {
	return &Index{Installed: installed, entries: make(map[string]entry, n)}
}

// SumOf returns the hex sha256 of b, as Installed holds it.
func SumOf(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// Lookup returns the sha256 recorded for name if st matches the recorded stat exactly and the
// file's mtime is older than the index file itself.
func (x *Index) Lookup(name string, st Stat) (string, bool) {
	if x == nil {
		return "", false
	}
	e, ok := x.entries[name]
	if !ok || e.st != st || st.Mtime >= x.written {
		return "", false
	}
	return e.sum, true
}

// Set records that name, with stat st, has content sum.
func (x *Index) Set(name string, st Stat, sum string) { x.entries[name] = entry{st: st, sum: sum} }

// Delete forgets name.
func (x *Index) Delete(name string) { delete(x.entries, name) }

// Len is the number of entries.
func (x *Index) Len() int { return len(x.entries) }

// Refresh re-stats name after a step of ours changed its ctime (a hard link made or removed):
// when everything but ctime still matches, the entry takes the new ctime; otherwise it is
// dropped, and the file is hashed next time. stat is how the file is looked at now.
func (x *Index) Refresh(name string, stat func() (Stat, error)) {
	e, ok := x.entries[name]
	if !ok {
		return
	}
	st, err := stat()
	if err != nil {
		delete(x.entries, name)
		return
	}
	if old := e.st; old.Size != st.Size || old.Mtime != st.Mtime || old.Ino != st.Ino || old.Dev != st.Dev {
		delete(x.entries, name)
		return
	}
	e.st.Ctime = st.Ctime
	x.entries[name] = e
}

// Retain forgets every name keep refuses.
func (x *Index) Retain(keep func(name string) bool) {
	for n := range x.entries {
		if !keep(n) {
			delete(x.entries, n)
		}
	}
}

// NamesHolding returns the names recorded with one of sums as their content, sorted.
func (x *Index) NamesHolding(sums map[string]bool) []string {
	var names []string
	for n, e := range x.entries {
		if sums[e.sum] {
			names = append(names, n)
		}
	}
	sort.Strings(names)
	return names
}

// Names returns the recorded names, sorted.
func (x *Index) Names() []string {
	names := make([]string, 0, len(x.entries))
	for n := range x.entries {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// ErrDamaged is wrapped by Load's error for an index that does not parse or whose checksum does
// not match: it is to be ignored (and rebuilt), never trusted in part.
var ErrDamaged = errors.New("stat index damaged")

// Load reads the index at path. A missing file gives an empty index for no manifest and no
// error; a damaged one an error wrapping ErrDamaged.
func Load(fsys afero.Fs, path string) (*Index, error) {
	f, err := fsys.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return New(""), nil
	}
	if err != nil {
		return nil, fmt.Errorf("cannot open stat index %s: %w", path, err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("cannot stat stat index %s: %w", path, err)
	}
	// Read whole, in one call: it is parsed in place, one line after the other.
	data := make([]byte, fi.Size())
	if _, err := io.ReadFull(f, data); err != nil {
		return nil, fmt.Errorf("cannot read stat index %s: %w", path, err)
	}
	x, err := parse(data)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrDamaged, path, err)
	}
	x.written = fi.ModTime().UnixNano()
	return x, nil
}

// parse reads an index: the header, the installed line, the entries, and the end line, last,
// whose checksum covers every byte before it.
func parse(data []byte) (*Index, error) {
	rest, ok := bytes.CutPrefix(data, []byte(header))
	if !ok {
		return nil, errors.New("not a stat index of this format")
	}
	line, rest, ok := bytes.Cut(rest, []byte{'\n'})
	installed, isInstalled := bytes.CutPrefix(line, []byte("installed "))
	if !ok || !isInstalled {
		return nil, errors.New("no installed line")
	}
	if len(rest) == 0 || rest[len(rest)-1] != '\n' {
		return nil, io.ErrUnexpectedEOF
	}
	last := bytes.LastIndexByte(rest[:len(rest)-1], '\n') + 1
	sum, isEnd := bytes.CutPrefix(rest[last:len(rest)-1], []byte("end "))
	if !isEnd {
		return nil, errors.New("no end line")
	}
	if string(sum) != SumOf(data[:len(data)-len(rest)+last]) {
		return nil, errors.New("checksum does not match")
	}
	entries := rest[:last]
	x := NewSized(string(installed), bytes.Count(entries, []byte{'\n'}))
	for len(entries) > 0 {
		line, entries, _ = bytes.Cut(entries, []byte{'\n'})
		name, e, err := parseEntry(line)
		if err != nil {
			return nil, err
		}
		x.entries[name] = e
	}
	return x, nil
}

// parseEntry reads one entry's line: five decimal numbers, the sha256 and the name, which
// comes last and may hold spaces.
func parseEntry(l []byte) (string, entry, error) {
	var n [5]uint64
	rest := l
	for i := range n {
		field, after, ok := bytes.Cut(rest, []byte{' '})
		v, valid := parseUint(field)
		if !ok || !valid {
			return "", entry{}, fmt.Errorf("invalid entry %q", l)
		}
		n[i], rest = v, after
	}
	sum, name, ok := bytes.Cut(rest, []byte{' '})
	if !ok || len(sum) != 64 || len(name) == 0 {
		return "", entry{}, fmt.Errorf("invalid entry %q", l)
	}
	e := entry{st: Stat{Size: int64(n[0]), Mtime: int64(n[1]), Ctime: int64(n[2]), Ino: n[3], Dev: n[4]}, sum: string(sum)}
	return string(name), e, nil
}

// parseUint is strconv.ParseUint(string(b), 10, 64) without the copy for up to 19 digits, which
// cannot overflow.
func parseUint(b []byte) (uint64, bool) {
	if len(b) == 0 || len(b) > 19 {
		v, err := strconv.ParseUint(string(b), 10, 64)
		return v, err == nil
	}
	var v uint64
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, false
		}
		v = v*10 + uint64(c-'0')
	}
	return v, true
}

// Save writes the index to path atomically.
func (x *Index) Save(fsys afero.Fs, path string) error {
	var buf bytes.Buffer
	buf.Grow(64 + len(x.entries)*120)
	buf.WriteString(header)
	fmt.Fprintf(&buf, "installed %s\n", x.Installed)
	var num []byte
	for _, name := range x.Names() {
		e := x.entries[name]
		for _, v := range []uint64{uint64(e.st.Size), uint64(e.st.Mtime), uint64(e.st.Ctime), e.st.Ino, e.st.Dev} {
			num = strconv.AppendUint(num[:0], v, 10)
			buf.Write(num)
			buf.WriteByte(' ')
		}
		buf.WriteString(e.sum)
		buf.WriteByte(' ')
		buf.WriteString(name)
		buf.WriteByte('\n')
	}
	sum := sha256.Sum256(buf.Bytes())
	fmt.Fprintf(&buf, "end %s\n", hex.EncodeToString(sum[:]))
	if err := fsutil.WriteFileAtomic(fsys, path, buf.Bytes(), 0o600); err != nil {
		return fmt.Errorf("cannot write stat index: %w", err)
	}
	return nil
}
