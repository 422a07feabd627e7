package main

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"time"

	"github.com/sdupdate/sdupdate/internal/fixture"
	"github.com/sdupdate/sdupdate/sign"
)

// spec is one file of a generated release.
type spec struct {
	name string
	size int64
}

// specs returns n files of total bytes in all, spread over 50 directories as an agent's tree is.
func specs(n int, total int64) []spec {
	out := make([]spec, n)
	for i := range out {
		out[i] = spec{name: fmt.Sprintf("d%02d/f%06d.bin", i%50, i), size: total / int64(n)}
	}
	out[0].size += total % int64(n)
	return out
}

// v1Time is the modification time of every generated file of a first version; changed files of
// a second version get a later one, as a rebuilt file would, so rsync's quick check sees them.
var v1Time = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

// writeTree writes files with pseudo-random content, distinct per file and per seed (so nothing
// deduplicates what a real release would not).
func writeTree(dir string, files []spec, seed uint64, mtime time.Time) error {
	buf := make([]byte, 1<<20)
	for i, f := range files {
		p := filepath.Join(dir, filepath.FromSlash(f.name))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return err
		}
		out, err := os.Create(p)
		if err != nil {
			return err
		}
		rng := rand.NewChaCha8(seedOf(seed, uint64(i)))
		for left := f.size; left > 0; {
			n := min(left, int64(len(buf)))
			rng.Read(buf[:n])
			if _, err := out.Write(buf[:n]); err != nil {
				out.Close()
				return err
			}
			left -= n
		}
		if err := out.Close(); err != nil {
			return err
		}
		if err := os.Chtimes(p, mtime, mtime); err != nil {
			return err
		}
	}
	return nil
}

func seedOf(a, b uint64) (s [32]byte) {
	for i := 0; i < 8; i++ {
		s[i], s[8+i] = byte(a>>(8*i)), byte(b>>(8*i))
	}
	return s
}

// linkTree makes dst a copy of src by hard links: a second version that shares the unchanged
// files of the first.
func linkTree(src, dst string) error {
	return filepath.Walk(src, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		target := filepath.Join(dst, rel)
		if fi.IsDir() {
			return os.MkdirAll(target, 0o755)
		}
		return os.Link(p, target)
	})
}

// publisher releases generated trees with the real `sdupdate release`.
type publisher struct {
	bin  string
	pub  *fixture.Publisher
	site string
	srv  *server
}

// release publishes build as version into site/<name>/ and returns the URL of its manifest,
// <name>/<version>.json, so several versions of one site can be offered side by side. Its
// signature and compressed copy go beside it (<version>.json.minisig, .zst), as a site serves
// what `release` wrote.
func (p *publisher) release(name, version, build string, extra ...string) (string, error) {
	out := filepath.Join(p.site, name)
	args := append([]string{"release", "--from", build, "--version", version, "--out", out,
		"--sign-key", p.pub.KeyFile, "--expires", "30d"}, extra...)
	cmd := exec.Command(p.bin, args...)
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("cannot release %s %s: %v: %s", name, version, err, b)
	}
	for _, ext := range []string{"", ".minisig", ".zst"} {
		if err := os.Rename(filepath.Join(out, "manifest.json"+ext), filepath.Join(out, version+".json"+ext)); err != nil {
			return "", err
		}
	}
	return p.srv.URL(path.Join(name, version+".json")), nil
}

// bigManifest signs a manifest of n entries without publishing their files: enough to plan
// (`update --dry-run`) with it. It is written compactly, with short names and no modes (0644 is
// the default): 150,000 entries as `release` writes them (indented) pass the 16 MiB a manifest
// may have.
func (p *publisher) bigManifest(name string, n int) (string, error) {
	type entry struct {
		Name   string `json:"name"`
		SHA256 string `json:"sha256"`
		Size   int64  `json:"size"`
	}
	m := struct {
		Version string  `json:"version"`
		BaseURL string  `json:"base_url"`
		Files   []entry `json:"files"`
	}{Version: "1.0.0", BaseURL: "1.0.0/"}
	for i := 0; i < n; i++ {
		m.Files = append(m.Files, entry{Name: fmt.Sprintf("%02x/%05d", i%256, i),
			SHA256: fmt.Sprintf("%064x", i), Size: int64(i % 4096)})
	}
	data, err := json.Marshal(m)
	if err != nil {
		return "", err
	}
	key, err := sign.LoadSecretKey(p.pub.KeyFile, nil)
	if err != nil {
		return "", err
	}
	dir := filepath.Join(p.site, name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	if err := os.WriteFile(filepath.Join(dir, "1.0.0.json"), data, 0o644); err != nil {
		return "", err
	}
	sig := sign.Sign(key, data, sign.TrustedComment("manifest.json", time.Now()))
	if err := os.WriteFile(filepath.Join(dir, "1.0.0.json.minisig"), sig, 0o644); err != nil {
		return "", err
	}
	return p.srv.URL(path.Join(name, "1.0.0.json")), nil
}

// install is one sdupdate install: its directories and configuration files, one per manifest.
type install struct {
	dir, state string
}

func (in install) config(path, manifestURL, publicKey string, retries int) error {
	conf := fmt.Sprintf("[Source]\nManifestURL=%s\nPublicKey=%s\nRetries=%d\n\n[Install]\nDirectory=%s\nStateDirectory=%s\n\n[Agent]\nUnit=\n",
		manifestURL, publicKey, retries, in.dir, in.state)
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	return os.WriteFile(path, []byte(conf), 0o644)
}

func (in install) reset() error {
	for _, d := range []string{in.dir, in.state} {
		if err := os.RemoveAll(d); err != nil {
			return err
		}
	}
	return nil
}
