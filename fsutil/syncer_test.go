package fsutil

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spf13/afero"
)

// syncLog is an afero.Fs whose files record that they were synced and then closed, and whose
// Sync fails for the one name in failSync.
type syncLog struct {
	afero.Fs
	failSync string

	mu     sync.Mutex
	synced map[string]bool
	closed map[string]bool // true only when closed after a successful Sync
	opened int
}

var errSyncFailed = errors.New("sync failed on purpose")

func newSyncLog() *syncLog {
	return &syncLog{Fs: afero.NewMemMapFs(), synced: map[string]bool{}, closed: map[string]bool{}}
}

func (l *syncLog) OpenFile(name string, flag int, perm os.FileMode) (afero.File, error) {
	f, err := l.Fs.OpenFile(name, flag, perm)
	if err != nil {
		return nil, err
	}
	l.mu.Lock()
	l.opened++
	l.mu.Unlock()
	return &syncLogFile{File: f, l: l, name: name}, nil
}

func (l *syncLog) Open(name string) (afero.File, error) { return l.OpenFile(name, os.O_RDONLY, 0) }

type syncLogFile struct {
	afero.File
	l    *syncLog
	name string
}

func (f *syncLogFile) Sync() error {
	time.Sleep(time.Millisecond) // a disk takes its time: a Wait that does not wait is seen
	if f.name == f.l.failSync {
		return errSyncFailed
	}
	f.l.mu.Lock()
	f.l.synced[f.name] = true
	f.l.mu.Unlock()
	return f.File.Sync()
}

func (f *syncLogFile) Close() error {
	f.l.mu.Lock()
	f.l.closed[f.name] = f.l.synced[f.name]
	f.l.mu.Unlock()
	return f.File.Close()
}

// writeVia writes n files under /s through one Syncer (nil: each synced in place) from 4
// goroutines, as the download workers do, and returns what Wait said.
func writeVia(t *testing.T, fsys afero.Fs, n int, s *Syncer) error {
	t.Helper()
	if err := fsys.MkdirAll("/s", 0o700); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < n; i += 4 {
				fw, err := Create(fsys, filepath.Join("/s", fmt.Sprint(i)))
				if err == nil {
					_, err = fw.Write([]byte(strings.Repeat("x", i)))
				}
				if err == nil {
					err = fw.CommitVia(Attrs{Mode: 0o644}, s)
				}
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			return err
		}
	}
	if s == nil {
		return nil
	}
	return s.Wait()
}

func TestSyncerSyncsThenClosesEveryFileBeforeWaitReturns(t *testing.T) {
	const n = 200 // more files than SyncWorkers, so writers wait for free goroutines
	for _, via := range []string{"syncer", "in place"} {
		t.Run(via, func(t *testing.T) {
			fsys := newSyncLog()
			var s *Syncer
			if via == "syncer" {
				s = NewSyncer()
			}
			if err := writeVia(t, fsys, n, s); err != nil {
				t.Fatal(err)
			}
			if fsys.opened != n || len(fsys.closed) != n {
				t.Fatalf("%d files opened, %d closed; want %d each", fsys.opened, len(fsys.closed), n)
			}
			for name, afterSync := range fsys.closed {
				if !afterSync {
					t.Errorf("%s was closed without a successful fsync first", name)
				}
				if fi, _ := fsys.Stat(name); fi.Mode().Perm() != 0o644 {
					t.Errorf("%s has mode %v, want 0644", name, fi.Mode().Perm())
				}
			}
		})
	}
}

func TestSyncerReportsAFailedSyncAndStillClosesEveryFile(t *testing.T) {
	fsys := newSyncLog()
	fsys.failSync = "/s/7"
	err := writeVia(t, fsys, 50, NewSyncer())
	if !errors.Is(err, errSyncFailed) || !strings.Contains(err.Error(), "/s/7") {
		t.Fatalf("Wait = %v, want the failed sync of /s/7", err)
	}
	if len(fsys.closed) != 50 {
		t.Fatalf("%d of 50 files closed", len(fsys.closed))
	}
	if fsys.closed["/s/7"] {
		t.Error("/s/7 counts as synced")
	}
}

func TestSyncDirsSyncsEveryDirectoryThatExists(t *testing.T) {
	fsys := newSyncLog()
	dirs := map[string]bool{"/gone": true}
	for i := range 3 * SyncWorkers {
		d := fmt.Sprintf("/i/d%d", i)
		dirs[d] = true
		if err := fsys.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := afero.WriteFile(fsys.Fs, "/i/file", nil, 0o644); err != nil {
		t.Fatal(err)
	}
	dirs["/i/file"] = true // a directory a file has taken the place of: nothing to sync
	if err := SyncDirs(fsys, dirs); err != nil {
		t.Fatal(err)
	}
	if len(fsys.closed) != 3*SyncWorkers {
		t.Fatalf("%d directories synced and closed, want %d", len(fsys.closed), 3*SyncWorkers)
	}
	for d, afterSync := range fsys.closed {
		if !afterSync || !strings.HasPrefix(d, "/i/d") {
			t.Errorf("%s: closed after a sync %v", d, afterSync)
		}
	}
	fsys.failSync = "/i/d5"
	if err := SyncDirs(fsys, dirs); !errors.Is(err, errSyncFailed) || !strings.Contains(err.Error(), "/i/d5") {
		t.Fatalf("SyncDirs = %v, want the failed sync of /i/d5", err)
	}
}
