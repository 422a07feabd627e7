package fsutil

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
	"testing/iotest"

	"github.com/spf13/afero"
)

// randomBytes returns n bytes that no two calls with different seeds share.
func randomBytes(n int, seed uint64) []byte {
	b := make([]byte, n)
	r := rand.New(rand.NewPCG(seed, 4))
	for i := 0; i < n; i += 8 {
		v := r.Uint64()
		for j := 0; j < 8 && i+j < n; j++ {
			b[i+j] = byte(v >> (8 * j))
		}
	}
	return b
}

// unevenReader hands out its bytes in reads of varying lengths, as a socket does.
type unevenReader struct {
	data []byte
	r    *rand.Rand
}

func (u *unevenReader) Read(p []byte) (int, error) {
	if len(u.data) == 0 {
		return 0, io.EOF
	}
	n := min(len(p), len(u.data), 1+u.r.IntN(3<<20))
	copy(p, u.data[:n])
	u.data = u.data[n:]
	return n, nil
}

func sum(b []byte) string { s := sha256.Sum256(b); return hex.EncodeToString(s[:]) }

// A staged file's sha256 is what decides whether it goes in: with the hashing moved beside
// the copy for a large file, the file and its hash must still be exactly the bytes sent, in
// order, at every size around the point where it moves.
func TestFileWriterHashesWhatItWritesAtEverySize(t *testing.T) {
	dir := t.TempDir()
	fsys := afero.NewOsFs()
	for i, n := range []int{0, 1, hashBesideAfter - 1, hashBesideAfter, hashBesideAfter + 1, 3*hashBesideAfter + 12345, 40 << 20} {
		data := randomBytes(n, uint64(i))
		p := filepath.Join(dir, "f")
		w, err := Create(fsys, p)
		if err != nil {
			t.Fatal(err)
		}
		got, err := Copy(w, &unevenReader{data: data, r: rand.New(rand.NewPCG(uint64(n), 2))})
		if err != nil || got != int64(n) {
			t.Fatalf("%d bytes: copied %d, %v", n, got, err)
		}
		if w.SHA256() != sum(data) || w.Size() != int64(n) {
			t.Fatalf("%d bytes: hashed %s (%d bytes), want %s", n, w.SHA256(), w.Size(), sum(data))
		}
		if err := w.Commit(Attrs{Mode: 0o644}); err != nil {
			t.Fatal(err)
		}
		on, err := os.ReadFile(p)
		if err != nil || !bytes.Equal(on, data) {
			t.Fatalf("%d bytes: the file holds %d bytes that differ from those sent (%v)", n, len(on), err)
		}
	}
}

// A transfer broken past the point where hashing moves returns the read's error, and the hash
// then covers exactly the bytes written: a resumed download continues from that hash.
func TestCopyHashedBrokenMidwayHashesWhatWasWritten(t *testing.T) {
	data := randomBytes(20<<20, 7)
	broken := errors.New("connection reset")
	var dst bytes.Buffer
	h := sha256.New()
	src := io.MultiReader(&unevenReader{data: data[:13<<20], r: rand.New(rand.NewPCG(3, 3))}, iotest.ErrReader(broken))
	n, err := CopyHashed(&dst, h, src)
	if !errors.Is(err, broken) {
		t.Fatalf("error %v, want the read's", err)
	}
	if n != 13<<20 || dst.Len() != 13<<20 || hex.EncodeToString(h.Sum(nil)) != sum(data[:13<<20]) {
		t.Fatalf("copied %d, wrote %d, hash %x: want 13 MiB of the first bytes, hashed", n, dst.Len(), h.Sum(nil))
	}
}

// failingWriter takes limit bytes, then fails.
type failingWriter struct{ limit int }

func (f *failingWriter) Write(p []byte) (int, error) {
	if len(p) > f.limit {
		n := f.limit
		f.limit = 0
		return n, errors.New("no space left on device")
	}
	f.limit -= len(p)
	return len(p), nil
}

// A write that fails (a full disk) past the point where hashing moves is a *WriteError, so the
// updater does not blame the server and fetch again, and nothing is left running.
func TestCopyHashedFailedWriteIsAWriteError(t *testing.T) {
	data := randomBytes(16<<20, 9)
	_, err := CopyHashed(&failingWriter{limit: 9 << 20}, sha256.New(), bytes.NewReader(data))
	var we *WriteError
	if !errors.As(err, &we) {
		t.Fatalf("error %v (%T), want a *WriteError", err, err)
	}
}
