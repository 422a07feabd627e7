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

	"github.com/spf13/afero"
)

// countSyncs is the real filesystem whose files count their fsyncs. A file is still the
// operating system's (its *os.File is embedded), so write-behind works on it as on any other.
type countSyncs struct {
	afero.OsFs
	syncs *int
}

func (c countSyncs) OpenFile(name string, flag int, perm os.FileMode) (afero.File, error) {
	f, err := os.OpenFile(name, flag, perm)
	if err != nil {
		return nil, err
	}
	return &countedFile{File: f, syncs: c.syncs}, nil
}

type countedFile struct {
	*os.File
	syncs *int
}

func (f *countedFile) Sync() error { *f.syncs++; return f.File.Sync() }

// rangeLog records the ranges write-behind asks the kernel to write, and passes them on.
type rangeLog struct {
	started, waited [][2]int64
	failStart       bool
}

func (l *rangeLog) ops() *writebackOps {
	return &writebackOps{
		start: func(fd uintptr, off, n int64) error {
			if l.failStart {
				return errors.New("no writeback here")
			}
			l.started = append(l.started, [2]int64{off, n})
			return startWriteback(fd, off, n)
		},
		wait: func(fd uintptr, off, n int64) error {
			l.waited = append(l.waited, [2]int64{off, n})
			return waitWriteback(fd, off, n)
		},
	}
}

// contiguous reports whether ranges follow each other from from on, and where they end.
func contiguous(ranges [][2]int64, from int64) (end int64, ok bool) {
	end = from
	for _, r := range ranges {
		if r[0] != end || r[1] <= 0 {
			return end, false
		}
		end += r[1]
	}
	return end, true
}

// writeUneven writes data to w in pieces of uneven sizes, as a socket delivers them.
func writeUneven(t *testing.T, w io.Writer, data []byte) {
	t.Helper()
	rng := rand.New(rand.NewPCG(1, 2))
	for len(data) > 0 {
		n := min(len(data), 1+rng.IntN(3<<20))
		if _, err := w.Write(data[:n]); err != nil {
			t.Fatal(err)
		}
		data = data[n:]
	}
}

func TestFileWriterWritesBehindYetKeepsEveryByteAndStillSyncs(t *testing.T) {
	path := filepath.Join(t.TempDir(), "big.bin")
	data := randomBytes(writeBehindLag+3*writeBehindChunk+writeBehindChunk/3, 3) // enough to wait for some
	syncs := 0
	w, err := Create(countSyncs{syncs: &syncs}, path)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	if w.wb == nil {
		t.Fatal("no write-behind on a file of the operating system")
	}
	var log rangeLog
	w.wb.ops = log.ops()
	writeUneven(t, w, data)
	if err := w.Commit(Attrs{Mode: 0o640}); err != nil {
		t.Fatal(err)
	}

	end, ok := contiguous(log.started, 0)
	if !ok || end <= int64(len(data))-writeBehindChunk || end > int64(len(data)) {
		t.Errorf("writeback started for %v: want contiguous ranges from 0 to within a chunk of %d", log.started, len(data))
	}
	if wend, ok := contiguous(log.waited, 0); !ok || len(log.waited) == 0 || wend > end || end-wend > writeBehindLag+writeBehindChunk {
		t.Errorf("waited for %v: want contiguous ranges from 0 that trail the started ones (to %d) by about %d", log.waited, end, writeBehindLag)
	}
	if syncs != 1 {
		t.Errorf("%d fsyncs at Commit, want 1: write-behind does not make a file durable", syncs)
	}
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, data) {
		t.Errorf("the file holds %d bytes that differ from the %d written", len(got), len(data))
	}
	if sum := sha256.Sum256(data); w.SHA256() != hex.EncodeToString(sum[:]) || w.Size() != int64(len(data)) {
		t.Errorf("FileWriter reports sha256 %s size %d, want %x size %d", w.SHA256(), w.Size(), sum, len(data))
	}
}

// A partial download continued: the bytes of a first run stay, the rest is appended from there.
func TestWriteBehindContinuesAtTheOffsetGiven(t *testing.T) {
	path := filepath.Join(t.TempDir(), "partial")
	data := randomBytes(int(3*writeBehindChunk), 3)
	have := int64(len(data)/2 + 12345)
	if err := os.WriteFile(path, data[:have], 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.Seek(have, io.SeekStart); err != nil {
		t.Fatal(err)
	}
	out := WriteBehind(f, have)
	bw, ok := out.(*behindWriter)
	if !ok {
		t.Fatalf("WriteBehind of an *os.File is a %T, with no write-behind", out)
	}
	var log rangeLog
	bw.w.ops = log.ops()
	writeUneven(t, out, data[have:])
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	if end, ok := contiguous(log.started, have); !ok || len(log.started) == 0 || end > int64(len(data)) {
		t.Errorf("writeback started for %v: want contiguous ranges from %d on", log.started, have)
	}
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, data) {
		t.Errorf("the file holds %d bytes that differ from the %d written", len(got), len(data))
	}
}

func TestWriteBehindThatFailsLeavesTheWritesAlone(t *testing.T) {
	path := filepath.Join(t.TempDir(), "big.bin")
	data := randomBytes(int(3*writeBehindChunk), 3)
	syncs := 0
	w, err := Create(countSyncs{syncs: &syncs}, path)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	log := rangeLog{failStart: true}
	w.wb.ops = log.ops()
	writeUneven(t, w, data)
	if err := w.Commit(Attrs{Mode: 0o600}); err != nil {
		t.Fatalf("Commit after write-behind failed: %v", err)
	}
	if syncs != 1 {
		t.Errorf("%d fsyncs at Commit, want 1", syncs)
	}
	if got, err := os.ReadFile(path); err != nil || !bytes.Equal(got, data) {
		t.Errorf("the file holds %d bytes (%v), not the %d written", len(got), err, len(data))
	}
}

func TestWriteBehindOfAnInMemoryFileIsTheFileItself(t *testing.T) {
	mem := afero.NewMemMapFs()
	f, err := mem.Create("/big.bin")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if out := WriteBehind(f, 0); out != io.Writer(f) {
		t.Errorf("WriteBehind of a MemMapFs file is a %T", out)
	}
}
