package release

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"aead.dev/minisign"
	"github.com/spf13/afero"

	"github.com/sdupdate/sdupdate/internal/need"
	"github.com/sdupdate/sdupdate/manifest"
	"github.com/sdupdate/sdupdate/sign"
)

type srcFile struct {
	content string
	mode    os.FileMode
}

// agentTree is a small agent release: nested directories and several modes.
var agentTree = map[string]srcFile{
	"agent.py":                 {"print('agent')\n", 0o644},
	"bin/sd-agent":             {"#!/bin/sh\nexec python3 agent.py\n", 0o755},
	"plugins/disk/disk.py":     {"disk = 1\n", 0o644},
	"plugins/disk/secret.conf": {"token=x\n", 0o600},
	"empty.txt":                {"", 0o644},
	"a.b":                      {"sorts before a/b by full name\n", 0o444},
	"a/b":                      {"x", 0o777},
}

func writeTree(t *testing.T, fsys afero.Fs, root string, tree map[string]srcFile) {
	t.Helper()
	for name, f := range tree {
		path := filepath.Join(root, filepath.FromSlash(name))
		if err := fsys.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := afero.WriteFile(fsys, path, []byte(f.content), f.mode); err != nil {
			t.Fatal(err)
		}
		if err := fsys.Chmod(path, f.mode); err != nil { // past the umask
			t.Fatal(err)
		}
	}
}

func fixedNow() time.Time { return time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC) }

// readManifest parses OUT/manifest.json the way an updater would.
func readManifest(t *testing.T, fsys afero.Fs, out string) (*manifest.Manifest, []byte) {
	t.Helper()
	data, err := afero.ReadFile(fsys, filepath.Join(out, ManifestName))
	if err != nil {
		t.Fatal(err)
	}
	m, err := manifest.Parse(data)
	if err != nil {
		t.Fatalf("published manifest is invalid: %v\n%s", err, data)
	}
	return m, data
}

// assertPublished checks that OUT holds tree as version: manifest entries sorted by name with
// the right hash, size and mode, and each file at base_url/name with that content and mode.
func assertPublished(t *testing.T, fsys afero.Fs, out, version string, tree map[string]srcFile) *manifest.Manifest {
	t.Helper()
	m, _ := readManifest(t, fsys, out)
	if m.Version != version || m.BaseURL != version+"/" || m.Legacy {
		t.Errorf("manifest version %q base_url %q legacy %v", m.Version, m.BaseURL, m.Legacy)
	}
	if len(m.Files) != len(tree) {
		t.Errorf("manifest lists %d files, want %d", len(m.Files), len(tree))
	}
	for i := 1; i < len(m.Files); i++ {
		if m.Files[i-1].Name >= m.Files[i].Name {
			t.Errorf("files not sorted by name: %q before %q", m.Files[i-1].Name, m.Files[i].Name)
		}
	}
	for name, want := range tree {
		f, ok := m.Lookup(name)
		if !ok {
			t.Errorf("%s missing from the manifest", name)
			continue
		}
		sum := sha256.Sum256([]byte(want.content))
		if f.SHA256 != hex.EncodeToString(sum[:]) || f.Size != int64(len(want.content)) || f.Mode != want.mode || !f.HasMode {
			t.Errorf("%s: manifest entry %+v, want size %d mode %v", name, f, len(want.content), want.mode)
		}
		path := filepath.Join(out, filepath.FromSlash(m.BaseURL), filepath.FromSlash(name))
		got, err := afero.ReadFile(fsys, path)
		if err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		if string(got) != want.content {
			t.Errorf("%s: published content %q, want %q", path, got, want.content)
		}
		info, err := fsys.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if info.Mode() != want.mode {
			t.Errorf("%s: published mode %v, want %v", path, info.Mode(), want.mode)
		}
	}
	return m
}

func assertNothingPublished(t *testing.T, fsys afero.Fs, out string) {
	t.Helper()
	entries, err := afero.ReadDir(fsys, out)
	if errors.Is(err, os.ErrNotExist) {
		return
	}
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	if len(names) != 0 {
		t.Errorf("output directory holds %v after a refused release", names)
	}
}

