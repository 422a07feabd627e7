package securitytest

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"

	"github.com/sdupdate/sdupdate/manifest"
)

// storedBaseEnv goes 1.0.0 → 1.1.0 → 1.2.0, whose deltas start from 1.1.0 only, then rolls back
// to 1.0.0: 1.1.0's binary is then in no installed file, only in the snapshot the 1.1.0 → 1.2.0
// update took. It returns the 1.2.0 manifest, 1.2.0's binary and the path of the store's object
// of 1.1.0's binary.
func storedBaseEnv(t *testing.T) (e *env, m3 *manifest.Manifest, bin3, object string) {
	e = newEnv(t)
	e.writeConfig()
	r := rand.New(rand.NewPCG(7, 8))
	text := func(n int) string {
		b := make([]byte, n)
		for i := range b {
			b[i] = "abcdefghijklmnop{}();\n"[r.IntN(22)]
		}
		return string(b)
	}
	bin1 := "#!/bin/sh\n" + text(200<<10)
	bin2 := bin1[:50000] + "fixed in 1.1.0" + bin1[50000:]
	bin3 = bin2[:120000] + "fixed in 1.2.0" + bin2[120000:]
	e.release("1.0.0", map[string]string{"bin/sd-agent*": bin1, "VERSION": "1.0.0\n"})
	e.mustUpdate("1.0.0")
	e.release("1.1.0", map[string]string{"bin/sd-agent*": bin2, "VERSION": "1.1.0\n"})
	e.mustUpdate("1.1.0")
	e.release("1.2.0", map[string]string{"bin/sd-agent*": bin3, "VERSION": "1.2.0\n"}, "--deltas", "1")
	e.mustUpdate("1.2.0")
	var st struct {
		Snapshots []struct{ ID, Version string } `json:"snapshots"`
	}
	if err := json.Unmarshal([]byte(e.sdupdate("status", "--json").stdout), &st); err != nil {
		t.Fatal(err)
	}
	var first string
	for _, s := range st.Snapshots {
		if s.Version == "1.0.0" {
			first = s.ID
		}
	}
	if r := e.sdupdate("rollback", "--to", first); r.code != 0 || e.installedVersion() != "1.0.0" {
		t.Fatalf("rollback --to %s: exit %d\n%s", first, r.code, r.output())
	}
	raw, err := os.ReadFile(filepath.Join(e.site, "manifest.json"))
	if err != nil {
		t.Fatal(err)
	}
	if m3, err = manifest.Parse(raw); err != nil {
		t.Fatal(err)
	}
	f, _ := m3.Lookup("bin/sd-agent")
	if len(f.Deltas) != 1 || f.Deltas[0].From != sum(bin2) {
		t.Fatalf("1.2.0's binary has deltas %+v, want one, from 1.1.0's", f.Deltas)
	}
	object = filepath.Join(e.state, "snapshots", "objects", sum(bin2))
	if got := readFile(t, object); got != bin2 {
		t.Fatalf("the store's object %s is not 1.1.0's binary", object)
	}
	e.srv.reset()
	return e, m3, bin3, object
}

func sum(s string) string {
	h := sha256.Sum256([]byte(s))
	return hex.EncodeToString(h[:])
}

// fetchedSources says which of bin/sd-agent's sources in m the server was asked for.
func (e *env) fetchedSources(m *manifest.Manifest) []string {
	f, _ := m.Lookup("bin/sd-agent")
	var out []string
	for kind, p := range map[string]string{"delta": f.Deltas[0].URL, "object": f.Object.URL, "file": f.Name} {
		if e.srv.count("/"+m.BaseURL+p) > 0 {
			out = append(out, kind)
		}
	}
	sort.Strings(out)
	return out
}

// After a rollback, the content the rollback took out of the install is still a delta's base:
// the update fetches the 1.1.0 → 1.2.0 delta, reading 1.1.0's binary from the snapshot store,
// and the new binary shares no inode with the store.
func TestDeltaFromSnapshotObjectAfterRollback(t *testing.T) {
	e, m3, bin3, object := storedBaseEnv(t)
	before, err := os.Lstat(object)
	if err != nil {
		t.Fatal(err)
	}
	r := e.mustUpdate("1.2.0", "--verbose")
	if got := readFile(t, filepath.Join(e.install, "bin", "sd-agent")); got != bin3 {
		t.Fatal("the installed binary is not 1.2.0's")
	}
	if got := e.fetchedSources(m3); strings.Join(got, ",") != "delta" {
		t.Errorf("fetched %v of bin/sd-agent, want the delta only\n%s", got, r.output())
	}
	if strings.Contains(r.stderr, "cannot use the") {
		t.Errorf("a source was given up:\n%s", r.stderr)
	}
	installedFi, err := os.Stat(filepath.Join(e.install, "bin", "sd-agent"))
	if err != nil {
		t.Fatal(err)
	}
	if st := installedFi.Sys().(*syscall.Stat_t); st.Nlink != 1 {
		t.Errorf("the installed binary has %d links, want 1 (no inode shared with the store)", st.Nlink)
	}
	if after, err := os.Lstat(object); err == nil && (!os.SameFile(before, after) || after.ModTime() != before.ModTime() || os.SameFile(after, installedFi)) {
		t.Error("the store's object was replaced or written to")
	}
}

// An object whose content is not its name is refused when read: the update says so, takes the
// next source, and installs 1.2.0 exactly; the object is left as it was.
func TestDamagedSnapshotObjectIsNotABase(t *testing.T) {
	e, m3, bin3, object := storedBaseEnv(t)
	data := []byte(readFile(t, object))
	data[len(data)/2] ^= 0x20
	if err := os.Chmod(object, 0o644); err != nil {
		t.Fatal(err)
	}
	writeFile(t, object, string(data), 0o444)
	r := e.mustUpdate("1.2.0")
	if got := readFile(t, filepath.Join(e.install, "bin", "sd-agent")); got != bin3 {
		t.Fatal("the installed binary is not 1.2.0's")
	}
	if got := e.fetchedSources(m3); strings.Join(got, ",") != "object" {
		t.Errorf("fetched %v of bin/sd-agent, want the object only (the delta is not fetched once its base fails)\n%s", got, r.output())
	}
	if !strings.Contains(r.stderr, "snapshot object") || !strings.Contains(r.stderr, "cannot use the delta of bin/sd-agent") {
		t.Errorf("no warning naming the damaged snapshot object:\n%s", r.stderr)
	}
	if got, err := os.ReadFile(object); err == nil && string(got) != string(data) {
		t.Error("the damaged object was written to")
	}
}
