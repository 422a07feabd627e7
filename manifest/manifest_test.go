package manifest

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"reflect"
	"strings"
	"testing"
	"time"
)

var (
	sumA = strings.Repeat("0123456789abcdef", 4) // 64 lowercase hex
	sumB = strings.Repeat("fedcba9876543210", 4)
	md5A = "d41d8cd98f00b204e9800998ecf8427e"
)

// entry renders one modern file entry.
func entry(name string) string {
	n, _ := json.Marshal(name)
	return fmt.Sprintf(`{"name":%s,"sha256":%q,"size":1,"mode":"0644"}`, n, sumA)
}

// doc renders a manifest with the given file entries.
func doc(entries ...string) string {
	return `{"version":"1.2.0","files":[` + strings.Join(entries, ",") + `]}`
}

func TestParseContractExample(t *testing.T) {
	data := `{
  "version": "1.2.0",
  "base_url": "1.2.0/",
  "expires": "2027-01-01T00:00:00Z",
  "files": [
    {"name": "agent.py", "sha256": "` + sumA + `", "size": 1234, "mode": "0644"},
    {"name": "bin/sd-agent", "sha256": "` + sumB + `", "size": 99, "mode": "0755"}
  ]
}`
	m, err := Parse([]byte(data))
	if err != nil {
		t.Fatal(err)
	}
	if m.Version != "1.2.0" || m.BaseURL != "1.2.0/" || m.Legacy {
		t.Errorf("got version %q base_url %q legacy %v", m.Version, m.BaseURL, m.Legacy)
	}
	if want := time.Date(2027, 1, 1, 0, 0, 0, 0, time.UTC); !m.Expires.Equal(want) {
		t.Errorf("expires = %v, want %v", m.Expires, want)
	}
	want := []File{
		{Name: "agent.py", SHA256: sumA, Size: 1234, Mode: 0o644, HasMode: true},
		{Name: "bin/sd-agent", SHA256: sumB, Size: 99, Mode: 0o755, HasMode: true},
	}
	if len(m.Files) != len(want) {
		t.Fatalf("got %d files, want %d", len(m.Files), len(want))
	}
	for i := range want {
		if !reflect.DeepEqual(m.Files[i], want[i]) {
			t.Errorf("file %d = %+v, want %+v", i, m.Files[i], want[i])
		}
	}
}

func TestParseLegacyForm(t *testing.T) {
	// Byte for byte what the original update server publishes.
	data := `{"version":"1.0.0b4","files":[{"name":"agent.py","md5":"` + md5A + `"},{"name":"plugins/disk.py","md5":"` + strings.ToUpper(md5A) + `"}]}`
	m, err := Parse([]byte(data))
	if err != nil {
		t.Fatal(err)
	}
	if !m.Legacy {
		t.Error("Legacy = false for an md5 manifest")
	}
	if m.Version != "1.0.0b4" || m.BaseURL != "" || !m.Expires.IsZero() {
		t.Errorf("got version %q base_url %q expires %v", m.Version, m.BaseURL, m.Expires)
	}
	for _, f := range m.Files {
		if f.SHA256 != "" || f.MD5 != md5A || f.Size != -1 || f.HasMode || f.Mode != DefaultMode {
			t.Errorf("legacy file = %+v", f)
		}
	}
}

func TestParseLegacyWithSizeAndMode(t *testing.T) {
	m, err := Parse([]byte(`{"version":"1.0.0","files":[{"name":"a","md5":"` + md5A + `","size":7,"mode":"755"}]}`))
	if err != nil {
		t.Fatal(err)
	}
	if f := m.Files[0]; !m.Legacy || f.Size != 7 || f.Mode != 0o755 || !f.HasMode {
		t.Errorf("got legacy %v file %+v", m.Legacy, f)
	}
}

