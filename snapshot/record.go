package snapshot

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"slices"
	"sort"
	"strconv"
	"time"
)

// A record (format 3) is JSON Lines, so that what most runs need is read without decoding
// every file of the snapshot:
//
//	{"format":3,"id":…,"version":…,"created":…,"files":5000,"bytes":…,"sha256":…}   the head
//	["3f9a…e1","77b0…2c",…]                                                        the objects
//	[{"name":"lib","mode":493,"uid":0,"gid":0},…]                                   the dirs
//	{"name":"bin/sd-agent","sha256":…,"size":…,"mode":…,…}                         one line per
//	…                                                                              file, by name
//
// The head says what a listing shows and the sha256 of every byte after it, so a record that
// is damaged anywhere is told by hashing it, which costs far less than decoding it. The
// objects line is every distinct sha256 the files name, sorted: what retention must keep for
// this snapshot. A full read checks that it matches the files. Format 2 (one JSON document,
// Meta) and the legacy meta.json are still read, whole.

// Header is a complete snapshot as its record's head tells it: enough to list, order and
// choose snapshots, without their files.
type Header struct {
	ID      string
	Version string // "" when the installed version was unknown
	Created time.Time
	Files   int   // how many files the version has
	Bytes   int64 // their size
	RunID   string
	Legacy  bool // a snapshot of the earlier layout, not converted yet
}

// recordHead is the first line of a format 3 record.
type recordHead struct {
	Format         int       `json:"format"`
	ID             string    `json:"id"`
	Version        string    `json:"version"`
	Created        time.Time `json:"created"`
	Files          int       `json:"files"`
	Bytes          int64     `json:"bytes"`
	ManifestSHA256 string    `json:"manifest_sha256,omitempty"`
	RunID          string    `json:"run_id,omitempty"`
	SHA256         string    `json:"sha256"` // of every byte after the head's line
}

// Header returns what m's record head says.
func (m *Meta) Header() Header {
	return Header{ID: m.ID, Version: m.Version, Created: m.Created, Files: len(m.Files), Bytes: m.Bytes, RunID: m.RunID, Legacy: m.Legacy}
}

// namedObjects returns the distinct sha256 the files name, sorted.
func namedObjects(files []FileMeta) []string {
	out := make([]string, 0, len(files))
	for _, f := range files {
		out = append(out, f.SHA256)
	}
	sort.Strings(out)
	n := 0
	for i, sum := range out {
		if i == 0 || sum != out[n-1] {
			out[n] = sum
			n++
		}
	}
	return out[:n]
}

// encodeRecord is m's record, format 3. Its lines are what encoding/json writes for each value;
// the objects and the files, two lines per file of the install, are appended by hand (see
// appendFileLine), since reflection over 5,000 entries was most of what writing a snapshot cost.
func encodeRecord(m *Meta) ([]byte, error) {
	objs := namedObjects(m.Files)
	body := make([]byte, 0, 64+len(objs)*(2*sha256.Size+3)+len(m.Files)*320)
	body = append(body, '[')
	for i, sum := range objs {
		if i > 0 {
			body = append(body, ',')
		}
		body = appendJSONString(body, sum)
	}
	body = append(body, "]\n"...)
	dirs := m.Dirs
	if dirs == nil {
		dirs = []DirMeta{}
	}
	line, err := json.Marshal(dirs)
	if err != nil {
		return nil, err
	}
	body = append(append(body, line...), '\n')
	for i := range m.Files {
		body = append(appendFileLine(body, &m.Files[i]), '\n')
	}
	sum := sha256.Sum256(body)
	head, err := json.Marshal(recordHead{Format: recordFormat, ID: m.ID, Version: m.Version, Created: m.Created, Files: len(m.Files),
		Bytes: m.Bytes, ManifestSHA256: m.ManifestSHA256, RunID: m.RunID, SHA256: hex.EncodeToString(sum[:])})
	if err != nil {
		return nil, err
	}
	return append(append(head, '\n'), body...), nil
}

