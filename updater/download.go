package updater

import (
	"context"
	"crypto/md5"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"path/filepath"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/sdupdate/sdupdate/fetch"
	"github.com/sdupdate/sdupdate/fsutil"
	"github.com/sdupdate/sdupdate/internal/human"
	"github.com/sdupdate/sdupdate/logging"
	"github.com/sdupdate/sdupdate/manifest"
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

// retryable tells whether fetching a file again may help. What the network did is fetch's to
// judge; what only the engine knows is that bytes which are not the manifest's (a wrong hash, a
// body longer than the declared size) are worth another try, and a failure of this machine not.
func retryable(err error) bool {
	var le *localError
	var bad *badSourceError
	if errors.As(err, &le) || errors.As(err, &bad) {
		return false
	}
	var me *mismatchError
	if errors.As(err, &me) || errors.Is(err, fetch.ErrTooLong) {
		return true
	}
	return fetch.Temporary(err)
}

// verified is what staging proved of one file: the sha256 and size of the bytes staged.
type verified struct {
	sha256 string
	size   int64
}

// stageAll fetches (or, for mode-only changes, copies) every change into its staging file,
// Parallel at once, each verified while it streams, then fsyncs the staging directory: when this
// returns nil every staged byte is verified and durable. It returns what was verified of each
// change, in the plan's order.
func (e *Engine) stageAll(ctx context.Context, log *logrus.Entry, l *layout, rec *Record, f *fetched, p *Plan) ([]verified, error) {
	log = log.WithField(logging.FieldPhase, logging.PhaseDownload)
	if err := e.Fs.MkdirAll(rec.StagingDir, 0o700); err != nil {
		return nil, &localError{fmt.Errorf("cannot create staging directory %s: %w", rec.StagingDir, err)}
	}
	sh := &stageShared{progress: e.progressFor(p), turns: make(chan struct{}, 1), syncs: fsutil.NewSyncer()}
	if sh.progress != nil {
		defer sh.progress.Done()
	}
	// Each job writes only the entries of its own changes; they are read after every job is done.
	got := make([]verified, len(p.Changes))
	staged := map[string]string{}
	for i := range p.Changes {
		if p.Changes[i].CopyOf == "" {
			staged[p.Changes[i].File.Name] = rec.Ops[i].Staged
		}
	}
	err := e.stageJobs(ctx, log, l, rec, f.baseURL, p, got, sh)
	// Every file handed to the syncer is closed by now, whatever failed.
	if serr := sh.syncs.Wait(); err == nil && serr != nil {
		err = &localError{serr}
	}
	if err != nil {
		return nil, err
	}
	for i := range p.Changes {
		if c := &p.Changes[i]; c.CopyOf != "" {
			if got[i], err = e.stageCopy(staged[c.CopyOf], rec.Ops[i].Staged, c); err != nil {
				return nil, err
			}
		}
	}
	if err := fsutil.SyncDir(e.Fs, rec.StagingDir); err != nil {
		return nil, &localError{err}
	}
	return got, nil
}

// stageJobs stages, Parallel at once, every change fetched from its sources: each pack as one
// job, each other change as one. The members a pack could not give are then fetched from their
// own sources, Parallel at once too.
func (e *Engine) stageJobs(ctx context.Context, log *logrus.Entry, l *layout, rec *Record, baseURL string, p *Plan, got []verified, sh *stageShared) error {
	jobs := costliestFirst(p)
	files := 0
	for _, c := range p.Changes {
		if c.CopyOf == "" {
			files++
		}
	}
	notify := func(int) { e.notify(fmt.Sprintf("downloading %d/%d files", sh.filesDone.Load(), files)) }
	notify(0)
	var mu sync.Mutex
	var rest []int // changes whose pack failed
	stageChange := func(ctx context.Context, i int) error {
		v, err := e.stageOne(ctx, log, l, rec.Ops[i].Staged, baseURL, &p.Changes[i], sh)
		if got[i] = v; err == nil {
			sh.filesDone.Add(1)
		}
		return err
	}
	err := runParallel(ctx, max(e.Config.Parallel, 1), len(jobs), func(ctx context.Context, k int) error {
		if jobs[k].pack == nil {
			return stageChange(ctx, jobs[k].change)
		}
		left, err := e.stagePack(ctx, log, baseURL, rec, p, jobs[k].pack, got, sh)
		mu.Lock()
		rest = append(rest, left...)
		mu.Unlock()
		return err
	}, notify)
	if err != nil || len(rest) == 0 {
		return err
	}
	// Costliest first again, by the source after the pack.
	sort.SliceStable(rest, func(a, b int) bool {
		return p.Changes[rest[a]].Sources[1].Want.Size > p.Changes[rest[b]].Sources[1].Want.Size
	})
	return runParallel(ctx, max(e.Config.Parallel, 1), len(rest), func(ctx context.Context, k int) error {
		return stageChange(ctx, rest[k])
	}, notify)
}

// stageJob is one job of staging: a pack, or one change fetched from its own sources.
type stageJob struct {
	pack   *PackUse
	change int // when pack is nil: the change's position in the plan
	cost   int64
}

// costliestFirst is the order in which to fetch: the most bytes first. The longest transfer
// then runs beside all the others, and the link stays busy while the workers open, decode and
// fsync the small files, instead of carrying that one transfer alone at the end. The changes
// staged as a copy of another are no job.
func costliestFirst(p *Plan) []stageJob {
	var jobs []stageJob
	for i := range p.Changes {
		if c := &p.Changes[i]; c.CopyOf == "" && c.inPack() == nil {
			jobs = append(jobs, stageJob{change: i, cost: c.Cost()})
		}
	}
	for _, pu := range p.Packs {
		jobs = append(jobs, stageJob{pack: pu, cost: pu.Size})
	}
	sort.SliceStable(jobs, func(a, b int) bool { return jobs[a].cost > jobs[b].cost })
	return jobs
}

// stageShared is what the stagings of one run share.
type stageShared struct {
	progress  Progress       // or nil
	turns     chan struct{}  // large decodes take turns (see bigDecode)
	syncs     *fsutil.Syncer // fsyncs verified staging files off the download's path
	filesDone atomic.Int64   // files staged so far, for the status line
}

// runParallel runs job for each of 0..n-1 on workers goroutines. The first error cancels the
// context the other jobs get, stops handing out new ones and is returned; else ctx's error, if
// it ended first. afterEach is called after each job, one call at a time, with the number done.
func runParallel(ctx context.Context, workers, n int, job func(context.Context, int) error, afterEach func(done int)) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	jobs := make(chan int)
	var (
		mu       sync.Mutex
		firstErr error
		done     int
		wg       sync.WaitGroup
	)
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range jobs {
				err := job(ctx, i)
				mu.Lock()
				if err != nil && firstErr == nil {
					firstErr = err
					cancel()
				}
				done++
				afterEach(done)
				mu.Unlock()
			}
		}()
	}
