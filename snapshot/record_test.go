package snapshot

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spf13/afero"
)

// threeSnapshots takes three snapshots of a series of updates of agent.py and then tool: only
// the middle one names agent.py's 1.0.1 content (its object), the first stored 1.0.0's, the
// last tool's.
func threeSnapshots(t *testing.T, e *env) []*Meta {
	t.Helper()
	e.installV1(t)
	var out []*Meta
	for i, step := range []struct {
		leaving []string
		next    string
	}{{[]string{"agent.py"}, "print('v1.0.1')\n"}, {[]string{"agent.py"}, "print('v1.0.2')\n"}, {[]string{"tool"}, ""}} {
		m, err := createLeaving(e.store, context.Background(), NewID(time.Now().Add(time.Duration(i)*time.Hour), "1.0.0"), "1.0.0", nil, "", v1Names, step.leaving)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, m)
		if step.next != "" {
			e.replace(t, "agent.py", step.next, 0o644)
		}
	}
	return out
}

func (e *env) recordPath(id string) string { return filepath.Join(e.store.Dir, id, recordFile) }

func (e *env) hasMarker() bool {
	ok, _ := afero.Exists(e.fs, filepath.Join(e.store.Dir, pendingFile))
	return ok
}

// A Catalog says of each snapshot what List says, newest first, and the store's records are
// read once by a prune (Catalog, then DeleteSome) and not at all by a Cleanup after changes
// that were not cut short.
func TestCatalogAndPruneReadEachRecordOnce(t *testing.T) {
	forEachFs(t, func(t *testing.T, e *env) {
		snaps := threeSnapshots(t, e)
		if e.hasMarker() {
			t.Fatal("the marker is left after Creates that all succeeded")
		}
		list, err := e.store.List()
		if err != nil {
			t.Fatal(err)
		}
		log := &openLog{Fs: e.fs}
		counting := *e.store
		counting.Fs = log
		if _, err := counting.Cleanup(); err != nil {
			t.Fatal(err)
		}
		if reads := recordReads(log); len(reads) != 0 {
			t.Errorf("Cleanup with no change cut short read records %v", reads)
		}

		c, err := counting.Catalog()
		if err != nil {
			t.Fatal(err)
		}
		if len(c.Snapshots) != len(list) {
			t.Fatalf("Catalog has %d snapshots, List %d", len(c.Snapshots), len(list))
		}
		for i, h := range c.Snapshots {
			if want := list[i].Header(); h != want {
				t.Errorf("Catalog[%d] = %+v, List says %+v", i, h, want)
			}
		}
		removed, err := counting.DeleteSome(c, []string{snaps[1].ID, snaps[0].ID})
		if err != nil || len(removed) != 2 {
			t.Fatalf("DeleteSome = %v, %v", removed, err)
		}
		for id, n := range recordReads(log) {
			if n > 1 {
				t.Errorf("the record of %s was read %d times by a prune", id, n)
			}
		}
		// What the kept snapshot names stays, the rest goes; so does the marker.
		objs, _ := e.store.objects()
		if len(objs) != 1 || objs[sumOf("tool v1\n")] == 0 || e.hasMarker() {
			t.Errorf("after the prune: objects %v, marker %v; want only tool's", objs, e.hasMarker())
		}
	})
}

// recordReads counts, per snapshot id, the reads of its record that log saw.
func recordReads(log *openLog) map[string]int {
	reads := map[string]int{}
	for _, p := range log.opened {
		if filepath.Base(p) == recordFile {
			reads[filepath.Base(filepath.Dir(p))]++
		}
	}
	return reads
}

