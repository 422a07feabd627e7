package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/time/rate"

	"github.com/sdupdate/sdupdate/delta"
	"github.com/sdupdate/sdupdate/internal/fixture"
	"github.com/sdupdate/sdupdate/manifest"
	"github.com/sdupdate/sdupdate/sign"
)

// Real releases of real software, for the bytes a patch or an upgrade costs with per-file zstd
// objects and deltas. The full run unpacks Debian packages fetched once with `apt-get download`
// into a cache outside the repository (-debs); the short run (CI) uses two builds of sdupdate
// itself, which differ in their linked-in version, so it needs nothing from outside.

// debPair is one comparison: the packages of an old and a new install, as name=version.
type debPair struct {
	name     string // what the table calls it
	old, new []string
}

var (
	// Patch releases: the same upstream versions, a Debian security fix each, of an
	// interpreter and a daemon. The first is a hard one: python3.11's u9 is rebuilt throughout
	// (its executable differs in a sixth of its bytes); the second is what a patch release
	// usually is, a few functions changed in otherwise equal builds.
	patchPairs = []debPair{{"python3.11 and bind9", []string{
		"python3.11-minimal=3.11.2-6+deb12u8", "libpython3.11-minimal=3.11.2-6+deb12u8", "libpython3.11-stdlib=3.11.2-6+deb12u8",
		"bind9=1:9.18.49-1~deb12u1", "bind9-libs=1:9.18.49-1~deb12u1"}, []string{
		"python3.11-minimal=3.11.2-6+deb12u9", "libpython3.11-minimal=3.11.2-6+deb12u9", "libpython3.11-stdlib=3.11.2-6+deb12u9",
		"bind9=1:9.18.49-1~deb12u3", "bind9-libs=1:9.18.49-1~deb12u3"}}, {"perl and openssh", []string{
		"perl-base=5.36.0-7+deb12u3", "libperl5.36=5.36.0-7+deb12u3",
		"openssh-server=1:9.2p1-2+deb12u9", "openssh-client=1:9.2p1-2+deb12u9"}, []string{
		"perl-base=5.36.0-7+deb12u4", "libperl5.36=5.36.0-7+deb12u4",
		"openssh-server=1:9.2p1-2+deb12u10", "openssh-client=1:9.2p1-2+deb12u10"}}}
	// An upgrade: a database two point releases apart, with the interpreter's patch beside it.
	upgradePair = debPair{"postgresql-15 and python3.11", []string{
		"postgresql-15=15.18-0+deb12u1", "python3.11-minimal=3.11.2-6+deb12u8", "libpython3.11-minimal=3.11.2-6+deb12u8", "libpython3.11-stdlib=3.11.2-6+deb12u8"}, []string{
		"postgresql-15=15.20-0+deb12u1", "python3.11-minimal=3.11.2-6+deb12u9", "libpython3.11-minimal=3.11.2-6+deb12u9", "libpython3.11-stdlib=3.11.2-6+deb12u9"}}
)

