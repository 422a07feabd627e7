// Package crashtest kills, interrupts and starves the real sdupdate binary on the real
// filesystem: SIGKILL at random instants of download, snapshot and apply on an install of a few
// thousand files, two runs started at once, SIGTERM and SIGINT, and a disk that fills up. After
// each, it checks what an operator would: exit status, message, and a tree that hashes to exactly
// the old or exactly the new version, with the operator's own files untouched.
package crashtest

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/rand"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/sdupdate/sdupdate/internal/fixture"

	"github.com/sdupdate/sdupdate/internal/need"
)

// binary is the sdupdate built once for the whole package by TestMain, in workDir, which also
// holds what several tests share.
var binary, workDir string

func TestMain(m *testing.M) {
	os.Exit(fixture.RunWithBinary(m.Run, func(bin, dir string) { binary, workDir = bin, dir }))
}

// server serves a site directory made by `sdupdate release` over loopback HTTP. Version files
// can be slowed down (so a kill or a signal lands in the download) or held half sent until the
// test lets them go.
type server struct {
	*httptest.Server
	dir   string
	delay atomic.Int64 // per file request, nanoseconds
	// offered names the file served as /manifest.json ("" = manifest.json itself).
	offered atomic.Pointer[string]
	mu      sync.Mutex
	hold    map[string]chan struct{} // URL path → closed when the rest of the body may go
	sent    map[string]*signal       // URL path → closed when the first half was sent
}

func newServer(t *testing.T, dir string) *server {
	s := &server{dir: dir, hold: map[string]chan struct{}{}, sent: map[string]*signal{}}
	files := http.FileServer(http.Dir(dir))
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/manifest.json" {
			if name := s.offered.Load(); name != nil && *name != "" {
				http.ServeFile(w, r, filepath.Join(dir, *name))
				return
			}
		}
		if strings.HasSuffix(r.URL.Path, "/manifest.json") || strings.HasSuffix(r.URL.Path, ".minisig") {
			files.ServeHTTP(w, r)
			return
		}
		if d := time.Duration(s.delay.Load()); d > 0 {
			select {
			case <-time.After(d):
			case <-r.Context().Done():
				return
			}
		}
		s.mu.Lock()
		hold, sent := s.hold[r.URL.Path], s.sent[r.URL.Path]
		s.mu.Unlock()
		if hold == nil {
			files.ServeHTTP(w, r)
			return
		}
		data, err := os.ReadFile(filepath.Join(dir, filepath.FromSlash(r.URL.Path)))
		if err != nil {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Length", fmt.Sprint(len(data)))
		_, _ = w.Write(data[:len(data)/2])
		w.(http.Flusher).Flush()
		sent.once.Do(func() { close(sent.ch) })
		select {
		case <-hold:
		case <-r.Context().Done():
			return
		}
		_, _ = w.Write(data[len(data)/2:])
	}))
	t.Cleanup(s.Close)
	return s
}

// signal is a channel closed once.
type signal struct {
	ch   chan struct{}
	once sync.Once
}

// holdHalfway makes the next request for path stop after half its body until release is
// called; sent is closed once that half is out.
func (s *server) holdHalfway(path string) (sent <-chan struct{}, release func()) {
	s.mu.Lock()
	defer s.mu.Unlock()
	h, snt := make(chan struct{}), &signal{ch: make(chan struct{})}
	s.hold[path], s.sent[path] = h, snt
	var once sync.Once
	return snt.ch, func() {
		once.Do(func() {
			close(h)
			s.mu.Lock()
			delete(s.hold, path)
			delete(s.sent, path)
			s.mu.Unlock()
		})
	}
}

// machine is one install: its directories, its config and the site it updates from.
type machine struct {
	t              *testing.T
	root           string
	install, state string
	config         string
	site           string
	srv            *server
	untracked      map[string]string // the operator's files: relative path → content
	versions       map[string]string // version → its source directory
	expected       map[string]string // version → digest of the whole install at it
}

// newMachine makes directories under root (the install and the state directory both in it), a
// site served over loopback and a config for it: AllowUnsigned=yes, Unit= empty.
func newMachine(t *testing.T, root string) *machine {
	t.Helper()
	return newMachineOn(t, root, filepath.Join(t.TempDir(), "site"))
}

// newMachineOn is newMachine serving an existing site directory.
func newMachineOn(t *testing.T, root, site string) *machine {
	t.Helper()
	m := &machine{
		t: t, root: root,
		install: filepath.Join(root, "opt", "sd-agent"), state: filepath.Join(root, "var", "lib", "sdupdate"),
		config: filepath.Join(root, "sdupdate.conf"), site: site,
		untracked: map[string]string{
			"etc/agent.conf":      "api_key=0123456789\n",
			"logs/agent.log":      "started\n",
			"plugins/local.py":    "# the operator's own plugin\n",
			"bin/.agent.lock.pid": "4242\n",
		},
		versions: map[string]string{}, expected: map[string]string{},
	}
	must(t, os.MkdirAll(m.site, 0o755))
	must(t, os.MkdirAll(m.install, 0o755))
	for name, data := range m.untracked {
		p := filepath.Join(m.install, filepath.FromSlash(name))
		must(t, os.MkdirAll(filepath.Dir(p), 0o755))
		must(t, os.WriteFile(p, []byte(data), 0o640))
	}
	m.srv = newServer(t, m.site)
	conf := fixture.LocalConfig{ManifestURL: m.srv.URL + "/manifest.json", AllowUnsigned: true,
		Source:    []string{"TimeoutSec=10", "Retries=2", "Parallel=4"},
		Directory: m.install, State: m.state, KeepSnapshots: 3}.String()
	must(t, os.WriteFile(m.config, []byte(conf), 0o644))
	return m
}

// release publishes the files of src as version with `sdupdate release`, which makes it the
// version the site offers, and records the digest an install of it must have.
func (m *machine) release(version, src string) {
	m.t.Helper()
	if err := release(m.site, version, src); err != nil {
		m.t.Fatal(err)
	}
	m.adopt(version, src)
	m.offer("")
}

