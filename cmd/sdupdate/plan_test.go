package main

import (
	"bytes"
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
