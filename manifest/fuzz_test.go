package manifest

import (
	"bytes"
	"encoding/json"
	"path"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"unicode"
	"unicode/utf8"

	"github.com/sdupdate/sdupdate/fsutil"
)

func FuzzParse(f *testing.F) {
	seeds := []string{
		`{"version":"1.0.0b4","files":[{"name":"agent.py","md5":"` + md5A + `"}]}`,
		`{"version":"1.2.0","base_url":"1.2.0/","expires":"2027-01-01T00:00:00Z","files":[` +
			`{"name":"agent.py","sha256":"` + sumA + `","size":1234,"mode":"0644"},` +
			`{"name":"bin/sd-agent","sha256":"` + sumB + `","size":99,"mode":"0755"}]}`,
		doc(entry("../x")),
		doc(entry("a//b")),
		doc(entry(".sdupdate/x")),
		doc(entry("a"), entry("a/b")),
		doc(entry("a"), entry("a")),
		doc(`{"name":"a","sha256":"` + sumA + `","size":1,"mode":"4755"}`),
		doc(`{"name":"a","sha256":"` + sumA + `","size":-1}`),
		doc(`{"name":"a","sha256":"` + sumA + `","sha256":"` + sumB + `","size":1}`),
		doc(`{"name":"a","md5":"`+md5A+`"}`, entry("b")),
		`{"version":"1.0.0","expires":"2027-01-01T02:00:00.123+02:00","files":[` + entry("ü/\u00a0") + `]}`,
		`{"version":null,"files":null}`,
		`[]`, ``, `{`, `{"version":"1.0.0","files":[{}]}`,
		doc(withSources(`"object":{"url":".sdupdate/o.zst","size":400,"sha256":"` + sumB + `"},` +
			`"deltas":[{"from_sha256":"` + sumC + `","url":"../d.zst","size":20,"sha256":"` + sumC + `"}]`)),
		doc(withSources(`"object":{"url":".sdupdate/o.zst","size":400,"sha256":"` + sumB + `"},` +
			`"deltas":[{"from_sha256":"` + sumC + `","url":".sdupdate/d.zst","size":20,"sha256":"` + sumC + `"}]`)),
		withPacks([]string{sized("a.py", 300), sized("b.py", 200), sized("c", 0)}, pack(120, "b.py", "a.py")),
		withPacks([]string{sized("a.py", 300)}),
		withPacks([]string{sized("a.py", 300), sized("b.py", 200), sized("c", 0)}, pack(120, "b.py", "a.py"), pack(1, "c", "a.py")),
	}
	for _, s := range seeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := Parse(data)
		head, herr := ParseHead(data) // never panics either
		if err == nil && (herr != nil || head.Version != m.Version || head.BaseURL != m.BaseURL || !head.Expires.Equal(m.Expires)) {
			t.Fatalf("ParseHead of a manifest Parse accepts: %+v, %v; Parse: %q %q %v", head, herr, m.Version, m.BaseURL, m.Expires)
		}
		if err != nil {
			if m != nil {
				t.Fatal("Parse returned a manifest with an error")
			}
			return
		}
		if len(m.Files) == 0 {
			t.Fatal("accepted a manifest with no files")
		}
		seen := map[string]bool{}
		for _, file := range m.Files {
			if err := ValidateName(file.Name); err != nil {
				t.Fatalf("accepted name that ValidateName refuses: %v", err)
			}
			assertNameStaysInside(t, file.Name)
			if seen[file.Name] {
				t.Fatalf("accepted duplicate name %q", file.Name)
			}
			seen[file.Name] = true
			if file.Mode&^0o777 != 0 {
				t.Fatalf("accepted mode %v with more than permission bits", file.Mode)
			}
			if m.Legacy != (file.SHA256 == "") {
				t.Fatalf("Legacy=%v but file %q has sha256 %q", m.Legacy, file.Name, file.SHA256)
			}
			if file.Object != nil {
				assertURLStaysInside(t, file.Object.URL)
			}
			for _, d := range file.Deltas {
				assertURLStaysInside(t, d.URL)
				if d.Size < 1 || d.Size > MaxSourceSize(file.Size) {
					t.Fatalf("accepted delta size %d for a %d-byte file", d.Size, file.Size)
				}
			}
			if got, ok := m.Lookup(file.Name); !ok || !reflect.DeepEqual(got, file) {
				t.Fatalf("Lookup(%q) = %+v, %v", file.Name, got, ok)
			}
		}
		assertPacksHold(t, m)
		out, err := m.Marshal()
		if err != nil {
			t.Fatalf("accepted manifest does not marshal: %v", err)
		}
		back, err := ParseRecorded(out)
		if err != nil {
			t.Fatalf("ParseRecorded(Marshal(m)) refused: %v\n%s", err, out)
		}
		assertSameManifest(t, m, back)
		again, err := back.Marshal()
		if err != nil || !bytes.Equal(out, again) {
			t.Fatalf("Marshal not stable (%v):\n%s\n%s", err, out, again)
		}
	})
}

