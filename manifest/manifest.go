// Package manifest owns the update manifest: parsing and validating the JSON a publisher signs
// (names, hashes, sizes, modes, version, expiry), comparing versions, and writing the canonical
// form back out.
//
// Two forms are accepted. The modern one:
//
//	{"version": "1.2.0", "base_url": "1.2.0/", "expires": "2027-01-01T00:00:00Z",
//	 "files": [{"name": "bin/sd-agent", "sha256": "<64 lowercase hex>", "size": 99, "mode": "0755"}]}
//
// where an entry may also list the zstd forms its content is published in (see Source and Delta;
// the README's contract section has the whole format):
//
//	"object": {"url": ".sdupdate/<sha256>.zst", "size": 40, "sha256": "<of those bytes>"},
//	"deltas": [{"from_sha256": "<an earlier content>", "url": "…", "size": 9, "sha256": "…"}]
//
// A modern manifest may also list packs, zstd streams of several small files' contents (see Pack):
//
//	"packs": [{"url": ".sdupdate/<sha256>.zst", "size": 70, "sha256": "…", "files": ["a.py", "b.py"]}]
//
// The legacy form, served by the original updater, has an md5 and no sha256 in every entry:
//
//	{"version": "1.0.0b4", "files": [{"name": "agent.py", "md5": "<32 hex>"}]}
//
// A manifest is one or the other: entries with sha256 and entries with only md5 are never mixed,
// because a single weak entry would make the whole update only as strong as md5. An entry that
// carries both is a modern entry and its md5 is ignored (a publisher moving off the legacy form
// may serve both for a while).
//
// Parsing is strict where ambiguity could hurt: keys are matched exactly (encoding/json would
// also accept "Name" or "SHA256"), a known key given twice in one object is refused (two JSON
// parsers could disagree on which one counts), and a file may not also be the parent directory of
// another. Unknown keys are ignored, and a known key whose value is null counts as absent.
package manifest

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"strconv"
	"strings"
	"time"
)

// MaxSize is the largest manifest accepted, in bytes.
const MaxSize = 16 << 20

// DefaultMode is the mode of a newly installed file whose entry gives none.
const DefaultMode os.FileMode = 0o644

// File is one entry of a manifest.
type File struct {
	Name    string      // relative slash path, validated
	SHA256  string      // 64 lowercase hex; empty only in a legacy (md5) manifest
	MD5     string      // 32 lowercase hex; legacy form only
	Size    int64       // -1 when unknown (legacy form)
	Mode    os.FileMode // permission bits only
	HasMode bool        // false when the manifest gave no mode (legacy: keep installed mode; new file 0644)
	Object  *Source     // the zstd-compressed content, when published (nil otherwise)
	Deltas  []Delta     // zstd deltas from earlier contents, when published
}

// Manifest is a parsed and validated manifest.
type Manifest struct {
	Version string
	BaseURL string    // as written ("" if absent)
	Expires time.Time // zero if absent
	Files   []File    // order as given
	Packs   []Pack    // sources shared by several files, when published (see Pack)
	Legacy  bool      // true for the md5 form

	index map[string]int // name → position in Files, built by Parse
}

// Parse validates data, a manifest as fetched, against the contract and returns the manifest.
// Everything is checked except expiry, which depends on the clock (see CheckExpiry). Each error
// says which check failed and, for a file entry, names it.
func Parse(data []byte) (*Manifest, error) {
	if len(data) > MaxSize {
		return nil, fmt.Errorf("manifest: %d bytes is more than the limit of %d bytes (16 MiB)", len(data), MaxSize)
	}
	return ParseRecorded(data)
}