func TestRunMemFs(t *testing.T) {
	fsys := afero.NewMemMapFs()
	writeTree(t, fsys, "/src", agentTree)
	res, err := Run(fsys, Options{From: "/src", Out: "/pub", Version: "1.2.0", Now: fixedNow})
	if err != nil {
		t.Fatal(err)
	}
	var total int64
	for _, f := range agentTree {
		total += int64(len(f.content))
	}
	if res.ManifestPath != "/pub/manifest.json" || res.SignaturePath != "" || res.Files != len(agentTree) || res.Bytes != total {
		t.Errorf("result %+v", res)
	}
	m := assertPublished(t, fsys, "/pub", "1.2.0", agentTree)
	if !m.Expires.IsZero() {
		t.Errorf("expires %v without Expires", m.Expires)
	}
	if _, err := fsys.Stat("/pub/manifest.json.minisig"); err == nil {
		t.Error("unsigned release wrote a signature")
	}
}

func TestRunOSFs(t *testing.T) {
	fsys := afero.NewOsFs()
	dir := t.TempDir()
	src, out := filepath.Join(dir, "src"), filepath.Join(dir, "pub")
	writeTree(t, fsys, src, agentTree)
	if _, err := Run(fsys, Options{From: src, Out: out, Version: "1.2.0"}); err != nil {
		t.Fatal(err)
	}
	assertPublished(t, fsys, out, "1.2.0", agentTree)
	leftovers, _ := filepath.Glob(filepath.Join(out, ".*"))
	if len(leftovers) != 0 {
		t.Errorf("temporary files left in the output: %v", leftovers)
	}
}

func TestRunSignedVerifies(t *testing.T) {
	fsys := afero.NewMemMapFs()
	writeTree(t, fsys, "/src", agentTree)
	pub, priv, err := minisign.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	keyText, _ := priv.MarshalText()
	if err := afero.WriteFile(fsys, "/keys/sec", keyText, 0o600); err != nil {
		t.Fatal(err)
	}
	res, err := Run(fsys, Options{From: "/src", Out: "/pub", Version: "1.2.0", SignKey: "/keys/sec", Now: fixedNow,
		Password: func() (string, error) { t.Error("password asked for an unencrypted key"); return "", nil }})
	if err != nil {
		t.Fatal(err)
	}
	if res.SignaturePath != "/pub/manifest.json.minisig" {
		t.Errorf("SignaturePath = %q", res.SignaturePath)
	}
	_, data := readManifest(t, fsys, "/pub")
	sig, err := afero.ReadFile(fsys, res.SignaturePath)
	if err != nil {
		t.Fatal(err)
	}
	v, err := sign.NewVerifier([]string{pub.String()})
	if err != nil {
		t.Fatal(err)
	}
	if err := v.Verify(data, sig); err != nil {
		t.Errorf("published signature does not verify: %v", err)
	}
	var parsed minisign.Signature
	if err := parsed.UnmarshalText(sig); err != nil {
		t.Fatal(err)
	}
	if want := sign.TrustedComment("manifest.json", fixedNow()); parsed.TrustedComment != want {
		t.Errorf("trusted comment %q, want %q", parsed.TrustedComment, want)
	}
}

func TestRunSignedMinisignVerifies(t *testing.T) {
	cli := need.Program(t, "minisign", "minisign")
	fsys := afero.NewOsFs()
	dir := t.TempDir()
	src, out := filepath.Join(dir, "src"), filepath.Join(dir, "pub")
	writeTree(t, fsys, src, agentTree)
	cmd := exec.Command(cli, "-G", "-W", "-p", "key.pub", "-s", "key.sec")
	cmd.Dir = dir
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("minisign -G: %v\n%s", err, b)
	}
	if _, err := Run(fsys, Options{From: src, Out: out, Version: "1.2.0", SignKey: filepath.Join(dir, "key.sec")}); err != nil {
		t.Fatal(err)
	}
	cmd = exec.Command(cli, "-V", "-p", filepath.Join(dir, "key.pub"), "-m", filepath.Join(out, "manifest.json"))
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Errorf("minisign -V refused the published manifest: %v\n%s", err, b)
	}
}

