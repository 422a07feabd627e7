package sign

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"aead.dev/minisign"
	"golang.org/x/crypto/blake2b"
	"golang.org/x/crypto/scrypt"

	"github.com/sdupdate/sdupdate/internal/need"
)

func newKey(t *testing.T) (minisign.PublicKey, minisign.PrivateKey) {
	t.Helper()
	pub, priv, err := minisign.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	return pub, priv
}

func newVerifier(t *testing.T, keys ...minisign.PublicKey) *Verifier {
	t.Helper()
	var texts []string
	for _, k := range keys {
		texts = append(texts, k.String())
	}
	v, err := NewVerifier(texts)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

var manifestJSON = []byte(`{"version":"1.2.0","files":[{"name":"agent.py","sha256":"` + strings.Repeat("ab", 32) + `","size":1}]}` + "\n")

func TestVerifyKeyRotation(t *testing.T) {
	oldPub, oldPriv := newKey(t)
	newPub, newPriv := newKey(t)
	v := newVerifier(t, oldPub, newPub)
	for name, priv := range map[string]minisign.PrivateKey{"old key": oldPriv, "new key": newPriv} {
		sig := Sign(priv, manifestJSON, TrustedComment("manifest.json", time.Now()))
		if err := v.Verify(manifestJSON, sig); err != nil {
			t.Errorf("signed by the %s: %v", name, err)
		}
	}
	// After the rotation is complete, the old key no longer counts.
	onlyNew := newVerifier(t, newPub)
	if err := onlyNew.Verify(manifestJSON, Sign(oldPriv, manifestJSON, "x")); err == nil {
		t.Error("a retired key was still trusted")
	}
}

func TestVerifyUntrustedKey(t *testing.T) {
	pub1, _ := newKey(t)
	pub2, _ := newKey(t)
	_, stranger := newKey(t)
	v := newVerifier(t, pub1, pub2)
	err := v.Verify(manifestJSON, Sign(stranger, manifestJSON, "x"))
	if err == nil {
		t.Fatal("accepted a signature by an untrusted key")
	}
	for _, want := range []string{"signed by key " + KeyID(stranger.ID()), "not a trusted public key", KeyID(pub1.ID()), KeyID(pub2.ID())} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not contain %q", err, want)
		}
	}
}

func TestVerifyModifiedMessage(t *testing.T) {
	pub, priv := newKey(t)
	v := newVerifier(t, pub)
	sig := Sign(priv, manifestJSON, "x")
	for desc, msg := range map[string][]byte{
		"one byte changed": bytes.Replace(manifestJSON, []byte("1.2.0"), []byte("1.2.1"), 1),
		"truncated":        manifestJSON[:len(manifestJSON)-1],
		"extended":         append(append([]byte{}, manifestJSON...), ' '),
		"empty":            nil,
	} {
		err := v.Verify(msg, sig)
		if err == nil || !strings.Contains(err.Error(), "does not match: the signed file was modified or corrupted") {
			t.Errorf("%s: got %v", desc, err)
		}
	}
}

func TestVerifyTamperedTrustedComment(t *testing.T) {
	pub, priv := newKey(t)
	v := newVerifier(t, pub)
	sig := Sign(priv, manifestJSON, "timestamp:1700000000\tfile:manifest.json\thashed")
	tampered := bytes.Replace(sig, []byte("timestamp:1700000000"), []byte("timestamp:1900000000"), 1)
	if bytes.Equal(sig, tampered) {
		t.Fatal("test did not change the signature")
	}
	err := v.Verify(manifestJSON, tampered)
	if err == nil || !strings.Contains(err.Error(), "does not cover its trusted comment") {
		t.Errorf("got %v", err)
	}
}

func TestVerifyMalformedSignature(t *testing.T) {
	pub, priv := newKey(t)
	v := newVerifier(t, pub)
	good := Sign(priv, manifestJSON, "x")
	lines := strings.SplitAfter(string(good), "\n")
	flip := []byte(lines[1])
	flip[5] = '!' // not base64
	cases := map[string][]byte{
		"empty":               nil,
		"garbage":             []byte("this is not a signature\n"),
		"html error page":     []byte("<html>\n<body>404</body>\n</html>\n"),
		"first two lines":     []byte(lines[0] + lines[1]),
		"truncated mid-file":  good[:len(good)/2],
		"bad base64":          []byte(lines[0] + string(flip) + lines[2] + lines[3]),
		"short signature":     []byte(lines[0] + "RWQAAA==\n" + lines[2] + lines[3]),
		"no untrusted prefix": []byte("comment\n" + lines[1] + lines[2] + lines[3]),
	}
	for desc, sig := range cases {
		err := v.Verify(manifestJSON, sig)
		if err == nil || !strings.HasPrefix(err.Error(), "malformed signature file") {
			t.Errorf("%s: got %v", desc, err)
		}
	}
}

