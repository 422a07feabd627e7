// Package snapshot owns the versioned backups of the agent's managed files: creating one before
// the first installed file changes, restoring one (automatic or manual rollback, crash recovery),
// listing, retention and deleting them.
//
// A snapshot never shares an inode with a file that stays in the install. Only the files an
// update replaces or removes leave the install, and only they enter the store: hard-linked (or,
// where links are impossible, copied) into a content-addressed object store just before the
// update renames over them or removes them. Every other file of the snapshot is only described
// in its record, and its content stays where it is, in the install. Layout, under Store.Dir
// (created 0700):
//
//	<Dir>/
//	├── objects/
//	│   ├── 3f9a…e1                    content that left the install, named by its sha256; one
//	│   └── 77b0…2c                    inode per content, however many snapshots name it
//	├── 20261125T061502Z-1.0.0-3f9a2c/  one snapshot; the id sorts by creation time
//	│   ├── manifest                   the installed manifest's exact bytes (absent when none)
//	│   └── record.json                written last: version, each file's name, sha256, size,
//	│                                  mode, owner and stat stamp, each managed directory's owner
//	│                                  and mode; a snapshot without it is incomplete. JSON Lines:
//	│                                  a head to list it by, the objects it names, then the rest
//	│                                  (record.go)
//	├── restoring/                     copies verified by a Restore in progress
//	├── collect-pending                present while objects are added or removed: a crash then
//	│                                  may leave objects no record names, for Cleanup to collect
//	└── 20261126T080000Z-1.1.0-77b01e/
//
// Restore puts back, for each file of the record, whichever holds its recorded content: the
// installed file itself when its stat stamp shows it unchanged since it was hashed (nothing is
// read), otherwise the object of that sha256 (copied out and verified while copying, so the
// restored file never shares the object's inode), otherwise the installed file when hashing it
// shows the recorded content. A file whose content is in neither place was changed in place
// after the snapshot (an operator's edit): it is left as it is and reported as modified locally.
//
// Retention is by reference: deleting a record removes every object no remaining record names.
// Records are written last and deleted first, so a crash never leaves a record naming an object
// that retention removed. Which objects the others name is read from each record's objects
// line, verified by the sha256 in its head, without decoding its files. Before any object is
// added or removed the collect-pending marker is made durable, and it goes once every object is
// named again: a crash in between leaves objects no record names, and the marker tells Cleanup
// to collect them. Otherwise Cleanup reads no record at all.
//
// Snapshots of the earlier layout (<id>/meta.json with hard links in <id>/files/) are listed as
// they are and converted to this one (Upgrade) before they are restored or pruned.
//
// A Store does no locking of its own: callers hold the sdupdate lock around every change.
package snapshot

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/afero"

	"github.com/sdupdate/sdupdate/fsutil"
	"github.com/sdupdate/sdupdate/manifest"
)

var (
	// ErrNotFound marks an id that names no complete snapshot.
	ErrNotFound = errors.New("no such snapshot")
	// ErrCorrupt marks a snapshot whose record, manifest or objects no longer match what was
	// recorded when it was created. What cannot be verified is never restored.
	ErrCorrupt = errors.New("snapshot is corrupt")
	// ErrExists marks a Create for an id that is already a complete snapshot.
	ErrExists = errors.New("snapshot already exists")
)

const (
	recordFile   = "record.json"
	manifestFile = "manifest"
	objectsDir   = "objects"
	restoringDir = "restoring"
	pendingFile  = "collect-pending"
	recordFormat = 3 // JSON Lines, see record.go
	// recordFormatJSON is the format before: one JSON document, Meta itself. Still read.
	recordFormatJSON = 2
)

// Stamp is what stat said about an installed file when its content was hashed. A file that
// still has the same stamp still has that content, unless it was written within racyWindow of
// the hash (the timestamps could not show it): such a stamp is never trusted.
type Stamp struct {
	Dev     uint64 `json:"dev,omitempty"`
	Ino     uint64 `json:"ino,omitempty"`
	Size    int64  `json:"size"`
	MtimeNs int64  `json:"mtime_ns"`
	CtimeNs int64  `json:"ctime_ns,omitempty"`
	TakenNs int64  `json:"taken_ns"` // when the content was read
}

// racyWindow covers filesystems whose timestamps are coarse (the kernel's clock ticks, or a
// whole second on some): a change within it of the hash may not move mtime or ctime.
const racyWindow = time.Second

// StampOf records fi as it was when its content was read at taken.
func StampOf(fi os.FileInfo, taken time.Time) *Stamp {
	s := &Stamp{Size: fi.Size(), MtimeNs: fi.ModTime().UnixNano(), TakenNs: taken.UnixNano()}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		s.Dev, s.Ino = uint64(st.Dev), st.Ino
		s.CtimeNs = st.Ctim.Sec*int64(time.Second) + st.Ctim.Nsec
	}
	return s
}

