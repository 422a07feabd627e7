package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// An update that finds the install up to date takes the installed version from a record of
// installed.json's bytes instead of parsing it; what it must still notice, as the real binary
// shows: a damaged installed.json, an expired manifest, a rollback since the record was written.
func TestUpToDateStillNoticesDamageExpiryAndRollback(t *testing.T) {
	e := newEnv(t)
	c := "--config=" + e.conf
	e.release(t, "1.0.0", files1)
	sdupdate(t, c, "update").expect(t, 0, "update to 1.0.0")
	upToDate := func(what string) {
		t.Helper()
		if r := sdupdate(t, c, "update").expect(t, 0, what); !strings.Contains(r.stdout, "already up to date (1.0.0)") {
			t.Errorf("%s: stdout %q", what, r.stdout)
		}
	}
	upToDate("update when up to date")

	installed := filepath.Join(e.state, "installed.json")
	raw := []byte(mustRead(t, installed))
	i := bytes.Index(raw, []byte(`"sha256": "`)) + len(`"sha256": "`)
	raw[i] = 'Z'
	if err := os.WriteFile(installed, raw, 0o600); err != nil {
		t.Fatal(err)
	}
	r := sdupdate(t, c, "update").expect(t, 1, "update with a damaged installed.json")
	if !strings.Contains(r.stderr, "installed manifest") || !strings.Contains(r.stderr, "damaged") || !strings.Contains(r.stderr, "--repair") {
		t.Errorf("the refusal does not say what is damaged and what to do:\n%s", r.stderr)
	}
	if codes := statusFindings(t, e); !has(codes, "installed-manifest-damaged") {
		t.Errorf("findings %v", codes)
	}
	sdupdate(t, c, "update", "--repair").expect(t, 0, "update --repair")
	upToDate("update after the repair")

	e.release(t, "1.1.0", files2)
	sdupdate(t, c, "update").expect(t, 0, "update to 1.1.0")
	sdupdate(t, c, "rollback").expect(t, 0, "rollback to 1.0.0")
	if r := sdupdate(t, c, "update").expect(t, 0, "update after the rollback"); !strings.Contains(r.stdout, "updated 1.0.0 -> 1.1.0") {
		t.Errorf("update after the rollback: stdout %q, want 1.0.0 -> 1.1.0", r.stdout)
	}

	// The site is file:// and unsigned, so the manifest can be edited in place.
	site := filepath.Join(e.site, "manifest.json")
	expired := strings.Replace(mustRead(t, site), "{", `{"expires": "2020-01-01T00:00:00Z",`, 1)
	if err := os.WriteFile(site, []byte(expired), 0o644); err != nil {
		t.Fatal(err)
	}
	if r := sdupdate(t, c, "update").expect(t, 1, "update to the installed version, expired"); !strings.Contains(r.stderr, "expired") {
		t.Errorf("the refusal does not say expired:\n%s", r.stderr)
	}
}