func TestVerifyLegacyUnhashedSignature(t *testing.T) {
	pub, priv := newKey(t)
	sig := minisign.SignWithComments(priv, manifestJSON, "timestamp:1", "legacy")
	if err := newVerifier(t, pub).Verify(manifestJSON, sig); err != nil {
		t.Errorf("legacy (Ed) signature: %v", err)
	}
	if err := newVerifier(t, pub).Verify(append([]byte("x"), manifestJSON...), sig); err == nil {
		t.Error("legacy signature of another message accepted")
	}
}

func TestNewVerifier(t *testing.T) {
	pub, _ := newKey(t)
	file, _ := pub.MarshalText()
	for desc, keys := range map[string][]string{
		"base64 line":        {pub.String()},
		"whole .pub file":    {string(file) + "\n"},
		"surrounding spaces": {"  " + pub.String() + "\n"},
	} {
		v, err := NewVerifier(keys)
		if err != nil {
			t.Errorf("%s: %v", desc, err)
			continue
		}
		if ids := v.KeyIDs(); len(ids) != 1 || ids[0] != KeyID(pub.ID()) {
			t.Errorf("%s: key ids %v", desc, ids)
		}
	}
}

func TestNewVerifierRefuses(t *testing.T) {
	pub, _ := newKey(t)
	if _, err := NewVerifier(nil); err == nil {
		t.Error("no keys accepted")
	}
	cases := map[string]string{
		"garbage":         "not-a-key",
		"truncated":       pub.String()[:20],
		"secret key":      "RWQAAEIyAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA1+q8BK+24etYM3y7mMYKVsfcqS6UCK+p4Wdh0ALJB5owvblvAISSkuEnLQqdCAB6v7YI2ikAjpdw7x3XgIhAeUo0QiFjJmnjAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
		"empty":           "",
		"wrong algorithm": "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
	}
	for desc, bad := range cases {
		_, err := NewVerifier([]string{pub.String(), bad})
		if err == nil || !strings.HasPrefix(err.Error(), "public key #2 ") || !strings.Contains(err.Error(), "malformed") {
			t.Errorf("%s: got %v", desc, err)
		}
	}
}

func TestKeyIDMatchesMinisign(t *testing.T) {
	// Key ids print as minisign prints them: upper-case hex of the little-endian id.
	if got := KeyID(0xEBE1B6AF04BCEAD7); got != "EBE1B6AF04BCEAD7" {
		t.Errorf("KeyID = %s", got)
	}
}

func TestSignReplacesLineBreaksInTrustedComment(t *testing.T) {
	pub, priv := newKey(t)
	sig := Sign(priv, manifestJSON, "a\nb\r\nc")
	var parsed minisign.Signature
	if err := parsed.UnmarshalText(sig); err != nil {
		t.Fatal(err)
	}
	if parsed.TrustedComment != "a b c" {
		t.Errorf("trusted comment = %q", parsed.TrustedComment)
	}
	if parsed.Algorithm != minisign.HashEdDSA {
		t.Errorf("algorithm = %x, want pre-hashed (ED)", parsed.Algorithm)
	}
	if err := newVerifier(t, pub).Verify(manifestJSON, sig); err != nil {
		t.Error(err)
	}
}

func TestTrustedComment(t *testing.T) {
	got := TrustedComment("manifest.json", time.Unix(1795586557, 0))
	if want := "timestamp:1795586557\tfile:manifest.json\thashed"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
}

func writeFile(t *testing.T, path string, data []byte) {
	t.Helper()
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
}

