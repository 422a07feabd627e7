package main

import (
	"bytes"
	"compress/gzip"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// The pages and completions the packages ship: one page per command, from the CLI's own help,
// dated as asked and the same bytes every time.
func TestDocsWritesReproducibleManPagesAndCompletions(t *testing.T) {
	dirs := []string{t.TempDir(), t.TempDir()}
	for _, d := range dirs {
		sdupdate(t, "docs", "--out", d, "--date", "2026-03-04").expect(t, 0, "docs")
	}
	var pages []string
	for _, cmd := range []string{"", "-update", "-check", "-rollback", "-snapshots", "-status", "-verify", "-recover", "-release"} {
		pages = append(pages, "man8/sdupdate"+cmd+".8.gz")
	}
	files := append(pages, "completions/sdupdate.bash", "completions/_sdupdate", "completions/sdupdate.fish")
	for _, f := range files {
		a, err := os.ReadFile(filepath.Join(dirs[0], f))
		if err != nil {
			t.Fatalf("docs did not write %s: %v", f, err)
		}
		b, err := os.ReadFile(filepath.Join(dirs[1], f))
		if err != nil || !bytes.Equal(a, b) {
			t.Errorf("%s differs between two runs on the same sources (err %v)", f, err)
		}
	}
	got, _ := filepath.Glob(filepath.Join(dirs[0], "man8", "*"))
	if len(got) != len(pages) {
		t.Errorf("man8 holds %d pages, want %d (one per command, no hidden one): %v", len(got), len(pages), got)
	}

	root := gunzip(t, filepath.Join(dirs[0], "man8", "sdupdate.8.gz"))
	for _, want := range []string{`.TH "SDUPDATE" "8" "Mar 2026"`, ".SH EXIT STATUS", `\fB100\fP`, `\fBsdupdate-update(8)\fP`} {
		if !strings.Contains(root, want) {
			t.Errorf("sdupdate.8 lacks %q:\n%s", want, root)
		}
	}
	if update := gunzip(t, filepath.Join(dirs[0], "man8", "sdupdate-update.8.gz")); !strings.Contains(update, `\fB--allow-downgrade\fP`) {
		t.Errorf("sdupdate-update.8 does not document --allow-downgrade:\n%s", update)
	}
	if bash, _ := os.ReadFile(filepath.Join(dirs[0], "completions", "sdupdate.bash")); !strings.Contains(string(bash), "__complete") {
		t.Errorf("the bash completion does not ask sdupdate __complete:\n%.400s", bash)
	}
}

// The completions ask the binary; it must answer with the commands.
func TestCompletionListsCommands(t *testing.T) {
	r := sdupdate(t, "__complete", "").expect(t, 0, "__complete")
	for _, cmd := range []string{"update", "rollback", "status"} {
		if !strings.Contains(r.stdout, cmd+"\t") {
			t.Errorf("__complete does not offer %s:\n%s", cmd, r.stdout)
		}
	}
	if strings.Contains(r.stdout, "docs") {
		t.Errorf("__complete offers the hidden docs command:\n%s", r.stdout)
	}
}

// Without a date, pages would carry the day they were built: refused.
func TestDocsNeedsAFixedDate(t *testing.T) {
	t.Setenv("SOURCE_DATE_EPOCH", "") // empty is unset, for the binary too
	r := sdupdate(t, "docs", "--out", t.TempDir()).expect(t, 2, "docs without --date")
	if !strings.Contains(r.stderr, "SOURCE_DATE_EPOCH") {
		t.Errorf("docs without a date says %q; want it to name --date or SOURCE_DATE_EPOCH", r.stderr)
	}
}

func gunzip(t *testing.T, path string) string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	b, err := io.ReadAll(zr)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return string(b)
}
