package delta

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/klauspost/compress/zstd"

	"github.com/sdupdate/sdupdate/internal/need"
)

func want(b []byte) Want {
	s := sha256.Sum256(b)
	return Want{SHA256: hex.EncodeToString(s[:]), Size: int64(len(b))}
}

// versions returns an "old" and a "new" file that differ the way two builds do: mostly equal,
// with a few edits and an insertion, and incompressible enough that a delta must use the base.
func versions(t *testing.T, size int) (old, new []byte) {
	t.Helper()
	r := rand.New(rand.NewPCG(1, 2))
	old = make([]byte, size)
	for i := range old {
		old[i] = byte(r.IntN(64)) // some redundancy, like code
	}
	new = append([]byte(nil), old...)
	for i := 0; i < 20; i++ {
		new[r.IntN(len(new))] ^= 0x55
	}
	at := len(new) / 3
	new = append(new[:at:at], append([]byte("a new function in the middle"), new[at:]...)...)
	return old, new
}

func encode(t *testing.T, content, base []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	if err := Encode(&buf, bytes.NewReader(content), int64(len(content)), base); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func decode(src []byte, srcWant Want, base []byte, out Want) ([]byte, error) {
	var dst bytes.Buffer
	n, err := Decode(&dst, bytes.NewReader(src), srcWant, base, out, Limits{})
	if n != int64(dst.Len()) {
		panic("Decode miscounted its output")
	}
	return dst.Bytes(), err
}

func TestObjectAndDeltaRoundTrip(t *testing.T) {
	old, new := versions(t, 1<<20)
	obj := encode(t, new, nil)
	d := encode(t, new, old)
	if len(d)*10 > len(obj) {
		t.Errorf("delta is %d bytes, object %d: a delta of a small edit should be far smaller", len(d), len(obj))
	}
	for _, tc := range []struct {
		name string
		src  []byte
		base []byte
	}{{"object", obj, nil}, {"delta", d, old}} {
		got, err := decode(tc.src, want(tc.src), tc.base, want(new))
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if !bytes.Equal(got, new) {
			t.Fatalf("%s: decoded content differs", tc.name)
		}
	}
	empty := encode(t, nil, nil)
	if got, err := decode(empty, want(empty), nil, want(nil)); err != nil || len(got) != 0 {
		t.Fatalf("empty file: %q, %v", got, err)
	}
}

// One Decoder used for a run of files: each stream is decoded with its own base and limits
// only. A delta whose base is missing must not decode against the previous file's base, a
// small file may not claim the window an earlier large one was allowed, and a failed stream
// leaves the decoder usable for the next.
func TestDecoderReusedAcrossStreams(t *testing.T) {
	old, new := versions(t, 1<<20)
	obj, d := encode(t, new, nil), encode(t, new, old)
	dec, err := NewDecoder()
	if err != nil {
		t.Fatal(err)
	}
	defer dec.Close()
	run := func(src, base []byte, out Want) error {
		var dst bytes.Buffer
		_, err := dec.Decode(&dst, bytes.NewReader(src), want(src), base, out, Limits{})
		if err == nil && dst.Len() != int(out.Size) {
			t.Fatalf("decoded %d bytes, want %d", dst.Len(), out.Size)
		}
		return err
	}
	steps := []struct {
		name    string
		src     []byte
		base    []byte
		out     Want
		failure string // "" when the step must succeed
	}{
		{"delta", d, old, want(new), ""},
		{"the same delta without its base", d, nil, want(new), "does not decode"},
		{"object", obj, nil, want(new), ""},
		{"a small file claiming 32 MiB", frameHeader(15), nil, want([]byte("x")), "window"},
		{"delta again", d, old, want(new), ""},
		{"truncated object", obj[:len(obj)/2], nil, want(new), "does not decode"},
		{"object again", obj, nil, want(new), ""},
	}
	for _, s := range steps {
		err := run(s.src, s.base, s.out)
		switch {
		case s.failure == "" && err != nil:
			t.Fatalf("%s: %v", s.name, err)
		case s.failure != "" && (!errors.Is(err, ErrBadSource) || !strings.Contains(err.Error(), s.failure)):
			t.Fatalf("%s: got %v, want a refusal saying %q", s.name, err, s.failure)
		}
	}
}

func TestBadSources(t *testing.T) {
	old, new := versions(t, 256<<10)
	obj := encode(t, new, nil)
	d := encode(t, new, old)
	other := append([]byte(nil), old...)
	other[100] ^= 1
	cases := []struct {
		name    string
		src     []byte
		srcWant Want
		base    []byte
		msg     string
	}{
		{"wrong sha256", obj, Want{SHA256: strings.Repeat("0", 64), Size: int64(len(obj))}, nil, "source has sha256"},
		{"shorter than signed", obj[:len(obj)-1], want(obj), nil, "source is"},
		{"longer than signed", append(obj, 0), want(obj), nil, "longer than"},
		{"truncated frame", obj[:len(obj)/2], want(obj[:len(obj)/2]), nil, "does not decode"},
		{"not zstd", new[:1000], want(new[:1000]), nil, "does not decode"},
		{"delta against another base", d, want(d), other, "decode"},
		{"delta without its base", d, want(d), nil, "does not decode"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := decode(tc.src, tc.srcWant, tc.base, want(new))
			if !errors.Is(err, ErrBadSource) {
				t.Fatalf("got %v, want an error wrapping ErrBadSource", err)
			}
			if !strings.Contains(err.Error(), tc.msg) {
				t.Errorf("error %q does not say %q", err, tc.msg)
			}
			if int64(len(got)) > int64(len(new))+1 {
				t.Errorf("wrote %d bytes for a %d-byte file", len(got), len(new))
			}
		})
	}
}

