package delta

import (
	"bytes"
	"fmt"
	"testing"
)

// BenchmarkDecompressManifest: the compressed manifest of a 5,000-file release (about 0.9 MB
// of JSON, 0.2 MB compressed), which an "already up to date" run fetches and decodes before
// its signature can be checked.
func BenchmarkDecompressManifest(b *testing.B) {
	var doc bytes.Buffer
	doc.WriteString("{\n  \"version\": \"1.0.1\",\n  \"base_url\": \"1.0.1/\",\n  \"files\": [\n")
	for i := 0; i < 5000; i++ {
		fmt.Fprintf(&doc, "    {\n      \"name\": \"dir%02d/sub%d/file%05d.dat\",\n      \"sha256\": \"%064x\",\n      \"size\": %d,\n      \"mode\": \"0644\"\n    },\n",
			i%50, i%7, i, uint64(i)*0x9e3779b97f4a7c15, 100+i%4000)
	}
	doc.WriteString("  ]\n}\n")
	var src bytes.Buffer
	if err := Encode(&src, bytes.NewReader(doc.Bytes()), int64(doc.Len()), nil); err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(doc.Len()))
	b.ReportAllocs()
	for b.Loop() {
		out, err := DecompressBounded(src.Bytes(), 16<<20)
		if err != nil || len(out) != doc.Len() {
			b.Fatalf("decoded %d bytes, %v", len(out), err)
		}
	}
}