// ParseRecorded validates a manifest sdupdate wrote itself (the installed manifest, the journal's
// copies) exactly as Parse does, but without MaxSize: that limit bounds what a server may make it
// read, and the canonical form of an accepted manifest (indented, every mode spelt out) can be
// larger than the compact bytes that were fetched.
func ParseRecorded(data []byte) (*Manifest, error) {
	m, top, err := parseHead(data)
	if err != nil {
		return nil, err
	}
	if err := m.parseFiles(top); err != nil {
		return nil, err
	}
	if err := m.parsePacks(top); err != nil {
		return nil, err
	}
	// A file that is also another entry's parent directory cannot be installed: say so now,
	// not halfway through applying the update.
	for _, f := range m.Files {
		for dir := f.Name; ; {
			cut := strings.LastIndexByte(dir, '/')
			if cut < 0 {
				break
			}
			dir = dir[:cut]
			if _, clash := m.index[dir]; clash {
				return nil, fmt.Errorf("manifest: file %q: its parent %q is also listed as a file", f.Name, dir)
			}
		}
	}
	return m, nil
}

// ParseHead is Parse without the files: the version, base_url and expires of data, checked as
// Parse checks them, and the syntax of the whole document. Its files are neither read nor
// validated, so it is only for bytes the caller knows (by their sha256) a whole Parse of this
// sdupdate accepted before, and Legacy is not known from it.
func ParseHead(data []byte) (*Manifest, error) {
	if len(data) > MaxSize {
		return nil, fmt.Errorf("manifest: %d bytes is more than the limit of %d bytes (16 MiB)", len(data), MaxSize)
	}
	m, _, err := parseHead(data)
	return m, err
}

// parseHead checks data's syntax and reads its top-level fields but the files.
func parseHead(data []byte) (*Manifest, *object, error) {
	// A full syntax check first: it refuses trailing data, and the walk below relies on it.
	// Only a refused document is decoded again, for the offset of its syntax error.
	if !validJSON(data) {
		var whole json.RawMessage
		err := json.Unmarshal(data, &whole)
		var syntax *json.SyntaxError
		if errors.As(err, &syntax) {
			return nil, nil, fmt.Errorf("manifest: not valid JSON at byte %d: %w", syntax.Offset, err)
		}
		return nil, nil, fmt.Errorf("manifest: not valid JSON: %w", err)
	}
	top, err := decodeObject(data[skipSpace(data, 0):], "version", "base_url", "expires", "files", "packs")
	if err != nil {
		return nil, nil, fmt.Errorf("manifest: %w", err)
	}

	m := &Manifest{}
	if m.Version, err = stringField(top, "version", true); err != nil {
		return nil, nil, fmt.Errorf("manifest: %w", err)
	}
	if m.Version == "" {
		return nil, nil, errors.New("manifest: version is empty")
	}
	if _, err := parseVersion(m.Version); err != nil {
		return nil, nil, fmt.Errorf("manifest: %w", err)
	}
	if m.BaseURL, err = stringField(top, "base_url", false); err != nil {
		return nil, nil, fmt.Errorf("manifest: %w", err)
	}
	expires, err := stringField(top, "expires", false)
	if err != nil {
		return nil, nil, fmt.Errorf("manifest: %w", err)
	}
	if _, given := top.get("expires"); given {
		t, err := time.Parse(time.RFC3339, expires)
		if err != nil {
			return nil, nil, fmt.Errorf("manifest: expires %q is not an RFC 3339 time such as \"2027-01-01T00:00:00Z\"", expires)
		}
		m.Expires = t
	}
	return m, top, nil
}

func pick(cond bool, a, b string) string {
	if cond {
		return a
	}
	return b
}

