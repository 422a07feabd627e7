package snapshot

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/spf13/afero"
)

// BenchmarkOneChangedFileOfALargeInstall measures what a snapshot and a restore cost when an
// update changes one file of an install of 256 files of 1 MiB on the OS filesystem: the
// snapshot is given the plan's hashes, as the engine gives them. It reports the bytes each
// step reads; both must be the changed file's, not the install's.
func BenchmarkOneChangedFileOfALargeInstall(b *testing.B) {
	const files, size = 256, 1 << 20
	root := b.TempDir()
	install := filepath.Join(root, "install")
	block := make([]byte, size)
	var names []string
	for i := 0; i < files; i++ {
		name := fmt.Sprintf("lib/mod%03d.so", i)
		names = append(names, name)
		p := filepath.Join(install, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			b.Fatal(err)
		}
		block[0] = byte(i)
		if err := os.WriteFile(p, block, 0o644); err != nil {
			b.Fatal(err)
		}
	}
	// The plan hashed every file, long enough after they were written for stamps to be trusted.
	var described []FileMeta
	for _, n := range names {
		f, err := Describe(afero.NewOsFs(), install, n)
		if err != nil {
			b.Fatal(err)
		}
		f.Stamp.TakenNs += int64(2 * racyWindow)
		described = append(described, *f)
	}
	log := &openLog{Fs: afero.NewOsFs()}
	st := &Store{Fs: log, Dir: filepath.Join(root, "snapshots"), InstallDir: install}
	ctx := context.Background()
	changed := filepath.Join(install, names[0])
	var snapTime, restoreTime time.Duration
	var snapRead, restoreRead int64
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		log.opened, log.read = nil, 0
		start := time.Now()
		m, err := st.Create(ctx, Spec{ID: NewID(time.Now(), "1.0.0"), Version: "1.0.0", Files: described, Leaving: names[:1]})
		if err != nil {
			b.Fatal(err)
		}
		snapTime += time.Since(start)
		snapRead += log.read
		// The update: a new file renamed over the changed one.
		tmp := changed + ".new"
		if err := os.WriteFile(tmp, []byte("new content\n"), 0o644); err != nil {
			b.Fatal(err)
		}
		if err := os.Rename(tmp, changed); err != nil {
			b.Fatal(err)
		}
		log.opened, log.read = nil, 0
		start = time.Now()
		if _, err := st.Restore(ctx, m.ID, names); err != nil {
			b.Fatal(err)
		}
		restoreTime += time.Since(start)
		restoreRead += log.read
		if err := st.Delete(m.ID); err != nil {
			b.Fatal(err)
		}
		// The next round's stamps: the restored file is a new inode.
		f, err := Describe(afero.NewOsFs(), install, names[0])
		if err != nil {
			b.Fatal(err)
		}
		f.Stamp.TakenNs += int64(2 * racyWindow)
		described[0] = *f
	}
	b.ReportMetric(float64(snapTime.Microseconds())/float64(b.N), "snapshot-µs/op")
	b.ReportMetric(float64(restoreTime.Microseconds())/float64(b.N), "restore-µs/op")
	b.ReportMetric(float64(snapRead)/float64(b.N), "snapshot-bytes-read/op")
	b.ReportMetric(float64(restoreRead)/float64(b.N), "restore-bytes-read/op")
}