// Unchanged reports whether fi is the file s was taken of, with the content then read.
func (s *Stamp) Unchanged(fi os.FileInfo) bool {
	if !s.Known() || !fi.Mode().IsRegular() {
		return false
	}
	now := StampOf(fi, time.Unix(0, s.TakenNs))
	return *now == *s
}

// Known reports whether s can tell a change at all: it was taken, and not within racyWindow of
// the file's last change.
func (s *Stamp) Known() bool {
	if s == nil {
		return false
	}
	limit := s.TakenNs - int64(racyWindow)
	return s.MtimeNs < limit && s.CtimeNs < limit
}

// FileMeta records one managed file as it was when the snapshot was taken.
type FileMeta struct {
	Name   string      `json:"name"` // slash path relative to the install directory
	SHA256 string      `json:"sha256"`
	Size   int64       `json:"size"`
	Mode   os.FileMode `json:"mode"` // permission bits
	UID    int         `json:"uid"`  // -1 when unknown (in-memory fs)
	GID    int         `json:"gid"`
	// Stored is true when this snapshot put the content into the store: the update replaced or
	// removed the file, so the object must be there.
	Stored bool   `json:"stored,omitempty"`
	Stamp  *Stamp `json:"stamp,omitempty"`
}

// DirMeta records one directory holding managed files, so that a restore that must create it
// again gives it its owner and mode back.
type DirMeta struct {
	Name string      `json:"name"`
	Mode os.FileMode `json:"mode"`
	UID  int         `json:"uid"`
	GID  int         `json:"gid"`
}

// Meta describes one complete snapshot.
type Meta struct {
	Format  int        `json:"format"`
	ID      string     `json:"id"`
	Version string     `json:"version"` // "" when the installed version was unknown
	Created time.Time  `json:"created"`
	Files   []FileMeta `json:"files"` // sorted by Name
	Dirs    []DirMeta  `json:"dirs,omitempty"`
	Bytes   int64      `json:"bytes"` // the size of the version's files
	// Manifest is the installed manifest at the time (opaque bytes), for the caller to put back
	// with the files. Get fills it with the exact bytes given to Create; List leaves it nil. It
	// is kept in its own file because encoding/json would re-encode raw JSON, and the bytes must
	// come back unchanged.
	Manifest       []byte `json:"-"`
	ManifestSHA256 string `json:"manifest_sha256,omitempty"`
	RunID          string `json:"run_id,omitempty"`
	// Legacy is true for a snapshot of the earlier layout, not converted yet.
	Legacy bool `json:"-"`
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

func (s *Store) objectPath(sum string) string { return filepath.Join(s.Dir, objectsDir, sum) }

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

// checkID refuses an id that could name anything but a snapshot directly in Dir (a user may type
// one with `sdupdate rollback --to`); the store's own directories are not ids either.
func checkID(id string) error {
	if id == "" || len(id) > 128 || id[0] == '.' || id[0] == '-' || id == objectsDir || id == restoringDir || id == pendingFile {
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

// checkSum refuses anything but a sha256 in lowercase hex. It is called for every file of every
// record read, so it allocates nothing.
func checkSum(sum string) error {
	if len(sum) != 2*sha256.Size {
		return errNoSum
	}
	var bad byte
	for i := 0; i < len(sum); i++ {
		bad |= notLowerHex[sum[i]]
	}
	if bad != 0 {
		return errNoSum
	}
	return nil
}

// notLowerHex is 1 for every byte but 0-9 and a-f: retention checks the sha256 of every file
// of every record it reads, and one lookup per byte, without a branch, is what that costs.
var notLowerHex = func() (t [256]byte) {
	for i := range t {
		if (i < '0' || i > '9') && (i < 'a' || i > 'f') {
			t[i] = 1
		}
	}
	return t
}()

var errNoSum = errors.New("no valid sha256")

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
		if err := checkSum(f.SHA256); err != nil {
			return fmt.Errorf("%s has %v", f.Name, err)
		}
		if f.Size < 0 || f.Mode&^os.ModePerm != 0 {
			return fmt.Errorf("%s has an invalid size or mode", f.Name)
		}
		total += f.Size
	}
	for _, d := range m.Dirs {
		if err := checkName(d.Name); err != nil {
			return err
		}
		if d.Mode&^os.ModePerm != 0 {
			return fmt.Errorf("directory %s has an invalid mode", d.Name)
		}
	}
	if total != m.Bytes {
		return fmt.Errorf("bytes %d do not add up to %d", m.Bytes, total)
	}
	return nil
}