// A crash after the last record naming an object went and before the object did leaves the
// marker, the only trace of it; Cleanup then collects, and only then.
func TestCleanupCollectsOnlyWhenTheMarkerSaysSo(t *testing.T) {
	forEachFs(t, func(t *testing.T, e *env) {
		snaps := threeSnapshots(t, e)
		// The crash: the middle record and directory gone, its object not yet.
		if _, err := e.store.markPending(); err != nil {
			t.Fatal(err)
		}
		if err := e.store.deleteRecord(snaps[1].ID); err != nil {
			t.Fatal(err)
		}
		orphan := sumOf("print('v1.0.1')\n")
		if objs, _ := e.store.objects(); objs[orphan] == 0 {
			t.Fatal("setup: the object of agent.py 1.0.1 is gone already")
		}
		// A Create in between keeps the marker: the collect is still owed.
		if _, err := createLeaving(e.store, context.Background(), NewID(time.Now().Add(3*time.Hour), "1.0.1"), "1.0.1", nil, "", v1Names, []string{"lib/x/y.py"}); err != nil {
			t.Fatal(err)
		}
		if !e.hasMarker() {
			t.Fatal("a Create removed the marker of an earlier change cut short")
		}
		if _, err := e.store.Cleanup(); err != nil {
			t.Fatal(err)
		}
		objs, _ := e.store.objects()
		if _, ok := objs[orphan]; ok || e.hasMarker() {
			t.Fatalf("after Cleanup: objects %v, marker %v; want agent.py 1.0.1's collected and the marker gone", objs, e.hasMarker())
		}
		if len(objs) != 3 {
			t.Errorf("Cleanup left %d objects, want the 3 the kept snapshots stored", len(objs))
		}
	})
}

// A record written by the sdupdate before (format 2: one indented JSON document) is listed,
// restored and counted by retention as before.
func TestFormat2RecordStillRead(t *testing.T) {
	forEachFs(t, func(t *testing.T, e *env) {
		ctx := context.Background()
		e.installV1(t)
		before := tree(t, e.fs, e.install, "")
		older, err := create(e.store, ctx, NewID(time.Now(), "1.0.0"), "1.0.0", []byte(`{"version":"1.0.0"}`), "run-1", v1Names)
		if err != nil {
			t.Fatal(err)
		}
		newer, err := createLeaving(e.store, ctx, NewID(time.Now().Add(time.Hour), "1.0.0"), "1.0.0", nil, "", v1Names, []string{})
		if err != nil {
			t.Fatal(err)
		}
		old, err := e.store.Get(older.ID)
		if err != nil {
			t.Fatal(err)
		}
		old.Format = recordFormatJSON
		data, err := json.MarshalIndent(old, "", "  ")
		if err != nil {
			t.Fatal(err)
		}
		if err := afero.WriteFile(e.fs, e.recordPath(older.ID), append(data, '\n'), 0o600); err != nil {
			t.Fatal(err)
		}
		c, err := e.store.Catalog()
		if err != nil || len(c.Snapshots) != 2 || c.Snapshots[1] != old.Header() {
			t.Fatalf("Catalog = %+v, %v", c, err)
		}
		// Spelt on one line, it is still one document of format 2.
		compact, _ := json.Marshal(old)
		if err := afero.WriteFile(e.fs, e.recordPath(older.ID), compact, 0o600); err != nil {
			t.Fatal(err)
		}
		if got, err := e.store.Get(older.ID); err != nil || got.Header() != old.Header() {
			t.Fatalf("Get of a one-line format 2 record = %+v, %v", got, err)
		}
		// Every object is older's, which the deletion beside it must keep.
		objs, _ := e.store.objects()
		if err := e.store.Delete(newer.ID); err != nil {
			t.Fatal(err)
		}
		if left, _ := e.store.objects(); len(left) != len(objs) || len(objs) != len(v1Names) {
			t.Fatalf("objects %v before, %v after deleting beside a format 2 record", objs, left)
		}
		e.updateToV2(t)
		if _, err := e.store.Restore(ctx, older.ID, v2Names); err != nil {
			t.Fatal(err)
		}
		diffTrees(t, "install restored from a format 2 record", tree(t, e.fs, e.install, ""), before)
	})
}

