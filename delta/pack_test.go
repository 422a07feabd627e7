package delta

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

// packFiles are the contents of four small files, text-like, as a pack holds them.
func packFiles(t *testing.T) [][]byte {
	t.Helper()
	var files [][]byte
	for i, size := range []int{3000, 0, 12000, 700} {
		_, b := versions(t, size+64)
		files = append(files, append([]byte(fmt.Sprintf("file %d\n", i)), b[:size]...))
	}
	return files
}

func membersOf(files [][]byte) []Member {
	var ms []Member
	for i, f := range files {
		ms = append(ms, Member{Name: fmt.Sprintf("lib/f%d.py", i), Want: want(f)})
	}
	return ms
}

// memorySink keeps the members it is told to and records which were verified.
type memorySink struct {
	keep     map[int]bool
	got      map[int]*bytes.Buffer
	verified []int
	written  int64
}

func newSink(keep ...int) *memorySink {
	s := &memorySink{keep: map[int]bool{}, got: map[int]*bytes.Buffer{}}
	for _, i := range keep {
		s.keep[i] = true
	}
	return s
}

func (s *memorySink) Open(i int) (io.Writer, error) {
	if !s.keep[i] {
		return nil, nil
	}
	s.got[i] = &bytes.Buffer{}
	return writerFunc(func(p []byte) (int, error) { s.written += int64(len(p)); return s.got[i].Write(p) }), nil
}

func (s *memorySink) Verified(i int) error {
	s.verified = append(s.verified, i)
	return nil
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }

func decodePack(t *testing.T, pack []byte, packWant Want, members []Member, sink PackSink) error {
	t.Helper()
	d, err := NewDecoder()
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	return d.DecodePack(bytes.NewReader(pack), packWant, members, sink)
}

// A pack of two frames (as a publisher may write it) is cut into its members; the ones not
// wanted are decoded and dropped, the others verified and handed over in order.
func TestPackCutIntoMembers(t *testing.T) {
	files := packFiles(t)
	pack := append(encode(t, bytes.Join(files[:2], nil), nil), encode(t, bytes.Join(files[2:], nil), nil)...)
	sink := newSink(0, 1, 3)
	if err := decodePack(t, pack, want(pack), membersOf(files), sink); err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(sink.verified) != "[0 1 3]" {
		t.Errorf("verified members %v, want [0 1 3]", sink.verified)
	}
	for _, i := range []int{0, 1, 3} {
		if !bytes.Equal(sink.got[i].Bytes(), files[i]) {
			t.Errorf("member %d differs", i)
		}
	}
	if sink.got[2] != nil {
		t.Error("an unwanted member was written")
	}
}

// What `cat a b c | zstd -19` makes is a pack.
func TestPackFromZstdCLI(t *testing.T) {
	cli := zstdCLI(t)
	dir := t.TempDir()
	files := packFiles(t)
	var names []string
	for i, f := range files {
		p := filepath.Join(dir, fmt.Sprint(i))
		if err := os.WriteFile(p, f, 0o644); err != nil {
			t.Fatal(err)
		}
		names = append(names, p)
	}
	cmd := exec.Command("sh", append([]string{"-c", `cat "$@" | "$0" -19 -q -c`, cli}, names...)...)
	pack, err := cmd.Output()
	if err != nil {
		t.Fatal(err)
	}
	sink := newSink(0, 1, 2, 3)
	if err := decodePack(t, pack, want(pack), membersOf(files), sink); err != nil {
		t.Fatal(err)
	}
	if len(sink.verified) != 4 {
		t.Errorf("verified %v", sink.verified)
	}
}

// Whatever is wrong with a pack is an ErrBadSource naming it; members verified before the
// failure were handed over, the one that failed and those after it were not.
func TestBadPacks(t *testing.T) {
	files := packFiles(t)
	whole := bytes.Join(files, nil)
	good := encode(t, whole, nil)
	altered := bytes.Clone(whole)
	altered[len(files[0])+len(files[1])+100] ^= 1 // in member 2
	alteredPack := encode(t, altered, nil)
	longer := encode(t, append(bytes.Clone(whole), "and more"...), nil)
	shorter := encode(t, whole[:len(whole)-10], nil)
	for _, tc := range []struct {
		name     string
		pack     []byte
		packWant Want
		verified string
		says     string
	}{
		{"bytes other than signed", good, Want{SHA256: want(alteredPack).SHA256, Size: int64(len(good))}, "[0 1 2 3]", "sha256"},
		{"garbage", []byte("<html>not found</html>"), want([]byte("<html>not found</html>")), "[]", "does not decode"},
		{"truncated", good[:len(good)/2], want(good), "[]", "manifest says"},
		{"a member altered, the pack signed as it is", alteredPack, want(alteredPack), "[0 1]", "lib/f2.py decodes from the pack to sha256"},
		{"longer than its members", longer, want(longer), "[0 1 2 3]", "more than"},
		{"shorter than its members", shorter, want(shorter), "[0 1 2]", "pack ends"},
		{"garbage after its members", append(bytes.Clone(good), "junk"...), want(append(bytes.Clone(good), "junk"...)), "[0 1 2 3]", "does not decode"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sink := newSink(0, 1, 2, 3)
			err := decodePack(t, tc.pack, tc.packWant, membersOf(files), sink)
			if !errors.Is(err, ErrBadSource) || !strings.Contains(err.Error(), tc.says) {
				t.Fatalf("got %v, want an ErrBadSource saying %q", err, tc.says)
			}
			if got := fmt.Sprint(sink.verified); got != tc.verified {
				t.Errorf("verified %s, want %s", got, tc.verified)
			}
		})
	}
}