// realTree returns a directory holding the unpacked packages, fetching and unpacking them into
// cache the first time.
func realTree(cache string, pkgs []string) (string, error) {
	key := strings.NewReplacer("=", "_", ":", "_", "~", "_", "+", "_").Replace(strings.Join(pkgs, ","))
	dir := filepath.Join(cache, "trees", key)
	if _, err := os.Stat(filepath.Join(dir, ".complete")); err == nil {
		return dir, nil
	}
	debs := filepath.Join(cache, "debs")
	if err := os.MkdirAll(debs, 0o755); err != nil {
		return "", err
	}
	var files []string
	for _, p := range pkgs {
		name, version, _ := strings.Cut(p, "=")
		file := filepath.Join(debs, fmt.Sprintf("%s_%s_amd64.deb", name, strings.ReplaceAll(version, ":", "%3a")))
		if _, err := os.Stat(file); err != nil {
			cmd := exec.Command("apt-get", "download", p)
			cmd.Dir = debs
			if out, err := cmd.CombinedOutput(); err != nil {
				return "", fmt.Errorf("apt-get download %s (run apt-get update first; the version may have left the mirror): %v: %s", p, err, out)
			}
		}
		files = append(files, file)
	}
	tmp := dir + ".tmp"
	os.RemoveAll(tmp)
	if err := os.MkdirAll(tmp, 0o755); err != nil {
		return "", err
	}
	for _, f := range files {
		if out, err := exec.Command("dpkg-deb", "-x", f, tmp).CombinedOutput(); err != nil {
			return "", fmt.Errorf("dpkg-deb -x %s: %v: %s", f, err, out)
		}
	}
	// A release holds regular files with permission bits only: the packages' symlinks are
	// left out, and setuid programs (ssh-keysign) lose that bit.
	if err := filepath.Walk(tmp, func(p string, fi os.FileInfo, err error) error {
		switch {
		case err != nil:
			return err
		case fi.Mode()&os.ModeSymlink != 0:
			return os.Remove(p)
		case fi.Mode()&(os.ModeSetuid|os.ModeSetgid|os.ModeSticky) != 0:
			return os.Chmod(p, fi.Mode().Perm())
		}
		return nil
	}); err != nil {
		return "", err
	}
	if err := os.WriteFile(filepath.Join(tmp, ".complete"), nil, 0o644); err != nil {
		return "", err
	}
	os.RemoveAll(dir)
	return dir, os.Rename(tmp, dir)
}

// sdupdateBuilds makes the short run's pair: sdupdate built twice, as 1.0.0 and 1.0.1.
func sdupdateBuilds(dir string) (old, new string, err error) {
	root, err := fixture.RepoRoot()
	if err != nil {
		return "", "", err
	}
	for _, v := range []string{"1.0.0", "1.0.1"} {
		out := filepath.Join(dir, "sdupdate-"+v, "bin", "sdupdate")
		cmd := exec.Command("go", "build", "-o", out, "-ldflags", "-X github.com/sdupdate/sdupdate/internal/version.version="+v, "./cmd/sdupdate")
		cmd.Dir = root
		if b, err := cmd.CombinedOutput(); err != nil {
			return "", "", fmt.Errorf("go build: %v: %s", err, b)
		}
		for _, f := range []string{"README.md", "go.mod", "go.sum"} {
			data, err := os.ReadFile(filepath.Join(root, f))
			if err != nil {
				return "", "", err
			}
			if v == "1.0.1" && f == "README.md" {
				data = append(data, "\nA line added in 1.0.1.\n"...)
			}
			if err := os.WriteFile(filepath.Join(dir, "sdupdate-"+v, f), data, 0o644); err != nil {
				return "", "", err
			}
		}
	}
	return filepath.Join(dir, "sdupdate-1.0.0"), filepath.Join(dir, "sdupdate-1.0.1"), nil
}

// link is an emulated network link of a given rate, shared by every connection through it: a
// token bucket whose burst (linkBurst) absorbs a sleep that wakes late, so the rate holds on a
// busy machine. (A limiter that forgives lateness runs at what the scheduler allows: 100 Mbit/s
// asked for came out at 60 on one connection here.)
type link struct{ lim *rate.Limiter }

// linkBurst is what the link may send at once: 5 ms at 100 Mbit/s, about what a switch buffers.
const linkBurst = 64 << 10

func newLink(bytesPerSecond float64) *link {
	return &link{lim: rate.NewLimiter(rate.Limit(bytesPerSecond), linkBurst)}
}

// throttled writes through the link in 16 KiB pieces. It has no ReadFrom, so the
// server's sendfile path is not taken.
type throttled struct {
	http.ResponseWriter
	l   *link
	ctx context.Context
}

