package release

import (
	"bytes"
	crand "crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"strings"
	"testing"

	"github.com/spf13/afero"

	"github.com/sdupdate/sdupdate/delta"
	"github.com/sdupdate/sdupdate/manifest"
)

// codeLike is size bytes that compress somewhat, like a binary, seeded so versions can share it.
func codeLike(seed uint64, size int) string {
	r := rand.New(rand.NewPCG(seed, 7))
	b := make([]byte, size)
	for i := range b {
		b[i] = "abcdefghijklmnopqrstuvwxyz0123456789{}();\n "[r.IntN(43)]
	}
	return string(b)
}

func release(t *testing.T, fsys afero.Fs, version string, tree map[string]srcFile, deltas int) *manifest.Manifest {
	t.Helper()
	from := "/build/" + version
	writeTree(t, fsys, from, tree)
	if _, err := Run(fsys, Options{From: from, Out: "/site", Version: version, Now: fixedNow, Deltas: deltas}); err != nil {
		t.Fatal(err)
	}
	m, _ := readManifest(t, fsys, "/site")
	return m
}

func sumOf(s string) string {
	h := sha256.Sum256([]byte(s))
	return hex.EncodeToString(h[:])
}

// decodeSource reads a published source the way an updater does: by URL below base_url, checked
// against its own size and sha256, decoded against base.
func decodeSource(t *testing.T, fsys afero.Fs, m *manifest.Manifest, f manifest.File, s manifest.Source, base string) string {
	t.Helper()
	return decodeSourceAt(t, fsys, "/site", m, f, s, base)
}

// decodeSourceAt is decodeSource for a site at site.
func decodeSourceAt(t *testing.T, fsys afero.Fs, site string, m *manifest.Manifest, f manifest.File, s manifest.Source, base string) string {
	t.Helper()
	if !strings.HasPrefix(s.URL, SourcesDir+"/") || s.URL != SourcesDir+"/"+s.SHA256+".zst" {
		t.Errorf("%s: source URL %q is not named by its sha256 %s", f.Name, s.URL, s.SHA256)
	}
	raw, err := afero.ReadFile(fsys, filepath.Join(site, m.BaseURL, s.URL))
	if err != nil {
		t.Fatal(err)
	}
	var b []byte
	if base != "" {
		b = []byte(base)
	}
	var out bytes.Buffer
	if _, err := delta.Decode(&out, bytes.NewReader(raw), delta.Want{SHA256: s.SHA256, Size: s.Size}, b,
		delta.Want{SHA256: f.SHA256, Size: f.Size}, delta.Limits{}); err != nil {
		t.Fatalf("%s: %s does not decode: %v", f.Name, s.URL, err)
	}
	return out.String()
}

func TestReleasePublishesObjectsAndDeltas(t *testing.T) {
	fsys := afero.NewMemMapFs()
	lib := codeLike(1, 200<<10)
	moved := codeLike(2, 100<<10)
	random := codeLike(3, 50<<10)
	v1 := map[string]srcFile{
		"lib/core.so":                     {lib, 0o644},
		"old/plugin.so":                   {moved, 0o644},
		"conf.txt":                        {"same in every version\n", 0o644},
		"data.bin":                        {random, 0o644},
		"lib/libdns-9.18.49-1~deb12u1.so": {codeLike(6, 80<<10), 0o644},
	}
	release(t, fsys, "1.0.0", v1, 3)
	v2 := map[string]srcFile{
		"lib/core.so":                     {lib[:1000] + "patched" + lib[1000:], 0o644},
		"new/plugin.so":                   {moved[:5000] + "fix" + moved[5000:], 0o644}, // moved and changed
		"conf.txt":                        v1["conf.txt"],
		"data.bin":                        {codeLike(4, 50<<10), 0o644}, // all new: no delta pays
		"lib/libdns-9.18.49-1~deb12u1.so": v1["lib/libdns-9.18.49-1~deb12u1.so"],
	}
	release(t, fsys, "1.1.0", v2, 3)
	v3 := map[string]srcFile{
		"lib/core.so":   {v2["lib/core.so"].content + "and an addition at the end", 0o644},
		"new/plugin.so": v2["new/plugin.so"],
		"conf.txt":      v1["conf.txt"],
		"data.bin":      v2["data.bin"],
		// renamed with its version, and changed
		"lib/libdns-9.18.49-1~deb12u3.so": {v1["lib/libdns-9.18.49-1~deb12u1.so"].content + "fix", 0o644},
	}
	m := release(t, fsys, "1.2.0", v3, 3)

	from := func(f manifest.File) map[string]manifest.Delta {
		got := map[string]manifest.Delta{}
		for _, d := range f.Deltas {
			got[d.From] = d
		}
		return got
	}
	for _, f := range m.Files {
		if f.Object == nil {
			if f.Size > 1000 {
				t.Errorf("%s: no object", f.Name)
			}
			continue
		}
		if got := decodeSource(t, fsys, m, f, *f.Object, ""); got != v3[f.Name].content {
			t.Errorf("%s: object decodes to other content", f.Name)
		}
		for _, d := range f.Deltas {
			if d.Size*4 > f.Object.Size*3 {
				t.Errorf("%s: delta of %d bytes kept beside an object of %d", f.Name, d.Size, f.Object.Size)
			}
		}
	}
	core, _ := m.Lookup("lib/core.so")
	deltas := from(core)
	for _, old := range []string{v1["lib/core.so"].content, v2["lib/core.so"].content} {
		d, ok := deltas[sumOf(old)]
		if !ok {
			t.Fatalf("lib/core.so: no delta from an earlier content; has %+v", core.Deltas)
		}
		if got := decodeSource(t, fsys, m, core, d.Source, old); got != v3["lib/core.so"].content {
			t.Error("lib/core.so: delta decodes to other content")
		}
	}
	plugin, _ := m.Lookup("new/plugin.so")
	if d, ok := from(plugin)[sumOf(moved)]; !ok {
		t.Errorf("new/plugin.so: no delta from old/plugin.so of 1.0.0 it moved from; has %+v", plugin.Deltas)
	} else if got := decodeSource(t, fsys, m, plugin, d.Source, moved); got != v3["new/plugin.so"].content {
		t.Error("new/plugin.so: delta decodes to other content")
	}
	libdns, _ := m.Lookup("lib/libdns-9.18.49-1~deb12u3.so")
	if d, ok := from(libdns)[sumOf(v1["lib/libdns-9.18.49-1~deb12u1.so"].content)]; !ok || len(libdns.Deltas) != 1 {
		t.Errorf("libdns renamed with its version: want one delta from the old name's content, got %+v", libdns.Deltas)
	} else if got := decodeSource(t, fsys, m, libdns, d.Source, v1["lib/libdns-9.18.49-1~deb12u1.so"].content); got != v3["lib/libdns-9.18.49-1~deb12u3.so"].content {
		t.Error("libdns: delta decodes to other content")
	}
	if len(plugin.Deltas) != 1 {
		t.Errorf("new/plugin.so is the same in 1.1.0: want only the delta from 1.0.0, got %d", len(plugin.Deltas))
	}
	for _, name := range []string{"conf.txt", "data.bin"} {
		f, _ := m.Lookup(name)
		if len(f.Deltas) != 0 {
			t.Errorf("%s: got deltas %+v, want none (unchanged, or too different to pay)", name, f.Deltas)
		}
	}
}

