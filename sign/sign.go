// Package sign owns manifest signatures in the minisign format, so that the minisign CLI can make
// and check them too: verifying against a list of trusted public keys (any one may sign, which
// is how keys are rotated), loading a publisher's secret key (encrypted or not), and signing.
//
// A minisign signature file has four lines:
//
//	untrusted comment: <anything; not signed>
//	base64(algorithm "ED"|"Ed" || key id || ed25519 signature of the message)
//	trusted comment: <text>
//	base64(ed25519 signature of (message signature || trusted comment))
//
// Both signatures are checked, so neither the file nor the trusted comment can be altered.
// Signatures made here are of the pre-hashed kind ("ED", BLAKE2b-512 of the message), which is
// what minisign 0.10 and later make by default; the older kind ("Ed") is still verified.
package sign

import (
	"bytes"
	"crypto/ed25519"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"

	"aead.dev/minisign"
	"golang.org/x/crypto/blake2b"
	"golang.org/x/term"
)

// DefaultPasswordEnv is the environment variable that holds the secret key's password.
const DefaultPasswordEnv = "SDUPDATE_SIGN_PASSWORD"

// Verifier checks signatures against a fixed list of trusted public keys.
type Verifier struct {
	keys []minisign.PublicKey
}

// NewVerifier parses each public key, given as the base64 line of a minisign .pub file
// ("RWQ…"); the whole file, with its untrusted comment line, is accepted too.
func NewVerifier(publicKeys []string) (*Verifier, error) {
	if len(publicKeys) == 0 {
		return nil, errors.New("no public key given")
	}
	v := &Verifier{}
	for i, text := range publicKeys {
		var key minisign.PublicKey
		if err := key.UnmarshalText([]byte(strings.TrimSpace(text))); err != nil {
			return nil, fmt.Errorf("public key #%d (%q) is malformed: %w", i+1, abbreviate(text), err)
		}
		v.keys = append(v.keys, key)
	}
	return v, nil
}

// KeyIDs returns the ids of the trusted keys, formatted as minisign prints them.
func (v *Verifier) KeyIDs() []string {
	ids := make([]string, len(v.keys))
	for i, k := range v.keys {
		ids[i] = KeyID(k.ID())
	}
	return ids
}

// Verify checks that signature (the contents of a .minisig file) is a valid signature of
// message by one of the trusted keys, trusted comment included. The error says which check
// failed: a malformed signature file, a key that is not trusted, or a signature that does not
// match the message.
func (v *Verifier) Verify(message, signature []byte) error {
	var sig minisign.Signature
	if err := sig.UnmarshalText(signature); err != nil {
		return fmt.Errorf("malformed signature file: %w", err)
	}
	var candidates []minisign.PublicKey
	for _, k := range v.keys {
		if k.ID() == sig.KeyID {
			candidates = append(candidates, k)
		}
	}
	if len(candidates) == 0 {
		return fmt.Errorf("signed by key %s, which is not a trusted public key (trusted: %s)",
			KeyID(sig.KeyID), strings.Join(v.KeyIDs(), ", "))
	}
	for _, k := range candidates {
		if minisign.Verify(k, message, signature) {
			return nil
		}
	}
	// minisign.Verify only says no; tell the two causes apart for the operator.
	if messageSignatureHolds(candidates[0], message, sig) {
		return fmt.Errorf("signature by key %s does not cover its trusted comment %q: the signature file was altered",
			KeyID(sig.KeyID), sig.TrustedComment)
	}
	return fmt.Errorf("signature by key %s does not match: the signed file was modified or corrupted", KeyID(sig.KeyID))
}

// messageSignatureHolds reports whether sig's message signature (not the trusted comment's)
// is valid for message.
func messageSignatureHolds(key minisign.PublicKey, message []byte, sig minisign.Signature) bool {
	raw, err := base64.StdEncoding.DecodeString(key.String())
	if err != nil || len(raw) != 2+8+ed25519.PublicKeySize {
		return false
	}
	if sig.Algorithm == minisign.HashEdDSA {
		sum := blake2b.Sum512(message)
		message = sum[:]
	}
	return ed25519.Verify(ed25519.PublicKey(raw[10:]), message, sig.Signature[:])
}

// KeyID formats a key id the way minisign prints it (upper-case hex).
func KeyID(id uint64) string {
	return strings.ToUpper(strconv.FormatUint(id, 16))
}

