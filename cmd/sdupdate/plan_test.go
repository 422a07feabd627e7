package main

import (
	"bytes"
	"fmt"
	"strings"
	"testing"

	"github.com/sdupdate/sdupdate/delta"
	"github.com/sdupdate/sdupdate/manifest"
	"github.com/sdupdate/sdupdate/updater"
)

// The dry run says, per file, how many bytes it costs and in which form, and the total counts
// those bytes, not the files' sizes.
func TestPrintPlanSaysSourceAndBytes(t *testing.T) {
	p := &updater.Plan{From: "1.0.0", To: "1.1.0", Changes: []updater.Change{
		{File: manifest.File{Name: "bin/sd-agent", Size: 9 << 20}, Mode: 0o755, Sources: []updater.Source{
			{Kind: updater.SourceDelta, Want: delta.Want{Size: 200 << 10}}, {Kind: updater.SourceFile, Want: delta.Want{Size: 9 << 20}}}},
		{File: manifest.File{Name: "lib/new.so", Size: 1 << 20}, Add: true, Mode: 0o644, Sources: []updater.Source{
			{Kind: updater.SourceObject, Want: delta.Want{Size: 300 << 10}}, {Kind: updater.SourceFile, Want: delta.Want{Size: 1 << 20}}}},
	}}
	var out bytes.Buffer
	printPlan(&out, p)
	for _, want := range []string{
		"2 files to download (500.0 KiB)",
		"change bin/sd-agent -rwxr-xr-x 9.0 MiB, fetch 200.0 KiB as delta",
		"add    lib/new.so -rw-r--r-- 1.0 MiB, fetch 300.0 KiB as object",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("plan does not say %q:\n%s", want, out.String())
		}
	}
}

// A pack is shown once, with its bytes and how many files it gives; each of its 500 files
// says it comes in that pack, and the total counts the pack's bytes once.
func TestPrintPlanShowsEachPackOnce(t *testing.T) {
	pk := &updater.PackUse{Pack: manifest.Pack{Source: manifest.Source{URL: ".sdupdate/p1.zst", Size: 300 << 10}}, Number: 1, Files: 500}
	p := &updater.Plan{From: "", To: "1.0.0", Packs: []*updater.PackUse{pk}}
	for i := 0; i < 500; i++ {
		p.Changes = append(p.Changes, updater.Change{File: manifest.File{Name: fmt.Sprintf("lib/m%03d.py", i), Size: 2 << 10}, Add: true, Mode: 0o644,
			Sources: []updater.Source{{Kind: updater.SourcePack, Want: delta.Want{Size: 300 << 10}, Pack: pk}, {Kind: updater.SourceFile, Want: delta.Want{Size: 2 << 10}}}})
	}
	p.Changes = append(p.Changes, updater.Change{File: manifest.File{Name: "bin/sd-agent", Size: 9 << 20}, Add: true, Mode: 0o755,
		Sources: []updater.Source{{Kind: updater.SourceObject, Want: delta.Want{Size: 3 << 20}}}})
	var out bytes.Buffer
	printPlan(&out, p)
	text := out.String()
	for _, want := range []string{
		"501 files to download (3.3 MiB)",
		"\n  pack   1: fetch 300.0 KiB for 500 files (.sdupdate/p1.zst)\n",
		"add    lib/m042.py -rw-r--r-- 2.0 KiB, in pack 1\n",
		"add    bin/sd-agent -rwxr-xr-x 9.0 MiB, fetch 3.0 MiB as object\n",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("plan does not say %q:\n%s", want, text)
		}
	}
	if n := strings.Count(text, "300.0 KiB"); n != 1 {
		t.Errorf("the pack's size is shown %d times, want once", n)
	}
	if n := strings.Count(text, "\n"); n != 503 {
		t.Errorf("plan has %d lines, want 503: a head, the pack, one per file", n)
	}
}
