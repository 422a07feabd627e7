package updater

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/spf13/afero"

	"github.com/sdupdate/sdupdate/config"
	"github.com/sdupdate/sdupdate/manifest"
	"github.com/sdupdate/sdupdate/statindex"
)

// BenchmarkPlan150k plans an update of a 150,000-file install in which nothing changed, with a
// stat index that vouches for every file: the cost of planning itself, per run, at the size of
// the biggest manifest the 16 MiB limit holds (go test -bench Plan150k -cpuprofile to see where
// it goes).
func BenchmarkPlan150k(b *testing.B) {
	const n = 150000
	fsys := afero.NewMemMapFs()
	var js strings.Builder
	js.WriteString(`{"version":"1.0.0","files":[`)
	for i := 0; i < n; i++ {
		name := fmt.Sprintf("%02x/%05d", i%256, i)
		data := []byte(name)
		if err := afero.WriteFile(fsys, filepath.Join(installDir, name), data, 0o644); err != nil {
			b.Fatal(err)
		}
		if i > 0 {
			js.WriteByte(',')
		}
		fmt.Fprintf(&js, `{"name":%q,"sha256":%q,"size":%d}`, name, statindex.SumOf(data), len(data))
	}
	js.WriteString("]}")
	m, err := manifest.Parse([]byte(js.String()))
	if err != nil {
		b.Fatal(err)
	}
	cfg := config.Default()
	cfg.Directory, cfg.StateDirectory, cfg.Unit = installDir, stateDir, ""
	e := newEngine(fsys, &cfg, nil)
	l, err := e.resolveLayout()
	if err != nil {
		b.Fatal(err)
	}
	x := statindex.New("")
	for _, f := range m.Files {
		fi, _ := fsys.Stat(filepath.Join(installDir, filepath.FromSlash(f.Name)))
		x.Set(f.Name, statindex.StatOf(fi), f.SHA256)
	}
	time.Sleep(10 * time.Millisecond) // the files are older than the index
	if err := x.Save(fsys, l.indexPath()); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	cpu0 := cpuTime(b)
	defer func() { b.ReportMetric(float64((cpuTime(b)-cpu0).Milliseconds())/float64(b.N), "cpu-ms/op") }()
	for b.Loop() {
		idx, err := statindex.Load(fsys, l.indexPath())
		if err != nil {
			b.Fatal(err)
		}
		p, err := e.plan(context.Background(), l, m, m, idx)
		if err != nil {
			b.Fatal(err)
		}
		if len(p.Changes) != 0 {
			b.Fatalf("plan changes %d files of an install that matches", len(p.Changes))
		}
	}
}

// cpuTime is the CPU the process used so far (user and system, every thread: the garbage
// collector's too). On a shared machine it is the steadier figure: ns/op is wall time.
func cpuTime(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
