package updater

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/sirupsen/logrus"
	"github.com/sirupsen/logrus/hooks/test"
	"github.com/spf13/afero"

	"github.com/sdupdate/sdupdate/manifest"
)

// editedAfterUpdate installs 1.0.0, updates to 1.1.0 (whose snapshot keeps 1.0.0's binary as an
// object), edits the installed binary by hand and publishes 1.2.0, whose deltas start from
// 1.1.0's and 1.0.0's binaries. It returns 1.2.0's manifest and files, and the path of the
// store's object of 1.0.0's binary.
func editedAfterUpdate(t *testing.T) (s *pubSite, e *Engine, fsys afero.Fs, hook *test.Hook, m3 *manifest.Manifest, v3 map[string]string, object string) {
	t.Helper()
	s = newPubSite(t)
	v1, v2 := agentVersions()
	s.release(t, "1.0.0", v1)
	e, fsys, hook = deltaEngine(t, s)
	if _, err := e.Update(context.Background(), UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	s.release(t, "1.1.0", v2)
	if _, err := e.Update(context.Background(), UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := afero.WriteFile(fsys, installDir+"/bin/sd-agent", []byte("#!/bin/sh\n# edited by hand\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	v3 = map[string]string{}
	for name, data := range v2 {
		v3[name] = data
	}
	v3["bin/sd-agent"] = v2["bin/sd-agent"][:9000] + "patched again" + v2["bin/sd-agent"][9000:]
	m3 = s.release(t, "1.2.0", v3)
	f, _ := m3.Lookup("bin/sd-agent")
	from := map[string]bool{}
	for _, d := range f.Deltas {
		from[d.From] = true
	}
	if v1Sum := sha(v1["bin/sd-agent"]); !from[v1Sum] || !from[sha(v2["bin/sd-agent"])] {
		t.Fatalf("1.2.0's bin/sd-agent has deltas from %v, want from both earlier versions", from)
	}
	object = findObject(t, fsys, sha(v1["bin/sd-agent"]))
	hook.Reset()
	return s, e, fsys, hook, m3, v3, object
}

// findObject is the path of the snapshot store's object named sum.
func findObject(t *testing.T, fsys afero.Fs, sum string) string {
	t.Helper()
	var found string
	_ = afero.Walk(fsys, stateDir, func(p string, fi os.FileInfo, err error) error {
		if err == nil && fi.Mode().IsRegular() && fi.Name() == sum && filepath.Base(filepath.Dir(p)) == "objects" {
			found = p
		}
		return nil
	})
	if found == "" {
		t.Fatalf("no snapshot object %s under %s", sum, stateDir)
	}
	return found
}

func sha(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:])
}

func fallbacksLogged(hook *test.Hook, file string) []string {
	var out []string
	for _, entry := range hook.AllEntries() {
		if entry.Level == logrus.WarnLevel && strings.Contains(entry.Message, "cannot use the") && entry.Data["file"] == file {
			out = append(out, entry.Data["error"].(string))
		}
	}
	return out
}

// The installed binary was edited, so no delta starts from it; the snapshot of the last update
// holds 1.0.0's binary, from which 1.2.0 has a delta: that delta is what is fetched, and the
// object is only read.
func TestDeltaFromSnapshotObject(t *testing.T) {
	s, e, fsys, hook, m3, v3, object := editedAfterUpdate(t)
	before, err := afero.ReadFile(fsys, object)
	if err != nil {
		t.Fatal(err)
	}
	dry, err := e.Update(context.Background(), UpdateOptions{DryRun: true})
	if err != nil {
		t.Fatal(err)
	}
	f, _ := m3.Lookup("bin/sd-agent")
	for _, c := range dry.Plan.Changes {
		if c.File.Name != "bin/sd-agent" {
			continue
		}
		first := c.Sources[0]
		if first.Kind != SourceDelta || first.BaseStore == nil || first.BaseWant.SHA256 != sha(string(before)) || first.String() != "delta from a snapshot" {
			t.Errorf("bin/sd-agent is planned from %v (base %q in store %v), want the delta from the snapshot object", first, first.BaseWant.SHA256, first.BaseStore)
		}
		if c.Cost() >= f.Object.Size {
			t.Errorf("planned cost %d, not below the object's %d", c.Cost(), f.Object.Size)
		}
	}
	if _, err := e.Update(context.Background(), UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	installed(t, fsys, v3)
	noLeftovers(t, fsys)
	if got := s.fetchedKinds(m3)["bin/sd-agent"]; !reflect.DeepEqual(got, []string{"delta"}) {
		t.Errorf("bin/sd-agent: fetched %v, want the delta only", got)
	}
	if got := fallbacksLogged(hook, "bin/sd-agent"); len(got) != 0 {
		t.Errorf("fallbacks logged: %v", got)
	}
	// Retention may have removed the object since; if it is there, it is as it was.
	if after, err := afero.ReadFile(fsys, object); err == nil && string(after) != string(before) {
		t.Error("the snapshot object was changed")
	}
}

// An object whose content is not its name is refused when read, with a warning, and the file
// comes from the next source; the object is left as it is.
func TestDamagedSnapshotObjectFallsBack(t *testing.T) {
	for _, tc := range []struct {
		name   string
		damage func(t *testing.T, fsys afero.Fs, object string)
	}{
		{"same size, other bytes", func(t *testing.T, fsys afero.Fs, object string) {
			data, _ := afero.ReadFile(fsys, object)
			data[len(data)/2] ^= 0xff
			if err := afero.WriteFile(fsys, object, data, 0o644); err != nil {
				t.Fatal(err)
			}
		}},
		{"truncated", func(t *testing.T, fsys afero.Fs, object string) {
			data, _ := afero.ReadFile(fsys, object)
			if err := afero.WriteFile(fsys, object, data[:100], 0o644); err != nil {
				t.Fatal(err)
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, e, fsys, hook, m3, v3, object := editedAfterUpdate(t)
			tc.damage(t, fsys, object)
			damaged, _ := afero.ReadFile(fsys, object)
			res, err := e.Update(context.Background(), UpdateOptions{})
			if err != nil || res.Outcome != OutcomeUpdated {
				t.Fatalf("update: %+v, %v", res, err)
			}
			installed(t, fsys, v3)
			noLeftovers(t, fsys)
			if got := s.fetchedKinds(m3)["bin/sd-agent"]; !reflect.DeepEqual(got, []string{"object"}) {
				t.Errorf("bin/sd-agent: fetched %v, want the object only (the delta is not fetched once its base fails)", got)
			}
			if got := fallbacksLogged(hook, "bin/sd-agent"); len(got) != 1 || !strings.Contains(got[0], "snapshot object") {
				t.Errorf("fallbacks logged: %q, want one naming the snapshot object", got)
			}
			if after, err := afero.ReadFile(fsys, object); err == nil && string(after) != string(damaged) {
				t.Error("the damaged object was written to")
			}
		})
	}
}
