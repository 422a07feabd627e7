package e2e

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sdupdate/sdupdate/internal/fixture"
	"github.com/sdupdate/sdupdate/internal/sandbox"
	"github.com/sdupdate/sdupdate/logging"
)

// packages are the .deb and .rpm that packaging/build.sh makes of this checkout, built once for
// every test of the package: first as released (the version from git), then once more as a
// newer build of the same sources, to upgrade to.
var packages struct {
	once     sync.Once
	dir      string
	version  string // of the first build
	deb, rpm string
	newer    string // version of the second build
	newerDeb string
	err      error
}

func builtPackages(t *testing.T) {
	t.Helper()
	packages.once.Do(func() {
		start := time.Now()
		packages.dir, packages.err = os.MkdirTemp("", "sdupdate-packages-")
		if packages.err != nil {
			return
		}
		if packages.version, packages.err = runBuild(packages.dir, "", "--version"); packages.err != nil {
			return
		}
		packages.newer = packages.version + ".1"
		// Both builds at once: they share nothing but Go's caches.
		var wg sync.WaitGroup
		var errs [2]error
		var built string
		wg.Add(2)
		go func() { defer wg.Done(); built, errs[0] = runBuild(packages.dir, "") }()
		go func() { defer wg.Done(); _, errs[1] = runBuild(packages.dir, packages.newer) }()
		wg.Wait()
		if packages.err = errors.Join(errs[:]...); packages.err != nil {
			return
		}
		if built != packages.version {
			packages.err = fmt.Errorf("packaging/build.sh built %q, but --version said %q", built, packages.version)
			return
		}
		packages.deb = filepath.Join(packages.dir, "sdupdate_"+packages.version+"_amd64.deb")
		packages.rpm = filepath.Join(packages.dir, "sdupdate-"+packages.version+".x86_64.rpm")
		packages.newerDeb = filepath.Join(packages.dir, "sdupdate_"+packages.newer+"_amd64.deb")
		t.Logf("built packages %s and %s in %v", packages.version, packages.newer, time.Since(start).Round(time.Millisecond))
	})
	if packages.err != nil {
		t.Fatal(packages.err)
	}
}

// runBuild runs the documented command, packaging/build.sh, into dir; version "" lets it take
// the version from git. It returns the version, the last line the script prints.
func runBuild(dir, version string, args ...string) (string, error) {
	root, err := fixture.RepoRoot()
	if err != nil {
		return "", err
	}
	cmd := exec.Command(filepath.Join(root, "packaging", "build.sh"), args...)
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "DIST="+dir, "VERSION="+version)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("packaging/build.sh: %v\n%s%s", err, stdout.String(), stderr.String())
	}
	lines := strings.Split(strings.TrimSpace(stdout.String()), "\n")
	return lines[len(lines)-1], nil
}

// Paths the package owns, and what the operator or sdupdate make.
const (
	debUnitPath = "/usr/lib/systemd/system/" + fixture.UpdateUnit
	catalogPath = "/usr/lib/systemd/catalog/sdupdate.catalog"
	installData = fixture.InstallDir + "/.sdupdate"
)

// TestDebianPackage is an operator's life with the .deb on a real systemd: install, configure,
// update the agent, read the manual and the journal's explanations, upgrade the package over an
// edited configuration, remove it (the snapshots stay) and purge it (state and configuration
// go). Then the .rpm, installed the same way, lists the same files.
func TestDebianPackage(t *testing.T) {
	t.Parallel()
	requireTools(t, "dpkg", "man", "rpm", "rpmlint", bashCompletion)
	sandbox.RequireOrSkip(t)
	builtPackages(t) // before the test's clock starts: a loaded machine builds slowly
	s := newServer(t)
	sb, err := sandbox.Boot(s.ctx, sandbox.Options{
		Name: "e2e-package",
		Files: map[string]sandbox.File{
			"/etc/systemd/system/" + fixture.AgentUnitID: {Data: []byte(fixture.AgentUnit), Mode: 0o644},
			fixture.OperatorFile:                         {Data: []byte("api_key = 0123456789abcdef\n"), Mode: 0o600},
		},
		CopyFiles: map[string]string{
			"/root/" + filepath.Base(packages.deb):      packages.deb,
			"/root/" + filepath.Base(packages.newerDeb): packages.newerDeb,
			"/root/" + filepath.Base(packages.rpm):      packages.rpm,
		},
		Log: sandbox.TestLog(t),
	})
	if err != nil {
		t.Fatal(err)
	}
	s.attach(sb)
	// man-db's trigger would rebuild the index of every page on the machine; man finds a page
	// by its path without it.
	s.must("rm", "-f", "/var/lib/man-db/auto-update")

	steps := []struct {
		name string
		fn   func(s *server)
	}{
		{"dpkg -i installs it, enables and starts nothing", installPackage},
		{"systemctl start sd-agent-update updates the agent", updateWithPackage},
		{"man sdupdate renders", readManual},
		{"bash completes sdupdate's commands and flags", completeInBash},
		{"journalctl -x explains the update", explainedInJournal},
		{"upgrading keeps the edited configuration", upgradePackage},
		{"dpkg -r keeps the snapshots", removePackage},
		{"dpkg -P removes state and configuration", purgePackage},
		{"the rpm lists the same files", installRPM},
	}
	for _, step := range steps {
		if !t.Run(step.name, func(t *testing.T) { s.t = t; step.fn(s) }) {
			return
		}
	}
}

