package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/sdupdate/sdupdate/internal/fixture"
	"github.com/sdupdate/sdupdate/lock"
)

// The binary is built once and run as a user would run it.
var binary string

func TestMain(m *testing.M) {
	os.Exit(fixture.RunWithBinary(m.Run, func(bin, _ string) { binary = bin }))
}

type result struct {
	code           int
	stdout, stderr string
}

func sdupdate(t *testing.T, args ...string) result {
	t.Helper()
	return runCmd(context.Background(), t, exec.Command(binary, args...))
}

// runCmd runs cmd as sdupdate is run outside systemd; ctx is the context cmd was made
// with, and its end is a failure of the test.
func runCmd(ctx context.Context, t *testing.T, cmd *exec.Cmd) result {
	t.Helper()
	cmd.Env = append(os.Environ(), "JOURNAL_STREAM=", "NOTIFY_SOCKET=")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if ctx.Err() != nil {
		t.Fatalf("%s still running after its deadline (killed)\nstderr:\n%s", strings.Join(cmd.Args, " "), stderr.String())
	}
	code := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("cannot run sdupdate: %v", err)
	}
	return result{code, stdout.String(), stderr.String()}
}

func (r result) expect(t *testing.T, code int, what string) result {
	t.Helper()
	if r.code != code {
		t.Fatalf("%s: exit %d, want %d\nstdout:\n%s\nstderr:\n%s", what, r.code, code, r.stdout, r.stderr)
	}
	return r
}

// env is a publisher's build directories, a file:// site and a server's install, in a temp dir.
type env struct {
	root, site, install, state, conf string
}

func newEnv(t *testing.T) *env {
	root := t.TempDir()
	e := &env{root: root, site: filepath.Join(root, "site"), install: filepath.Join(root, "opt", "sd-agent"),
		state: filepath.Join(root, "state"), conf: filepath.Join(root, "sdupdate.conf")}
	e.writeConf(t, "")
	return e
}

func (e *env) writeConf(t *testing.T, extra string) {
	t.Helper()
	conf := fixture.LocalConfig{ManifestURL: "file://" + e.site + "/manifest.json", AllowUnsigned: true,
		Directory: e.install, State: e.state, KeepSnapshots: 3, Agent: lines(extra)}.String()
	if err := os.WriteFile(e.conf, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
}

// lines splits extra configuration into its lines; "" is none.
func lines(extra string) []string {
	if extra == "" {
		return nil
	}
	return strings.Split(strings.TrimSuffix(extra, "\n"), "\n")
}

// build writes a version's files under root/build-V and returns the directory.
func (e *env) build(t *testing.T, version string, files map[string]string) string {
	t.Helper()
	dir := filepath.Join(e.root, "build-"+version)
	for name, data := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		mode := os.FileMode(0o644)
		if strings.HasPrefix(name, "bin/") {
			mode = 0o755
		}
		if err := os.WriteFile(p, []byte(data), mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, mode); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func (e *env) release(t *testing.T, version string, files map[string]string) {
	t.Helper()
	dir := e.build(t, version, files)
	sdupdate(t, "release", "--from", dir, "--version", version, "--out", e.site).expect(t, 0, "release "+version)
}

// hashTree maps each file under dir to its sha256 and mode: what a user compares.
func hashTree(t *testing.T, dir string) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if d.Name() == ".sdupdate" {
				return filepath.SkipDir
			}
			return nil
		}
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		fi, _ := d.Info()
		sum := sha256.Sum256(data)
		rel, _ := filepath.Rel(dir, p)
		out[rel] = hex.EncodeToString(sum[:8]) + " " + fi.Mode().Perm().String()
		return nil
	})
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		t.Fatal(err)
	}
	return out
}

func sameTree(t *testing.T, what string, got, want map[string]string) {
	t.Helper()
	if fmt.Sprint(got) != fmt.Sprint(want) {
		keys := func(m map[string]string) []string {
			var k []string
			for n := range m {
				k = append(k, n)
			}
			sort.Strings(k)
			return k
		}
		t.Fatalf("%s: tree differs\n got %v\nwant %v", what, keys(got), keys(want))
	}
}

