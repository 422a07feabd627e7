package updater

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spf13/afero"

	"github.com/sdupdate/sdupdate/statindex"
)

// openCounter counts opens of files under one directory.
type openCounter struct {
	afero.Fs
	dir   string
	mu    sync.Mutex
	opens map[string]int
}

func (c *openCounter) count(name string) {
	if strings.HasPrefix(name, c.dir+"/") {
		c.mu.Lock()
		c.opens[strings.TrimPrefix(name, c.dir+"/")]++
		c.mu.Unlock()
	}
}

func (c *openCounter) Open(name string) (afero.File, error) {
	c.count(name)
	return c.Fs.Open(name)
}

func (c *openCounter) OpenFile(name string, flag int, perm os.FileMode) (afero.File, error) {
	c.count(name)
	return c.Fs.OpenFile(name, flag, perm)
}

func (c *openCounter) reset() map[string]int {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := c.opens
	c.opens = map[string]int{}
	return out
}

// osEngine is an engine on the real filesystem under a temp dir, opens of installed files
// counted.
func osEngine(t *testing.T, s *site) (*Engine, *openCounter) {
	dir := t.TempDir()
	cfg := testConfig(s)
	cfg.Directory, cfg.StateDirectory = filepath.Join(dir, "opt"), filepath.Join(dir, "state")
	fs := &openCounter{Fs: afero.NewOsFs(), dir: cfg.Directory, opens: map[string]int{}}
	return newEngine(fs, cfg, nil), fs
}

