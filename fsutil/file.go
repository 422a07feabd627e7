package fsutil

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"sync"
	"syscall"

	"github.com/spf13/afero"
)

// Attrs are what a written file is given before it is made durable: its mode, exactly, whatever
// the umask, and its owner when Owner is set.
type Attrs struct {
	Mode     os.FileMode
	Owner    bool
	UID, GID int
}

// FileWriter writes a file's content, hashing it with sha256 as it streams, so that a file is
// never held whole in memory nor read twice, and a large one is written to the disk as it
// streams (see writeBehindChunk). Commit gives it its attributes and fsyncs it;
// Close abandons it and is always safe to defer.
type FileWriter struct {
	fsys afero.Fs
	path string
	f    afero.File
	h    hash.Hash
	n    int64
	wb   *writeBehind // or nil
}

// Create creates (or truncates) path, private until Commit gives it its mode.
func Create(fsys afero.Fs, path string) (*FileWriter, error) {
	f, err := fsys.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return nil, fmt.Errorf("cannot create %s: %w", path, err)
	}
	return &FileWriter{fsys: fsys, path: path, f: f, h: sha256.New(), wb: newWriteBehind(f, 0)}, nil
}

// CreateUnhashed is Create for content whose writer hashes it already (a decoder checking its
// output): nothing is hashed twice, and SHA256 is empty.
func CreateUnhashed(fsys afero.Fs, path string) (*FileWriter, error) {
	w, err := Create(fsys, path)
	if err == nil {
		w.h = nil
	}
	return w, err
}

// Write writes p and hashes what was written. A failure names the file.
func (w *FileWriter) Write(p []byte) (int, error) {
	n, err := w.write(p)
	if w.h != nil {
		w.h.Write(p[:n])
	}
	return n, err
}

// write is Write without the hash.
func (w *FileWriter) write(p []byte) (int, error) {
	n, err := w.f.Write(p)
	w.n += int64(n)
	w.wb.wrote(n)
	if err != nil {
		return n, fmt.Errorf("cannot write %s: %w", w.path, err)
	}
	return n, nil
}

// ReadFrom writes all of src, as Write would, with the hashing beside the writing for a large
// file (see CopyHashed). A failed write is a *WriteError; a failed read is returned as it is.
func (w *FileWriter) ReadFrom(src io.Reader) (int64, error) {
	if w.h == nil {
		return Copy(unhashed{w}, src)
	}
	return CopyHashed(unhashed{w}, w.h, src)
}

// unhashed writes to a FileWriter's file without hashing, for a caller that hashes itself.
type unhashed struct{ w *FileWriter }

func (u unhashed) Write(p []byte) (int, error) { return u.w.write(p) }

// SHA256 is the hex sha256 of everything written so far (empty for CreateUnhashed).
func (w *FileWriter) SHA256() string {
	if w.h == nil {
		return ""
	}
	return hex.EncodeToString(w.h.Sum(nil))
}

// Size is the number of bytes written so far.
func (w *FileWriter) Size() int64 { return w.n }

// Commit sets a's mode and owner, then fsyncs and closes the file, so that content and
// attributes are durable together and a rename is all that remains.
func (w *FileWriter) Commit(a Attrs) error { return w.CommitVia(a, nil) }

// CommitVia is Commit with the fsync and close handed to s, so the caller goes on at once; the
// file is durable once s.Wait returns nil. A nil s syncs here.
func (w *FileWriter) CommitVia(a Attrs, s *Syncer) error {
	f := w.f
	w.f = nil
	if err := setAttrs(w.fsys, f, w.path, a); err != nil {
		return err
	}
	if s == nil {
		return syncClose(f, w.path)
	}
	s.add(f, w.path)
	return nil
}

// Commit gives the open file f, written at path, a's mode and owner, then fsyncs and closes it.
// f is closed whatever happens.
func Commit(fsys afero.Fs, f afero.File, path string, a Attrs) error {
	if err := setAttrs(fsys, f, path, a); err != nil {
		return err
	}
	return syncClose(f, path)
}

// setAttrs gives the open file f, written at path, a's mode and owner; f is closed if it fails.
func setAttrs(fsys afero.Fs, f afero.File, path string, a Attrs) error {
	if err := fsys.Chmod(path, a.Mode); err != nil {
		f.Close()
		return fmt.Errorf("cannot set mode of %s: %w", path, err)
	}
	if a.Owner {
		if err := Chown(fsys, path, a.UID, a.GID); err != nil {
			f.Close()
			return err
		}
	}
	return nil
}

// Close abandons an uncommitted file: it is closed, not removed. After Commit it does nothing.
func (w *FileWriter) Close() {
	if w.f != nil {
		w.f.Close()
		w.f = nil
	}
}

// copyBuffers are Copy's buffers: large, because every read and write costs a system call and
// every hash update a call (Go's 32 KiB default gives ~0.5 GB/s from a socket to a file, 1 MiB
// ~1.5 GB/s), and reused, so Parallel downloads of thousands of files allocate Parallel buffers,
// not thousands.
var copyBuffers = sync.Pool{New: func() any { b := make([]byte, 1<<20); return &b }}

// WriteError is a Copy that failed writing to dst, not reading from src: the fault is on this
// side (disk full, permissions), where trying the source again cannot help.
type WriteError struct{ Err error }