// release runs `sdupdate release` and keeps a copy of the manifest it wrote as
// manifest-<version>.json, so a test can offer an earlier version again.
func release(site, version, src string) error {
	cmd := exec.Command(binary, "release", "--from", src, "--version", version, "--out", site)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("release %s: %v: %s", version, err, out)
	}
	data, err := os.ReadFile(filepath.Join(site, "manifest.json"))
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(site, "manifest-"+version+".json"), data, 0o644)
}

// adopt records what an install of version (released from src) must hash to.
func (m *machine) adopt(version, src string) {
	m.t.Helper()
	m.versions[version] = src
	want := treeOf(m.t, src)
	for name, data := range m.untracked {
		want[name] = entry(0o640, []byte(data))
	}
	m.expected[version] = digest(want)
}

// offer makes the site offer version's manifest ("" = the one released last).
func (m *machine) offer(version string) {
	name := ""
	if version != "" {
		name = "manifest-" + version + ".json"
	}
	m.srv.offered.Store(&name)
}

// bigSite is a site with two releases of a large agent (see bigVersions), made once: releasing
// thousands of files, each fsynced, takes seconds.
var bigSite struct {
	once   sync.Once
	dir    string
	src    map[string]string
	v1, v2 int // files in each
	err    error
}

// newBigMachine is a machine with version 1.0.0 of the large agent installed and 1.1.0 offered.
func newBigMachine(t *testing.T) *machine {
	t.Helper()
	bigSite.once.Do(func() {
		v1, v2 := bigVersions(t, 1)
		bigSite.dir, bigSite.v1, bigSite.v2 = filepath.Join(workDir, "bigsite"), len(v1), len(v2)
		bigSite.src = map[string]string{"1.0.0": filepath.Join(workDir, "big-1.0.0"), "1.1.0": filepath.Join(workDir, "big-1.1.0")}
		writeFiles(t, bigSite.src["1.0.0"], v1)
		writeFiles(t, bigSite.src["1.1.0"], v2)
		for _, v := range []string{"1.0.0", "1.1.0"} {
			if bigSite.err = release(bigSite.dir, v, bigSite.src[v]); bigSite.err != nil {
				return
			}
		}
	})
	if bigSite.err != nil {
		t.Fatal(bigSite.err)
	}
	m := newMachineOn(t, t.TempDir(), bigSite.dir)
	for v, src := range bigSite.src {
		m.adopt(v, src)
	}
	m.offer("1.0.0")
	m.mustUpdate("1.0.0")
	m.offer("1.1.0")
	return m
}

// result is one finished sdupdate process.
type result struct {
	code           int
	stdout, stderr string
	took           time.Duration
}

func (m *machine) command(args ...string) *exec.Cmd {
	cmd := exec.Command(binary, append([]string{"--config", m.config}, args...)...)
	// Not under systemd: plain lines on stderr, no journald, no sd_notify.
	env := []string{}
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "JOURNAL_STREAM=") && !strings.HasPrefix(kv, "NOTIFY_SOCKET=") && !strings.HasPrefix(kv, "INVOCATION_ID=") {
			env = append(env, kv)
		}
	}
	cmd.Env = env
	return cmd
}

func (m *machine) run(args ...string) result {
	m.t.Helper()
	cmd := m.command(args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	start := time.Now()
	err := cmd.Run()
	r := result{stdout: out.String(), stderr: errb.String(), took: time.Since(start)}
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee):
		r.code = ee.ExitCode()
	default:
		m.t.Fatalf("cannot run sdupdate %v: %v", args, err)
	}
	return r
}

// proc is an sdupdate running in the background.
type proc struct {
	cmd      *exec.Cmd
	out, err bytes.Buffer
	done     chan struct{}
	res      result
	start    time.Time
}

func (m *machine) start(args ...string) *proc {
	m.t.Helper()
	p := &proc{cmd: m.command(args...), done: make(chan struct{})}
	p.cmd.Stdout, p.cmd.Stderr = &p.out, &p.err
	p.start = time.Now()
	if err := p.cmd.Start(); err != nil {
		m.t.Fatalf("cannot start sdupdate %v: %v", args, err)
	}
	go func() {
		err := p.cmd.Wait()
		p.res = result{stdout: p.out.String(), stderr: p.err.String(), took: time.Since(p.start), code: p.cmd.ProcessState.ExitCode()}
		if err != nil && p.cmd.ProcessState == nil {
			p.res.code = -1
		}
		close(p.done)
	}()
	return p
}

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// wait returns the result, failing the test if the process takes longer than limit.
func (p *proc) wait(t *testing.T, limit time.Duration) result {
	t.Helper()
	select {
	case <-p.done:
		return p.res
	case <-time.After(limit):
		_ = p.cmd.Process.Kill()
		<-p.done
		t.Fatalf("sdupdate %v did not finish within %v; stderr:\n%s", p.cmd.Args[1:], limit, p.res.stderr)
		return p.res
	}
}

// phase reads the phase the journal records (from its first bytes, which is cheap enough to
// poll), or "" when there is no journal.
var phaseField = regexp.MustCompile(`"phase":\s*"([a-z-]+)"`)

func (m *machine) phase() string {
	f, err := os.Open(filepath.Join(m.state, "txn.json"))
	if err != nil {
		return ""
	}
	defer f.Close()
	buf := make([]byte, 1024)
	n, _ := io.ReadFull(f, buf)
	if sm := phaseField.FindSubmatch(buf[:n]); sm != nil {
		return string(sm[1])
	}
	return ""
}

// waitPhase polls until the journal says one of phases, or the process ends.
func (m *machine) waitPhase(p *proc, limit time.Duration, phases ...string) bool {
	deadline := time.Now().Add(limit)
	for time.Now().Before(deadline) && !p.exited() {
		now := m.phase()
		for _, want := range phases {
			if now == want {
				return true
			}
		}
		time.Sleep(200 * time.Microsecond)
	}
	return false
}

