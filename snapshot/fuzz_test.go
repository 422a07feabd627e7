package snapshot

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"
)

// FuzzRecord feeds records that carry a sound checksum over whatever follows their head, so the
// fuzzer's bytes reach the objects, directories and file lines instead of stopping at the
// checksum. A record is state another process wrote: whatever it holds, both reads answer
// without a panic, agree with each other, never accept a name that would leave the install, and
// what the full read accepts is written back as the same record.
func FuzzRecord(f *testing.F) {
	sumA, sumB := strings.Repeat("a", 64), strings.Repeat("b", 64)
	good := &Meta{Format: recordFormat, ID: fuzzID, Version: "1.0.0", Created: time.Date(2026, 1, 2, 3, 4, 5, 6, time.UTC),
		Files: []FileMeta{{Name: "agent.py", SHA256: sumA, Size: 5, Mode: 0o644},
			{Name: "bin/sd-agent", SHA256: sumB, Size: 7, Mode: 0o755, UID: 3, GID: 4, Stored: true,
				Stamp: &Stamp{Dev: 1, Ino: 2, Size: 7, MtimeNs: 9, CtimeNs: 10, TakenNs: 11}},
			{Name: "ü/x y", SHA256: sumA, Size: 0, Mode: 0o600}},
		Dirs: []DirMeta{{Name: "bin", Mode: 0o755}}}
	good.Bytes = 12
	data, err := encodeRecord(good)
	if err != nil {
		f.Fatal(err)
	}
	_, body, _ := bytes.Cut(data, []byte{'\n'})
	f.Add("1.0.0", int64(12), body)
	f.Add("", int64(0), []byte("[]\n[]\n"))
	f.Add("2", int64(1), []byte(`["`+sumA+`"]`+"\n"+`[{"name":"../x","mode":493}]`+"\n"+`{"name":"a","sha256":"`+sumA+`","size":1}`+"\n"))
	f.Add("2", int64(1), []byte(`[ "`+sumA+`" ]`+"\n[]\n"+`{"name":"a","sha256":"`+sumA+`","size":1,"size":2}`+"\n"))
	f.Add("3", int64(2), []byte(`["`+sumA+`"]`+"\nnull\n"+`{"name":"a/b","sha256":"`+sumA+`","size":1,"mode":4294967295}`+"\n"+
		`{"name":"a\\u0000","sha256":"`+sumA+`","size":1}`+"\n"))
	f.Fuzz(func(t *testing.T, version string, total int64, body []byte) {
		files := bytes.Count(body, []byte{'\n'}) - 2
		sum := sha256.Sum256(body)
		head, err := json.Marshal(recordHead{Format: recordFormat, ID: fuzzID, Version: version, Created: good.Created,
			Files: files, Bytes: total, SHA256: hex.EncodeToString(sum[:])})
		if err != nil {
			return // a version that is not valid UTF-8 is not a record sdupdate could have written
		}
		data := append(append(head, '\n'), body...)

		e, eerr := parseEntry(fuzzID, data)
		m, merr := parseRecord(fuzzID, data)
		if merr != nil {
			return
		}
		if eerr != nil {
			t.Fatalf("the full read accepts what the cheap read refuses: %v", eerr)
		}
		if !slices.Equal(e.objects, namedObjects(m.Files)) || e.Files != len(m.Files) || e.Bytes != m.Bytes {
			t.Fatalf("cheap read %+v disagrees with the full read's %d files", e, len(m.Files))
		}
		for _, file := range m.Files {
			assertInside(t, file.Name)
		}
		for _, d := range m.Dirs {
			assertInside(t, d.Name)
		}
		out, err := encodeRecord(m)
		if err != nil {
			t.Fatalf("an accepted record does not encode: %v", err)
		}
		back, err := parseRecord(fuzzID, out)
		if err != nil {
			t.Fatalf("a record written from an accepted one is refused: %v\n%s", err, out)
		}
		if !reflect.DeepEqual(back.Files, m.Files) || !reflect.DeepEqual(back.Dirs, m.Dirs) || back.Version != m.Version || back.Bytes != m.Bytes {
			t.Fatalf("written again, the record reads as\n%+v\nnot\n%+v", back, m)
		}
		if again, _ := encodeRecord(back); !bytes.Equal(again, out) {
			t.Fatalf("encoding is not stable:\n%s\n%s", out, again)
		}
	})
}

const fuzzID = "20260102T030405.000000006Z-1.0.0"

// assertInside fails if name, joined to a directory, could name anything outside it.
func assertInside(t *testing.T, name string) {
	t.Helper()
	if checkName(name) != nil {
		t.Fatalf("accepted name %q that checkName refuses", name)
	}
	for _, seg := range strings.Split(name, "/") {
		if seg == "" || seg == "." || seg == ".." || strings.ContainsAny(seg, "\\\x00") {
			t.Fatalf("accepted name %q with segment %q", name, seg)
		}
	}
}
