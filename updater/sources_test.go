package updater

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"path"
	"reflect"
	"strings"
	"sync"
	"testing"

	"aead.dev/minisign"
	"github.com/sirupsen/logrus"
	"github.com/sirupsen/logrus/hooks/test"
	"github.com/spf13/afero"

	"github.com/sdupdate/sdupdate/delta"
	"github.com/sdupdate/sdupdate/manifest"
	"github.com/sdupdate/sdupdate/release"
	"github.com/sdupdate/sdupdate/sign"
)

func TestSourcesForOrder(t *testing.T) {
	sum := func(c byte) string { return strings.Repeat(string(c), 64) }
	f := manifest.File{Name: "bin/agent", SHA256: sum('a'), Size: 1000,
		Object: &manifest.Source{URL: "o", SHA256: sum('o'), Size: 400},
		Deltas: []manifest.Delta{
			{From: sum('1'), Source: manifest.Source{URL: "d1", SHA256: sum('d'), Size: 90}},
			{From: sum('2'), Source: manifest.Source{URL: "d2", SHA256: sum('e'), Size: 30}},
			{From: sum('3'), Source: manifest.Source{URL: "d3", SHA256: sum('f'), Size: 10}}, // base not on hand
			{From: sum('4'), Source: manifest.Source{URL: "d4", SHA256: sum('g'), Size: 20}}, // base too large
		}}
	have := localContent{sum('1'): {name: "bin/agent", size: 900}, sum('2'): {name: "old/agent", size: 950}, sum('4'): {name: "big", size: 5000}}
	kinds := func(list []Source) string {
		var s []string
		for _, src := range list {
			s = append(s, string(src.Kind)+":"+src.URL)
		}
		return strings.Join(s, " ")
	}
	for _, tc := range []struct {
		name     string
		f        manifest.File
		maxDelta int64
		want     string
	}{
		{"cheapest delta first, then object, then file", f, 2000, "delta:d2 delta:d1 object:o file:bin/agent"},
		{"file over the delta limit: object", f, 999, "object:o file:bin/agent"},
		{"deltas off", f, 0, "object:o file:bin/agent"},
		{"object no smaller than the file is skipped", withObjectSize(f, 1000), 0, "file:bin/agent"},
		{"legacy entry: the file only", manifest.File{Name: "a.py", MD5: strings.Repeat("0", 32), Size: -1}, 2000, "file:a.py"},
	} {
		if got := kinds(sourcesFor(tc.f, have, tc.maxDelta)); got != tc.want {
			t.Errorf("%s: got %s, want %s", tc.name, got, tc.want)
		}
	}
	d := sourcesFor(f, have, 2000)[0]
	if d.BaseName != "old/agent" || d.BaseWant != (delta.Want{SHA256: sum('2'), Size: 950}) || d.Want != (delta.Want{SHA256: sum('e'), Size: 30}) {
		t.Errorf("delta source %+v", d)
	}
}

func withObjectSize(f manifest.File, size int64) manifest.File {
	o := *f.Object
	o.Size = size
	f.Object = &o
	return f
}

// pubSite serves what `sdupdate release` publishes (built with release.Run on its own in-memory
// filesystem) over real HTTP, counting requests and optionally replacing a response.
type pubSite struct {
	*httptest.Server
	fs       afero.Fs
	verifier *sign.Verifier // for the key the releases are signed with
	mu       sync.Mutex
	requests map[string]int
	replace  map[string][]byte // path → body served instead (nil body: 404)
}

func newPubSite(t *testing.T) *pubSite {
	s := &pubSite{fs: afero.NewMemMapFs(), requests: map[string]int{}, replace: map[string][]byte{}}
	pub, priv, err := minisign.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	keyText, _ := priv.MarshalText()
	if err := afero.WriteFile(s.fs, "/keys/sec", keyText, 0o600); err != nil {
		t.Fatal(err)
	}
	if s.verifier, err = sign.NewVerifier([]string{pub.String()}); err != nil {
		t.Fatal(err)
	}
	files := http.FileServer(afero.NewHttpFs(s.fs).Dir("/site"))
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		s.requests[r.URL.Path]++
		body, replaced := s.replace[r.URL.Path]
		s.mu.Unlock()
		switch {
		case replaced && body == nil:
			http.NotFound(w, r)
		case replaced:
			w.Header().Set("Content-Length", fmt.Sprint(len(body)))
			w.Write(body)
		default:
			files.ServeHTTP(w, r)
		}
	}))
	t.Cleanup(s.Close)
	return s
}

