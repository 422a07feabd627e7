// Package delta owns the zstd forms in which a release may publish a file besides the file
// itself: a compressed object (the file alone, zstd) and a delta (zstd with an older version of
// the file as a raw dictionary, what `zstd --patch-from=OLD` makes). It decodes both for the
// updater and encodes both for the publisher.
//
// Decoding trusts nothing it reads. The fetched bytes are hashed as they stream and must match
// the size and sha256 the signed manifest gives for that source; the output is hashed as it is
// written, cut one byte past the size the manifest gives for the file, and must match the file's
// sha256 and size. A source that fails any of these, or does not decode, is an error wrapping
// ErrBadSource, so the caller can move on to the next source.
//
// Memory is bounded, and what bounds it is this:
//
//   - the base (the old content, for a delta) is held in memory whole: the caller decides how
//     large a file it delta-decodes at all (see LoadBase);
//   - the decoder's history window: a frame may claim at most WindowFor(size, base) bytes
//     (at least 8 MiB, else twice the larger of output and base rounded up to a power of two,
//     which is what `zstd --patch-from` asks for), and never more than Limits.MaxWindow; a frame
//     claiming more is refused before any block is decoded (WithDecoderMaxWindow and
//     WithDecoderMaxMemory both set to it);
//   - one decoder goroutine (WithDecoderConcurrency(1), low-memory mode) and a 64 KiB copy
//     buffer; the output is streamed to the writer, never held. A Decoder reused for many
//     streams keeps the buffers of the largest window it has decoded with, and the limits
//     are set anew for each stream.
//
// So decoding a file of N bytes against a base of B bytes needs about B + min(window, N) plus
// a few MiB; disk use is at most the declared size plus one byte.
package delta

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"math/bits"

	"github.com/klauspost/compress/zstd"
)

// DefaultMaxWindow is the largest history window a frame may claim unless Limits say otherwise.
const DefaultMaxWindow = 512 << 20

// minWindow is the window any frame may claim, whatever its size: zstd's own default for a
// stream of unknown size at the higher levels.
const minWindow = 8 << 20

// ErrBadSource is wrapped by every error that says the fetched bytes are not usable: wrong size
// or sha256, not zstd, truncated, claiming too much memory, or decoding to the wrong content.
var ErrBadSource = errors.New("unusable source")

// Want is what the signed manifest says a stream of bytes must be.
type Want struct {
	SHA256 string // 64 lowercase hex
	Size   int64
}

// Limits bound one decode.
type Limits struct {
	MaxWindow uint64 // 0 = DefaultMaxWindow
}

// WriteError is a failed write to the output: a problem of this machine, not of the source.
type WriteError struct{ Err error }

func (e *WriteError) Error() string { return fmt.Sprintf("cannot write decoded output: %v", e.Err) }
func (e *WriteError) Unwrap() error { return e.Err }

type sourceError struct{ msg string }

func (e *sourceError) Error() string        { return e.msg }
func (e *sourceError) Is(target error) bool { return target == ErrBadSource }

func badSource(format string, args ...any) error {
	return &sourceError{msg: fmt.Sprintf(format, args...)}
}

// WindowFor is the largest window a frame decoding to size bytes against base may claim.
func WindowFor(size int64, base int) uint64 {
	larger := uint64(max(size, int64(base), 1))
	w := uint64(1) << bits.Len64(larger-1) // the next power of two ≥ larger
	return max(2*w, minWindow)
}

// Decoder decodes objects and deltas one after another with one zstd decoder and one copy
// buffer, so that a run of many files does not build a decoder, its history buffers and a
// dictionary table for each. It is not safe for concurrent use; each goroutine needs its own.
// The zero value is not usable: make one with NewDecoder.
type Decoder struct {
	z   *zstd.Decoder
	buf []byte
}

// NewDecoder returns a Decoder on one goroutine (one core), in zstd's low-memory mode.
func NewDecoder() (*Decoder, error) {
	z, err := zstd.NewReader(nil, zstd.WithDecoderConcurrency(1), zstd.WithDecoderLowmem(true),
		zstd.WithDecoderMaxWindow(minWindow), zstd.WithDecoderMaxMemory(minWindow))
	if err != nil {
		return nil, fmt.Errorf("cannot set up zstd decoder: %w", err)
	}
	return &Decoder{z: z, buf: make([]byte, 64<<10)}, nil
}