func TestLoadSecretKeyUnencrypted(t *testing.T) {
	pub, priv := newKey(t)
	text, err := priv.MarshalText()
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "sec")
	writeFile(t, path, text)
	key, err := LoadSecretKey(path, func() (string, error) {
		t.Error("asked for a password for an unencrypted key")
		return "", errors.New("no")
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := newVerifier(t, pub).Verify(manifestJSON, Sign(key, manifestJSON, "x")); err != nil {
		t.Error(err)
	}
}

// encryptKeyCheaply writes priv in minisign's encrypted secret key format, as EncryptKey does,
// but with the smallest scrypt cost minisign accepts (ops 2^15, mem 16 MiB, which minisign maps
// to N=1024, r=8, p=1) instead of 1 GiB, so that wrong-password cases run in milliseconds.
func encryptKeyCheaply(t *testing.T, password string, priv minisign.PrivateKey) []byte {
	t.Helper()
	const ops, mem = 1 << 15, 1 << 24
	text, err := priv.MarshalText() // unencrypted: id at 54..62, key at 62..126
	if err != nil {
		t.Fatal(err)
	}
	raw, err := base64.StdEncoding.DecodeString(strings.SplitN(string(text), "\n", 2)[1])
	if err != nil || len(raw) != 158 {
		t.Fatalf("unexpected secret key encoding (%d bytes): %v", len(raw), err)
	}
	var b [158]byte
	copy(b[:6], raw[:6])
	binary.LittleEndian.PutUint16(b[2:], 0x6353) // KDF "Sc": scrypt
	salt := b[6:38]
	if _, err := rand.Read(salt); err != nil {
		t.Fatal(err)
	}
	binary.LittleEndian.PutUint64(b[38:], ops)
	binary.LittleEndian.PutUint64(b[46:], mem)
	plain := raw[54:126] // key id || ed25519 key
	msg := append([]byte{0x45, 0x64}, plain...)
	checksum := blake2b.Sum256(msg)
	stream, err := scrypt.Key([]byte(password), salt, 1024, 8, 1, 104)
	if err != nil {
		t.Fatal(err)
	}
	ct := append(append([]byte{}, plain...), checksum[:]...)
	for i := range ct {
		ct[i] ^= stream[i]
	}
	copy(b[54:], ct)
	return []byte("untrusted comment: minisign encrypted secret key\n" + base64.StdEncoding.EncodeToString(b[:]) + "\n")
}

func TestLoadSecretKeyEncrypted(t *testing.T) {
	pub, priv := newKey(t)
	path := filepath.Join(t.TempDir(), "sec")
	writeFile(t, path, encryptKeyCheaply(t, "correct horse", priv))

	calls := 0
	key, err := LoadSecretKey(path, func() (string, error) { calls++; return "correct horse", nil })
	if err != nil {
		t.Fatal(err)
	}
	if calls != 1 {
		t.Errorf("password asked %d times", calls)
	}
	if err := newVerifier(t, pub).Verify(manifestJSON, Sign(key, manifestJSON, "x")); err != nil {
		t.Error(err)
	}

	_, err = LoadSecretKey(path, func() (string, error) { return "wrong", nil })
	if err == nil || !strings.Contains(err.Error(), "wrong password") || !strings.Contains(err.Error(), path) {
		t.Errorf("wrong password: got %v", err)
	}
}

func TestLoadSecretKeyFromEncryptKey(t *testing.T) {
	if testing.Short() {
		t.Skip("minisign.EncryptKey uses scrypt with 1 GiB; twice takes seconds")
	}
	pub, priv := newKey(t)
	text, err := minisign.EncryptKey("correct horse", priv)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "sec")
	writeFile(t, path, text)
	t.Setenv("SDUPDATE_TEST_PW", "correct horse")
	key, err := LoadSecretKey(path, PasswordFromEnvOrTerminal("SDUPDATE_TEST_PW"))
	if err != nil {
		t.Fatal(err)
	}
	if err := newVerifier(t, pub).Verify(manifestJSON, Sign(key, manifestJSON, "x")); err != nil {
		t.Error(err)
	}
}

func TestLoadSecretKeyEncryptedWithoutPassword(t *testing.T) {
	// The password source fails before any key derivation, so this case is cheap.
	_, priv := newKey(t)
	text, err := priv.MarshalText()
	if err != nil {
		t.Fatal(err)
	}
	// Mark the key as scrypt-encrypted (KDF bytes 2..3 = "Sc"); the rest is not inspected
	// before the password is asked for.
	raw := []byte(strings.SplitN(string(text), "\n", 2)[1])
	enc := bytes.Replace(raw, []byte("RWQAAEIy"), []byte("RWRTY0Iy"), 1)
	if !minisign.IsEncrypted(enc) {
		t.Fatal("test key is not marked encrypted")
	}
	path := filepath.Join(t.TempDir(), "sec")
	writeFile(t, path, enc)
	_, err = LoadSecretKey(path, func() (string, error) { return "", errors.New("no terminal") })
	if err == nil || !strings.Contains(err.Error(), "no terminal") {
		t.Errorf("got %v", err)
	}
	_, err = LoadSecretKey(path, nil)
	if err == nil || !strings.Contains(err.Error(), "no password") {
		t.Errorf("nil password source: got %v", err)
	}
}

