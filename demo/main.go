// Command demo shows sdupdate's main job with nothing to set up: it builds sdupdate, makes a
// sample 1.0.0 install and a signed 1.1.0 release in a temp dir, updates, shows the snapshot and
// rolls back. Run it from the repository root: go run ./demo
//
// As root on a machine that can boot systemd in a namespace, it runs the same story under a real
// systemd (see sandbox.go); otherwise, or with -local, it runs in the temp dir with Unit= empty.
package main

import (
	"bytes"
	"crypto/rand"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"aead.dev/minisign"

	"github.com/sdupdate/sdupdate/internal/fixture"
)

func main() {
	local := flag.Bool("local", false, "run in a temp dir even as root (no systemd sandbox)")
	keep := flag.Bool("keep", false, "keep the temp dir for a look afterwards")
	flag.Parse()
	if err := run(*local, *keep); err != nil {
		fmt.Fprintf(os.Stderr, "demo: %v\n", err)
		os.Exit(1)
	}
}

// demo is the scratch world: a publisher's build directories and site, and one server.
type demo struct {
	dir    string // everything lives here
	bin    string // the freshly built sdupdate
	site   string // what the publisher serves
	key    string // minisign secret key (unencrypted, demo only)
	pubkey string // the public key line for PublicKey=
}

func run(local, keep bool) error {
	dir, err := os.MkdirTemp("", "sdupdate-demo-")
	if err != nil {
		return err
	}
	if keep {
		fmt.Printf("# working in %s (kept)\n", dir)
	} else {
		defer os.RemoveAll(dir)
	}
	d := &demo{dir: dir, site: filepath.Join(dir, "site")}
	step("building sdupdate")
	d.bin = filepath.Join(dir, "sdupdate")
	if out, err := exec.Command("go", "build", "-o", d.bin, "./cmd/sdupdate").CombinedOutput(); err != nil {
		return fmt.Errorf("cannot build ./cmd/sdupdate (run the demo from the repository root): %v\n%s", err, out)
	}
	if err := d.makeKey(); err != nil {
		return err
	}
	if !local && os.Geteuid() == 0 {
		if err := sandboxAvailable(); err == nil {
			return d.runSandbox()
		} else {
			fmt.Printf("# no systemd sandbox here (%v); running in a temp dir instead\n", err)
		}
	} else if !local {
		fmt.Println("# not root: running in a temp dir with Unit= empty (as root, the demo boots a real systemd)")
	}
	return d.runLocal()
}

func step(format string, args ...any) {
	fmt.Printf("\n\033[1m== %s\033[0m\n", fmt.Sprintf(format, args...))
}

// makeKey creates the publisher's signing key pair.
func (d *demo) makeKey() error {
	pub, priv, err := minisign.GenerateKey(rand.Reader)
	if err != nil {
		return fmt.Errorf("cannot generate a signing key: %w", err)
	}
	text, err := priv.MarshalText()
	if err != nil {
		return err
	}
	d.key = filepath.Join(d.dir, "publisher.key")
	if err := os.WriteFile(d.key, text, 0o600); err != nil {
		return err
	}
	pubText, err := pub.MarshalText()
	if err != nil {
		return err
	}
	d.pubkey = string(pubText)
	return nil
}

// agentVersion writes a sample agent: a script that prints its version and keeps running, like a
// daemon. A broken one exits at once with an error. The end-to-end tests use the same agent.
func (d *demo) agentVersion(version string, broken bool) (string, error) {
	src := filepath.Join(d.dir, "build", version)
	return src, fixture.WriteAgent(src, fixture.Agent{Version: version, Broken: broken})
}

// publish releases version, signed, into the site.
func (d *demo) publish(version string, broken bool) error {
	src, err := d.agentVersion(version, broken)
	if err != nil {
		return err
	}
	_, err = d.sh("sdupdate", "release", "--from", src, "--version", version, "--out", d.site, "--sign-key", d.key, "--expires", "30d")
	return err
}

// sh runs the freshly built sdupdate (shown as "sdupdate") and prints the command and its output.
func (d *demo) sh(name string, args ...string) (int, error) {
	fmt.Printf("$ %s %s\n", name, strings.Join(args, " "))
	path := name
	if name == "sdupdate" {
		path = d.bin
	}
	cmd := exec.Command(path, args...)
	var out bytes.Buffer
	cmd.Stdout = io.MultiWriter(os.Stdout, &out)
	cmd.Stderr = os.Stdout
	err := cmd.Run()
	if ee, ok := err.(*exec.ExitError); ok {
		fmt.Printf("(exit status %d)\n", ee.ExitCode())
		return ee.ExitCode(), nil
	}
	if err != nil {
		return -1, fmt.Errorf("cannot run %s: %w", name, err)
	}
	return 0, nil
}

func (d *demo) runLocal() error {
	install := filepath.Join(d.dir, "server", "opt", "sd-agent")
	conf := filepath.Join(d.dir, "server", "sdupdate.conf")
	if err := os.MkdirAll(install, 0o755); err != nil {
		return err
	}
	config := fmt.Sprintf(`[Source]
ManifestURL=file://%s/manifest.json
PublicKey=%s

[Install]
Directory=%s
StateDirectory=%s

[Agent]
# No systemd here: sdupdate tells you to restart the agent yourself.
Unit=
`, d.site, strings.TrimSpace(lastLine(d.pubkey)), install, filepath.Join(d.dir, "server", "state"))
	if err := os.WriteFile(conf, []byte(config), 0o644); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(install, "sd-agent.cfg"), []byte("api_key = secret\n"), 0o600); err != nil {
		return err
	}
	c := "--config=" + conf

	step("the publisher releases 1.0.0, signed with minisign")
	if err := d.publish("1.0.0", false); err != nil {
		return err
	}
	step("the server installs it (an untracked sd-agent.cfg is already there and stays untouched)")
	d.sh("sdupdate", c, "update")
	step("the publisher releases 1.1.0")
	if err := d.publish("1.1.0", false); err != nil {
		return err
	}
	step("is there an update? (exit 100 = yes)")
	d.sh("sdupdate", c, "check")
	step("what would change")
	d.sh("sdupdate", c, "update", "--dry-run")
	step("update: only changed files are downloaded, verified, then swapped in after a snapshot")
	d.sh("sdupdate", c, "update")
	d.sh("cat", filepath.Join(install, "VERSION"))
	step("the snapshots")
	d.sh("sdupdate", c, "snapshots")
	step("roll back to 1.0.0")
	d.sh("sdupdate", c, "rollback")
	d.sh("cat", filepath.Join(install, "VERSION"))
	d.sh("sdupdate", c, "verify")
	step("status")
	d.sh("sdupdate", c, "status")
	return nil
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}
