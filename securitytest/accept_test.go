package securitytest

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// assertInstalled checks that the install holds exactly the released files (content and
// mode) plus agent.conf, which no manifest lists and which must never be touched.
func (e *env) assertInstalled(files map[string]string) {
	e.t.Helper()
	want := map[string]bool{"agent.conf": true}
	for name, content := range files {
		mode := os.FileMode(0o644)
		if strings.HasSuffix(name, "*") {
			name, mode = strings.TrimSuffix(name, "*"), 0o755
		}
		want[name] = true
		path := filepath.Join(e.install, filepath.FromSlash(name))
		fi, err := os.Lstat(path)
		if err != nil {
			e.t.Errorf("%s: %v", name, err)
			continue
		}
		if got := readFile(e.t, path); got != content {
			e.t.Errorf("%s holds %q, want %q", name, got, content)
		}
		if fi.Mode() != mode {
			e.t.Errorf("%s has mode %v, want %v", name, fi.Mode(), mode)
		}
	}
	for name, desc := range treeHash(e.t, e.install) {
		if !strings.HasPrefix(desc, "d") && !want[filepath.ToSlash(name)] {
			e.t.Errorf("%s is installed but not released", name)
		}
	}
	if got := readFile(e.t, filepath.Join(e.install, "agent.conf")); got != "token=local-only\n" {
		e.t.Errorf("agent.conf, which no manifest lists, was changed: %q", got)
	}
}

// refused runs an update that must be refused before any file is fetched, leaving the machine
// as it was.
func (e *env) refused(want ...string) result {
	e.t.Helper()
	e.srv.reset()
	before := e.capture()
	r := e.sdupdate("update")
	if r.code != 1 {
		e.t.Errorf("exit status %d, want 1\n%s", r.code, r.output())
	}
	for _, w := range want {
		if !strings.Contains(r.output(), w) {
			e.t.Errorf("the output does not say %q:\n%s", w, r.output())
		}
	}
	e.assertUnchanged(before)
	for _, p := range e.srv.paths() {
		if !isManifestPath(p) {
			e.t.Errorf("%s was requested although the manifest was refused", p)
		}
	}
	return r
}

// Key rotation: with two PublicKey= lines either key may sign; once the old line is removed, a
// manifest the old key signs is refused.
func TestKeyRotation(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	next := newKey(t, e.keys, "next")
	e.cfg.publicKeys = []string{e.key.line, next.line}
	e.baseline() // 1.0.0 signed by the old key: accepted

	// 1.1.0 signed by the new key only.
	minisignSign(t, next, filepath.Join(e.site, "manifest.json"))
	e.mustUpdate("1.1.0")
	e.assertInstalled(v110)

	// The old key is retired on the server; a release it signs is now refused.
	e.cfg.publicKeys = []string{next.line}
	e.writeConfig()
	v120 := map[string]string{"agent.py": "print('agent 1.2.0')\n"}
	e.release("1.2.0", v120)
	e.refused("signature check failed", "not a trusted public key")

	// The same manifest signed by the new key goes through.
	minisignSign(t, next, filepath.Join(e.site, "manifest.json"))
	e.mustUpdate("1.2.0")
	e.assertInstalled(v120)
}

// A replayed older manifest is refused (TestHostile) unless --allow-downgrade, which installs it
// whole: files back, files added since removed.
func TestAllowDowngrade(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.baseline()
	e.mustUpdate("1.1.0")
	writeFile(t, filepath.Join(e.site, "manifest.json"), string(e.manifest100), 0o644)
	writeFile(t, filepath.Join(e.site, "manifest.json.minisig"), string(e.sig100), 0o644)
	r := e.mustUpdate("1.0.0", "--allow-downgrade")
	if !strings.Contains(r.output(), "downgrading from 1.1.0 to 1.0.0") {
		t.Errorf("the output does not warn about the downgrade:\n%s", r.output())
	}
	e.assertInstalled(v100)
}

