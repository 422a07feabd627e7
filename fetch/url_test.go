package fetch

import (
	"net/url"
	"strings"
	"testing"
)

func TestJoin(t *testing.T) {
	tests := []struct {
		base, name, want string
	}{
		{"https://h/sd-agent/1.2.0/", "agent.py", "https://h/sd-agent/1.2.0/agent.py"},
		{"https://h/sd-agent/1.2.0", "agent.py", "https://h/sd-agent/1.2.0/agent.py"},
		{"https://h", "bin/sd-agent", "https://h/bin/sd-agent"},
		{"https://h/v/", "bin/sd agent", "https://h/v/bin/sd%20agent"},
		{"https://h/v/", "a#b", "https://h/v/a%23b"},
		{"https://h/v/", "a?b=c", "https://h/v/a%3Fb=c"},
		{"https://h/v/", "100%.txt", "https://h/v/100%25.txt"},
		{"https://h/v/", "données/é.py", "https://h/v/donn%C3%A9es/%C3%A9.py"},
		{"https://h/v/", "a+b;c,d", "https://h/v/a+b%3Bc%2Cd"},
		{"https://h/my%20dir/", "x", "https://h/my%20dir/x"},
		{"https://h/a%2Fb/", "x", "https://h/a%2Fb/x"},
		{"https://h/v/?token=abc", "x", "https://h/v/x?token=abc"},
		{"https://h/v/#frag", "x", "https://h/v/x"},
		{"http://127.0.0.1:8080/v", "x", "http://127.0.0.1:8080/v/x"},
		{"file:///srv/up dates/1.2.0", "a b", "file:///srv/up%20dates/1.2.0/a%20b"},
	}
	for _, tt := range tests {
		got, err := Join(tt.base, tt.name)
		if err != nil || got != tt.want {
			t.Errorf("Join(%q, %q) = %q, %v; want %q", tt.base, tt.name, got, err, tt.want)
			continue
		}
		// The server sees the name again, segment by segment.
		u, err := url.Parse(got)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.HasSuffix(u.Path, "/"+tt.name) {
			t.Errorf("Join(%q, %q): path %q does not end in the name", tt.base, tt.name, u.Path)
		}
	}
	for _, bad := range []struct{ base, name string }{
		{"https://h/v/", ""},
		{"https://h/v/", "/etc/passwd"},
		{"https://h/v/", "a//b"},
		{"https://h/v/", "../x"},
		{"https://h/v/", "a/./b"},
		{"https://h/v/", "a/"},
		{"ftp://h/v/", "x"},
		{"https:///v/", "x"},
		{"not a url at all", "x"},
	} {
		if got, err := Join(bad.base, bad.name); err == nil {
			t.Errorf("Join(%q, %q) = %q, want an error", bad.base, bad.name, got)
		}
	}
}

func TestResolveReference(t *testing.T) {
	const m = "https://updates.example.com/sd-agent/manifest.json"
	tests := []struct {
		manifest, ref, want string
	}{
		{m, "", "https://updates.example.com/sd-agent/"},
		{m, "1.2.0/", "https://updates.example.com/sd-agent/1.2.0/"},
		{m, "1.2.0", "https://updates.example.com/sd-agent/1.2.0"},
		{m, "./1.2.0/", "https://updates.example.com/sd-agent/1.2.0/"},
		{m, "../other/", "https://updates.example.com/other/"},
		{m, "/abs/", "https://updates.example.com/abs/"},
		{m, "https://cdn.example.com/x/", "https://cdn.example.com/x/"},
		{m, "//cdn.example.com/x/", "https://cdn.example.com/x/"},
		{m, "1.2.0 beta/", "https://updates.example.com/sd-agent/1.2.0%20beta/"},
		{m, "1.2.0%23rc/", "https://updates.example.com/sd-agent/1.2.0%23rc/"},
		{m, "é/", "https://updates.example.com/sd-agent/%C3%A9/"},
		{m + "?token=1", "", "https://updates.example.com/sd-agent/"},
		{"file:///srv/pub/manifest.json", "1.0/", "file:///srv/pub/1.0/"},
		{"file:///srv/pub/manifest.json", "", "file:///srv/pub/"},
		{"http://127.0.0.1:8080/manifest.json", "v/", "http://127.0.0.1:8080/v/"},
	}
	for _, tt := range tests {
		got, err := ResolveReference(tt.manifest, tt.ref)
		if err != nil || got != tt.want {
			t.Errorf("ResolveReference(%q, %q) = %q, %v; want %q", tt.manifest, tt.ref, got, err, tt.want)
		}
	}
	// Join after ResolveReference keeps an escaped base intact.
	base, _ := ResolveReference(m, "1.2.0 beta/")
	if got, _ := Join(base, "a b"); got != "https://updates.example.com/sd-agent/1.2.0%20beta/a%20b" {
		t.Errorf("Join(Resolve) = %q", got)
	}
	for _, bad := range []struct{ manifest, ref, msg string }{
		{m, "v#1/", "'#'"},
		{m, "file:///etc/", "local files"},
		{m, "ftp://x/", "unsupported scheme"},
		{"ftp://x/m.json", "", "unsupported scheme"},
		{m, "https://u:p@h:bad/", "invalid"},
	} {
		got, err := ResolveReference(bad.manifest, bad.ref)
		if err == nil || !strings.Contains(err.Error(), bad.msg) {
			t.Errorf("ResolveReference(%q, %q) = %q, %v; want an error about %s", bad.manifest, bad.ref, got, err, bad.msg)
		}
	}
}