func TestParseModernWithoutMode(t *testing.T) {
	m, err := Parse([]byte(doc(`{"name":"a","sha256":"` + sumA + `","size":0}`)))
	if err != nil {
		t.Fatal(err)
	}
	if f := m.Files[0]; f.HasMode || f.Mode != 0o644 || f.Size != 0 {
		t.Errorf("got %+v, want default mode 0644 and HasMode false", f)
	}
}

func TestParseMD5BesideSHA256IsIgnored(t *testing.T) {
	m, err := Parse([]byte(doc(`{"name":"a","sha256":"` + sumA + `","md5":"not even hex","size":1}`)))
	if err != nil {
		t.Fatal(err)
	}
	if m.Legacy || m.Files[0].MD5 != "" || m.Files[0].SHA256 != sumA {
		t.Errorf("got legacy %v file %+v", m.Legacy, m.Files[0])
	}
}

// nameCases lists every name rule of the contract; wantErr is a substring of the refusal, or ""
// when the name is fine.
var nameCases = []struct {
	name    string
	wantErr string
}{
	{"agent.py", ""},
	{"bin/sd-agent", ""},
	{"a/b/c/d.conf", ""},
	{".hidden", ""},
	{"a/.sdupdate", ""}, // reserved only at the top
	{".sdupdate2", ""},
	{"...", ""},
	{"a..b", ""},
	{"ünïcode/файл", ""},
	{"with space", ""},
	{strings.Repeat("x", MaxSegment), ""},
	{longName(MaxName), ""},
	{"", "is empty"},
	{"/etc/passwd", "is absolute"},
	{"/", "is absolute"},
	{"..", `contains a ".." segment`},
	{"../x", `contains a ".." segment`},
	{"a/../../x", `contains a ".." segment`},
	{"a/..", `contains a ".." segment`},
	{".", `contains a "." segment`},
	{"./a", `contains a "." segment`},
	{"a/./b", `contains a "." segment`},
	{"a//b", "empty segment"},
	{"a/", "ends with a slash"},
	{"a/b/", "ends with a slash"},
	{`a\b`, "backslash"},
	{`..\x`, "backslash"},
	{"a\x00b", "control character U+0000"},
	{"a\nb", "control character U+000A"},
	{"a\tb", "control character U+0009"},
	{"a\x1fb", "control character U+001F"},
	{"a\x7fb", "control character U+007F"},
	{"a\u0085b", "control character U+0085"},
	{"a\xffb", "not valid UTF-8"},
	{".sdupdate", `reserved top-level name ".sdupdate"`},
	{".sdupdate-000000000000-probe", "shaped like sdupdate's temp names"},
	{"lib/.sdupdate-0123456789ab-agent.py", "shaped like sdupdate's temp names"},
	{"lib/.sdupdate-0123456789AB-agent.py", ""}, // not the shape: uppercase hex
	{".sdupdate-x", ""},
	{".sdupdate/staging/x", `reserved top-level name ".sdupdate"`},
	// A segment that fits NAME_MAX but not with the temp-name prefix a replace puts before it.
	{strings.Repeat("x", 250), "segment of 250 bytes, more than the limit of 232 bytes"},
	{"a/" + strings.Repeat("x", 233), "segment of 233 bytes"},
	{strings.Repeat("x", 256), "segment of 256 bytes"},
	{longName(MaxName + 1), "is 2049 bytes long, more than the limit of 2048 bytes"},
}

// longName is a valid name of exactly n bytes made of segments of the longest length allowed.
func longName(n int) string {
	var b strings.Builder
	for b.Len() < n {
		if b.Len() > 0 {
			b.WriteByte('/')
		}
		seg := min(MaxSegment, n-b.Len())
		b.WriteString(strings.Repeat("d", seg))
	}
	return b.String()
}