// A bomb (a few KiB that decode to 256 MiB, within the window a pack may claim) whose first
// bytes are the members themselves: they are verified, and the output is cut one byte past
// them, in little memory.
func TestPackBombCutAtItsMembers(t *testing.T) {
	files := packFiles(t)
	bomb := zeroBomb(t, 8<<20, bytes.Join(files, nil))
	sink := newSink(0, 1, 2, 3)
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	err := decodePack(t, bomb, want(bomb), membersOf(files), sink)
	runtime.ReadMemStats(&after)
	if !errors.Is(err, ErrBadSource) || !strings.Contains(err.Error(), "more than") {
		t.Fatalf("got %v, want a refusal of output past the members", err)
	}
	if raw := int64(len(bytes.Join(files, nil))); sink.written != raw || len(sink.verified) != 4 {
		t.Errorf("wrote %d bytes, verified %v; want the members' %d bytes, all verified", sink.written, sink.verified, raw)
	}
	if alloc := after.TotalAlloc - before.TotalAlloc; alloc > 48<<20 {
		t.Errorf("decoding the bomb allocated %d MiB", alloc>>20)
	}
}

func TestPackWindow(t *testing.T) {
	for raw, w := range map[int64]uint64{1: 8 << 20, 4 << 20: 8 << 20, 4<<20 + 1: 16 << 20, 16 << 20: 16 << 20} {
		if got := PackWindow(raw); got != w {
			t.Errorf("PackWindow(%d) = %d, want %d", raw, got, w)
		}
	}
	for _, tc := range []struct {
		name string
		exp  byte // window 2^(10+exp)
		raw  int64
	}{
		{"2 GiB claimed", 21, 1 << 20},
		{"16 MiB claimed for 1 MiB", 14, 1 << 20},
		{"32 MiB claimed for 16 MiB", 15, 16 << 20},
	} {
		t.Run(tc.name, func(t *testing.T) {
			src := frameHeader(tc.exp)
			members := []Member{{Name: "a", Want: Want{Size: tc.raw / 2}}, {Name: "b", Want: Want{Size: tc.raw - tc.raw/2}}}
			sink := newSink(0, 1)
			err := decodePack(t, src, want(src), members, sink)
			if !errors.Is(err, ErrBadSource) || !strings.Contains(err.Error(), "window") {
				t.Fatalf("got %v, want a refusal naming the window", err)
			}
			if sink.written != 0 {
				t.Errorf("%d bytes written before the window was refused", sink.written)
			}
		})
	}
}

func TestPackErrorsOfThisSide(t *testing.T) {
	files := packFiles(t)
	pack := encode(t, bytes.Join(files, nil), nil)
	cause := errors.New("connection reset by peer")
	d, err := NewDecoder()
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	err = d.DecodePack(io.MultiReader(bytes.NewReader(pack[:100]), errReader{cause}), want(pack), membersOf(files), newSink(0))
	if !errors.Is(err, cause) || errors.Is(err, ErrBadSource) {
		t.Errorf("read error: got %v, want the read error itself", err)
	}
	err = d.DecodePack(bytes.NewReader(pack), want(pack), membersOf(files), failingSink{})
	var we *WriteError
	if !errors.As(err, &we) || errors.Is(err, ErrBadSource) {
		t.Errorf("write error: got %v, want a *WriteError", err)
	}
	// The decoder is still good for the next stream.
	sink := newSink(2)
	if err := d.DecodePack(bytes.NewReader(pack), want(pack), membersOf(files), sink); err != nil || !bytes.Equal(sink.got[2].Bytes(), files[2]) {
		t.Errorf("decoder reused after failures: %v", err)
	}
}

type failingSink struct{}

func (failingSink) Open(int) (io.Writer, error) { return failingWriter{}, nil }
func (failingSink) Verified(int) error          { return nil }