// Close releases the decoder's goroutines and buffers.
func (d *Decoder) Close() { d.z.Close() }

// Decode decodes the zstd stream src into dst with a decoder made for this one stream; see
// (*Decoder).Decode.
func Decode(dst io.Writer, src io.Reader, srcWant Want, base []byte, out Want, lim Limits) (int64, error) {
	d, err := NewDecoder()
	if err != nil {
		return 0, err
	}
	defer d.Close()
	return d.Decode(dst, src, srcWant, base, out, lim)
}

// Decode decodes the zstd stream src into dst. src must be exactly srcWant (size and sha256),
// the output exactly out; base is the delta's dictionary, nil for a compressed object. It
// returns the number of bytes written. Errors reading src are returned wrapped as they are (a
// network error stays one); errors writing dst are *WriteError; everything else wraps
// ErrBadSource.
func (d *Decoder) Decode(dst io.Writer, src io.Reader, srcWant Want, base []byte, out Want, lim Limits) (int64, error) {
	window := WindowFor(out.Size, len(base))
	maxWindow := lim.MaxWindow
	if maxWindow == 0 {
		maxWindow = DefaultMaxWindow
	}
	window = max(min(window, maxWindow), zstd.MinWindowSize)
	in := &verifying{r: src, h: sha256.New(), limit: srcWant.Size}
	// The limits and the dictionary are set anew for every stream: an object must never
	// decode against the previous delta's base, nor any stream within another's window.
	opts := []zstd.DOption{zstd.WithDecoderMaxWindow(window), zstd.WithDecoderMaxMemory(window), zstd.WithDecoderDictDelete()}
	if base != nil {
		// ID 0: `zstd --patch-from` writes no dictionary ID, and the decoder takes a frame
		// without one as dictionary 0.
		opts = append(opts, zstd.WithDecoderDictRaw(0, base))
	}
	if err := d.z.ResetWithOptions(in, opts...); err != nil {
		return 0, fmt.Errorf("cannot set up zstd decoder: %w", err)
	}
	// Let go of src and of the dictionary table; zstd's history may still point at the base
	// until the next stream, so a Decoder holds at most one base beyond its caller's.
	defer d.z.ResetWithOptions(nil, zstd.WithDecoderDictDelete())

	outHash := sha256.New()
	w := &hashingWriter{w: dst, h: outHash}
	n, decErr := copyBuf(w, io.LimitReader(d.z, out.Size+1), d.buf)
	var we *WriteError
	if errors.As(decErr, &we) || in.readErr != nil {
		if in.readErr != nil {
			return n, in.readErr
		}
		return n, decErr
	}
	// Whatever the decoder left unread is still part of the source and must be hashed, but
	// never more than its declared size.
	if _, err := io.Copy(io.Discard, in); err != nil && in.readErr != nil {
		return n, in.readErr
	}
	if err := in.check(srcWant); err != nil {
		return n, err // a corrupt source explains a decode error better than the decoder does
	}
	switch {
	case decErr != nil:
		return n, badSource("source does not decode: %v", decErr)
	case n > out.Size:
		return n, badSource("source decodes to more than the %d bytes the manifest gives", out.Size)
	case n != out.Size:
		return n, badSource("source decodes to %d bytes, the manifest says %d", n, out.Size)
	}
	if got := hex.EncodeToString(outHash.Sum(nil)); got != out.SHA256 {
		return n, badSource("source decodes to sha256 %s, the manifest says %s", got, out.SHA256)
	}
	return n, nil
}

// copyBuf copies through buf and tells a failed write from a failed read.
func copyBuf(dst io.Writer, src io.Reader, buf []byte) (int64, error) {
	var n int64
	for {
		r, rerr := src.Read(buf)
		if r > 0 {
			if _, werr := dst.Write(buf[:r]); werr != nil {
				return n, werr
			}
			n += int64(r)
		}
		if rerr == io.EOF {
			return n, nil
		}
		if rerr != nil {
			return n, rerr
		}
	}
}