// version tells which released version the install holds exactly, or "mixed".
func (m *machine) version() string {
	m.t.Helper()
	d := digest(treeOf(m.t, m.install))
	for v, want := range m.expected {
		if d == want {
			return v
		}
	}
	return "mixed"
}

// describeDiff says how the install differs from version v, for a failure message.
func (m *machine) describeDiff(v string) string {
	got := treeOf(m.t, m.install)
	want := treeOf(m.t, m.versions[v])
	for name, data := range m.untracked {
		want[name] = entry(0o640, []byte(data))
	}
	var diffs []string
	for n, w := range want {
		if got[n] != w {
			diffs = append(diffs, "differs or missing: "+n)
		}
	}
	for n := range got {
		if _, ok := want[n]; !ok {
			diffs = append(diffs, "extra: "+n)
		}
	}
	sort.Strings(diffs)
	if len(diffs) > 8 {
		diffs = append(diffs[:8], fmt.Sprintf("… %d more", len(diffs)-8))
	}
	return fmt.Sprintf("%d differences from %s: %s", len(diffs), v, strings.Join(diffs, "; "))
}

// statusJSON runs `sdupdate status --json` (which recovers an interrupted run first).
type statusDoc struct {
	Version string `json:"version"`
	LastRun *struct {
		Result string `json:"result"`
		Reason string `json:"reason"`
	} `json:"last_run"`
	InProgress *struct {
		Phase string `json:"phase"`
	} `json:"in_progress"`
}

func (m *machine) status() statusDoc {
	m.t.Helper()
	r := m.run("status", "--json")
	if r.code != 0 {
		m.t.Fatalf("status: exit %d: %s", r.code, r.stderr)
	}
	var st statusDoc
	if err := json.Unmarshal([]byte(r.stdout), &st); err != nil {
		m.t.Fatalf("status --json printed something else than one JSON document: %v\n%s", err, r.stdout)
	}
	return st
}

// settled checks that no journal and no staged file remain, that the tree is exactly one
// released version and that installed.json (through status) names it; it returns the version.
func (m *machine) settled(st statusDoc) string {
	m.t.Helper()
	v := m.version()
	if v == "mixed" {
		m.t.Errorf("the install is neither version: %s; %s", m.describeDiff(st.Version), m.describeDiff(otherThan(m.versions, st.Version)))
	}
	if st.Version != v {
		m.t.Errorf("status says version %q, the tree is %s", st.Version, v)
	}
	if st.InProgress != nil {
		m.t.Errorf("a run is still in progress after recovery: phase %s", st.InProgress.Phase)
	}
	if _, err := os.Stat(filepath.Join(m.state, "txn.json")); err == nil {
		m.t.Error("the transaction journal is still there")
	}
	if n := m.stagedFiles(); n > 0 {
		m.t.Errorf("%d staged files left behind", n)
	}
	for _, d := range m.storeDamage() {
		m.t.Error(d)
	}
	return v
}

// storeDamage lists what is wrong with the snapshot stores: content a kept snapshot put into
// the store that is neither there nor in the install (a rollback moves an object back when no
// other snapshot names it), an object no snapshot names, an interrupted restore's copies, the
// marker of an interrupted change not cleared by the collect after it, or an installed file
// that is the same inode as an object.
func (m *machine) storeDamage() []string {
	var out []string
	for _, dir := range []string{filepath.Join(m.state, "snapshots"), filepath.Join(m.install, ".sdupdate", "snapshots")} {
		entries, err := os.ReadDir(dir)
		if err != nil {
			continue
		}
		named := map[string]bool{}
		for _, en := range entries {
			data, err := os.ReadFile(filepath.Join(dir, en.Name(), "record.json"))
			if err != nil {
				continue
			}
			files, err := recordFiles(data)
			if err != nil {
				out = append(out, fmt.Sprintf("snapshot %s: %v", en.Name(), err))
				continue
			}
			for _, f := range files {
				named[f.SHA256] = true
				if _, err := os.Stat(filepath.Join(dir, "objects", f.SHA256)); !f.Stored || err == nil {
					continue
				}
				data, _ := os.ReadFile(filepath.Join(m.install, filepath.FromSlash(f.Name)))
				if sum := sha256.Sum256(data); hex.EncodeToString(sum[:]) != f.SHA256 {
					out = append(out, fmt.Sprintf("snapshot %s lost the content of %s", en.Name(), f.Name))
				}
			}
		}
		if _, err := os.Stat(filepath.Join(dir, "restoring")); err == nil {
			out = append(out, "an interrupted restore's copies are left in "+dir)
		}
		// The marker of a change cut short goes with the collect that follows it; left, it
		// would make every later command read every record.
		if _, err := os.Stat(filepath.Join(dir, "collect-pending")); err == nil {
			out = append(out, "collect-pending is left in "+dir+" after recovery")
		}
		objs, _ := os.ReadDir(filepath.Join(dir, "objects"))
		inodes := map[uint64]string{}
		for _, o := range objs {
			if !named[o.Name()] {
				out = append(out, "object "+o.Name()+" is named by no snapshot")
			}
			if fi, err := os.Stat(filepath.Join(dir, "objects", o.Name())); err == nil {
				inodes[fi.Sys().(*syscall.Stat_t).Ino] = o.Name()
			}
		}
		_ = filepath.WalkDir(m.install, func(p string, d fs.DirEntry, err error) error {
			if err != nil || d.IsDir() {
				if d != nil && d.IsDir() && d.Name() == ".sdupdate" {
					return filepath.SkipDir
				}
				return nil
			}
			if fi, err := d.Info(); err == nil && fi.Mode().IsRegular() {
				if o, ok := inodes[fi.Sys().(*syscall.Stat_t).Ino]; ok {
					out = append(out, fmt.Sprintf("installed %s shares its inode with object %s", p, o))
				}
			}
			return nil
		})
	}
	return out
}

