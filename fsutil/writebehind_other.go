//go:build !linux

package fsutil

// Elsewhere there is no portable way to start writeback of a range: the fsync does it all.
const canWriteBehind = false

func startWriteback(fd uintptr, off, n int64) error { return nil }

func waitWriteback(fd uintptr, off, n int64) error { return nil }
