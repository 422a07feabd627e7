package fsutil

import "golang.org/x/sys/unix"

const canWriteBehind = true

// startWriteback starts writing the dirty pages of n bytes at off to the disk, without waiting.
func startWriteback(fd uintptr, off, n int64) error {
	return unix.SyncFileRange(int(fd), off, n, unix.SYNC_FILE_RANGE_WRITE)
}

// waitWriteback waits until the n bytes at off are written to the disk (not flushed from its
// cache, and with no metadata: that is the fsync's).
func waitWriteback(fd uintptr, off, n int64) error {
	return unix.SyncFileRange(int(fd), off, n, unix.SYNC_FILE_RANGE_WAIT_BEFORE|unix.SYNC_FILE_RANGE_WRITE|unix.SYNC_FILE_RANGE_WAIT_AFTER)
}