func TestValidateName(t *testing.T) {
	for _, tc := range nameCases {
		err := ValidateName(tc.name)
		if tc.wantErr == "" {
			if err != nil {
				t.Errorf("ValidateName(%q) = %v, want nil", tc.name, err)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
			t.Errorf("ValidateName(%q) = %v, want error containing %q", tc.name, err, tc.wantErr)
		}
	}
}

func TestParseNameRules(t *testing.T) {
	for _, tc := range nameCases {
		if !utf8Valid(tc.name) {
			continue // JSON text cannot carry invalid UTF-8 as such
		}
		_, err := Parse([]byte(doc(entry(tc.name))))
		if tc.wantErr == "" {
			if err != nil {
				t.Errorf("name %q: %v", tc.name, err)
			}
			continue
		}
		// The refusal must name the entry and the check that failed.
		wantPrefix := fmt.Sprintf("manifest: file %q: name ", tc.name)
		if err == nil || !strings.HasPrefix(err.Error(), wantPrefix) || !strings.Contains(err.Error(), tc.wantErr) {
			t.Errorf("name %q: got %v, want %q…%q", tc.name, err, wantPrefix, tc.wantErr)
		}
	}
}

func utf8Valid(s string) bool { return strings.ToValidUTF8(s, "\uFFFD") == s }

func TestParseErrorNamesEntry(t *testing.T) {
	_, err := Parse([]byte(doc(entry("../x"))))
	if err == nil || err.Error() != `manifest: file "../x": name contains a ".." segment` {
		t.Errorf("got %v", err)
	}
}

func TestParseRefuses(t *testing.T) {
	withFile := func(fields string) string { return doc(`{"name":"agent.py",` + fields + `}`) }
	cases := []struct {
		desc    string
		data    string
		wantErr string
	}{
		// structure
		{"not JSON", `{"version":`, "not valid JSON"},
		{"array at top", `[]`, "must be a JSON object"},
		{"trailing data", doc(entry("a")) + ` {}`, "not valid JSON"},
		{"empty input", ``, "not valid JSON"},
		{"files missing", `{"version":"1.0.0"}`, "files missing"},
		{"files empty", `{"version":"1.0.0","files":[]}`, "files is empty"},
		{"files not array", `{"version":"1.0.0","files":{}}`, "files must be a JSON array"},
		{"file not object", `{"version":"1.0.0","files":["agent.py"]}`, "file #1: must be a JSON object"},
		{"name missing", doc(`{"sha256":"` + sumA + `","size":1}`), "file #1: name missing"},
		{"name not string", doc(`{"name":7,"sha256":"` + sumA + `","size":1}`), "file #1: name must be a string"},
		{"name null", doc(`{"name":null,"sha256":"` + sumA + `","size":1}`), "file #1: name missing"},
		{"key case matters", doc(`{"Name":"a","sha256":"` + sumA + `","size":1}`), "file #1: name missing"},
		{"duplicate key", doc(`{"name":"a","sha256":"` + sumA + `","sha256":"` + sumB + `","size":1}`), `key "sha256" is given twice`},
		{"duplicate key after null", doc(`{"name":"a","sha256":null,"sha256":"` + sumB + `","size":1}`), `key "sha256" is given twice`},
		{"duplicate top key", `{"version":"1.0.0","version":"2.0.0","files":[` + entry("a") + `]}`, `key "version" is given twice`},
		{"duplicate name", doc(entry("a"), entry("b"), entry("a")), `file "a": name is listed twice`},
		{"file is a parent dir", doc(entry("bin"), entry("bin/sd-agent")), `file "bin/sd-agent": its parent "bin" is also listed`},
		{"file is a deep parent dir", doc(entry("a/b/c"), entry("a")), `file "a/b/c": its parent "a" is also listed`},

		// version
		{"version missing", `{"files":[` + entry("a") + `]}`, "manifest: version missing"},
		{"version empty", `{"version":"","files":[` + entry("a") + `]}`, "manifest: version is empty"},
		{"version number", `{"version":1.2,"files":[` + entry("a") + `]}`, "version must be a string"},
		{"version garbage", `{"version":"latest","files":[` + entry("a") + `]}`, `cannot parse version "latest"`},
		{"version path", `{"version":"1.0/../x","files":[` + entry("a") + `]}`, `cannot parse version`},

		// expires
		{"expires not RFC 3339", `{"version":"1.0.0","expires":"2027-01-01","files":[` + entry("a") + `]}`, `expires "2027-01-01" is not an RFC 3339 time`},
		{"expires number", `{"version":"1.0.0","expires":1700000000,"files":[` + entry("a") + `]}`, "expires must be a string"},
		{"base_url number", `{"version":"1.0.0","base_url":1,"files":[` + entry("a") + `]}`, "base_url must be a string"},

		// sha256
		{"sha256 missing", withFile(`"size":1`), `file "agent.py": sha256 missing`},
		{"sha256 uppercase", withFile(`"sha256":"` + strings.ToUpper(sumA) + `","size":1`), `file "agent.py": sha256 must be lowercase hex`},
		{"sha256 short", withFile(`"sha256":"` + sumA[:63] + `","size":1`), `file "agent.py": sha256 must be 64 hex digits, got 63 characters`},
		{"sha256 long", withFile(`"sha256":"` + sumA + `0","size":1`), "got 65 characters"},
		{"sha256 not hex", withFile(`"sha256":"` + strings.Repeat("g", 64) + `","size":1`), "sha256 must be 64 hex digits"},
		{"sha256 empty", withFile(`"sha256":"","size":1`), "sha256 must be 64 hex digits, got 0 characters"},
		{"sha256 number", withFile(`"sha256":5,"size":1`), "sha256 must be a string"},

		// size
		{"size missing", withFile(`"sha256":"` + sumA + `"`), `file "agent.py": size missing`},
		{"size negative", withFile(`"sha256":"` + sumA + `","size":-1`), `file "agent.py": size must not be negative`},
		{"size fraction", withFile(`"sha256":"` + sumA + `","size":1.5`), "size must be a whole number of bytes, got 1.5"},
		{"size exponent", withFile(`"sha256":"` + sumA + `","size":1e3`), "size must be a whole number of bytes"},
		{"size string", withFile(`"sha256":"` + sumA + `","size":"12"`), "size must be a whole number of bytes"},
		{"size overflow", withFile(`"sha256":"` + sumA + `","size":99999999999999999999`), "size must be a whole number of bytes"},

		// mode
		{"mode number", withFile(`"sha256":"` + sumA + `","size":1,"mode":644`), `file "agent.py": mode must be a string of octal digits`},
		{"mode setuid", withFile(`"sha256":"` + sumA + `","size":1,"mode":"4755"`), `file "agent.py": mode "4755" has the setuid bit set`},
		{"mode setgid", withFile(`"sha256":"` + sumA + `","size":1,"mode":"2755"`), `mode "2755" has the setgid bit set`},
		{"mode sticky", withFile(`"sha256":"` + sumA + `","size":1,"mode":"1777"`), `mode "1777" has the sticky bit set`},
		{"mode all special", withFile(`"sha256":"` + sumA + `","size":1,"mode":"7777"`), "setuid and setgid and sticky bits set"},
		{"mode not octal", withFile(`"sha256":"` + sumA + `","size":1,"mode":"0999"`), `mode "0999" must be 3 or 4 octal digits`},
		{"mode too long", withFile(`"sha256":"` + sumA + `","size":1,"mode":"00644"`), "must be 3 or 4 octal digits"},
		{"mode too short", withFile(`"sha256":"` + sumA + `","size":1,"mode":"44"`), "must be 3 or 4 octal digits"},
		{"mode symbolic", withFile(`"sha256":"` + sumA + `","size":1,"mode":"rw-r--r--"`), "must be 3 or 4 octal digits"},
		{"mode 0o prefix", withFile(`"sha256":"` + sumA + `","size":1,"mode":"0o644"`), "must be 3 or 4 octal digits"},
		{"mode empty", withFile(`"sha256":"` + sumA + `","size":1,"mode":""`), "must be 3 or 4 octal digits"},

		// legacy md5
		{"md5 short", withFile(`"md5":"abc"`), `file "agent.py": md5 must be 32 hex digits, got 3 characters`},
		{"md5 not hex", withFile(`"md5":"` + strings.Repeat("z", 32) + `"`), "md5 must be 32 hex digits"},
		{"md5 then sha256", doc(`{"name":"a","md5":"`+md5A+`"}`, entry("b")), `file "a": has only md5 while file "b" has sha256`},
		{"sha256 then md5", doc(entry("b"), `{"name":"a","md5":"`+md5A+`"}`), `file "a": has only md5 while file "b" has sha256`},
		{"legacy bad size", `{"version":"1.0.0b4","files":[{"name":"a","md5":"` + md5A + `","size":-5}]}`, "size must not be negative"},
	}
	for _, tc := range cases {
		t.Run(tc.desc, func(t *testing.T) {
			m, err := Parse([]byte(tc.data))
			if err == nil {
				t.Fatalf("accepted: %+v", m)
			}
			if !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("got %q, want it to contain %q", err, tc.wantErr)
			}
			if !strings.HasPrefix(err.Error(), "manifest: ") {
				t.Errorf("error %q does not say it is about the manifest", err)
			}
		})
	}
}