// parseFiles reads the top object's "files" into m.Files and m.index, entry by entry.
func (m *Manifest) parseFiles(top *object) error {
	rawFiles, ok := top.get("files")
	if !ok {
		return errors.New("manifest: files missing")
	}
	n := countElements(rawFiles)
	if n < 0 {
		return errors.New("manifest: files must be a JSON array of objects")
	}
	if n == 0 {
		// Installing an empty file list would remove every managed file: far more likely a
		// broken publishing pipeline than an intended release.
		return errors.New("manifest: files is empty")
	}

	m.Files = make([]File, 0, n)
	m.index = make(map[string]int, n)
	firstKind := "" // "sha256" or "md5", set by the first entry
	var firstName string
	var total int64 // every later sum (download size, free space, progress) fits once this does
	obj := object{keys: fileKeys}
	add := func(f File, kind string) error {
		if firstKind == "" {
			firstKind, firstName = kind, f.Name
		} else if kind != firstKind {
			return fmt.Errorf("manifest: file %q: has only md5 while file %q has sha256; a manifest is either all sha256 or all legacy md5",
				pick(kind == "md5", f.Name, firstName), pick(kind == "md5", firstName, f.Name))
		}
		if _, dup := m.index[f.Name]; dup {
			return fmt.Errorf("manifest: file %q: name is listed twice", f.Name)
		}
		if f.Size > 0 && total > math.MaxInt64-f.Size {
			return fmt.Errorf("manifest: file %q: the sizes of the files up to this one add up to more than %d bytes; no install can be that large", f.Name, int64(math.MaxInt64))
		}
		total += max(f.Size, 0)
		m.index[f.Name] = len(m.Files)
		m.Files = append(m.Files, f)
		return nil
	}
	_, err := eachElement(rawFiles, func(rest []byte) (int, error) {
		f, kind, n, err := parseFile(&obj, rest, len(m.Files))
		if err == nil {
			err = add(f, kind)
		}
		return n, err
	})
	if err != nil {
		return err
	}
	m.Legacy = firstKind == "md5"
	return nil
}

// fileKeys are the keys of a file entry.
var fileKeys = []string{"name", "sha256", "md5", "size", "mode", "object", "deltas"}

// parseFile validates entry i (0-based), which rest starts with, and says whether it is a
// "sha256" or an "md5" entry and how many bytes of rest it takes. obj is reused from entry to
// entry.
func parseFile(obj *object, rest []byte, i int) (File, string, int, error) {
	obj.vals = [8][]byte{}
	n, err := obj.decode(rest)
	if err != nil {
		return File{}, "", 0, fmt.Errorf("manifest: file #%d: %w", i+1, err)
	}
	name, err := stringField(obj, "name", true)
	if err != nil {
		return File{}, "", 0, fmt.Errorf("manifest: file #%d: %w", i+1, err)
	}
	if reason := nameProblem(name); reason != "" {
		return File{}, "", 0, fmt.Errorf("manifest: file %q: name %s", name, reason)
	}
	f := File{Name: name, Size: -1}
	kind, err := parseDigest(obj, &f)
	if err == nil {
		err = parseSize(obj, &f, kind)
	}
	if err == nil {
		err = parseFileMode(obj, &f)
	}
	if err == nil {
		err = parseSources(obj, &f, kind)
	}
	if err != nil {
		return File{}, "", 0, fmt.Errorf("manifest: file %q: %w", name, err)
	}
	return f, kind, n, nil
}

// parseDigest sets f's sha256 (or, in a legacy entry, its md5) and says which kind it is.
func parseDigest(obj *object, f *File) (string, error) {
	sum, err := stringField(obj, "sha256", false)
	if err != nil {
		return "", err
	}
	_, hasSHA := obj.get("sha256")
	_, hasMD5 := obj.get("md5")
	switch {
	case hasSHA:
		if msg := hexProblem(sum, 64, false); msg != "" {
			return "", errors.New("sha256 " + msg)
		}
		f.SHA256 = sum
		return "sha256", nil
	case hasMD5:
		md5sum, err := stringField(obj, "md5", false)
		if err != nil {
			return "", err
		}
		if msg := hexProblem(md5sum, 32, true); msg != "" {
			return "", errors.New("md5 " + msg)
		}
		// The original updater wrote Python's hexdigest (lowercase); accept either case
		// and keep one, so comparisons and the canonical form are stable.
		f.MD5 = strings.ToLower(md5sum)
		return "md5", nil
	}
	return "", errors.New("sha256 missing")
}

