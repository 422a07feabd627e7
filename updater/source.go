package updater

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"net/url"
	"strings"

	"github.com/sirupsen/logrus"

	"github.com/sdupdate/sdupdate/delta"
	"github.com/sdupdate/sdupdate/fetch"
	"github.com/sdupdate/sdupdate/logging"
	"github.com/sdupdate/sdupdate/manifest"
)

// fetched is a manifest that passed every check: signature over the exact bytes, parse and
// validation, expiry.
type fetched struct {
	m       *manifest.Manifest
	raw     []byte
	sum     string // sha256 of raw
	head    bool   // m holds no files: raw are bytes parsed whole before (see fetchManifest)
	baseURL string // where files are fetched from, as a directory URL
}

// offered is what the version record may keep of f: the sum of bytes parsed whole in the modern
// form.
func (f *fetched) offered() string {
	if f.m.Legacy {
		return ""
	}
	return f.sum
}

// fetchManifest fetches, verifies and parses the manifest. Nothing past the manifest (and its
// signature) is fetched before this returns successfully.
//
// parsedBefore is the sha256 of signed manifest bytes this sdupdate parsed whole before ("" if
// none): the version record keeps it for the installed version. The same bytes fetched again —
// an up-to-date run — have their signature checked and their head (version, base_url, expires,
// the syntax of the whole) parsed as always, but not their files a second time: at 5,000
// entries that parse was a third of the run.
func (e *Engine) fetchManifest(ctx context.Context, log *logrus.Entry, parsedBefore string) (*fetched, error) {
	c := e.Config
	// shown is what messages name: a ManifestURL may carry a password (basic auth), and
	// messages end up in the journal and in `status`.
	shown := fetch.Redact(c.ManifestURL)
	log = log.WithField(logging.FieldPhase, logging.PhaseCheck)
	raw, err := e.verifiedManifest(ctx, log, shown)
	if err != nil {
		return nil, err
	}
	sum := sha256.Sum256(raw)
	f := &fetched{raw: raw, sum: hex.EncodeToString(sum[:])}
	f.head = parsedBefore != "" && f.sum == parsedBefore
	m, err := parseFetched(raw, f.head)
	if err != nil {
		return nil, fmt.Errorf("refusing manifest %s: %w", shown, err)
	}
	if m.Legacy {
		if !c.AllowUnsigned {
			return nil, fmt.Errorf("refusing manifest %s: it is in the legacy md5 form, accepted only with AllowUnsigned=yes", shown)
		}
		log.Warn("legacy manifest: files are checked with md5, which is weak against deliberate tampering; publish a sha256 manifest with `sdupdate release`")
	}
	if err := m.CheckExpiry(e.now()); err != nil {
		return nil, fmt.Errorf("refusing manifest %s: %w", shown, err)
	}
	base := c.BaseURL
	if base == "" {
		base, err = fetch.ResolveReference(c.ManifestURL, m.BaseURL)
		if err != nil {
			return nil, fmt.Errorf("refusing manifest %s: base_url %q: %w", shown, m.BaseURL, err)
		}
	}
	if err := sameSchemeFamily(c.ManifestURL, base); err != nil {
		return nil, fmt.Errorf("refusing manifest %s: %w", shown, err)
	}
	f.m, f.baseURL = m, base
	return f, nil
}

func parseFetched(raw []byte, head bool) (*manifest.Manifest, error) {
	if head {
		return manifest.ParseHead(raw)
	}
	return manifest.Parse(raw)
}

// verifiedManifest returns the manifest's bytes, their signature checked when a PublicKey= is
// configured. A signed manifest is fetched compressed when the server has manifest.json.zst;
// the signature is over the uncompressed bytes, so a compressed copy that is broken, or stale
// beside a manifest put back by hand, costs the plain fetch and nothing else. Unsigned, nothing
// could tell a stale copy, so the plain manifest is the only one fetched.
func (e *Engine) verifiedManifest(ctx context.Context, log *logrus.Entry, shown string) ([]byte, error) {
	c := e.Config
	if c.AllowUnsigned {
		log.Warn("AllowUnsigned=yes: a manifest without a signature is accepted; anyone who can change the server's responses could then choose what is installed")
	}
	var raw []byte
	var sigc <-chan fetchedSig
	if e.Verifier != nil {
		// The signature travels while the manifest does: one round trip less on every run.
		sctx, cancel := context.WithCancel(ctx)
		defer cancel() // a run that stops before it needs the signature drops its fetch
		sigc = e.fetchSignature(sctx)
		raw = e.compressedManifest(ctx, log)
	}
	compressed := raw != nil
	plain := func() error {
		var err error
		raw, err = e.Fetcher.Get(ctx, c.ManifestURL, manifest.MaxSize)
		compressed = false
		return err // names the URL and the cause already
	}
	if !compressed {
		if err := plain(); err != nil {
			return nil, err
		}
	}
	if e.Verifier == nil {
		return raw, nil
	}
	got := <-sigc
	sig, err := got.sig, got.err
	switch {
	case err != nil && c.AllowUnsigned && isNotFound(err):
		log.Warn("the manifest has no signature; accepted because AllowUnsigned=yes")
		if compressed { // what is accepted unsigned is the manifest itself, not a copy
			if err := plain(); err != nil {
				return nil, err
			}
		}
		return raw, nil
	case err != nil:
		return nil, fmt.Errorf("refusing manifest %s: cannot fetch its signature %s.minisig (a PublicKey= is configured, so it must be signed): %w", shown, shown, err)
	}
	err = e.Verifier.Verify(raw, sig)
	if err != nil && compressed {
		log.Warn("the compressed manifest does not match the signature; fetching it uncompressed")
		if err := plain(); err != nil {
			return nil, err
		}
		err = e.Verifier.Verify(raw, sig)
	}
	if err != nil {
		return nil, fmt.Errorf("refusing manifest %s: signature check failed: %w", shown, err)
	}
	log.Debug("manifest signature verified")
	return raw, nil
}

