package updater

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
)

// A file large enough that its disk writes start while it downloads (fsutil's write-behind),
// broken off between two of its chunks: the next run continues it from there, on the real
// filesystem, and installs exactly the published bytes.
func TestBrokenLargeDownloadWrittenBehindContinuesToTheExactBytes(t *testing.T) {
	s := newRangeSite(t)
	data := pseudoRandom(40<<20+777, 3)
	s.publish("1.0.0", data)
	cut := int64(21<<20 + 4321)
	s.cutAt = cut
	e, install, state := resumeEngine(t, s, 1)
	if _, err := e.Update(context.Background(), UpdateOptions{}); ExitCode(err) != CodeFailed {
		t.Fatalf("run broken at %d bytes with one try: %v, want exit %d", cut, err, CodeFailed)
	}
	e, _, _ = resumeEngineAt(t, s, install, state, 1)
	if _, err := e.Update(context.Background(), UpdateOptions{}); err != nil {
		t.Fatalf("second run: %v", err)
	}
	got, err := os.ReadFile(filepath.Join(install, "big.bin"))
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("installed file: %d bytes (%v), not the %d published", len(got), err, len(data))
	}
	sent, ranges := s.stats()
	if want := fmt.Sprintf("bytes=%d-", cut); sent != int64(len(data)) || len(ranges) != 2 || ranges[1] != want {
		t.Errorf("server sent %d of %d bytes, Range headers %q: want the second run to ask for %s", sent, len(data), ranges, want)
	}
}
