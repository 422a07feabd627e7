package updater

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spf13/afero"
)

var (
	installedPath = filepath.Join(stateDir, "installed.json")
	recordPath    = filepath.Join(stateDir, "installed.version")
)

// installedV1 is 1.0.0 installed on an in-memory filesystem, without an agent unit.
func installedV1(t *testing.T) (*site, afero.Fs, *Engine) {
	s := newSite(t)
	fsys := afero.NewMemMapFs()
	e := newEngine(fsys, testConfig(s), nil)
	installV1(t, s, fsys, e)
	return s, fsys, e
}

// vouched is the version the record vouches for installed.json as it is now ("" for none).
func vouched(t *testing.T, fsys afero.Fs, e *Engine) string {
	t.Helper()
	l, err := e.resolveLayout()
	if err != nil {
		t.Fatal(err)
	}
	raw, err := afero.ReadFile(fsys, installedPath)
	if err != nil {
		t.Fatal(err)
	}
	r, _ := e.recordedVersion(l, raw)
	return r.Version
}

// upToDate runs an update that must end "already up to date" without fetching a file.
func upToDate(t *testing.T, s *site, e *Engine, what string) {
	t.Helper()
	s.resetRequests()
	res, err := e.Update(context.Background(), UpdateOptions{})
	if err != nil || res.Outcome != OutcomeUpToDate || res.From != "1.0.0" {
		t.Fatalf("%s: got %+v, %v; want up to date at 1.0.0", what, res, err)
	}
	if got := s.fileRequests(); len(got) != 0 {
		t.Errorf("%s: fetched %v", what, got)
	}
}

// editManifest republishes the current manifest with edit applied to its top-level object.
func editManifest(t *testing.T, s *site, edit func(map[string]any)) {
	t.Helper()
	s.mu.Lock()
	raw := s.content["/manifest.json"]
	s.mu.Unlock()
	var m map[string]any
	if err := json.Unmarshal(raw, &m); err != nil {
		t.Fatal(err)
	}
	edit(m)
	out, err := json.MarshalIndent(m, "", "\t")
	if err != nil {
		t.Fatal(err)
	}
	s.setManifest(out)
}

// An update or a no-op leaves a record of the installed version; a missing one, or one written
// by another sdupdate, is written again by the next no-op; a manifest republished with other
// bytes but the same version is up to date as well.
func TestUpToDateRunKeepsTheVersionRecord(t *testing.T) {
	s := newSite(t)
	fsys := afero.NewMemMapFs()
	e := newEngine(fsys, testConfig(s), nil)
	e.SelfVersion = "1.2.0"
	installV1(t, s, fsys, e)
	if v := vouched(t, fsys, e); v != "1.0.0" {
		t.Fatalf("after the update the record vouches for %q, want 1.0.0", v)
	}
	upToDate(t, s, e, "same bytes")

	if err := fsys.Remove(recordPath); err != nil {
		t.Fatal(err)
	}
	upToDate(t, s, e, "without a record")
	if v := vouched(t, fsys, e); v != "1.0.0" {
		t.Errorf("a no-op without a record left one vouching for %q, want 1.0.0", v)
	}

	e.SelfVersion = "1.3.0"
	if v := vouched(t, fsys, e); v != "" {
		t.Errorf("another sdupdate's record vouches for %q", v)
	}
	upToDate(t, s, e, "with another sdupdate's record")
	if v := vouched(t, fsys, e); v != "1.0.0" {
		t.Errorf("record after the no-op vouches for %q, want 1.0.0", v)
	}

	editManifest(t, s, func(m map[string]any) { m["published_by"] = "another pipeline" })
	upToDate(t, s, e, "other bytes, same version")
}