func (t throttled) Write(p []byte) (int, error) {
	var n int
	for len(p) > 0 {
		chunk := p[:min(len(p), 16<<10)]
		if err := t.l.lim.WaitN(t.ctx, len(chunk)); err != nil {
			return n, err
		}
		m, err := t.ResponseWriter.Write(chunk)
		n += m
		if err != nil {
			return n, err
		}
		p = p[len(chunk):]
	}
	return n, nil
}

// slowServer serves what srv serves through a link of rate bytes per second.
func slowServer(srv *server, rate float64) (string, func(), error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", nil, err
	}
	l := newLink(rate)
	hs := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		srv.ServeHTTP(throttled{ResponseWriter: w, l: l, ctx: r.Context()}, r)
	}), ReadHeaderTimeout: 10 * time.Second}
	go hs.Serve(ln)
	return "http://" + ln.Addr().String() + "/", func() { hs.Close() }, nil
}

// realRelease is an old and a new tree published on the site, the new one with deltas from the
// old, and an install of the old one.
type realRelease struct {
	name             string // its directory on the site
	label            string // what the table calls it
	oldTree, newTree string
	oldURL, newURL   string
	plainURL         string // the new manifest without objects and deltas: file-level only
	objectsURL       string // the new manifest without deltas: objects only
	conf             func(manifestURL string) (string, error)
	installed        bool
	bytes            int64 // of the new install
	m                *manifest.Manifest
	oldFiles         map[string]string // sha256 → path in oldTree
	zstd             string            // the reference zstd program the releases are made with
	bsdiff           string            // the smallest per-file delta known, as a floor
}

// referenceZstd is the zstd program real releases are published with (`release --zstd`), as a
// publisher who cares about the bytes every client fetches would.
func referenceZstd() (string, error) {
	p, err := exec.LookPath("zstd")
	if err != nil {
		return "", fmt.Errorf("the real-releases case publishes with the reference zstd (release --zstd) and compares with it: install zstd (apt-get install zstd): %w", err)
	}
	return p, nil
}

func (b *bench) newRealRelease(name, label, oldTree, newTree string) (*realRelease, error) {
	r := &realRelease{name: name, label: label, oldTree: oldTree, newTree: newTree, oldFiles: map[string]string{}}
	zstd, err := referenceZstd()
	if err != nil {
		return nil, err
	}
	r.zstd = zstd
	if r.bsdiff, err = exec.LookPath("bsdiff"); err != nil {
		return nil, fmt.Errorf("the real-releases case compares the patch with bsdiff's, the smallest per-file delta known: install it (apt-get install bsdiff): %w", err)
	}
	for _, v := range []struct {
		url     *string
		version string
		tree    string
	}{{&r.oldURL, "1.0.0", oldTree}, {&r.newURL, "1.0.1", newTree}} {
		if *v.url, err = b.pub.release(name, v.version, v.tree, "--zstd", zstd); err != nil {
			return nil, err
		}
	}
	raw, err := os.ReadFile(filepath.Join(b.pub.site, name, "1.0.1.json"))
	if err != nil {
		return nil, err
	}
	if r.m, err = manifest.Parse(raw); err != nil {
		return nil, err
	}
	for _, f := range r.m.Files {
		r.bytes += f.Size
	}
	if r.plainURL, err = b.stripped(r, "plain", true); err != nil {
		return nil, err
	}
	if r.objectsURL, err = b.stripped(r, "objects", false); err != nil {
		return nil, err
	}
	in := install{dir: b.path(name + "/install"), state: b.path(name + "/state")}
	confs := map[string]string{}
	r.conf = func(u string) (string, error) {
		if c, ok := confs[u]; ok {
			return c, nil
		}
		c := b.path(fmt.Sprintf("%s/%d.conf", name, len(confs)))
		confs[u] = c
		return c, in.config(c, u, b.pub.pub.PublicKey, 2)
	}
	return r, nil
}

