package updater

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/afero"

	"github.com/sdupdate/sdupdate/fetch"
	"github.com/sdupdate/sdupdate/fsutil"
)

// Partial downloads. A file of at least resumeMin bytes is fetched into a place of its own,
// named by its sha256, and renamed into staging only once verified whole. When its transfer
// breaks, the bytes already there stay: the next try, in this run or the next one, asks for the
// rest with a Range request, and hashes the bytes it kept before the ones that arrive, so a
// resumed file is verified exactly as a fresh one. A changed release names other content, so
// it never appends to the wrong bytes.
//
//	<work>/partial/
//	├── <sha256>        the first bytes of the file with that content
//	└── <sha256>.etag   the strong ETag they came with: If-Range for the rest
//
// Partial files no plan wants are removed when the next update plans; the free-space check
// counts only the bytes still to fetch.
const resumeMin = 1 << 20

const etagSuffix = ".etag"

func (l *layout) partialDir() string { return filepath.Join(l.work, "partial") }

// preparePartials marks the changes fetched through a partial file (one per content: two
// entries with the same sha256 would write one file at once; none a pack stages, whose
// staging file is written from the pack), removes the partial files no change of p wants, and
// returns how many bytes of p's downloads are already there.
func (e *Engine) preparePartials(l *layout, p *Plan) int64 {
	wanted := map[string]bool{}
	for i := range p.Changes {
		c := &p.Changes[i]
		c.Resume = !c.Local && c.File.SHA256 != "" && c.File.Size >= resumeMin && !wanted[c.File.SHA256] && c.inPack() == nil
		if c.Resume {
			wanted[c.File.SHA256] = true
		}
	}
	dir := l.partialDir()
	names, err := readDirNames(e, dir)
	if err != nil {
		return 0
	}
	var have int64
	for _, n := range names {
		sum := strings.TrimSuffix(n, etagSuffix)
		if !isSHA256(sum) {
			continue // not ours: left alone
		}
		p := filepath.Join(dir, n)
		if !wanted[sum] {
			if err := e.Fs.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
				e.Log.WithError(err).Warnf("cannot remove partial download %s", p)
			}
			continue
		}
		if n == sum {
			if fi, err := e.Fs.Stat(p); err == nil {
				have += fi.Size()
			}
		}
	}
	return have
}

func isSHA256(s string) bool {
	if len(s) != 64 {
		return false
	}
	_, err := hex.DecodeString(s)
	return err == nil && strings.ToLower(s) == s
}

// fetchResumable is fetchTo for a change marked Resume: it continues the partial file of the
// change's content, verifies it whole and renames it to staged.
func (e *Engine) fetchResumable(ctx context.Context, l *layout, url, staged string, c *Change, progress Progress) (verified, error) {
	dir := l.partialDir()
	if err := e.Fs.MkdirAll(dir, 0o700); err != nil {
		return verified{}, &localError{fmt.Errorf("cannot create %s: %w", dir, err)}
	}
	path := filepath.Join(dir, c.File.SHA256)
	out, err := e.Fs.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return verified{}, &localError{fmt.Errorf("cannot open partial download %s: %w", path, err)}
	}
	hs := sha256.New()
	have, err := e.resumePoint(out, hs, c.File.Size)
	if err != nil {
		out.Close()
		return verified{}, err
	}
	if progress != nil {
		progress.Add(have)
	}
	if have < c.File.Size {
		if have, err = e.fetchRest(ctx, url, path, out, hs, have, c.File.Size, progress); err != nil {
			out.Close()
			return verified{}, err
		}
	}
	if got := hex.EncodeToString(hs.Sum(nil)); have != c.File.Size || got != c.File.SHA256 {
		out.Close()
		e.dropPartial(path)
		return verified{}, &mismatchError{name: c.File.Name, url: url, msg: fmt.Sprintf("got %d bytes with sha256 %s, the manifest says %d bytes with sha256 %s", have, got, c.File.Size, c.File.SHA256)}
	}
	if err := fsutil.Commit(e.Fs, out, path, stagedAttrs(c)); err != nil {
		return verified{}, &localError{err}
	}
	if err := e.Fs.Rename(path, staged); err != nil {
		return verified{}, &localError{fmt.Errorf("cannot move %s to %s: %w", path, staged, err)}
	}
	_ = e.Fs.Remove(path + etagSuffix)
	return verified{sha256: c.File.SHA256, size: have}, nil
}

// resumePoint hashes the bytes a partial file already holds and returns their count; a file
// longer than the whole, or one that cannot be read back, starts over.
func (e *Engine) resumePoint(f afero.File, hs hash.Hash, size int64) (int64, error) {
	fi, err := f.Stat()
	if err != nil {
		return 0, &localError{fmt.Errorf("cannot stat partial download %s: %w", f.Name(), err)}
	}
	have := fi.Size()
	if have > 0 && have <= size {
		n, err := copyChunks(hs, io.LimitReader(f, have))
		if err == nil && n == have {
			return have, nil
		}
	}
	hs.Reset()
	if err := f.Truncate(0); err != nil {
		return 0, &localError{fmt.Errorf("cannot truncate partial download %s: %w", f.Name(), err)}
	}
	return 0, nil
}

// fetchRest appends the bytes from have on to out and returns how many out holds. A server that
// sends the whole file instead (its copy changed, or it ignores ranges) is written from the
// start; one whose answer does not continue at have makes the partial file start over.
func (e *Engine) fetchRest(ctx context.Context, url, path string, out afero.File, hs hash.Hash, have, size int64, progress Progress) (int64, error) {
	etag := ""
	if have > 0 {
		if b, err := afero.ReadFile(e.Fs, path+etagSuffix); err == nil {
			etag = string(b)
		}
	}
	part, err := e.Fetcher.OpenFrom(ctx, url, size, have, etag)
	if err != nil {
		if errors.Is(err, fetch.ErrBadRange) {
			e.dropPartial(path)
		}
		return have, err
	}
	defer part.Close()
	if part.Offset != have {
		hs.Reset()
		have = 0
		if err := out.Truncate(0); err != nil {
			return 0, &localError{fmt.Errorf("cannot truncate partial download %s: %w", path, err)}
		}
	}
	if _, err := out.Seek(have, io.SeekStart); err != nil {
		return have, &localError{fmt.Errorf("cannot seek in partial download %s: %w", path, err)}
	}
	var src io.Reader = part
	if progress != nil {
		src = &countingReader{r: part, p: progress}
	}
	n, err := copyChunksHashed(fsutil.WriteBehind(out, have), hs, src)
	have += n
	if err != nil {
		// Kept for the next try; the validator goes with it so the rest is asked for with
		// If-Range. Without one the rest is still verified whole.
		if part.ETag != "" && part.ETag != etag {
			_ = afero.WriteFile(e.Fs, path+etagSuffix, []byte(part.ETag), 0o600)
		} else if part.ETag == "" {
			_ = e.Fs.Remove(path + etagSuffix)
		}
		return have, err
	}
	return have, nil
}

// dropPartial removes a partial file whose bytes cannot be continued.
func (e *Engine) dropPartial(path string) {
	for _, p := range []string{path, path + etagSuffix} {
		if err := e.Fs.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
			e.Log.WithError(err).Warnf("cannot remove partial download %s", p)
		}
	}
}