func TestParseModes(t *testing.T) {
	for s, want := range map[string]os.FileMode{
		"0644": 0o644, "644": 0o644, "0755": 0o755, "755": 0o755,
		"0000": 0, "000": 0, "0777": 0o777, "0600": 0o600, "0400": 0o400,
	} {
		m, err := Parse([]byte(doc(`{"name":"a","sha256":"` + sumA + `","size":1,"mode":"` + s + `"}`)))
		if err != nil {
			t.Errorf("mode %q: %v", s, err)
			continue
		}
		if f := m.Files[0]; f.Mode != want || !f.HasMode {
			t.Errorf("mode %q = %v (HasMode %v), want %v", s, f.Mode, f.HasMode, want)
		}
	}
}

func TestParseIgnoresUnknownFields(t *testing.T) {
	data := `{"version":"1.2.0","signed_by":"ci","channel":{"name":"stable","x":[1,2]},
	  "files":[{"name":"a","sha256":"` + sumA + `","size":1,"owner":"root","Mode":"4755","x-note":null}]}`
	m, err := Parse([]byte(data))
	if err != nil {
		t.Fatal(err)
	}
	if f := m.Files[0]; f.HasMode || f.Mode != 0o644 {
		t.Errorf("a differently cased key changed the file: %+v", f)
	}
}

