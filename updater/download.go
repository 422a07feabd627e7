package updater

import (
	"context"
	"crypto/md5"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/sdupdate/sdupdate/fetch"
	"github.com/sdupdate/sdupdate/fsutil"
	"github.com/sdupdate/sdupdate/logging"
)

// MaxLegacyFileSize caps a download whose manifest (the legacy md5 form) declares no size.
const MaxLegacyFileSize = 1 << 30

// mismatchError is a download whose bytes are not the ones the manifest names: fetched again.
type mismatchError struct {
	name, url string
	msg       string
}

func (e *mismatchError) Error() string {
	return fmt.Sprintf("%s (from %s): %s", e.name, fetch.Redact(e.url), e.msg)
}

// localError is a failure of this machine (disk full, permissions): fetching again cannot help.
type localError struct{ err error }

func (e *localError) Error() string { return e.err.Error() }
func (e *localError) Unwrap() error { return e.err }

func retryable(err error) bool {
	var le *localError
	if errors.As(err, &le) {
		return false
	}
	var me *mismatchError
	if errors.As(err, &me) || errors.Is(err, fetch.ErrTooLong) {
		// A body longer than the declared size is a wrong size: fetched again, like a bad hash.
		return true
	}
	var fe *fetch.Error
	if errors.As(err, &fe) {
		return fe.Temporary
	}
	var ne net.Error
	return errors.As(err, &ne) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, syscall.ECONNRESET)
}

// stageAll fetches (or, for mode-only changes, copies) every change into its staging file,
// Parallel at once, each verified while it streams, then fsyncs the staging directory: when this
// returns nil every staged byte is verified and durable.
func (e *Engine) stageAll(ctx context.Context, log *logrus.Entry, rec *Record, f *fetched, p *Plan) error {
	log = log.WithField(logging.FieldPhase, "download")
	if err := e.Fs.MkdirAll(rec.StagingDir, 0o700); err != nil {
		return &localError{fmt.Errorf("cannot create staging directory %s: %w", rec.StagingDir, err)}
	}
	bytes, files := p.DownloadBytes()
	var progress Progress
	if e.NewProgress != nil && files > 0 {
		progress = e.NewProgress(files, bytes)
		defer progress.Done()
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	jobs := make(chan int)
	var (
		mu       sync.Mutex
		firstErr error
		done     int
		wg       sync.WaitGroup
	)
	workers := e.Config.Parallel
	if workers < 1 {
		workers = 1
	}
	e.notify(fmt.Sprintf("downloading 0/%d files", len(p.Changes)))
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range jobs {
				err := e.stageOne(ctx, log, rec.Ops[i].Staged, f.baseURL, &p.Changes[i], progress)
				mu.Lock()
				if err != nil && firstErr == nil {
					firstErr = err
					cancel()
				}
				done++
				e.notify(fmt.Sprintf("downloading %d/%d files", done, len(p.Changes)))
				mu.Unlock()
			}
		}()
	}
feed:
	for i := range p.Changes {
		select {
		case jobs <- i:
		case <-ctx.Done():
			break feed
		}
	}
	close(jobs)
	wg.Wait()
	if firstErr == nil {
		firstErr = ctx.Err()
	}
	if firstErr != nil {
		return firstErr
	}
	if err := fsutil.SyncDir(e.Fs, rec.StagingDir); err != nil {
		return &localError{err}
	}
	return nil
}

// stageOne produces one verified staging file, trying up to Retries times.
func (e *Engine) stageOne(ctx context.Context, log *logrus.Entry, staged, baseURL string, c *Change, progress Progress) error {
	if c.Local {
		return e.stageLocal(staged, c)
	}
	u, err := fetch.Join(baseURL, c.File.Name)
	if err != nil {
		return fmt.Errorf("cannot build URL of %s: %w", c.File.Name, err)
	}
	tries := e.Config.Retries
	if tries < 1 {
		tries = 1
	}
	delay := e.RetryDelay
	if delay == 0 {
		delay = 200 * time.Millisecond
	}
	for try := 1; ; try++ {
		if c.Resume {
			err = e.fetchResumable(ctx, u, staged, c, progress)
		} else {
			err = e.fetchTo(ctx, u, staged, c, progress)
		}
		if err == nil {
			log.WithFields(logrus.Fields{"file": c.File.Name, "try": try}).Debug("file verified")
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if !retryable(err) || try >= tries {
			return fmt.Errorf("cannot download %s after %d %s: %w", c.File.Name, try, plural(try, "try", "tries"), err)
		}
		log.WithFields(logrus.Fields{"file": c.File.Name, "try": try, "error": err.Error()}).Warn("download failed; fetching it again")
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(delay * time.Duration(try)):
		}
	}
}

func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}