// The no-op decision rests on the record: a no-op update or check takes installed.json's
// version from it and parses nothing more, while status, verify and --repair read installed.json
// whole. (Only someone who can write StateDirectory could make a record vouch for bytes sdupdate
// refuses; the test does, to see which commands rely on it.)
func TestOnlyTheNoOpDecisionReliesOnTheRecord(t *testing.T) {
	s, fsys, e := installedV1(t)
	l, err := e.resolveLayout()
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := afero.ReadFile(fsys, installedPath)
	refused := bytes.Replace(raw, []byte(`"0755"`), []byte(`"4755"`), 1)
	if bytes.Equal(refused, raw) {
		t.Fatal("installed.json has no 0755 mode to change")
	}
	if err := afero.WriteFile(fsys, installedPath, refused, 0o600); err != nil {
		t.Fatal(err)
	}
	e.recordVersion(l, "1.0.0", "", refused)

	upToDate(t, s, e, "record vouching for a refused manifest")
	if res, err := e.Check(context.Background()); err != nil || res.UpdateAvailable || res.Installed != "1.0.0" {
		t.Errorf("check: %+v, %v; want up to date at 1.0.0", res, err)
	}
	st, err := e.Status(context.Background())
	if err != nil || !hasFinding(st.Findings, FindingInstalledDamaged) {
		t.Errorf("status findings %+v, %v; want %s", st.Findings, err, FindingInstalledDamaged)
	}
	if _, _, err := e.Verify(context.Background()); !errors.Is(err, errInstalledDamaged) {
		t.Errorf("verify: %v, want the damage", err)
	}
	if _, err := e.Update(context.Background(), UpdateOptions{Repair: true}); err != nil {
		t.Fatalf("update --repair: %v", err)
	}
	if _, _, err := e.installedManifest(l); err != nil {
		t.Errorf("installed.json after --repair: %v", err)
	}
}

func hasFinding(fs []Finding, code string) bool {
	for _, f := range fs {
		if f.Code == code {
			return true
		}
	}
	return false
}

// A damaged installed.json no longer matches its record: the update refuses before fetching
// anything, as without a record, and a damaged record only costs a parse.
func TestNoOpNoticesADamagedInstalledManifest(t *testing.T) {
	s, fsys, e := installedV1(t)

	if err := afero.WriteFile(fsys, recordPath, []byte(`{"version":"1.0.0","sum":"`), 0o600); err != nil {
		t.Fatal(err)
	}
	upToDate(t, s, e, "damaged record")
	if v := vouched(t, fsys, e); v != "1.0.0" {
		t.Errorf("the damaged record was not written again (vouches for %q)", v)
	}

	raw, _ := afero.ReadFile(fsys, installedPath)
	i := bytes.Index(raw, []byte(`"sha256": "`)) + len(`"sha256": "`)
	raw[i] = 'Z' // not hex
	if err := afero.WriteFile(fsys, installedPath, raw, 0o600); err != nil {
		t.Fatal(err)
	}
	s.resetRequests()
	_, err := e.Update(context.Background(), UpdateOptions{})
	if !errors.Is(err, errInstalledDamaged) || !strings.Contains(err.Error(), "--repair") {
		t.Fatalf("update with a damaged installed.json: %v; want it named damaged, with what to do", err)
	}
	if n := len(s.requests); n != 0 {
		t.Errorf("%d requests before refusing", n)
	}
	if _, err := e.Update(context.Background(), UpdateOptions{Repair: true}); err != nil {
		t.Fatalf("update --repair: %v", err)
	}
	if v := vouched(t, fsys, e); v != "1.0.0" {
		t.Errorf("after --repair the record vouches for %q, want 1.0.0", v)
	}
	upToDate(t, s, e, "after --repair")
}

// The installed version matching is no reason to accept a manifest: an expired one is refused.
func TestUpToDateManifestIsStillCheckedForExpiry(t *testing.T) {
	s, _, e := installedV1(t)
	editManifest(t, s, func(m map[string]any) { m["expires"] = "2026-01-01T00:00:00Z" })
	e.Now = func() time.Time { return time.Date(2026, 6, 1, 0, 0, 0, 0, time.UTC) }
	res, err := e.Update(context.Background(), UpdateOptions{})
	if err == nil || !strings.Contains(err.Error(), "expired") || ExitCode(err) != CodeFailed {
		t.Fatalf("expired manifest of the installed version: %+v, %v; want refused as expired (exit 1)", res, err)
	}
	st, _ := e.Status(context.Background())
	if st.LastRun == nil || st.LastRun.Result != OutcomeFailed {
		t.Errorf("last run %+v, want failed", st.LastRun)
	}
}

