package snapshot

import (
	"errors"
	"fmt"
	"os"
	"syscall"

	"github.com/spf13/afero"

	"github.com/sdupdate/sdupdate/fsutil"
)

// Objects are content that left the install, so a reader outside this package (the updater,
// looking for the base of a delta) may find old content here that is no longer installed. It
// gets the object only through these two calls, read-only: nothing outside the package writes
// into the store or links to an object.

// ObjectSize returns the size of the object holding the content whose sha256 is sum, and false
// when the store holds none (or sum is not a sha256). The name only says what the content
// should be: whoever reads it checks.
func (s *Store) ObjectSize(sum string) (int64, bool) {
	if checkSum(sum) != nil {
		return 0, false
	}
	fi, err := fsutil.Lstat(s.Fs, s.objectPath(sum))
	if err != nil || !fi.Mode().IsRegular() {
		return 0, false
	}
	return fi.Size(), true
}

// OpenObject opens the object of content sum for reading only. It must be a regular file: a
// symlink is not followed (O_NOFOLLOW), a FIFO does not block the open. An error wrapping
// ErrNotFound means the store holds no such object. The caller checks that what it reads has
// sha256 sum.
func (s *Store) OpenObject(sum string) (afero.File, os.FileInfo, error) {
	if err := checkSum(sum); err != nil {
		return nil, nil, fmt.Errorf("object %q: %w: %w", sum, err, ErrNotFound)
	}
	p := s.objectPath(sum)
	f, err := s.Fs.OpenFile(p, os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK, 0)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil, fmt.Errorf("object %s: %w", p, ErrNotFound)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("cannot open object %s: %w", p, err)
	}
	fi, err := f.Stat()
	if err == nil && !fi.Mode().IsRegular() {
		err = fmt.Errorf("%s is a %s, %w", p, fsutil.FileKind(fi.Mode()), fsutil.ErrNotRegular)
	}
	if err != nil {
		f.Close()
		return nil, nil, fmt.Errorf("cannot open object %s: %w", p, err)
	}
	return f, fi, nil
}