// stripped signs a copy of the new manifest without deltas and packs (and, with objects,
// without objects too), so the same release can be fetched the way a client of an earlier
// format would.
func (b *bench) stripped(r *realRelease, suffix string, objects bool) (string, error) {
	m := *r.m
	m.Packs = nil
	m.Files = append([]manifest.File(nil), r.m.Files...)
	for i := range m.Files {
		m.Files[i].Deltas = nil
		if objects {
			m.Files[i].Object = nil
		}
	}
	data, err := m.Marshal()
	if err != nil {
		return "", err
	}
	key, err := sign.LoadSecretKey(b.pub.pub.KeyFile, nil)
	if err != nil {
		return "", err
	}
	name := "1.0.1-" + suffix + ".json"
	dir := filepath.Join(b.pub.site, r.name)
	if err := os.WriteFile(filepath.Join(dir, name), data, 0o644); err != nil {
		return "", err
	}
	sig := sign.Sign(key, data, sign.TrustedComment("manifest.json", time.Now()))
	if err := os.WriteFile(filepath.Join(dir, name+".minisig"), sig, 0o644); err != nil {
		return "", err
	}
	return b.srv.URL(r.name + "/" + name), nil
}

// upgrade is a contender updating the old install to the new release through manifestURL; its
// untimed setup puts the old version back first.
func (b *bench) upgrade(r *realRelease, label, manifestURL string) (*contender, error) {
	oldConf, err := r.conf(r.oldURL)
	if err != nil {
		return nil, err
	}
	conf, err := r.conf(manifestURL)
	if err != nil {
		return nil, err
	}
	c := b.update(conf)
	c.name = label
	c.setup = func() error {
		args := []string{}
		if r.installed {
			args = append(args, "--allow-downgrade")
		}
		if _, err := b.runOnce(b.update(oldConf, args...)); err != nil {
			return err
		}
		r.installed = true
		return nil
	}
	return c, nil
}

// rsyncBytes is what `rsync -az` from a daemon receives updating a copy of old to new.
func (b *bench) rsyncBytes(r *realRelease) (int64, error) {
	rd, err := startRsyncd(b.path(r.name), map[string]string{"old": r.oldTree, "new": r.newTree})
	if err != nil {
		return 0, err
	}
	defer rd.Close()
	dest := b.path(r.name+"/rsync-dest") + "/"
	if out, err := exec.Command("rsync", "-a", rd.URL("old"), dest).CombinedOutput(); err != nil {
		return 0, fmt.Errorf("rsync: %v: %s", err, out)
	}
	out, err := exec.Command("rsync", "-az", "--stats", rd.URL("new"), dest).CombinedOutput()
	if err != nil {
		return 0, fmt.Errorf("rsync -az: %v: %s", err, out)
	}
	m := regexp.MustCompile(`Total bytes received: ([0-9,]+)`).FindSubmatch(out)
	if m == nil {
		return 0, fmt.Errorf("rsync --stats printed no total:\n%s", out)
	}
	return strconv.ParseInt(strings.ReplaceAll(string(m[1]), ",", ""), 10, 64)
}

// tarGzBytes is the size of the tree as a .tar.gz (gzip's default level), what a curl of it
// would fetch.
func tarGzBytes(dir string) (int64, error) {
	cmd := exec.Command("tar", "-C", dir, "--exclude=./.complete", "-czf", "-", ".")
	var n countWriter
	var stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &n, &stderr
	if err := cmd.Run(); err != nil {
		return 0, fmt.Errorf("tar: %v: %s", err, stderr.Bytes())
	}
	return n.n, nil
}

type countWriter struct{ n int64 }

func (c *countWriter) Write(p []byte) (int, error) { c.n += int64(len(p)); return len(p), nil }

// decodeRounds is how many times decodeSpeed rebuilds the files; it reports the median.
const decodeRounds = 5

// deltaJob is one file decodeSpeed rebuilds: a delta, its base and what it must decode to.
type deltaJob struct {
	src, base []byte
	srcWant   delta.Want
	out       delta.Want
}