func TestParseNullMeansAbsent(t *testing.T) {
	m, err := Parse([]byte(`{"version":"1.2.0","base_url":null,"expires":null,"files":[{"name":"a","sha256":"` + sumA + `","size":1,"mode":null,"md5":null}]}`))
	if err != nil {
		t.Fatal(err)
	}
	if m.BaseURL != "" || !m.Expires.IsZero() || m.Files[0].HasMode {
		t.Errorf("null values were not treated as absent: %+v", m)
	}
}

func TestParseMaxSize(t *testing.T) {
	valid := doc(entry("a"))
	// Exactly at the limit (padded with whitespace) is accepted.
	atLimit := valid + strings.Repeat(" ", MaxSize-len(valid))
	if _, err := Parse([]byte(atLimit)); err != nil {
		t.Errorf("manifest of exactly MaxSize bytes refused: %v", err)
	}
	_, err := Parse([]byte(atLimit + " "))
	if err == nil || !strings.Contains(err.Error(), "more than the limit") {
		t.Errorf("manifest of MaxSize+1 bytes: got %v", err)
	}
}

func TestParseManyFiles(t *testing.T) {
	var entries []string
	for i := 0; i < 5000; i++ {
		entries = append(entries, entry(fmt.Sprintf("dir%d/file%d", i%50, i)))
	}
	m, err := Parse([]byte(doc(entries...)))
	if err != nil {
		t.Fatal(err)
	}
	if f, ok := m.Lookup("dir7/file4007"); !ok || f.Name != "dir7/file4007" {
		t.Errorf("Lookup = %+v, %v", f, ok)
	}
}

