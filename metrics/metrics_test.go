package metrics

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/spf13/afero"

	"github.com/sdupdate/sdupdate/fsutil"
)

// parse reads a textfile the way node_exporter does (strict legacy metric names).
func parse(t *testing.T, data []byte) map[string]*dto.MetricFamily {
	t.Helper()
	p := expfmt.NewTextParser(model.LegacyValidation)
	fams, err := p.TextToMetricFamilies(bytes.NewReader(data))
	if err != nil {
		t.Fatalf("not valid Prometheus text format: %v\n%s", err, data)
	}
	return fams
}

// value returns the value of the sample of name whose labels include want, failing when there
// is not exactly one.
func value(t *testing.T, fams map[string]*dto.MetricFamily, name string, want ...string) float64 {
	t.Helper()
	f, ok := fams[name]
	if !ok {
		t.Fatalf("no metric %s", name)
	}
	var found []float64
	for _, m := range f.GetMetric() {
		labels := map[string]string{}
		for _, l := range m.GetLabel() {
			labels[l.GetName()] = l.GetValue()
		}
		match := true
		for i := 0; i+1 < len(want); i += 2 {
			if labels[want[i]] != want[i+1] {
				match = false
			}
		}
		if match {
			switch f.GetType() {
			case dto.MetricType_COUNTER:
				found = append(found, m.GetCounter().GetValue())
			default:
				found = append(found, m.GetGauge().GetValue())
			}
		}
	}
	if len(found) != 1 {
		t.Fatalf("%s%v: %d samples, want 1", name, want, len(found))
	}
	return found[0]
}

var finished = time.Date(2026, 12, 1, 20, 0, 0, 0, time.UTC)

func rolledBack() State {
	return State{
		SdupdateVersion: "0.9.0", Version: "1.1.0", Unit: "sd-agent.service",
		LastResult: "rolled-back", LastFinished: finished, LastDuration: 12500 * time.Millisecond,
		Runs:      map[string]uint64{"updated": 3, "up-to-date": 7, "rolled-back": 1},
		Rollbacks: 2,
		Checked:   finished.Add(-time.Minute), Available: "1.2.0", UpdateAvailable: true,
	}
}

func TestRenderParsesAndSaysWhatAnOperatorAlertsOn(t *testing.T) {
	var b bytes.Buffer
	if err := Render(&b, rolledBack()); err != nil {
		t.Fatal(err)
	}
	fams := parse(t, b.Bytes())
	if v := value(t, fams, "sdupdate_info", "version", "1.1.0", "sdupdate_version", "0.9.0", "unit", "sd-agent.service"); v != 1 {
		t.Errorf("sdupdate_info = %v, want 1", v)
	}
	for _, r := range Results {
		want := 0.0
		if r == "rolled-back" {
			want = 1
		}
		if v := value(t, fams, "sdupdate_last_run_result", "result", r); v != want {
			t.Errorf("sdupdate_last_run_result{result=%q} = %v, want %v", r, v, want)
		}
	}
	if v := value(t, fams, "sdupdate_last_run_timestamp_seconds"); v != float64(finished.Unix()) {
		t.Errorf("last run timestamp %v, want %d", v, finished.Unix())
	}
	if v := value(t, fams, "sdupdate_last_run_duration_seconds"); v != 12.5 {
		t.Errorf("last run duration %v, want 12.5", v)
	}
	if v := value(t, fams, "sdupdate_rollbacks_total"); v != 2 || fams["sdupdate_rollbacks_total"].GetType() != dto.MetricType_COUNTER {
		t.Errorf("sdupdate_rollbacks_total = %v (%v), want counter 2", v, fams["sdupdate_rollbacks_total"].GetType())
	}
	if v := value(t, fams, "sdupdate_runs_total", "result", "up-to-date"); v != 7 {
		t.Errorf("runs up-to-date %v, want 7", v)
	}
	if v := value(t, fams, "sdupdate_runs_total", "result", "rollback-failed"); v != 0 {
		t.Errorf("runs rollback-failed %v, want 0", v)
	}
	if v := value(t, fams, "sdupdate_update_available", "available", "1.2.0"); v != 1 {
		t.Errorf("update available %v, want 1", v)
	}
	if v := value(t, fams, "sdupdate_last_check_timestamp_seconds"); v != float64(finished.Add(-time.Minute).Unix()) {
		t.Errorf("last check timestamp %v", v)
	}
	// node_exporter's textfile collector refuses samples with timestamps.
	for name, f := range fams {
		for _, m := range f.GetMetric() {
			if m.TimestampMs != nil {
				t.Errorf("%s has a timestamp", name)
			}
		}
	}
}

