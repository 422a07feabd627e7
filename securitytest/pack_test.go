package securitytest

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sdupdate/sdupdate/delta"
	"github.com/sdupdate/sdupdate/manifest"
)

// packedFiles is a release of small text files of one vocabulary, which compress far better
// together than each alone, and the names of those that go in its pack.
func packedFiles() (map[string]string, []string) {
	vocab := rand.New(rand.NewPCG(5, 5))
	words := make([]string, 300)
	for i := range words {
		w := make([]byte, 3+vocab.IntN(8))
		for j := range w {
			w[j] = byte('a' + vocab.IntN(26))
		}
		words[i] = string(w)
	}
	files := map[string]string{"bin/sd-agent*": "#!/bin/sh\necho 1.0.0\n"}
	var members []string
	for i := 0; i < 8; i++ {
		r := rand.New(rand.NewPCG(uint64(i), 1))
		var b strings.Builder
		for b.Len() < 4000+500*i {
			b.WriteString(words[r.IntN(len(words))] + " ")
		}
		name := fmt.Sprintf("lib/mod%d.py", i)
		files[name] = b.String()
		members = append(members, name)
	}
	return files, members
}

// releaseWithPack publishes 1.0.0 with `sdupdate release`, then adds a pack of members made by
// the reference zstd (`cat a b … | zstd -19`) and signs the manifest again. It returns the
// manifest and the pack's path on the server.
func (e *env) releaseWithPack(files map[string]string, members []string) (*manifest.Manifest, string) {
	e.t.Helper()
	e.release("1.0.0", files)
	args := []string{"-c", `cat "$@" | zstd -19 -q`, "sh"}
	for _, n := range members {
		args = append(args, filepath.Join(e.src, "1.0.0", filepath.FromSlash(n)))
	}
	pack, err := exec.Command("sh", args...).Output()
	if err != nil {
		e.t.Fatalf("cat | zstd -19: %v", err)
	}
	path := filepath.Join(e.site, "manifest.json")
	m, err := manifest.Parse([]byte(readFile(e.t, path)))
	if err != nil {
		e.t.Fatal(err)
	}
	var raw int64
	for _, n := range members {
		raw += int64(len(files[n]))
	}
	url := ".sdupdate/pack-" + sum(string(pack)) + ".zst"
	writeFile(e.t, filepath.Join(e.site, "1.0.0", filepath.FromSlash(url)), string(pack), 0o644)
	m.Packs = []manifest.Pack{{Source: manifest.Source{URL: url, SHA256: sum(string(pack)), Size: int64(len(pack))}, Files: members, RawSize: raw}}
	out, err := m.Marshal()
	if err != nil {
		e.t.Fatal(err)
	}
	writeFile(e.t, path, string(out), 0o644)
	minisignSign(e.t, e.key, path)
	if m, err = manifest.Parse(out); err != nil {
		e.t.Fatal(err)
	}
	return m, "/1.0.0/" + url
}

// ownSources names the members whose object or file the server was asked for.
func (e *env) ownSources(m *manifest.Manifest, members []string) []string {
	var out []string
	for _, n := range members {
		f, _ := m.Lookup(n)
		if e.srv.count("/1.0.0/"+n) > 0 || f.Object != nil && e.srv.count("/1.0.0/"+f.Object.URL) > 0 {
			out = append(out, n)
		}
	}
	return out
}

// What a hostile server sends instead of a signed pack costs at most the pack's own size and
// window, never the update: the files come from their own sources, the install is exactly the
// release, and the log names the pack. A pack made by the reference zstd, served as signed,
// is what the client installs from.
func TestHostilePack(t *testing.T) {
	zstdBomb := func(t *testing.T) []byte {
		var buf bytes.Buffer
		if err := delta.Encode(&buf, bytes.NewReader(make([]byte, 256<<20)), 256<<20, nil); err != nil {
			t.Fatal(err)
		}
		return buf.Bytes()
	}
	for _, tc := range []struct {
		name string
		// body is what the server sends for the pack; nil: the signed pack.
		body func(e *env, pack []byte) http.HandlerFunc
		// own is how many files come from their own sources (-1: all).
		own int
	}{
		{"the signed pack, made by zstd -19", nil, 0},
		{"other bytes of the same length", func(e *env, pack []byte) http.HandlerFunc {
			return serve(strings.Repeat("x", len(pack)))
		}, -1},
		{"truncated", func(e *env, pack []byte) http.HandlerFunc { return serve(string(pack[:len(pack)/2])) }, -1},
		// The signed bytes come first: every file is verified from them before the rest is
		// refused, so none falls back.
		{"longer than signed (endless)", func(e *env, pack []byte) http.HandlerFunc { return endless(string(pack), 0, &e.sent) }, 0},
		{"a zstd bomb (256 MiB of zeros)", func(e *env, pack []byte) http.HandlerFunc { return serve(string(zstdBomb(e.t))) }, -1},
		{"a frame claiming a 2 GiB window", func(e *env, pack []byte) http.HandlerFunc {
			// Frame header without checksum or content size, window 2^31, one raw block.
			return serve(string([]byte{0x28, 0xb5, 0x2f, 0xfd, 0x00, 21 << 3, 0x01, 0x00, 0x00}))
		}, -1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			if _, err := exec.LookPath("zstd"); err != nil {
				t.Skip("zstd not installed")
			}
			e := newEnv(t)
			e.writeConfig()
			writeFile(t, filepath.Join(e.install, "agent.conf"), "token=local-only\n", 0o600)
			files, members := packedFiles()
			m, path := e.releaseWithPack(files, members)
			if tc.body != nil {
				e.srv.handle(path, tc.body(e, []byte(readFile(t, filepath.Join(e.site, filepath.FromSlash(path))))))
			}
			start := time.Now()
			r := e.mustUpdate("1.0.0")
			e.assertInstalled(files)
			own := e.ownSources(m, members)
			warned := strings.Contains(r.stderr, "cannot use pack")
			if tc.body == nil {
				if len(own) != 0 || warned || e.srv.count(path) != 1 {
					t.Errorf("pack fetched %d times, own sources of %v: want the pack once and nothing else\n%s", e.srv.count(path), own, r.stderr)
				}
				return
			}
			want := tc.own
			if want < 0 {
				want = len(members)
			}
			if len(own) != want || !warned || !strings.Contains(r.stderr, m.Packs[0].URL) {
				t.Errorf("own sources of %v fetched, want %d files; the log must name the pack:\n%s", own, want, r.stderr)
			}
			e.srv.waitHandlers(t, 5*time.Second)
			if n := e.sent.Load(); n > 8<<20 {
				t.Errorf("the server sent %d bytes of an endless pack: it was not cut", n)
			}
			if d := time.Since(start); d > 20*time.Second {
				t.Errorf("the update took %v", d)
			}
		})
	}
}
