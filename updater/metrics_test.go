package updater

import (
	"bytes"
	"context"
	"testing"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/spf13/afero"
)

const textfileDir = "/var/lib/prometheus/node-exporter"

// scrape reads sdupdate.prom as node_exporter's textfile collector would and returns each
// sample as "name{label=value,...}" → value, labels in the file's order.
func scrape(t *testing.T, fsys afero.Fs) map[string]float64 {
	t.Helper()
	data, err := afero.ReadFile(fsys, textfileDir+"/sdupdate.prom")
	if err != nil {
		t.Fatalf("no metrics file: %v", err)
	}
	p := expfmt.NewTextParser(model.LegacyValidation)
	fams, err := p.TextToMetricFamilies(bytes.NewReader(data))
	if err != nil {
		t.Fatalf("sdupdate.prom does not parse: %v\n%s", err, data)
	}
	out := map[string]float64{}
	for name, f := range fams {
		for _, m := range f.GetMetric() {
			key := name
			for i, l := range m.GetLabel() {
				sep := ","
				if i == 0 {
					sep = "{"
				}
				key += sep + l.GetName() + "=" + l.GetValue()
			}
			if len(m.GetLabel()) > 0 {
				key += "}"
			}
			v := m.GetGauge().GetValue()
			if f.GetType() == dto.MetricType_COUNTER {
				v = m.GetCounter().GetValue()
			}
			out[key] = v
		}
	}
	return out
}

func wantSamples(t *testing.T, got map[string]float64, want map[string]float64) {
	t.Helper()
	for k, v := range want {
		if g, ok := got[k]; !ok || g != v {
			t.Errorf("%s = %v (present %v), want %v", k, g, ok, v)
		}
	}
}

func metricsEngine(t *testing.T) (*site, afero.Fs, *Engine, *fakeAgent) {
	s := newSite(t)
	fsys := afero.NewMemMapFs()
	if err := fsys.MkdirAll(textfileDir, 0o755); err != nil {
		t.Fatal(err)
	}
	cfg := testConfig(s)
	cfg.Unit = "sd-agent.service"
	cfg.TextfileDirectory = textfileDir
	agent := &fakeAgent{active: true}
	e := newEngine(fsys, cfg, agent)
	e.SelfVersion = "0.9.0"
	return s, fsys, e, agent
}

func TestMetricsAfterUpdateRollbackAndCheck(t *testing.T) {
	s, fsys, e, agent := metricsEngine(t)
	installV1(t, s, fsys, e)
	wantSamples(t, scrape(t, fsys), map[string]float64{
		"sdupdate_info{sdupdate_version=0.9.0,unit=sd-agent.service,version=1.0.0}": 1,
		"sdupdate_last_run_result{result=updated}":                                  1,
		"sdupdate_runs_total{result=updated}":                                       1,
		"sdupdate_rollbacks_total":                                                  0,
		"sdupdate_update_available{available=1.0.0}":                                0,
	})

	// A version that does not come up: rolled back, and still waiting to be installed.
	updateThatDoesNotComeUp(t, s, e, agent)
	got := scrape(t, fsys)
	wantSamples(t, got, map[string]float64{
		"sdupdate_info{sdupdate_version=0.9.0,unit=sd-agent.service,version=1.0.0}": 1,
		"sdupdate_last_run_result{result=rolled-back}":                              1,
		"sdupdate_last_run_result{result=updated}":                                  0,
		"sdupdate_runs_total{result=updated}":                                       1,
		"sdupdate_runs_total{result=rolled-back}":                                   1,
		"sdupdate_rollbacks_total":                                                  1,
		"sdupdate_update_available{available=1.1.0}":                                1,
	})
	if ts := got["sdupdate_last_run_timestamp_seconds"]; ts < float64(e.now().Unix()-60) {
		t.Errorf("last run timestamp %v, want about now", ts)
	}

	// The agent is fixed; the same release now comes up.
	agent.fail = nil
	if _, err := e.Update(context.Background(), UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	wantSamples(t, scrape(t, fsys), map[string]float64{
		"sdupdate_info{sdupdate_version=0.9.0,unit=sd-agent.service,version=1.1.0}": 1,
		"sdupdate_last_run_result{result=updated}":                                  1,
		"sdupdate_runs_total{result=updated}":                                       2,
		"sdupdate_rollbacks_total":                                                  1,
		"sdupdate_update_available{available=1.1.0}":                                0,
	})

	// `check` alone says an update waits.
	s.publish(t, "1.2.0", v2)
	if _, err := e.Check(context.Background()); err != nil {
		t.Fatal(err)
	}
	wantSamples(t, scrape(t, fsys), map[string]float64{
		"sdupdate_update_available{available=1.2.0}": 1,
		"sdupdate_runs_total{result=updated}":        2,
	})

	// `sdupdate rollback` counts as a rollback too.
	if _, err := e.Rollback(context.Background(), ""); err != nil {
		t.Fatal(err)
	}
	wantSamples(t, scrape(t, fsys), map[string]float64{
		"sdupdate_info{sdupdate_version=0.9.0,unit=sd-agent.service,version=1.0.0}": 1,
		"sdupdate_last_run_result{result=rolled-back}":                              1,
		"sdupdate_rollbacks_total":                                                  2,
		"sdupdate_runs_total{result=rolled-back}":                                   2,
		"sdupdate_update_available{available=1.2.0}":                                1,
	})
}

func TestNoMetricsUnlessConfigured(t *testing.T) {
	s, fsys, e, _ := metricsEngine(t)
	e.Config.TextfileDirectory = ""
	installV1(t, s, fsys, e)
	if ok, _ := afero.Exists(fsys, textfileDir+"/sdupdate.prom"); ok {
		t.Error("sdupdate.prom written without TextfileDirectory=")
	}
}

func TestAMissingTextfileDirectoryNeverFailsARun(t *testing.T) {
	s, fsys, e, _ := metricsEngine(t)
	e.Config.TextfileDirectory = "/var/lib/prometheus/not-installed"
	installV1(t, s, fsys, e)
	if ok, _ := afero.DirExists(fsys, "/var/lib/prometheus/not-installed"); ok {
		t.Error("the textfile directory was created; it belongs to node_exporter")
	}
}

func TestARunRecordedTwiceIsCountedOnce(t *testing.T) {
	fsys := afero.NewMemMapFs()
	path := stateDir + "/last-run.json"
	lr := &LastRun{RunID: "r1", Command: KindUpdate, Result: OutcomeRollbackFailed}
	if err := saveLastRun(fsys, path, lr); err != nil {
		t.Fatal(err)
	}
	// Recovery finishes the same run later.
	lr.Result, lr.RolledBack = OutcomeRolledBack, true
	if err := saveLastRun(fsys, path, lr); err != nil {
		t.Fatal(err)
	}
	if err := saveLastRun(fsys, path, &LastRun{RunID: "r2", Command: KindUpdate, Result: OutcomeUpdated}); err != nil {
		t.Fatal(err)
	}
	f, err := loadLastRunFile(fsys, path)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]uint64{OutcomeRolledBack: 1, OutcomeUpdated: 1}
	for r, n := range want {
		if f.Totals.Runs[r] != n {
			t.Errorf("runs %s = %d, want %d (%v)", r, f.Totals.Runs[r], n, f.Totals.Runs)
		}
	}
	if f.Totals.Runs[OutcomeRollbackFailed] != 0 || f.Totals.Rollbacks != 1 {
		t.Errorf("totals %+v, want rollback-failed 0 and 1 rollback", f.Totals)
	}
}
