package release

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
	"github.com/spf13/afero"

	"github.com/sdupdate/sdupdate/config"
	"github.com/sdupdate/sdupdate/fetch"
	"github.com/sdupdate/sdupdate/internal/need"
	"github.com/sdupdate/sdupdate/manifest"
	"github.com/sdupdate/sdupdate/updater"
)

// zstdCLI is the reference zstd program; CI must have it.
func zstdCLI(t *testing.T) string {
	t.Helper()
	return need.Program(t, "zstd", "zstd")
}

// realVersions is two versions of an agent made of real files of this system: program (larger
// than packThreshold) patched in place and grown, text, and a library of small source files (sdupdate's own).
func realVersions(t *testing.T, program string) (v1, v2 map[string]srcFile) {
	t.Helper()
	read := func(p string) string {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatalf("a real file to release: %v", err)
		}
		return string(b)
	}
	prog, readme := read(program), read("../README.md")
	patched := []byte(prog)
	for i := 4096; i < len(patched); i += len(patched) / 20 {
		patched[i] ^= 0x5a
	}
	at := len(patched) / 2
	grown := string(patched[:at]) + strings.Repeat("a new function ", 300) + string(patched[at:])
	v1 = map[string]srcFile{"bin/sd-agent": {prog, 0o755}, "README.md": {readme, 0o644}, "VERSION": {"1.0.0\n", 0o644}}
	v2 = map[string]srcFile{"bin/sd-agent": {grown, 0o755}, "README.md": {readme + "\n## 1.1.0\n\nA fix.\n", 0o644}, "VERSION": {"1.1.0\n", 0o644}}
	sources, err := filepath.Glob("../manifest/*.go")
	if err != nil || len(sources) < 4 {
		t.Fatalf("sdupdate's own sources to release: %v %q", err, sources)
	}
	for _, p := range sources {
		name := "lib/manifest/" + filepath.Base(p)
		v1[name] = srcFile{read(p), 0o644}
		v2[name] = v1[name]
	}
	return v1, v2
}

// countingSite serves dir over real HTTP and counts the requests for each path.
type countingSite struct {
	*httptest.Server
	mu       sync.Mutex
	requests map[string]int
}

func newCountingSite(t *testing.T, dir string) *countingSite {
	s := &countingSite{requests: map[string]int{}}
	files := http.FileServer(http.Dir(dir))
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		s.requests[r.URL.Path]++
		s.mu.Unlock()
		files.ServeHTTP(w, r)
	}))
	t.Cleanup(s.Close)
	return s
}

// fetched lists which of each file's sources in m were requested since the last call.
func (s *countingSite) fetched(m *manifest.Manifest) map[string]string {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := map[string]string{}
	base := "/" + m.BaseURL
	for _, f := range m.Files {
		for _, d := range f.Deltas {
			if s.requests[base+d.URL] > 0 {
				out[f.Name] += "delta"
			}
		}
		if f.Object != nil && s.requests[base+f.Object.URL] > 0 {
			out[f.Name] += "object"
		}
		if s.requests[base+f.Name] > 0 {
			out[f.Name] += "file"
		}
	}
	s.requests = map[string]int{}
	return out
}

// engine is an updater of an in-memory install fed by s.
func engine(s *countingSite) *updater.Engine {
	cfg := config.Default()
	cfg.ManifestURL = s.URL + "/manifest.json"
	cfg.AllowUnsigned = true
	cfg.Directory, cfg.StateDirectory = "/opt/sd-agent", "/var/lib/sdupdate"
	cfg.Unit = ""
	cfg.Files = []string{"test.conf"}
	log := logrus.New()
	log.SetOutput(io.Discard)
	return &updater.Engine{Fs: afero.NewMemMapFs(), Config: &cfg, Fetcher: fetch.New(10 * time.Second), Log: log, RetryDelay: time.Millisecond}
}

func assertInstalled(t *testing.T, fsys afero.Fs, tree map[string]srcFile) {
	t.Helper()
	for name, f := range tree {
		got, err := afero.ReadFile(fsys, "/opt/sd-agent/"+name)
		if err != nil || string(got) != f.content {
			t.Errorf("%s: installed content differs from the release (%v)", name, err)
		}
	}
}

// sourceBytes is what m's objects and deltas weigh together.
func sourceBytes(m *manifest.Manifest) (objects, deltas int64) {
	for _, f := range m.Files {
		if f.Object != nil {
			objects += f.Object.Size
		}
		for _, d := range f.Deltas {
			deltas += d.Size
		}
	}
	return objects, deltas
}

