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