// LoadSecretKey reads a minisign secret key file. password is called only when the key is
// encrypted; keys made with `minisign -G -W` are not.
func LoadSecretKey(path string, password func() (string, error)) (minisign.PrivateKey, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return minisign.PrivateKey{}, fmt.Errorf("cannot read secret key: %w", err)
	}
	key, err := ParseSecretKey(data, password)
	if err != nil {
		return minisign.PrivateKey{}, fmt.Errorf("secret key %s: %w", path, err)
	}
	return key, nil
}

// ParseSecretKey decodes the contents of a minisign secret key file, decrypting it with the
// password from password when it is encrypted (and only then calling it).
func ParseSecretKey(data []byte, password func() (string, error)) (minisign.PrivateKey, error) {
	data = bytes.TrimSpace(data)
	if !minisign.IsEncrypted(data) {
		var key minisign.PrivateKey
		if err := key.UnmarshalText(data); err != nil {
			return minisign.PrivateKey{}, fmt.Errorf("not a minisign secret key: %w", err)
		}
		return key, nil
	}
	if password == nil {
		return minisign.PrivateKey{}, errors.New("the key is encrypted and no password was provided")
	}
	pw, err := password()
	if err != nil {
		return minisign.PrivateKey{}, fmt.Errorf("cannot get the password: %w", err)
	}
	key, err := minisign.DecryptKey(pw, data)
	if err != nil {
		return minisign.PrivateKey{}, fmt.Errorf("cannot decrypt (wrong password or damaged key file): %w", err)
	}
	return key, nil
}

// PasswordFromEnvOrTerminal returns a password source for LoadSecretKey: the value of envVar
// when it is set (even to ""), otherwise a prompt on /dev/tty, which works even when stdin and
// stdout are redirected. With neither, the error says how to provide one.
func PasswordFromEnvOrTerminal(envVar string) func() (string, error) {
	return func() (string, error) {
		return readPassword(envVar, os.LookupEnv, openTTY)
	}
}

func openTTY() (*os.File, error) { return os.OpenFile("/dev/tty", os.O_RDWR, 0) }

func readPassword(envVar string, lookup func(string) (string, bool), open func() (*os.File, error)) (string, error) {
	if pw, ok := lookup(envVar); ok {
		return pw, nil
	}
	tty, err := open()
	if err != nil {
		return "", fmt.Errorf("the secret key is encrypted: set %s to its password or run in a terminal to be asked for it (%v)", envVar, err)
	}
	defer tty.Close()
	if !term.IsTerminal(int(tty.Fd())) {
		return "", fmt.Errorf("the secret key is encrypted: set %s to its password (%s is not a terminal)", envVar, tty.Name())
	}
	if _, err := io.WriteString(tty, "Password for the minisign secret key: "); err != nil {
		return "", fmt.Errorf("cannot prompt on %s: %w", tty.Name(), err)
	}
	pw, err := term.ReadPassword(int(tty.Fd()))
	_, _ = io.WriteString(tty, "\n") // the echo of Enter was suppressed
	if err != nil {
		return "", fmt.Errorf("cannot read the password from %s: %w", tty.Name(), err)
	}
	return string(pw), nil
}

// TrustedComment returns the trusted comment minisign itself writes for a file:
// "timestamp:<unix seconds>\tfile:<name>\thashed".
func TrustedComment(fileName string, now time.Time) string {
	return "timestamp:" + strconv.FormatInt(now.Unix(), 10) + "\tfile:" + fileName + "\thashed"
}

// Sign returns the contents of a .minisig file for message, pre-hashed as minisign does by
// default. A line break in trustedComment would break the file's format, so each one becomes
// a space.
func Sign(key minisign.PrivateKey, message []byte, trustedComment string) []byte {
	trustedComment = strings.NewReplacer("\r\n", " ", "\n", " ", "\r", " ").Replace(trustedComment)
	r := minisign.NewReader(bytes.NewReader(message))
	_, _ = io.Copy(io.Discard, r) // reading from a bytes.Reader cannot fail
	return r.SignWithComments(key, trustedComment, "signature from minisign secret key")
}

// abbreviate keeps a bad key readable in an error message.
func abbreviate(s string) string {
	s = strings.TrimSpace(s)
	if len(s) > 60 {
		return s[:60] + "…"
	}
	return s
}