// fetchTo streams url into staged, hashing as it goes; the staged file is truncated on every try,
// so the one that stays is always the last, verified one.
func (e *Engine) fetchTo(ctx context.Context, url, staged string, c *Change, progress Progress) error {
	limit := c.File.Size
	if limit < 0 {
		limit = MaxLegacyFileSize
	}
	body, err := e.Fetcher.Open(ctx, url, limit)
	if err != nil {
		return err
	}
	defer body.Close()
	out, err := e.Fs.OpenFile(staged, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return &localError{fmt.Errorf("cannot create staging file %s: %w", staged, err)}
	}
	hs, hm := sha256.New(), md5.New()
	var src io.Reader = body
	if progress != nil {
		src = &countingReader{r: body, p: progress}
	}
	n, err := copyChunks(io.MultiWriter(out, hs, hm), src)
	if err != nil {
		out.Close()
		return err
	}
	gotSHA := hex.EncodeToString(hs.Sum(nil))
	switch {
	case c.File.Size >= 0 && n != c.File.Size:
		out.Close()
		return &mismatchError{name: c.File.Name, url: url, msg: fmt.Sprintf("got %d bytes, the manifest says %d", n, c.File.Size)}
	case c.File.SHA256 != "" && gotSHA != c.File.SHA256:
		out.Close()
		return &mismatchError{name: c.File.Name, url: url, msg: fmt.Sprintf("sha256 %s, the manifest says %s", gotSHA, c.File.SHA256)}
	case c.File.SHA256 == "" && hex.EncodeToString(hm.Sum(nil)) != c.File.MD5:
		out.Close()
		return &mismatchError{name: c.File.Name, url: url, msg: fmt.Sprintf("md5 %s, the manifest says %s", hex.EncodeToString(hm.Sum(nil)), c.File.MD5)}
	}
	if c.File.SHA256 == "" {
		// A legacy entry is recorded with what was verified, so `verify` later uses sha256.
		c.File.SHA256, c.File.Size = gotSHA, n
	}
	return e.finishStaged(out, staged, c)
}

// copyBuffers are the buffers of copyChunks: large, because every read and write costs a system
// call and every hash update a call (Go's 32 KiB default gives ~0.5 GB/s from a socket to a file,
// 1 MiB ~1.5 GB/s), and reused, so Parallel downloads of thousands of files allocate Parallel
// buffers, not thousands.
var copyBuffers = sync.Pool{New: func() any { b := make([]byte, 1<<20); return &b }}

// copyChunks copies in large chunks and tells a failed write here from a failed read there.
func copyChunks(dst io.Writer, src io.Reader) (int64, error) {
	bp := copyBuffers.Get().(*[]byte)
	defer copyBuffers.Put(bp)
	buf := *bp
	var n int64
	for {
		r, rerr := src.Read(buf)
		if r > 0 {
			if _, werr := dst.Write(buf[:r]); werr != nil {
				return n, &localError{fmt.Errorf("cannot write staging file: %w", werr)}
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

type countingReader struct {
	r io.Reader
	p Progress
}

func (c *countingReader) Read(b []byte) (int, error) {
	n, err := c.r.Read(b)
	c.p.Add(int64(n))
	return n, err
}

// stageLocal copies an installed file whose content is right but whose mode is not: a new inode
// gets the new mode, so the snapshot's hard link keeps the old one.
func (e *Engine) stageLocal(staged string, c *Change) error {
	src := filepath.Join(e.lay.install, filepath.FromSlash(c.File.Name))
	in, err := e.Fs.Open(src)
	if err != nil {
		return &localError{fmt.Errorf("cannot open installed file %s: %w", src, err)}
	}
	defer in.Close()
	out, err := e.Fs.OpenFile(staged, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return &localError{fmt.Errorf("cannot create staging file %s: %w", staged, err)}
	}
	hs := sha256.New()
	if _, err := copyChunks(io.MultiWriter(out, hs), in); err != nil {
		out.Close()
		return &localError{err}
	}
	if got := hex.EncodeToString(hs.Sum(nil)); got != c.File.SHA256 {
		out.Close()
		return &localError{fmt.Errorf("installed file %s changed while it was being staged (sha256 %s, expected %s)", src, got, c.File.SHA256)}
	}
	return e.finishStaged(out, staged, c)
}

// finishStaged gives the staged file its final mode and owner and makes it durable, so the
// rename into place is all that remains.
func (e *Engine) finishStaged(out interface {
	Sync() error
	Close() error
}, staged string, c *Change) error {
	// Mode and owner first, so the fsync below makes them durable with the content.
	if err := e.Fs.Chmod(staged, c.Mode); err != nil {
		out.Close()
		return &localError{fmt.Errorf("cannot set mode of %s: %w", staged, err)}
	}
	if c.HasOwner {
		if err := e.Fs.Chown(staged, c.UID, c.GID); err != nil && !(errors.Is(err, syscall.EPERM) && os.Geteuid() != 0) {
			out.Close()
			return &localError{fmt.Errorf("cannot set owner of %s: %w", staged, err)}
		}
	}
	if err := out.Sync(); err != nil {
		out.Close()
		return &localError{fmt.Errorf("cannot sync staging file %s: %w", staged, err)}
	}
	if err := out.Close(); err != nil {
		return &localError{fmt.Errorf("cannot close staging file %s: %w", staged, err)}
	}
	return nil
}