func installPackage(s *server) {
	if ids := s.catalogIDs(); ids[logging.MsgUpdated] {
		s.t.Fatalf("the catalog database knows %s before the package is installed", logging.MsgUpdated)
	}
	r := s.run("dpkg", "-i", "/root/"+filepath.Base(packages.deb))
	if r.ExitCode != 0 {
		s.t.Fatalf("dpkg -i: exit %d\n%s%s", r.ExitCode, r.Stdout, r.Stderr)
	}
	s.t.Logf("dpkg -i:\n%s", r.Stdout)
	if v := s.must("dpkg-query", "-W", "-f", "${Version}", "sdupdate"); v != packages.version {
		s.t.Errorf("dpkg-query says version %q, want %q", v, packages.version)
	}
	if v := strings.TrimSpace(s.must("sdupdate", "--version")); v != "sdupdate "+packages.version {
		s.t.Errorf("sdupdate --version = %q, want the package's version %q", v, packages.version)
	}
	// daemon-reload by postinst: systemd knows the unit from /usr/lib without being told.
	// (/lib is /usr/lib on Debian 12, and systemd names the first.)
	p := s.prop(fixture.UpdateUnit, "FragmentPath")
	if real := strings.TrimSpace(s.run("readlink", "-f", p).Stdout); real != debUnitPath {
		s.t.Errorf("systemd loads %s from %q, want %s", fixture.UpdateUnit, p, debUnitPath)
	}
	if st := strings.TrimSpace(s.run("systemctl", "is-enabled", fixture.UpdateUnit).Stdout); st != "static" {
		s.t.Errorf("systemctl is-enabled %s = %q after install, want static", fixture.UpdateUnit, st)
	}
	if st := s.prop(fixture.UpdateUnit, "ActiveState"); st != "inactive" {
		s.t.Errorf("%s is %s after install, want inactive: the package must not start it", fixture.UpdateUnit, st)
	}
	// systemd's dpkg trigger on /usr/lib/systemd/catalog ran journalctl --update-catalog.
	ids := s.catalogIDs()
	for _, id := range []string{logging.MsgUpdateStarted, logging.MsgUpdated, logging.MsgRolledBack} {
		if !ids[id] {
			s.t.Errorf("the catalog database lacks %s after dpkg -i: the trigger did not update it", id)
		}
	}
	// The operator sets the source, as the default file asks, below the commented defaults.
	conf := s.must("cat", fixture.ConfigFile)
	if !strings.Contains(conf, "#ManifestURL=") {
		s.t.Errorf("the default %s does not show ManifestURL= commented out:\n%s", fixture.ConfigFile, conf)
	}
	conf = strings.Replace(conf, "[Source]\n", "[Source]\n"+operatorSource(s), 1)
	conf = strings.Replace(conf, "[Agent]\n", "[Agent]\nSettleSec=2\nStartTimeoutSec=10\n", 1)
	if err := s.sb.WriteFile(fixture.ConfigFile, []byte(conf), 0o644); err != nil {
		s.t.Fatal(err)
	}
	var st struct {
		SdupdateVersion string `json:"sdupdate_version"`
	}
	if out := s.must("sdupdate", "status", "--json"); json.Unmarshal([]byte(out), &st) != nil || st.SdupdateVersion != packages.version {
		s.t.Errorf("status --json: sdupdate_version %q, want the package's %q:\n%s", st.SdupdateVersion, packages.version, out)
	}
}

