// Package metrics writes sdupdate.prom, the file node_exporter's textfile collector reads
// (--collector.textfile.directory), so that operators can alert on the updater of every server:
// a run that rolled back, a rollback that failed, a server that has not updated in weeks, an
// update waiting.
//
//	<TextfileDirectory>/                 e.g. /var/lib/prometheus/node-exporter
//	├── sdupdate.prom                    replaced whole after every run (mode 0644)
//	└── .sdupdate-<hex>-sdupdate.prom.tmp  the next content, for a moment, before the rename
//
// The file is written to a temporary name that does not end in .prom (the collector reads every
// *.prom file, hidden ones too), fsynced and renamed over sdupdate.prom: a scrape sees the old
// file or the new one, never half of one. No sample has a timestamp: the collector refuses them.
package metrics

import (
	"bytes"
	"fmt"
	"io"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/afero"

	"github.com/sdupdate/sdupdate/fsutil"
)

// FileName is the file written in the textfile directory.
const FileName = "sdupdate.prom"

// Results are the values of the result label, in the order they are written: the outcomes of
// a run as `status --json` names them.
var Results = []string{"updated", "up-to-date", "failed", "rolled-back", "rollback-failed"}

// State is what the file reports. Zero values mean "not known yet": no sample is written for
// them, rather than a 0 that an alert would take for a fact.
type State struct {
	SdupdateVersion string // sdupdate's own version
	Version         string // the installed agent version; "" before the first recorded update
	Unit            string // Unit=, "" when not managed

	// The last run that could change the install; LastResult "" when there was none.
	LastResult   string
	LastFinished time.Time
	LastDuration time.Duration

	Runs      map[string]uint64 // runs by result, since the state directory was created
	Rollbacks uint64            // runs that restored a snapshot

	// The last check of the manifest (by `check` or an update); zero Checked when none.
	Checked         time.Time
	Available       string
	UpdateAvailable bool
}

// Render writes s in the Prometheus text exposition format.
func Render(w io.Writer, s State) error {
	var b bytes.Buffer
	metric(&b, "sdupdate_info", "gauge", "The installed agent version (version, \"unknown\" before the first update), sdupdate's own version and the agent's unit; always 1.")
	sample(&b, "sdupdate_info", 1, "sdupdate_version", s.SdupdateVersion, "unit", s.Unit, "version", displayVersion(s.Version))

	metric(&b, "sdupdate_last_run_result", "gauge", "Result of the last run that could change the install: 1 for its result, 0 for the others; all 0 before the first run.")
	for _, r := range Results {
		sample(&b, "sdupdate_last_run_result", boolValue(r == s.LastResult), "result", r)
	}
	if s.LastResult != "" {
		metric(&b, "sdupdate_last_run_timestamp_seconds", "gauge", "When the last run finished, in seconds since the Unix epoch.")
		sample(&b, "sdupdate_last_run_timestamp_seconds", seconds(s.LastFinished))
		metric(&b, "sdupdate_last_run_duration_seconds", "gauge", "How long the last run took.")
		sample(&b, "sdupdate_last_run_duration_seconds", s.LastDuration.Seconds())
	}

	metric(&b, "sdupdate_runs_total", "counter", "Runs that could change the install (update, rollback, recovery of an interrupted run), by result.")
	for _, r := range Results {
		sample(&b, "sdupdate_runs_total", float64(s.Runs[r]), "result", r)
	}
	metric(&b, "sdupdate_rollbacks_total", "counter", "Runs that restored a snapshot: a new version that did not come up, an apply that failed, or sdupdate rollback.")
	sample(&b, "sdupdate_rollbacks_total", float64(s.Rollbacks))

	if !s.Checked.IsZero() {
		metric(&b, "sdupdate_update_available", "gauge", "1 when the last check found a version newer than the installed one (label available), 0 when not.")
		sample(&b, "sdupdate_update_available", boolValue(s.UpdateAvailable), "available", s.Available)
		metric(&b, "sdupdate_last_check_timestamp_seconds", "gauge", "When the manifest was last fetched and verified, in seconds since the Unix epoch.")
		sample(&b, "sdupdate_last_check_timestamp_seconds", seconds(s.Checked))
	}
	_, err := w.Write(b.Bytes())
	return err
}

// Write replaces dir/sdupdate.prom with s, atomically. dir must be a directory already (the
// node_exporter package creates it); a symlink in its place is refused, since the directory
// may be writable by the exporter's user.
func Write(fsys afero.Fs, dir string, s State) error {
	fi, err := fsutil.Lstat(fsys, dir)
	if err != nil {
		return fmt.Errorf("cannot write metrics to TextfileDirectory=%s (is node_exporter installed?): %w", dir, err)
	}
	if !fi.IsDir() {
		return fmt.Errorf("cannot write metrics: TextfileDirectory=%s is not a directory (a symlink to one is not accepted either)", dir)
	}
	var b bytes.Buffer
	if err := Render(&b, s); err != nil {
		return err
	}
	path := filepath.Join(dir, FileName)
	// Readable by node_exporter, which does not run as root.
	if err := fsutil.WriteFileAtomicVia(fsys, path, FileName+".tmp", b.Bytes(), 0o644); err != nil {
		return fmt.Errorf("cannot write metrics: %w", err)
	}
	return nil
}

func metric(b *bytes.Buffer, name, typ, help string) {
	fmt.Fprintf(b, "# HELP %s %s\n# TYPE %s %s\n", name, helpEscaper.Replace(help), name, typ)
}

// sample writes one line; labels are name, value pairs in the order given.
func sample(b *bytes.Buffer, name string, v float64, labels ...string) {
	b.WriteString(name)
	if len(labels) > 0 {
		b.WriteByte('{')
		for i := 0; i+1 < len(labels); i += 2 {
			if i > 0 {
				b.WriteByte(',')
			}
			fmt.Fprintf(b, "%s=\"%s\"", labels[i], labelEscaper.Replace(labels[i+1]))
		}
		b.WriteByte('}')
	}
	b.WriteByte(' ')
	b.WriteString(strconv.FormatFloat(v, 'f', -1, 64))
	b.WriteByte('\n')
}

// The text format's escapes: a label value escapes backslash, double quote and newline; help
// text backslash and newline.
var (
	labelEscaper = strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`)
	helpEscaper  = strings.NewReplacer(`\`, `\\`, "\n", `\n`)
)

func boolValue(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

func seconds(t time.Time) float64 { return float64(t.UnixNano()) / 1e9 }

func displayVersion(v string) string {
	if v == "" {
		return "unknown"
	}
	return v
}
