package updater

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/spf13/afero"
)

// installV1 brings a fresh in-memory machine to version 1.0.0 with an untracked config file.
// installedWithAgent is 1.0.0 installed on an in-memory filesystem, its agent unit active and
// steered by the test through the returned fake.
func installedWithAgent(t *testing.T) (*site, afero.Fs, *Engine, *fakeAgent) {
	s := newSite(t)
	fsys := afero.NewMemMapFs()
	cfg := testConfig(s)
	cfg.Unit = "sd-agent.service"
	agent := &fakeAgent{active: true}
	e := newEngine(fsys, cfg, agent)
	installV1(t, s, fsys, e)
	return s, fsys, e, agent
}

func installV1(t *testing.T, s *site, fsys afero.Fs, e *Engine) {
	t.Helper()
	if err := afero.WriteFile(fsys, installDir+"/config.cfg", []byte("key=secret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	s.publish(t, "1.0.0", v1)
	res, err := e.Update(context.Background(), UpdateOptions{})
	if err != nil {
		t.Fatalf("update to 1.0.0: %v", err)
	}
	if res.Outcome != OutcomeUpdated {
		t.Fatalf("outcome %q", res.Outcome)
	}
}

var untracked = map[string]string{"config.cfg": "key=secret\n 0600"}

func TestUpdateReplacesChangedAddsNewRemovesDroppedKeepsUntracked(t *testing.T) {
	s := newSite(t)
	fsys := afero.NewMemMapFs()
	e := newEngine(fsys, testConfig(s), nil)
	installV1(t, s, fsys, e)
	equalTrees(t, tree(t, fsys, installDir), want(v1, untracked))

	s.publish(t, "1.1.0", v2)
	s.resetRequests()
	res, err := e.Update(context.Background(), UpdateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if res.Outcome != OutcomeUpdated || res.From != "1.0.0" || res.To != "1.1.0" {
		t.Fatalf("result %+v", res)
	}
	equalTrees(t, tree(t, fsys, installDir), want(v2, untracked))
	// Delta: only the changed and the added file travel.
	got := s.fileRequests()
	wantReq := map[string]int{"/1.1.0/agent.py": 1, "/1.1.0/lib/new.py": 1}
	if fmt.Sprint(got) != fmt.Sprint(wantReq) {
		t.Errorf("requests %v, want %v", got, wantReq)
	}
	// The directory of the removed file went with it; nothing staged remains.
	if ok, _ := afero.DirExists(fsys, installDir+"/plugins"); ok {
		t.Error("empty plugins/ left behind")
	}
	noLeftovers(t, fsys)
	st, err := e.Status(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if st.Version != "1.1.0" || st.LastRun == nil || st.LastRun.Result != OutcomeUpdated || len(st.Snapshots) != 2 {
		t.Errorf("status %+v last run %+v", st, st.LastRun)
	}
}

func TestAlreadyUpToDateFetchesNoFile(t *testing.T) {
	s := newSite(t)
	fsys := afero.NewMemMapFs()
	e := newEngine(fsys, testConfig(s), nil)
	installV1(t, s, fsys, e)
	s.resetRequests()
	res, err := e.Update(context.Background(), UpdateOptions{})
	if err != nil || res.Outcome != OutcomeUpToDate {
		t.Fatalf("got %+v, %v", res, err)
	}
	if n := len(s.fileRequests()); n != 0 {
		t.Errorf("%d file requests for an up-to-date install", n)
	}
}

func TestFirstUpdateSkipsFilesThatAlreadyMatch(t *testing.T) {
	s := newSite(t)
	fsys := afero.NewMemMapFs()
	e := newEngine(fsys, testConfig(s), nil)
	// A pre-sdupdate install: same agent.py, different everything else.
	_ = afero.WriteFile(fsys, installDir+"/agent.py", []byte(v1["agent.py"].data), 0o644)
	_ = afero.WriteFile(fsys, installDir+"/lib/common.py", []byte("stale\n"), 0o644)
	s.publish(t, "1.0.0", v1)
	if _, err := e.Update(context.Background(), UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	if n := s.fileRequests()["/1.0.0/agent.py"]; n != 0 {
		t.Errorf("agent.py fetched %d times although it matched", n)
	}
	equalTrees(t, tree(t, fsys, installDir), want(v1, nil))
}

func TestChecksumRetryInstallsTheVerifiedSecondTry(t *testing.T) {
	s := newSite(t)
	fsys := afero.NewMemMapFs()
	e := newEngine(fsys, testConfig(s), nil)
	installV1(t, s, fsys, e)
	s.publish(t, "1.1.0", v2)
	s.corrupt["/1.1.0/agent.py"] = 1
	if _, err := e.Update(context.Background(), UpdateOptions{}); err != nil {
		t.Fatalf("update with one corrupt response: %v", err)
	}
	if n := s.fileRequests()["/1.1.0/agent.py"]; n != 2 {
		t.Errorf("agent.py fetched %d times, want 2", n)
	}
	equalTrees(t, tree(t, fsys, installDir), want(v2, untracked))
}

func TestChecksumFailureOnEveryTryChangesNothing(t *testing.T) {
	s := newSite(t)
	fsys := afero.NewMemMapFs()
	cfg := testConfig(s)
	cfg.Retries = 3
	e := newEngine(fsys, cfg, nil)
	installV1(t, s, fsys, e)
	before := tree(t, fsys, installDir)
	s.publish(t, "1.1.0", v2)
	s.corrupt["/1.1.0/lib/new.py"] = 100
	res, err := e.Update(context.Background(), UpdateOptions{})
	if ExitCode(err) != CodeFailed {
		t.Fatalf("exit %d (%v), want 1", ExitCode(err), err)
	}
	if !strings.Contains(err.Error(), "lib/new.py") || !strings.Contains(err.Error(), "sha256") {
		t.Errorf("error does not say which file and check failed: %v", err)
	}
	if n := s.fileRequests()["/1.1.0/lib/new.py"]; n != 3 {
		t.Errorf("lib/new.py fetched %d times, want Retries=3", n)
	}
	equalTrees(t, tree(t, fsys, installDir), before)
	noLeftovers(t, fsys)
	if res.Outcome != OutcomeFailed {
		t.Errorf("outcome %q", res.Outcome)
	}
	snaps, _ := e.Snapshots()
	if len(snaps) != 1 {
		t.Errorf("%d snapshots after a failed update, want the one of 1.0.0", len(snaps))
	}
}

func TestServerErrorIsRetriedNotFoundIsNot(t *testing.T) {
	s := newSite(t)
	fsys := afero.NewMemMapFs()
	e := newEngine(fsys, testConfig(s), nil)
	installV1(t, s, fsys, e)
	before := tree(t, fsys, installDir)
	s.publish(t, "1.1.0", v2)
	s.status["/1.1.0/agent.py"] = 404
	if _, err := e.Update(context.Background(), UpdateOptions{}); ExitCode(err) != CodeFailed {
		t.Fatalf("want exit 1, got %v", err)
	}
	if n := s.fileRequests()["/1.1.0/agent.py"]; n != 1 {
		t.Errorf("404 fetched %d times, want 1 (not retried)", n)
	}
	equalTrees(t, tree(t, fsys, installDir), before)
}

func TestRollbackRestoresByteIdenticalTree(t *testing.T) {
	s := newSite(t)
	fsys := afero.NewMemMapFs()
	e := newEngine(fsys, testConfig(s), nil)
	installV1(t, s, fsys, e)
	before := tree(t, fsys, installDir)
	s.publish(t, "1.1.0", v2)
	if _, err := e.Update(context.Background(), UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	res, err := e.Rollback(context.Background(), "")
	if err != nil {
		t.Fatal(err)
	}
	if res.Outcome != OutcomeRolledBack || res.To != "1.0.0" {
		t.Errorf("result %+v", res)
	}
	equalTrees(t, tree(t, fsys, installDir), before)
	st, _ := e.Status(context.Background())
	if st.Version != "1.0.0" {
		t.Errorf("installed version %q after rollback", st.Version)
	}
	if _, mismatches, err := e.Verify(context.Background()); err != nil || len(mismatches) > 0 {
		t.Errorf("verify after rollback: %v %v", mismatches, err)
	}
	noLeftovers(t, fsys)
}

func TestRollbackToUnknownSnapshotIsRefused(t *testing.T) {
	s := newSite(t)
	fsys := afero.NewMemMapFs()
	e := newEngine(fsys, testConfig(s), nil)
	installV1(t, s, fsys, e)
	if _, err := e.Rollback(context.Background(), "nope"); ExitCode(err) != CodeFailed {
		t.Fatalf("want exit 1, got %v", err)
	}
}

func TestRetentionKeepsNewestSnapshots(t *testing.T) {
	s := newSite(t)
	fsys := afero.NewMemMapFs()
	cfg := testConfig(s)
	cfg.KeepSnapshots = 2
	e := newEngine(fsys, cfg, nil)
	tick := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	e.Now = func() time.Time { tick = tick.Add(time.Minute); return tick }
	for i := 0; i < 5; i++ {
		s.publish(t, fmt.Sprintf("1.%d.0", i), map[string]agentFile{"agent.py": {data: fmt.Sprint("v", i)}})
		if _, err := e.Update(context.Background(), UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	snaps, err := e.Snapshots()
	if err != nil {
		t.Fatal(err)
	}
	if len(snaps) != 2 || snaps[0].Version != "1.3.0" || snaps[1].Version != "1.2.0" {
		t.Errorf("snapshots %+v, want those of 1.3.0 and 1.2.0", snaps)
	}
}

func TestDryRunChangesNothing(t *testing.T) {
	s := newSite(t)
	fsys := afero.NewMemMapFs()
	e := newEngine(fsys, testConfig(s), nil)
	installV1(t, s, fsys, e)
	beforeInstall, beforeState := tree(t, fsys, installDir), tree(t, fsys, stateDir)
	s.publish(t, "1.1.0", v2)
	s.resetRequests()
	res, err := e.Update(context.Background(), UpdateOptions{DryRun: true})
	if err != nil {
		t.Fatal(err)
	}
	add, change, remove := res.Plan.Counts()
	if add != 1 || change != 1 || remove != 1 {
		t.Errorf("plan add=%d change=%d remove=%d, want 1 1 1", add, change, remove)
	}
	// The plan as printed is the CLI's (its test checks the same lines).
	var planned []string
	for _, c := range res.Plan.Changes {
		planned = append(planned, c.File.Name)
	}
	planned = append(planned, res.Plan.Removes...)
	for _, w := range []string{"lib/new.py", "plugins/old.py"} {
		if !slices.Contains(planned, w) {
			t.Errorf("plan lacks %q: %v", w, planned)
		}
	}
	equalTrees(t, tree(t, fsys, installDir), beforeInstall)
	equalTrees(t, tree(t, fsys, stateDir), beforeState)
	if n := len(s.fileRequests()); n != 0 {
		t.Errorf("dry run fetched %d files", n)
	}
}

func TestDowngradeRefusedUnlessAllowed(t *testing.T) {
	s := newSite(t)
	fsys := afero.NewMemMapFs()
	e := newEngine(fsys, testConfig(s), nil)
	s.publish(t, "1.1.0", v2)
	if _, err := e.Update(context.Background(), UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	before := tree(t, fsys, installDir)
	s.publish(t, "1.0.0", v1)
	_, err := e.Update(context.Background(), UpdateOptions{})
	if ExitCode(err) != CodeFailed || !strings.Contains(err.Error(), "downgrade") {
		t.Fatalf("want a downgrade refusal, got %v", err)
	}
	equalTrees(t, tree(t, fsys, installDir), before)
	if _, err := e.Update(context.Background(), UpdateOptions{AllowDowngrade: true}); err != nil {
		t.Fatal(err)
	}
	equalTrees(t, tree(t, fsys, installDir), want(v1, nil))
}

func TestRepairRefetchesDamagedFiles(t *testing.T) {
	s := newSite(t)
	fsys := afero.NewMemMapFs()
	e := newEngine(fsys, testConfig(s), nil)
	installV1(t, s, fsys, e)
	_ = afero.WriteFile(fsys, installDir+"/lib/common.py", []byte("tampered"), 0o644)
	_, mismatches, _ := e.Verify(context.Background())
	if len(mismatches) != 1 || mismatches[0].Name != "lib/common.py" {
		t.Fatalf("verify found %v", mismatches)
	}
	s.resetRequests()
	if res, err := e.Update(context.Background(), UpdateOptions{}); err != nil || res.Outcome != OutcomeUpToDate {
		t.Fatalf("without --repair: %+v %v", res, err)
	}
	if _, err := e.Update(context.Background(), UpdateOptions{Repair: true}); err != nil {
		t.Fatal(err)
	}
	if got := s.fileRequests(); len(got) != 1 || got["/1.0.0/lib/common.py"] != 1 {
		t.Errorf("repair fetched %v", got)
	}
	equalTrees(t, tree(t, fsys, installDir), want(v1, untracked))
}

func TestModeOnlyChangeKeepsSnapshotMode(t *testing.T) {
	s := newSite(t)
	fsys := afero.NewMemMapFs()
	e := newEngine(fsys, testConfig(s), nil)
	installV1(t, s, fsys, e)
	v := map[string]agentFile{}
	for k, f := range v1 {
		v[k] = f
	}
	v["agent.py"] = agentFile{data: v1["agent.py"].data, mode: 0o600}
	s.publish(t, "1.0.1", v)
	s.resetRequests()
	if _, err := e.Update(context.Background(), UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	if n := len(s.fileRequests()); n != 0 {
		t.Errorf("a mode-only change fetched %d files", n)
	}
	equalTrees(t, tree(t, fsys, installDir), want(v, untracked))
}

func TestAgentThatDoesNotComeUpIsRolledBack(t *testing.T) {
	s, fsys, e, agent := installedWithAgent(t)
	before := tree(t, fsys, installDir)
	agent.restarts = 0
	agent.fail = func(n int) error {
		if n == 1 {
			return errors.New("NRestarts went 0→3 while settling")
		}
		return nil
	}
	s.publish(t, "1.1.0", v2)
	res, err := e.Update(context.Background(), UpdateOptions{})
	if ExitCode(err) != CodeRolledBack {
		t.Fatalf("exit %d (%v), want 3", ExitCode(err), err)
	}
	if agent.restarts != 2 {
		t.Errorf("agent restarted %d times, want 2 (new, then old)", agent.restarts)
	}
	if res.Outcome != OutcomeRolledBack || !strings.Contains(res.Reason, "NRestarts") {
		t.Errorf("result %+v", res)
	}
	equalTrees(t, tree(t, fsys, installDir), before)
	st, _ := e.Status(context.Background())
	if st.Version != "1.0.0" || st.LastRun.Result != OutcomeRolledBack {
		t.Errorf("status version %q last run %+v", st.Version, st.LastRun)
	}
	noLeftovers(t, fsys)
}

func TestRollbackThatAlsoFailsNeedsAnOperator(t *testing.T) {
	s, fsys, e, agent := installedWithAgent(t)
	before := tree(t, fsys, installDir)
	agent.fail = func(int) error { return errors.New("job result: failed") }
	s.publish(t, "1.1.0", v2)
	res, err := e.Update(context.Background(), UpdateOptions{})
	if ExitCode(err) != CodeOperator || res.Outcome != OutcomeRollbackFailed {
		t.Fatalf("exit %d outcome %q (%v), want 4 rollback-failed", ExitCode(err), res.Outcome, err)
	}
	// The files are the old ones even though the old agent did not come up either.
	equalTrees(t, tree(t, fsys, installDir), before)
}

func TestInactiveAgentIsLeftStopped(t *testing.T) {
	s := newSite(t)
	fsys := afero.NewMemMapFs()
	cfg := testConfig(s)
	cfg.Unit = "sd-agent.service"
	agent := &fakeAgent{active: false}
	e := newEngine(fsys, cfg, agent)
	installV1(t, s, fsys, e)
	if agent.restarts != 0 {
		t.Errorf("an inactive agent was restarted %d times", agent.restarts)
	}
}

func TestSymlinkInInstallIsRefusedAndNothingWritten(t *testing.T) {
	// The OS filesystem: the in-memory one has no symlinks.
	s := newSite(t)
	root := t.TempDir()
	outside := t.TempDir()
	osfs := afero.NewOsFs()
	cfg := testConfig(s)
	cfg.Directory = filepath.Join(root, "opt")
	cfg.StateDirectory = filepath.Join(root, "state")
	_ = osfs.MkdirAll(cfg.Directory, 0o755)
	if err := osSymlink(outside, filepath.Join(cfg.Directory, "lib")); err != nil {
		t.Fatal(err)
	}
	e := newEngine(osfs, cfg, nil)
	s.publish(t, "1.1.0", v2)
	_, err := e.Update(context.Background(), UpdateOptions{})
	if ExitCode(err) != CodeFailed || !strings.Contains(err.Error(), "symlink") {
		t.Fatalf("want a symlink refusal, got %v", err)
	}
	if n := len(s.fileRequests()); n != 0 {
		t.Errorf("%d files fetched before the refusal", n)
	}
	if got := tree(t, osfs, outside); len(got) != 0 {
		t.Errorf("files written outside the install: %v", got)
	}
}

func TestSignatureURLKeepsQueryString(t *testing.T) {
	for in, want := range map[string]string{
		"https://u.example/a/manifest.json":         "https://u.example/a/manifest.json.minisig",
		"https://u.example/a/manifest.json?token=x": "https://u.example/a/manifest.json.minisig?token=x",
		"file:///srv/site/manifest.json":            "file:///srv/site/manifest.json.minisig",
	} {
		if got := signatureURL(in); got != want {
			t.Errorf("signatureURL(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestRecoverRemovesTempFilesACrashLeftInStateDirectory(t *testing.T) {
	s := newSite(t)
	fsys := afero.NewMemMapFs()
	e := newEngine(fsys, testConfig(s), nil)
	installV1(t, s, fsys, e)
	stale := filepath.Join(stateDir, ".sdupdate-0123456789ab-txn.json")
	if err := afero.WriteFile(fsys, stale, []byte("{"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := e.Recover(context.Background()); err != nil {
		t.Fatal(err)
	}
	if ok, _ := afero.Exists(fsys, stale); ok {
		t.Error("a temp file of a cut-short atomic write is still in the state directory")
	}
	if ok, _ := afero.Exists(fsys, filepath.Join(stateDir, "installed.json")); !ok {
		t.Error("installed.json went too")
	}
}
