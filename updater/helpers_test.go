package updater

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
	"github.com/spf13/afero"

	"github.com/sdupdate/sdupdate/systemd"

	"github.com/sdupdate/sdupdate/config"
	"github.com/sdupdate/sdupdate/fetch"
)

const (
	installDir = "/opt/sd-agent"
	stateDir   = "/var/lib/sdupdate"
)

// site is a real HTTP server publishing agent versions the way `sdupdate release` lays them out:
// /manifest.json and /<version>/<name>. It counts requests and the bytes it sent per path and
// can corrupt the first N responses of a path.
type site struct {
	*httptest.Server
	mu       sync.Mutex
	content  map[string][]byte
	requests map[string]int
	served   map[string]int64 // path → bytes of bodies sent
	corrupt  map[string]int   // path → how many more responses to corrupt
	status   map[string]int   // path → forced status code
	fail     map[string]int   // path → how many more responses answer 503
}

func newSite(t *testing.T) *site {
	s := &site{content: map[string][]byte{}, requests: map[string]int{}, served: map[string]int64{}, corrupt: map[string]int{}, status: map[string]int{}, fail: map[string]int{}}
	s.Server = httptest.NewServer(http.HandlerFunc(s.serve))
	t.Cleanup(s.Close)
	return s
}

func (s *site) serve(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	p := r.URL.Path
	s.requests[p]++
	body, ok := s.content[p]
	code := s.status[p]
	if s.fail[p] > 0 {
		s.fail[p]--
		code = http.StatusServiceUnavailable
	}
	bad := s.corrupt[p] > 0
	if bad {
		s.corrupt[p]--
	}
	s.mu.Unlock()
	if code != 0 {
		http.Error(w, "forced", code)
		return
	}
	if !ok {
		http.NotFound(w, r)
		return
	}
	if bad {
		body = append([]byte(nil), body...)
		if len(body) > 0 {
			body[0] ^= 0xff
		} else {
			body = []byte("x")
		}
	}
	w.Header().Set("Content-Length", fmt.Sprint(len(body)))
	n, _ := w.Write(body)
	s.mu.Lock()
	s.served[p] += int64(n)
	s.mu.Unlock()
}

// agentFile is one file of a published version.
type agentFile struct {
	data string
	mode os.FileMode
}

// publish serves version with files and makes its manifest the current one.
func (s *site) publish(t *testing.T, version string, files map[string]agentFile) {
	t.Helper()
	type entry struct {
		Name   string `json:"name"`
		SHA256 string `json:"sha256"`
		Size   int    `json:"size"`
		Mode   string `json:"mode"`
	}
	m := struct {
		Version string  `json:"version"`
		BaseURL string  `json:"base_url"`
		Files   []entry `json:"files"`
	}{Version: version, BaseURL: version + "/"}
	names := make([]string, 0, len(files))
	for n := range files {
		names = append(names, n)
	}
	sort.Strings(names)
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, n := range names {
		f := files[n]
		mode := f.mode
		if mode == 0 {
			mode = 0o644
		}
		sum := sha256.Sum256([]byte(f.data))
		m.Files = append(m.Files, entry{Name: n, SHA256: hex.EncodeToString(sum[:]), Size: len(f.data), Mode: fmt.Sprintf("%04o", mode)})
		s.content["/"+version+"/"+n] = []byte(f.data)
	}
	raw, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	s.content["/manifest.json"] = raw
}

func (s *site) setManifest(raw []byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.content["/manifest.json"] = raw
}

// fileRequests is how many requests went to version files (not the manifest).
func (s *site) fileRequests() map[string]int {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := map[string]int{}
	for p, n := range s.requests {
		if !strings.HasSuffix(p, "manifest.json") && !strings.HasSuffix(p, "manifest.json.zst") && !strings.HasSuffix(p, ".minisig") {
			out[p] = n
		}
	}
	return out
}

func (s *site) resetRequests() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.requests = map[string]int{}
}

// fakeAgent stands in for the systemd gate.
type fakeAgent struct {
	mu       sync.Mutex
	active   bool
	restarts int
	// fail decides the outcome of the n-th restart (1-based); nil = healthy.
	fail func(n int) error
}

