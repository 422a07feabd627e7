package delta

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"

	"github.com/klauspost/compress/zstd"
)

// A pack is one zstd stream (one or more frames, what `cat a b c | zstd` makes) whose decoded
// bytes are the contents of several files one after another, nothing between them. It is
// decoded like an object, with these bounds:
//
//   - the window a frame may claim is PackWindow(raw): what WindowFor allows for the raw size
//     (8 MiB up to 4 MiB of content, then twice the content rounded up to a power of two), but
//     never more than MaxPackWindow, the most a pack may decode to; a frame claiming more is
//     refused before any block is decoded;
//   - the output is cut one byte past the members' total, and each member is cut at its own
//     size, so a bomb costs at most that;
//   - members are streamed to their writers, never held, through the Decoder's copy buffer.

// MaxPackWindow is the largest window a pack's frame may claim: the most a pack may decode to
// (the manifest's MaxPackSize). No window larger than the whole stream helps an encoder.
const MaxPackWindow = 16 << 20

// PackWindow is the largest window a frame of a pack decoding to raw bytes may claim.
func PackWindow(raw int64) uint64 {
	return max(min(WindowFor(raw, 0), MaxPackWindow), zstd.MinWindowSize)
}

// Member is one file of a pack, in the order of the decoded stream.
type Member struct {
	Name string // for messages
	Want Want
}

// PackSink receives the members of a pack while it is decoded.
type PackSink interface {
	// Open returns where member i goes, or nil when it is not wanted: it is then decoded and
	// discarded, unchecked.
	Open(i int) (io.Writer, error)
	// Verified says that member i was written whole and matches its Want; nothing more will be
	// written to its writer.
	Verified(i int) error
}

// DecodePack decodes the pack src, which must be exactly srcWant, into members, cutting the
// decoded stream by their sizes. Each member that sink opens must match its Want, checked as
// it streams; sink.Verified is called for it as soon as it does, so a member verified before
// the pack fails is as good as from any other source. The decoded stream must end exactly after
// the last member.
//
// Errors reading src are returned as they are (a network error stays one); errors writing to a
// member's writer are *WriteError; sink's own errors are returned unchanged; everything else
// wraps ErrBadSource.
func (d *Decoder) DecodePack(src io.Reader, srcWant Want, members []Member, sink PackSink) error {
	var raw int64
	for _, m := range members {
		raw += m.Want.Size
	}
	window := PackWindow(raw)
	in := &verifying{r: src, h: sha256.New(), limit: srcWant.Size}
	// As in Decode: the limits anew, and no dictionary a delta left.
	if err := d.z.ResetWithOptions(in, zstd.WithDecoderMaxWindow(window), zstd.WithDecoderMaxMemory(window), zstd.WithDecoderDictDelete()); err != nil {
		return fmt.Errorf("cannot set up zstd decoder: %w", err)
	}
	defer d.z.ResetWithOptions(nil, zstd.WithDecoderDictDelete())

	out := io.LimitReader(d.z, raw+1)
	decErr := d.splitMembers(out, members, raw, sink)
	var we *WriteError
	var se *sourceError
	switch {
	case in.readErr != nil:
		return in.readErr
	case errors.As(decErr, &we):
		return decErr
	case decErr != nil && !errors.As(decErr, &se) && !errors.Is(decErr, errDecode):
		return decErr // the sink's
	}
	if decErr == nil {
		// The stream must end here: no more output, and nothing the decoder refuses.
		n, err := io.ReadFull(out, make([]byte, 1))
		switch {
		case n > 0:
			decErr = badSource("pack decodes to more than the %d bytes its files add up to", raw)
		case err != io.EOF && in.readErr == nil:
			decErr = &decodeError{err}
		}
	}
	if _, err := io.Copy(io.Discard, in); err != nil && in.readErr != nil {
		return in.readErr
	}
	if err := in.check(srcWant); err != nil {
		return err // a corrupt source explains a decode error better than the decoder does
	}
	if errors.Is(decErr, errDecode) {
		return badSource("pack does not decode: %v", errors.Unwrap(decErr))
	}
	return decErr
}

// errDecode marks an error of the zstd decoder itself, told apart from the sink's.
var errDecode = errors.New("zstd")

type decodeError struct{ err error }

func (e *decodeError) Error() string        { return e.err.Error() }
func (e *decodeError) Unwrap() error        { return e.err }
func (e *decodeError) Is(target error) bool { return target == errDecode }

// splitMembers copies each member's bytes from out to the writer sink gives it, checking those
// it keeps.
func (d *Decoder) splitMembers(out io.Reader, members []Member, raw int64, sink PackSink) error {
	var at int64 // where the current member starts in the decoded stream
	for i, m := range members {
		w, err := sink.Open(i)
		if err != nil {
			return err
		}
		var h *hashingWriter
		dst := io.Discard
		if w != nil {
			h = &hashingWriter{w: w, h: sha256.New()}
			dst = h
		}
		n, err := copyBuf(dst, io.LimitReader(out, m.Want.Size), d.buf)
		var we *WriteError
		switch {
		case errors.As(err, &we):
			return err
		case err != nil:
			return &decodeError{err}
		case n < m.Want.Size:
			return badSource("pack ends %d bytes into %s, at byte %d of the %d its files add up to", n, m.Name, at+n, raw)
		}
		at += n
		if h == nil {
			continue
		}
		if got := hex.EncodeToString(h.h.Sum(nil)); got != m.Want.SHA256 {
			return badSource("%s decodes from the pack to sha256 %s, the manifest says %s", m.Name, got, m.Want.SHA256)
		}
		if err := sink.Verified(i); err != nil {
			return err
		}
	}
	return nil
}
