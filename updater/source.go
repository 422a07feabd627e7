package updater

import (
	"context"
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
	baseURL string // where files are fetched from, as a directory URL
}

// fetchManifest fetches, verifies and parses the manifest. Nothing past the manifest (and its
// signature) is fetched before this returns successfully.
func (e *Engine) fetchManifest(ctx context.Context, log *logrus.Entry) (*fetched, error) {
	c := e.Config
	// shown is what messages name: a ManifestURL may carry a password (basic auth), and
	// messages end up in the journal and in `status`.
	shown := fetch.Redact(c.ManifestURL)
	log = log.WithField(logging.FieldPhase, logging.PhaseCheck)
	raw, err := e.getManifest(ctx, log)
	if err != nil {
		return nil, err // names the URL and the cause already
	}
	if c.AllowUnsigned {
		log.Warn("AllowUnsigned=yes: a manifest without a signature is accepted; anyone who can change the server's responses could then choose what is installed")
	}
	if e.Verifier != nil {
		sig, err := e.Fetcher.Get(ctx, signatureURL(c.ManifestURL), 64<<10)
		switch {
		case err != nil && c.AllowUnsigned && isNotFound(err):
			log.Warn("the manifest has no signature; accepted because AllowUnsigned=yes")
		case err != nil:
			return nil, fmt.Errorf("refusing manifest %s: cannot fetch its signature %s.minisig (a PublicKey= is configured, so it must be signed): %w", shown, shown, err)
		default:
			if err := e.Verifier.Verify(raw, sig); err != nil {
				return nil, fmt.Errorf("refusing manifest %s: signature check failed: %w", shown, err)
			}
			log.Debug("manifest signature verified")
		}
	}
	m, err := manifest.Parse(raw)
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
	return &fetched{m: m, raw: raw, baseURL: base}, nil
}

// getManifest returns the manifest's bytes: decoded from <ManifestURL>.zst when the server has
// it, else fetched as they are. The signature is over these bytes either way, so a compressed
// copy that is broken or not there only costs the plain fetch; one that decodes to other bytes
// fails the signature check like a modified manifest.
func (e *Engine) getManifest(ctx context.Context, log *logrus.Entry) ([]byte, error) {
	manifestURL := e.Config.ManifestURL
	zst, err := e.Fetcher.Get(ctx, siblingURL(manifestURL, ".zst"), manifest.MaxSize)
	if err == nil {
		raw, err := delta.DecompressBounded(zst, manifest.MaxSize)
		if err == nil {
			log.Debug("manifest fetched compressed")
			return raw, nil
		}
		log.WithField("error", err.Error()).Warn("the compressed manifest is unusable; fetching it uncompressed")
	} else if ctx.Err() != nil {
		return nil, err
	} else if !isNotFound(err) {
		log.WithField("error", err.Error()).Warn("cannot fetch the compressed manifest; fetching it uncompressed")
	}
	return e.Fetcher.Get(ctx, manifestURL, manifest.MaxSize)
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