func (a *fakeAgent) Active(context.Context) (bool, error) { return a.active, nil }
func (a *fakeAgent) State(context.Context) (systemd.UnitState, error) {
	if a.active {
		return systemd.UnitState{Active: "active", Sub: "running", Load: "loaded"}, nil
	}
	return systemd.UnitState{Active: "inactive", Sub: "dead", Load: "loaded"}, nil
}
func (a *fakeAgent) RestartAndWait(ctx context.Context, _ *logrus.Entry) error {
	a.mu.Lock()
	a.restarts++
	n := a.restarts
	a.mu.Unlock()
	if a.fail != nil {
		return a.fail(n)
	}
	return nil
}

func testConfig(s *site) *config.Config {
	c := config.Default()
	c.ManifestURL = s.URL + "/manifest.json"
	c.AllowUnsigned = true
	c.Directory = installDir
	c.StateDirectory = stateDir
	c.Unit = ""
	c.Files = []string{"test.conf"}
	return &c
}

func quietLogger() *logrus.Logger {
	l := logrus.New()
	l.SetOutput(io.Discard)
	l.SetLevel(logrus.DebugLevel)
	return l
}

func newEngine(fsys afero.Fs, cfg *config.Config, agent Agent) *Engine {
	e := &Engine{Fs: fsys, Config: cfg, Fetcher: fetch.New(5 * time.Second), Log: quietLogger(), RetryDelay: time.Millisecond}
	if agent != nil {
		e.Agent = agent
	}
	return e
}

// tree maps every file under dir (relative slash path) to its content and mode, as a user
// comparing two installs would.
func tree(t *testing.T, fsys afero.Fs, dir string) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := afero.Walk(fsys, dir, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		if fi.IsDir() {
			if filepath.Base(p) == ".sdupdate" {
				return filepath.SkipDir
			}
			return nil
		}
		data, err := afero.ReadFile(fsys, p)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		out[filepath.ToSlash(rel)] = fmt.Sprintf("%s %04o", data, fi.Mode().Perm())
		return nil
	})
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		t.Fatal(err)
	}
	return out
}

// want renders files as tree does.
func want(files map[string]agentFile, extra map[string]string) map[string]string {
	out := map[string]string{}
	for n, f := range files {
		mode := f.mode
		if mode == 0 {
			mode = 0o644
		}
		out[n] = fmt.Sprintf("%s %04o", f.data, mode)
	}
	for n, v := range extra {
		out[n] = v
	}
	return out
}

func equalTrees(t *testing.T, got, wantTree map[string]string) {
	t.Helper()
	if len(got) != len(wantTree) {
		t.Errorf("tree has %d files, want %d:\n got %v\nwant %v", len(got), len(wantTree), got, wantTree)
		return
	}
	for n, v := range wantTree {
		if got[n] != v {
			t.Errorf("file %s = %q, want %q", n, got[n], v)
		}
	}
}

// noLeftovers asserts that a finished run left no journal (nor any of its parts) and no staged file.
func noLeftovers(t *testing.T, fsys afero.Fs) {
	t.Helper()
	if ok, _ := afero.Exists(fsys, filepath.Join(stateDir, "txn.json")); ok {
		t.Error("transaction journal left behind")
	}
	entries, _ := afero.ReadDir(fsys, filepath.Join(stateDir, "staging"))
	if len(entries) > 0 {
		t.Errorf("staging not empty: %d entries", len(entries))
	}
	state, _ := afero.ReadDir(fsys, stateDir)
	for _, e := range state {
		if isPartName(e.Name()) {
			t.Errorf("journal part %s left behind", e.Name())
		}
	}
}

var (
	v1 = map[string]agentFile{
		"agent.py":       {data: "print('agent 1.0.0')\n"},
		"bin/sd-agent":   {data: "#!/bin/sh\necho 1.0.0\n", mode: 0o755},
		"plugins/old.py": {data: "old plugin\n"},
		"lib/common.py":  {data: "common = 1\n"},
	}
	v2 = map[string]agentFile{
		"agent.py":      {data: "print('agent 1.1.0')\n"},
		"bin/sd-agent":  {data: "#!/bin/sh\necho 1.0.0\n", mode: 0o755},
		"lib/common.py": {data: "common = 1\n"},
		"lib/new.py":    {data: "new in 1.1.0\n"},
	}
)