// appendFileLine appends f as encoding/json encodes a FileMeta, byte for byte (a test holds the
// two together), without its reflection.
func appendFileLine(b []byte, f *FileMeta) []byte {
	b = append(b, `{"name":`...)
	b = appendJSONString(b, f.Name)
	b = append(b, `,"sha256":`...)
	b = appendJSONString(b, f.SHA256)
	b = append(b, `,"size":`...)
	b = strconv.AppendInt(b, f.Size, 10)
	b = append(b, `,"mode":`...)
	b = strconv.AppendUint(b, uint64(f.Mode), 10)
	b = append(b, `,"uid":`...)
	b = strconv.AppendInt(b, int64(f.UID), 10)
	b = append(b, `,"gid":`...)
	b = strconv.AppendInt(b, int64(f.GID), 10)
	if f.Stored {
		b = append(b, `,"stored":true`...)
	}
	if st := f.Stamp; st != nil {
		b = append(b, `,"stamp":{`...)
		if st.Dev != 0 {
			b = strconv.AppendUint(append(b, `"dev":`...), st.Dev, 10)
			b = append(b, ',')
		}
		if st.Ino != 0 {
			b = strconv.AppendUint(append(b, `"ino":`...), st.Ino, 10)
			b = append(b, ',')
		}
		b = strconv.AppendInt(append(b, `"size":`...), st.Size, 10)
		b = strconv.AppendInt(append(b, `,"mtime_ns":`...), st.MtimeNs, 10)
		if st.CtimeNs != 0 {
			b = strconv.AppendInt(append(b, `,"ctime_ns":`...), st.CtimeNs, 10)
		}
		b = strconv.AppendInt(append(b, `,"taken_ns":`...), st.TakenNs, 10)
		b = append(b, '}')
	}
	return append(b, '}')
}

// appendJSONString appends s quoted as encoding/json quotes it. Printable ASCII that needs no
// escape (every sha256, nearly every name) is copied as it is; anything else is left to
// encoding/json, HTML escapes and all.
func appendJSONString(b []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c > 0x7e || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
			q, _ := json.Marshal(s) // a string always encodes
			return append(b, q...)
		}
	}
	b = append(b, '"')
	b = append(b, s...)
	return append(b, '"')
}

// entry is what a cheap read of one record gives: its head and the objects it names.
type entry struct {
	Header
	objects []string
}

// isFormat3 tells a record of format 3 or later from one of format 2 (a JSON document, which
// sdupdate wrote indented, so that its first line is a lone "{") by its first line.
func isFormat3(data []byte) bool {
	line, _, _ := bytes.Cut(data, []byte{'\n'})
	var h struct {
		Format int `json:"format"`
	}
	return json.Unmarshal(line, &h) == nil && h.Format >= recordFormat
}

// splitRecord checks a format 3 record's head and checksum and returns the head, the objects
// and what follows them: the directories' line, then one line per file, each ending in '\n'.
// Those lines are counted, not split: retention reads only the head and the objects of every
// record.
func splitRecord(id string, data []byte) (*recordHead, []string, []byte, error) {
	line, rest, ok := bytes.Cut(data, []byte{'\n'})
	if !ok {
		return nil, nil, nil, fmt.Errorf("it ends within its first line")
	}
	var h recordHead
	if err := json.Unmarshal(line, &h); err != nil {
		return nil, nil, nil, fmt.Errorf("its first line: %v", err)
	}
	if h.Format != recordFormat {
		return nil, nil, nil, fmt.Errorf("it has format %d, this sdupdate knows %d", h.Format, recordFormat)
	}
	if h.ID != id {
		return nil, nil, nil, fmt.Errorf("it names snapshot %q", h.ID)
	}
	sum := sha256.Sum256(rest)
	if hex.EncodeToString(sum[:]) != h.SHA256 {
		return nil, nil, nil, fmt.Errorf("its content does not match the sha256 its first line records (damaged or cut short)")
	}
	if h.Files < 0 || h.Bytes < 0 || len(rest) == 0 || rest[len(rest)-1] != '\n' {
		return nil, nil, nil, fmt.Errorf("its first line is not sound")
	}
	if n := bytes.Count(rest, []byte{'\n'}); n != 2+h.Files {
		return nil, nil, nil, fmt.Errorf("it has %d lines after the first, want %d for %d files", n, 2+h.Files, h.Files)
	}
	objLine, body, _ := bytes.Cut(rest, []byte{'\n'})
	objs, err := parseObjects(objLine, h.Files)
	if err != nil {
		return nil, nil, nil, err
	}
	return &h, objs, body, nil
}