func TestRunEncryptedKeyWithoutPassword(t *testing.T) {
	fsys := afero.NewMemMapFs()
	writeTree(t, fsys, "/src", agentTree)
	_, priv, _ := minisign.GenerateKey(nil)
	text, _ := priv.MarshalText()
	// Marked scrypt-encrypted (KDF "Sc"): the password is asked for before any decryption.
	enc := bytes.Replace(text, []byte("\nRWQAAEIy"), []byte("\nRWRTY0Iy"), 1)
	if err := afero.WriteFile(fsys, "/sec", enc, 0o600); err != nil {
		t.Fatal(err)
	}
	asked := false
	_, err := Run(fsys, Options{From: "/src", Out: "/pub", Version: "1.2.0", SignKey: "/sec",
		Password: func() (string, error) { asked = true; return "", errors.New("no terminal") }})
	if err == nil || !strings.Contains(err.Error(), "no terminal") || !asked {
		t.Errorf("got %v (password asked: %v)", err, asked)
	}
	if errors.Is(err, ErrUsage) {
		t.Error("a key problem reported as a usage error")
	}
	assertNothingPublished(t, fsys, "/pub")
}

func TestRunExpires(t *testing.T) {
	fsys := afero.NewMemMapFs()
	writeTree(t, fsys, "/src", agentTree)
	if _, err := Run(fsys, Options{From: "/src", Out: "/pub", Version: "1.2.0", Expires: 30 * 24 * time.Hour, Now: fixedNow}); err != nil {
		t.Fatal(err)
	}
	m, data := readManifest(t, fsys, "/pub")
	want := fixedNow().Add(30 * 24 * time.Hour)
	if !m.Expires.Equal(want) || !bytes.Contains(data, []byte(`"expires": "2026-03-31T12:00:00Z"`)) {
		t.Errorf("expires %v, want %v\n%s", m.Expires, want, data)
	}
	if err := m.CheckExpiry(want.Add(-time.Second)); err != nil {
		t.Errorf("refused before expiry: %v", err)
	}
	if err := m.CheckExpiry(want.Add(time.Second)); err == nil {
		t.Error("accepted after expiry")
	}
}

func TestRunKeepsEarlierVersions(t *testing.T) {
	fsys := afero.NewMemMapFs()
	v1 := map[string]srcFile{"agent.py": {"v1", 0o644}, "old-only.py": {"gone in v2", 0o644}}
	v2 := map[string]srcFile{"agent.py": {"v2", 0o755}}
	writeTree(t, fsys, "/src1", v1)
	writeTree(t, fsys, "/src2", v2)
	if _, err := Run(fsys, Options{From: "/src1", Out: "/pub", Version: "1.0.0b4"}); err != nil {
		t.Fatal(err)
	}
	if _, err := Run(fsys, Options{From: "/src2", Out: "/pub", Version: "1.0.0"}); err != nil {
		t.Fatal(err)
	}
	assertPublished(t, fsys, "/pub", "1.0.0", v2)
	for name, f := range v1 {
		got, err := afero.ReadFile(fsys, filepath.Join("/pub/1.0.0b4", name))
		if err != nil || string(got) != f.content {
			t.Errorf("earlier version's %s: %q, %v", name, got, err)
		}
	}
}