// After a rollback installed.json is the older version's: the record of the newer one must not
// make the next update think it is already installed.
func TestUpdateAfterRollbackIsNotUpToDate(t *testing.T) {
	s, fsys, e := installedV1(t)
	s.publish(t, "1.1.0", v2)
	for _, step := range []func() (*Result, error){
		func() (*Result, error) { return e.Update(context.Background(), UpdateOptions{}) },
		func() (*Result, error) { return e.Rollback(context.Background(), "") },
	} {
		if _, err := step(); err != nil {
			t.Fatal(err)
		}
	}
	chk, err := e.Check(context.Background())
	if err != nil || !chk.UpdateAvailable || chk.Installed != "1.0.0" || chk.FilesChanged != 2 {
		t.Errorf("check after the rollback: %+v, %v; want 1.1.0 available, 2 files to fetch", chk, err)
	}
	res, err := e.Update(context.Background(), UpdateOptions{})
	if err != nil || res.Outcome != OutcomeUpdated || res.From != "1.0.0" || res.To != "1.1.0" {
		t.Fatalf("update after the rollback: %+v, %v; want 1.0.0 -> 1.1.0", res, err)
	}
	equalTrees(t, tree(t, fsys, installDir), want(v2, untracked))
}

// recordedOffered is the sha256 of manifest bytes the record says were parsed whole.
func recordedOffered(t *testing.T, fsys afero.Fs) string {
	t.Helper()
	data, err := afero.ReadFile(fsys, recordPath)
	if err != nil {
		t.Fatal(err)
	}
	var r versionRecord
	if err := json.Unmarshal(data, &r); err != nil {
		t.Fatal(err)
	}
	return r.Offered
}

// Manifest bytes parsed whole once are, fetched again, only checked for their signature, syntax,
// version and expiry; bytes that differ in the least are parsed whole, so an entry this sdupdate
// refuses is refused, and an expiry passed since is refused however often the bytes were seen.
func TestSameManifestBytesAreParsedWholeOnce(t *testing.T) {
	s, fsys, e := installedV1(t)
	expires := time.Now().Add(time.Hour).UTC().Truncate(time.Second)
	editManifest(t, s, func(m map[string]any) { m["expires"] = expires.Format(time.RFC3339) })
	s.mu.Lock()
	raw := s.content["/manifest.json"]
	s.mu.Unlock()
	sum := sha256.Sum256(raw)
	upToDate(t, s, e, "first run with these bytes")
	if got, want := recordedOffered(t, fsys), hex.EncodeToString(sum[:]); got != want {
		t.Fatalf("the record keeps offered %q, want the manifest's sha256 %s", got, want)
	}
	upToDate(t, s, e, "the same bytes again")
	if _, err := e.Check(context.Background()); err != nil {
		t.Errorf("check after a no-op: %v", err)
	}

	e.Now = func() time.Time { return expires.Add(time.Minute) }
	if _, err := e.Update(context.Background(), UpdateOptions{}); err == nil || !strings.Contains(err.Error(), "expired") {
		t.Errorf("the same bytes after their expiry: %v, want refused as expired", err)
	}
	e.Now = nil

	editManifest(t, s, func(m map[string]any) {
		files := m["files"].([]any)
		files[0].(map[string]any)["mode"] = "4755"
	})
	if _, err := e.Update(context.Background(), UpdateOptions{}); err == nil || !strings.Contains(err.Error(), "refusing manifest") {
		t.Errorf("same version, other bytes with a refused entry: %v, want the manifest refused", err)
	}
}