func TestCheckExpiry(t *testing.T) {
	exp := time.Date(2027, 1, 1, 0, 0, 0, 0, time.UTC)
	m := &Manifest{Expires: exp}
	if err := m.CheckExpiry(exp.Add(-time.Hour)); err != nil {
		t.Errorf("before expiry: %v", err)
	}
	if err := m.CheckExpiry(exp); err != nil {
		t.Errorf("at the expiry instant: %v", err)
	}
	err := m.CheckExpiry(exp.Add(time.Second))
	if err == nil || !strings.Contains(err.Error(), "expired at 2027-01-01T00:00:00Z") {
		t.Errorf("after expiry: got %v", err)
	}
	if err := (&Manifest{}).CheckExpiry(time.Date(2999, 1, 1, 0, 0, 0, 0, time.UTC)); err != nil {
		t.Errorf("no expires field: %v", err)
	}
}

func TestCheckExpiryHonoursOffset(t *testing.T) {
	m, err := Parse([]byte(`{"version":"1.0.0","expires":"2027-01-01T02:00:00+02:00","files":[` + entry("a") + `]}`))
	if err != nil {
		t.Fatal(err)
	}
	if err := m.CheckExpiry(time.Date(2027, 1, 1, 0, 0, 1, 0, time.UTC)); err == nil {
		t.Error("a manifest one second past its expiry (given with an offset) was accepted")
	}
}

func TestLookup(t *testing.T) {
	m, err := Parse([]byte(doc(entry("a"), entry("b/c"))))
	if err != nil {
		t.Fatal(err)
	}
	if f, ok := m.Lookup("b/c"); !ok || f.Name != "b/c" || f.SHA256 != sumA {
		t.Errorf("Lookup(b/c) = %+v, %v", f, ok)
	}
	if _, ok := m.Lookup("b"); ok {
		t.Error("Lookup found a name that is only a directory")
	}
	// Files changed after Parse: the result must follow Files, not a stale index.
	m.Files[0].Name = "z"
	if _, ok := m.Lookup("a"); ok {
		t.Error("Lookup found a renamed entry")
	}
	if _, ok := m.Lookup("z"); !ok {
		t.Error("Lookup missed an entry renamed after Parse")
	}
	hand := &Manifest{Files: []File{{Name: "x"}}}
	if _, ok := hand.Lookup("x"); !ok {
		t.Error("Lookup on a hand-built manifest")
	}
}

func TestMarshalRoundTrip(t *testing.T) {
	cases := map[string]*Manifest{
		"modern": {
			Version: "1.2.0",
			BaseURL: "1.2.0/",
			Expires: time.Date(2027, 1, 1, 0, 0, 0, 500, time.UTC),
			Files: []File{
				{Name: "z-last-but-listed-first", SHA256: sumB, Size: 0, Mode: 0o600, HasMode: true},
				{Name: "bin/sd-agent", SHA256: sumA, Size: 99, Mode: 0o755, HasMode: true},
				{Name: "no-mode", SHA256: sumA, Size: 3, Mode: DefaultMode},
				{Name: "<&>", SHA256: sumA, Size: 3, Mode: 0, HasMode: true},
			},
		},
		"legacy": {
			Version: "1.0.0b4",
			Legacy:  true,
			Files: []File{
				{Name: "agent.py", MD5: md5A, Size: -1, Mode: DefaultMode},
				{Name: "sized", MD5: md5A, Size: 12, Mode: 0o755, HasMode: true},
			},
		},
	}
	for desc, m := range cases {
		t.Run(desc, func(t *testing.T) {
			data, err := m.Marshal()
			if err != nil {
				t.Fatal(err)
			}
			back, err := Parse(data)
			if err != nil {
				t.Fatalf("Parse(Marshal(m)): %v\n%s", err, data)
			}
			assertSameManifest(t, m, back)
			again, err := back.Marshal()
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(data, again) {
				t.Errorf("Marshal is not stable:\n%s\n%s", data, again)
			}
		})
	}
}