func TestLoadSecretKeyRefuses(t *testing.T) {
	dir := t.TempDir()
	if _, err := LoadSecretKey(filepath.Join(dir, "missing"), nil); err == nil || !strings.Contains(err.Error(), "cannot read secret key") {
		t.Errorf("missing file: got %v", err)
	}
	pub, _ := newKey(t)
	pubText, _ := pub.MarshalText()
	for desc, data := range map[string][]byte{"garbage": []byte("hello\n"), "public key": pubText, "empty": nil} {
		path := filepath.Join(dir, desc)
		writeFile(t, path, data)
		if _, err := LoadSecretKey(path, nil); err == nil || !strings.Contains(err.Error(), "not a minisign secret key") {
			t.Errorf("%s: got %v", desc, err)
		}
	}
}

func TestPasswordFromEnv(t *testing.T) {
	t.Setenv("SDUPDATE_TEST_PW", "s3cret")
	pw, err := PasswordFromEnvOrTerminal("SDUPDATE_TEST_PW")()
	if err != nil || pw != "s3cret" {
		t.Errorf("got %q, %v", pw, err)
	}
	t.Setenv("SDUPDATE_TEST_PW", "")
	pw, err = PasswordFromEnvOrTerminal("SDUPDATE_TEST_PW")()
	if err != nil || pw != "" {
		t.Errorf("set but empty: got %q, %v", pw, err)
	}
}

func TestPasswordWithoutEnvOrTerminal(t *testing.T) {
	noEnv := func(string) (string, bool) { return "", false }
	noTTY := func() (*os.File, error) { return nil, errors.New("open /dev/tty: no such device or address") }
	_, err := readPassword("SDUPDATE_SIGN_PASSWORD", noEnv, noTTY)
	if err == nil || !strings.Contains(err.Error(), "set SDUPDATE_SIGN_PASSWORD") {
		t.Errorf("got %v", err)
	}
	// A /dev/tty that is not a terminal (here: a plain file) is refused too, not read from.
	notTTY := func() (*os.File, error) { return os.CreateTemp(t.TempDir(), "tty") }
	_, err = readPassword("SDUPDATE_SIGN_PASSWORD", noEnv, notTTY)
	if err == nil || !strings.Contains(err.Error(), "is not a terminal") {
		t.Errorf("got %v", err)
	}
}

// minisignCLI returns the path of the minisign program. Without it the interop tests are
// skipped on a workstation but fail in CI, where they must run.
func minisignCLI(t *testing.T) string {
	t.Helper()
	return need.Program(t, "minisign", "minisign")
}

func run(t *testing.T, dir string, name string, args ...string) ([]byte, error) {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	cmd.Stdin = strings.NewReader("")
	return cmd.CombinedOutput()
}

func TestInteropMinisignSignsWeVerify(t *testing.T) {
	cli := minisignCLI(t)
	dir := t.TempDir()
	if out, err := run(t, dir, cli, "-G", "-W", "-p", "pub", "-s", "sec"); err != nil {
		t.Fatalf("minisign -G: %v\n%s", err, out)
	}
	writeFile(t, filepath.Join(dir, "manifest.json"), manifestJSON)
	pubFile, err := os.ReadFile(filepath.Join(dir, "pub"))
	if err != nil {
		t.Fatal(err)
	}
	// The configuration holds the second line of the .pub file.
	pubLine := strings.Split(strings.TrimSpace(string(pubFile)), "\n")[1]
	v, err := NewVerifier([]string{pubLine})
	if err != nil {
		t.Fatal(err)
	}

	for desc, flags := range map[string][]string{"default (pre-hashed)": nil, "legacy": {"-l"}} {
		args := append([]string{"-S", "-s", "sec", "-m", "manifest.json", "-t", "file:manifest.json"}, flags...)
		if out, err := run(t, dir, cli, args...); err != nil {
			t.Fatalf("%s: minisign -S: %v\n%s", desc, err, out)
		}
		sig, err := os.ReadFile(filepath.Join(dir, "manifest.json.minisig"))
		if err != nil {
			t.Fatal(err)
		}
		if err := v.Verify(manifestJSON, sig); err != nil {
			t.Errorf("%s: signature made by minisign refused: %v", desc, err)
		}
		if err := v.Verify(append([]byte(" "), manifestJSON...), sig); err == nil {
			t.Errorf("%s: minisign's signature accepted for another message", desc)
		}
	}

	// A secret key made by minisign -W loads without a password and signs for minisign.
	key, err := LoadSecretKey(filepath.Join(dir, "sec"), nil)
	if err != nil {
		t.Fatalf("loading minisign's unencrypted secret key: %v", err)
	}
	writeFile(t, filepath.Join(dir, "manifest.json.minisig"), Sign(key, manifestJSON, TrustedComment("manifest.json", time.Now())))
	if out, err := run(t, dir, cli, "-V", "-p", "pub", "-m", "manifest.json"); err != nil {
		t.Errorf("minisign -V refused our signature made with its key: %v\n%s", err, out)
	}
}