// A bomb (a few KiB that decode to 256 MiB, within a window it may claim) is cut one byte past
// the declared size: the disk and the memory it could fill are the file's own.
func TestBombCutAtDeclaredSize(t *testing.T) {
	bomb := zeroBomb(t, 1<<20, nil)
	declared := []byte("a small file")
	var out countingWriter
	_, err := Decode(&out, bytes.NewReader(bomb), want(bomb), nil, want(declared), Limits{})
	if !errors.Is(err, ErrBadSource) || !strings.Contains(err.Error(), "more than") {
		t.Fatalf("got %v, want a refusal of output past the declared size", err)
	}
	if out.n > int64(len(declared))+1 {
		t.Fatalf("wrote %d bytes of a bomb for a %d-byte file", out.n, len(declared))
	}
}

type countingWriter struct{ n int64 }

func (c *countingWriter) Write(p []byte) (int, error) { c.n += int64(len(p)); return len(p), nil }

// frameHeader is a zstd frame header claiming a window of 2^(10+exp) bytes, followed by one
// block header that would be raw 4 MiB: refused from the header, before any block.
func frameHeader(exp byte) []byte {
	return []byte{0x28, 0xb5, 0x2f, 0xfd, 0x00, exp << 3, 0x01, 0x00, 0x00}
}

func TestHugeWindowRefusedBeforeDecoding(t *testing.T) {
	for _, tc := range []struct {
		name string
		exp  byte
		lim  Limits
	}{
		{"2 TiB claimed", 31, Limits{}},
		{"1 GiB claimed, over the default", 20, Limits{}},
		{"32 MiB claimed for a tiny file", 15, Limits{}},
		{"16 MiB, over a lower limit", 14, Limits{MaxWindow: 1 << 20}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			src := frameHeader(tc.exp)
			var out countingWriter
			_, err := Decode(&out, bytes.NewReader(src), want(src), nil, want([]byte("x")), tc.lim)
			if !errors.Is(err, ErrBadSource) || !strings.Contains(err.Error(), "window") {
				t.Fatalf("got %v, want a refusal naming the window", err)
			}
		})
	}
}

func TestWriteErrorIsNotTheSource(t *testing.T) {
	_, new := versions(t, 64<<10)
	obj := encode(t, new, nil)
	_, err := Decode(failingWriter{}, bytes.NewReader(obj), want(obj), nil, want(new), Limits{})
	var we *WriteError
	if !errors.As(err, &we) || errors.Is(err, ErrBadSource) {
		t.Fatalf("got %v, want a *WriteError", err)
	}
}

type failingWriter struct{}

func (failingWriter) Write([]byte) (int, error) { return 0, errors.New("no space left on device") }

func TestReadErrorPassesThrough(t *testing.T) {
	_, new := versions(t, 64<<10)
	obj := encode(t, new, nil)
	cause := errors.New("connection reset by peer")
	r := io.MultiReader(bytes.NewReader(obj[:100]), errReader{cause})
	_, err := Decode(io.Discard, r, want(obj), nil, want(new), Limits{})
	if !errors.Is(err, cause) || errors.Is(err, ErrBadSource) {
		t.Fatalf("got %v, want the read error itself", err)
	}
}

type errReader struct{ err error }

func (e errReader) Read([]byte) (int, error) { return 0, e.err }

func TestLoadBase(t *testing.T) {
	old, _ := versions(t, 4096)
	got, err := LoadBase(bytes.NewReader(old), want(old))
	if err != nil || !bytes.Equal(got, old) {
		t.Fatalf("LoadBase: %v", err)
	}
	changed := append([]byte(nil), old...)
	changed[0] ^= 1
	for name, content := range map[string][]byte{"changed": changed, "longer": append(old, 1), "shorter": old[1:]} {
		if _, err := LoadBase(bytes.NewReader(content), want(old)); !errors.Is(err, ErrBadSource) {
			t.Errorf("%s base: got %v, want ErrBadSource", name, err)
		}
	}
}