// operatorSource is what the operator adds under [Source]: the loopback release and its key.
func operatorSource(s *server) string {
	return fmt.Sprintf("# set by the operator\nManifestURL=%s\nPublicKey=%s\n", s.site.ManifestURL(), s.pub.PublicKey)
}

func updateWithPackage(s *server) {
	s.release(v100)
	if r := s.run("systemctl", "start", fixture.UpdateUnit); r.ExitCode != 0 {
		s.t.Fatalf("systemctl start %s: exit %d: %s", fixture.UpdateUnit, r.ExitCode, r.Stderr)
	}
	s.checkInstall(v100)
	s.must("systemctl", "start", fixture.AgentUnitID)
	s.waitAgentRuns("1.0.0")
	s.release(v110)
	if r := s.run("systemctl", "start", fixture.UpdateUnit); r.ExitCode != 0 {
		s.t.Fatalf("systemctl start %s: exit %d: %s", fixture.UpdateUnit, r.ExitCode, r.Stderr)
	}
	s.waitAgentRuns("1.1.0")
	s.checkInstall(v110)
	// Made by the unit's StateDirectory=, not by the package.
	if mode := strings.TrimSpace(s.must("stat", "-c", "%a %U", fixture.StateDir)); mode != "700 root" {
		s.t.Errorf("%s is %q, want 700 root", fixture.StateDir, mode)
	}
}

func readManual(s *server) {
	for page, want := range map[string][]string{
		"sdupdate":        {"SDUPDATE(8)", "System Manager's Manual", "EXIT STATUS", "sdupdate-update(8)"},
		"sdupdate-update": {"--allow-downgrade", "--dry-run"},
	} {
		r := s.run("env", "MANWIDTH=100", "man", page)
		if r.ExitCode != 0 {
			s.t.Errorf("man %s: exit %d: %s", page, r.ExitCode, r.Stderr)
			continue
		}
		for _, w := range want {
			if !strings.Contains(r.Stdout, w) {
				s.t.Errorf("man %s does not show %q:\n%s", page, w, r.Stdout)
			}
		}
	}
}

// bashCompletion is bash-completion's loader, which finds a command's completion by its name.
const bashCompletion = "/usr/share/bash-completion/bash_completion"

func completeInBash(s *server) {
	// What pressing Tab after the words does: bash-completion loads the package's file for
	// "sdupdate" from its directory, and the function it registers asks sdupdate.
	complete := func(words ...string) string {
		script := `. ` + bashCompletion + `
_completion_loader sdupdate # 124: loaded, to be asked again
fn=$(complete -p sdupdate | sed 's/.*-F \([^ ]*\) .*/\1/') || exit 1
COMP_WORDS=("$@") COMP_CWORD=$(($# - 1)) COMP_LINE="$*" && COMP_POINT=${#COMP_LINE}
"$fn" sdupdate "${@: -1}" "${@: -2:1}" 2>/dev/null
printf '%s\n' "${COMPREPLY[@]}"`
		return s.must(append([]string{"bash", "-c", script, "bash"}, words...)...)
	}
	if got := complete("sdupdate", "roll"); strings.TrimSpace(got) != "rollback" {
		s.t.Errorf("bash completes \"sdupdate roll\" to %q, want rollback", got)
	}
	if got := complete("sdupdate", "update", "--d"); !strings.Contains(got, "--dry-run") {
		s.t.Errorf("bash completes \"sdupdate update --d\" to %q, want --dry-run", got)
	}
}

func explainedInJournal(s *server) {
	out := s.must("journalctl", "-x", "--no-pager", "MESSAGE_ID="+logging.MsgUpdated)
	// The catalog's subject and text, with the entry's own fields filled in.
	for _, want := range []string{"Subject: sd-agent updated to version 1.1.0", "Documentation: man:sdupdate(8)",
		"The agent was updated from version 1.0.0 to version", "sdupdate rollback"} {
		if !strings.Contains(out, want) {
			s.t.Errorf("journalctl -x does not show %q for the update event:\n%s", want, out)
		}
	}
}