func TestRunRefusesExistingVersion(t *testing.T) {
	fsys := afero.NewMemMapFs()
	writeTree(t, fsys, "/src", agentTree)
	if _, err := Run(fsys, Options{From: "/src", Out: "/pub", Version: "1.2.0"}); err != nil {
		t.Fatal(err)
	}
	before, _ := afero.ReadFile(fsys, "/pub/manifest.json")
	if err := afero.WriteFile(fsys, "/src/agent.py", []byte("changed"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := Run(fsys, Options{From: "/src", Out: "/pub", Version: "1.2.0"})
	if err == nil || !strings.Contains(err.Error(), "/pub/1.2.0 already exists") {
		t.Fatalf("got %v", err)
	}
	if errors.Is(err, ErrUsage) {
		t.Error("existing version reported as a usage error")
	}
	after, _ := afero.ReadFile(fsys, "/pub/manifest.json")
	if !bytes.Equal(before, after) {
		t.Error("refused release changed the manifest")
	}
	if got, _ := afero.ReadFile(fsys, "/pub/1.2.0/agent.py"); string(got) != agentTree["agent.py"].content {
		t.Errorf("refused release changed a published file: %q", got)
	}
}

func TestRunRefusesStaleSignatureWhenUnsigned(t *testing.T) {
	fsys := afero.NewMemMapFs()
	writeTree(t, fsys, "/src", agentTree)
	if err := afero.WriteFile(fsys, "/pub/manifest.json.minisig", []byte("old"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := Run(fsys, Options{From: "/src", Out: "/pub", Version: "1.2.0"})
	if err == nil || !strings.Contains(err.Error(), "manifest.json.minisig exists") {
		t.Errorf("got %v", err)
	}
	if _, err := fsys.Stat("/pub/1.2.0"); err == nil {
		t.Error("version directory written by a refused release")
	}
}

func TestRunRefusesSymlinks(t *testing.T) {
	for desc, link := range map[string]func(t *testing.T, src string){
		"file symlink": func(t *testing.T, src string) {
			if err := os.Symlink("/etc/passwd", filepath.Join(src, "bin", "passwd")); err != nil {
				t.Fatal(err)
			}
		},
		"directory symlink": func(t *testing.T, src string) {
			if err := os.Symlink("/etc", filepath.Join(src, "bin", "passwd")); err != nil {
				t.Fatal(err)
			}
		},
		"dangling symlink": func(t *testing.T, src string) {
			if err := os.Symlink("nowhere", filepath.Join(src, "bin", "passwd")); err != nil {
				t.Fatal(err)
			}
		},
	} {
		t.Run(desc, func(t *testing.T) {
			fsys := afero.NewOsFs()
			dir := t.TempDir()
			src, out := filepath.Join(dir, "src"), filepath.Join(dir, "pub")
			writeTree(t, fsys, src, agentTree)
			link(t, src)
			_, err := Run(fsys, Options{From: src, Out: out, Version: "1.2.0"})
			want := filepath.Join(src, "bin", "passwd") + " is a symlink"
			if err == nil || !strings.Contains(err.Error(), want) {
				t.Fatalf("got %v, want %q", err, want)
			}
			assertNothingPublished(t, fsys, out)
		})
	}
}

func TestRunFollowsSymlinkedFrom(t *testing.T) {
	// Only entries under From are refused as symlinks; From itself may be one (a "current" link).
	fsys := afero.NewOsFs()
	dir := t.TempDir()
	writeTree(t, fsys, filepath.Join(dir, "src-1.2.0"), agentTree)
	if err := os.Symlink("src-1.2.0", filepath.Join(dir, "current")); err != nil {
		t.Fatal(err)
	}
	if _, err := Run(fsys, Options{From: filepath.Join(dir, "current"), Out: filepath.Join(dir, "pub"), Version: "1.2.0"}); err != nil {
		t.Fatal(err)
	}
	assertPublished(t, fsys, filepath.Join(dir, "pub"), "1.2.0", agentTree)
}

func TestRunRefusesSpecialFiles(t *testing.T) {
	fsys := afero.NewOsFs()
	dir := t.TempDir()
	src, out := filepath.Join(dir, "src"), filepath.Join(dir, "pub")
	writeTree(t, fsys, src, agentTree)
	fifo := filepath.Join(src, "plugins", "queue")
	if err := syscall.Mkfifo(fifo, 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := Run(fsys, Options{From: src, Out: out, Version: "1.2.0"})
	if err == nil || !strings.Contains(err.Error(), fifo+" is a named pipe") {
		t.Errorf("got %v", err)
	}
	assertNothingPublished(t, fsys, out)
}

func TestRunRefusesSpecialModeBits(t *testing.T) {
	fsys := afero.NewOsFs()
	dir := t.TempDir()
	src, out := filepath.Join(dir, "src"), filepath.Join(dir, "pub")
	writeTree(t, fsys, src, agentTree)
	path := filepath.Join(src, "bin", "sd-agent")
	if err := os.Chmod(path, 0o755|os.ModeSetuid); err != nil {
		t.Fatal(err)
	}
	if info, _ := os.Stat(path); info.Mode()&os.ModeSetuid == 0 {
		t.Skip("this filesystem does not keep the setuid bit")
	}
	_, err := Run(fsys, Options{From: src, Out: out, Version: "1.2.0"})
	if err == nil || !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), "setuid") {
		t.Errorf("got %v", err)
	}
	assertNothingPublished(t, fsys, out)
}

func TestRunRefusesBadNames(t *testing.T) {
	for _, name := range []string{".sdupdate/state", "line\nbreak.py", `back\slash`, "tab\there"} {
		fsys := afero.NewMemMapFs()
		writeTree(t, fsys, "/src", map[string]srcFile{"agent.py": {"x", 0o644}, name: {"y", 0o644}})
		_, err := Run(fsys, Options{From: "/src", Out: "/pub", Version: "1.2.0"})
		if err == nil || !strings.Contains(err.Error(), "cannot be published") {
			t.Errorf("%q: got %v", name, err)
		}
		assertNothingPublished(t, fsys, "/pub")
	}
}

func TestRunReportsEmptyDirs(t *testing.T) {
	fsys := afero.NewMemMapFs()
	writeTree(t, fsys, "/src", agentTree)
	for _, d := range []string{"/src/logs", "/src/cache/a/b", "/src/plugins/none"} {
		if err := fsys.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	res, err := Run(fsys, Options{From: "/src", Out: "/pub", Version: "1.2.0"})
	if err != nil {
		t.Fatal(err)
	}
	want := "cache cache/a cache/a/b logs plugins/none"
	if got := strings.Join(res.EmptyDirs, " "); got != want {
		t.Errorf("EmptyDirs = %q, want %q", got, want)
	}
}

func TestRunRefusesNoFiles(t *testing.T) {
	fsys := afero.NewMemMapFs()
	if err := fsys.MkdirAll("/src/only/dirs", 0o755); err != nil {
		t.Fatal(err)
	}
	_, err := Run(fsys, Options{From: "/src", Out: "/pub", Version: "1.2.0"})
	if err == nil || !strings.Contains(err.Error(), "holds no files") {
		t.Errorf("got %v", err)
	}
	assertNothingPublished(t, fsys, "/pub")
}

func TestRunUsageErrors(t *testing.T) {
	fsys := afero.NewMemMapFs()
	writeTree(t, fsys, "/src", agentTree)
	if err := afero.WriteFile(fsys, "/file", []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	ok := Options{From: "/src", Out: "/pub", Version: "1.2.0"}
	cases := map[string]struct {
		edit    func(*Options)
		wantErr string
	}{
		"no from":            {func(o *Options) { o.From = "" }, "--from"},
		"no out":             {func(o *Options) { o.Out = "" }, "--out"},
		"no version":         {func(o *Options) { o.Version = "" }, "--version"},
		"bad version":        {func(o *Options) { o.Version = "latest" }, `cannot parse version "latest"`},
		"version with slash": {func(o *Options) { o.Version = "1.2.0/../../etc" }, "--version"},
		"negative expiry":    {func(o *Options) { o.Expires = -time.Hour }, "--expires"},
		"expiry too short":   {func(o *Options) { o.Expires = 900 * time.Millisecond }, "shorter than 1h0m0s"},
		"missing from":       {func(o *Options) { o.From = "/nope" }, "/nope does not exist"},
		"from is a file":     {func(o *Options) { o.From = "/file" }, "/file is not a directory"},
		"out inside from":    {func(o *Options) { o.Out = "/src/dist" }, "inside the source directory"},
		"out is from":        {func(o *Options) { o.Out = "/src" }, "inside the source directory"},
	}
	for desc, tc := range cases {
		opts := ok
		tc.edit(&opts)
		_, err := Run(fsys, opts)
		if !errors.Is(err, ErrUsage) || !strings.Contains(err.Error(), tc.wantErr) {
			t.Errorf("%s: got %v, want a usage error containing %q", desc, err, tc.wantErr)
		}
	}
	assertNothingPublished(t, fsys, "/pub")
	if _, err := fsys.Stat("/src/dist"); err == nil {
		t.Error("refused release created its output inside the source")
	}
	// A sibling whose name merely starts like the source is not inside it.
	opts := ok
	opts.Out = "/src-out"
	if _, err := Run(fsys, opts); err != nil {
		t.Errorf("out beside from: %v", err)
	}
}

// failingFs fails the creation of one file, as a full disk would.
type failingFs struct {
	afero.Fs
	failOn string
}

func (f failingFs) OpenFile(name string, flag int, perm os.FileMode) (afero.File, error) {
	if filepath.Base(name) == f.failOn && flag&os.O_CREATE != 0 {
		return nil, &os.PathError{Op: "open", Path: name, Err: syscall.ENOSPC}
	}
	return f.Fs.OpenFile(name, flag, perm)
}

func TestRunFailureLeavesNothingBehind(t *testing.T) {
	mem := afero.NewMemMapFs()
	writeTree(t, mem, "/src", agentTree)
	_, err := Run(failingFs{Fs: mem, failOn: "secret.conf"}, Options{From: "/src", Out: "/pub", Version: "1.2.0"})
	if err == nil || !errors.Is(err, syscall.ENOSPC) || errors.Is(err, ErrUsage) {
		t.Fatalf("got %v", err)
	}
	assertNothingPublished(t, mem, "/pub")
	// The same release then goes through.
	if _, err := Run(mem, Options{From: "/src", Out: "/pub", Version: "1.2.0"}); err != nil {
		t.Fatal(err)
	}
	assertPublished(t, mem, "/pub", "1.2.0", agentTree)
}

func TestRunRemovesLeftoverPartial(t *testing.T) {
	fsys := afero.NewMemMapFs()
	writeTree(t, fsys, "/src", agentTree)
	if err := afero.WriteFile(fsys, "/pub/.1.2.0.partial/junk", []byte("from a killed run"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Run(fsys, Options{From: "/src", Out: "/pub", Version: "1.2.0"}); err != nil {
		t.Fatal(err)
	}
	assertPublished(t, fsys, "/pub", "1.2.0", agentTree)
	for _, p := range []string{"/pub/1.2.0/junk", "/pub/.1.2.0.partial"} {
		if _, err := fsys.Stat(p); err == nil {
			t.Errorf("%s exists", p)
		}
	}
}

// --expires must never publish a manifest every client refuses (too short) nor wrap around to a
// near or negative expiry (too long for a time.Duration).
func TestParseExpiry(t *testing.T) {
	for _, tc := range []struct {
		in      string
		want    time.Duration
		wantErr string
	}{
		{"30d", 30 * 24 * time.Hour, ""},
		{"1d", 24 * time.Hour, ""},
		{"720h", 720 * time.Hour, ""},
		{"1h", time.Hour, ""},
		{"1h30m", 90 * time.Minute, ""},
		{"106751d", 106751 * 24 * time.Hour, ""},
		{"106752d", 0, "too long: at most 106751d"},
		{"213504d", 0, "too long"},
		{"99999999999999999999d", 0, "too long"},
		{"3000000h", 0, "at most 106751d"},
		{"1ns", 0, "too short"},
		{"900ms", 0, "too short"},
		{"59m", 0, "too short"},
		{"0d", 0, "too short"},
		{"-1h", 0, "too short"},
		{"-3d", 0, "not a whole number of days"},
		{"+3d", 0, "not a whole number of days"},
		{"d", 0, "not a whole number of days"},
		{"1.5d", 0, "not a whole number of days"},
		{"30", 0, "not a whole number of days"},
		{"soon", 0, "not a whole number of days"},
	} {
		got, err := ParseExpiry(tc.in)
		if tc.wantErr == "" {
			if err != nil || got != tc.want {
				t.Errorf("ParseExpiry(%q) = %v, %v; want %v", tc.in, got, err, tc.want)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), tc.wantErr) || !errors.Is(err, ErrUsage) {
			t.Errorf("ParseExpiry(%q) = %v, %v; want a usage error containing %q", tc.in, got, err, tc.wantErr)
		}
	}
}