// What `release --zstd` publishes, an updater installs: objects on a first install, deltas for
// the patch. And it is smaller than what the built-in encoder makes of the same files.
func TestReleaseWithReferenceZstdInstalls(t *testing.T) {
	cli := zstdCLI(t)
	v1, v2 := realVersions(t, cli) // zstd itself is the program
	fsys, dir := afero.NewOsFs(), t.TempDir()
	site := filepath.Join(dir, "site")
	s := newCountingSite(t, site)
	e := engine(s)
	ms := map[string]*manifest.Manifest{}
	for _, v := range []struct {
		version string
		tree    map[string]srcFile
	}{{"1.0.0", v1}, {"1.1.0", v2}} {
		from := filepath.Join(dir, "build-"+v.version)
		writeTree(t, fsys, from, v.tree)
		res, err := Run(fsys, Options{From: from, Out: site, Version: v.version, Deltas: 3, Zstd: cli})
		if err != nil {
			t.Fatal(err)
		}
		if len(res.Warnings) != 0 {
			t.Errorf("%s: warnings %q, want none: the updater takes what zstd makes", v.version, res.Warnings)
		}
		ms[v.version], _ = readManifest(t, fsys, site)
		if _, err := e.Update(context.Background(), updater.UpdateOptions{}); err != nil {
			t.Fatalf("update to %s: %v", v.version, err)
		}
		assertInstalled(t, e.Fs, v.tree)
	}
	m := ms["1.1.0"]
	if len(m.Packs) == 0 {
		t.Fatal("no pack of the small sources")
	}
	for _, pk := range m.Packs {
		for name, content := range packedContents(t, fsys, site, m, pk) {
			if content != v2[name].content {
				t.Errorf("%s: the pack holds other bytes than the file", name)
			}
		}
	}
	got := s.fetched(m)
	for name, want := range map[string]string{"bin/sd-agent": "delta", "README.md": "delta", "VERSION": "file"} {
		if got[name] != want {
			t.Errorf("update to 1.1.0 fetched %s as %q, want %q (all fetched: %v)", name, got[name], want, got)
		}
	}

	// The same releases with the built-in encoder, for comparison.
	mem := afero.NewMemMapFs()
	release(t, mem, "1.0.0", v1, 3)
	builtinObjects, builtinDeltas := sourceBytes(release(t, mem, "1.1.0", v2, 3))
	objects, deltas := sourceBytes(ms["1.1.0"])
	if objects >= builtinObjects || deltas >= builtinDeltas {
		t.Errorf("--zstd objects %d bytes and deltas %d, built-in %d and %d: want both smaller", objects, deltas, builtinObjects, builtinDeltas)
	}
}

// fakeZstd writes a shell script that answers --version with version and otherwise runs body.
func fakeZstd(t *testing.T, version, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "zstd")
	script := "#!/bin/sh\nif [ \"$1\" = --version ]; then echo '*** Zstandard CLI (64-bit) " + version + ", by Yann Collet ***'; exit 0; fi\n" + body + "\n"
	if err := os.WriteFile(p, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

// A --zstd that is not a usable zstd is a usage error that says what to do, before anything
// is written.
func TestReleaseRefusesUnusableZstd(t *testing.T) {
	for _, c := range []struct {
		desc, path, want string
	}{
		{"missing", "/nonexistent/zstd", "cannot run zstd at /nonexistent/zstd"},
		{"not zstd", "/bin/true", "not a zstd version"},
		{"too old for --patch-from", fakeZstd(t, "v1.4.4", "exit 1"), "older than 1.4.5"},
	} {
		t.Run(c.desc, func(t *testing.T) {
			fsys, dir := afero.NewOsFs(), t.TempDir()
			from, out := filepath.Join(dir, "build"), filepath.Join(dir, "site")
			writeTree(t, fsys, from, agentTree)
			_, err := Run(fsys, Options{From: from, Out: out, Version: "1.0.0", Zstd: c.path})
			if !errors.Is(err, ErrUsage) || !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), "leave out --zstd") {
				t.Fatalf("got %v, want a usage error saying %q and what to do", err, c.want)
			}
			assertNothingPublished(t, fsys, out)
		})
	}
}

// zstd failing on a file fails the release, naming the file and the command; nothing is
// published.
func TestReleaseZstdFailureNamesFileAndCommand(t *testing.T) {
	fsys, dir := afero.NewOsFs(), t.TempDir()
	from, out := filepath.Join(dir, "build"), filepath.Join(dir, "site")
	writeTree(t, fsys, from, map[string]srcFile{"agent.py": {codeLike(1, 64<<10), 0o644}})
	zstd := fakeZstd(t, "v1.5.4", "echo 'out of memory' >&2; exit 1")
	_, err := Run(fsys, Options{From: from, Out: out, Version: "1.0.0", Zstd: zstd})
	if err == nil || !strings.Contains(err.Error(), "agent.py") || !strings.Contains(err.Error(), zstd+" -19") || !strings.Contains(err.Error(), "out of memory") {
		t.Fatalf("got %v, want an error naming agent.py, the zstd command and what it said", err)
	}
	assertNothingPublished(t, fsys, out)
}

// What the reference encoder makes and the updater's decoder refuses is made with the built-in
// encoder instead, with a warning: a release never publishes a source no updater can use.
func TestReleaseRefusedZstdOutputFallsBack(t *testing.T) {
	fsys, dir := afero.NewOsFs(), t.TempDir()
	from, out := filepath.Join(dir, "build"), filepath.Join(dir, "site")
	content := codeLike(2, 256<<10)
	writeTree(t, fsys, from, map[string]srcFile{"lib/core.so": {content, 0o644}})
	res, err := Run(fsys, Options{From: from, Out: out, Version: "1.0.0", Zstd: fakeZstd(t, "v1.5.4", "printf 'not zstd at all'")})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Warnings) != 1 || !strings.Contains(res.Warnings[0], "lib/core.so") || !strings.Contains(res.Warnings[0], "built-in") {
		t.Errorf("warnings %q, want one naming lib/core.so and the built-in encoder", res.Warnings)
	}
	m, _ := readManifest(t, fsys, out)
	f := m.Files[0]
	if f.Object == nil {
		t.Fatal("no object: the built-in encoder's should have been published")
	}
	if got := decodeSourceAt(t, fsys, out, m, f, *f.Object, ""); got != content {
		t.Error("the object decodes to other content")
	}
}