func upgradePackage(s *server) {
	edited := s.must("cat", fixture.ConfigFile)
	r := s.run("dpkg", "-i", "/root/"+filepath.Base(packages.newerDeb))
	if r.ExitCode != 0 {
		s.t.Fatalf("dpkg -i of the newer build: exit %d\n%s%s", r.ExitCode, r.Stdout, r.Stderr)
	}
	if v := s.must("dpkg-query", "-W", "-f", "${Version}", "sdupdate"); v != packages.newer {
		s.t.Errorf("after the upgrade dpkg-query says %q, want %q", v, packages.newer)
	}
	if v := strings.TrimSpace(s.must("sdupdate", "--version")); v != "sdupdate "+packages.newer {
		s.t.Errorf("after the upgrade sdupdate --version = %q, want %q", v, packages.newer)
	}
	if got := s.must("cat", fixture.ConfigFile); got != edited {
		s.t.Errorf("the upgrade changed the edited %s:\n%s", fixture.ConfigFile, got)
	}
	if st := s.status(); st.Version != "1.1.0" || st.LastRun.Result != "updated" {
		s.t.Errorf("after the upgrade, status says version %q, last run %q; want 1.1.0, updated", st.Version, st.LastRun.Result)
	}
	if st := s.prop(fixture.UpdateUnit, "ActiveState"); st != "inactive" {
		s.t.Errorf("%s is %s after the upgrade, want inactive", fixture.UpdateUnit, st)
	}
}

// snapshotDirs lists the snapshots on disk, wherever sdupdate keeps them.
func (s *server) snapshotDirs() []string {
	s.t.Helper()
	out := s.must("sh", "-c", "find "+fixture.StateDir+" "+installData+" -path '*/snapshots/*' -name record.json 2>/dev/null | sort; true")
	return strings.Fields(out)
}

func removePackage(s *server) {
	before := s.snapshotDirs()
	if len(before) == 0 {
		s.t.Fatalf("no snapshot on disk before removal; sdupdate snapshots says:\n%s", s.must("sdupdate", "snapshots"))
	}
	if r := s.run("dpkg", "-r", "sdupdate"); r.ExitCode != 0 {
		s.t.Fatalf("dpkg -r: exit %d\n%s%s", r.ExitCode, r.Stdout, r.Stderr)
	}
	if after := s.snapshotDirs(); strings.Join(after, " ") != strings.Join(before, " ") {
		s.t.Errorf("snapshots before dpkg -r: %v, after: %v; removal must keep them", before, after)
	}
	for _, gone := range []string{"/usr/bin/sdupdate", debUnitPath, catalogPath} {
		if r := s.run("test", "-e", gone); r.ExitCode == 0 {
			s.t.Errorf("%s is still there after dpkg -r", gone)
		}
	}
	// daemon-reload by postrm: the unit is gone from systemd too.
	if ls := s.prop(fixture.UpdateUnit, "LoadState"); ls != "not-found" {
		s.t.Errorf("%s has LoadState %s after dpkg -r, want not-found", fixture.UpdateUnit, ls)
	}
	if s.catalogIDs()[logging.MsgUpdated] {
		s.t.Errorf("the catalog database still explains %s after dpkg -r", logging.MsgUpdated)
	}
	if r := s.run("test", "-f", fixture.ConfigFile); r.ExitCode != 0 {
		s.t.Errorf("%s is gone after dpkg -r; a conffile stays until purge", fixture.ConfigFile)
	}
	s.checkAgentUntouched()
}

func purgePackage(s *server) {
	if r := s.run("dpkg", "-P", "sdupdate"); r.ExitCode != 0 {
		s.t.Fatalf("dpkg -P: exit %d\n%s%s", r.ExitCode, r.Stdout, r.Stderr)
	}
	for _, gone := range []string{fixture.StateDir, installData, "/etc/sdupdate"} {
		if r := s.run("test", "-e", gone); r.ExitCode == 0 {
			s.t.Errorf("%s is still there after dpkg -P:\n%s", gone, s.must("find", gone))
		}
	}
	if r := s.run("dpkg-query", "-W", "sdupdate"); r.ExitCode == 0 {
		s.t.Errorf("dpkg still knows sdupdate after purge: %s", r.Stdout)
	}
	s.checkAgentUntouched()
}

// checkAgentUntouched checks that the agent's files are still version 1.1.0's, and the
// operator's own file is there: the package's removal is never the agent's.
func (s *server) checkAgentUntouched() {
	s.t.Helper()
	for name, f := range v110.Files() {
		got, err := s.sb.ReadFile(fixture.InstallDir + "/" + name)
		if err != nil || string(got) != f.Data {
			s.t.Errorf("%s/%s = %q, %v; want version 1.1.0's file untouched", fixture.InstallDir, name, got, err)
		}
	}
	if _, err := s.sb.ReadFile(fixture.OperatorFile); err != nil {
		s.t.Errorf("the operator's file: %v", err)
	}
}

