package main

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sdupdate/sdupdate/manifest"
)

// longPath is a slash path of exactly n bytes, made of segments of at most seg bytes.
func longPath(n, seg int, fill string) string {
	var b strings.Builder
	for b.Len() < n {
		if b.Len() > 0 {
			b.WriteByte('/')
		}
		b.WriteString(strings.Repeat(fill, min(seg, n-b.Len())))
	}
	return b.String()
}

// writeSiteManifest publishes a hand-written manifest for files under site/V/ (what a publisher
// with another tool could serve), bypassing `release`'s own checks.
func (e *env) writeSiteManifest(t *testing.T, version string, files map[string]string) {
	t.Helper()
	var entries []string
	for name, data := range files {
		p := filepath.Join(e.site, version, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
		sum := sha256.Sum256([]byte(data))
		entries = append(entries, fmt.Sprintf(`{"name":%q,"sha256":"%s","size":%d}`, name, hex.EncodeToString(sum[:]), len(data)))
	}
	doc := fmt.Sprintf(`{"version":%q,"base_url":"%s/","files":[%s]}`, version, version, strings.Join(entries, ","))
	if err := os.WriteFile(filepath.Join(e.site, "manifest.json"), []byte(doc), 0o644); err != nil {
		t.Fatal(err)
	}
}

// A name that fits NAME_MAX but not with the temp name a replace makes beside it used to install,
// then break every rollback half way (exit 4, a mixed tree). It is refused up front, by `release`
// and by the updater, before anything is written.
func TestNamesPastTheLimitsAreRefusedUpFront(t *testing.T) {
	for _, tc := range []struct {
		what, name, want string
	}{
		{"250-byte segment", "lib/" + strings.Repeat("s", 250), "segment of 250 bytes, more than the limit of 232 bytes"},
		{"whole name past the limit", longPath(manifest.MaxName+1, 200, "n"), "more than the limit of 2048 bytes"},
	} {
		t.Run(tc.what, func(t *testing.T) {
			e := newEnv(t)
			c := "--config=" + e.conf
			files := map[string]string{"agent.py": "1\n", tc.name: "long\n"}
			dir := e.build(t, "1.0.0", files)
			r := sdupdate(t, "release", "--from", dir, "--version", "1.0.0", "--out", e.site).expect(t, 1, "release")
			if !strings.Contains(r.stderr, tc.want) {
				t.Errorf("release does not say which limit: %s", r.stderr)
			}
			if _, err := os.Stat(filepath.Join(e.site, "manifest.json")); err == nil {
				t.Error("release wrote a manifest")
			}

			e.writeSiteManifest(t, "1.0.0", files)
			for _, args := range [][]string{{"check"}, {"update"}} {
				r := sdupdate(t, append([]string{c}, args...)...).expect(t, 1, strings.Join(args, " "))
				if !strings.Contains(r.stderr, tc.want) {
					t.Errorf("%v does not say which limit: %s", args, r.stderr)
				}
			}
			if tree := hashTree(t, e.install); len(tree) != 0 {
				t.Errorf("the refused update wrote into the install: %v", tree)
			}
		})
	}
}

// At the limits — the longest Directory= the configuration accepts (near enough), segments and a
// whole name of the longest length a manifest may carry — every step works: update, a snapshot,
// a second update changing every file, rollback and verify.
func TestLongestNamesUpdateAndRollBack(t *testing.T) {
	e := newEnv(t)
	e.install = filepath.Join(e.root, longPath(manifest.MaxDirectory-len(e.root)-1, 200, "i"))
	if len(e.install) != manifest.MaxDirectory {
		t.Fatalf("install path is %d bytes", len(e.install))
	}
	e.writeConf(t, "")
	c := "--config=" + e.conf
	longest := longPath(manifest.MaxName, manifest.MaxSegment, "n")
	segment := "bin/" + strings.Repeat("s", manifest.MaxSegment)
	files := func(v string) map[string]string {
		return map[string]string{"agent.py": v, longest: "longest " + v, segment: "segment " + v}
	}

	e.release(t, "1.0.0", files("1.0.0"))
	sdupdate(t, c, "update").expect(t, 0, "update to 1.0.0")
	v1 := hashTree(t, e.install)
	e.release(t, "1.1.0", files("1.1.0"))
	sdupdate(t, c, "update").expect(t, 0, "update to 1.1.0, every file changed")
	sdupdate(t, c, "verify").expect(t, 0, "verify 1.1.0")
	sdupdate(t, c, "rollback").expect(t, 0, "rollback to 1.0.0")
	sameTree(t, "after rollback", hashTree(t, e.install), v1)
	sdupdate(t, c, "verify").expect(t, 0, "verify after rollback")
}

// `release --expires` used to wrap 213504d around to 25 minutes and publish 1ns; both are usage
// errors now, and nothing is published.
func TestReleaseExpiresOutOfRange(t *testing.T) {
	e := newEnv(t)
	dir := e.build(t, "1.0.0", files1)
	for _, tc := range []struct{ expires, want string }{
		{"213504d", "too long"},
		{"106752d", "too long"},
		{"1ns", "too short"},
		{"900ms", "too short"},
	} {
		r := sdupdate(t, "release", "--from", dir, "--version", "1.0.0", "--out", e.site, "--expires", tc.expires).expect(t, 2, "--expires "+tc.expires)
		if !strings.Contains(r.stderr, tc.want) {
			t.Errorf("--expires %s: stderr lacks %q: %s", tc.expires, tc.want, r.stderr)
		}
		if _, err := os.Stat(filepath.Join(e.site, "manifest.json")); err == nil {
			t.Fatalf("--expires %s published a manifest", tc.expires)
		}
	}
	sdupdate(t, "release", "--from", dir, "--version", "1.0.0", "--out", e.site, "--expires", "106751d").expect(t, 0, "the longest expiry")
	sdupdate(t, "--config="+e.conf, "update").expect(t, 0, "update from a manifest expiring in 292 years")
}

// A --zstd that cannot be run is a usage error (exit 2) that says what to do, and the site is
// left as it was: not even its directory is made.
func TestReleaseWithUnusableZstd(t *testing.T) {
	e := newEnv(t)
	dir := e.build(t, "1.0.0", files1)
	r := sdupdate(t, "release", "--from", dir, "--version", "1.0.0", "--out", e.site, "--zstd", "/nonexistent/zstd").expect(t, 2, "--zstd /nonexistent/zstd")
	if !strings.Contains(r.stderr, "cannot run zstd at /nonexistent/zstd") || !strings.Contains(r.stderr, "install zstd") {
		t.Errorf("stderr does not say which zstd failed and what to do: %s", r.stderr)
	}
	if _, err := os.Stat(e.site); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the release wrote %s (%v)", e.site, err)
	}
}
