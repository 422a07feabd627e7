package updater

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/klauspost/compress/zstd"
	"github.com/sirupsen/logrus"
	"github.com/sirupsen/logrus/hooks/test"
	"github.com/spf13/afero"

	"github.com/sdupdate/sdupdate/delta"
	"github.com/sdupdate/sdupdate/internal/need"
	"github.com/sdupdate/sdupdate/manifest"
)

// Manifests in the published form, for the plan tests: sizes of sources are given, not made.
type (
	wireSrc struct {
		From   string `json:"from_sha256,omitempty"`
		URL    string `json:"url"`
		SHA256 string `json:"sha256"`
		Size   int64  `json:"size"`
	}
	wireEntry struct {
		Name   string    `json:"name"`
		SHA256 string    `json:"sha256"`
		Size   int       `json:"size"`
		Object *wireSrc  `json:"object,omitempty"`
		Deltas []wireSrc `json:"deltas,omitempty"`
	}
	wirePack struct {
		wireSrc
		Files []string `json:"files"`
	}
	wireManifest struct {
		Version string      `json:"version"`
		BaseURL string      `json:"base_url"`
		Files   []wireEntry `json:"files"`
		Packs   []wirePack  `json:"packs,omitempty"`
	}
)

func parseWire(t *testing.T, m wireManifest) *manifest.Manifest {
	t.Helper()
	raw, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	parsed, err := manifest.Parse(raw)
	if err != nil {
		t.Fatalf("%v\n%s", err, raw)
	}
	return parsed
}

// text is n bytes of something like source code: words of one vocabulary, which the files of
// a release share, so they compress far better together than each alone.
func text(seed uint64, n int) string {
	vocab := rand.New(rand.NewPCG(42, 42))
	words := make([]string, 400)
	for i := range words {
		w := make([]byte, 3+vocab.IntN(8))
		for j := range w {
			w[j] = byte('a' + vocab.IntN(26))
		}
		words[i] = string(w)
	}
	r := rand.New(rand.NewPCG(seed, 9))
	var b strings.Builder
	for b.Len() < n {
		b.WriteString(words[r.IntN(len(words))])
		b.WriteString([]string{" ", " ", "(", ")\n", ".", " = "}[r.IntN(6)])
	}
	return b.String()[:n]
}