feed:
	for i := 0; i < n; i++ {
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
	return firstErr
}

// progressFor is the progress bar of p's downloads, or nil.
func (e *Engine) progressFor(p *Plan) Progress {
	bytes, files := p.DownloadBytes()
	if e.NewProgress == nil || files == 0 {
		return nil
	}
	return e.NewProgress(files, bytes)
}

// stageOne produces one verified staging file from the cheapest source that works (see
// stageFromSources), each fetch tried up to Retries times. A pack is staged whole, by
// stagePack: here a change starts from the source after its pack.
func (e *Engine) stageOne(ctx context.Context, log *logrus.Entry, l *layout, staged, baseURL string, c *Change, sh *stageShared) (verified, error) {
	if c.Local {
		return e.stageLocal(l, staged, c)
	}
	if c.inPack() != nil {
		own := *c
		own.Sources = c.Sources[1:]
		c = &own
	}
	if len(c.Sources) == 0 {
		c.Sources = sourcesFor(manifest.File{Name: c.File.Name, SHA256: c.File.SHA256, Size: c.File.Size}, nil, 0)
	}
	return e.stageFromSources(ctx, log, baseURL, c, func(u string, src Source) (verified, error) {
		return e.withRetries(ctx, log, c.File.Name, src.Kind, func() (verified, error) {
			switch {
			case src.Kind != SourceFile:
				return e.decodeTo(ctx, l, u, staged, c, src, sh)
			case c.Resume:
				return e.fetchResumable(ctx, l, u, staged, c, sh.progress)
			default:
				return e.fetchTo(ctx, u, staged, c, sh)
			}
		})
	})
}

// withRetries runs try, the fetch of name's source of kind, up to Retries times while its error
// is one that trying again may cure.
func (e *Engine) withRetries(ctx context.Context, log *logrus.Entry, name string, kind SourceKind, try func() (verified, error)) (verified, error) {
	tries := max(e.Config.Retries, 1)
	delay := e.RetryDelay
	if delay == 0 {
		delay = 200 * time.Millisecond
	}
	for n := 1; ; n++ {
		v, err := try()
		if err == nil {
			log.WithFields(logrus.Fields{"file": name, "source": string(kind), "try": n}).Debug("file verified")
			return v, nil
		}
		if ctx.Err() != nil {
			return verified{}, ctx.Err()
		}
		if !retryable(err) || n >= tries {
			return verified{}, fmt.Errorf("cannot download %s after %d %s: %w", name, n, human.Plural(n, "try", "tries"), err)
		}
		log.WithFields(logrus.Fields{"file": name, "source": string(kind), "try": n, "error": err.Error()}).Warn("download failed; fetching it again")
		select {
		case <-ctx.Done():
			return verified{}, ctx.Err()
		case <-time.After(delay * time.Duration(n)):
		}
	}
}

