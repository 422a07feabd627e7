package main

import (
	"bytes"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// oneDocument fails unless stdout holds exactly one JSON document.
func oneDocument(t *testing.T, what string, r result) map[string]any {
	t.Helper()
	dec := json.NewDecoder(bytes.NewReader([]byte(r.stdout)))
	var doc any
	if err := dec.Decode(&doc); err != nil {
		t.Fatalf("%s: stdout is not JSON: %v\n%s", what, err, r.stdout)
	}
	var extra any
	if err := dec.Decode(&extra); err != io.EOF {
		t.Fatalf("%s: stdout holds more than one JSON document:\n%s", what, r.stdout)
	}
	m, _ := doc.(map[string]any)
	return m
}

// `verify --json` on a mismatch printed its result and then an error object: two documents.
// Every --json command prints one, whatever the outcome.
func TestJSONIsOneDocumentForEveryOutcome(t *testing.T) {
	e := newEnv(t)
	c := "--config=" + e.conf
	oneDocument(t, "check --json, no site", sdupdate(t, c, "check", "--json").expect(t, 1, "check with no site"))
	oneDocument(t, "verify --json, nothing installed", sdupdate(t, c, "verify", "--json").expect(t, 1, "verify before an install"))
	e.release(t, "1.0.0", files1)
	oneDocument(t, "check --json, update available", sdupdate(t, c, "check", "--json").expect(t, 100, "check"))
	sdupdate(t, c, "update").expect(t, 0, "update")
	oneDocument(t, "verify --json, intact", sdupdate(t, c, "verify", "--json").expect(t, 0, "verify"))
	oneDocument(t, "status --json", sdupdate(t, c, "status", "--json").expect(t, 0, "status"))
	oneDocument(t, "snapshots --json", sdupdate(t, c, "snapshots", "--json").expect(t, 0, "snapshots"))

	if err := os.WriteFile(filepath.Join(e.install, "agent.py"), []byte("tampered"), 0o644); err != nil {
		t.Fatal(err)
	}
	r := sdupdate(t, c, "verify", "--json").expect(t, 1, "verify after tampering")
	doc := oneDocument(t, "verify --json, one mismatch", r)
	if doc["intact"] != false || len(doc["mismatches"].([]any)) != 1 {
		t.Errorf("verify --json: %v", doc)
	}
	if !strings.Contains(r.stderr, "1 installed file differs from version 1.0.0") {
		t.Errorf("stderr: %s", r.stderr)
	}
}