type hashingWriter struct {
	w io.Writer
	h hash.Hash
}

func (hw *hashingWriter) Write(p []byte) (int, error) {
	n, err := hw.w.Write(p)
	hw.h.Write(p[:n])
	if err != nil {
		return n, &WriteError{Err: err}
	}
	return n, nil
}

// verifying hashes what it reads, reads at most limit+1 bytes, and remembers the first error of
// the underlying reader, so that it is not mistaken for a decode error.
type verifying struct {
	r       io.Reader
	h       hash.Hash
	limit   int64
	n       int64
	readErr error
}

func (v *verifying) Read(p []byte) (int, error) {
	if v.readErr != nil {
		return 0, v.readErr
	}
	if rest := v.limit + 1 - v.n; rest < int64(len(p)) {
		if rest <= 0 {
			return 0, io.EOF
		}
		p = p[:rest]
	}
	n, err := v.r.Read(p)
	v.h.Write(p[:n])
	v.n += int64(n)
	if err != nil && err != io.EOF {
		v.readErr = fmt.Errorf("cannot read source: %w", err)
		return n, v.readErr
	}
	return n, err
}

func (v *verifying) check(want Want) error {
	if v.n != want.Size {
		if v.n > want.Size {
			return badSource("source is longer than the %d bytes the manifest gives", want.Size)
		}
		return badSource("source is %d bytes, the manifest says %d", v.n, want.Size)
	}
	if got := hex.EncodeToString(v.h.Sum(nil)); got != want.SHA256 {
		return badSource("source has sha256 %s, the manifest says %s", got, want.SHA256)
	}
	return nil
}

// LoadBase reads the base of a delta (an installed file, or a snapshot's copy of one) whole and
// checks it is the content the delta was made from. It reads at most want.Size+1 bytes. An
// error wrapping ErrBadSource means the base is not that content (it changed, say): the delta
// cannot be used, another source can.
func LoadBase(r io.Reader, want Want) ([]byte, error) {
	buf := make([]byte, 0, want.Size+1)
	h := sha256.New()
	lr := io.LimitReader(r, want.Size+1)
	for {
		if len(buf) == cap(buf) {
			break
		}
		n, err := lr.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("cannot read delta base: %w", err)
		}
	}
	h.Write(buf)
	if int64(len(buf)) != want.Size {
		return nil, badSource("delta base is not the %d-byte content the delta was made from", want.Size)
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != want.SHA256 {
		return nil, badSource("delta base has sha256 %s, the delta was made from %s", got, want.SHA256)
	}
	return buf, nil
}

// DecompressBounded decodes a zstd stream whose content is not known in advance but may be at
// most limit bytes (a compressed manifest, before its signature can be checked). More output
// than limit, or a frame claiming a window larger than such output needs, wraps ErrBadSource.
//
// It decodes in one call, not through a stream reader, which allocates a whole window up front:
// the output is sized from the frame header's content size (one past limit is refused before
// any block is decoded, and no more is allocated than the rest of the input can decode to), or
// grows as it is decoded when the frame gives none, to limit at most either way.
func DecompressBounded(src []byte, limit int64) ([]byte, error) {
	window := max(min(WindowFor(limit, 0), DefaultMaxWindow), zstd.MinWindowSize)
	dec, err := zstd.NewReader(nil, zstd.WithDecoderConcurrency(1), zstd.WithDecoderLowmem(true),
		zstd.WithDecoderMaxWindow(window), zstd.WithDecoderMaxMemory(uint64(max(limit, 1))))
	if err != nil {
		return nil, fmt.Errorf("cannot set up zstd decoder: %w", err)
	}
	defer dec.Close()
	out, err := dec.DecodeAll(src, nil)
	switch {
	case errors.Is(err, zstd.ErrDecoderSizeExceeded) || err == nil && int64(len(out)) > limit:
		return nil, badSource("decodes to more than %d bytes", limit)
	case err != nil:
		return nil, badSource("does not decode: %v", err)
	}
	return out, nil
}
