package updater

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"github.com/spf13/afero"

	"github.com/sdupdate/sdupdate/faultfs"
)

// bigRecord is the journal of a run over n files: both manifests and the ops list every one.
func bigRecord(n int) *Record {
	var m strings.Builder
	m.WriteString(`{"version":"1.0.0","files":[`)
	rec := &Record{RunID: strings.Repeat("ab", 16), Kind: KindUpdate, Phase: PhaseStaging, From: "1.0.0", To: "1.1.0",
		StagingDir: filepath.Join(stateDir, "staging", strings.Repeat("ab", 16))}
	for i := 0; i < n; i++ {
		if i > 0 {
			m.WriteByte(',')
		}
		fmt.Fprintf(&m, `{"name":"d/f%06d","sha256":"%064d","size":%d}`, i, i, i)
		rec.Ops = append(rec.Ops, Op{Name: fmt.Sprintf("d/f%06d", i), Staged: filepath.Join(rec.StagingDir, fmt.Sprintf("%05d", i))})
	}
	m.WriteString(`]}`)
	rec.OldManifest = []byte(m.String())
	rec.NewManifest = []byte(strings.Replace(m.String(), "1.0.0", "1.1.0", 1))
	return rec
}

// A phase change costs the same whatever the size of the run: it rewrites txn.json, a record of
// a few hundred bytes, and none of the parts holding the manifests and ops.
func TestPhaseChangeCostDoesNotGrowWithTheRun(t *testing.T) {
	cost := func(n int) (ops int, size int64) {
		fsys := afero.NewMemMapFs()
		if err := fsys.MkdirAll(stateDir, 0o700); err != nil {
			t.Fatal(err)
		}
		ffs := faultfs.New(fsys)
		j := journal{fs: ffs, path: filepath.Join(stateDir, "txn.json")}
		rec := bigRecord(n)
		if err := j.save(rec); err != nil {
			t.Fatal(err)
		}
		before := ffs.Ops()
		if err := j.setPhase(rec, PhaseStaged); err != nil {
			t.Fatal(err)
		}
		fi, err := fsys.Stat(j.path)
		if err != nil {
			t.Fatal(err)
		}
		got, err := j.load()
		if err != nil {
			t.Fatal(err)
		}
		if got.Phase != PhaseStaged || string(got.OldManifest) != string(rec.OldManifest) ||
			string(got.NewManifest) != string(rec.NewManifest) || len(got.Ops) != n || got.Ops[n-1] != rec.Ops[n-1] {
			t.Fatalf("%d files: the journal read back differs from the one saved", n)
		}
		return ffs.Ops() - before, fi.Size()
	}
	smallOps, smallSize := cost(1)
	bigOps, bigSize := cost(5000)
	t.Logf("phase change: %d filesystem writes and a %d-byte txn.json for 1 file, %d and %d bytes for 5,000", smallOps, smallSize, bigOps, bigSize)
	if bigOps != smallOps || bigSize != smallSize {
		t.Errorf("a phase change of a 5,000-file run costs %d writes and %d bytes, of a 1-file run %d and %d: want the same",
			bigOps, bigSize, smallOps, smallSize)
	}
}

// A part that does not hold what the journal names is damage, reported, never used.
func TestJournalPartThatDoesNotMatchIsRefused(t *testing.T) {
	fsys := afero.NewMemMapFs()
	if err := fsys.MkdirAll(stateDir, 0o700); err != nil {
		t.Fatal(err)
	}
	j := journal{fs: fsys, path: filepath.Join(stateDir, "txn.json")}
	rec := bigRecord(3)
	if err := j.save(rec); err != nil {
		t.Fatal(err)
	}
	part := j.partPath(rec.saved.sums.Ops)
	if err := afero.WriteFile(fsys, part, []byte(`[{"name":"../../etc/shadow","remove":true}]`), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := j.load(); err == nil || !strings.Contains(err.Error(), "does not hold what the journal recorded") {
		t.Fatalf("load of a journal whose ops part was replaced: %v, want it refused", err)
	}
	if err := fsys.Remove(part); err != nil {
		t.Fatal(err)
	}
	if _, err := j.load(); err == nil || !strings.Contains(err.Error(), "cannot read part") {
		t.Fatalf("load of a journal whose ops part is missing: %v, want it refused", err)
	}
}

// A journal of format 1, with every field in txn.json, is what sdupdate wrote before its parts:
// one left by a run that an older sdupdate began is recovered exactly like one of today's.
func TestInlineJournalOfTheEarlierFormatIsRecovered(t *testing.T) {
	s := newSite(t)
	state, agent, cfg := interruptedIn(t, sweepCases[1], s, PhaseApplying)
	e := engineOn(state, cfg, agent)
	j := journal{fs: state, path: filepath.Join(stateDir, "txn.json")}
	rec, err := j.load()
	if err != nil {
		t.Fatal(err)
	}
	if len(rec.Ops) == 0 || len(rec.NewManifest) == 0 {
		t.Fatalf("the interrupted run's journal has %d ops and a %d-byte new manifest", len(rec.Ops), len(rec.NewManifest))
	}
	rec.Format, rec.Parts = recordFormatInline, nil
	data, err := json.MarshalIndent(rec, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	if err := afero.WriteFile(state, j.path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	removeParts(state, stateDir)
	if _, err := e.Recover(context.Background()); err != nil {
		t.Fatalf("recover of a format-1 journal left mid-apply: %v", err)
	}
	if v := settledState(t, e, []string{oldVersion}); v != oldVersion || agent.runs() != oldVersion {
		t.Fatalf("after recovering a format-1 journal the install is %s and the agent runs %s, want %s", v, agent.runs(), oldVersion)
	}
}