func (s *pubSite) release(t *testing.T, version string, files map[string]string) *manifest.Manifest {
	t.Helper()
	from := "/build/" + version
	for name, data := range files {
		if err := s.fs.MkdirAll(path.Dir(from+"/"+name), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := afero.WriteFile(s.fs, from+"/"+name, []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := release.Run(s.fs, release.Options{From: from, Out: "/site", Version: version, Deltas: 3, SignKey: "/keys/sec"}); err != nil {
		t.Fatal(err)
	}
	raw, err := afero.ReadFile(s.fs, "/site/manifest.json")
	if err != nil {
		t.Fatal(err)
	}
	m, err := manifest.Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	s.mu.Lock()
	s.requests = map[string]int{}
	s.mu.Unlock()
	return m
}

// fetchedKinds says, per file of m, which of its sources were requested.
func (s *pubSite) fetchedKinds(m *manifest.Manifest) map[string][]string {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := map[string][]string{}
	base := "/" + m.BaseURL
	for _, f := range m.Files {
		for _, d := range f.Deltas {
			if s.requests[base+d.URL] > 0 {
				out[f.Name] = append(out[f.Name], "delta")
			}
		}
		if f.Object != nil && s.requests[base+f.Object.URL] > 0 {
			out[f.Name] = append(out[f.Name], "object")
		}
		if s.requests[base+f.Name] > 0 {
			out[f.Name] = append(out[f.Name], "file")
		}
	}
	return out
}

// agentVersions is two releases of a small agent whose binary and library change a little.
func agentVersions() (v1, v2 map[string]string) {
	r := rand.New(rand.NewPCG(3, 4))
	blob := func(n int) string {
		b := make([]byte, n)
		for i := range b {
			b[i] = "abcdefghijklmnop{}();\n"[r.IntN(22)]
		}
		return string(b)
	}
	bin, lib, dns := blob(300<<10), blob(120<<10), blob(80<<10)
	v1 = map[string]string{"bin/sd-agent": bin, "lib/core.so": lib, "VERSION": "1.0.0\n", "lib/libdns-1.0.0.so": dns}
	v2 = map[string]string{
		"bin/sd-agent":        bin[:5000] + "patched" + bin[5000:],
		"lib/core.so":         lib + "one more function",
		"VERSION":             "1.1.0\n",
		"lib/new.so":          blob(50 << 10),
		"lib/libdns-1.1.0.so": dns + "renamed with its version, and fixed", // the base is the old name's content
	}
	return v1, v2
}

func deltaEngine(t *testing.T, s *pubSite) (*Engine, afero.Fs, *test.Hook) {
	fsys := afero.NewMemMapFs()
	cfg := testConfig(&site{Server: s.Server})
	cfg.MaxDeltaFileSize = 128 << 20
	cfg.AllowUnsigned = false
	e := newEngine(fsys, cfg, nil)
	e.Verifier = s.verifier
	hook := test.NewLocal(e.Log)
	return e, fsys, hook
}

func installed(t *testing.T, fsys afero.Fs, files map[string]string) {
	t.Helper()
	for name, data := range files {
		got, err := afero.ReadFile(fsys, installDir+"/"+name)
		if err != nil || string(got) != data {
			t.Errorf("%s: installed content differs (%v)", name, err)
		}
	}
}

func TestUpdateUsesDeltasObjectsAndFiles(t *testing.T) {
	s := newPubSite(t)
	v1, v2 := agentVersions()
	m1 := s.release(t, "1.0.0", v1)
	e, fsys, _ := deltaEngine(t, s)
	if _, err := e.Update(context.Background(), UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	installed(t, fsys, v1)
	// A first install has nothing to start from: objects where they pay, files where not.
	if got, want := s.fetchedKinds(m1), map[string][]string{"bin/sd-agent": {"object"}, "lib/core.so": {"object"}, "VERSION": {"file"}, "lib/libdns-1.0.0.so": {"object"}}; !reflect.DeepEqual(got, want) {
		t.Errorf("first install fetched %v, want %v", got, want)
	}

	m2 := s.release(t, "1.1.0", v2)
	check, err := e.Check(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var want int64
	for _, f := range m2.Files {
		switch {
		case len(f.Deltas) > 0:
			want += f.Deltas[0].Size
		case f.Object != nil:
			want += f.Object.Size
		default:
			want += f.Size
		}
	}
	if check.BytesToDownload != want || want > 64<<10 {
		t.Errorf("check says %d bytes to download, want %d (deltas where there are, and far less than the 470 KiB of files)", check.BytesToDownload, want)
	}
	dry, err := e.Update(context.Background(), UpdateOptions{DryRun: true})
	if err != nil {
		t.Fatal(err)
	}
	planned := map[string]SourceKind{}
	for _, c := range dry.Plan.Changes {
		planned[c.File.Name] = c.Sources[0].Kind
	}
	if want := map[string]SourceKind{"bin/sd-agent": SourceDelta, "lib/core.so": SourceDelta, "VERSION": SourceFile,
		"lib/new.so": SourceObject, "lib/libdns-1.1.0.so": SourceDelta}; !reflect.DeepEqual(planned, want) {
		t.Errorf("dry run plans sources %v, want %v", planned, want)
	}
	if _, err := e.Update(context.Background(), UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	installed(t, fsys, v2)
	wantKinds := map[string][]string{"bin/sd-agent": {"delta"}, "lib/core.so": {"delta"}, "VERSION": {"file"}, "lib/new.so": {"object"},
		"lib/libdns-1.1.0.so": {"delta"}}
	if got := s.fetchedKinds(m2); !reflect.DeepEqual(got, wantKinds) {
		t.Errorf("update fetched %v, want %v", got, wantKinds)
	}
	noLeftovers(t, fsys)
}

// Whatever is wrong with a delta or an object, the run goes on with the next source, says so,
// and installs exactly the new version.
func TestFallbackToNextSource(t *testing.T) {
	bomb := func() []byte {
		var b bytes.Buffer
		delta.Encode(&b, bytes.NewReader(make([]byte, 64<<20)), 64<<20, nil)
		return b.Bytes()
	}()
	for _, tc := range []struct {
		name    string
		tamper  func(s *pubSite, f manifest.File, base string)
		fetched []string
	}{
		{"corrupt delta", func(s *pubSite, f manifest.File, base string) {
			s.replace[base+f.Deltas[0].URL] = []byte("not what was signed")
		}, []string{"delta", "object"}},
		{"missing delta and object", func(s *pubSite, f manifest.File, base string) {
			s.replace[base+f.Deltas[0].URL] = nil
			s.replace[base+f.Object.URL] = nil
		}, []string{"delta", "object", "file"}},
		{"zstd bomb for the delta, truncated object", func(s *pubSite, f manifest.File, base string) {
			s.replace[base+f.Deltas[0].URL] = bomb
			obj, _ := afero.ReadFile(s.fs, "/site/"+base+f.Object.URL)
			s.replace[base+f.Object.URL] = obj[:len(obj)/2]
		}, []string{"delta", "object", "file"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newPubSite(t)
			v1, v2 := agentVersions()
			s.release(t, "1.0.0", v1)
			e, fsys, hook := deltaEngine(t, s)
			if _, err := e.Update(context.Background(), UpdateOptions{}); err != nil {
				t.Fatal(err)
			}
			m2 := s.release(t, "1.1.0", v2)
			f, _ := m2.Lookup("bin/sd-agent")
			tc.tamper(s, f, "/"+m2.BaseURL)
			hook.Reset()
			res, err := e.Update(context.Background(), UpdateOptions{})
			if err != nil || res.Outcome != OutcomeUpdated {
				t.Fatalf("update: %+v, %v", res, err)
			}
			installed(t, fsys, v2)
			noLeftovers(t, fsys)
			if got := s.fetchedKinds(m2)["bin/sd-agent"]; !reflect.DeepEqual(got, tc.fetched) {
				t.Errorf("bin/sd-agent: fetched %v, want %v", got, tc.fetched)
			}
			var fallbacks int
			for _, entry := range hook.AllEntries() {
				if entry.Level == logrus.WarnLevel && strings.Contains(entry.Message, "cannot use the") && entry.Data["file"] == "bin/sd-agent" {
					fallbacks++
				}
			}
			if fallbacks != len(tc.fetched)-1 {
				t.Errorf("logged %d fallbacks, want %d", fallbacks, len(tc.fetched)-1)
			}
		})
	}
}

// A file over MaxDeltaFileSize is never delta-decoded, and with deltas off none is.
func TestMaxDeltaFileSize(t *testing.T) {
	s := newPubSite(t)
	v1, v2 := agentVersions()
	s.release(t, "1.0.0", v1)
	e, fsys, _ := deltaEngine(t, s)
	e.Config.MaxDeltaFileSize = 200 << 10 // below bin/sd-agent, above lib/core.so
	if _, err := e.Update(context.Background(), UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	m2 := s.release(t, "1.1.0", v2)
	if _, err := e.Update(context.Background(), UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	installed(t, fsys, v2)
	got := s.fetchedKinds(m2)
	if !reflect.DeepEqual(got["bin/sd-agent"], []string{"object"}) || !reflect.DeepEqual(got["lib/core.so"], []string{"delta"}) {
		t.Errorf("fetched %v: want the object of the large file, the delta of the small one", got)
	}
}

// A delta's base that changed after the plan is refused when read; the next source is used.
func TestChangedBaseFallsBack(t *testing.T) {
	s := newPubSite(t)
	v1, v2 := agentVersions()
	s.release(t, "1.0.0", v1)
	e, fsys, _ := deltaEngine(t, s)
	if _, err := e.Update(context.Background(), UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	m2 := s.release(t, "1.1.0", v2)
	f, _ := m2.Lookup("bin/sd-agent")
	c := &Change{File: f, Mode: 0o644, Sources: sourcesFor(f, localContent{f.Deltas[0].From: {name: "bin/sd-agent", size: int64(len(v1["bin/sd-agent"]))}}, 1<<30)}
	if err := afero.WriteFile(fsys, installDir+"/bin/sd-agent", []byte("changed by someone"), 0o755); err != nil {
		t.Fatal(err)
	}
	l, err := e.resolveLayout()
	if err != nil {
		t.Fatal(err)
	}
	staged := stateDir + "/staged"
	if _, err := e.stageOne(context.Background(), logrus.NewEntry(e.Log), l, staged, s.URL+"/"+m2.BaseURL, c, &stageShared{}); err != nil {
		t.Fatal(err)
	}
	got, _ := afero.ReadFile(fsys, staged)
	if string(got) != v2["bin/sd-agent"] {
		t.Fatal("staged content differs")
	}
	if kinds := s.fetchedKinds(m2)["bin/sd-agent"]; !reflect.DeepEqual(kinds, []string{"object"}) {
		t.Errorf("fetched %v, want the object only (the delta is not fetched once its base is gone)", kinds)
	}
}

func TestCompressedManifest(t *testing.T) {
	v1, v2 := agentVersions()
	warned := func(hook *test.Hook, what string) bool {
		for _, entry := range hook.AllEntries() {
			if entry.Level == logrus.WarnLevel && strings.Contains(entry.Message, what) {
				return true
			}
		}
		return false
	}
	t.Run("used when there", func(t *testing.T) {
		s := newPubSite(t)
		s.release(t, "1.0.0", v1)
		e, fsys, _ := deltaEngine(t, s)
		s.replace["/manifest.json"] = []byte("{not the manifest")
		if _, err := e.Update(context.Background(), UpdateOptions{}); err != nil {
			t.Fatalf("with manifest.json.zst served: %v", err)
		}
		installed(t, fsys, v1)
	})
	t.Run("broken: the plain one, with a warning", func(t *testing.T) {
		s := newPubSite(t)
		s.release(t, "1.0.0", v1)
		e, fsys, hook := deltaEngine(t, s)
		s.replace["/manifest.json.zst"] = []byte("garbage")
		if _, err := e.Update(context.Background(), UpdateOptions{}); err != nil {
			t.Fatalf("with a broken manifest.json.zst: %v", err)
		}
		installed(t, fsys, v1)
		if s.requests["/manifest.json"] != 1 || !warned(hook, "compressed manifest is unusable") {
			t.Errorf("plain manifest fetched %d times, want 1, with a warning", s.requests["/manifest.json"])
		}
	})
	t.Run("stale beside a manifest put back by hand: the plain one", func(t *testing.T) {
		s := newPubSite(t)
		s.release(t, "1.0.0", v1)
		old := map[string][]byte{}
		for _, name := range []string{"/manifest.json", "/manifest.json.minisig"} {
			old[name], _ = afero.ReadFile(s.fs, "/site"+name)
		}
		s.release(t, "1.1.0", v2)
		for name, data := range old {
			s.replace[name] = data // 1.0.0 offered again; manifest.json.zst is 1.1.0's
		}
		e, fsys, hook := deltaEngine(t, s)
		if _, err := e.Update(context.Background(), UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
		installed(t, fsys, v1)
		if !warned(hook, "does not match the signature") {
			t.Error("no warning about the stale compressed manifest")
		}
	})
	t.Run("unsigned: never fetched", func(t *testing.T) {
		s := newPubSite(t)
		s.release(t, "1.0.0", v1)
		e, _, _ := deltaEngine(t, s)
		e.Verifier, e.Config.AllowUnsigned = nil, true
		if _, err := e.Update(context.Background(), UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
		if s.requests["/manifest.json.zst"] != 0 {
			t.Error("manifest.json.zst fetched without a key to tell a stale copy")
		}
	})
}

// A release that ships one program under two names (perl and perl5.36.0) costs its bytes once:
// the second is staged as a copy of the first, in a fresh install and in an update alike, and
// the plan counts it as nothing to fetch.
func TestSameContentFetchedOnce(t *testing.T) {
	s := newPubSite(t)
	v1, v2 := agentVersions()
	for _, v := range []map[string]string{v1, v2} {
		v["bin/sd-agent-1.0"] = v["bin/sd-agent"]
	}
	m1 := s.release(t, "1.0.0", v1)
	e, fsys, _ := deltaEngine(t, s)
	if _, err := e.Update(context.Background(), UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	installed(t, fsys, v1)
	// Both entries name the same object (named by its content): it must be requested once,
	// and the second file itself never.
	fetchedOnce := func(m *manifest.Manifest, url string) {
		t.Helper()
		s.mu.Lock()
		defer s.mu.Unlock()
		if n, direct := s.requests["/"+m.BaseURL+url], s.requests["/"+m.BaseURL+"bin/sd-agent-1.0"]; n != 1 || direct != 0 {
			t.Errorf("%s requested %d times, bin/sd-agent-1.0 %d times; want once and never", url, n, direct)
		}
	}
	f1, _ := m1.Lookup("bin/sd-agent-1.0")
	fetchedOnce(m1, f1.Object.URL)

	m2 := s.release(t, "1.1.0", v2)
	dry, err := e.Update(context.Background(), UpdateOptions{DryRun: true})
	if err != nil {
		t.Fatal(err)
	}
	var want int64
	for _, c := range dry.Plan.Changes {
		if c.File.Name == "bin/sd-agent-1.0" {
			if c.CopyOf != "bin/sd-agent" || c.Cost() != 0 {
				t.Errorf("plan of %s: copy of %q, cost %d; want a copy of bin/sd-agent costing nothing", c.File.Name, c.CopyOf, c.Cost())
			}
			continue
		}
		want += c.Sources[0].Want.Size
	}
	if got, _ := dry.Plan.DownloadBytes(); got != want {
		t.Errorf("plan downloads %d bytes, want %d (the shared content once)", got, want)
	}
	if _, err := e.Update(context.Background(), UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	installed(t, fsys, v2)
	f2, _ := m2.Lookup("bin/sd-agent-1.0")
	fetchedOnce(m2, f2.Deltas[0].URL)
	noLeftovers(t, fsys)
}