// A record damaged anywhere — a byte changed, cut short at any length, a line added — is
// reported as corrupt by every reader, never restored and never the cause of a panic, and while
// it is there no object is removed.
func TestDamagedRecordIsCorruptToEveryReader(t *testing.T) {
	e := newEnv(t, afero.NewMemMapFs(), "/")
	snaps := threeSnapshots(t, e)
	older, newer := snaps[0], snaps[2]
	good, err := afero.ReadFile(e.fs, e.recordPath(newer.ID))
	if err != nil {
		t.Fatal(err)
	}
	damages := map[string][]byte{
		"a line added":  append(append([]byte{}, good...), "{}\n"...),
		"empty":         {},
		"size changed":  []byte(strings.Replace(string(good), `"size":8,`, `"size":9,`, 1)),
		"head's id":     []byte(strings.Replace(string(good), newer.ID, older.ID, 1)),
		"head's format": []byte(strings.Replace(string(good), `"format":3`, `"format":4`, 1)),
	}
	for n := 1; n < len(good); n++ {
		damages[fmt.Sprintf("cut at %d bytes", n)] = good[:n]
	}
	objs, _ := e.store.objects()
	for what, data := range damages {
		if string(data) == string(good) {
			t.Fatalf("%s: the damage changed nothing", what)
		}
		if err := afero.WriteFile(e.fs, e.recordPath(newer.ID), data, 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := e.store.Get(newer.ID); !errors.Is(err, ErrCorrupt) {
			t.Errorf("%s: Get = %v, want ErrCorrupt", what, err)
		}
		if list, err := e.store.List(); !errors.Is(err, ErrCorrupt) || len(list) != 2 {
			t.Errorf("%s: List = %d snapshots, %v; want the other two and ErrCorrupt", what, len(list), err)
		}
		if c, err := e.store.Catalog(); !errors.Is(err, ErrCorrupt) || len(c.Snapshots) != 2 || !strings.Contains(err.Error(), newer.ID) {
			t.Errorf("%s: Catalog = %v; want the other two and ErrCorrupt naming %s", what, err, newer.ID)
		}
		if err := e.store.collect(nil); !errors.Is(err, ErrCorrupt) {
			t.Errorf("%s: collect = %v, want a refusal", what, err)
		}
		if left, _ := e.store.objects(); len(left) != len(objs) {
			t.Fatalf("%s: %d objects of %d left", what, len(left), len(objs))
		}
	}
}

// A record whose objects line does not list what its files name (written by something else
// than Create, its checksum made to match) is refused by a full read, so it is never restored.
func TestRecordWhoseObjectsDisagreeWithItsFilesIsCorrupt(t *testing.T) {
	e := newEnv(t, afero.NewMemMapFs(), "/")
	newer := threeSnapshots(t, e)[2]
	m, err := e.store.Get(newer.ID)
	if err != nil {
		t.Fatal(err)
	}
	data, err := encodeRecord(m)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.SplitAfter(string(data), "\n")
	objs := namedObjects(m.Files)
	objs[0] = strings.Repeat("0", 64)
	line, _ := json.Marshal(objs)
	lines[1] = string(line) + "\n"
	rest := strings.Join(lines[1:], "")
	var h recordHead
	if err := json.Unmarshal([]byte(lines[0]), &h); err != nil {
		t.Fatal(err)
	}
	h.SHA256 = sumOf(rest)
	head, _ := json.Marshal(h)
	if err := afero.WriteFile(e.fs, e.recordPath(newer.ID), []byte(string(head)+"\n"+rest), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := e.store.Get(newer.ID); !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "objects") {
		t.Fatalf("Get = %v, want ErrCorrupt about its objects", err)
	}
	if list, err := e.store.List(); !errors.Is(err, ErrCorrupt) || len(list) != 2 {
		t.Fatalf("List = %d snapshots, %v; want the other two and ErrCorrupt", len(list), err)
	}
}

// The objects line is read alike however it is spelt, so long as it is the JSON array of
// sorted distinct sha256 it must be; anything else is refused.
func TestObjectsLine(t *testing.T) {
	a, b := sumOf("a"), sumOf("b")
	if a > b {
		a, b = b, a
	}
	q := func(s string) string { return `"` + s + `"` }
	for _, c := range []struct {
		line string
		want []string // nil: refused
	}{
		{`[]`, []string{}},
		{`[ ]`, []string{}},
		{`[` + q(a) + `]`, []string{a}},
		{`[` + q(a) + `,` + q(b) + `]`, []string{a, b}},
		{`[ ` + q(a) + ` , ` + q(b) + ` ]`, []string{a, b}},
		{`[` + q(b) + `,` + q(a) + `]`, nil},
		{`[` + q(a) + `,` + q(a) + `]`, nil},
		{`[` + q(a) + q(b) + `]`, nil},
		{`[` + q(a) + `,` + q(b) + `,]`, nil},
		{`[` + q(strings.ToUpper(a)) + `]`, nil},
		{`[` + q(a[:63]) + `]`, nil},
		{`[` + q(a) + `,` + q(b) + `,` + q(strings.Repeat("f", 64)) + `]`, nil}, // more than the files
		{`[1]`, nil},
		{`{}`, nil},
		{`[`, nil},
		{``, nil},
	} {
		got, err := parseObjects([]byte(c.line), 2)
		if c.want == nil {
			if err == nil {
				t.Errorf("parseObjects(%s) = %v, want a refusal", c.line, got)
			}
			continue
		}
		if err != nil || strings.Join(got, " ") != strings.Join(c.want, " ") || len(got) != len(c.want) {
			t.Errorf("parseObjects(%s) = %v, %v; want %v", c.line, got, err, c.want)
		}
	}
}

// A record's file lines are written by hand; they must read back as what encoding/json would
// have written, names that need escaping and stamps missing or partly empty included.
func TestFileLinesAreWhatEncodingJSONWrites(t *testing.T) {
	files := []FileMeta{
		{Name: "bin/sd-agent", SHA256: sumOf("a"), Size: 99, Mode: 0o755, UID: 0, GID: 0, Stored: true,
			Stamp: &Stamp{Dev: 65024, Ino: 1234, Size: 99, MtimeNs: 1796183153492997551, CtimeNs: 1796183153568997553, TakenNs: 1796183153809141634}},
		{Name: "conf/a b&<c>.ini", SHA256: sumOf("b"), Size: 0, Mode: 0o600, UID: -1, GID: -1,
			Stamp: &Stamp{Size: 0, MtimeNs: -5, TakenNs: 7}},
		{Name: "lib/\"quoted\"\\é\u2028.py", SHA256: sumOf("c"), Size: 1 << 40, Mode: 0o644, UID: 1000, GID: 100},
	}
	for _, f := range files {
		want, err := json.Marshal(&f)
		if err != nil {
			t.Fatal(err)
		}
		if got := appendFileLine(nil, &f); string(got) != string(want) {
			t.Errorf("file line of %q:\n got %s\nwant %s", f.Name, got, want)
		}
	}
	files = files[:2] // a record holds no name an install may not have
	m := &Meta{ID: "20260101T000000Z-1.0.0-abcdef", Version: "1.0.0", Bytes: 99, Files: files, Dirs: []DirMeta{{Name: "bin", Mode: 0o755}}}
	data, err := encodeRecord(m)
	if err != nil {
		t.Fatal(err)
	}
	back, err := parseRecord(m.ID, data)
	if err != nil {
		t.Fatalf("the record does not read back: %v", err)
	}
	if b, _ := json.Marshal(back.Files); string(b) != string(must(json.Marshal(files))) {
		t.Errorf("files read back as %s", b)
	}
}

func must(b []byte, err error) []byte {
	if err != nil {
		panic(err)
	}
	return b
}
