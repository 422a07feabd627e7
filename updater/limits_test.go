package updater

import (
	"context"
	"crypto/sha256"
	"fmt"
	"path"
	"strings"
	"testing"

	"github.com/spf13/afero"

	"github.com/sdupdate/sdupdate/manifest"
)

// hugeManifest declares files of the given sizes, which no server will ever be asked for.
func hugeManifest(sizes ...int64) []byte {
	var entries []string
	for i, size := range sizes {
		entries = append(entries, fmt.Sprintf(`{"name":"f%d","sha256":"%064x","size":%d}`, i, i+1, size))
	}
	return []byte(`{"version":"2.0.0","files":[` + strings.Join(entries, ",") + `]}`)
}

// Sizes that add up past what an int64 holds used to wrap to "0 B" or a negative total and pass
// the free-space check; a total at the very limit must still be counted, not wrapped.
func TestHugeSizesAreRefusedBeforeAnyDownload(t *testing.T) {
	s := newSite(t)
	fsys := afero.NewMemMapFs()
	e := newEngine(fsys, testConfig(s), nil)
	e.FreeSpace = func(string) (uint64, error) { return 1 << 40, nil }

	s.setManifest(hugeManifest(1<<62, 1<<62, 1<<62, 1<<62))
	_, err := e.Update(context.Background(), UpdateOptions{})
	if err == nil || !strings.Contains(err.Error(), "add up to more than") || ExitCode(err) != CodeFailed {
		t.Fatalf("four files of 2^62 bytes: got %v (exit %d), want the total refused with exit 1", err, ExitCode(err))
	}

	const half = (1<<63 - 1) / 2
	s.setManifest(hugeManifest(half, half))
	res, err := e.Update(context.Background(), UpdateOptions{DryRun: true})
	if err != nil {
		t.Fatal(err)
	}
	if bytes, files := res.Plan.DownloadBytes(); bytes != 2*half || files != 2 {
		t.Errorf("dry run plans %d files, %d bytes", files, bytes)
	}
	_, err = e.Update(context.Background(), UpdateOptions{})
	if err == nil || !strings.Contains(err.Error(), "not enough free space") || !strings.Contains(err.Error(), "needs 8.0 EiB (8.0 EiB to download") {
		t.Fatalf("8 EiB with 1 TiB free: got %v", err)
	}
	if reqs := s.fileRequests(); len(reqs) != 0 {
		t.Errorf("files were requested: %v", reqs)
	}
	noLeftovers(t, fsys)
}

// A compact manifest just under the read limit used to download everything and then fail: the
// installed manifest sdupdate re-encodes (indented, every mode spelt out) was held to the limit
// meant for what a server sends. What sdupdate writes itself must install and read back.
func TestManifestJustUnderTheLimitInstalls(t *testing.T) {
	s := newSite(t)
	fsys := afero.NewMemMapFs()
	e := newEngine(fsys, testConfig(s), nil)
	dir := strings.Repeat("d", manifest.MaxSegment)
	for i := 0; i < 7; i++ {
		dir += "/" + strings.Repeat("d", manifest.MaxSegment-1)
	}
	empty := sha256.Sum256(nil)
	var entries []string
	for size := 0; size < manifest.MaxSize-10000; {
		// Already installed and matching: planned, not downloaded, so the test stays fast.
		name := fmt.Sprintf("%s/%06d", dir, len(entries))
		if err := afero.WriteFile(fsys, path.Join(installDir, name), nil, 0o644); err != nil {
			t.Fatal(err)
		}
		entry := fmt.Sprintf(`{"name":%q,"sha256":"%x","size":0}`, name, empty)
		entries = append(entries, entry)
		size += len(entry) + 1
	}
	s.mu.Lock()
	s.content["/2.0.0/new"] = []byte("new\n")
	s.mu.Unlock()
	sum := sha256.Sum256([]byte("new\n"))
	entries = append(entries, fmt.Sprintf(`{"name":"new","sha256":"%x","size":4}`, sum))
	s.setManifest([]byte(`{"version":"2.0.0","base_url":"2.0.0/","files":[` + strings.Join(entries, ",") + `]}`))

	if _, err := e.Update(context.Background(), UpdateOptions{}); err != nil {
		t.Fatalf("update with a %d-entry manifest: %v", len(entries), err)
	}
	fi, err := fsys.Stat(path.Join(stateDir, "installed.json"))
	if err != nil || fi.Size() <= manifest.MaxSize {
		t.Fatalf("installed.json: %v, %v bytes; the case needs it past the read limit", err, fi)
	}
	if _, mismatches, err := e.Verify(context.Background()); err != nil || len(mismatches) != 0 {
		t.Fatalf("verify after the update: %v, %d mismatches", err, len(mismatches))
	}
}
