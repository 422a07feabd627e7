package securitytest

import (
	"crypto/rand"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"aead.dev/minisign"
)

// A manifest signed by the minisign CLI, in either of its signature formats, is accepted.
func TestMinisignCLISignatureAccepted(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.writeConfig()
	manifest := filepath.Join(e.site, "manifest.json")

	// The default, pre-hashed format, with a trusted comment of the publisher's own.
	e.release("1.0.0", v100)
	mustRun(t, nil, "minisign", "-S", "-s", e.key.sec, "-m", manifest, "-x", manifest+".minisig", "-t", "sd-agent 1.0.0 from the release pipeline")
	if sig := readFile(t, manifest+".minisig"); !strings.Contains(sig, "trusted comment: sd-agent 1.0.0 from the release pipeline") {
		t.Fatalf("the signature is not the one minisign just wrote:\n%s", sig)
	}
	writeFile(t, filepath.Join(e.install, "agent.conf"), "token=local-only\n", 0o600)
	e.mustUpdate("1.0.0")
	e.assertInstalled(v100)

	// The legacy format (-l: the file itself is signed, not its hash).
	e.release("1.1.0", v110)
	mustRun(t, nil, "minisign", "-S", "-l", "-s", e.key.sec, "-m", manifest, "-x", manifest+".minisig")
	e.mustUpdate("1.1.0")
	e.assertInstalled(v110)
}

// A manifest signed by `sdupdate release --sign-key` passes `minisign -V`, also when minisign
// insists on a pre-hashed signature; a manifest changed after signing does not.
func TestSdupdateSignatureVerifiedByMinisignCLI(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.writeConfig()
	e.release("1.0.0", v100, "--expires", "30d")
	manifest := filepath.Join(e.site, "manifest.json")
	if !strings.Contains(readFile(t, manifest), `"expires"`) {
		t.Errorf("--expires 30d wrote no expires field:\n%s", readFile(t, manifest))
	}
	for _, extra := range [][]string{nil, {"-H"}} {
		args := append([]string{"-V", "-m", manifest, "-p", e.key.pub}, extra...)
		out := mustRun(t, nil, "minisign", args...)
		if !strings.Contains(out, "Signature and comment signature verified") {
			t.Errorf("minisign %s:\n%s", strings.Join(args, " "), out)
		}
	}

	data := []byte(readFile(t, manifest))
	data[len(data)-2] = ' ' // the closing brace
	writeFile(t, manifest, string(data), 0o644)
	out, err := exec.Command("minisign", "-V", "-m", manifest, "-p", e.key.pub).CombinedOutput()
	if err == nil {
		t.Errorf("minisign -V accepted a manifest changed after signing:\n%s", out)
	}
}

// An encrypted secret key made by the minisign CLI signs releases with the password from
// SDUPDATE_SIGN_PASSWORD; a wrong or missing password publishes nothing.
func TestEncryptedSigningKey(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	const password = "correct horse battery staple"
	enc := encryptedKey(t, e.keys, password)
	e.cfg.publicKeys = []string{enc.line}
	e.writeConfig()
	src := filepath.Join(e.src, "1.0.0")
	for name, content := range map[string]string{"agent.py": "print('signed with an encrypted key')\n"} {
		writeFile(t, filepath.Join(src, name), content, 0o644)
	}
	release := func(env ...string) result {
		return e.sdupdateEnv(env, "release", "--from", src, "--version", "1.0.0", "--out", e.site, "--sign-key", enc.sec)
	}
	nothingPublished := func(what string) {
		t.Helper()
		if entries, _ := os.ReadDir(e.site); len(entries) != 0 {
			var names []string
			for _, d := range entries {
				names = append(names, d.Name())
			}
			t.Errorf("%s: the site holds %v, want nothing", what, names)
		}
	}

	r := release("SDUPDATE_SIGN_PASSWORD=not the password")
	if r.code != 1 || !strings.Contains(r.stderr, "wrong password") {
		t.Errorf("wrong password: exit %d, want 1 and a message saying so\n%s", r.code, r.output())
	}
	nothingPublished("wrong password")

	r = release()
	if r.code == 0 || !strings.Contains(r.stderr, "SDUPDATE_SIGN_PASSWORD") {
		t.Errorf("no password and no terminal: exit %d, want a failure naming SDUPDATE_SIGN_PASSWORD\n%s", r.code, r.output())
	}
	nothingPublished("no password")

	r = release("SDUPDATE_SIGN_PASSWORD=" + password)
	if r.code != 0 {
		t.Fatalf("release with the password: exit %d\n%s", r.code, r.output())
	}
	mustRun(t, nil, "minisign", "-V", "-m", filepath.Join(e.site, "manifest.json"), "-p", enc.pub)
	e.mustUpdate("1.0.0")
	if got := readFile(t, filepath.Join(e.install, "agent.py")); got != "print('signed with an encrypted key')\n" {
		t.Errorf("agent.py holds %q", got)
	}
}

// encryptedKey makes a password-protected key with `minisign -G`, the password given on stdin;
// should a minisign refuse a password that is not typed, the key is made with the library
// minisign's format comes from.
func encryptedKey(t *testing.T, dir, password string) keyPair {
	t.Helper()
	k := keyPair{pub: filepath.Join(dir, "encrypted.pub"), sec: filepath.Join(dir, "encrypted.key")}
	cmd := exec.Command("minisign", "-G", "-p", k.pub, "-s", k.sec)
	cmd.Stdin = strings.NewReader(password + "\n" + password + "\n")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Logf("minisign -G with the password on stdin failed (%v), making the key with aead.dev/minisign:\n%s", err, out)
		pub, priv, err := minisign.GenerateKey(rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		sec, err := minisign.EncryptKey(password, priv)
		if err != nil {
			t.Fatal(err)
		}
		pubText, _ := pub.MarshalText()
		writeFile(t, k.sec, string(sec)+"\n", 0o600)
		writeFile(t, k.pub, "untrusted comment: minisign public key\n"+string(pubText)+"\n", 0o644)
	}
	if !minisign.IsEncrypted([]byte(readFile(t, k.sec))) {
		t.Fatalf("%s is not an encrypted key", k.sec)
	}
	k.line = pubLine(t, k.pub)
	return k
}
