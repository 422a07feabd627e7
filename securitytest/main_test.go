// Package securitytest runs the built sdupdate binary against hostile update servers: a real
// loopback HTTP server, a real signed site made by `sdupdate release`, real minisign keys made by
// the minisign CLI. Each case checks what an operator would: the exit status, a message that
// names the check that failed, an install left byte for byte as it was, nothing written anywhere
// else, and nothing fetched that should not have been.
package securitytest

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/sdupdate/sdupdate/internal/fixture"
)

// binary is the sdupdate built once for the whole package by TestMain.
var binary string

func TestMain(m *testing.M) {
	os.Exit(fixture.RunWithBinary(m.Run, func(bin, _ string) { binary = bin }))
}

// needMinisign skips without the minisign CLI, except in CI where a missing tool must fail.
func needMinisign(t *testing.T) {
	t.Helper()
	if _, err := exec.LookPath("minisign"); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("the minisign CLI is missing: apt-get install minisign")
		}
		t.Skip("the minisign CLI is missing (apt-get install minisign)")
	}
}

// keyPair is a minisign key made by the CLI.
type keyPair struct {
	pub, sec string // file paths
	line     string // the public key's base64 line, as PublicKey= takes it
}

// newKey makes an unencrypted key pair with `minisign -G -W`.
func newKey(t *testing.T, dir, name string) keyPair {
	t.Helper()
	k := keyPair{pub: filepath.Join(dir, name+".pub"), sec: filepath.Join(dir, name+".key")}
	mustRun(t, nil, "minisign", "-G", "-W", "-p", k.pub, "-s", k.sec)
	k.line = pubLine(t, k.pub)
	return k
}

func pubLine(t *testing.T, pub string) string {
	t.Helper()
	data, err := os.ReadFile(pub)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(string(data)), "\n")
	return strings.TrimSpace(lines[len(lines)-1])
}

// minisignSign signs file with the CLI, writing file.minisig (replacing any there).
func minisignSign(t *testing.T, k keyPair, file string) {
	t.Helper()
	mustRun(t, nil, "minisign", "-S", "-s", k.sec, "-m", file, "-x", file+".minisig")
}

func mustRun(t *testing.T, stdin []byte, name string, args ...string) string {
	t.Helper()
	cmd := exec.Command(name, args...)
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// server serves a site directory over loopback HTTP, records every request and lets a case
// replace the answer for any path.
type server struct {
	*httptest.Server
	dir string

	mu       sync.Mutex
	requests []string
	override map[string]http.HandlerFunc
	handlers sync.WaitGroup // overriding handlers still running
}

func newServer(t *testing.T, dir string) *server {
	s := &server{dir: dir, override: map[string]http.HandlerFunc{}}
	files := http.FileServer(http.Dir(dir))
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		s.requests = append(s.requests, r.URL.Path)
		h := s.override[r.URL.Path]
		if h != nil {
			s.handlers.Add(1)
			defer s.handlers.Done()
		}
		s.mu.Unlock()
		if h != nil {
			h(w, r)
			return
		}
		files.ServeHTTP(w, r)
	}))
	t.Cleanup(s.Close)
	return s
}

// isManifestPath says whether p is one of the files a client fetches before it trusts the
// manifest: the manifest, its compressed copy and its signature.
func isManifestPath(p string) bool {
	return p == "/manifest.json" || p == "/manifest.json.zst" || p == "/manifest.json.minisig"
}

// handle makes path answer with h instead of the site's file.
func (s *server) handle(path string, h http.HandlerFunc) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.override[path] = h
}

func (s *server) reset() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.requests = nil
}

func (s *server) paths() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.requests...)
}

// count is how many times path was asked for.
func (s *server) count(path string) int {
	n := 0
	for _, p := range s.paths() {
		if p == path {
			n++
		}
	}
	return n
}

// waitHandlers waits for the overriding handlers to return: a handler that keeps writing after
// the client went away would show a limit that is not enforced.
func (s *server) waitHandlers(t *testing.T, within time.Duration) {
	t.Helper()
	done := make(chan struct{})
	go func() { s.handlers.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(within):
		t.Fatalf("a server handler was still running %v after sdupdate exited: the client never hung up", within)
	}
}