func TestBeforeAnyRunThereIsNoTimestampToMislead(t *testing.T) {
	var b bytes.Buffer
	if err := Render(&b, State{SdupdateVersion: "0.9.0"}); err != nil {
		t.Fatal(err)
	}
	fams := parse(t, b.Bytes())
	if v := value(t, fams, "sdupdate_info", "version", "unknown"); v != 1 {
		t.Errorf("sdupdate_info{version=unknown} = %v", v)
	}
	for _, name := range []string{"sdupdate_last_run_timestamp_seconds", "sdupdate_update_available", "sdupdate_last_check_timestamp_seconds"} {
		if _, ok := fams[name]; ok {
			t.Errorf("%s written before anything happened", name)
		}
	}
	for _, r := range Results {
		if v := value(t, fams, "sdupdate_last_run_result", "result", r); v != 0 {
			t.Errorf("last_run_result{%s} = %v before any run", r, v)
		}
	}
}

func TestLabelValuesAreEscaped(t *testing.T) {
	s := rolledBack()
	s.Version = "1.0\"x\\y\nz"
	var b bytes.Buffer
	if err := Render(&b, s); err != nil {
		t.Fatal(err)
	}
	if v := value(t, parse(t, b.Bytes()), "sdupdate_info", "version", s.Version); v != 1 {
		t.Errorf("a version with quote, backslash and newline does not come back: %v", v)
	}
}

func TestWriteReplacesTheFileAtomicallyWithATempNameTheCollectorIgnores(t *testing.T) {
	fsys := afero.NewMemMapFs()
	dir := "/var/lib/prometheus/node-exporter"
	if err := fsys.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	// Other exporters' files in the same directory stay as they are.
	if err := afero.WriteFile(fsys, dir+"/apt.prom", []byte("apt_upgrades_pending 0\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	var created []string
	watch := &createWatcher{Fs: fsys, created: &created}
	if err := Write(watch, dir, State{SdupdateVersion: "0.9.0", Version: "1.0.0"}); err != nil {
		t.Fatal(err)
	}
	if err := Write(watch, dir, rolledBack()); err != nil {
		t.Fatal(err)
	}
	data, err := afero.ReadFile(fsys, filepath.Join(dir, FileName))
	if err != nil {
		t.Fatal(err)
	}
	if v := value(t, parse(t, data), "sdupdate_info", "version", "1.1.0"); v != 1 {
		t.Errorf("the second write did not replace the first")
	}
	fi, _ := fsys.Stat(filepath.Join(dir, FileName))
	if fi.Mode().Perm() != 0o644 {
		t.Errorf("mode %v, want 0644 (node_exporter is not root)", fi.Mode())
	}
	for _, c := range created {
		if strings.HasSuffix(c, ".prom") || !fsutil.IsTempName(c) {
			t.Errorf("wrote through %s: node_exporter reads every *.prom file, a half-written one too", c)
		}
	}
	if len(created) != 2 {
		t.Errorf("created %v, want one temp file per write", created)
	}
	entries, _ := afero.ReadDir(fsys, dir)
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	if strings.Join(names, " ") != "apt.prom sdupdate.prom" {
		t.Errorf("directory holds %v, want apt.prom sdupdate.prom", names)
	}
}

func TestWriteToAMissingDirectorySaysSo(t *testing.T) {
	err := Write(afero.NewMemMapFs(), "/var/lib/prometheus/node-exporter", rolledBack())
	if err == nil || !strings.Contains(err.Error(), "TextfileDirectory=/var/lib/prometheus/node-exporter") || !strings.Contains(err.Error(), "node_exporter") {
		t.Errorf("error %v, want one naming TextfileDirectory= and node_exporter", err)
	}
}

func TestWriteRefusesASymlinkedDirectory(t *testing.T) {
	root := t.TempDir()
	real := filepath.Join(root, "elsewhere")
	if err := os.Mkdir(real, 0o755); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(root, "node-exporter")
	if err := os.Symlink(real, link); err != nil {
		t.Fatal(err)
	}
	if err := Write(afero.NewOsFs(), link, rolledBack()); err == nil || !strings.Contains(err.Error(), "symlink") {
		t.Errorf("error %v, want a refusal of the symlink", err)
	}
	if names, _ := os.ReadDir(real); len(names) != 0 {
		t.Errorf("wrote through the symlink: %v", names)
	}
	// The real directory works.
	if err := Write(afero.NewOsFs(), real, rolledBack()); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(filepath.Join(real, FileName))
	if err != nil {
		t.Fatal(err)
	}
	parse(t, data)
}

// createWatcher records the names of files opened for creation.
type createWatcher struct {
	afero.Fs
	created *[]string
}

func (w *createWatcher) OpenFile(name string, flag int, perm os.FileMode) (afero.File, error) {
	if flag&os.O_CREATE != 0 {
		*w.created = append(*w.created, filepath.Base(name))
	}
	return w.Fs.OpenFile(name, flag, perm)
}
