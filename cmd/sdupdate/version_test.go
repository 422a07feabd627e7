package main

import (
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sdupdate/sdupdate/internal/fixture"
)

// A build without a version set says it is a development build.
func TestVersionOfDevBuild(t *testing.T) {
	r := sdupdate(t, "--version").expect(t, 0, "--version")
	if !strings.HasPrefix(r.stdout, "sdupdate dev") || strings.Count(r.stdout, "\n") != 1 {
		t.Errorf("--version of a plain build printed %q, want one line starting with \"sdupdate dev\"", r.stdout)
	}
}

// The version a release build links in is the one --version prints, as the package does.
func TestVersionSetAtLinkTime(t *testing.T) {
	root, err := fixture.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(t.TempDir(), "sdupdate")
	build := exec.Command("go", "build", "-o", bin,
		"-ldflags", "-X github.com/sdupdate/sdupdate/internal/version.version=1.4.0~rc1", "./cmd/sdupdate")
	build.Dir = root
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	out, err := exec.Command(bin, "--version").Output()
	if err != nil {
		t.Fatalf("sdupdate --version: %v", err)
	}
	if string(out) != "sdupdate 1.4.0~rc1\n" {
		t.Errorf("--version printed %q, want %q", out, "sdupdate 1.4.0~rc1\n")
	}
}