func (e *WriteError) Error() string { return e.Err.Error() }
func (e *WriteError) Unwrap() error { return e.Err }

// Copy copies src to dst in large chunks (see copyBuffers). A failed write is a *WriteError; a
// failed read is returned as it is.
func Copy(dst io.Writer, src io.Reader) (int64, error) {
	if fw, ok := dst.(*FileWriter); ok {
		return fw.ReadFrom(src)
	}
	bp := copyBuffers.Get().(*[]byte)
	defer copyBuffers.Put(bp)
	buf := *bp
	var n int64
	for {
		r, rerr := src.Read(buf)
		if r > 0 {
			if _, werr := dst.Write(buf[:r]); werr != nil {
				return n, &WriteError{werr}
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

// hashBesideAfter is how much CopyHashed hashes in line before it moves the hashing to a
// goroutine of its own, and hashBuffers how many copy buffers a large file then has in flight.
// SHA-256 runs at about the speed a socket is read and a file written, so a large file's hash
// beside its copy takes the time of one of them instead of both; a small file, most of them,
// is done before a goroutine would pay for itself.
const (
	hashBesideAfter = 4 << 20
	hashBuffers     = 3
)

// CopyHashed is Copy that also writes every byte copied to h, h seeing them in order. Past
// hashBesideAfter bytes, h is written on its own goroutine while the next chunk is read and
// written; h has seen every byte copied when CopyHashed returns, whatever it returns.
func CopyHashed(dst io.Writer, h hash.Hash, src io.Reader) (int64, error) {
	bp := copyBuffers.Get().(*[]byte)
	var n int64
	for n < hashBesideAfter {
		r, rerr := src.Read(*bp)
		if r > 0 {
			if _, werr := dst.Write((*bp)[:r]); werr != nil {
				copyBuffers.Put(bp)
				return n, &WriteError{werr}
			}
			h.Write((*bp)[:r])
			n += int64(r)
		}
		if rerr != nil {
			copyBuffers.Put(bp)
			if rerr == io.EOF {
				return n, nil
			}
			return n, rerr
		}
	}
	return copyHashBeside(dst, h, src, n, bp)
}

// copyHashBeside is CopyHashed's second stage: this goroutine reads and writes, another hashes
// what was written, each buffer going back to be read into once it is hashed.
func copyHashBeside(dst io.Writer, h hash.Hash, src io.Reader, n int64, first *[]byte) (int64, error) {
	type chunk struct {
		bp *[]byte
		n  int
	}
	free := make(chan *[]byte, hashBuffers)
	full := make(chan chunk, hashBuffers)
	free <- first
	for range hashBuffers - 1 {
		free <- copyBuffers.Get().(*[]byte)
	}
	hashed := make(chan struct{})
	go func() {
		defer close(hashed)
		for c := range full {
			h.Write((*c.bp)[:c.n])
			free <- c.bp
		}
	}()
	defer func() {
		close(full)
		<-hashed
		for range hashBuffers {
			copyBuffers.Put(<-free)
		}
	}()
	for {
		bp := <-free
		r, rerr := src.Read(*bp)
		if r > 0 {
			if _, werr := dst.Write((*bp)[:r]); werr != nil {
				free <- bp
				return n, &WriteError{werr}
			}
			n += int64(r)
			full <- chunk{bp, r}
		} else {
			free <- bp
		}
		if rerr == io.EOF {
			return n, nil
		}
		if rerr != nil {
			return n, rerr
		}
	}
}

// CopyFile streams src to dst (created or truncated), gives it a and fsyncs it. It returns the
// sha256 and size of the bytes written.
func CopyFile(fsys afero.Fs, src, dst string, a Attrs) (sum string, size int64, err error) {
	in, err := fsys.Open(src)
	if err != nil {
		return "", 0, fmt.Errorf("cannot open %s: %w", src, err)
	}
	defer in.Close()
	w, err := Create(fsys, dst)
	if err != nil {
		return "", 0, err
	}
	defer w.Close()
	if _, err := Copy(w, in); err != nil {
		var we *WriteError
		if errors.As(err, &we) {
			return "", 0, we.Err // it names dst
		}
		return "", 0, fmt.Errorf("cannot read %s: %w", src, err)
	}
	if err := w.Commit(a); err != nil {
		return "", 0, err
	}
	return w.SHA256(), w.Size(), nil
}

// HashFile streams p through sha256 and returns the hex sum and the size.
func HashFile(fsys afero.Fs, p string) (sum string, size int64, err error) {
	f, err := fsys.Open(p)
	if err != nil {
		return "", 0, fmt.Errorf("cannot open %s: %w", p, err)
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(h, f)
	if err != nil {
		return "", 0, fmt.Errorf("cannot read %s: %w", p, err)
	}
	return hex.EncodeToString(h.Sum(nil)), n, nil
}

// Chown gives p the owner uid:gid. A sdupdate that is not root cannot give files away (EPERM);
// it then keeps the owner the file has, which is the best it can do, and that is no error.
func Chown(fsys afero.Fs, p string, uid, gid int) error {
	err := fsys.Chown(p, uid, gid)
	if err != nil && !(errors.Is(err, syscall.EPERM) && os.Geteuid() != 0) {
		return fmt.Errorf("cannot set owner of %s to %d:%d: %w", p, uid, gid, err)
	}
	return nil
}