// parseSize sets f's size, which only a legacy md5 entry may leave out.
func parseSize(obj *object, f *File, kind string) error {
	rawSize, ok := obj.get("size")
	if !ok {
		if kind == "sha256" {
			return errors.New("size missing")
		}
		return nil
	}
	size, err := parseInt(rawSize)
	if err != nil {
		return fmt.Errorf("size must be a whole number of bytes, got %s", truncate(string(rawSize)))
	}
	if size < 0 {
		return fmt.Errorf("size must not be negative, got %d", size)
	}
	f.Size = size
	return nil
}

// parseFileMode sets f's mode: the entry's own, or DefaultMode when it gives none.
func parseFileMode(obj *object, f *File) error {
	rawMode, ok := obj.get("mode")
	if !ok {
		f.Mode = DefaultMode
		return nil
	}
	s, isString := decodeString(rawMode)
	if !isString {
		return fmt.Errorf("mode must be a string of octal digits such as \"0644\", got %s", truncate(string(rawMode)))
	}
	mode, err := parseMode(s)
	if err != nil {
		return err
	}
	f.Mode, f.HasMode = mode, true
	return nil
}

// parseMode reads "0644" or "644" and refuses anything beyond the permission bits.
func parseMode(s string) (os.FileMode, error) {
	if len(s) < 3 || len(s) > 4 || !octal(s) {
		return 0, fmt.Errorf("mode %q must be 3 or 4 octal digits such as \"0644\"", truncate(s))
	}
	v, _ := strconv.ParseUint(s, 8, 32) // cannot fail: at most 4 octal digits
	if special := v &^ 0o777; special != 0 {
		var bits []string
		for _, b := range []struct {
			bit  uint64
			name string
		}{{0o4000, "setuid"}, {0o2000, "setgid"}, {0o1000, "sticky"}} {
			if special&b.bit != 0 {
				bits = append(bits, b.name)
			}
		}
		noun := "bit"
		if len(bits) > 1 {
			noun = "bits"
		}
		return 0, fmt.Errorf("mode %q has the %s %s set; only permission bits (0000-0777) are allowed", s, strings.Join(bits, " and "), noun)
	}
	return os.FileMode(v), nil
}

func octal(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '7' {
			return false
		}
	}
	return true
}

// hexProblem returns why s is not n hex digits (lowercase unless anyCase), or "".
func hexProblem(s string, n int, anyCase bool) string {
	if len(s) != n {
		return fmt.Sprintf("must be %d hex digits, got %d characters", n, len(s))
	}
	var class byte
	for i := 0; i < len(s); i++ {
		c := hexClass[s[i]]
		if c == 0 {
			return fmt.Sprintf("must be %d hex digits, got %q", n, truncate(s))
		}
		class |= c
	}
	if class&hexUpper != 0 && !anyCase {
		return fmt.Sprintf("must be lowercase hex, got %q", s)
	}
	return ""
}

const (
	hexLower = 1 // 0-9, a-f
	hexUpper = 2 // A-F
)

// hexClass is hexLower or hexUpper for a hex digit, 0 for any other byte: a manifest has two
// digests per entry, and a lookup per byte is what checking them costs.
var hexClass = func() (t [256]byte) {
	for _, c := range "0123456789abcdef" {
		t[c] = hexLower
	}
	for _, c := range "ABCDEF" {
		t[c] = hexUpper
	}
	return t
}()

// truncate keeps error messages readable when a value is huge.
func truncate(s string) string {
	const max = 80
	if len(s) <= max {
		return s
	}
	return s[:max] + "…"
}

// stringField returns obj[key] as a string; a missing key is "" or, when required, an error.
func stringField(obj *object, key string, required bool) (string, error) {
	raw, ok := obj.get(key)
	if !ok {
		if required {
			return "", fmt.Errorf("%s missing", key)
		}
		return "", nil
	}
	s, ok := decodeString(raw)
	if !ok {
		return "", fmt.Errorf("%s must be a string, got %s", key, truncate(string(raw)))
	}
	return s, nil
}