// planNext plans the site's current manifest against the install, as update does.
func planNext(t *testing.T, e *Engine, repair bool) *Plan {
	t.Helper()
	l, err := e.resolveLayout()
	if err != nil {
		t.Fatal(err)
	}
	installed, raw, err := e.installedManifest(l)
	if err != nil {
		t.Fatal(err)
	}
	f, err := e.fetchManifest(context.Background(), e.runLog("test"), "")
	if err != nil {
		t.Fatal(err)
	}
	var idx *statindex.Index
	if !repair {
		idx = e.loadIndex(l, raw)
	}
	p, err := e.plan(context.Background(), l, f.m, installed, idx)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func changedNames(p *Plan) []string {
	var out []string
	for _, c := range p.Changes {
		out = append(out, c.File.Name)
	}
	return out
}

func TestPlanReadsOnlyFilesWhoseStatChanged(t *testing.T) {
	s := newSite(t)
	e, fs := osEngine(t, s)
	updatedNotRacy(t, s, e, "1.0.0", v1)
	updatedNotRacy(t, s, e, "1.1.0", v2)
	fs.reset()
	s.publish(t, "1.2.0", map[string]agentFile{
		"agent.py": {data: "print('agent 1.2.0')\n"}, "bin/sd-agent": v2["bin/sd-agent"],
		"lib/common.py": v2["lib/common.py"], "lib/new.py": v2["lib/new.py"],
	})
	p := planNext(t, e, false)
	if got := fs.reset(); len(got) != 0 {
		t.Errorf("plan opened installed files %v; their stat had not changed since the last update", got)
	}
	if got := changedNames(p); len(got) != 1 || got[0] != "agent.py" {
		t.Errorf("plan changes %v, want [agent.py]", got)
	}
}

func TestPlanHashesAFileRewrittenWithItsMtimePutBack(t *testing.T) {
	s := newSite(t)
	e, fs := osEngine(t, s)
	updatedNotRacy(t, s, e, "1.0.0", v1)
	// Same size, other bytes, mtime restored: only the ctime tells.
	p := filepath.Join(e.Config.Directory, "lib", "common.py")
	fi, _ := os.Stat(p)
	os.WriteFile(p, []byte("common = 2\n"), 0o644)
	os.Chtimes(p, fi.ModTime(), fi.ModTime())
	s.publish(t, "1.1.0", v1)
	fs.reset()
	plan := planNext(t, e, false)
	if got := changedNames(plan); len(got) != 1 || got[0] != "lib/common.py" {
		t.Errorf("plan changes %v, want the tampered lib/common.py", got)
	}
	if got := fs.reset(); len(got) != 1 || got["lib/common.py"] != 1 {
		t.Errorf("plan opened %v, want lib/common.py once", got)
	}
}

func TestRepairAndVerifyNeverTrustTheIndex(t *testing.T) {
	s := newSite(t)
	e, fs := osEngine(t, s)
	updatedNotRacy(t, s, e, "1.0.0", v1)
	// An index that lies: it claims a damaged file still has its published hash.
	l, _ := e.resolveLayout()
	_, raw, _ := e.installedManifest(l)
	x := e.loadIndex(l, raw)
	target := filepath.Join(e.Config.Directory, "agent.py")
	os.WriteFile(target, []byte("print('agent 6.6.6')\n"), 0o644) // same size
	st, _ := e.lstat(target)
	want, _ := x.Lookup("lib/common.py", mustStat(t, e, filepath.Join(e.Config.Directory, "lib", "common.py")))
	if want == "" {
		t.Fatal("index does not hold lib/common.py: the test proves nothing")
	}
	x.Set("agent.py", st, sha256Hex(v1["agent.py"].data))
	time.Sleep(20 * time.Millisecond)
	if err := x.Save(e.Fs, l.indexPath()); err != nil {
		t.Fatal(err)
	}
	if got := changedNames(planNext(t, e, false)); len(got) != 0 {
		t.Fatalf("the lying index was not used by a plain plan (changes %v): the test proves nothing", got)
	}
	fs.reset()
	if got := changedNames(planNext(t, e, true)); len(got) != 1 || got[0] != "agent.py" {
		t.Errorf("repair plan changes %v, want the damaged agent.py", got)
	}
	if got := fs.reset(); len(got) != len(v1) {
		t.Errorf("repair plan opened %v, want every installed file", got)
	}
	_, mismatches, err := e.Verify(context.Background())
	if err != nil || len(mismatches) != 1 || mismatches[0].Name != "agent.py" {
		t.Errorf("verify: %v, %v; want agent.py", mismatches, err)
	}
}

func mustStat(t *testing.T, e *Engine, p string) statindex.Stat {
	t.Helper()
	st, err := e.lstat(p)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

func TestDamagedOrStaleIndexCostsAHashNotTheRightAnswer(t *testing.T) {
	for _, damage := range []string{"missing", "truncated", "garbage", "stale"} {
		t.Run(damage, func(t *testing.T) {
			s := newSite(t)
			e, fs := osEngine(t, s)
			s.publish(t, "1.0.0", v1)
			if _, err := e.Update(context.Background(), UpdateOptions{}); err != nil {
				t.Fatal(err)
			}
			l, _ := e.resolveLayout()
			path := l.indexPath()
			good, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("no index after an update: %v", err)
			}
			switch damage {
			case "missing":
				os.Remove(path)
			case "truncated":
				os.WriteFile(path, good[:len(good)/2], 0o600)
			case "garbage":
				os.WriteFile(path, []byte("\x00\x01garbage"), 0o600)
			case "stale":
				x, _ := statindex.Load(e.Fs, path)
				x.Installed = strings.Repeat("0", 64)
				x.Save(e.Fs, path)
			}
			// Tamper with a file in a way only a hash finds once the index is gone.
			target := filepath.Join(e.Config.Directory, "lib", "common.py")
			fi, _ := os.Stat(target)
			os.WriteFile(target, []byte("common = 9\n"), 0o644)
			os.Chtimes(target, fi.ModTime(), fi.ModTime())
			s.publish(t, "1.1.0", v1)
			fs.reset()
			if _, err := e.Update(context.Background(), UpdateOptions{}); err != nil {
				t.Fatal(err)
			}
			if got := fs.reset(); got["agent.py"] == 0 {
				t.Errorf("with a %s index the plan did not hash agent.py (opens %v)", damage, got)
			}
			if _, mismatches, err := e.Verify(context.Background()); err != nil || len(mismatches) != 0 {
				t.Errorf("after the update: %v, %v", mismatches, err)
			}
			x, err := statindex.Load(e.Fs, path)
			if err != nil || x.Len() != len(v1) {
				t.Errorf("index after the update: %v entries, %v; want %d", x.Len(), err, len(v1))
			}
		})
	}
}

func sha256Hex(s string) string { return statindex.SumOf([]byte(s)) }

// Pruning old snapshots deletes their objects; it touches no file that stays installed, so the
// index the update wrote is still trusted after it: the next plan opens only what changed.
func TestIndexIsStillTrustedAfterPruning(t *testing.T) {
	s := newSite(t)
	e, fs := osEngine(t, s)
	e.Config.KeepSnapshots = 1
	versions := []map[string]agentFile{v1, v2, {
		"agent.py": {data: "print('agent 1.2.0')\n"}, "bin/sd-agent": v2["bin/sd-agent"],
		"lib/common.py": v2["lib/common.py"], "lib/new.py": v2["lib/new.py"],
	}}
	for i, v := range versions {
		s.publish(t, "1.0."+string(rune('0'+i)), v)
		if _, err := e.Update(context.Background(), UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
		time.Sleep(20 * time.Millisecond) // the installed files are older than the index: not racy
	}
	l, _ := e.resolveLayout()
	if all, _, _ := e.listSnapshots(l); len(all) != 1 {
		t.Fatalf("%d snapshots kept, want 1: the updates did not prune", len(all))
	}
	fs.reset()
	s.publish(t, "1.0.3", map[string]agentFile{
		"agent.py": {data: "print('agent 1.0.3')\n"}, "bin/sd-agent": v2["bin/sd-agent"],
		"lib/common.py": v2["lib/common.py"], "lib/new.py": v2["lib/new.py"],
	})
	p := planNext(t, e, false)
	if got := fs.reset(); len(got) != 0 {
		t.Errorf("plan opened installed files %v; their stat had not changed since the last update", got)
	}
	if got := changedNames(p); len(got) != 1 || got[0] != "agent.py" {
		t.Errorf("plan changes %v, want [agent.py]", got)
	}
}

// What pruning may have taken out of the store is the content only the pruned snapshots named;
// a snapshot of the earlier layout linked installed files, so pruning one may have touched any.
func TestContentOnlyInPrunedSnapshots(t *testing.T) {
	x := statindex.New("")
	for _, sum := range []string{"a", "b", "c"} {
		x.Set("f"+sum, statindex.Stat{Size: 1}, sum)
	}
	pruned := []prunedSnapshot{{objects: []string{"a", "b", "d"}}}
	gone := contentOnlyIn(pruned, map[string]bool{"a": true, "c": true})
	if got := strings.Join(gone.names(x), " "); got != "fb" {
		t.Errorf("entries refreshed after pruning: %q, want only fb (a is kept by another snapshot, d is not installed)", got)
	}
	pruned[0].legacy = true
	if got := strings.Join(contentOnlyIn(pruned, nil).names(x), " "); got != "fa fb fc" {
		t.Errorf("entries refreshed after pruning a legacy snapshot: %q, want all", got)
	}
}

// The plan records what it finds in the index it loaded: the entries of names the new version
// drops go, and so does any entry of a name no manifest lists (a damaged index), while the files
// it trusted keep theirs.
func TestPlanIndexHoldsTheNewVersionsFilesOnly(t *testing.T) {
	s := newSite(t)
	e, _ := osEngine(t, s)
	updatedNotRacy(t, s, e, "1.0.0", v1)
	l, _ := e.resolveLayout()
	_, raw, _ := e.installedManifest(l)
	x := e.loadIndex(l, raw)
	if x == nil || x.Len() != len(v1) {
		t.Fatalf("index after the first update: %v", x)
	}
	x.Set("ghost", statindex.Stat{Size: 1}, strings.Repeat("0", 64))
	if err := x.Save(e.Fs, l.indexPath()); err != nil {
		t.Fatal(err)
	}
	time.Sleep(20 * time.Millisecond)
	s.publish(t, "1.1.0", v2)
	p := planNext(t, e, false)
	want := []string{"agent.py", "bin/sd-agent", "lib/common.py"} // lib/new.py is not installed yet
	if got := p.Index.Names(); strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("plan's index names %v, want %v (plugins/old.py dropped, ghost listed by no manifest)", got, want)
	}
}

// updatedNotRacy publishes files as version and updates e to it (as updateTo does, without its
// crash fixtures' tree check), then waits until the installed files are older than the index it
// wrote: none of them is racy.
func updatedNotRacy(t *testing.T, s *site, e *Engine, version string, files map[string]agentFile) {
	t.Helper()
	s.publish(t, version, files)
	if _, err := e.Update(context.Background(), UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(20 * time.Millisecond)
}