func TestReleaseDeltasFromTheLatestK(t *testing.T) {
	fsys := afero.NewMemMapFs()
	base := codeLike(5, 64<<10)
	for i := 0; i < 4; i++ {
		release(t, fsys, fmt.Sprintf("1.%d.0", i), map[string]srcFile{"a": {base + strings.Repeat("v", i+1), 0o644}}, 0)
	}
	m := release(t, fsys, "1.4.0", map[string]srcFile{"a": {base + "new", 0o644}}, 2)
	f := m.Files[0]
	want := map[string]bool{sumOf(base + "vvvv"): true, sumOf(base + "vvv"): true}
	if len(f.Deltas) != 2 || !want[f.Deltas[0].From] || !want[f.Deltas[1].From] {
		t.Fatalf("want deltas from 1.3.0 and 1.2.0 only, got %+v", f.Deltas)
	}
	m = release(t, fsys, "1.5.0", map[string]srcFile{"a": {base + "newer", 0o644}}, 0)
	if len(m.Files[0].Deltas) != 0 || m.Files[0].Object == nil {
		t.Fatalf("--deltas 0: want an object and no deltas, got %+v", m.Files[0])
	}
}

// An object no smaller than its file is not listed: the file itself is cheaper. Content that
// does not compress (already compressed, say) is not even tried whole.
func TestReleaseSkipsUselessObject(t *testing.T) {
	fsys := afero.NewMemMapFs()
	noise := make([]byte, 3<<20)
	crand.Read(noise)
	m := release(t, fsys, "1.0.0", map[string]srcFile{"tiny": {"x", 0o644}, "archive.gz": {string(noise), 0o644}}, 3)
	for _, f := range m.Files {
		if f.Object != nil {
			t.Errorf("%s got object %+v", f.Name, f.Object)
		}
	}
	infos, _ := afero.ReadDir(fsys, "/site/1.0.0/"+SourcesDir)
	if len(infos) != 0 {
		t.Fatalf("%s holds %d files, want none", SourcesDir, len(infos))
	}
}

func TestReleaseCompressedManifest(t *testing.T) {
	fsys := afero.NewMemMapFs()
	release(t, fsys, "1.0.0", agentTree, 3)
	_, data := readManifest(t, fsys, "/site")
	zst, err := afero.ReadFile(fsys, "/site/"+ManifestName+".zst")
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	sum := sha256.Sum256(zst)
	if _, err := delta.Decode(&out, bytes.NewReader(zst), delta.Want{SHA256: hex.EncodeToString(sum[:]), Size: int64(len(zst))}, nil,
		delta.Want{SHA256: sumOf(string(data)), Size: int64(len(data))}, delta.Limits{}); err != nil {
		t.Fatalf("manifest.json.zst does not decode to manifest.json: %v", err)
	}
}
