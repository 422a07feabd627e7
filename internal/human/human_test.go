package human

import "testing"

func TestBytes(t *testing.T) {
	for _, tc := range []struct {
		n    int64
		want string
	}{
		{0, "0 B"},
		{1023, "1023 B"},
		{1024, "1.0 KiB"},
		{1536, "1.5 KiB"},
		{5 << 20, "5.0 MiB"},
		{3 << 30, "3.0 GiB"},
	} {
		if got := Bytes(tc.n); got != tc.want {
			t.Errorf("Bytes(%d) = %q, want %q", tc.n, got, tc.want)
		}
	}
}

func TestVersionAndPlural(t *testing.T) {
	if got := Version(""); got != "unknown" {
		t.Errorf(`Version("") = %q, want "unknown"`, got)
	}
	if got := Version("1.2.3"); got != "1.2.3" {
		t.Errorf(`Version("1.2.3") = %q`, got)
	}
	if got := Plural(1, "file", "files"); got != "file" {
		t.Errorf("Plural(1) = %q", got)
	}
	if got := Plural(2, "file", "files"); got != "files" {
		t.Errorf("Plural(2) = %q", got)
	}
}

// A bidi override or a zero-width character in a name could make a plan show another name than
// the one it installs; such names are shown quoted and escaped, as ls does.
func TestNameEscapesWhatDoesNotPrintAsItself(t *testing.T) {
	for in, want := range map[string]string{
		"agent.py":             "agent.py",
		"ünïcode/файл":         "ünïcode/файл",
		"with space":           "with space",
		"evil\u202etxt.exe":    `"evil\u202etxt.exe"`,
		"zero\u200bwidth":      `"zero\u200bwidth"`,
		"lrm\u200emark":        `"lrm\u200emark"`,
		"isolate\u2066x\u2069": `"isolate\u2066x\u2069"`,
	} {
		if got := Name(in); got != want {
			t.Errorf("Name(%q) = %s, want %s", in, got, want)
		}
	}
}
