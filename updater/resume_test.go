package updater

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spf13/afero"
)

// rangeSite serves one big file as a static file server does (Range, If-Range and a strong
// ETag through http.ServeContent) and can cut its next response mid-body, the connection closed.
type rangeSite struct {
	*httptest.Server
	mu      sync.Mutex
	version string
	data    []byte
	cutAt   int64 // the next file response stops after this many bytes; < 0: never
	sent    int64
	ranges  []string // Range header of each file request
	// handlers counts the responses still being written: a body can be read whole before its
	// handler has counted the last write.
	handlers sync.WaitGroup
}

func newRangeSite(t *testing.T) *rangeSite {
	s := &rangeSite{cutAt: -1}
	s.Server = httptest.NewServer(http.HandlerFunc(s.serve))
	t.Cleanup(s.Close)
	return s
}

// publish offers version with one file, big.bin, holding data.
func (s *rangeSite) publish(version string, data []byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.version, s.data = version, data
}

func (s *rangeSite) serve(w http.ResponseWriter, r *http.Request) {
	s.handlers.Add(1)
	defer s.handlers.Done()
	s.mu.Lock()
	version, data := s.version, s.data
	if r.URL.Path == "/manifest.json" {
		s.mu.Unlock()
		sum := sha256.Sum256(data)
		json.NewEncoder(w).Encode(map[string]any{"version": version, "base_url": version + "/",
			"files": []map[string]any{{"name": "big.bin", "sha256": hex.EncodeToString(sum[:]), "size": len(data)}}})
		return
	}
	cut := s.cutAt
	s.cutAt = -1
	s.ranges = append(s.ranges, r.Header.Get("Range"))
	s.mu.Unlock()
	if r.URL.Path != "/"+version+"/big.bin" {
		http.NotFound(w, r)
		return
	}
	w.Header().Set("ETag", `"`+version+`"`)
	http.ServeContent(&cuttingWriter{ResponseWriter: w, s: s, left: cut}, r, "", time.Time{}, bytes.NewReader(data))
}

type cuttingWriter struct {
	http.ResponseWriter
	s    *rangeSite
	left int64
}

func (c *cuttingWriter) Write(p []byte) (int, error) {
	cut := c.left >= 0 && int64(len(p)) > c.left
	if cut {
		p = p[:c.left]
	}
	n, err := c.ResponseWriter.Write(p)
	c.left -= int64(n)
	c.s.mu.Lock()
	c.s.sent += int64(n)
	c.s.mu.Unlock()
	if cut {
		http.NewResponseController(c.ResponseWriter).Flush()
		panic(http.ErrAbortHandler)
	}
	return n, err
}

func (s *rangeSite) stats() (sent int64, ranges []string) {
	s.handlers.Wait()
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.sent, append([]string(nil), s.ranges...)
}

func pseudoRandom(n int, seed byte) []byte {
	b := make([]byte, n)
	rand.NewChaCha8([32]byte{seed}).Read(b)
	return b
}

// resumeEngine is an engine on the real filesystem under a temp dir, fetching from s.
func resumeEngine(t *testing.T, s *rangeSite, retries int) (*Engine, string, string) {
	dir := t.TempDir()
	cfg := testConfig(&site{Server: s.Server})
	cfg.Directory, cfg.StateDirectory = filepath.Join(dir, "opt"), filepath.Join(dir, "state")
	cfg.Retries = retries
	return newEngine(afero.NewOsFs(), cfg, nil), cfg.Directory, cfg.StateDirectory
}

func partialFiles(t *testing.T, state string) []string {
	t.Helper()
	entries, _ := os.ReadDir(filepath.Join(state, "partial"))
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names
}

func TestBrokenDownloadContinuesOnTheNextRun(t *testing.T) {
	s := newRangeSite(t)
	data := pseudoRandom(3<<20, 1)
	s.publish("1.0.0", data)
	s.cutAt = 1 << 20
	e, install, state := resumeEngine(t, s, 1)
	if _, err := e.Update(context.Background(), UpdateOptions{}); ExitCode(err) != CodeFailed {
		t.Fatalf("run broken at 1 MiB with one try: %v, want exit %d", err, CodeFailed)
	}
	if p := partialFiles(t, state); len(p) != 2 {
		t.Fatalf("after the broken run, partial/ holds %v, want the bytes and their ETag", p)
	}
	e, _, _ = resumeEngineAt(t, s, install, state, 1)
	if _, err := e.Update(context.Background(), UpdateOptions{}); err != nil {
		t.Fatalf("second run: %v", err)
	}
	got, _ := os.ReadFile(filepath.Join(install, "big.bin"))
	if !bytes.Equal(got, data) {
		t.Fatal("installed file is not the published one")
	}
	sent, ranges := s.stats()
	if sent != int64(len(data)) {
		t.Errorf("server sent %d bytes in all for a %d-byte file broken once: the second run started over", sent, len(data))
	}
	if len(ranges) != 2 || ranges[1] != "bytes=1048576-" {
		t.Errorf("Range headers %q, want the second run to ask for bytes=1048576-", ranges)
	}
	if p := partialFiles(t, state); len(p) != 0 {
		t.Errorf("partial/ holds %v after the file was installed", p)
	}
}