// parseInt is strconv.ParseInt of the JSON number raw, without a copy for plain digits.
func parseInt(raw []byte) (int64, error) {
	if len(raw) > 0 && len(raw) <= 18 {
		var v int64
		for _, c := range raw {
			if c < '0' || c > '9' {
				return strconv.ParseInt(string(raw), 10, 64)
			}
			v = v*10 + int64(c-'0')
		}
		return v, nil
	}
	return strconv.ParseInt(string(raw), 10, 64)
}

// CheckExpiry refuses a manifest whose expires time is before now. Expiry protects against a
// freeze attack: without it, an attacker could keep serving an old, validly signed manifest
// and hold a fleet on a vulnerable version forever.
func (m *Manifest) CheckExpiry(now time.Time) error {
	if m.Expires.IsZero() || !now.After(m.Expires) {
		return nil
	}
	return fmt.Errorf("manifest: expired at %s (now %s); an expired manifest is refused so that an old signed one cannot be replayed",
		m.Expires.Format(time.RFC3339), now.Format(time.RFC3339))
}

// Lookup returns the entry named name.
func (m *Manifest) Lookup(name string) (File, bool) {
	// The index is only built by Parse; a manifest built by hand, or whose Files were changed
	// since, falls back to a scan.
	if i, ok := m.index[name]; ok && i < len(m.Files) && m.Files[i].Name == name {
		return m.Files[i], true
	}
	for _, f := range m.Files {
		if f.Name == name {
			return f, true
		}
	}
	return File{}, false
}

type wireManifest struct {
	Version string     `json:"version"`
	BaseURL string     `json:"base_url,omitempty"`
	Expires string     `json:"expires,omitempty"`
	Files   []wireFile `json:"files"`
	Packs   []wirePack `json:"packs,omitempty"`
}

type wireFile struct {
	Name   string       `json:"name"`
	SHA256 string       `json:"sha256,omitempty"`
	MD5    string       `json:"md5,omitempty"`
	Size   *int64       `json:"size,omitempty"`
	Mode   string       `json:"mode,omitempty"`
	Object *wireSource  `json:"object,omitempty"`
	Deltas []wireSource `json:"deltas,omitempty"`
}

// Marshal returns the canonical, indented JSON of m in the modern form: mode as a "0644" string
// and only when the manifest has one, md5 only for a legacy entry (no sha256), size unless
// unknown, object, deltas and packs when there are any. The output is parsed again before it is
// returned, so Marshal never produces a manifest that ParseRecorded would refuse, and
// ParseRecorded(Marshal(m)) gives back m.
func (m *Manifest) Marshal() ([]byte, error) {
	w := wireManifest{Version: m.Version, BaseURL: m.BaseURL, Files: make([]wireFile, len(m.Files)), Packs: wirePacks(m.Packs)}
	if !m.Expires.IsZero() {
		w.Expires = m.Expires.Format(time.RFC3339Nano)
	}
	for i, f := range m.Files {
		wf := wireFile{Name: f.Name, SHA256: f.SHA256}
		wf.Object, wf.Deltas = wireSources(f)
		if f.SHA256 == "" {
			wf.MD5 = f.MD5
		}
		if f.Size >= 0 {
			size := f.Size
			wf.Size = &size
		}
		if f.HasMode {
			if f.Mode&^0o777 != 0 {
				return nil, fmt.Errorf("manifest: file %q: mode %v has bits beyond the permission bits", f.Name, f.Mode)
			}
			wf.Mode = fmt.Sprintf("%04o", uint32(f.Mode))
		}
		w.Files[i] = wf
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	if err := enc.Encode(w); err != nil {
		return nil, fmt.Errorf("manifest: cannot encode: %w", err)
	}
	back, err := ParseRecorded(buf.Bytes())
	if err != nil {
		return nil, fmt.Errorf("cannot marshal an invalid manifest: %w", err)
	}
	if back.Legacy != m.Legacy {
		return nil, fmt.Errorf("manifest: Legacy is %v but the files make it %v", m.Legacy, back.Legacy)
	}
	return buf.Bytes(), nil
}