func TestMarshalForm(t *testing.T) {
	m := &Manifest{Version: "1.2.0", BaseURL: "1.2.0/", Files: []File{
		{Name: "bin/sd-agent", SHA256: sumA, MD5: md5A, Size: 99, Mode: 0o755, HasMode: true},
		{Name: "a", SHA256: sumA, Size: 1, Mode: DefaultMode},
	}}
	data, err := m.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	want := `{
  "version": "1.2.0",
  "base_url": "1.2.0/",
  "files": [
    {
      "name": "bin/sd-agent",
      "sha256": "` + sumA + `",
      "size": 99,
      "mode": "0755"
    },
    {
      "name": "a",
      "sha256": "` + sumA + `",
      "size": 1
    }
  ]
}
`
	if string(data) != want {
		t.Errorf("Marshal =\n%s\nwant\n%s", data, want)
	}
}

func TestMarshalRefusesInvalid(t *testing.T) {
	cases := map[string]*Manifest{
		"bad name":         {Version: "1.0.0", Files: []File{{Name: "../x", SHA256: sumA, Size: 1}}},
		"no version":       {Files: []File{{Name: "x", SHA256: sumA, Size: 1}}},
		"no files":         {Version: "1.0.0"},
		"unknown size":     {Version: "1.0.0", Files: []File{{Name: "x", SHA256: sumA, Size: -1}}},
		"setuid mode":      {Version: "1.0.0", Files: []File{{Name: "x", SHA256: sumA, Size: 1, Mode: 0o755 | os.ModeSetuid, HasMode: true}}},
		"legacy mismatch":  {Version: "1.0.0", Legacy: true, Files: []File{{Name: "x", SHA256: sumA, Size: 1}}},
		"mixed":            {Version: "1.0.0", Files: []File{{Name: "x", SHA256: sumA, Size: 1}, {Name: "y", MD5: md5A, Size: -1}}},
		"uppercase sha256": {Version: "1.0.0", Files: []File{{Name: "x", SHA256: strings.ToUpper(sumA), Size: 1}}},
	}
	for desc, m := range cases {
		if data, err := m.Marshal(); err == nil {
			t.Errorf("%s: Marshal accepted it:\n%s", desc, data)
		}
	}
}

// assertSameManifest compares two manifests field by field (times with Equal, since a parsed
// time may carry a different *Location for the same instant).
func assertSameManifest(t *testing.T, want, got *Manifest) {
	t.Helper()
	if got.Version != want.Version || got.BaseURL != want.BaseURL || got.Legacy != want.Legacy || !got.Expires.Equal(want.Expires) {
		t.Errorf("header: got %q %q %v %v, want %q %q %v %v",
			got.Version, got.BaseURL, got.Legacy, got.Expires, want.Version, want.BaseURL, want.Legacy, want.Expires)
	}
	if len(got.Files) != len(want.Files) {
		t.Fatalf("got %d files, want %d", len(got.Files), len(want.Files))
	}
	if !reflect.DeepEqual(got.Packs, want.Packs) {
		t.Errorf("packs: got %+v, want %+v", got.Packs, want.Packs)
	}
	for i := range want.Files {
		if !reflect.DeepEqual(got.Files[i], want.Files[i]) {
			t.Errorf("file %d: got %+v, want %+v", i, got.Files[i], want.Files[i])
		}
	}
}

func TestCompareVersions(t *testing.T) {
	// Each version is older than every one after it.
	ordered := []string{
		"0.9", "1.0.0a1", "1.0.0b4", "1.0.0b9", "1.0.0b10", "1.0.0rc1", "1.0.0rc2",
		"1.0.0", "1.0.1", "1.2.0-rc.1", "1.2.0-rc.2", "1.2.0-rc.10", "1.2.0", "1.9.0", "1.10.0", "2.0.0",
	}
	for i, a := range ordered {
		for j, b := range ordered {
			want := 0
			if i < j {
				want = -1
			} else if i > j {
				want = 1
			}
			got, err := CompareVersions(a, b)
			if err != nil {
				t.Fatalf("CompareVersions(%q, %q): %v", a, b, err)
			}
			if got != want {
				t.Errorf("CompareVersions(%q, %q) = %d, want %d", a, b, got, want)
			}
		}
	}
}

