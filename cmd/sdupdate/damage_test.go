package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// statusFindings runs `status --json`, which must answer with exit 0 whatever the state, and
// returns the codes of its findings.
func statusFindings(t *testing.T, e *env) []string {
	t.Helper()
	r := sdupdate(t, "--config="+e.conf, "status", "--json").expect(t, 0, "status --json")
	var st struct {
		Findings []struct{ Code, Path, Message string } `json:"findings"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &st); err != nil {
		t.Fatalf("status --json: %v\n%s", err, r.stdout)
	}
	var codes []string
	for _, f := range st.Findings {
		if f.Message == "" {
			t.Errorf("finding %s without a message", f.Code)
		}
		codes = append(codes, f.Code)
	}
	sdupdate(t, "--config="+e.conf, "status").expect(t, 0, "status")
	return codes
}

func has(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// `status` must always answer (exit 0) and report damage as findings; the other commands say
// what is wrong, and the damage can be repaired or skipped.
func TestDamagedStateIsAFinding(t *testing.T) {
	setup := func(t *testing.T) *env {
		e := newEnv(t)
		e.release(t, "1.0.0", files1)
		sdupdate(t, "--config="+e.conf, "update").expect(t, 0, "update to 1.0.0")
		e.release(t, "1.1.0", files2)
		sdupdate(t, "--config="+e.conf, "update").expect(t, 0, "update to 1.1.0")
		return e
	}
	t.Run("empty installed.json", func(t *testing.T) {
		e := setup(t)
		c := "--config=" + e.conf
		v2 := hashTree(t, e.install)
		if err := os.WriteFile(filepath.Join(e.state, "installed.json"), nil, 0o600); err != nil {
			t.Fatal(err)
		}
		if codes := statusFindings(t, e); !has(codes, "installed-manifest-damaged") {
			t.Errorf("findings %v", codes)
		}
		sdupdate(t, c, "update", "--repair").expect(t, 0, "update --repair rebuilds installed.json")
		sdupdate(t, c, "verify").expect(t, 0, "verify after the repair")
		sameTree(t, "after repair", hashTree(t, e.install), v2)
		if codes := statusFindings(t, e); len(codes) != 0 {
			t.Errorf("findings after the repair: %v", codes)
		}
	})
	t.Run("corrupt snapshot record", func(t *testing.T) {
		e := setup(t)
		c := "--config=" + e.conf
		e.release(t, "1.2.0", files1)
		sdupdate(t, c, "update").expect(t, 0, "update to 1.2.0")
		// Snapshots of 1.0.0 (oldest), 1.1.0; the newest, of 1.1.0, is damaged.
		var snaps []struct{ ID, Version string }
		if err := json.Unmarshal([]byte(sdupdate(t, c, "snapshots", "--json").stdout), &snaps); err != nil || len(snaps) < 2 {
			t.Fatalf("snapshots: %v %v", snaps, err)
		}
		record := filepath.Join(e.state, "snapshots", snaps[0].ID, "record.json")
		if _, err := os.Stat(record); err != nil {
			record = filepath.Join(filepath.Dir(record), "meta.json") // an older sdupdate's
		}
		if err := os.WriteFile(record, []byte("{"), 0o600); err != nil {
			t.Fatal(err)
		}
		if codes := statusFindings(t, e); !has(codes, "snapshot-corrupt") {
			t.Errorf("findings %v", codes)
		}
		r := sdupdate(t, c, "snapshots").expect(t, 0, "snapshots")
		if !strings.Contains(r.stdout, snaps[0].ID) || !strings.Contains(r.stdout, "CORRUPT") {
			t.Errorf("snapshots does not list the corrupt one as corrupt:\n%s", r.stdout)
		}
		sdupdate(t, c, "rollback").expect(t, 0, "rollback skips the corrupt snapshot")
		if v := sdupdate(t, c, "status", "--json").stdout; !strings.Contains(v, `"version": "`+snaps[1].Version+`"`) {
			t.Errorf("rolled back to the wrong version:\n%s", v)
		}
	})
	t.Run("corrupt last-run.json", func(t *testing.T) {
		e := setup(t)
		if err := os.WriteFile(filepath.Join(e.state, "last-run.json"), []byte("not json"), 0o600); err != nil {
			t.Fatal(err)
		}
		if codes := statusFindings(t, e); !has(codes, "last-run-damaged") {
			t.Errorf("findings %v", codes)
		}
	})
	t.Run("stuck journal", func(t *testing.T) {
		e := setup(t)
		rec := `{"format":1,"run_id":"0123456789abcdef0123456789abcdef","kind":"update","phase":"rolling-back","snapshot":"no-such","recover_attempts":9}`
		if err := os.WriteFile(filepath.Join(e.state, "txn.json"), []byte(rec), 0o600); err != nil {
			t.Fatal(err)
		}
		if codes := statusFindings(t, e); !has(codes, "recovery-needed") {
			t.Errorf("findings %v", codes)
		}
		sdupdate(t, "--config="+e.conf, "recover").expect(t, 4, "recover of a stuck run")
	})
	t.Run("state directory writable by others", func(t *testing.T) {
		e := setup(t)
		if err := os.Chmod(e.state, 0o777); err != nil {
			t.Fatal(err)
		}
		if codes := statusFindings(t, e); !has(codes, "state-directory-unsafe") {
			t.Errorf("findings %v", codes)
		}
	})
	t.Run("install directory on a read-only mount", func(t *testing.T) {
		if os.Geteuid() != 0 {
			if os.Getenv("CI") == "true" {
				t.Fatal("a read-only bind mount needs root, and CI runs as root")
			}
			t.Skip("a read-only bind mount needs root")
		}
		e := setup(t)
		if err := syscall.Mount(e.install, e.install, "", syscall.MS_BIND, ""); err != nil {
			t.Fatalf("bind mount: %v", err)
		}
		t.Cleanup(func() { _ = syscall.Unmount(e.install, syscall.MNT_DETACH) })
		if err := syscall.Mount("", e.install, "", syscall.MS_REMOUNT|syscall.MS_BIND|syscall.MS_RDONLY, ""); err != nil {
			t.Fatalf("remount read-only: %v", err)
		}
		if codes := statusFindings(t, e); len(codes) != 0 {
			t.Errorf("findings on a read-only install: %v", codes)
		}
		sdupdate(t, "--config="+e.conf, "verify").expect(t, 0, "verify on a read-only install")
	})
}