// The original updater's md5 manifests: only with AllowUnsigned=yes, with a warning that md5 is
// weak, on every run. A replaced file keeps its installed mode, a new one gets 0644.
func TestLegacyMD5Manifest(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.cfg.noKeys, e.cfg.allowUnsigned = true, true
	e.writeConfig()
	writeFile(t, filepath.Join(e.install, "agent.py"), "print('original')\n", 0o750)
	writeFile(t, filepath.Join(e.install, "agent.conf"), "token=local-only\n", 0o600)
	files := map[string]string{"agent.py": "print('1.0.0b4')\n", "lib/helper.py": "def help(): pass\n"}
	var m mdoc
	m.Version = "1.0.0b4"
	for name, content := range files {
		writeFile(t, filepath.Join(e.site, filepath.FromSlash(name)), content, 0o644)
		m.Files = append(m.Files, legacyEntry(name, content))
	}
	e.publish(m, keyPair{})

	warnings := []string{"AllowUnsigned=yes", "md5", "weak"}
	r := e.mustUpdate("1.0.0b4")
	for _, w := range warnings {
		if !strings.Contains(r.stderr, w) {
			t.Errorf("the first run does not warn %q:\n%s", w, r.stderr)
		}
	}
	if n := e.srv.count("/manifest.json.minisig"); n != 0 {
		t.Errorf("the signature was asked for %d times with no PublicKey=", n)
	}
	for name, content := range files {
		if got := readFile(t, filepath.Join(e.install, filepath.FromSlash(name))); got != content {
			t.Errorf("%s holds %q, want %q", name, got, content)
		}
	}
	for name, mode := range map[string]os.FileMode{"agent.py": 0o750, "lib/helper.py": 0o644} {
		if fi, err := os.Stat(filepath.Join(e.install, filepath.FromSlash(name))); err != nil || fi.Mode() != mode {
			t.Errorf("%s: mode %v (%v), want %v", name, fi.Mode(), err, mode)
		}
	}
	for _, args := range [][]string{{"update"}, {"update", "--dry-run"}, {"check"}} {
		r := e.sdupdate(args...)
		if r.code != 0 {
			t.Errorf("sdupdate %s: exit %d\n%s", strings.Join(args, " "), r.code, r.output())
		}
		for _, w := range warnings {
			if !strings.Contains(r.stderr, w) {
				t.Errorf("sdupdate %s does not warn %q:\n%s", strings.Join(args, " "), w, r.stderr)
			}
		}
	}

	// md5 is still checked: a file that does not match is refused, the install unchanged.
	writeFile(t, filepath.Join(e.site, "agent.py"), "print('tampered')\n", 0o644)
	m.Version = "1.0.0b5"
	m.Files = []mfile{legacyEntry("agent.py", "print('1.0.0b5')\n")}
	e.publish(m, keyPair{})
	e.srv.reset()
	before := e.capture()
	r = e.sdupdate("update")
	if r.code != 1 || !strings.Contains(r.output(), "md5") {
		t.Errorf("a file with the wrong md5: exit %d, want 1 and a message naming md5\n%s", r.code, r.output())
	}
	e.assertUnchanged(before)
}

// AllowUnsigned=yes warns on every run, signed manifest or not, whatever the command.
func TestAllowUnsignedWarnsEveryRun(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.cfg.allowUnsigned = true
	e.baseline()
	for _, args := range [][]string{{"check"}, {"update", "--dry-run"}, {"update"}, {"update"}, {"check"}} {
		r := e.sdupdate(args...)
		if r.code != 0 && r.code != 100 {
			t.Errorf("sdupdate %s: exit %d\n%s", strings.Join(args, " "), r.code, r.output())
		}
		if !strings.Contains(r.stderr, "warning: AllowUnsigned=yes") {
			t.Errorf("sdupdate %s does not warn about AllowUnsigned=yes:\n%s", strings.Join(args, " "), r.stderr)
		}
	}
	if v := e.installedVersion(); v != "1.1.0" {
		t.Errorf("installed version %q, want 1.1.0", v)
	}
}

// AllowUnsigned=yes with a PublicKey= accepts a manifest that has no signature, with a warning;
// one whose signature does not verify is refused (TestHostile).
func TestAllowUnsignedWithoutSignature(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.cfg.allowUnsigned = true
	e.baseline()
	os.Remove(filepath.Join(e.site, "manifest.json.minisig"))
	r := e.mustUpdate("1.1.0")
	if !strings.Contains(r.stderr, "warning: the manifest has no signature; accepted because AllowUnsigned=yes") {
		t.Errorf("no warning that the manifest was unsigned:\n%s", r.stderr)
	}
	e.assertInstalled(v110)
}