func installRPM(s *server) {
	rpmFile := "/root/" + filepath.Base(packages.rpm)
	// No dependencies to check against on Debian; rpm keeps its own database in the sandbox.
	if r := s.run("rpm", "-i", "--nodeps", rpmFile); r.ExitCode != 0 {
		s.t.Fatalf("rpm -i --nodeps: exit %d\n%s%s", r.ExitCode, r.Stdout, r.Stderr)
	}
	rpmFiles := strings.Fields(s.must("rpm", "-ql", "sdupdate"))
	debFiles := debContents(s)
	// The same files; where each system's conventions put one elsewhere, there; "" for Debian's own.
	elsewhere := map[string]string{
		"/usr/share/doc/sdupdate/copyright":           "/usr/share/licenses/sdupdate/copyright",
		"/usr/share/zsh/vendor-completions/_sdupdate": "/usr/share/zsh/site-functions/_sdupdate",
		"/usr/share/lintian/overrides/sdupdate":       "",
	}
	want := []string{"/usr/share/licenses/sdupdate"} // rpm's license directory, the package's own
	for _, f := range debFiles {
		f = strings.TrimSuffix(f, "/") // rpm lists a directory without the slash
		if to, ok := elsewhere[f]; ok {
			if to == "" {
				continue
			}
			f = to
		}
		want = append(want, f)
	}
	sort.Strings(want)
	sort.Strings(rpmFiles)
	if strings.Join(want, "\n") != strings.Join(rpmFiles, "\n") {
		s.t.Errorf("rpm -ql lists\n%s\nwant (the .deb's files)\n%s", strings.Join(rpmFiles, "\n"), strings.Join(want, "\n"))
	}
	// %config(noreplace): "cn" in rpm's file flags.
	flags := s.must("rpm", "-q", "--qf", "[%{FILEFLAGS:fflags} %{FILENAMES}\n]", "sdupdate")
	if !strings.Contains(flags, "cn "+fixture.ConfigFile+"\n") {
		s.t.Errorf("the rpm does not mark %s %%config(noreplace):\n%s", fixture.ConfigFile, flags)
	}
	if out := s.run("rpm", "-V", "sdupdate"); out.ExitCode != 0 {
		s.t.Errorf("rpm -V sdupdate: the installed files differ from the package:\n%s%s", out.Stdout, out.Stderr)
	}
	if v := strings.TrimSpace(s.must("sdupdate", "--version")); v != "sdupdate "+packages.version {
		s.t.Errorf("sdupdate --version from the rpm = %q, want %q", v, packages.version)
	}
	if !s.catalogIDs()[logging.MsgUpdated] {
		s.t.Errorf("the catalog database lacks %s after rpm -i: %%post did not run journalctl --update-catalog", logging.MsgUpdated)
	}
	// rpmlint unpacks the package's absolute paths into / when run as root: only here, in the
	// sandbox. Its findings are listed in the README.
	r := s.run("rpmlint", rpmFile)
	s.t.Logf("rpmlint %s (exit %d):\n%s%s", filepath.Base(rpmFile), r.ExitCode, r.Stdout, r.Stderr)
}

// debContents lists the paths in the .deb, "/dir/" for directories, as dpkg-deb shows them.
func debContents(s *server) []string {
	s.t.Helper()
	out := s.must("dpkg-deb", "--contents", "/root/"+filepath.Base(packages.deb))
	var paths []string
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		f := strings.Fields(line)
		p := strings.TrimPrefix(f[len(f)-1], ".")
		// Directories every system has are not the package's.
		if strings.HasSuffix(p, "/") && !strings.Contains(p, "sdupdate") {
			continue
		}
		paths = append(paths, p)
	}
	return paths
}

// catalogIDs are the MESSAGE_IDs the journal's catalog database explains.
func (s *server) catalogIDs() map[string]bool {
	s.t.Helper()
	ids := map[string]bool{}
	for _, line := range strings.Split(s.must("journalctl", "--list-catalog", "--no-pager"), "\n") {
		if f := strings.Fields(line); len(f) > 0 {
			ids[f[0]] = true
		}
	}
	return ids
}