// recordedFile is what storeDamage reads of each file of a record.
type recordedFile struct {
	Name   string `json:"name"`
	SHA256 string `json:"sha256"`
	Stored bool   `json:"stored"`
}

// recordFiles reads the files of a record.json as its format lays it out: JSON Lines, a head
// (whose "files" counts them), the objects, the directories, then one line per file.
func recordFiles(data []byte) ([]recordedFile, error) {
	lines := bytes.Split(bytes.TrimSuffix(data, []byte("\n")), []byte("\n"))
	var head struct {
		Files int `json:"files"`
	}
	if len(lines) < 3 {
		return nil, fmt.Errorf("%d lines, want at least 3", len(lines))
	}
	if err := json.Unmarshal(lines[0], &head); err != nil {
		return nil, fmt.Errorf("head: %v", err)
	}
	if head.Files != len(lines)-3 {
		return nil, fmt.Errorf("head says %d files, %d lines follow", head.Files, len(lines)-3)
	}
	files := make([]recordedFile, head.Files)
	for i, line := range lines[3:] {
		if err := json.Unmarshal(line, &files[i]); err != nil {
			return nil, fmt.Errorf("file %d: %v", i+1, err)
		}
	}
	return files, nil
}

func otherThan(versions map[string]string, v string) string {
	for k := range versions {
		if k != v {
			return k
		}
	}
	return v
}

// stagedFiles counts files under every place staging can be.
func (m *machine) stagedFiles() int {
	n := 0
	for _, dir := range []string{filepath.Join(m.state, "staging"), filepath.Join(m.install, ".sdupdate", "staging")} {
		_ = filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
			if err == nil && !d.IsDir() {
				n++
			}
			return nil
		})
	}
	return n
}

