package manifest

import (
	"fmt"
	"reflect"
	"strings"
	"testing"
)

var sumC = strings.Repeat("00112233445566778899aabbccddeeff", 2)

// withSources renders a 1000-byte entry named "a" with the given extra keys.
func withSources(extra string) string {
	return fmt.Sprintf(`{"name":"a","sha256":%q,"size":1000,"mode":"0644",%s}`, sumA, extra)
}

func TestParseObjectAndDeltas(t *testing.T) {
	data := doc(withSources(`"object":{"url":".sdupdate/` + sumB + `.zst","size":400,"sha256":"` + sumB + `","later":1},` +
		`"deltas":[{"from_sha256":"` + sumC + `","url":"d/` + sumC + `.zst","size":20,"sha256":"` + sumC + `"}]`))
	m, err := Parse([]byte(data))
	if err != nil {
		t.Fatal(err)
	}
	f := m.Files[0]
	wantObj := &Source{URL: ".sdupdate/" + sumB + ".zst", SHA256: sumB, Size: 400}
	wantDeltas := []Delta{{From: sumC, Source: Source{URL: "d/" + sumC + ".zst", SHA256: sumC, Size: 20}}}
	if !reflect.DeepEqual(f.Object, wantObj) || !reflect.DeepEqual(f.Deltas, wantDeltas) {
		t.Fatalf("got object %+v deltas %+v", f.Object, f.Deltas)
	}
	out, err := m.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	back, err := Parse(out)
	if err != nil {
		t.Fatal(err)
	}
	assertSameManifest(t, m, back)
	if !strings.Contains(string(out), `"from_sha256"`) {
		t.Errorf("marshalled form lost the deltas:\n%s", out)
	}
}

// A manifest without the new fields is read as before, and its entries carry no sources.
func TestOldManifestHasNoSources(t *testing.T) {
	m, err := Parse([]byte(doc(entry("a"))))
	if err != nil {
		t.Fatal(err)
	}
	if m.Files[0].Object != nil || m.Files[0].Deltas != nil {
		t.Fatalf("got sources %+v %+v", m.Files[0].Object, m.Files[0].Deltas)
	}
	out, _ := m.Marshal()
	if strings.Contains(string(out), "object") || strings.Contains(string(out), "deltas") {
		t.Fatalf("marshalled form grew fields:\n%s", out)
	}
}

func TestRefuseBadSources(t *testing.T) {
	obj := func(url string, size int64, sum string) string {
		return fmt.Sprintf(`"object":{"url":%q,"size":%d,"sha256":%q}`, url, size, sum)
	}
	delta := func(from string) string {
		return fmt.Sprintf(`{"from_sha256":%q,"url":"x","size":10,"sha256":%q}`, from, sumB)
	}
	many := make([]string, MaxDeltas+1)
	for i := range many {
		many[i] = delta(fmt.Sprintf("%064x", i+1))
	}
	cases := []struct{ extra, msg string }{
		{obj("/etc/passwd", 10, sumB), "is absolute"},
		{obj("../1.1.0/a.zst", 10, sumB), `".." segment`},
		{obj("a/../../b", 10, sumB), `".." segment`},
		{obj(`a\b`, 10, sumB), "backslash"},
		{obj("", 10, sumB), "is empty"},
		{obj("a.zst", 0, sumB), "outside 1.."},
		{obj("a.zst", MaxSourceSize(1000)+1, sumB), "outside 1.."},
		{obj("a.zst", 10, strings.ToUpper(sumB)), "lowercase"},
		{`"object":{"url":"a.zst","size":10}`, "sha256 missing"},
		{`"object":{"url":"a.zst","sha256":"` + sumB + `"}`, "size missing"},
		{`"object":{"url":"a.zst","url":"b.zst","size":10,"sha256":"` + sumB + `"}`, "given twice"},
		{`"object":"a.zst"`, "must be a JSON object"},
		{`"deltas":{}`, "JSON array"},
		{`"deltas":[` + delta(sumA) + `]`, "file's own content"},
		{`"deltas":[` + delta(sumC) + `,` + delta(sumC) + `]`, "listed twice"},
		{`"deltas":[{"url":"x","size":10,"sha256":"` + sumB + `"}]`, "from_sha256 missing"},
		{`"deltas":[` + strings.Join(many, ",") + `]`, "more than the limit"},
	}
	for _, tc := range cases {
		_, err := Parse([]byte(doc(withSources(tc.extra))))
		if err == nil || !strings.Contains(err.Error(), tc.msg) || !strings.Contains(err.Error(), `file "a"`) {
			t.Errorf("%s: got %v, want an error naming file \"a\" and saying %q", tc.extra, err, tc.msg)
		}
	}
	legacy := `{"version":"1.0.0","files":[{"name":"a","md5":"` + md5A + `","object":{"url":"a.zst","size":10,"sha256":"` + sumB + `"}}]}`
	if _, err := Parse([]byte(legacy)); err == nil || !strings.Contains(err.Error(), "legacy") {
		t.Errorf("legacy entry with an object: got %v", err)
	}
}