// planOf plans next on fsys (nothing fetched): what `update --dry-run` and `check` count.
func planOf(t *testing.T, fsys afero.Fs, next *manifest.Manifest) *Plan {
	t.Helper()
	cfg := testConfig(newSite(t))
	cfg.MaxDeltaFileSize = 1 << 20
	e := newEngine(fsys, cfg, nil)
	l, err := e.resolveLayout()
	if err != nil {
		t.Fatal(err)
	}
	p, err := e.plan(context.Background(), l, next, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func firstSources(p *Plan) map[string]SourceKind {
	out := map[string]SourceKind{}
	for _, c := range p.Changes {
		if c.CopyOf != "" {
			out[c.File.Name] = "copy"
		} else {
			out[c.File.Name] = c.Sources[0].Kind
		}
	}
	return out
}

// A pack is the first source of the members a run needs when it costs less than they would
// alone, each from its cheapest source; its bytes are counted once.
func TestPackChosenWhenCheaper(t *testing.T) {
	content := map[string]string{"a": text(1, 10000), "b": text(2, 10000), "c": text(3, 10000), "d": text(4, 10000)}
	content["twin"] = content["a"]
	old := map[string]string{"c": text(13, 10000), "d": text(14, 10000)}
	entry := func(name string, withDelta bool) wireEntry {
		e := wireEntry{Name: name, SHA256: sha(content[name]), Size: len(content[name]),
			Object: &wireSrc{URL: ".sdupdate/" + name + ".zst", SHA256: sha("obj " + name), Size: 4000}}
		if withDelta {
			e.Deltas = []wireSrc{{From: sha(old[name]), URL: ".sdupdate/" + name + ".d", SHA256: sha("delta " + name), Size: 500}}
		}
		return e
	}
	release := func(packSize int64, files []string, deltas bool) *manifest.Manifest {
		m := wireManifest{Version: "2.0.0", BaseURL: "2.0.0/", Packs: []wirePack{{
			wireSrc: wireSrc{URL: ".sdupdate/pack.zst", SHA256: sha("pack"), Size: packSize}, Files: files}}}
		for _, n := range []string{"a", "b", "c", "d", "twin"} {
			m.Files = append(m.Files, entry(n, deltas && old[n] != ""))
		}
		return parseWire(t, m)
	}
	install := func(files map[string]string) afero.Fs {
		fsys := afero.NewMemMapFs()
		for n, data := range files {
			if err := afero.WriteFile(fsys, filepath.Join(installDir, n), []byte(data), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		return fsys
	}
	abcd := []string{"a", "b", "c", "d"}
	for _, tc := range []struct {
		name      string
		installed map[string]string
		packSize  int64
		files     []string
		deltas    bool
		want      map[string]SourceKind
		bytes     int64
	}{
		{"fresh install: the pack", nil, 9000, abcd, false,
			map[string]SourceKind{"a": SourcePack, "b": SourcePack, "c": SourcePack, "d": SourcePack, "twin": "copy"}, 9000},
		{"three members installed: the fourth's object", map[string]string{"a": content["a"], "b": content["b"], "c": content["c"], "twin": content["a"]}, 9000, abcd, false,
			map[string]SourceKind{"d": SourceObject}, 4000},
		{"two installed, pack dearer than the other two's objects", map[string]string{"a": content["a"], "b": content["b"], "twin": content["a"]}, 8000, abcd, false,
			map[string]SourceKind{"c": SourceObject, "d": SourceObject}, 8000},
		{"two installed, pack cheaper than the other two's objects", map[string]string{"a": content["a"], "b": content["b"], "twin": content["a"]}, 7999, abcd, false,
			map[string]SourceKind{"c": SourcePack, "d": SourcePack}, 7999},
		{"deltas cheaper than the pack", map[string]string{"a": content["a"], "b": content["b"], "c": old["c"], "d": old["d"], "twin": content["a"]}, 1001, abcd, true,
			map[string]SourceKind{"c": SourceDelta, "d": SourceDelta}, 1000},
		{"deltas dearer than the pack", map[string]string{"a": content["a"], "b": content["b"], "c": old["c"], "d": old["d"], "twin": content["a"]}, 999, abcd, true,
			map[string]SourceKind{"c": SourcePack, "d": SourcePack}, 999},
		// twin is a copy of a: it costs nothing alone, so it does not make the pack pay.
		{"a copy is not a member's cost", nil, 12001, []string{"a", "twin", "c", "d"}, false,
			map[string]SourceKind{"a": SourceObject, "b": SourceObject, "c": SourceObject, "d": SourceObject, "twin": "copy"}, 16000},
		{"a copy in the pack, which pays for the others", nil, 11999, []string{"a", "twin", "c", "d"}, false,
			map[string]SourceKind{"a": SourcePack, "b": SourceObject, "c": SourcePack, "d": SourcePack, "twin": "copy"}, 15999},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := planOf(t, install(tc.installed), release(tc.packSize, tc.files, tc.deltas))
			if got := firstSources(p); fmt.Sprint(got) != fmt.Sprint(tc.want) {
				t.Errorf("first sources %v, want %v", got, tc.want)
			}
			if got, _ := p.DownloadBytes(); got != tc.bytes {
				t.Errorf("plan downloads %d bytes, want %d", got, tc.bytes)
			}
			for _, c := range p.Changes {
				if c.inPack() == nil {
					continue
				}
				if kinds := fmt.Sprint(sourceKinds(c.Sources)); !strings.HasPrefix(kinds, "[pack ") || !strings.HasSuffix(kinds, " file]") {
					t.Errorf("%s: sources %s, want the pack, then its own", c.File.Name, kinds)
				}
				if c.Cost() != 0 {
					t.Errorf("%s costs %d on its own, beside its pack", c.File.Name, c.Cost())
				}
			}
		})
	}
}

func sourceKinds(list []Source) []SourceKind {
	var out []SourceKind
	for _, s := range list {
		out = append(out, s.Kind)
	}
	return out
}

// packRelease publishes version on s: every file with its zstd object, the files of each pack
// as the pack that made gives for their contents one after another (delta.Encode when nil). It
// returns the parsed manifest.
func packRelease(t *testing.T, s *site, version string, files map[string]string, packs [][]string, made func([]byte) []byte) *manifest.Manifest {
	t.Helper()
	if made == nil {
		made = func(b []byte) []byte { return zstdOf(t, b) }
	}
	m := wireManifest{Version: version, BaseURL: version + "/"}
	names := make([]string, 0, len(files))
	for n := range files {
		names = append(names, n)
	}
	sort.Strings(names)
	s.mu.Lock()
	defer s.mu.Unlock()
	put := func(url string, data []byte) wireSrc {
		s.content["/"+version+"/"+url] = data
		return wireSrc{URL: url, SHA256: sha(string(data)), Size: int64(len(data))}
	}
	for _, n := range names {
		data := files[n]
		put(n, []byte(data))
		e := wireEntry{Name: n, SHA256: sha(data), Size: len(data)}
		if obj := zstdOf(t, []byte(data)); len(obj) < len(data) {
			o := put(".sdupdate/"+sha(data)+".zst", obj)
			e.Object = &o
		}
		m.Files = append(m.Files, e)
	}
	for _, members := range packs {
		var whole []byte
		for _, n := range members {
			whole = append(whole, files[n]...)
		}
		data := made(whole)
		m.Packs = append(m.Packs, wirePack{wireSrc: put(".sdupdate/pack-"+sha(string(data))+".zst", data), Files: members})
	}
	raw, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	s.content["/manifest.json"] = raw
	parsed, err := manifest.Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	return parsed
}

func zstdOf(t *testing.T, b []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	if err := delta.Encode(&buf, bytes.NewReader(b), int64(len(b)), nil); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// smallFiles is a release of many small text files, which pack well, and a larger one.
func smallFiles() (map[string]string, []string) {
	files := map[string]string{"bin/sd-agent": text(100, 300<<10)}
	var members []string
	for i := 0; i < 6; i++ {
		n := fmt.Sprintf("lib/m%d.py", i)
		files[n] = fmt.Sprintf("# module %d\n", i) + text(uint64(i), 3000+1000*i)
		members = append(members, n)
	}
	return files, members
}

// ownSourcesFetched names the members whose object or file was requested.
func ownSourcesFetched(s *site, m *manifest.Manifest, members []string) []string {
	reqs := s.fileRequests()
	var out []string
	for _, n := range members {
		f, _ := m.Lookup(n)
		if reqs["/"+m.BaseURL+n] > 0 || f.Object != nil && reqs["/"+m.BaseURL+f.Object.URL] > 0 {
			out = append(out, n)
		}
	}
	return out
}

func packWarnings(hook *test.Hook) []*logrus.Entry {
	var out []*logrus.Entry
	for _, e := range hook.AllEntries() {
		if e.Level == logrus.WarnLevel && strings.Contains(e.Message, "cannot use pack") {
			out = append(out, e)
		}
	}
	return out
}

// A fresh install fetches the pack once, and none of its members' own sources; a file with
// the content of a member is copied from it.
func TestPackInstalls(t *testing.T) {
	s := newSite(t)
	files, members := smallFiles()
	files["lib/twin.py"] = files["lib/m0.py"] // staged as a copy of the pack's m0
	m := packRelease(t, s, "1.0.0", files, [][]string{members}, nil)
	fsys := afero.NewMemMapFs()
	e := newEngine(fsys, testConfig(s), nil)
	hook := test.NewLocal(e.Log)
	res, err := e.Update(context.Background(), UpdateOptions{})
	if err != nil || res.Outcome != OutcomeUpdated {
		t.Fatalf("update: %+v, %v", res, err)
	}
	installed(t, fsys, files)
	if n := s.fileRequests()["/1.0.0/"+m.Packs[0].URL]; n != 1 {
		t.Errorf("pack requested %d times, want once", n)
	}
	if got := ownSourcesFetched(s, m, append(members, "lib/twin.py")); len(got) != 0 {
		t.Errorf("own sources of %v fetched beside the pack", got)
	}
	if w := packWarnings(hook); len(w) != 0 {
		t.Errorf("warnings: %v", w[0].Message)
	}
	noLeftovers(t, fsys)
}

// The free space a pack's files need is checked before anything is fetched, the pack
// included.
func TestPackCountedInTheFreeSpaceCheck(t *testing.T) {
	s := newSite(t)
	files, members := smallFiles()
	packRelease(t, s, "1.0.0", files, [][]string{members}, nil)
	fsys := afero.NewMemMapFs()
	e := newEngine(fsys, testConfig(s), nil)
	var total int64
	for _, data := range files {
		total += int64(len(data))
	}
	e.FreeSpace = func(string) (uint64, error) { return uint64(total+spaceMargin) - 1, nil }
	_, err := e.Update(context.Background(), UpdateOptions{})
	if err == nil || !strings.Contains(err.Error(), "not enough free space") {
		t.Fatalf("one byte short of the files and the margin: got %v", err)
	}
	if reqs := s.fileRequests(); len(reqs) != 0 {
		t.Errorf("fetched before the refusal: %v", reqs)
	}
	e.FreeSpace = func(string) (uint64, error) { return uint64(total + spaceMargin), nil }
	if _, err := e.Update(context.Background(), UpdateOptions{}); err != nil {
		t.Fatalf("with room for the files and the margin: %v", err)
	}
	installed(t, fsys, files)
}

// claimingWindow is content compressed in one frame whose header claims a window of 2^log
// bytes.
func claimingWindow(t *testing.T, content []byte, log byte) []byte {
	var buf bytes.Buffer
	enc, err := zstd.NewWriter(&buf, zstd.WithWindowSize(1<<20), zstd.WithEncoderLevel(zstd.SpeedBestCompression), zstd.WithSingleSegment(false))
	if err != nil {
		t.Fatal(err)
	}
	enc.Write(content) // not a single segment: no content size, so the header has a window descriptor
	enc.Close()
	frame := buf.Bytes()
	if fhd := frame[4]; fhd&0x20 != 0 || fhd&0x03 != 0 { // the window descriptor is then frame[5]
		t.Fatalf("frame header descriptor %#x: single segment or dictionary", fhd)
	}
	frame[5] = (log - 10) << 3
	return frame
}

// bombOf is a pack of a few KiB that decodes to prefix and then 16 MiB of zeros.
func bombOf(t *testing.T, prefix []byte) []byte {
	var buf bytes.Buffer
	enc, err := zstd.NewWriter(&buf, zstd.WithWindowSize(1<<20), zstd.WithEncoderLevel(zstd.SpeedBestCompression))
	if err != nil {
		t.Fatal(err)
	}
	enc.Write(prefix)
	for i := 0; i < 16; i++ {
		enc.Write(make([]byte, 1<<20))
	}
	enc.Close()
	return buf.Bytes()
}

// Whatever is wrong with a pack, the members it did not stage come from their own sources in
// the same run, one warning names the pack and how many, and the install is exactly the new
// version. Members verified before the failure stay.
func TestPackFallsBack(t *testing.T) {
	files, members := smallFiles()
	at := func(k int) int { // where member k starts in the decoded stream
		n := 0
		for _, m := range members[:k] {
			n += len(files[m])
		}
		return n
	}
	for _, tc := range []struct {
		name   string
		made   func([]byte) []byte
		tamper func(s *site, path string)
		own    int    // how many members come from their own sources; -1: some, not all
		says   string // in the warning
	}{
		{"bytes other than signed", nil, func(s *site, path string) { s.corrupt[path] = 100 }, 6, "sha256"},
		{"truncated", func(b []byte) []byte {
			// Three frames, two members each: the first survive the cut.
			return append(append(zstdOf(t, b[:at(2)]), zstdOf(t, b[at(2):at(4)])...), zstdOf(t, b[at(4):])...)
		}, func(s *site, path string) { s.content[path] = s.content[path][:len(s.content[path])/2] }, -1, "manifest says"},
		{"a member altered, the pack signed as it is", func(b []byte) []byte {
			b = bytes.Clone(b)
			b[at(2)+10] ^= 1
			return zstdOf(t, b)
		}, nil, 4, "lib/m2.py decodes from the pack to sha256"},
		{"a frame claiming a 2 GiB window", func(b []byte) []byte { return claimingWindow(t, b, 31) }, nil, 6, "window"},
		{"a zstd bomb", func([]byte) []byte { return bombOf(t, nil) }, nil, 6, "lib/m0.py decodes from the pack"},
		{"a zstd bomb after its members", func(b []byte) []byte { return append(zstdOf(t, b), bombOf(t, nil)...) }, nil, 0, "more than"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newSite(t)
			m := packRelease(t, s, "1.0.0", files, [][]string{members}, tc.made)
			path := "/1.0.0/" + m.Packs[0].URL
			if tc.tamper != nil {
				tc.tamper(s, path)
			}
			fsys := afero.NewMemMapFs()
			e := newEngine(fsys, testConfig(s), nil)
			hook := test.NewLocal(e.Log)
			res, err := e.Update(context.Background(), UpdateOptions{})
			if err != nil || res.Outcome != OutcomeUpdated {
				t.Fatalf("update: %+v, %v", res, err)
			}
			equalTrees(t, tree(t, fsys, installDir), want(agentFilesOf(files), nil))
			noLeftovers(t, fsys)
			own := ownSourcesFetched(s, m, members)
			if tc.own >= 0 && len(own) != tc.own || tc.own < 0 && (len(own) == 0 || len(own) == len(members)) {
				t.Errorf("own sources fetched for %v, want %d members", own, tc.own)
			}
			// The members after the first that fell back all fell back: the pack stopped there.
			if len(own) > 0 && !equalStrings(own, members[len(members)-len(own):]) {
				t.Errorf("own sources fetched for %v: not the members from the failure on", own)
			}
			w := packWarnings(hook)
			if len(w) != 1 {
				t.Fatalf("%d warnings about the pack, want one", len(w))
			}
			if !strings.Contains(w[0].Message, m.Packs[0].URL) || !strings.Contains(w[0].Message, tc.says) ||
				!strings.Contains(w[0].Message, fmt.Sprintf("%d of the 6 files", len(own))) || w[0].Data["files"] != len(own) {
				t.Errorf("warning %q (%v), want the pack's URL, %q and %d files", w[0].Message, w[0].Data, tc.says, len(own))
			}
			if n := s.fileRequests()[path]; n != 1 {
				t.Errorf("pack requested %d times: an unusable pack is not fetched again", n)
			}
		})
	}
}

func agentFilesOf(files map[string]string) map[string]agentFile {
	out := map[string]agentFile{}
	for n, d := range files {
		out[n] = agentFile{data: d}
	}
	return out
}

func equalStrings(a, b []string) bool { return strings.Join(a, "\x00") == strings.Join(b, "\x00") }

// A pack the server cannot send at first is fetched again, like any source, and then gives
// every member.
func TestPackFetchedAgainAfterServerError(t *testing.T) {
	s := newSite(t)
	files, members := smallFiles()
	m := packRelease(t, s, "1.0.0", files, [][]string{members}, nil)
	path := "/1.0.0/" + m.Packs[0].URL
	s.fail[path] = 1
	fsys := afero.NewMemMapFs()
	e := newEngine(fsys, testConfig(s), nil)
	hook := test.NewLocal(e.Log)
	if _, err := e.Update(context.Background(), UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	installed(t, fsys, files)
	if n := s.fileRequests()[path]; n != 2 {
		t.Errorf("pack requested %d times, want twice (Retries=2)", n)
	}
	if got := ownSourcesFetched(s, m, members); len(got) != 0 || len(packWarnings(hook)) != 0 {
		t.Errorf("own sources of %v fetched, %d pack warnings: the second try should have given all", got, len(packWarnings(hook)))
	}
}

// The real filesystem, a real HTTP server, and a pack made by the reference zstd from the
// files themselves (`cat a b c | zstd -19`): it installs, `check` counts its bytes once, and
// those are the bytes the server sends: the pack instead of the members' objects.
func TestPackFromZstdCLIInstallsOnDisk(t *testing.T) {
	cli := need.Program(t, "zstd", "zstd")
	files, members := smallFiles()
	cat := func(whole []byte) []byte {
		dir := t.TempDir()
		args := []string{"-c", `cat "$@" | "$0" -19 -q`, cli}
		for i, n := range members {
			p := filepath.Join(dir, fmt.Sprint(i))
			if err := os.WriteFile(p, []byte(files[n]), 0o644); err != nil {
				t.Fatal(err)
			}
			args = append(args, p)
		}
		out, err := exec.Command("sh", args...).Output()
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	s := newSite(t)
	m := packRelease(t, s, "1.0.0", files, [][]string{members}, cat)
	root := t.TempDir()
	cfg := testConfig(s)
	cfg.Directory, cfg.StateDirectory = filepath.Join(root, "opt"), filepath.Join(root, "state")
	e := newEngine(afero.NewOsFs(), cfg, nil)
	check, err := e.Check(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	bin, _ := m.Lookup("bin/sd-agent")
	var objects int64
	for _, n := range members {
		f, _ := m.Lookup(n)
		objects += f.Object.Size
	}
	if want := m.Packs[0].Size + bin.Object.Size; check.BytesToDownload != want || m.Packs[0].Size >= objects {
		t.Fatalf("check says %d bytes to download, want %d (the pack, %d bytes, once, for objects of %d)", check.BytesToDownload, want, m.Packs[0].Size, objects)
	}
	s.resetRequests()
	if _, err := e.Update(context.Background(), UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	for n, data := range files {
		got, err := os.ReadFile(filepath.Join(cfg.Directory, n))
		if err != nil || string(got) != data {
			t.Errorf("%s: installed content differs (%v)", n, err)
		}
	}
	s.mu.Lock()
	var sent int64
	for p, n := range s.served {
		if !strings.HasSuffix(p, "manifest.json") {
			sent += n
		}
	}
	s.mu.Unlock()
	if sent != check.BytesToDownload {
		t.Errorf("the server sent %d bytes of files, check said %d", sent, check.BytesToDownload)
	}
	if got := ownSourcesFetched(s, m, members); len(got) != 0 {
		t.Errorf("own sources of %v fetched beside the pack", got)
	}
}