// parseObjects decodes the objects line: distinct sha256, sorted, at most one per file.
func parseObjects(line []byte, files int) ([]string, error) {
	objs, ok := scanObjects(line)
	if !ok {
		if err := json.Unmarshal(line, &objs); err != nil {
			return nil, fmt.Errorf("its objects: %v", err)
		}
	}
	if len(objs) > files {
		return nil, fmt.Errorf("it names %d objects for %d files", len(objs), files)
	}
	for i, sum := range objs {
		if err := checkSum(sum); err != nil {
			return nil, fmt.Errorf("its objects: %q has %v", sum, err)
		}
		if i > 0 && objs[i-1] >= sum {
			return nil, fmt.Errorf("its objects are not sorted or repeat %s", sum)
		}
	}
	return objs, nil
}

// scanObjects reads the objects line spelt as encodeRecord writes it, ["<sha256>",…] with
// nothing between, in one pass and one allocation: retention reads this line of every record,
// and a JSON decoder costs several times as much for it. Any other spelling reports !ok and is
// left to the decoder; what either finds is checked alike.
func scanObjects(line []byte) ([]string, bool) {
	const item = 2*sha256.Size + 2 // a quoted sha256
	if len(line) < 2 || line[0] != '[' || line[len(line)-1] != ']' {
		return nil, false
	}
	body := string(line[1 : len(line)-1])
	if body == "" {
		return []string{}, true
	}
	if (len(body)+1)%(item+1) != 0 {
		return nil, false
	}
	n := (len(body) + 1) / (item + 1)
	out := make([]string, n)
	for i := range out {
		at := i * (item + 1)
		if body[at] != '"' || body[at+item-1] != '"' || i < n-1 && body[at+item] != ',' {
			return nil, false
		}
		out[i] = body[at+1 : at+item-1]
	}
	return out, true
}

// parseEntry is the cheap read of record data (format 3): head, checksum and objects; the
// files are not decoded.
func parseEntry(id string, data []byte) (*entry, error) {
	h, objs, _, err := splitRecord(id, data)
	if err != nil {
		return nil, err
	}
	return &entry{Header: Header{ID: h.ID, Version: h.Version, Created: h.Created, Files: h.Files, Bytes: h.Bytes, RunID: h.RunID}, objects: objs}, nil
}

// parseRecord is the full read of record data (format 3).
func parseRecord(id string, data []byte) (*Meta, error) {
	h, objs, body, err := splitRecord(id, data)
	if err != nil {
		return nil, err
	}
	lines := bytes.Split(body[:len(body)-1], []byte{'\n'})
	m := &Meta{Format: h.Format, ID: h.ID, Version: h.Version, Created: h.Created, Bytes: h.Bytes,
		ManifestSHA256: h.ManifestSHA256, RunID: h.RunID, Files: make([]FileMeta, h.Files)}
	if err := json.Unmarshal(lines[0], &m.Dirs); err != nil {
		return nil, fmt.Errorf("its directories: %v", err)
	}
	if len(m.Dirs) == 0 {
		m.Dirs = nil
	}
	for i, line := range lines[1:] {
		if err := json.Unmarshal(line, &m.Files[i]); err != nil {
			return nil, fmt.Errorf("its file %d: %v", i+1, err)
		}
	}
	if err := checkMeta(id, m); err != nil {
		return nil, err
	}
	if got := namedObjects(m.Files); !slices.Equal(got, objs) {
		return nil, fmt.Errorf("its objects line does not list the contents its files name")
	}
	return m, nil
}

// parseDocument reads a record of format 2 (one JSON document) or a legacy meta.json.
func parseDocument(id string, data []byte, legacy bool) (*Meta, error) {
	var m Meta
	if err := json.Unmarshal(data, &m); err != nil {
		return nil, fmt.Errorf("cannot parse it (%v)", err)
	}
	if !legacy && m.Format != recordFormatJSON {
		return nil, fmt.Errorf("it has format %d, this sdupdate knows %d and %d", m.Format, recordFormatJSON, recordFormat)
	}
	if err := checkMeta(id, &m); err != nil {
		return nil, err
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
