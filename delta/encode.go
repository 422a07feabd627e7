package delta

import (
	"fmt"
	"io"

	"github.com/klauspost/compress/zstd"
)

// Level is the encoder level the publisher uses for objects and deltas. Publishing runs once
// per release and decoding speed hardly depends on the level, so the best ratio is worth the
// time; the figures behind the choice are in the README (bench).
const Level = zstd.SpeedBestCompression

// Encode writes src (size bytes) zstd-compressed to dst; with a base, as a delta against it (the
// base as a raw dictionary, which the reference decoder reads as `zstd -d --patch-from=BASE`).
// A delta's window covers the whole of base and output, so every byte of the base can be
// referred to; an object's is at most 8 MiB, so a large file decodes in little memory. Both are
// within what Decode accepts for that size and base.
func Encode(dst io.Writer, src io.Reader, size int64, base []byte) error {
	larger := max(size, int64(len(base)), 1)
	if base == nil {
		larger = min(larger, minWindow)
	}
	window := zstd.MinWindowSize
	for int64(window) < larger && window < zstd.MaxWindowSize {
		window *= 2
	}
	opts := []zstd.EOption{
		zstd.WithEncoderLevel(Level),
		zstd.WithEncoderConcurrency(1),
		zstd.WithWindowSize(window),
		zstd.WithEncoderCRC(true),
	}
	if base != nil {
		opts = append(opts, zstd.WithEncoderDictRaw(0, base))
	}
	enc, err := zstd.NewWriter(dst, opts...)
	if err != nil {
		return fmt.Errorf("cannot set up zstd encoder: %w", err)
	}
	if size >= 0 {
		enc.ResetContentSize(dst, size)
	}
	if _, err := io.Copy(enc, src); err != nil {
		enc.Close()
		return fmt.Errorf("cannot compress: %w", err)
	}
	if err := enc.Close(); err != nil {
		return fmt.Errorf("cannot compress: %w", err)
	}
	return nil
}
