package updater

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"time"

	"github.com/spf13/afero"

	"github.com/sdupdate/sdupdate/fsutil"
	"github.com/sdupdate/sdupdate/metrics"
)

// lastCheck is StateDirectory/last-check.json: the version the manifest offered when `check`
// last fetched and verified it. `check` writes it without the lock: the write is atomic and the
// last one wins. An update's own check is its last run's "to".
type lastCheck struct {
	Checked   time.Time `json:"checked"`
	Available string    `json:"available"`
}

func lastCheckPath(l *layout) string { return filepath.Join(l.state, "last-check.json") }

// recordCheck remembers the version the manifest offered just now.
func (e *Engine) recordCheck(l *layout, available string) {
	data, err := json.MarshalIndent(&lastCheck{Checked: e.now(), Available: available}, "", "  ")
	if err == nil {
		err = fsutil.WriteFileAtomic(e.Fs, lastCheckPath(l), data, 0o600)
	}
	if err != nil {
		e.Log.WithError(err).Warn("cannot record the check for metrics")
	}
}

func (e *Engine) loadCheck(l *layout) lastCheck {
	var c lastCheck
	data, err := afero.ReadFile(e.Fs, lastCheckPath(l))
	if errors.Is(err, os.ErrNotExist) {
		return c
	}
	if err == nil {
		err = json.Unmarshal(data, &c)
	}
	if err != nil {
		e.Log.WithError(err).Warnf("cannot read %s; metrics report no check", lastCheckPath(l))
		return lastCheck{}
	}
	return c
}

// writeMetrics replaces sdupdate.prom in TextfileDirectory, when one is configured. Metrics
// never fail a run: a problem is a warning.
func (e *Engine) writeMetrics(l *layout) {
	dir := e.Config.TextfileDirectory
	if dir == "" {
		return
	}
	if err := metrics.Write(e.Fs, dir, e.metricsState(l)); err != nil {
		e.Log.WithError(err).Warn("cannot write metrics")
	}
}

// metricsState gathers what sdupdate.prom reports from the state directory as it is now.
func (e *Engine) metricsState(l *layout) metrics.State {
	s := metrics.State{SdupdateVersion: e.SelfVersion, Unit: e.Config.Unit}
	if v, err := e.installedVersion(l); err == nil {
		s.Version = v
	} else {
		e.Log.WithError(err).Warn("metrics: installed version unknown")
	}
	chk := e.loadCheck(l)
	f, err := loadLastRunFile(e.Fs, l.lastRun)
	if err != nil {
		e.Log.WithError(err).Warn("metrics: last run unknown")
	}
	if f != nil {
		s.LastResult, s.LastFinished = f.Result, f.Finished
		if !f.Started.IsZero() && f.Finished.After(f.Started) {
			s.LastDuration = f.Finished.Sub(f.Started)
		}
		s.Runs, s.Rollbacks = f.Totals.Runs, f.Totals.Rollbacks
		// An update that fetched the manifest checked it too.
		if f.Command == KindUpdate && f.To != "" && f.Finished.After(chk.Checked) {
			chk = lastCheck{Checked: f.Finished, Available: f.To}
		}
	}
	if !chk.Checked.IsZero() {
		s.Checked, s.Available = chk.Checked, chk.Available
		// Against what is installed now: after an update to it, nothing is waiting any more.
		cmp, err := compareVersions(s.Version, chk.Available)
		s.UpdateAvailable = err == nil && cmp > 0
	}
	return s
}