// env is one machine: an install, its state, a configuration, a publisher's site and keys, all
// under one temporary root, so that anything written outside the install shows up.
//
//	root/
//	├── opt/sd-agent/     Directory=
//	├── var/lib/sdupdate/ StateDirectory=
//	├── etc/              a canary: what a symlink in the install may point at
//	├── conf/             sdupdate.conf
//	├── keys/             minisign keys
//	├── src/<V>/          what the publisher releases
//	├── site/             what the server serves
//	└── tmp/, home/       TMPDIR and HOME of the binary
type env struct {
	t                          *testing.T
	root, install, state, etc  string
	conf, keys, src, site, tmp string
	key                        keyPair // the publisher's key
	srv                        *server
	cfg                        cfgOpts
	// The 1.0.0 manifest and signature as baseline published them, for replays.
	manifest100, sig100 []byte
	// sent counts the bytes a hostile handler wrote.
	sent atomic.Int64
}

// cfgOpts are the [Source] settings a case may change; the rest is fixed.
type cfgOpts struct {
	publicKeys    []string // nil: the publisher's key
	noKeys        bool
	allowUnsigned bool
	timeout       string
	retries       int
	manifestURL   string // "": the server's /manifest.json
}

func newEnv(t *testing.T) *env {
	t.Helper()
	needMinisign(t)
	root := t.TempDir()
	e := &env{
		t: t, root: root,
		install: filepath.Join(root, "opt", "sd-agent"),
		state:   filepath.Join(root, "var", "lib", "sdupdate"),
		etc:     filepath.Join(root, "etc"),
		conf:    filepath.Join(root, "conf", "sdupdate.conf"),
		keys:    filepath.Join(root, "keys"),
		src:     filepath.Join(root, "src"),
		site:    filepath.Join(root, "site"),
		tmp:     filepath.Join(root, "tmp"),
	}
	for _, d := range []string{e.install, e.etc, filepath.Dir(e.conf), e.keys, e.src, e.site, e.tmp, filepath.Join(root, "home")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	// The canary holds files of the names the install uses, so that a write or a remove
	// through a symlink would change it.
	writeFile(t, filepath.Join(e.etc, "x"), "canary x\n", 0o644)
	writeFile(t, filepath.Join(e.etc, "y"), "canary y\n", 0o644)
	e.key = newKey(t, e.keys, "publisher")
	e.srv = newServer(t, e.site)
	return e
}

// stateElsewhere puts StateDirectory on another filesystem (/dev/shm), so that staging and
// snapshots live in <Directory>/.sdupdate, as they always do under the unit, whose
// ReadWritePaths= mounts make renames between the two directories fail.
func (e *env) stateElsewhere() {
	e.t.Helper()
	shm, err := os.MkdirTemp("/dev/shm", "sdupdate-state-")
	if err != nil {
		e.t.Skipf("no /dev/shm for a state directory on another filesystem: %v", err)
	}
	e.t.Cleanup(func() { os.RemoveAll(shm) })
	e.state = filepath.Join(shm, "state")
}

// reservedInUse returns <Directory>/.sdupdate after stateElsewhere and a run.
func (e *env) reservedInUse() string {
	e.t.Helper()
	reserved := filepath.Join(e.install, ".sdupdate")
	if fi, err := os.Lstat(reserved); err != nil || !fi.IsDir() {
		e.t.Skipf("%s was not used: /dev/shm is on the install's filesystem here", reserved)
	}
	return reserved
}

func writeFile(t *testing.T, path, content string, mode os.FileMode) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, mode); err != nil { // past the umask
		t.Fatal(err)
	}
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(data)
}

// writeConfig writes the configuration from e.cfg: Unit= empty, small timeouts.
func (e *env) writeConfig() {
	e.t.Helper()
	c := e.cfg
	u := c.manifestURL
	if u == "" {
		u = e.srv.URL + "/manifest.json"
	}
	keys := c.publicKeys
	if keys == nil && !c.noKeys {
		keys = []string{e.key.line}
	}
	timeout := c.timeout
	if timeout == "" {
		timeout = "1"
	}
	retries := c.retries
	if retries == 0 {
		retries = 2
	}
	conf := fixture.LocalConfig{ManifestURL: u, PublicKeys: keys, AllowUnsigned: c.allowUnsigned,
		Source:    []string{"TimeoutSec=" + timeout, fmt.Sprintf("Retries=%d", retries), "Parallel=2"},
		Directory: e.install, State: e.state, KeepSnapshots: 3}
	writeFile(e.t, e.conf, conf.String(), 0o644)
}