// fetchTo streams url into staged, hashing as it goes; the staged file is truncated on every try,
// so the one that stays is always the last, verified one.
func (e *Engine) fetchTo(ctx context.Context, url, staged string, c *Change, sh *stageShared) (verified, error) {
	limit := c.File.Size
	if limit < 0 {
		limit = MaxLegacyFileSize
	}
	src, w, done, err := e.openStream(ctx, url, limit, staged, true, sh.progress)
	if err != nil {
		return verified{}, err
	}
	defer done()
	// Only a legacy manifest (md5, no sha256) needs the md5: hashing every byte twice costs a
	// fresh install of 128 MiB ~0.2 s of CPU for nothing.
	var hm hash.Hash
	dst := io.Writer(w)
	if c.File.SHA256 == "" {
		hm = md5.New()
		dst = io.MultiWriter(w, hm)
	}
	if _, err := copyChunks(dst, src); err != nil {
		return verified{}, err
	}
	got := verified{sha256: w.SHA256(), size: w.Size()}
	switch {
	case c.File.Size >= 0 && got.size != c.File.Size:
		return verified{}, &mismatchError{name: c.File.Name, url: url, msg: fmt.Sprintf("got %d bytes, the manifest says %d", got.size, c.File.Size)}
	case c.File.SHA256 != "" && got.sha256 != c.File.SHA256:
		return verified{}, &mismatchError{name: c.File.Name, url: url, msg: fmt.Sprintf("sha256 %s, the manifest says %s", got.sha256, c.File.SHA256)}
	case c.File.SHA256 == "" && hex.EncodeToString(hm.Sum(nil)) != c.File.MD5:
		return verified{}, &mismatchError{name: c.File.Name, url: url, msg: fmt.Sprintf("md5 %s, the manifest says %s", hex.EncodeToString(hm.Sum(nil)), c.File.MD5)}
	}
	// Mode and owner first, so the fsync makes them durable with the content and the rename into
	// place is all that remains.
	if err := w.CommitVia(stagedAttrs(c), sh.syncs); err != nil {
		return verified{}, &localError{err}
	}
	return got, nil
}

func stagedAttrs(c *Change) fsutil.Attrs {
	return fsutil.Attrs{Mode: c.Mode, Owner: c.HasOwner, UID: c.UID, GID: c.GID}
}

// copyChunks copies with fsutil.Copy and tells a failed write here from a failed read there.
func copyChunks(dst io.Writer, src io.Reader) (int64, error) {
	return localWrites(fsutil.Copy(dst, src))
}

// copyChunksHashed is copyChunks with every byte hashed into h too, beside the copy.
func copyChunksHashed(dst io.Writer, h hash.Hash, src io.Reader) (int64, error) {
	return localWrites(fsutil.CopyHashed(dst, h, src))
}

// localWrites makes a copy's failed write a localError, which no retry of the source can fix.
func localWrites(n int64, err error) (int64, error) {
	var we *fsutil.WriteError
	if errors.As(err, &we) {
		return n, &localError{we.Err}
	}
	return n, err
}

// openStream opens url, read to at most limit bytes and counted into progress, and the staging
// file it goes to, which hashes what it is written unless the caller's writer does (hashed
// false); done closes both. A failure to create the staging file is a localError, which no
// retry can fix.
func (e *Engine) openStream(ctx context.Context, url string, limit int64, staged string, hashed bool, progress Progress) (io.Reader, *fsutil.FileWriter, func(), error) {
	body, err := e.Fetcher.Open(ctx, url, limit)
	if err != nil {
		return nil, nil, nil, err
	}
	create := fsutil.Create
	if !hashed {
		create = fsutil.CreateUnhashed
	}
	w, err := create(e.Fs, staged)
	if err != nil {
		body.Close()
		return nil, nil, nil, &localError{err}
	}
	var r io.Reader = body
	if progress != nil {
		r = &countingReader{r: body, p: progress}
	}
	return r, w, func() { w.Close(); body.Close() }, nil
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

// stageCopy stages c as a copy of from, the verified staging file of another change with the
// same content: its own inode, with its own mode and owner.
func (e *Engine) stageCopy(from, staged string, c *Change) (verified, error) {
	sum, size, err := fsutil.CopyFile(e.Fs, from, staged, stagedAttrs(c))
	if err != nil {
		return verified{}, &localError{fmt.Errorf("cannot stage %s as a copy of %s: %w", c.File.Name, c.CopyOf, err)}
	}
	if sum != c.File.SHA256 || size != c.File.Size {
		return verified{}, &localError{fmt.Errorf("staged copy of %s for %s has sha256 %s (%d bytes), expected %s (%d bytes)",
			c.CopyOf, c.File.Name, sum, size, c.File.SHA256, c.File.Size)}
	}
	return verified{sha256: sum, size: size}, nil
}

// stageLocal copies an installed file whose content is right but whose mode is not: a new inode
// gets the new mode, so the snapshot's hard link keeps the old one.
func (e *Engine) stageLocal(l *layout, staged string, c *Change) (verified, error) {
	src := filepath.Join(l.install, filepath.FromSlash(c.File.Name))
	sum, size, err := fsutil.CopyFile(e.Fs, src, staged, stagedAttrs(c))
	if err != nil {
		return verified{}, &localError{err}
	}
	if sum != c.File.SHA256 {
		return verified{}, &localError{fmt.Errorf("installed file %s changed while it was being staged (sha256 %s, expected %s)", src, sum, c.File.SHA256)}
	}
	return verified{sha256: sum, size: size}, nil
}