var (
	files1 = map[string]string{"agent.py": "print('1.0.0')\n", "bin/sd-agent": "#!/bin/sh\necho 1.0.0\n", "plugins/old.py": "old\n"}
	files2 = map[string]string{"agent.py": "print('1.1.0')\n", "bin/sd-agent": "#!/bin/sh\necho 1.0.0\n", "lib/new.py": "new\n"}
)

func TestReleaseUpdateRollbackAsAUserWould(t *testing.T) {
	e := newEnv(t)
	c := "--config=" + e.conf
	e.release(t, "1.0.0", files1)
	if err := os.MkdirAll(e.install, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(e.install, "local.cfg"), []byte("mine"), 0o600); err != nil {
		t.Fatal(err)
	}

	sdupdate(t, c, "check").expect(t, 100, "check before anything is installed")
	sdupdate(t, "update", c).expect(t, 0, "first update (--config after the command)")
	v1 := hashTree(t, e.install)
	if _, ok := v1["local.cfg"]; !ok || len(v1) != 4 {
		t.Fatalf("install after 1.0.0: %v", v1)
	}
	sdupdate(t, c, "verify").expect(t, 0, "verify intact")
	r := sdupdate(t, c, "check").expect(t, 0, "check when up to date")
	if !strings.Contains(r.stdout, "up to date") {
		t.Errorf("check says %q", r.stdout)
	}
	sdupdate(t, c, "update").expect(t, 0, "update when up to date")

	e.release(t, "1.1.0", files2)
	r = sdupdate(t, c, "check", "--json").expect(t, 100, "check --json with an update")
	var chk struct {
		Installed       string `json:"installed"`
		Available       string `json:"available"`
		UpdateAvailable bool   `json:"update_available"`
		FilesChanged    int    `json:"files_changed"`
		BytesToDownload int64  `json:"bytes_to_download"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &chk); err != nil {
		t.Fatalf("check --json is not one JSON document: %v\n%s", err, r.stdout)
	}
	if chk.Installed != "1.0.0" || chk.Available != "1.1.0" || !chk.UpdateAvailable || chk.FilesChanged != 2 || chk.BytesToDownload != int64(len(files2["agent.py"])+len(files2["lib/new.py"])) {
		t.Errorf("check --json: %+v", chk)
	}

	r = sdupdate(t, c, "update", "--dry-run").expect(t, 0, "dry run")
	for _, w := range []string{"1 to add, 1 to change, 1 to remove", "lib/new.py", "plugins/old.py"} {
		if !strings.Contains(r.stdout, w) {
			t.Errorf("dry run output lacks %q:\n%s", w, r.stdout)
		}
	}
	sameTree(t, "after dry run", hashTree(t, e.install), v1)

	sdupdate(t, c, "update").expect(t, 0, "update to 1.1.0")
	v2 := hashTree(t, e.install)
	if _, ok := v2["lib/new.py"]; !ok {
		t.Fatalf("lib/new.py not installed: %v", v2)
	}
	if _, ok := v2["plugins/old.py"]; ok {
		t.Fatal("plugins/old.py not removed")
	}
	if v2["local.cfg"] != v1["local.cfg"] {
		t.Fatal("untracked local.cfg changed")
	}

	r = sdupdate(t, c, "status", "--json").expect(t, 0, "status --json")
	var st struct {
		Format          int    `json:"format"`
		SdupdateVersion string `json:"sdupdate_version"`
		Version         string `json:"version"`
		Directory       string `json:"directory"`
		Unit            string `json:"unit"`
		UnitState       string `json:"unit_state"`
		Previous        *struct {
			Snapshot string `json:"snapshot"`
			Version  string `json:"version"`
		} `json:"previous"`
		Findings  []any `json:"findings"`
		Snapshots []struct {
			ID      string `json:"id"`
			Version string `json:"version"`
			Files   int    `json:"files"`
			Bytes   int64  `json:"bytes"`
		} `json:"snapshots"`
		LastRun struct {
			RunID      string `json:"run_id"`
			Result     string `json:"result"`
			From       string `json:"from"`
			To         string `json:"to"`
			RolledBack bool   `json:"rolled_back"`
		} `json:"last_run"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &st); err != nil {
		t.Fatalf("status --json is not one JSON document: %v\n%s", err, r.stdout)
	}
	if st.Format != 1 || st.Version != "1.1.0" || st.Directory != e.install || st.LastRun.Result != "updated" || st.LastRun.From != "1.0.0" || st.LastRun.To != "1.1.0" || len(st.LastRun.RunID) != 32 || st.LastRun.RolledBack {
		t.Errorf("status --json: %+v", st)
	}
	if st.UnitState != "not-managed" || st.Findings == nil || len(st.Findings) != 0 || st.Previous == nil || st.Previous.Version != "1.0.0" {
		t.Errorf("status --json: unit_state %q (want not-managed), findings %v (want []), previous %+v (want 1.0.0)", st.UnitState, st.Findings, st.Previous)
	}
	// The same version `sdupdate --version` prints, so a fleet tool can tell which sdupdate answered.
	if v := strings.TrimSpace(sdupdate(t, "--version").expect(t, 0, "--version").stdout); st.SdupdateVersion == "" || !strings.Contains(v, st.SdupdateVersion) {
		t.Errorf("status --json says sdupdate_version %q, --version says %q", st.SdupdateVersion, v)
	}
	r = sdupdate(t, c, "snapshots", "--json").expect(t, 0, "snapshots --json")
	var snaps []struct {
		ID      string `json:"id"`
		Version string `json:"version"`
		Created string `json:"created"`
		Files   int    `json:"files"`
		Bytes   int64  `json:"bytes"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &snaps); err != nil {
		t.Fatalf("snapshots --json: %v\n%s", err, r.stdout)
	}
	if len(snaps) != 2 || snaps[0].Version != "1.0.0" || snaps[0].Files != 3 || snaps[0].Created == "" {
		t.Errorf("snapshots --json: %+v", snaps)
	}

	sdupdate(t, c, "rollback").expect(t, 0, "rollback")
	sameTree(t, "after rollback", hashTree(t, e.install), v1)
	sdupdate(t, c, "verify").expect(t, 0, "verify after rollback")
	sdupdate(t, c, "rollback", "--to", "no-such-snapshot").expect(t, 1, "rollback to an unknown id")

	if err := os.WriteFile(filepath.Join(e.install, "agent.py"), []byte("tampered"), 0o644); err != nil {
		t.Fatal(err)
	}
	r = sdupdate(t, c, "verify").expect(t, 1, "verify after tampering")
	if !strings.Contains(r.stdout, "agent.py") {
		t.Errorf("verify does not name the file: %s", r.stdout)
	}
	sdupdate(t, c, "update", "--repair").expect(t, 0, "repair")
	sdupdate(t, c, "verify").expect(t, 0, "verify after repair")
	sdupdate(t, c, "recover").expect(t, 0, "recover with nothing to do")
}

func TestUsageAndConfigErrorsExit2(t *testing.T) {
	e := newEnv(t)
	cases := []struct {
		args []string
		want string
	}{
		{[]string{"frobnicate"}, "unknown command"},
		{[]string{"update", "--frob"}, "unknown flag"},
		{[]string{"--config", filepath.Join(e.root, "missing.conf"), "status"}, "not found"},
		{[]string{"release", "--from", e.root}, "--version"},
		{[]string{"status", "extra"}, "no arguments"},
	}
	for _, c := range cases {
		r := sdupdate(t, c.args...).expect(t, 2, strings.Join(c.args, " "))
		if !strings.Contains(r.stderr, c.want) {
			t.Errorf("%v: stderr lacks %q: %s", c.args, c.want, r.stderr)
		}
	}
	e.writeConf(t, "Frobnicate=yes\n")
	r := sdupdate(t, "--config", e.conf, "update").expect(t, 2, "unknown key")
	if !strings.Contains(r.stderr, e.conf+":") || !strings.Contains(r.stderr, "Frobnicate") {
		t.Errorf("the error does not name file, line and key: %s", r.stderr)
	}
	// A missing PublicKey with AllowUnsigned=no fails before any fetch.
	conf := strings.Replace(mustRead(t, e.conf), "AllowUnsigned=yes", "AllowUnsigned=no", 1)
	conf = strings.Replace(conf, "Frobnicate=yes\n", "", 1)
	if err := os.WriteFile(e.conf, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	r = sdupdate(t, "--config", e.conf, "update").expect(t, 2, "no PublicKey")
	if !strings.Contains(r.stderr, "PublicKey") {
		t.Errorf("the error does not mention PublicKey: %s", r.stderr)
	}
}

func mustRead(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestSecondCommandFailsWhileLocked(t *testing.T) {
	e := newEnv(t)
	e.release(t, "1.0.0", files1)
	lk, err := lock.Acquire(filepath.Join(e.state, "lock"))
	if err != nil {
		t.Fatal(err)
	}
	defer lk.Release()
	r := sdupdate(t, "--config", e.conf, "update").expect(t, 1, "update while locked")
	if want := fmt.Sprintf("another sdupdate is running (pid %d)", os.Getpid()); !strings.Contains(r.stderr, want) {
		t.Errorf("stderr lacks %q: %s", want, r.stderr)
	}
	if _, err := os.Stat(e.install); err == nil {
		if tree := hashTree(t, e.install); len(tree) != 0 {
			t.Errorf("install changed while locked: %v", tree)
		}
	}
	// Reading commands still answer.
	sdupdate(t, "--config", e.conf, "status", "--json").expect(t, 0, "status while locked")
}

func TestJSONErrorsAreJSONToo(t *testing.T) {
	e := newEnv(t)
	r := sdupdate(t, "--config", e.conf, "check", "--json").expect(t, 1, "check with no site")
	var doc map[string]any
	if err := json.Unmarshal([]byte(r.stdout), &doc); err != nil || doc["error"] == nil {
		t.Errorf("stdout is not a JSON error document: %v %q", err, r.stdout)
	}
}

func TestHelpListsExitStatus(t *testing.T) {
	r := sdupdate(t, "update", "--help").expect(t, 0, "help")
	if !strings.Contains(r.stdout, "EXIT STATUS") || !strings.Contains(r.stdout, "rolled back") {
		t.Errorf("update --help lacks the exit status section:\n%s", r.stdout)
	}
}

// A freshly installed package's configuration names no source yet. status still answers (exit 0)
// and says what is missing as a finding; the commands that fetch refuse as a usage error.
func TestStatusAnswersBeforeTheSourceIsConfigured(t *testing.T) {
	e := newEnv(t)
	conf := fixture.LocalConfig{Directory: e.install, State: e.state}.String()
	if err := os.WriteFile(e.conf, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	r := sdupdate(t, "--config", e.conf, "status", "--json").expect(t, 0, "status with no ManifestURL")
	var st struct {
		Findings []struct{ Code, Path, Message string } `json:"findings"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &st); err != nil {
		t.Fatalf("status --json is not one JSON document: %v\n%s", err, r.stdout)
	}
	if len(st.Findings) != 1 || st.Findings[0].Code != "source-not-configured" ||
		st.Findings[0].Path != e.conf || !strings.Contains(st.Findings[0].Message, "ManifestURL") {
		t.Errorf("findings = %+v, want one source-not-configured naming %s and ManifestURL", st.Findings, e.conf)
	}
	r = sdupdate(t, "--config", e.conf, "status").expect(t, 0, "status (text) with no ManifestURL")
	if !strings.Contains(r.stdout, "source-not-configured") {
		t.Errorf("status does not show the finding:\n%s", r.stdout)
	}
	sdupdate(t, "--config", e.conf, "snapshots").expect(t, 0, "snapshots with no ManifestURL")
	for _, cmd := range []string{"update", "check"} {
		r := sdupdate(t, "--config", e.conf, cmd).expect(t, 2, cmd+" with no ManifestURL")
		if !strings.Contains(r.stderr, "ManifestURL") {
			t.Errorf("%s: the error does not name ManifestURL: %s", cmd, r.stderr)
		}
	}
}