// result is one run of the binary.
type result struct {
	code           int
	stdout, stderr string
	elapsed        time.Duration
}

func (r result) output() string { return r.stdout + r.stderr }

// sdupdate runs the binary with the environment's configuration and a clean environment: no
// JOURNAL_STREAM (logs to stderr), TMPDIR and HOME inside the root.
func (e *env) sdupdate(args ...string) result {
	e.t.Helper()
	return e.sdupdateEnv(nil, args...)
}

func (e *env) sdupdateEnv(extraEnv []string, args ...string) result {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	full := append([]string{"--config", e.conf}, args...)
	cmd := exec.CommandContext(ctx, binary, full...)
	cmd.Dir = e.root
	cmd.Env = append([]string{
		"PATH=" + os.Getenv("PATH"),
		"HOME=" + filepath.Join(e.root, "home"),
		"TMPDIR=" + e.tmp,
		"LANG=C",
	}, extraEnv...)
	// A session of its own: no controlling terminal, so a password prompt on /dev/tty cannot
	// wait for someone at the terminal running the tests.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	start := time.Now()
	err := cmd.Run()
	r := result{stdout: stdout.String(), stderr: stderr.String(), elapsed: time.Since(start)}
	var ee *exec.ExitError
	switch {
	case ctx.Err() != nil:
		e.t.Fatalf("sdupdate %s did not finish within 30s\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), r.stdout, r.stderr)
	case errors.As(err, &ee):
		r.code = ee.ExitCode()
	case err != nil:
		e.t.Fatalf("cannot run sdupdate: %v", err)
	}
	return r
}

// release publishes the files (name → content; a name ending in "*" is made 0755) as version v
// with `sdupdate release --sign-key`.
func (e *env) release(v string, files map[string]string, extra ...string) {
	e.t.Helper()
	dir := filepath.Join(e.src, v)
	for name, content := range files {
		mode := os.FileMode(0o644)
		if strings.HasSuffix(name, "*") {
			name, mode = strings.TrimSuffix(name, "*"), 0o755
		}
		writeFile(e.t, filepath.Join(dir, filepath.FromSlash(name)), content, mode)
	}
	args := append([]string{"release", "--from", dir, "--version", v, "--out", e.site, "--sign-key", e.key.sec}, extra...)
	if r := e.sdupdate(args...); r.code != 0 {
		e.t.Fatalf("sdupdate release %s: exit %d\n%s", v, r.code, r.output())
	}
	// The hostile cases change what the server says as manifest.json; a server that offers a
	// compressed copy beside it would have the client read that instead, so the copy goes, and
	// TestHostileCompressedManifest attacks the copy itself.
	if err := os.Remove(filepath.Join(e.site, "manifest.json.zst")); err != nil {
		e.t.Fatal(err)
	}
}

// mustUpdate runs `sdupdate update` and requires it to install want.
func (e *env) mustUpdate(want string, args ...string) result {
	e.t.Helper()
	r := e.sdupdate(append([]string{"update"}, args...)...)
	if r.code != 0 {
		e.t.Fatalf("sdupdate update: exit %d, want 0\n%s", r.code, r.output())
	}
	if got := e.installedVersion(); got != want {
		e.t.Fatalf("installed version after update is %q, want %q\n%s", got, want, r.output())
	}
	return r
}

// installedVersion is what `sdupdate status --json` reports.
func (e *env) installedVersion() string {
	e.t.Helper()
	r := e.sdupdate("status", "--json")
	if r.code != 0 {
		e.t.Fatalf("sdupdate status --json: exit %d\n%s", r.code, r.output())
	}
	var st struct {
		Version string `json:"version"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &st); err != nil {
		e.t.Fatalf("status --json is not JSON: %v\n%s", err, r.stdout)
	}
	return st.Version
}

// Versions published by baseline.
var (
	v100 = map[string]string{
		"agent.py":      "print('agent 1.0.0')\n",
		"bin/sd-agent*": "#!/bin/sh\necho 1.0.0\n",
		"lib/x":         "lib x 1.0.0\n",
		"lib/y":         "lib y 1.0.0\n",
		"share/y":       "share y 1.0.0\n",
	}
	// v110 changes agent.py and lib/x, adds lib/z, drops lib/y and share/y.
	v110 = map[string]string{
		"agent.py":      "print('agent 1.1.0')\n",
		"bin/sd-agent*": "#!/bin/sh\necho 1.0.0\n",
		"lib/x":         "lib x 1.1.0 -- longer\n",
		"lib/z":         "lib z 1.1.0\n",
	}
)

// baseline installs 1.0.0 (plus a file no manifest lists), then publishes 1.1.0, signed by the
// publisher's key: the state every hostile case starts from.
func (e *env) baseline() {
	e.t.Helper()
	e.writeConfig()
	e.release("1.0.0", v100)
	e.manifest100 = []byte(readFile(e.t, filepath.Join(e.site, "manifest.json")))
	e.sig100 = []byte(readFile(e.t, filepath.Join(e.site, "manifest.json.minisig")))
	writeFile(e.t, filepath.Join(e.install, "agent.conf"), "token=local-only\n", 0o600)
	e.mustUpdate("1.0.0")
	e.release("1.1.0", v110)
	e.srv.reset()
}

// treeHash describes every entry under dir, without following symlinks: type and mode bits,
// symlink target, content hash. Directories in skip (absolute) are left out.
func treeHash(t *testing.T, dir string, skip ...string) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		for _, s := range skip {
			if p == s {
				return filepath.SkipDir
			}
		}
		fi, err := os.Lstat(p)
		if err != nil {
			return err
		}
		desc := fi.Mode().String()
		switch {
		case fi.Mode()&fs.ModeSymlink != 0:
			target, err := os.Readlink(p)
			if err != nil {
				return err
			}
			desc += " -> " + target
		case fi.Mode().IsRegular():
			data, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			sum := sha256.Sum256(data)
			desc += " " + hex.EncodeToString(sum[:])
		}
		rel, _ := filepath.Rel(dir, p)
		out[rel] = desc
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// diffTrees lists the entries that differ, for a readable failure.
func diffTrees(before, after map[string]string) string {
	var lines []string
	for k, v := range before {
		if w, ok := after[k]; !ok {
			lines = append(lines, "removed "+k)
		} else if w != v {
			lines = append(lines, fmt.Sprintf("changed %s: %s => %s", k, v, w))
		}
	}
	for k := range after {
		if _, ok := before[k]; !ok {
			lines = append(lines, "added "+k+" "+after[k])
		}
	}
	sort.Strings(lines)
	return strings.Join(lines, "\n")
}

// machine is the state a refused run must leave alone: the whole root but the state directory
// (which holds the lock and the last run's result) and the server's site, plus the state files
// that say what is installed.
type machine struct {
	tree      map[string]string
	installed string
	snapshots map[string]string
}

func (e *env) capture() machine {
	e.t.Helper()
	m := machine{tree: treeHash(e.t, e.root, e.state, e.site)}
	if data, err := os.ReadFile(filepath.Join(e.state, "installed.json")); err == nil {
		m.installed = string(data)
	}
	if _, err := os.Stat(filepath.Join(e.state, "snapshots")); err == nil {
		m.snapshots = treeHash(e.t, filepath.Join(e.state, "snapshots"))
	}
	return m
}

// assertUnchanged checks that nothing but the state directory's bookkeeping changed, and that
// no staged file was left behind.
func (e *env) assertUnchanged(before machine) {
	e.t.Helper()
	after := e.capture()
	if d := diffTrees(before.tree, after.tree); d != "" {
		e.t.Errorf("the machine changed outside the state directory:\n%s", d)
	}
	if after.installed != before.installed {
		e.t.Errorf("installed.json changed:\n%s\n=>\n%s", before.installed, after.installed)
	}
	if d := diffTrees(before.snapshots, after.snapshots); d != "" {
		e.t.Errorf("snapshots changed:\n%s", d)
	}
	staging := filepath.Join(e.state, "staging")
	if _, err := os.Stat(staging); err == nil {
		var left []string
		for k, v := range treeHash(e.t, staging) {
			if !strings.HasPrefix(v, "d") {
				left = append(left, k)
			}
		}
		if len(left) > 0 {
			e.t.Errorf("staged files left behind: %v", left)
		}
	}
	for name, want := range map[string]string{"x": "canary x\n", "y": "canary y\n"} {
		if got, err := os.ReadFile(filepath.Join(e.etc, name)); err != nil || string(got) != want {
			e.t.Errorf("canary etc/%s changed: %q, %v", name, got, err)
		}
	}
	if entries, _ := os.ReadDir(e.etc); len(entries) != 2 {
		e.t.Errorf("the canary directory holds %d entries, want its 2 files", len(entries))
	}
}
