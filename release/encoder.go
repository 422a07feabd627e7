package release

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"math/bits"
	"os/exec"
	"regexp"
	"strconv"
	"strings"

	"github.com/spf13/afero"

	"github.com/sdupdate/sdupdate/delta"
	"github.com/sdupdate/sdupdate/manifest"
)

// An encoder makes a release's zstd sources. Whatever it writes is decoded back with the
// client's decoder before it is published (see publisher.check), so an encoder's output is
// trusted no more than a download is.
type encoder interface {
	// object writes the zstd form of in to dst.
	object(ctx context.Context, dst io.Writer, in input) error
	// delta writes in as zstd frames with base as their raw dictionary (`--patch-from`).
	delta(ctx context.Context, dst io.Writer, in, base input) error
	// pack writes content, the members of a pack one after another, as zstd frames of a window
	// of at most 8 MiB, so that a client decodes a pack in little memory.
	pack(ctx context.Context, dst io.Writer, content []byte) error
	// String names the encoder in messages.
	String() string
}

// input is one file an encoder reads.
type input struct {
	path    string // in the release's filesystem (for the reference encoder, the OS's)
	size    int64
	content []byte // the whole content when already read, else nil
}

// builtin is the encoder linked into sdupdate (klauspost/compress at its best level).
type builtin struct{ fsys afero.Fs }

func (builtin) String() string { return "the built-in zstd encoder" }

func (b builtin) object(_ context.Context, dst io.Writer, in input) error {
	if in.content != nil {
		return delta.Encode(dst, bytes.NewReader(in.content), in.size, nil)
	}
	f, err := b.fsys.Open(in.path)
	if err != nil {
		return fmt.Errorf("cannot read %s: %w", in.path, err)
	}
	defer f.Close()
	return delta.Encode(dst, f, in.size, nil)
}

func (builtin) delta(_ context.Context, dst io.Writer, in, base input) error {
	return delta.Encode(dst, bytes.NewReader(in.content), in.size, base.content)
}

// pack relies on Encode's window for content without a base: at most 8 MiB.
func (builtin) pack(_ context.Context, dst io.Writer, content []byte) error {
	return delta.Encode(dst, bytes.NewReader(content), int64(len(content)), nil)
}

// minReferenceVersion is the oldest zstd CLI with --patch-from.
const minReferenceVersion = "1.4.5"

// objectWindowLog is the reference encoder's window for objects: 8 MiB, the built-in encoder's,
// so a large file still decodes in little memory. A window over the whole file saves next to
// nothing at level 19 (measured: postgres, 9.0 MB, 3,409,753 bytes at 8 MiB, 3,409,621 with
// --long=24, 3,409,620 with --ultra -22 --long=24; python3.11, 6.8 MB, is within 8 MiB and
// gains 0.01 % from -22).
const objectWindowLog = 23

// referenceZstd runs the reference zstd CLI (`zstd -19`), which makes objects about 15 % and
// deltas about 16 % smaller than the built-in encoder on real binaries, for several times the
// publisher's CPU time.
type referenceZstd struct {
	path    string
	version string
}

func (z *referenceZstd) String() string { return "zstd " + z.version + " at " + z.path }

// newReferenceZstd checks that path runs a zstd CLI recent enough for --patch-from. Every error
// wraps ErrUsage: it is about the --zstd argument.
func newReferenceZstd(ctx context.Context, path string) (*referenceZstd, error) {
	hint := "; install zstd (1.4.5 or later) or leave out --zstd"
	out, err := exec.CommandContext(ctx, path, "--version").CombinedOutput()
	if err != nil {
		return nil, usagef("cannot run zstd at %s: %v%s", path, err, hint)
	}
	m := regexp.MustCompile(`\bv(\d+\.\d+\.\d+)\b`).FindStringSubmatch(string(out))
	if m == nil {
		return nil, usagef("%s --version printed %q, not a zstd version%s", path, firstLine(out), hint)
	}
	if c, err := manifest.CompareVersions(m[1], minReferenceVersion); err != nil || c < 0 {
		return nil, usagef("zstd at %s is %s, older than %s, which --patch-from needs%s", path, m[0], minReferenceVersion, hint)
	}
	return &referenceZstd{path: path, version: m[0]}, nil
}

func (z *referenceZstd) object(ctx context.Context, dst io.Writer, in input) error {
	return z.run(ctx, dst, nil, in.path, "-19", "--long="+strconv.Itoa(objectWindowLog))
}

// pack streams content to zstd's stdin, with its size, so the frame says it and zstd sizes
// its tables for it.
func (z *referenceZstd) pack(ctx context.Context, dst io.Writer, content []byte) error {
	return z.run(ctx, dst, bytes.NewReader(content), "", "-19", "--long="+strconv.Itoa(objectWindowLog),
		"--stream-size="+strconv.Itoa(len(content)))
}

// delta asks for the window a client allows for this file and base (delta.WindowFor), so every
// byte of the base can be referred to; --patch-from would choose about as much by itself.
func (z *referenceZstd) delta(ctx context.Context, dst io.Writer, in, base input) error {
	window := min(delta.WindowFor(in.size, int(base.size)), delta.DefaultMaxWindow)
	wlog := bits.Len64(window) - 1
	return z.run(ctx, dst, nil, in.path, "-19", "--patch-from="+base.path, "--long="+strconv.Itoa(wlog))
}

// run compresses file, or stdin when file is "", to dst with args; -qq keeps zstd's advice on
// its parameters off stderr.
func (z *referenceZstd) run(ctx context.Context, dst io.Writer, stdin io.Reader, file string, args ...string) error {
	args = append(args, "-qq", "-c", "--no-progress")
	what := "its input"
	if file != "" {
		args, what = append(args, "--", file), file
	}
	cmd := exec.CommandContext(ctx, z.path, args...)
	var stderr bytes.Buffer
	cmd.Stdin, cmd.Stdout, cmd.Stderr = stdin, dst, &stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("cannot compress %s with `%s`: %w%s", what, strings.Join(cmd.Args, " "), err, stderrText(stderr.Bytes()))
	}
	return nil
}

func stderrText(b []byte) string {
	s := strings.TrimSpace(string(b))
	if s == "" {
		return ""
	}
	if len(s) > 500 {
		s = s[:500] + "…"
	}
	return ": " + s
}

func firstLine(b []byte) string {
	s, _, _ := strings.Cut(strings.TrimSpace(string(b)), "\n")
	return s
}
