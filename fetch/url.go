package fetch

import (
	"errors"
	"fmt"
	"net/url"
	"strings"
)

// checkScheme accepts the schemes sdupdate fetches from.
func checkScheme(u *url.URL) error {
	switch u.Scheme {
	case "http", "https":
		if u.Host == "" {
			return errors.New("no host")
		}
	case "file":
	default:
		return fmt.Errorf("unsupported scheme %q; use https, http or file", u.Scheme)
	}
	return nil
}

// Join returns the URL of the file called name (a slash path, as in a
// manifest) under base, which is taken as a directory whether or not it
// ends in "/". Each segment of name is percent-escaped, so spaces, '#', '?',
// '%' and non-ASCII names all reach the server as the same name. Empty,
// "." and ".." segments are refused: a server would resolve them.
func Join(base, name string) (string, error) {
	u, err := url.Parse(base)
	if err != nil {
		return "", fmt.Errorf("cannot use base URL %s: %v", Redact(base), errors.Unwrap(err))
	}
	if err := checkScheme(u); err != nil {
		return "", fmt.Errorf("cannot use base URL %s: %w", Redact(base), err)
	}
	if name == "" {
		return "", errors.New("cannot join an empty name to a URL")
	}
	segs := strings.Split(name, "/")
	for i, s := range segs {
		if s == "" || s == "." || s == ".." {
			return "", fmt.Errorf("cannot join %q to a URL: empty, \".\" or \"..\" segment", name)
		}
		segs[i] = url.PathEscape(s)
	}
	escaped := u.EscapedPath()
	if !strings.HasSuffix(escaped, "/") {
		escaped += "/"
	}
	escaped += strings.Join(segs, "/")
	p, err := url.PathUnescape(escaped)
	if err != nil {
		return "", fmt.Errorf("cannot join %q to %s: %w", name, Redact(base), err)
	}
	u.Path, u.RawPath = p, escaped
	// A fragment is never sent; one left on base would swallow the name.
	u.Fragment, u.RawFragment = "", ""
	return u.String(), nil
}

// ResolveReference resolves a manifest's base_url (a URL reference, RFC
// 3986: absolute, or relative to the manifest) against the manifest's URL.
// An empty ref gives the manifest's directory. Characters with a meaning in
// URLs must be percent-encoded in ref: a '#' (a fragment) is refused rather
// than silently cutting the path. A remote manifest cannot point at file:
// URLs.
func ResolveReference(manifestURL, ref string) (string, error) {
	m, err := url.Parse(manifestURL)
	if err != nil {
		return "", fmt.Errorf("cannot use manifest URL %s: %v", Redact(manifestURL), errors.Unwrap(err))
	}
	if err := checkScheme(m); err != nil {
		return "", fmt.Errorf("cannot use manifest URL %s: %w", Redact(manifestURL), err)
	}
	if ref == "" {
		ref = "./"
	}
	r, err := url.Parse(ref)
	if err != nil {
		return "", fmt.Errorf("invalid base_url %q: %v", Redact(ref), errors.Unwrap(err))
	}
	if r.Fragment != "" || strings.Contains(ref, "#") {
		return "", fmt.Errorf("invalid base_url %q: contains '#'; percent-encode it as %%23", Redact(ref))
	}
	res := m.ResolveReference(r)
	if err := checkScheme(res); err != nil {
		return "", fmt.Errorf("invalid base_url %q: %w", Redact(ref), err)
	}
	if res.Scheme == "file" && m.Scheme != "file" {
		return "", fmt.Errorf("invalid base_url %q: a manifest fetched over %s cannot point at local files", Redact(ref), m.Scheme)
	}
	return res.String(), nil
}