// decodeSpeed rebuilds every file of r that has a delta from the old tree, in this process,
// with one reused decoder on one goroutine, decodeRounds times: the median bytes of output per
// second of this process's CPU time (user+sys, so that a machine shared with other work does
// not count against it, and the garbage collector's work on other threads does), the median
// per second of wall time, and the largest file rebuilt.
func (b *bench) decodeSpeed(r *realRelease) (cpu, wall float64, largest int64, err error) {
	jobs, err := b.deltaJobs(r)
	if err != nil {
		return 0, 0, 0, err
	}
	dec, err := delta.NewDecoder()
	if err != nil {
		return 0, 0, 0, err
	}
	defer dec.Close()
	var cpus, walls []time.Duration
	var out int64
	for range decodeRounds {
		out = 0
		c0, w0 := cpuTime(), time.Now()
		for _, j := range jobs {
			n, err := dec.Decode(io.Discard, bytes.NewReader(j.src), j.srcWant, j.base, j.out, delta.Limits{})
			if err != nil {
				return 0, 0, 0, err
			}
			out += n
			largest = max(largest, j.out.Size)
		}
		cpus, walls = append(cpus, cpuTime()-c0), append(walls, time.Since(w0))
	}
	perSecond := func(d time.Duration) float64 { return float64(out) / max(d, time.Microsecond).Seconds() }
	return perSecond(median(cpus)), perSecond(median(walls)), largest, nil
}

// deltaJobs reads, for every file of r with a delta from a content of the old tree, the first
// such delta and its base.
func (b *bench) deltaJobs(r *realRelease) ([]deltaJob, error) {
	old := map[string][]byte{}
	err := filepath.Walk(r.oldTree, func(p string, fi os.FileInfo, err error) error {
		if err != nil || !fi.Mode().IsRegular() {
			return err
		}
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		old[sha(data)] = data
		return nil
	})
	if err != nil {
		return nil, err
	}
	var jobs []deltaJob
	for _, f := range r.m.Files {
		for _, d := range f.Deltas {
			base, ok := old[d.From]
			if !ok {
				continue
			}
			src, err := os.ReadFile(filepath.Join(b.pub.site, r.name, "1.0.1", filepath.FromSlash(d.URL)))
			if err != nil {
				return nil, err
			}
			jobs = append(jobs, deltaJob{src: src, base: base, srcWant: delta.Want{SHA256: d.SHA256, Size: d.Size},
				out: delta.Want{SHA256: f.SHA256, Size: f.Size}})
			break
		}
	}
	if len(jobs) == 0 {
		return nil, fmt.Errorf("no delta of %s applies to its old tree", r.name)
	}
	return jobs, nil
}

// cpuTime is the user and system time this process has used.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func sha(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// realRow is one line of the real-releases table.
type realRow struct {
	kase, measured, target string
	met                    bool
	info                   bool // a figure to compare with, no target
}

// realReleases: patch releases and an upgrade of real software, fetched as per-file zstd
// objects and deltas, against rsync -z, a .tar.gz and the file-level update sdupdate did before.
func (b *bench) realReleases() error {
	if b.short {
		old, new, err := sdupdateBuilds(b.path("real"))
		if err != nil {
			return err
		}
		r, err := b.newRealRelease("p", "sdupdate 1.0.0 → 1.0.1", old, new)
		if err != nil {
			return err
		}
		return b.patchRows(r)
	}
	for i, pair := range patchPairs {
		r, err := b.debRelease(fmt.Sprintf("p%d", i), pair)
		if err != nil {
			return err
		}
		if err := b.patchRows(r); err != nil {
			return err
		}
	}
	u, err := b.debRelease("u", upgradePair)
	if err != nil {
		return err
	}
	return b.upgradeRows(u)
}

// debRelease unpacks pair's packages as an old and a new tree and publishes both.
func (b *bench) debRelease(name string, pair debPair) (*realRelease, error) {
	old, err := realTree(b.debs, pair.old)
	if err != nil {
		return nil, err
	}
	new, err := realTree(b.debs, pair.new)
	if err != nil {
		return nil, err
	}
	return b.newRealRelease(name, pair.name, old, new)
}