// treeOf maps every regular file under dir (relative slash path) to its mode and sha256;
// sdupdate's reserved .sdupdate directory is skipped, as `verify` skips it. A symlink or other
// special file is listed too, so it cannot hide.
func treeOf(t *testing.T, dir string) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		rel = filepath.ToSlash(rel)
		if d.IsDir() {
			if rel == ".sdupdate" {
				return filepath.SkipDir
			}
			return nil
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		if !fi.Mode().IsRegular() {
			out[rel] = "special " + fi.Mode().String()
			return nil
		}
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		out[rel] = entry(fi.Mode().Perm(), data)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func entry(mode fs.FileMode, data []byte) string {
	sum := sha256.Sum256(data)
	return fmt.Sprintf("%04o %s", mode, hex.EncodeToString(sum[:]))
}

func digest(tree map[string]string) string {
	names := make([]string, 0, len(tree))
	for n := range tree {
		names = append(names, n)
	}
	sort.Strings(names)
	h := sha256.New()
	for _, n := range names {
		fmt.Fprintf(h, "%s\x00%s\n", n, tree[n])
	}
	return hex.EncodeToString(h.Sum(nil))
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// writeFiles writes files (relative path → content, mode) under dir.
func writeFiles(t *testing.T, dir string, files map[string]fileSpec) {
	t.Helper()
	for name, f := range files {
		p := filepath.Join(dir, filepath.FromSlash(name))
		must(t, os.MkdirAll(filepath.Dir(p), 0o755))
		must(t, os.WriteFile(p, f.data, 0o600))
		must(t, os.Chmod(p, f.mode))
	}
}

type fileSpec struct {
	data []byte
	mode fs.FileMode
}

// bigVersions makes the two versions of a large agent: 3000 small files in nested directories
// plus a few larger ones. The second changes a third of the small files and two large ones,
// changes one mode, removes 200 files (and so some directories) and adds 300 in new nested
// directories.
func bigVersions(t *testing.T, seed int64) (v1, v2 map[string]fileSpec) {
	t.Helper()
	rng := rand.New(rand.NewSource(seed))
	blob := func(n int) []byte {
		b := make([]byte, n)
		rng.Read(b)
		return b
	}
	v1, v2 = map[string]fileSpec{}, map[string]fileSpec{}
	i := 0
	for a := 0; a < 30; a++ {
		for b := 0; b < 5; b++ {
			for c := 0; c < 20; c++ {
				name := fmt.Sprintf("lib/m%02d/s%d/f%02d.py", a, b, c)
				f := fileSpec{data: blob(64 + rng.Intn(900)), mode: 0o644}
				v1[name] = f
				switch {
				case a >= 28:
					// removed with their directories
				case i%5 == 0:
					v2[name] = fileSpec{data: blob(64 + rng.Intn(900)), mode: 0o644}
				default:
					v2[name] = f
				}
				i++
			}
		}
	}
	for k := 0; k < 150; k++ {
		v2[fmt.Sprintf("lib/new/n%d/deep/g%03d.py", k%10, k)] = fileSpec{data: blob(64 + rng.Intn(900)), mode: 0o644}
	}
	for k, size := range []int{3 << 20, 2 << 20, 1 << 20} {
		name := fmt.Sprintf("bin/blob%d.so", k)
		f := fileSpec{data: blob(size), mode: 0o755}
		v1[name] = f
		if k < 2 {
			f = fileSpec{data: blob(size), mode: 0o755}
		}
		v2[name] = f
	}
	v1["bin/sd-agent"] = fileSpec{data: []byte("#!/bin/sh\nexec python3 -m agent\n"), mode: 0o755}
	v2["bin/sd-agent"] = fileSpec{data: []byte("#!/bin/sh\nexec python3 -m agent\n"), mode: 0o750}
	return v1, v2
}

// publish writes files to a fresh source directory and releases them as version.
func (m *machine) publish(version string, files map[string]fileSpec) {
	m.t.Helper()
	src := filepath.Join(m.t.TempDir(), version)
	writeFiles(m.t, src, files)
	m.release(version, src)
}

// mustUpdate runs an update that must succeed and leave exactly version.
func (m *machine) mustUpdate(version string, args ...string) result {
	m.t.Helper()
	r := m.run(append([]string{"update"}, args...)...)
	if r.code != 0 {
		m.t.Fatalf("update to %s: exit %d: %s", version, r.code, r.stderr)
	}
	if v := m.version(); v != version {
		m.t.Fatalf("update to %s left %s: %s", version, v, m.describeDiff(version))
	}
	return r
}

// phaseTimes runs one uninterrupted update, polling the journal, and returns when each phase
// began (since the start) and how long the run took.
func (m *machine) phaseTimes() (map[string]time.Duration, time.Duration) {
	m.t.Helper()
	p := m.start("update")
	seen := map[string]time.Duration{}
	for !p.exited() {
		ph := m.phase()
		if _, ok := seen[ph]; !ok && ph != "" {
			seen[ph] = time.Since(p.start)
		}
		time.Sleep(100 * time.Microsecond)
	}
	r := p.wait(m.t, time.Minute)
	if r.code != 0 {
		m.t.Fatalf("calibration update: exit %d: %s", r.code, r.stderr)
	}
	return seen, r.took
}

func (m *machine) mustRollback(version string) {
	m.t.Helper()
	r := m.run("rollback")
	if r.code != 0 {
		m.t.Fatalf("rollback: exit %d: %s", r.code, r.stderr)
	}
	if v := m.version(); v != version {
		m.t.Fatalf("rollback left %s, want %s: %s", v, version, m.describeDiff(version))
	}
}

// window is where in a run a kill is aimed: after phase first appears, within span.
type window struct {
	name  string
	after string // journal phase to wait for; "" = from the start
	span  time.Duration
}

// TestSIGKILLAtRandomInstantsLeavesOldOrNew kills `sdupdate update` at random instants of
// download, snapshot and apply on an install of a few thousand files, then runs `sdupdate
// status` (which recovers) and hashes the tree: it must be exactly the old or exactly the new
// version every time, with the operator's files untouched.
func TestSIGKILLAtRandomInstantsLeavesOldOrNew(t *testing.T) {
	if testing.Short() {
		t.Skip("kills a real process 40 times")
	}
	m := newBigMachine(t)
	// Each file request waits a little, so the download lasts long enough to be hit often.
	m.srv.delay.Store(int64(500 * time.Microsecond))

	starts, total := m.phaseTimes()
	if v := m.version(); v != "1.1.0" {
		t.Fatalf("uninterrupted update left %s", v)
	}
	t.Logf("uninterrupted update of %d → %d files: %v; phases began at %v", bigSite.v1, bigSite.v2, total.Round(time.Millisecond), starts)
	m.mustRollback("1.0.0")

	span := func(from, to string) time.Duration {
		a, okA := starts[from]
		b, okB := starts[to]
		if !okA || !okB || b <= a {
			return 5 * time.Millisecond
		}
		return b - a
	}
	windows := []window{
		{"download", "staging", span("staging", "staged")},
		{"snapshot", "snapshotting", span("snapshotting", "snapshotted")},
		{"apply", "applying", span("applying", "applied")},
		{"anywhere", "", total},
	}

	const rounds = 40
	seed := time.Now().UnixNano()
	rng := rand.New(rand.NewSource(seed))
	t.Logf("random seed %d", seed)
	type row struct{ old, new int }
	table := map[string]*row{}
	deadline := time.Now().Add(60 * time.Second)
	kills, done := 0, 0
	for round := 0; round < rounds && time.Now().Before(deadline); round++ {
		done++
		w := windows[round%len(windows)]
		p := m.start("update")
		if w.after != "" && !m.waitPhase(p, 30*time.Second, w.after) {
			// Never saw the phase (the run was quicker than the poll): kill it wherever it is.
			t.Logf("round %d: phase %s not seen", round, w.after)
		}
		time.Sleep(time.Duration(rng.Int63n(int64(w.span) + 1)))
		phase := m.phase()
		if p.exited() {
			phase = "finished"
		} else if phase == "" {
			phase = "no journal"
		}
		_ = p.cmd.Process.Signal(syscall.SIGKILL)
		<-p.done
		if phase != "finished" {
			kills++
		}

		st := m.status()
		v := m.settled(st)
		if t.Failed() {
			t.Fatalf("round %d: killed in phase %s; stderr of the killed run:\n%s", round, phase, p.res.stderr)
		}
		if (phase == "staging" || phase == "staged") && v != "1.0.0" {
			t.Fatalf("round %d: killed while downloading, yet the install is %s", round, v)
		}
		r := table[phase]
		if r == nil {
			r = &row{}
			table[phase] = r
		}
		if v == "1.0.0" {
			r.old++
		} else {
			r.new++
			m.mustRollback("1.0.0")
		}
	}
	if kills < done/2 {
		t.Errorf("only %d of %d runs were killed before they finished", kills, done)
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%d kills; journal phase at the kill → outcome after `sdupdate status`:\n", kills)
	fmt.Fprintf(&b, "  %-20s %5s %5s\n", "phase", "old", "new")
	phases := make([]string, 0, len(table))
	for ph := range table {
		phases = append(phases, ph)
	}
	order := map[string]int{"no journal": 0, "staging": 1, "staged": 2, "snapshotting": 3, "snapshotted": 4, "applying": 5, "applied": 6, "done": 7, "finished": 8}
	sort.Slice(phases, func(i, j int) bool { return order[phases[i]] < order[phases[j]] })
	for _, ph := range phases {
		fmt.Fprintf(&b, "  %-20s %5d %5d\n", ph, table[ph].old, table[ph].new)
	}
	t.Log(b.String())
	for _, need := range []string{"staging", "snapshotting", "applying"} {
		if table[need] == nil {
			t.Errorf("no kill landed in phase %s", need)
		}
	}
}

// smallVersions is a small agent whose second version downloads files of the given sizes.
func smallVersions(t *testing.T, files int, size int) (v1, v2 map[string]fileSpec) {
	t.Helper()
	rng := rand.New(rand.NewSource(int64(files*7 + size)))
	blob := func(n int) []byte {
		b := make([]byte, n)
		rng.Read(b)
		return b
	}
	v1 = map[string]fileSpec{
		"agent.py":       {data: []byte("print('agent 1.0.0')\n"), mode: 0o644},
		"bin/sd-agent":   {data: []byte("#!/bin/sh\nexec python3 agent.py\n"), mode: 0o755},
		"lib/common.py":  {data: []byte("common = 1\n"), mode: 0o644},
		"plugins/old.py": {data: []byte("old plugin\n"), mode: 0o644},
	}
	v2 = map[string]fileSpec{
		"agent.py":      {data: []byte("print('agent 1.1.0')\n"), mode: 0o644},
		"bin/sd-agent":  v1["bin/sd-agent"],
		"lib/common.py": v1["lib/common.py"],
	}
	for i := 0; i < files; i++ {
		v2[fmt.Sprintf("lib/ext/a/b/c/m%03d.py", i)] = fileSpec{data: blob(size), mode: 0o644}
	}
	return v1, v2
}

// TestTwoRunsStartedTogetherOnlyOneProceeds starts two updates at the same instant against a
// slow server: one updates, the other fails at once with exit 1 naming the first one's pid.
func TestTwoRunsStartedTogetherOnlyOneProceeds(t *testing.T) {
	m := newMachine(t, t.TempDir())
	v1, v2 := smallVersions(t, 40, 2048)
	m.publish("1.0.0", v1)
	m.mustUpdate("1.0.0")
	m.publish("1.1.0", v2)
	m.srv.delay.Store(int64(40 * time.Millisecond))
	heldRe := regexp.MustCompile(`another sdupdate is running \(pid (\d+)\)`)
	for round := 0; round < 5; round++ {
		a, b := m.start("update"), m.start("update")
		// The first to exit must be the one refused, while the other is still updating.
		var first, second *proc
		select {
		case <-a.done:
			first, second = a, b
		case <-b.done:
			first, second = b, a
		case <-time.After(30 * time.Second):
			t.Fatal("neither run finished within 30s")
		}
		stillRunning := !second.exited()
		rf, rs := first.res, second.wait(t, 30*time.Second)
		if rf.code != 1 || rs.code != 0 {
			t.Fatalf("round %d: exit statuses %d and %d, want 1 (refused) and 0 (updated)\nfirst: %s\nsecond: %s",
				round, rf.code, rs.code, rf.stderr, rs.stderr)
		}
		if !stillRunning {
			t.Errorf("round %d: the refused run did not end before the other finished (took %v)", round, rf.took)
		}
		sm := heldRe.FindStringSubmatch(rf.stderr)
		if sm == nil {
			t.Fatalf("round %d: the refused run does not say another sdupdate is running with its pid:\n%s", round, rf.stderr)
		}
		if sm[1] != fmt.Sprint(second.cmd.Process.Pid) {
			t.Errorf("round %d: message names pid %s, the running update is pid %d", round, sm[1], second.cmd.Process.Pid)
		}
		if rf.took > 2*time.Second {
			t.Errorf("round %d: the refused run took %v; it must fail at once", round, rf.took)
		}
		if v := m.settled(m.status()); v != "1.1.0" {
			t.Fatalf("round %d: after the two runs the install is %s", round, v)
		}
		if round == 0 {
			t.Logf("refused in %v while the other ran for %v: %q", rf.took.Round(time.Millisecond), rs.took.Round(time.Millisecond), strings.TrimSpace(sm[0]))
		}
		m.mustRollback("1.0.0")
	}
}

// TestSIGTERMDuringDownloadChangesNothing stops an update with SIGTERM while files are being
// downloaded: exit 1 soon after, the install as it was, nothing staged and no journal left.
func TestSIGTERMDuringDownloadChangesNothing(t *testing.T) {
	m := newMachine(t, t.TempDir())
	v1, v2 := smallVersions(t, 40, 2048)
	m.publish("1.0.0", v1)
	m.mustUpdate("1.0.0")
	m.publish("1.1.0", v2)
	m.srv.delay.Store(int64(50 * time.Millisecond))
	p := m.start("update")
	if !m.waitPhase(p, 10*time.Second, "staging") {
		t.Fatalf("the download never started: %s", p.wait(t, 10*time.Second).stderr)
	}
	for deadline := time.Now().Add(5 * time.Second); m.stagedFiles() < 4 && time.Now().Before(deadline); {
		time.Sleep(time.Millisecond)
	}
	sent := time.Now()
	must(t, p.cmd.Process.Signal(syscall.SIGTERM))
	r := p.wait(t, 10*time.Second)
	t.Logf("exit %d %v after SIGTERM: %s", r.code, time.Since(sent).Round(time.Millisecond), lastLine(r.stderr))
	if r.code != 1 {
		t.Errorf("exit %d after SIGTERM during download, want 1", r.code)
	}
	if !strings.Contains(r.stderr, "interrupted") {
		t.Errorf("the message does not say the run was interrupted:\n%s", r.stderr)
	}
	// Before anything recovers: the run itself must have cleaned up.
	if v := m.version(); v != "1.0.0" {
		t.Errorf("the install is %s after SIGTERM: %s", v, m.describeDiff("1.0.0"))
	}
	if n := m.stagedFiles(); n > 0 {
		t.Errorf("%d staged files left by the interrupted run", n)
	}
	if _, err := os.Stat(filepath.Join(m.state, "txn.json")); err == nil {
		t.Error("the interrupted run left its journal")
	}
	st := m.status()
	m.settled(st)
	if st.LastRun == nil || st.LastRun.Result != "failed" {
		t.Errorf("status last_run %+v, want result failed", st.LastRun)
	}
	m.srv.delay.Store(0)
	m.mustUpdate("1.1.0")
}

// TestSIGINTDuringApplyIsHeld presses Ctrl-C twice while thousands of files are being replaced:
// the run finishes replacing them (the tree is never left half new), then puts the old version
// back and exits 1 saying it was interrupted.
func TestSIGINTDuringApplyIsHeld(t *testing.T) {
	m := newBigMachine(t)
	for attempt := 1; ; attempt++ {
		p := m.start("update")
		if !m.waitPhase(p, 30*time.Second, "applying") {
			t.Fatalf("never saw phase applying: %s", p.wait(t, time.Minute).stderr)
		}
		must(t, p.cmd.Process.Signal(syscall.SIGINT))
		time.Sleep(2 * time.Millisecond)
		_ = p.cmd.Process.Signal(syscall.SIGINT)
		r := p.wait(t, time.Minute)
		if r.code == 0 && m.version() == "1.1.0" && attempt < 3 {
			// The signal arrived after apply had already finished: nothing to hold. Try again.
			t.Logf("attempt %d: the signal came after apply; the update completed", attempt)
			m.mustRollback("1.0.0")
			continue
		}
		t.Logf("exit %d: %s", r.code, lastLine(r.stderr))
		// Exit -1 would mean a Ctrl-C killed it.
		if r.code != 1 || !strings.Contains(r.stderr, "interrupted") {
			t.Fatalf("exit %d, want 1 and a message saying it was interrupted:\n%s", r.code, r.stderr)
		}
		if v := m.version(); v != "1.0.0" {
			t.Fatalf("the install is %s: %s", v, m.describeDiff("1.0.0"))
		}
		if n := m.stagedFiles(); n > 0 {
			t.Errorf("%d staged files left", n)
		}
		if _, err := os.Stat(filepath.Join(m.state, "txn.json")); err == nil {
			t.Error("journal left behind")
		}
		m.settled(m.status())
		return
	}
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}

// mountTmpfs mounts a tmpfs with opts on a fresh directory and unmounts it when the test ends.
// It needs root; in CI, where we are root, a missing privilege is a failure.
func mountTmpfs(t *testing.T, opts string) string {
	t.Helper()
	need.Root(t, "mounting a tmpfs")
	dir := t.TempDir()
	if err := syscall.Mount("tmpfs", dir, "tmpfs", 0, opts); err != nil {
		t.Fatalf("cannot mount a tmpfs on %s: %v", dir, err)
	}
	t.Cleanup(func() {
		if err := syscall.Unmount(dir, 0); err != nil {
			_ = syscall.Unmount(dir, syscall.MNT_DETACH)
		}
	})
	return dir
}

// fill writes to path until the filesystem is full, and returns how many bytes it wrote.
func fill(t *testing.T, path string) int64 {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 1<<20)
	var n int64
	for {
		w, err := f.Write(buf)
		n += int64(w)
		if errors.Is(err, syscall.ENOSPC) {
			return n
		}
		if err != nil {
			t.Fatal(err)
		}
	}
}

// TestDiskFull puts the install and the state directory on a small tmpfs. An update that does
// not fit is refused before anything is downloaded, with the space it needs; a disk that fills
// up during the download, or runs out of inodes while the snapshot is taken or files are
// replaced, fails with exit 1 and leaves the install as it was and no staged file.
func TestDiskFull(t *testing.T) {
	t.Run("refused before download", func(t *testing.T) {
		root := mountTmpfs(t, "size=24m")
		m := newMachine(t, root)
		v1, v2 := smallVersions(t, 12, 1<<20)
		m.publish("1.0.0", v1)
		m.mustUpdate("1.0.0")
		m.publish("1.1.0", v2)
		var free syscall.Statfs_t
		must(t, syscall.Statfs(root, &free))
		r := m.run("update")
		t.Logf("exit %d: %s", r.code, lastLine(r.stderr))
		if r.code != 1 {
			t.Fatalf("exit %d, want 1: %s", r.code, r.stderr)
		}
		need := regexp.MustCompile(`needs ([0-9.]+) MiB`).FindStringSubmatch(r.stderr)
		if need == nil {
			t.Fatalf("the message does not say how much space is needed:\n%s", r.stderr)
		}
		var mib float64
		fmt.Sscan(need[1], &mib)
		if bytes := int64(mib * (1 << 20)); bytes < 12<<20 || uint64(bytes) <= free.Bavail*uint64(free.Bsize) {
			t.Errorf("says %s MiB are needed: less than the 12 MiB to download or than the %d bytes free", need[1], free.Bavail*uint64(free.Bsize))
		}
		if v := m.version(); v != "1.0.0" {
			t.Errorf("the install is %s", v)
		}
		if n := m.stagedFiles(); n > 0 {
			t.Errorf("%d staged files left", n)
		}
		m.settled(m.status())
	})

	t.Run("filled during download", func(t *testing.T) {
		root := mountTmpfs(t, "size=40m")
		m := newMachine(t, root)
		v1, v2 := smallVersions(t, 8, 1<<20)
		m.publish("1.0.0", v1)
		m.mustUpdate("1.0.0")
		m.publish("1.1.0", v2)
		sent, release := m.srv.holdHalfway("/1.1.0/lib/ext/a/b/c/m005.py")
		defer release()
		p := m.start("update")
		select {
		case <-sent:
		case <-p.done:
			t.Fatalf("the update ended before the download: %s", p.res.stderr)
		case <-time.After(20 * time.Second):
			t.Fatal("the download never reached the held file")
		}
		filler := filepath.Join(root, "filler")
		n := fill(t, filler)
		release()
		r := p.wait(t, 30*time.Second)
		t.Logf("filled %d MiB mid-download; exit %d: %s", n>>20, r.code, lastLine(r.stderr))
		if r.code != 1 || !strings.Contains(r.stderr, "no space left on device") {
			t.Errorf("exit %d, want 1 and a message saying the disk is full:\n%s", r.code, r.stderr)
		}
		if v := m.version(); v != "1.0.0" {
			t.Errorf("the install is %s: %s", v, m.describeDiff("1.0.0"))
		}
		if n := m.stagedFiles(); n > 0 {
			t.Errorf("%d staged files left on the full disk", n)
		}
		must(t, os.Remove(filler))
		m.settled(m.status())
		m.mustUpdate("1.1.0")
	})

	t.Run("out of inodes during snapshot or apply", func(t *testing.T) {
		root := mountTmpfs(t, "size=40m,nr_inodes=400")
		m := newMachine(t, root)
		v1, v2 := smallVersions(t, 1, 4096)
		m.publish("1.0.0", v1)
		m.mustUpdate("1.0.0")
		m.publish("1.1.0", v2)
		downloads := []string{"/1.1.0/agent.py", "/1.1.0/lib/ext/a/b/c/m000.py"}
		fillerDir := filepath.Join(root, "filler")
		outcomes := []string{}
		for spare := 0; spare < 40; spare++ {
			var releases []func()
			for _, d := range downloads {
				_, rel := m.srv.holdHalfway(d)
				releases = append(releases, rel)
			}
			p := m.start("update")
			// Wait until every download has its staging file, so only what follows the
			// download can run out of inodes.
			for deadline := time.Now().Add(20 * time.Second); m.stagedFiles() < len(downloads); {
				if time.Now().After(deadline) || p.exited() {
					t.Fatalf("the downloads never started: %s", p.wait(t, time.Second).stderr)
				}
				time.Sleep(time.Millisecond)
			}
			must(t, os.MkdirAll(fillerDir, 0o700))
			var made []string
			for i := 0; ; i++ {
				f := filepath.Join(fillerDir, fmt.Sprint(i))
				if err := os.WriteFile(f, nil, 0o600); err != nil {
					if !errors.Is(err, syscall.ENOSPC) {
						t.Fatal(err)
					}
					break
				}
				made = append(made, f)
			}
			for i := 0; i < spare && i < len(made); i++ {
				must(t, os.Remove(made[len(made)-1-i]))
			}
			for _, rel := range releases {
				rel()
			}
			r := p.wait(t, 30*time.Second)
			v := m.version()
			outcomes = append(outcomes, fmt.Sprintf("%d spare: exit %d, %s", spare, r.code, v))
			if r.code == 0 {
				if v != "1.1.0" {
					t.Fatalf("%d spare inodes: exit 0 but the install is %s", spare, v)
				}
				must(t, os.RemoveAll(fillerDir))
				m.settled(m.status())
				break
			}
			if r.code != 1 || v != "1.0.0" {
				t.Errorf("%d spare inodes: exit %d and the install is %s, want exit 1 and 1.0.0 unchanged:\n%s", spare, r.code, v, r.stderr)
			}
			if !strings.Contains(r.stderr, "no space left on device") {
				t.Errorf("%d spare inodes: the message does not say the disk is full:\n%s", spare, r.stderr)
			}
			if n := m.stagedFiles(); n > 0 {
				t.Errorf("%d spare inodes: %d staged files left", spare, n)
			}
			t.Logf("%d spare inodes: exit %d, %s", spare, r.code, lastLine(r.stderr))
			must(t, os.RemoveAll(fillerDir))
			if v := m.settled(m.status()); v != "1.0.0" || t.Failed() {
				t.Fatalf("%d spare inodes: after recovery the install is %s", spare, v)
			}
		}
		t.Logf("outcomes: %s", strings.Join(outcomes, "; "))
		if last := outcomes[len(outcomes)-1]; !strings.Contains(last, "exit 0") {
			t.Errorf("the update never got through: %s", last)
		}
	})
}

// TestSIGKILLDuringRollbackAndRetention kills `sdupdate rollback` at random instants of its
// restore, and `sdupdate update` while it prunes old snapshots (KeepSnapshots=3, so every update
// after the third deletes one), then runs `sdupdate status`: the tree is exactly one version and
// the store still holds everything its kept snapshots need.
func TestSIGKILLDuringRollbackAndRetention(t *testing.T) {
	if testing.Short() {
		t.Skip("kills a real process 20 times")
	}
	m := newBigMachine(t)
	m.mustUpdate("1.1.0")
	p := m.start("rollback")
	r := p.wait(t, time.Minute)
	if r.code != 0 || m.version() != "1.0.0" {
		t.Fatalf("calibration rollback: exit %d, tree %s: %s", r.code, m.version(), r.stderr)
	}
	took := r.took
	t.Logf("uninterrupted rollback of %d files: %v", bigSite.v2, took.Round(time.Millisecond))

	seed := time.Now().UnixNano()
	rng := rand.New(rand.NewSource(seed))
	t.Logf("random seed %d", seed)
	outcomes := map[string]int{}
	deadline := time.Now().Add(40 * time.Second)
	for round := 0; round < 20 && time.Now().Before(deadline); round++ {
		var p *proc
		what := "rollback"
		if round%2 == 0 {
			m.mustUpdate("1.1.0")
			p = m.start("rollback")
			time.Sleep(time.Duration(rng.Int63n(int64(took) + 1)))
		} else {
			what = "retention"
			p = m.start("update")
			if !m.waitPhase(p, 30*time.Second, "done") {
				t.Logf("round %d: phase done not seen", round)
			}
			time.Sleep(time.Duration(rng.Int63n(int64(2 * time.Millisecond))))
		}
		phase := m.phase()
		if p.exited() {
			phase = "finished"
		}
		_ = p.cmd.Process.Signal(syscall.SIGKILL)
		<-p.done
		v := m.settled(m.status())
		if t.Failed() {
			t.Fatalf("round %d: %s killed in phase %q; stderr of the killed run:\n%s", round, what, phase, p.res.stderr)
		}
		outcomes[fmt.Sprintf("%s killed in %q → %s", what, phase, v)]++
		if v == "1.1.0" {
			m.mustRollback("1.0.0")
		}
	}
	t.Logf("outcomes after `sdupdate status`: %v", outcomes)
}
