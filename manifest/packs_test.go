package manifest

import (
	"encoding/json"
	"fmt"
	"reflect"
	"strings"
	"testing"
)

// sized renders a modern entry of the given size.
func sized(name string, size int64) string {
	n, _ := json.Marshal(name)
	return fmt.Sprintf(`{"name":%s,"sha256":%q,"size":%d}`, n, sumA, size)
}

// withPacks renders a manifest of the given entries and packs.
func withPacks(entries []string, packs ...string) string {
	return `{"version":"1.2.0","files":[` + strings.Join(entries, ",") + `],"packs":[` + strings.Join(packs, ",") + `]}`
}

func pack(size int64, files ...string) string {
	names, _ := json.Marshal(files)
	return fmt.Sprintf(`{"url":".sdupdate/%s.zst","sha256":%q,"size":%d,"files":%s}`, sumB, sumB, size, names)
}

func TestParsePacks(t *testing.T) {
	entries := []string{sized("a.py", 300), sized("b.py", 200), sized("bin/x", 5000), sized("c.py", 0)}
	data := withPacks(entries, pack(120, "b.py", "a.py", "c.py"))
	m, err := Parse([]byte(data))
	if err != nil {
		t.Fatal(err)
	}
	want := []Pack{{Source: Source{URL: ".sdupdate/" + sumB + ".zst", SHA256: sumB, Size: 120}, Files: []string{"b.py", "a.py", "c.py"}, RawSize: 500}}
	if !reflect.DeepEqual(m.Packs, want) {
		t.Fatalf("got packs %+v, want %+v", m.Packs, want)
	}
	out, err := m.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	back, err := ParseRecorded(out)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(back.Packs, m.Packs) {
		t.Fatalf("after Marshal: got packs %+v, want %+v\n%s", back.Packs, m.Packs, out)
	}
	assertSameManifest(t, m, back)
}

// A manifest without packs, or with an empty list of them, marshals without the key, so an older
// reader sees what it always saw and the recorded copy reads back as the same manifest.
func TestNoPacksNoKey(t *testing.T) {
	for _, data := range []string{doc(entry("a")), withPacks([]string{entry("a")})} {
		m, err := Parse([]byte(data))
		if err != nil {
			t.Fatalf("%s: %v", data, err)
		}
		out, _ := m.Marshal()
		if m.Packs != nil || strings.Contains(string(out), "packs") {
			t.Fatalf("%s: packs %+v, marshalled:\n%s", data, m.Packs, out)
		}
		back, err := ParseRecorded(out)
		if err != nil {
			t.Fatal(err)
		}
		assertSameManifest(t, m, back)
	}
}

// Every limit of a pack is checked when the manifest is parsed, before anything is fetched, and
// the message names the pack and what is wrong with it.
func TestRefuseBadPacks(t *testing.T) {
	entries := []string{sized("a", 300), sized("b", 200), sized("e", 0), sized("f", 0), sized("big", MaxPackSize)}
	many := make([]string, MaxPacks+1)
	for i := range many {
		many[i] = `{}`
	}
	cases := []struct{ packs, msg string }{
		{pack(10, "a", "nope"), `file "nope" is not listed`},
		{pack(10, "a"), "at least 2"},
		{pack(10, "a", "a"), "listed twice"},
		{pack(10, "a", "b") + "," + pack(10, "b", "e"), "already in pack #1"},
		{pack(10, "e", "f"), "all empty"},
		{pack(10, "a", "big"), "more than the limit"},
		{pack(0, "a", "b"), "outside 1.."},
		{pack(MaxSourceSize(500)+1, "a", "b"), "outside 1.."},
		{`{"url":"/etc/passwd","sha256":"` + sumB + `","size":10,"files":["a","b"]}`, "is absolute"},
		{`{"url":"../x.zst","sha256":"` + sumB + `","size":10,"files":["a","b"]}`, `".." segment`},
		{`{"url":"x.zst","sha256":"` + strings.ToUpper(sumB) + `","size":10,"files":["a","b"]}`, "lowercase"},
		{`{"url":"x.zst","sha256":"` + sumB + `","size":10}`, "files missing"},
		{`{"url":"x.zst","sha256":"` + sumB + `","size":10,"files":"a"}`, "JSON array"},
		{`{"url":"x.zst","sha256":"` + sumB + `","size":10,"files":[1,2]}`, "must be file names"},
		{`{"sha256":"` + sumB + `","size":10,"files":["a","b"]}`, "url missing"},
		{`"x"`, "JSON object"},
	}
	for _, tc := range cases {
		_, err := Parse([]byte(withPacks(entries, tc.packs)))
		if err == nil || !strings.Contains(err.Error(), tc.msg) || !strings.Contains(err.Error(), "pack #") {
			t.Errorf("%s: got %v, want an error naming the pack and saying %q", tc.packs, err, tc.msg)
		}
	}
	if _, err := Parse([]byte(withPacks(entries, strings.Join(many, ",")))); err == nil || !strings.Contains(err.Error(), "more than the limit of 65536") {
		t.Errorf("%d packs: got %v", len(many), err)
	}
	if _, err := Parse([]byte(`{"version":"1","files":[` + sized("a", 1) + `],"packs":{}}`)); err == nil || !strings.Contains(err.Error(), "packs must be a JSON array") {
		t.Errorf("packs as an object: got %v", err)
	}
	legacy := `{"version":"1.0.0","files":[{"name":"a","md5":"` + md5A + `"},{"name":"b","md5":"` + md5A + `"}],"packs":[` + pack(10, "a", "b") + `]}`
	if _, err := Parse([]byte(legacy)); err == nil || !strings.Contains(err.Error(), "legacy") {
		t.Errorf("legacy manifest with packs: got %v", err)
	}
}

// ParseHead reads neither files nor packs: bytes it is given were parsed whole before.
func TestParseHeadSkipsPacks(t *testing.T) {
	data := withPacks([]string{sized("a", 1)}, pack(10, "a", "not-listed"))
	if _, err := Parse([]byte(data)); err == nil {
		t.Fatal("a pack naming an unlisted file was accepted")
	}
	m, err := ParseHead([]byte(data))
	if err != nil || m.Version != "1.2.0" || m.Packs != nil {
		t.Fatalf("ParseHead: %+v, %v", m, err)
	}
}
