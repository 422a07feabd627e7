package manifest

import (
	"fmt"
	"strings"
	"testing"
)

// bigManifest is a manifest of n entries, written compactly.
func bigManifest(n int) []byte {
	var b strings.Builder
	b.WriteString(`{"version":"1.0.0","base_url":"1.0.0/","files":[`)
	for i := 0; i < n; i++ {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, `{"name":"%02x/%05d","sha256":"%064x","size":%d}`, i%256, i, i, i%4096)
	}
	b.WriteString("]}")
	return []byte(b.String())
}

// BenchmarkParse150k: parsing and validating a 150,000-entry manifest, the most a 16 MiB
// manifest holds in practice.
func BenchmarkParse150k(b *testing.B) {
	data := bigManifest(150000)
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Parse(data); err != nil {
			b.Fatal(err)
		}
	}
}

// releaseManifest is a manifest of n entries in the form `sdupdate release` publishes and
// installed.json records (Marshal: indented, every mode spelt out), names three levels deep.
func releaseManifest(b *testing.B, n int) []byte {
	m := &Manifest{Version: "1.0.1", BaseURL: "1.0.1/", Files: make([]File, n)}
	for i := range m.Files {
		m.Files[i] = File{Name: fmt.Sprintf("dir%02d/sub%d/file%05d.dat", i%50, i%7, i), SHA256: fmt.Sprintf("%064x", i*7919),
			Size: int64(100 + i%4000), Mode: 0o644, HasMode: true}
	}
	data, err := m.Marshal()
	if err != nil {
		b.Fatal(err)
	}
	return data
}

// BenchmarkParse5000: the manifest an "already up to date" run of a 5,000-file install fetches
// and verifies (the bench's case), about 0.9 MB.
func BenchmarkParse5000(b *testing.B) {
	data := releaseManifest(b, 5000)
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Parse(data); err != nil {
			b.Fatal(err)
		}
	}
}