// patchRows measures the patch release: bytes on the wire, decoding, a slow link, a fresh install.
func (b *bench) patchRows(r *realRelease) error {
	what := fmt.Sprintf("patch release (%s), %s in %s files", r.label, size(r.bytes), count(len(r.m.Files)))
	rss, err := b.patchWireRows(r, what)
	if err != nil {
		return err
	}
	if err := b.patchDecodeRows(r, what, rss); err != nil {
		return err
	}
	if err := b.patchSlowRows(r, what); err != nil {
		return err
	}
	return b.freshInstallRow(r, what)
}

// patchWireRows compares the bytes the update fetches with a file-level update and rsync; it
// returns the update's peak RSS.
func (b *bench) patchWireRows(r *realRelease, what string) (int64, error) {
	ours, err := b.upgrade(r, "sdupdate", r.newURL)
	if err != nil {
		return 0, err
	}
	plain, err := b.upgrade(r, "file-level", r.plainURL)
	if err != nil {
		return 0, err
	}
	s, err := b.compare(ours, plain)
	if err != nil {
		return 0, err
	}
	o, p := summarize(s[0]), summarize(s[1])
	rs, err := b.rsyncBytes(r)
	if err != nil {
		return 0, err
	}
	b.realRow(what+": bytes on the wire", fmt.Sprintf("%s = %.2f %% of the install (file-level: %s = %.1f %%)",
		size(o.fetched), pct(o.fetched, r.bytes), size(p.fetched), pct(p.fetched, r.bytes)), "≤ 3 %", pct(o.fetched, r.bytes) <= 3)
	for _, ref := range []reference{zstdReference(r.zstd), bsdiffReference(r.bsdiff)} {
		n, err := b.referenceBytes(r, ref)
		if err != nil {
			return 0, err
		}
		b.infoRow(what+": the reference, "+ref.name+" file by file", fmt.Sprintf("%s = %.2f %% of the install: sdupdate sends %.2f× that",
			size(n), pct(n, r.bytes), ratioOf(o.fetched, n)))
	}
	b.realRow(what+": against `rsync -az` from a daemon", fmt.Sprintf("%.2f× (rsync received %s)", ratioOf(o.fetched, rs), size(rs)),
		"≤ 0.25×", ratioOf(o.fetched, rs) <= 0.25)
	return o.rss, nil
}

// patchDecodeRows measures delta decoding on one core, and checks rss (the update's peak) against
// the largest file patched.
func (b *bench) patchDecodeRows(r *realRelease, what string, rss int64) error {
	speed, wall, largest, err := b.decodeSpeed(r)
	if err != nil {
		return err
	}
	b.realRow(what+": delta decode speed, one core", fmt.Sprintf("%.0f MB/s of output per CPU second (per wall second: %.0f; medians of %d)",
		speed/1e6, wall/1e6, decodeRounds), "≥ 250 MB/s", speed >= 250e6)
	limit := int64(64<<20) + largest
	b.realRow(what+": peak RSS while patching", fmt.Sprintf("%s (largest file patched %s)", size(rss), size(largest)),
		"≤ 64 MiB + largest = "+size(limit), rss <= limit)
	return nil
}

// patchSlowRows times the update against a file-level one over an emulated 100 Mbit/s link.
func (b *bench) patchSlowRows(r *realRelease, what string) error {
	const rate = 100e6 / 8
	base, stop, err := slowServer(b.srv, rate)
	if err != nil {
		return err
	}
	defer stop()
	slow := func(u string) string { return base + strings.TrimPrefix(u, b.srv.URL("")) }
	ours100, err := b.upgrade(r, "sdupdate at 100 Mbit/s", slow(r.newURL))
	if err != nil {
		return err
	}
	plain100, err := b.upgrade(r, "file-level at 100 Mbit/s", slow(r.plainURL))
	if err != nil {
		return err
	}
	s, err := b.compare(ours100, plain100)
	if err != nil {
		return err
	}
	o, p := summarize(s[0]), summarize(s[1])
	// What the bytes alone take on the link, so the row shows how much of each run is transfer
	// and how much is the run itself (the same work for both: plan, snapshot, apply).
	wire := func(n int64) time.Duration { return time.Duration(float64(n) / rate * float64(time.Second)) }
	b.realRow(what+": wall time at 100 Mbit/s", fmt.Sprintf("%s against file-level %s: %.2f× (the bytes alone: %s against %s)",
		seconds(o.wall), seconds(p.wall), ratio(o, p), seconds(wire(o.fetched)), seconds(wire(p.fetched))),
		"≤ 0.2× file-level", ratio(o, p) <= 0.2)
	return nil
}

