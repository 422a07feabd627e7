package e2e

import (
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sdupdate/sdupdate/internal/fixture"
)

// maxExposure is the highest `systemd-analyze security` score the unit may have (issue: 3.0
// or lower; the README states the figure).
const maxExposure = 3.0

// TestUnitFile checks the repository's unit file as installed: systemd-analyze finds nothing
// to complain about, and its sandboxing scores low enough.
func TestUnitFile(t *testing.T) {
	t.Parallel()
	s := bootServer(t, "e2e-unit", 2*time.Second)
	unitPath := "/etc/systemd/system/" + fixture.UpdateUnit

	t.Run("systemd-analyze verify is clean", func(t *testing.T) {
		s.t = t
		r := s.run("systemd-analyze", "verify", unitPath)
		if r.ExitCode != 0 || strings.TrimSpace(r.Stdout+r.Stderr) != "" {
			t.Errorf("systemd-analyze verify %s: exit %d\n%s%s", unitPath, r.ExitCode, r.Stdout, r.Stderr)
		}
	})

	t.Run("systemd-analyze security scores it at most 3.0", func(t *testing.T) {
		s.t = t
		r := s.run("systemd-analyze", "security", "--offline=yes", "--no-pager", unitPath)
		// → Overall exposure level for sd-agent-update.service: 2.3 OK :-)
		m := regexp.MustCompile(`Overall exposure level for ` + regexp.QuoteMeta(fixture.UpdateUnit) + `: ([0-9]+\.[0-9]+) (\w+)`).
			FindStringSubmatch(r.Stdout)
		if m == nil {
			t.Fatalf("no overall exposure level in systemd-analyze security's output (exit %d):\n%s%s", r.ExitCode, r.Stdout, r.Stderr)
		}
		score, err := strconv.ParseFloat(m[1], 64)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("systemd-analyze security: overall exposure %.1f %s", score, m[2])
		if score > maxExposure {
			t.Errorf("exposure %.1f > %.1f:\n%s", score, maxExposure, r.Stdout)
		}
	})

	t.Run("it has no [Install] section and cannot be enabled", func(t *testing.T) {
		s.t = t
		if state := strings.TrimSpace(s.run("systemctl", "is-enabled", fixture.UpdateUnit).Stdout); state != "static" {
			t.Errorf("systemctl is-enabled %s = %q, want static (nothing starts it on its own)", fixture.UpdateUnit, state)
		}
	})
}
