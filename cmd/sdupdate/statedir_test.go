package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// victims is what another user would point planted symlinks at: a root-only file and a directory
// of files, outside the install and the state directory.
type victims struct{ file, dir string }

func plantVictims(t *testing.T, root string) victims {
	t.Helper()
	v := victims{file: filepath.Join(root, "shadow"), dir: filepath.Join(root, "precious")}
	if err := os.WriteFile(v.file, []byte("root only\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(v.dir, "sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{"a", "sub/b"} {
		if err := os.WriteFile(filepath.Join(v.dir, n), []byte(n), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return v
}

func (v victims) assertIntact(t *testing.T) {
	t.Helper()
	if got, err := os.ReadFile(v.file); err != nil || string(got) != "root only\n" {
		t.Errorf("%s changed: %q, %v", v.file, got, err)
	}
	for _, n := range []string{"a", "sub/b"} {
		if got, err := os.ReadFile(filepath.Join(v.dir, n)); err != nil || string(got) != n {
			t.Errorf("%s/%s changed or removed: %q, %v", v.dir, n, got, err)
		}
	}
}

// The state directory used to be trusted blindly: with it writable by another user, a planted
// `lock` symlink made a plain `sdupdate snapshots` truncate a root-only file, and a planted
// `staging` symlink made it empty any directory. StateDirectory is now held to the rules of
// <Directory>/.sdupdate, checked before anything in it is opened.
func TestHostileStateDirectoryIsRefused(t *testing.T) {
	for _, tc := range []struct {
		what string
		make func(t *testing.T, state string)
		want string
	}{
		{"writable by others", func(t *testing.T, state string) {
			if err := os.Chmod(state, 0o777); err != nil {
				t.Fatal(err)
			}
		}, "writable by others (mode 0777)"},
		{"owned by another user", func(t *testing.T, state string) {
			if os.Geteuid() != 0 {
				t.Skip("needs root to give the state directory to another user")
			}
			if err := os.Chown(state, 65534, 65534); err != nil {
				t.Fatal(err)
			}
		}, "belongs to uid 65534"},
	} {
		t.Run(tc.what, func(t *testing.T) {
			e := newEnv(t)
			c := "--config=" + e.conf
			e.release(t, "1.0.0", files1)
			sdupdate(t, c, "update").expect(t, 0, "update")
			v := plantVictims(t, e.root)
			// What the other user plants once the directory is theirs to write.
			for name, target := range map[string]string{"lock": v.file, "staging": v.dir} {
				p := filepath.Join(e.state, name)
				if err := os.RemoveAll(p); err != nil {
					t.Fatal(err)
				}
				if err := os.Symlink(target, p); err != nil {
					t.Fatal(err)
				}
			}
			tc.make(t, e.state)
			for _, args := range [][]string{{"snapshots"}, {"update"}, {"rollback"}, {"recover"}} {
				r := sdupdate(t, append([]string{c}, args...)...)
				if r.code == 0 || !strings.Contains(r.stderr, "StateDirectory "+e.state) || !strings.Contains(r.stderr, tc.want) {
					t.Errorf("%v: exit %d, stderr %q; want it refused naming StateDirectory and %q", args, r.code, r.stderr, tc.want)
				}
				v.assertIntact(t)
			}
		})
	}
}

// A journal is state on disk: a staging_dir that is not the one sdupdate derives from the run id
// used to make any command delete that directory.
func TestJournalPathsAreNotTrusted(t *testing.T) {
	e := newEnv(t)
	c := "--config=" + e.conf
	e.release(t, "1.0.0", files1)
	sdupdate(t, c, "update").expect(t, 0, "update")
	v := plantVictims(t, e.root)
	for _, rec := range []map[string]any{
		{"staging_dir": v.dir},
		{"staging_dir": filepath.Join(e.state, "staging", "0123456789abcdef0123456789abcdef", "..", "..", "..", "..", "precious")},
		{"ops": []map[string]any{{"name": "../../shadow", "remove": true}}},
	} {
		rec["format"], rec["run_id"], rec["kind"], rec["phase"] = 1, "0123456789abcdef0123456789abcdef", "update", "staging"
		data, _ := json.Marshal(rec)
		if err := os.WriteFile(filepath.Join(e.state, "txn.json"), data, 0o600); err != nil {
			t.Fatal(err)
		}
		for cmd, code := range map[string]int{"recover": 4, "update": 4, "snapshots": 0} {
			// A reading command still answers, with the refusal as a warning.
			r := sdupdate(t, c, cmd)
			if r.code != code || !strings.Contains(r.stderr, "which sdupdate never writes") {
				t.Errorf("%s with journal %s: exit %d, stderr %q; want %d and the journal refused", cmd, data, r.code, r.stderr, code)
			}
			v.assertIntact(t)
		}
	}
}