// fetchedSig is the outcome of fetching the manifest's signature.
type fetchedSig struct {
	sig []byte
	err error
}

// fetchSignature fetches <ManifestURL>.minisig in the background; the channel gives its outcome.
func (e *Engine) fetchSignature(ctx context.Context) <-chan fetchedSig {
	c := make(chan fetchedSig, 1) // buffered: a run that returns early never reads it
	go func() {
		sig, err := e.Fetcher.Get(ctx, signatureURL(e.Config.ManifestURL), 64<<10)
		c <- fetchedSig{sig, err}
	}()
	return c
}

// compressedManifest returns the bytes <ManifestURL>.zst decodes to, or nil when it is not
// there or unusable (said in the log).
func (e *Engine) compressedManifest(ctx context.Context, log *logrus.Entry) []byte {
	zst, err := e.Fetcher.Get(ctx, siblingURL(e.Config.ManifestURL, ".zst"), manifest.MaxSize)
	if err != nil {
		if !isNotFound(err) && ctx.Err() == nil {
			log.WithField("error", err.Error()).Warn("cannot fetch the compressed manifest; fetching it uncompressed")
		}
		return nil
	}
	raw, err := delta.DecompressBounded(zst, manifest.MaxSize)
	if err != nil {
		log.WithField("error", err.Error()).Warn("the compressed manifest is unusable; fetching it uncompressed")
		return nil
	}
	log.Debug("manifest fetched compressed")
	return raw
}

// signatureURL is <ManifestURL>.minisig (see siblingURL).
func signatureURL(manifestURL string) string { return siblingURL(manifestURL, ".minisig") }

// siblingURL is manifestURL with suffix added to the path, so a mirror that authenticates by
// query string (…/manifest.json?token=…) serves the signature and the compressed copy the same
// way.
func siblingURL(manifestURL, suffix string) string {
	u, err := url.Parse(manifestURL)
	if err != nil || u.RawQuery == "" {
		return manifestURL + suffix
	}
	u.Path += suffix
	if u.RawPath != "" {
		u.RawPath += suffix
	}
	return u.String()
}

// isNotFound tells a signature that does not exist from one that could not be fetched.
func isNotFound(err error) bool {
	var fe *fetch.Error
	if errors.As(err, &fe) && fe.StatusCode == http.StatusNotFound {
		return true
	}
	return errors.Is(err, fs.ErrNotExist)
}

// sameSchemeFamily refuses a base_url that would move downloads from a network source to local
// files (or the reverse); the hashes protect content, this keeps the source where it was set.
func sameSchemeFamily(manifestURL, base string) error {
	mu, err := url.Parse(manifestURL)
	if err != nil {
		// url.Error repeats the URL, password included.
		return fmt.Errorf("bad ManifestURL %s: %v", fetch.Redact(manifestURL), errors.Unwrap(err))
	}
	bu, err := url.Parse(base)
	if err != nil {
		return fmt.Errorf("bad base URL %s: %v", fetch.Redact(base), errors.Unwrap(err))
	}
	isFile := func(s string) bool { return strings.EqualFold(s, "file") }
	if isFile(mu.Scheme) != isFile(bu.Scheme) {
		return fmt.Errorf("base URL %s uses scheme %q, the manifest came over %q", fetch.Redact(base), bu.Scheme, mu.Scheme)
	}
	return nil
}

// compareVersions returns how the available version relates to the installed one; an unknown
// installed version is older than everything.
func compareVersions(installed, available string) (int, error) {
	if installed == "" {
		return 1, nil
	}
	c, err := manifest.CompareVersions(available, installed)
	if err != nil {
		return 0, fmt.Errorf("cannot compare versions %q and %q: %w", available, installed, err)
	}
	return c, nil
}
