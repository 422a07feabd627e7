package updater

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/spf13/afero"
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
	var out bytes.Buffer
	e.Out = &out
	if _, err := e.Update(context.Background(), UpdateOptions{DryRun: true}); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "2 files to download (8.0 EiB)") {
		t.Errorf("dry run: %s", out.String())
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