func FuzzValidateName(f *testing.F) {
	for _, tc := range nameCases {
		f.Add(tc.name)
	}
	for _, s := range []string{"a/b/../c", "./", "a/.", "\u202e", "a\u2028b", "C:\\x", "a\x00", "//x", ".sdupdate/",
		strings.Repeat("y", MaxSegment+1), "a/" + strings.Repeat("é", MaxSegment/2), longName(MaxName), longName(MaxName + 1)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, name string) {
		err := ValidateName(name)
		// Parse must apply exactly the same rules to a name it reads from JSON.
		if utf8.ValidString(name) {
			n, _ := json.Marshal(name)
			_, perr := Parse([]byte(doc(`{"name":` + string(n) + `,"sha256":"` + sumA + `","size":1}`)))
			if (err == nil) != (perr == nil) {
				t.Fatalf("ValidateName(%q) = %v but Parse says %v", name, err, perr)
			}
		}
		if err != nil {
			return
		}
		assertNameStaysInside(t, name)
	})
}

// assertDerivedPathsFit checks that every path sdupdate makes from an accepted name stays within
// NAME_MAX per segment and PATH_MAX whole, with the longest Directory the configuration accepts.
func assertDerivedPathsFit(t *testing.T, name string) {
	t.Helper()
	dir := "/" + strings.Repeat("d", MaxDirectory-1)
	for _, seg := range strings.Split(name, "/") {
		if tmp := filepath.Base(fsutil.TempName(dir, seg)); len(tmp) > 255 {
			t.Fatalf("accepted %q: the temp name %q for segment %q is %d bytes, over NAME_MAX", name, tmp, seg, len(tmp))
		}
	}
	id := snapshotIDOfLongestVersion()
	for _, p := range []string{
		fsutil.TempName(filepath.Join(dir, filepath.Dir(name)), name),
		filepath.Join(dir, ReservedName, "snapshots", id, "files", name),
	} {
		if len(p) > 4095 {
			t.Fatalf("accepted %q: the derived path %.60q… is %d bytes, over PATH_MAX", name, p, len(p))
		}
	}
}

// snapshotIDOfLongestVersion is the longest snapshot id sdupdate can make (a timestamp, a version
// cut to 64 bytes, a random suffix), at the 128-byte bound MaxDerived counts.
func snapshotIDOfLongestVersion() string { return strings.Repeat("i", 128) }

// assertNameStaysInside checks that an accepted name cannot lead outside the install directory.
func assertNameStaysInside(t *testing.T, name string) {
	t.Helper()
	assertURLStaysInside(t, name)
	if strings.SplitN(name, "/", 2)[0] == ReservedName {
		t.Fatalf("accepted reserved name %q", name)
	}
	assertDerivedPathsFit(t, name)
	const root = "/opt/sd-agent"
	joined := filepath.Join(root, filepath.FromSlash(name))
	if rel, err := filepath.Rel(root, joined); err != nil || rel == "." || rel == ".." || strings.HasPrefix(rel, "../") {
		t.Fatalf("accepted %q, which joins to %q outside %s", name, joined, root)
	}
}

// assertURLStaysInside checks a source's URL, which is relative to the file base like a name but
// may lie in the reserved directory, where a release keeps its objects, deltas and packs.
func assertURLStaysInside(t *testing.T, name string) {
	t.Helper()
	if path.Clean(name) != name {
		t.Fatalf("accepted %q, which is not clean (%q)", name, path.Clean(name))
	}
	if path.IsAbs(name) || filepath.IsAbs(name) {
		t.Fatalf("accepted absolute name %q", name)
	}
	for _, seg := range strings.Split(name, "/") {
		if seg == ".." || seg == "." || seg == "" {
			t.Fatalf("accepted %q with segment %q", name, seg)
		}
	}
	if strings.ContainsRune(name, '\\') || strings.IndexFunc(name, unicode.IsControl) >= 0 {
		t.Fatalf("accepted %q with a backslash or control character", name)
	}
}

// assertPacksHold checks what a client relies on of accepted packs: members are listed files, each
// in one pack, adding up to the raw size within the limits, and the URL stays inside the base.
func assertPacksHold(t *testing.T, m *Manifest) {
	t.Helper()
	inPack := map[string]bool{}
	for i, p := range m.Packs {
		assertURLStaysInside(t, p.URL)
		var raw int64
		for _, name := range p.Files {
			f, ok := m.Lookup(name)
			if !ok || inPack[name] || f.SHA256 == "" {
				t.Fatalf("pack #%d: member %q accepted (listed %v, in a pack already %v)", i+1, name, ok, inPack[name])
			}
			inPack[name] = true
			raw += f.Size
		}
		if len(p.Files) < MinPackFiles || raw != p.RawSize || raw < 1 || raw > MaxPackSize || p.Size < 1 || p.Size > MaxSourceSize(raw) {
			t.Fatalf("pack #%d accepted: %d files, raw %d (says %d), size %d", i+1, len(p.Files), raw, p.RawSize, p.Size)
		}
	}
}