func resumeEngineAt(t *testing.T, s *rangeSite, install, state string, retries int) (*Engine, string, string) {
	cfg := testConfig(&site{Server: s.Server})
	cfg.Directory, cfg.StateDirectory, cfg.Retries = install, state, retries
	return newEngine(afero.NewOsFs(), cfg, nil), install, state
}

func TestBrokenDownloadContinuesOnTheNextTry(t *testing.T) {
	s := newRangeSite(t)
	data := pseudoRandom(2<<20+123, 2)
	s.publish("1.0.0", data)
	s.cutAt = 700 << 10
	e, install, _ := resumeEngine(t, s, 2)
	if _, err := e.Update(context.Background(), UpdateOptions{}); err != nil {
		t.Fatalf("update with one broken try: %v", err)
	}
	got, _ := os.ReadFile(filepath.Join(install, "big.bin"))
	sent, ranges := s.stats()
	if !bytes.Equal(got, data) || sent != int64(len(data)) || len(ranges) != 2 || ranges[1] != "bytes=716800-" {
		t.Fatalf("installed ok %v, sent %d of %d, ranges %q", bytes.Equal(got, data), sent, len(data), ranges)
	}
}

func TestPartialOfAReleaseNoLongerOfferedIsRemovedNotAppendedTo(t *testing.T) {
	s := newRangeSite(t)
	s.publish("1.0.0", pseudoRandom(2<<20, 3))
	s.cutAt = 1 << 20
	e, install, state := resumeEngine(t, s, 1)
	e.Update(context.Background(), UpdateOptions{})
	old := partialFiles(t, state)
	// The publisher replaces the release before the next run: other content, other name.
	data := pseudoRandom(2<<20, 4)
	s.publish("1.0.1", data)
	e, _, _ = resumeEngineAt(t, s, install, state, 1)
	if _, err := e.Update(context.Background(), UpdateOptions{}); err != nil {
		t.Fatalf("update to the new release: %v", err)
	}
	got, _ := os.ReadFile(filepath.Join(install, "big.bin"))
	if !bytes.Equal(got, data) {
		t.Fatal("installed file is not the new release's")
	}
	if _, ranges := s.stats(); ranges[len(ranges)-1] != "" {
		t.Errorf("new release's file asked for with Range %q: appended to the old release's bytes", ranges[len(ranges)-1])
	}
	if p := partialFiles(t, state); len(old) == 0 || len(p) != 0 {
		t.Errorf("partial/ held %v after the broken run and %v after the next one, want something then nothing", old, p)
	}
}

func TestDamagedPartialIsVerifiedWholeAndFetchedAgain(t *testing.T) {
	s := newRangeSite(t)
	data := pseudoRandom(2<<20, 5)
	s.publish("1.0.0", data)
	s.cutAt = 1 << 20
	e, install, state := resumeEngine(t, s, 1)
	e.Update(context.Background(), UpdateOptions{})
	// Bytes kept from the broken run change on disk (a bad sector, a stray write).
	var partial string
	for _, n := range partialFiles(t, state) {
		if !strings.HasSuffix(n, etagSuffix) {
			partial = filepath.Join(state, "partial", n)
		}
	}
	f, err := os.OpenFile(partial, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteAt([]byte("garbage"), 1000)
	f.Close()
	e, _, _ = resumeEngineAt(t, s, install, state, 2)
	if _, err := e.Update(context.Background(), UpdateOptions{}); err != nil {
		t.Fatalf("update after the partial file was damaged: %v", err)
	}
	got, _ := os.ReadFile(filepath.Join(install, "big.bin"))
	if !bytes.Equal(got, data) {
		t.Fatal("a resumed file was installed without being verified whole")
	}
	if _, ranges := s.stats(); len(ranges) != 3 || ranges[1] == "" || ranges[2] != "" {
		t.Errorf("Range headers %q, want a continuation that fails verification, then the whole file", ranges)
	}
}
