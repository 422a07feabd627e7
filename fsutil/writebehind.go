package fsutil

import (
	"io"
	"syscall"

	"github.com/spf13/afero"
)

// Write-behind. A large file must be durable before it is put in place, and an fsync issued
// only once it is written whole finds all of it still in the page cache: the run then waits for
// the disk to write a gigabyte after the last byte arrived. Started early, the disk writes the
// file while the rest of it is still being fetched, and the fsync at the end has only its last
// megabytes and the metadata left. The fsync stays the one guarantee: this only moves the work.
//
// Every writeBehindChunk bytes written, the chunk just written is handed to the disk without
// waiting, and what lies more than writeBehindLag behind the end is waited for, so that a
// file's dirty pages stay within about chunk + lag however much faster the network is than the
// disk, while the disk always has several megabytes queued. A file smaller than one chunk (most
// of them, synced in batches by a Syncer) costs nothing more.
const (
	writeBehindChunk = 8 << 20
	writeBehindLag   = 64 << 20
)

// writeBehind tracks what of one open file has been handed to the disk.
type writeBehind struct {
	rc      syscall.RawConn
	ops     *writebackOps
	off     int64 // offset of the next byte written
	started int64 // bytes before this have been handed to the disk
	waited  int64 // bytes before this have been waited for
}

// newWriteBehind is the write-behind of f, whose next byte is written at offset off, or nil when
// f is no file of the operating system's (afero.MemMapFs, a wrapper that hides it) or the platform
// cannot start writeback of a range.
func newWriteBehind(f afero.File, off int64) *writeBehind {
	sc, ok := f.(syscall.Conn)
	if !ok || !canWriteBehind {
		return nil
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return nil
	}
	return &writeBehind{rc: rc, ops: &systemWriteback, off: off, started: off, waited: off}
}

// writebackOps are the two requests write-behind makes of the kernel, for a range of the file
// open as fd.
type writebackOps struct {
	start func(fd uintptr, off, n int64) error // start writing, do not wait
	wait  func(fd uintptr, off, n int64) error // write what is not yet, and wait for all of it
}

var systemWriteback = writebackOps{start: startWriteback, wait: waitWriteback}

// wrote records that n more bytes were written, and starts writeback once a chunk is full. It
// does nothing on a nil w, nor once starting writeback failed.
func (w *writeBehind) wrote(n int) {
	if w == nil || w.rc == nil {
		return
	}
	w.off += int64(n)
	if w.off-w.started < writeBehindChunk {
		return
	}
	var err error
	cerr := w.rc.Control(func(fd uintptr) {
		err = w.ops.start(fd, w.started, w.off-w.started)
		// The wait comes second, so the disk already has the new chunk queued behind the old.
		if old := w.off - writeBehindLag; err == nil && old > w.waited {
			if err = w.ops.wait(fd, w.waited, old-w.waited); err == nil {
				w.waited = old
			}
		}
	})
	if err != nil || cerr != nil {
		// Only an early start is lost: the fsync at the end still writes and reports everything.
		w.rc = nil
		return
	}
	w.started = w.off
}

// WriteBehind is a writer to f, whose next byte is written at offset off, that starts the disk
// writing what it is given as it goes (see writeBehindChunk), so that the fsync that must still
// follow has little left to do. For a file that is no operating system file it is f itself.
func WriteBehind(f afero.File, off int64) io.Writer {
	w := newWriteBehind(f, off)
	if w == nil {
		return f
	}
	return &behindWriter{f: f, w: w}
}

type behindWriter struct {
	f afero.File
	w *writeBehind
}

func (b *behindWriter) Write(p []byte) (int, error) {
	n, err := b.f.Write(p)
	b.w.wrote(n)
	return n, err
}