func TestInteropWeSignMinisignVerifies(t *testing.T) {
	cli := minisignCLI(t)
	dir := t.TempDir()
	pub, priv := newKey(t)
	pubText, _ := pub.MarshalText()
	writeFile(t, filepath.Join(dir, "pub"), append(pubText, '\n'))
	writeFile(t, filepath.Join(dir, "manifest.json"), manifestJSON)
	comment := TrustedComment("manifest.json", time.Unix(1795586557, 0))
	writeFile(t, filepath.Join(dir, "manifest.json.minisig"), Sign(priv, manifestJSON, comment))

	// -H: minisign must see a pre-hashed signature.
	out, err := run(t, dir, cli, "-V", "-H", "-p", "pub", "-m", "manifest.json")
	if err != nil {
		t.Fatalf("minisign -V refused our signature: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "Trusted comment: "+comment) {
		t.Errorf("minisign shows a different trusted comment:\n%s", out)
	}
	// The same check must fail once the file changes, or the test above proves nothing.
	writeFile(t, filepath.Join(dir, "manifest.json"), append(manifestJSON, '\n'))
	if out, err := run(t, dir, cli, "-V", "-p", "pub", "-m", "manifest.json"); err == nil {
		t.Errorf("minisign -V accepted a modified file:\n%s", out)
	}
}

func TestInteropEncryptedKeys(t *testing.T) {
	cli := minisignCLI(t)
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "manifest.json"), manifestJSON)

	// Our encrypted key file is one minisign can decrypt (it reads the password from stdin
	// when stdin is not a terminal) and sign with.
	pub, priv := newKey(t)
	writeFile(t, filepath.Join(dir, "sec"), encryptKeyCheaply(t, "correct horse", priv))
	cmd := exec.Command(cli, "-S", "-s", "sec", "-m", "manifest.json")
	cmd.Dir = dir
	cmd.Stdin = strings.NewReader("correct horse\n")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("minisign could not use our encrypted key: %v\n%s", err, out)
	}
	sig, err := os.ReadFile(filepath.Join(dir, "manifest.json.minisig"))
	if err != nil {
		t.Fatal(err)
	}
	if err := newVerifier(t, pub).Verify(manifestJSON, sig); err != nil {
		t.Errorf("signature made by minisign with our encrypted key: %v", err)
	}

	if testing.Short() {
		return // minisign's own encrypted keys use scrypt with 1 GiB
	}
	// An encrypted key made by minisign loads with its password.
	cmd = exec.Command(cli, "-G", "-p", "epub", "-s", "esec")
	cmd.Dir = dir
	cmd.Stdin = strings.NewReader("pw by cli\npw by cli\n")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("minisign -G: %v\n%s", err, out)
	}
	key, err := LoadSecretKey(filepath.Join(dir, "esec"), func() (string, error) { return "pw by cli", nil })
	if err != nil {
		t.Fatalf("loading minisign's encrypted key: %v", err)
	}
	writeFile(t, filepath.Join(dir, "manifest.json.minisig"), Sign(key, manifestJSON, "file:manifest.json"))
	if out, err := run(t, dir, cli, "-V", "-p", "epub", "-m", "manifest.json"); err != nil {
		t.Errorf("minisign -V refused our signature made with its encrypted key: %v\n%s", err, out)
	}
}
