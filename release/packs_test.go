package release

import (
	"bytes"
	crand "crypto/rand"
	"fmt"
	"io"
	"path/filepath"
	"testing"

	"github.com/spf13/afero"

	"github.com/sdupdate/sdupdate/delta"
	"github.com/sdupdate/sdupdate/manifest"
)

// moduleLike is a small source file of a family: a header the family shares and a body of
// its own, as the modules of one library are.
func moduleLike(family uint64, i int) string {
	return codeLike(family, 3<<10) + fmt.Sprintf("\n# module %d\n", i) + codeLike(1000+uint64(i), 700)
}

// packedContents decodes pack pk as an updater does and returns each member's bytes by name.
func packedContents(t *testing.T, fsys afero.Fs, site string, m *manifest.Manifest, pk manifest.Pack) map[string]string {
	t.Helper()
	if pk.URL != SourcesDir+"/"+pk.SHA256+".zst" {
		t.Errorf("pack URL %q is not named by its sha256 %s", pk.URL, pk.SHA256)
	}
	raw, err := afero.ReadFile(fsys, filepath.Join(site, m.BaseURL, pk.URL))
	if err != nil {
		t.Fatal(err)
	}
	members := make([]delta.Member, len(pk.Files))
	for i, name := range pk.Files {
		f, _ := m.Lookup(name)
		members[i] = delta.Member{Name: name, Want: delta.Want{SHA256: f.SHA256, Size: f.Size}}
	}
	sink := &collect{bufs: make([]bytes.Buffer, len(members))}
	dec, err := delta.NewDecoder()
	if err != nil {
		t.Fatal(err)
	}
	defer dec.Close()
	if err := dec.DecodePack(bytes.NewReader(raw), delta.Want{SHA256: pk.SHA256, Size: pk.Size}, members, sink); err != nil {
		t.Fatalf("pack %s does not decode: %v", pk.URL, err)
	}
	out := map[string]string{}
	for i, name := range pk.Files {
		out[name] = sink.bufs[i].String()
	}
	return out
}

type collect struct{ bufs []bytes.Buffer }

func (c *collect) Open(i int) (io.Writer, error) { return &c.bufs[i], nil }
func (c *collect) Verified(int) error            { return nil }

// costAlone is what a file costs without packs: its object, or itself.
func costAlone(f manifest.File) int64 {
	if f.Object != nil {
		return f.Object.Size
	}
	return f.Size
}

// Small files that are alike go in one pack, which decodes to exactly their bytes; a content
// appears once, and what a pack cannot help (empty, incompressible, large files) stays out.
func TestReleasePacksSmallFiles(t *testing.T) {
	noise := make([]byte, 64<<10)
	crand.Read(noise)
	tree := map[string]srcFile{
		"lib/py/copy.py":    {moduleLike(1, 0), 0o644}, // the same as mod00.py
		"lib/py/random.bin": {string(noise), 0o644},
		"lib/big.so":        {codeLike(2, packThreshold), 0o755},
		"empty":             {"", 0o644},
		"VERSION":           {"1.0.0\n", 0o644},
	}
	for i := range 20 {
		tree[fmt.Sprintf("lib/py/mod%02d.py", i)] = srcFile{moduleLike(1, i), 0o644}
	}
	fsys := afero.NewMemMapFs()
	m := release(t, fsys, "1.0.0", tree, 0)
	if len(m.Packs) != 1 {
		t.Fatalf("%d packs, want 1 of the small modules", len(m.Packs))
	}
	pk := m.Packs[0]
	got := packedContents(t, fsys, "/site", m, pk)
	var alone int64
	for name, content := range got {
		if content != tree[name].content {
			t.Errorf("%s: the pack holds other bytes than the file", name)
		}
		f, _ := m.Lookup(name)
		alone += costAlone(f)
	}
	if len(got) != len(pk.Files) {
		t.Errorf("pack lists a name twice: %q", pk.Files)
	}
	for _, name := range []string{"lib/py/random.bin", "lib/big.so", "empty", "lib/py/mod00.py"} {
		if _, ok := got[name]; ok {
			t.Errorf("%s is in the pack; want it left out", name)
		}
	}
	for _, name := range []string{"lib/py/copy.py", "lib/py/mod01.py", "lib/py/mod19.py", "VERSION"} {
		if _, ok := got[name]; !ok {
			t.Errorf("%s is not in the pack %q", name, pk.Files)
		}
	}
	if pk.Size*100 > alone*packKeepPercent {
		t.Errorf("pack of %d bytes listed for members costing %d alone: want at most %d %%", pk.Size, alone, packKeepPercent)
	}
}

// Files with nothing in common compress no better together: no pack is listed, and none is
// left on the site.
func TestReleaseListsOnlyPacksThatSave(t *testing.T) {
	tree := map[string]srcFile{}
	for i := range 10 {
		tree[fmt.Sprintf("f%d", i)] = srcFile{codeLike(uint64(i), 8<<10), 0o644}
	}
	fsys := afero.NewMemMapFs()
	m := release(t, fsys, "1.0.0", tree, 0)
	if len(m.Packs) != 0 {
		t.Fatalf("listed %d packs of unrelated files", len(m.Packs))
	}
	infos, _ := afero.ReadDir(fsys, "/site/1.0.0/"+SourcesDir)
	if len(infos) != len(tree) {
		t.Errorf("%s holds %d files, want the %d objects only", SourcesDir, len(infos), len(tree))
	}
}

// Groups keep the manifest's limits: at least two files, at most MaxPackSize raw bytes, each
// name once, and no file of packThreshold or more, nor one that did not compress.
func TestPackGroupsKeepTheLimits(t *testing.T) {
	obj := &manifest.Source{Size: 1}
	files := []manifest.File{{Name: "a-tiny", SHA256: fmt.Sprintf("%064x", 1002), Size: 10}}
	for i := range 200 {
		files = append(files, manifest.File{Name: fmt.Sprintf("m%03d", i), SHA256: fmt.Sprintf("%064x", i), Size: packThreshold / 2, Object: obj})
	}
	files = append(files,
		manifest.File{Name: "n0-big", SHA256: fmt.Sprintf("%064x", 1000), Size: packThreshold, Object: obj},
		manifest.File{Name: "n1-incompressible", SHA256: fmt.Sprintf("%064x", 1001), Size: tinyFile},
		manifest.File{Name: "n3-same", SHA256: fmt.Sprintf("%064x", 0), Size: packThreshold / 2, Object: obj},
	)
	seen := map[string]bool{}
	for _, g := range packGroups(files) {
		var raw int64
		for _, i := range g {
			if seen[files[i].Name] {
				t.Errorf("%s in two packs", files[i].Name)
			}
			seen[files[i].Name] = true
			raw += files[i].Size
		}
		if len(g) < manifest.MinPackFiles || raw > manifest.MaxPackSize || raw > packTarget {
			t.Errorf("group of %d files, %d bytes: want at least %d and at most %d bytes", len(g), raw, manifest.MinPackFiles, packTarget)
		}
	}
	for _, name := range []string{"n0-big", "n1-incompressible", "n3-same"} {
		if seen[name] {
			t.Errorf("%s is in a pack", name)
		}
	}
	if !seen["a-tiny"] || !seen["m000"] || !seen["m199"] {
		t.Error("a small file is in no pack")
	}
}