func zstdCLI(t *testing.T) string {
	t.Helper()
	return need.Program(t, "zstd", "zstd")
}

func run(t *testing.T, name string, args ...string) {
	t.Helper()
	if out, err := exec.Command(name, args...).CombinedOutput(); err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
}

// What the reference zstd makes, sdupdate applies; what sdupdate publishes, the reference zstd
// decodes: the format is zstd's, not ours.
func TestInteropWithZstdCLI(t *testing.T) {
	cli := zstdCLI(t)
	dir := t.TempDir()
	old, new := versions(t, 3<<20)
	oldPath, newPath := filepath.Join(dir, "old"), filepath.Join(dir, "new")
	for p, b := range map[string][]byte{oldPath: old, newPath: new} {
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	read := func(p string) []byte {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}

	t.Run("zstd --patch-from applies", func(t *testing.T) {
		for _, level := range []string{"-3", "-19"} {
			out := filepath.Join(dir, "cli"+level+".zst")
			run(t, cli, "-q", "-f", level, "--patch-from="+oldPath, newPath, "-o", out)
			d := read(out)
			got, err := decode(d, want(d), old, want(new))
			if err != nil || !bytes.Equal(got, new) {
				t.Fatalf("zstd %s --patch-from: %v", level, err)
			}
		}
	})
	t.Run("zstd object decodes", func(t *testing.T) {
		out := filepath.Join(dir, "cli.zst")
		run(t, cli, "-q", "-f", "-19", newPath, "-o", out)
		obj := read(out)
		if got, err := decode(obj, want(obj), nil, want(new)); err != nil || !bytes.Equal(got, new) {
			t.Fatalf("zstd -19: %v", err)
		}
	})
	t.Run("our delta decodes with zstd -d --patch-from", func(t *testing.T) {
		in, out := filepath.Join(dir, "ours.zst"), filepath.Join(dir, "ours.out")
		if err := os.WriteFile(in, encode(t, new, old), 0o644); err != nil {
			t.Fatal(err)
		}
		run(t, cli, "-q", "-f", "-d", "--long=31", "--patch-from="+oldPath, in, "-o", out)
		if !bytes.Equal(read(out), new) {
			t.Fatal("zstd -d --patch-from gives other content")
		}
	})
	t.Run("zstd bomb is cut", func(t *testing.T) {
		zeros, bomb := filepath.Join(dir, "zeros"), filepath.Join(dir, "bomb.zst")
		if err := os.WriteFile(zeros, make([]byte, 64<<20), 0o644); err != nil {
			t.Fatal(err)
		}
		run(t, cli, "-q", "-f", "-19", zeros, "-o", bomb)
		b := read(bomb)
		var out countingWriter
		if _, err := Decode(&out, bytes.NewReader(b), want(b), nil, want(new), Limits{}); !errors.Is(err, ErrBadSource) {
			t.Fatalf("got %v, want ErrBadSource", err)
		}
		if out.n > int64(len(new))+1 {
			t.Fatalf("wrote %d bytes for a %d-byte file", out.n, len(new))
		}
	})
}

func TestDecompressBounded(t *testing.T) {
	_, content := versions(t, 100<<10)
	obj := encode(t, content, nil)
	if got, err := DecompressBounded(obj, int64(len(content))); err != nil || !bytes.Equal(got, content) {
		t.Fatalf("DecompressBounded: %v", err)
	}
	if _, err := DecompressBounded(obj, int64(len(content))-1); !errors.Is(err, ErrBadSource) {
		t.Fatalf("over the limit: got %v", err)
	}
	for name, src := range map[string][]byte{"truncated": obj[:len(obj)/2], "not zstd": content[:100], "huge window": frameHeader(31)} {
		if _, err := DecompressBounded(src, 16<<20); !errors.Is(err, ErrBadSource) {
			t.Errorf("%s: got %v, want ErrBadSource", name, err)
		}
	}
}

// zeroBomb is a zstd stream of under 64 KiB, with the given window, that decodes to prefix and
// then 256 MiB of zeros.
func zeroBomb(t *testing.T, window int, prefix []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	enc, err := zstd.NewWriter(&buf, zstd.WithWindowSize(window))
	if err != nil {
		t.Fatal(err)
	}
	enc.Write(prefix)
	for i := 0; i < 256; i++ {
		enc.Write(make([]byte, 1<<20))
	}
	enc.Close()
	if buf.Len() > 64<<10 {
		t.Fatalf("bomb is %d bytes", buf.Len())
	}
	return buf.Bytes()
}