// The versions packaging/build.sh makes, in the order a release history has them: each must
// sort after the one before for dpkg and for rpm alike, or an upgrade would be refused (or a
// dev build taken for newer than the release that followed it).
func TestPackageVersionsOrder(t *testing.T) {
	requireTools(t, "dpkg", "rpm")
	history := []string{
		"0.0.0+dev.20261201194605.514b0004f4f9",       // before any tag
		"0.0.0+dev.20261201194605.514b0004f4f9.dirty", // the same commit, with changes
		"0.0.0+dev.20261202080000.0123456789ab",       // a later commit
		"1.0.0~rc.1",                                  // tag v1.0.0-rc.1
		"1.0.0~rc.1+dev.20261203080000.0123456789ab",  // a commit after it
		"1.0.0", // tag v1.0.0
		"1.0.0+dev.20261204080000.0123456789ab",
		"1.0.0+dev.20261204080000.0123456789ab.1", // the package test's newer build
		"1.0.1",
		"1.10.0",
	}
	for i := 1; i < len(history); i++ {
		older, newer := history[i-1], history[i]
		if err := exec.Command("dpkg", "--compare-versions", newer, "gt", older).Run(); err != nil {
			t.Errorf("dpkg does not order %s after %s", newer, older)
		}
		out, err := exec.Command("rpm", "--eval", fmt.Sprintf(`%%{lua: print(rpm.vercmp(%q, %q))}`, newer, older)).Output()
		if err != nil || strings.TrimSpace(string(out)) != "1" {
			t.Errorf("rpm does not order %s after %s (vercmp %q, %v)", newer, older, out, err)
		}
	}
}

// requireTools skips the test where a tool (a command, or a file by its absolute path) is
// missing, except in CI, where that is a failure.
func requireTools(t *testing.T, tools ...string) {
	t.Helper()
	for _, tool := range tools {
		find := exec.LookPath
		if filepath.IsAbs(tool) {
			find = func(p string) (string, error) { _, err := os.Stat(p); return p, err }
		}
		if _, err := find(tool); err != nil {
			if os.Getenv("CI") == "true" {
				t.Fatalf("%s is missing: .ci/run installs it (Debian packages man-db, rpm, rpmlint, bash-completion, ansible)", tool)
			}
			t.Skipf("%s is missing (Debian packages man-db, rpm, rpmlint, bash-completion, ansible): %v", tool, err)
		}
	}
}

// The version build.sh takes from git, in a clone whose history gets tags as a release would:
// the tag itself on a tagged commit, <tag>+dev.<time>.<commit> after it, a pre-release's '-'
// turned into '~', and a VERSION= neither dpkg nor rpm takes refused.
func TestPackageVersionFromGit(t *testing.T) {
	requireTools(t, "git")
	root, err := fixture.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	clone := filepath.Join(t.TempDir(), "clone")
	git := func(args ...string) string {
		t.Helper()
		cmd := exec.Command("git", args...)
		cmd.Dir = clone
		cmd.Env = append(os.Environ(), "GIT_AUTHOR_NAME=t", "GIT_AUTHOR_EMAIL=t@t.example", "GIT_COMMITTER_NAME=t", "GIT_COMMITTER_EMAIL=t@t.example",
			"GIT_COMMITTER_DATE=2026-12-24T10:00:00Z")
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("git %v: %v\n%s", args, err, out)
		}
		return strings.TrimSpace(string(out))
	}
	if out, err := exec.Command("git", "clone", "-q", "--no-tags", root, clone).CombinedOutput(); err != nil {
		t.Fatalf("git clone: %v\n%s", err, out)
	}
	version := func(env ...string) (string, error) {
		cmd := exec.Command("packaging/build.sh", "--version")
		cmd.Dir = clone
		cmd.Env = append(os.Environ(), env...)
		out, err := cmd.CombinedOutput()
		return strings.TrimSpace(string(out)), err
	}
	want := func(v string, env ...string) {
		t.Helper()
		if got, err := version(env...); err != nil || got != v {
			t.Errorf("build.sh --version (%v) = %q, %v; want %q", env, got, err, v)
		}
	}

	git("tag", "v1.2.0")
	want("1.2.0", "VERSION=")
	git("commit", "-q", "--allow-empty", "-m", "after 1.2.0")
	want("1.2.0+dev.20261224100000."+git("rev-parse", "--short=12", "HEAD"), "VERSION=")
	git("tag", "v1.3.0-rc.1")
	want("1.3.0~rc.1", "VERSION=")
	want("1.3.0", "VERSION=1.3.0")
	if got, err := version("VERSION=1.3.0-1"); err == nil {
		t.Errorf("build.sh took VERSION=1.3.0-1 (%q): rpm's Version cannot hold a '-'", got)
	}
}
