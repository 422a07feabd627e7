package securitytest

import (
	"bytes"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sdupdate/sdupdate/delta"
)

func zstdOf(t *testing.T, data []byte) string {
	t.Helper()
	var buf bytes.Buffer
	if err := delta.Encode(&buf, bytes.NewReader(data), int64(len(data)), nil); err != nil {
		t.Fatal(err)
	}
	return buf.String()
}

// The compressed manifest is fetched before anything vouches for it: a bomb, a copy of other
// bytes or garbage costs the plain fetch, never the update, and whatever is installed is what
// the signature covers.
func TestHostileCompressedManifest(t *testing.T) {
	for _, tc := range []struct {
		name  string
		zst   func(t *testing.T, e *env) string
		warns string
	}{
		{"a zstd bomb (1 GiB of zeros)", func(t *testing.T, e *env) string {
			var buf bytes.Buffer
			zeros := bytes.NewReader(make([]byte, 1<<30))
			if err := delta.Encode(&buf, zeros, 1<<30, nil); err != nil {
				t.Fatal(err)
			}
			return buf.String()
		}, "unusable"},
		{"the 1.0.0 manifest, compressed (a replay)", func(t *testing.T, e *env) string {
			return zstdOf(t, e.manifest100)
		}, "does not match the signature"},
		{"garbage", func(t *testing.T, e *env) string { return "<html>not found</html>" }, "unusable"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t)
			e.baseline()
			writeFile(t, filepath.Join(e.site, "manifest.json.zst"), tc.zst(t, e), 0o644)
			start := time.Now()
			r := e.mustUpdate("1.1.0")
			e.assertInstalled(v110)
			if !strings.Contains(r.stderr, tc.warns) {
				t.Errorf("no warning that the compressed manifest %s:\n%s", tc.warns, r.stderr)
			}
			if d := time.Since(start); d > 20*time.Second {
				t.Errorf("the update took %v", d)
			}
		})
	}

	// And a good copy is what the client reads: the plain manifest is not even asked for.
	e := newEnv(t)
	e.baseline()
	writeFile(t, filepath.Join(e.site, "manifest.json.zst"), zstdOf(t, []byte(readFile(t, filepath.Join(e.site, "manifest.json")))), 0o644)
	writeFile(t, filepath.Join(e.site, "manifest.json"), "{broken", 0o644)
	e.mustUpdate("1.1.0")
	if n := e.srv.count("/manifest.json"); n != 0 {
		t.Errorf("the plain manifest was fetched %d times beside a good compressed copy", n)
	}
}
