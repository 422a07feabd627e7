package snapshot

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/spf13/afero"
)

// recordsBench is a store on the OS filesystem holding snapshots of a 5,000-file install, each
// of which put 10 of its files into the store, as a series of updates of 10 files would.
type recordsBench struct {
	st    *Store
	files []FileMeta
	names []string
	n     int
}

const benchFiles, benchSnapshots = 5000, 4

func newRecordsBench(b *testing.B) *recordsBench {
	b.Helper()
	root := b.TempDir()
	install := filepath.Join(root, "install")
	r := &recordsBench{st: &Store{Fs: afero.NewOsFs(), Dir: filepath.Join(root, "snapshots"), InstallDir: install}}
	for i := 0; i < benchFiles; i++ {
		name := fmt.Sprintf("lib/d%02d/mod%04d.py", i%50, i)
		p := filepath.Join(install, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			b.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(fmt.Sprintf("module %d\n", i)), 0o644); err != nil {
			b.Fatal(err)
		}
		f, err := Describe(afero.NewOsFs(), install, name)
		if err != nil {
			b.Fatal(err)
		}
		f.Stamp.TakenNs += int64(2 * racyWindow)
		r.files, r.names = append(r.files, *f), append(r.names, name)
	}
	for i := 0; i < benchSnapshots; i++ {
		r.create(b)
	}
	return r
}

// create takes one more snapshot whose 10 leaving files are the next ones of the install.
func (r *recordsBench) create(b *testing.B) string {
	b.Helper()
	leaving := make([]string, 10)
	for i := range leaving {
		leaving[i] = r.names[(r.n*10+i)%len(r.names)]
	}
	r.n++
	created := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC).Add(time.Duration(r.n) * time.Minute)
	r.st.Now = func() time.Time { return created }
	m, err := r.st.Create(context.Background(), Spec{ID: NewID(created, "1.0.0"), Version: fmt.Sprintf("1.0.%d", r.n), Files: r.files, Leaving: leaving})
	if err != nil {
		b.Fatal(err)
	}
	return m.ID
}

// cpuClock adds up the CPU time (user and system) of the timed parts of a benchmark: on a
// machine shared with other work it is a steadier figure than the wall time.
type cpuClock struct {
	total, since time.Duration
}

func processCPU() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func (c *cpuClock) start() { c.since = processCPU() }
func (c *cpuClock) stop()  { c.total += processCPU() - c.since }

func (c *cpuClock) report(b *testing.B) {
	b.ReportMetric(float64(c.total.Microseconds())/1000/float64(b.N), "cpu-ms/op")
}

// BenchmarkList lists benchSnapshots snapshots of 5,000 files each, as `status` does: every
// record read whole, and the installed files not in the store looked at.
func BenchmarkList(b *testing.B) {
	r := newRecordsBench(b)
	var cpu cpuClock
	b.ResetTimer()
	cpu.start()
	for i := 0; i < b.N; i++ {
		if got, err := r.st.List(); err != nil || len(got) != benchSnapshots {
			b.Fatalf("List: %d snapshots, %v", len(got), err)
		}
	}
	cpu.stop()
	cpu.report(b)
}

// BenchmarkPrune is the retention of an update as pruneSnapshots does it: one snapshot more than
// the benchSnapshots kept, the oldest deleted with the objects no other names. The Create of each
// round is not timed.
func BenchmarkPrune(b *testing.B) {
	r := newRecordsBench(b)
	var cpu cpuClock
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		r.create(b)
		b.StartTimer()
		cpu.start()
		c, err := r.st.Catalog()
		if err != nil {
			b.Fatal(err)
		}
		var old []string
		for _, h := range c.Snapshots[benchSnapshots:] {
			old = append(old, h.ID)
		}
		if removed, err := r.st.DeleteSome(c, old); err != nil || len(removed) != 1 {
			b.Fatalf("DeleteSome = %v, %v", removed, err)
		}
		cpu.stop()
	}
	cpu.report(b)
}

// BenchmarkCatalog reads what choosing a rollback target or the snapshots to prune needs.
func BenchmarkCatalog(b *testing.B) {
	r := newRecordsBench(b)
	var cpu cpuClock
	b.ResetTimer()
	cpu.start()
	for i := 0; i < b.N; i++ {
		if c, err := r.st.Catalog(); err != nil || len(c.Snapshots) != benchSnapshots {
			b.Fatalf("Catalog: %v", err)
		}
	}
	cpu.stop()
	cpu.report(b)
}

// BenchmarkCleanup is what every command that takes the lock does to the store after a run
// that was not cut short.
func BenchmarkCleanup(b *testing.B) {
	r := newRecordsBench(b)
	var cpu cpuClock
	b.ResetTimer()
	cpu.start()
	for i := 0; i < b.N; i++ {
		if _, err := r.st.Cleanup(); err != nil {
			b.Fatal(err)
		}
	}
	cpu.stop()
	cpu.report(b)
}