// freshInstallRow compares a fresh install of the new version with a curl of the tree as .tar.gz.
func (b *bench) freshInstallRow(r *realRelease, what string) error {
	fresh, err := b.upgrade(r, "fresh install", r.newURL)
	if err != nil {
		return err
	}
	in := install{dir: b.path(r.name + "/install"), state: b.path(r.name + "/state")}
	fresh.setup = func() error { r.installed = false; return in.reset() }
	f, err := b.runOnce(fresh)
	if err != nil {
		return err
	}
	tgz, err := tarGzBytes(r.newTree)
	if err != nil {
		return err
	}
	b.realRow(what+": fresh install, bytes on the wire", fmt.Sprintf("%s, %.2f× the %s .tar.gz", size(f.fetched), ratioOf(f.fetched, tgz), size(tgz)),
		"≤ 0.85× .tar.gz", ratioOf(f.fetched, tgz) <= 0.85)
	return nil
}

func (b *bench) upgradeRows(u *realRelease) error {
	ours, err := b.upgrade(u, "sdupdate", u.newURL)
	if err != nil {
		return err
	}
	objects, err := b.upgrade(u, "objects only", u.objectsURL)
	if err != nil {
		return err
	}
	s, err := b.compare(ours, objects)
	if err != nil {
		return err
	}
	o, ob := summarize(s[0]), summarize(s[1])
	b.realRow(fmt.Sprintf("upgrade (%s), %s in %s files: bytes on the wire", u.label, size(u.bytes), count(len(u.m.Files))),
		fmt.Sprintf("%s = %.2f %% of the install; objects only: %s", size(o.fetched), pct(o.fetched, u.bytes), size(ob.fetched)),
		"≤ per-file objects", o.fetched <= ob.fetched)
	return nil
}

func (b *bench) realRow(kase, measured, target string, met bool) {
	b.real = append(b.real, realRow{kase: kase, measured: measured, target: target, met: met})
}

func (b *bench) infoRow(kase, measured string) {
	b.real = append(b.real, realRow{kase: kase, measured: measured, target: "—", met: true, info: true})
}

func pct(n, of int64) float64     { return 100 * float64(n) / float64(of) }
func ratioOf(n, of int64) float64 { return float64(n) / float64(of) }

func (b *bench) printReal(w io.Writer) {
	if len(b.real) == 0 {
		return
	}
	what := "Debian packages unpacked as installs"
	if b.short {
		what = "two builds of sdupdate, -short"
	}
	fmt.Fprintf(w, "\nReal releases (%s), zstd objects, deltas and packs made with `release --zstd`:\n", what)
	fmt.Fprintln(w, "\n| case | measured | target | met |")
	fmt.Fprintln(w, "| --- | --- | --- | --- |")
	for _, r := range b.real {
		met := "yes"
		if !r.met {
			met = "**no**"
		}
		if !b.sz.targetsChecked {
			met = "(not checked)"
		}
		if r.info {
			met = "—"
		}
		fmt.Fprintf(w, "| %s | %s | %s | %s |\n", r.kase, r.measured, r.target, met)
	}
}

func (b *bench) realMet() bool {
	for _, r := range b.real {
		if !r.met {
			return false
		}
	}
	return true
}