func TestCompareVersionsEqual(t *testing.T) {
	for _, pair := range [][2]string{
		{"1.2.0", "1.2.0"}, {"1.2", "1.2.0"}, {"v1.2.0", "1.2.0"},
		{"1.0.0rc1", "1.0.0-rc.1"}, {"1.0.0+build.1", "1.0.0+build.2"}, {"1.0.0b4", "1.0.0b4"},
	} {
		got, err := CompareVersions(pair[0], pair[1])
		if err != nil || got != 0 {
			t.Errorf("CompareVersions(%q, %q) = %d, %v; want 0", pair[0], pair[1], got, err)
		}
	}
}

func TestCompareVersionsRefusesGarbage(t *testing.T) {
	for _, bad := range []string{"", "latest", "1.0.0/../x", "1..0", "-1.0"} {
		if _, err := CompareVersions(bad, "1.0.0"); err == nil {
			t.Errorf("CompareVersions(%q, …) accepted it", bad)
		}
		if _, err := CompareVersions("1.0.0", bad); err == nil {
			t.Errorf("CompareVersions(…, %q) accepted it", bad)
		}
	}
}

// Four files of 2^62 bytes used to show "4 files to download (0 B)" and pass the free-space check;
// a total that overflows is refused when the manifest is validated.
func TestParseRefusesSizesThatOverflow(t *testing.T) {
	sized := func(name string, size string) string {
		return `{"name":"` + name + `","sha256":"` + sumA + `","size":` + size + `}`
	}
	const quarter = "4611686018427387904" // 2^62
	for _, files := range [][]string{
		{sized("a", quarter), sized("b", quarter)},
		{sized("a", quarter), sized("b", quarter), sized("c", quarter), sized("d", quarter)},
		{sized("a", "9223372036854775807"), sized("b", "1")},
	} {
		_, err := Parse([]byte(doc(files...)))
		if err == nil || !strings.Contains(err.Error(), "add up to more than 9223372036854775807 bytes") {
			t.Errorf("%d files: got %v, want the total refused", len(files), err)
		}
	}
	if _, err := Parse([]byte(doc(sized("a", "9223372036854775806"), sized("b", "1")))); err != nil {
		t.Errorf("a total of exactly MaxInt64 refused: %v", err)
	}
}

// The canonical form of an accepted manifest may be larger than the compact bytes fetched; what
// sdupdate writes itself must read back, whatever its size.
func TestMarshalIsNotBoundByTheReadLimit(t *testing.T) {
	var entries []string
	name := longName(MaxName - 7)
	for size := 0; size < MaxSize-5000; {
		e := fmt.Sprintf(`{"name":"%s/%06d","sha256":"%s","size":1,"mode":"0644"}`, name, len(entries), sumA)
		entries = append(entries, e)
		size += len(e) + 1
	}
	fetched := doc(entries...)
	m, err := Parse([]byte(fetched))
	if err != nil {
		t.Fatalf("a %d-byte manifest refused: %v", len(fetched), err)
	}
	out, err := m.Marshal()
	if err != nil {
		t.Fatalf("an accepted manifest of %d bytes does not marshal: %v", len(fetched), err)
	}
	if len(out) <= MaxSize {
		t.Fatalf("canonical form is %d bytes, not past the limit: the case is not exercised", len(out))
	}
	back, err := ParseRecorded(out)
	if err != nil || len(back.Files) != len(m.Files) {
		t.Fatalf("ParseRecorded of the %d-byte canonical form: %v", len(out), err)
	}
	if _, err := Parse(out); err == nil || !strings.Contains(err.Error(), "more than the limit") {
		t.Errorf("Parse (what a server sends) of %d bytes: %v, want the limit", len(out), err)
	}
}
