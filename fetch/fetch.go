// Package fetch gets manifests, signatures and files over https, http or
// from file: URLs, with the limits an unattended updater needs:
//
//   - a connect timeout and an idle timeout (no byte received for that long
//     ends the request), never a total one, so a big file on a slow but
//     live link still arrives;
//   - a size limit checked against Content-Length before reading and
//     enforced while reading;
//   - at most 10 redirects, none of which may change the scheme (so https
//     never silently becomes http, and a server cannot point at file:);
//   - proxies from HTTPS_PROXY, HTTP_PROXY and NO_PROXY (Go's rules: the
//     environment is read once per process, and requests to localhost or a
//     loopback address never go through a proxy);
//   - errors that say which URL failed (never its password, never the
//     body) and whether trying again may help.
//
// file: URLs read the publisher's tree with the os package directly; the
// install itself is never touched here.
package fetch

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/spf13/afero"

	"github.com/sdupdate/sdupdate/fsutil"
)

// DefaultTimeout is used when New is given none.
const DefaultTimeout = 30 * time.Second

// maxRedirects is how many redirects one request may follow.
const maxRedirects = 10

// Client fetches URLs. It holds its own transport: no state is shared with
// http.DefaultClient or other Clients. Safe for concurrent use.
type Client struct {
	timeout   time.Duration
	transport *http.Transport // the one http uses
	http      *http.Client
}

// New returns a Client whose every request gives up when connecting, the
// TLS handshake, the response headers, or any read of the body takes longer
// than timeout. timeout <= 0 means DefaultTimeout.
func New(timeout time.Duration) *Client {
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	dialer := &net.Dialer{Timeout: timeout, KeepAlive: 30 * time.Second}
	tr := &http.Transport{
		Proxy:                 http.ProxyFromEnvironment,
		DialContext:           dialer.DialContext,
		TLSHandshakeTimeout:   timeout,
		ResponseHeaderTimeout: timeout,
		ExpectContinueTimeout: time.Second,
		IdleConnTimeout:       90 * time.Second,
		MaxIdleConnsPerHost:   16, // parallel downloads from one host reuse connections
		ForceAttemptHTTP2:     true,
		// Sizes and hashes are of the bytes as published; a transparently
		// decompressed body would be neither.
		DisableCompression: true,
		TLSClientConfig:    &tls.Config{MinVersion: tls.VersionTLS12},
	}
	return &Client{
		timeout:   timeout,
		transport: tr,
		http:      &http.Client{Transport: tr, CheckRedirect: checkRedirect},
	}
}

// Get returns the whole body of rawURL. A body longer than limit bytes is
// refused: at once when Content-Length says so, otherwise as soon as limit
// is passed, without reading the rest. limit < 0 means no limit.
func (c *Client) Get(ctx context.Context, rawURL string, limit int64) ([]byte, error) {
	rc, err := c.Open(ctx, rawURL, limit)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	return io.ReadAll(rc)
}

// Open returns the body of rawURL for streaming. Reading past limit bytes
// gives an error wrapping ErrTooLong instead of data; limit < 0 means no
// limit. Every error, from Open or from reading, is an *Error. The caller
// must Close the body.
func (c *Client) Open(ctx context.Context, rawURL string, limit int64) (io.ReadCloser, error) {
	p, err := c.OpenFrom(ctx, rawURL, limit, 0, "")
	if err != nil {
		return nil, err
	}
	return p, nil
}

// Part is a body that starts at Offset of the file: what OpenFrom returns.
type Part struct {
	io.ReadCloser
	// Offset is where the body starts: the offset asked for, or 0 when the
	// server sent the whole file instead (a 200), which the caller must then
	// write from the start, never append.
	Offset int64
	// ETag is the response's entity tag if it is a strong one ("" if none or
	// weak): the validator to send with the next range request for the file.
	ETag string
}

// OpenFrom is Open for the bytes of rawURL from offset on, to continue a
// download that broke: a Range request, with If-Range when etag is a strong
// entity tag (a weak one cannot promise that the bytes match). limit is the
// size limit of the whole file. An answer that does not continue at offset
// (a Content-Range starting elsewhere, 416) is an error wrapping
// ErrBadRange: the caller starts over from 0.
func (c *Client) OpenFrom(ctx context.Context, rawURL string, limit, offset int64, etag string) (*Part, error) {
	shown := Redact(rawURL)
	u, err := url.Parse(rawURL)
	if err != nil {
		// url.Parse's own message repeats the URL, password included.
		return nil, &Error{URL: shown, Err: fmt.Errorf("invalid URL: %v", errors.Unwrap(err))}
	}
	switch u.Scheme {
	case "file":
		return openFile(ctx, u, shown, limit, offset)
	case "http", "https":
	default:
		return nil, &Error{URL: shown, Err: fmt.Errorf("unsupported scheme %q; use https, http or file", u.Scheme)}
	}

	reqCtx, cancel := context.WithCancel(ctx)
	req, err := newRangeRequest(reqCtx, rawURL, offset, etag)
	if err != nil {
		cancel()
		return nil, &Error{URL: shown, Err: errors.Unwrap(err)}
	}
	resp, err := c.http.Do(req)
	if err != nil {
		cancel()
		return nil, classify(ctx, shown, err, 0)
	}
	start, e := checkAnswer(resp, shown, offset)
	if e != nil {
		// Drain a little so the connection can be reused; the body is
		// never shown (it may be an HTML page or hold anything at all).
		io.CopyN(io.Discard, resp.Body, 4096)
		resp.Body.Close()
		cancel()
		return nil, e
	}
	rest := limit
	if limit >= 0 {
		rest = max(limit-start, 0)
	}
	if limit >= 0 && resp.ContentLength > rest {
		resp.Body.Close()
		cancel()
		return nil, &Error{URL: shown, Err: tooLong(limit)}
	}
	b := &httpBody{body: resp.Body, ctx: ctx, cancel: cancel, url: shown, timeout: c.timeout}
	b.timer = time.AfterFunc(c.timeout, b.expire)
	b.timer.Stop()
	tag := resp.Header.Get("ETag")
	if !strongETag(tag) {
		tag = ""
	}
	return &Part{ReadCloser: &limited{r: b, c: b, url: shown, limit: rest, whole: limit}, Offset: start, ETag: tag}, nil
}

// newRangeRequest is the GET for rawURL, asking for the bytes from offset on
// when offset is not 0.
func newRangeRequest(ctx context.Context, rawURL string, offset int64, etag string) (*http.Request, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, rawURL, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("User-Agent", "sdupdate")
	if offset > 0 {
		req.Header.Set("Range", fmt.Sprintf("bytes=%d-", offset))
		if strongETag(etag) {
			req.Header.Set("If-Range", etag)
		}
	}
	return req, nil
}

// checkAnswer returns where the body of resp starts (offset for a 206 that
// continues there, 0 for a whole file), or the error for an answer that is
// not a usable one.
func checkAnswer(resp *http.Response, shown string, offset int64) (int64, *Error) {
	if resp.StatusCode == http.StatusRequestedRangeNotSatisfiable && offset > 0 {
		return 0, &Error{URL: shown, StatusCode: resp.StatusCode, Temporary: true,
			Err: &badRangeError{fmt.Sprintf("server cannot continue at byte %d (416)", offset)}}
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		// Nor is the server's reason phrase: it is free text, terminal
		// escape sequences included; the standard text for the code is.
		return 0, &Error{URL: shown, StatusCode: resp.StatusCode,
			Err:       fmt.Errorf("server answered %s", strings.TrimSpace(fmt.Sprintf("%d %s", resp.StatusCode, http.StatusText(resp.StatusCode)))),
			Temporary: retryableStatus(resp.StatusCode)}
	}
	if resp.StatusCode != http.StatusPartialContent {
		return 0, nil
	}
	got, err := contentRangeStart(resp.Header.Get("Content-Range"))
	if err == nil && (offset == 0 || got != offset) {
		err = fmt.Errorf("server sent bytes from %d, asked for %d", got, offset)
	}
	if err != nil {
		return 0, &Error{URL: shown, Temporary: true, Err: &badRangeError{err.Error()}}
	}
	return offset, nil
}

// strongETag reports whether tag is a strong entity tag (RFC 9110 8.8.3):
// quoted, without the W/ of a weak one.
func strongETag(tag string) bool {
	return len(tag) >= 2 && tag[0] == '"' && tag[len(tag)-1] == '"' && !strings.ContainsAny(tag[1:len(tag)-1], "\"\r\n")
}

// contentRangeStart returns the first byte of a Content-Range value,
// "bytes FIRST-LAST/LENGTH" (LENGTH may be "*").
func contentRangeStart(v string) (int64, error) {
	spec, ok := strings.CutPrefix(v, "bytes ")
	first, rest, ok2 := strings.Cut(spec, "-")
	last, _, ok3 := strings.Cut(rest, "/")
	if !ok || !ok2 || !ok3 {
		return 0, fmt.Errorf("server sent an invalid Content-Range %q", v)
	}
	a, err1 := strconv.ParseInt(first, 10, 64)
	b, err2 := strconv.ParseInt(last, 10, 64)
	if err1 != nil || err2 != nil || a < 0 || b < a {
		return 0, fmt.Errorf("server sent an invalid Content-Range %q", v)
	}
	return a, nil
}

// ErrBadRange is wrapped by the error for an answer to a range request that
// does not continue the partial download: start over from byte 0.
var ErrBadRange = errors.New("answer does not continue at the offset asked for")

type badRangeError struct{ msg string }

func (e *badRangeError) Error() string        { return e.msg }
func (e *badRangeError) Is(target error) bool { return target == ErrBadRange }

// retryableStatus: server-side trouble and explicit "try later" answers.
func retryableStatus(code int) bool {
	return code >= 500 || code == http.StatusTooManyRequests || code == http.StatusRequestTimeout
}

// checkRedirect allows maxRedirects redirects, each keeping the scheme of
// the URL asked for.
func checkRedirect(req *http.Request, via []*http.Request) error {
	if len(via) > maxRedirects {
		return &redirectError{fmt.Sprintf("stopped after %d redirects", maxRedirects)}
	}
	if from := via[0].URL.Scheme; req.URL.Scheme != from {
		return &redirectError{fmt.Sprintf("refusing redirect to %s: it changes the scheme from %s to %s",
			Redact(req.URL.String()), from, req.URL.Scheme)}
	}
	return nil
}

type redirectError struct{ msg string }

func (e *redirectError) Error() string { return e.msg }

// httpBody enforces the idle timeout: a timer runs only while a Read is
// waiting, and cancels the request when it fires.
type httpBody struct {
	body    io.ReadCloser
	ctx     context.Context // the caller's, to tell their cancel from ours
	cancel  context.CancelFunc
	url     string
	timeout time.Duration
	timer   *time.Timer
	idle    atomic.Bool
}

func (b *httpBody) expire() {
	b.idle.Store(true)
	b.cancel()
}

func (b *httpBody) Read(p []byte) (int, error) {
	b.timer.Reset(b.timeout)
	n, err := b.body.Read(p)
	b.timer.Stop()
	if err != nil && err != io.EOF {
		idle := time.Duration(0)
		if b.idle.Load() {
			idle = b.timeout
		}
		return n, classify(b.ctx, b.url, err, idle)
	}
	return n, err
}

func (b *httpBody) Close() error {
	b.timer.Stop()
	err := b.body.Close()
	b.cancel()
	return err
}

// classify turns a transport error into an *Error, deciding whether a retry
// may help. idle > 0 says the idle timer of that length ended the request.
// The caller's own cancellation never counts as temporary.
func classify(ctx context.Context, shown string, err error, idle time.Duration) error {
	var fe *Error
	if errors.As(err, &fe) {
		return fe
	}
	if ctx.Err() != nil {
		return &Error{URL: shown, Err: ctx.Err()}
	}
	if idle > 0 {
		return &Error{URL: shown, Err: &timeoutError{fmt.Sprintf("no data received for %v", idle)}, Temporary: true}
	}
	// url.Error repeats the URL; Error names it already.
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err
	}
	var re *redirectError
	if errors.As(err, &re) {
		return &Error{URL: shown, Err: re}
	}
	if errors.Is(err, io.ErrUnexpectedEOF) {
		err = fmt.Errorf("connection closed before the whole body arrived: %w", err)
	}
	return &Error{URL: shown, Err: err, Temporary: temporary(err)}
}

// Temporary reports whether trying again may help after err: for an *Error, what was decided
// when it was made; for any other error (a Fetcher that is not a Client), the same rules.
func Temporary(err error) bool {
	var fe *Error
	if errors.As(err, &fe) {
		return fe.Temporary
	}
	return temporary(err)
}

func temporary(err error) bool {
	var ne net.Error
	var dns *net.DNSError
	switch {
	case errors.Is(err, io.ErrUnexpectedEOF), // short read: body ended before Content-Length
		errors.Is(err, io.EOF), // connection closed before a response
		errors.Is(err, syscall.ECONNRESET),
		errors.Is(err, syscall.ECONNABORTED),
		errors.Is(err, syscall.ECONNREFUSED), // e.g. the server is restarting
		errors.Is(err, syscall.EPIPE):
		return true
	case errors.As(err, &dns):
		return dns.IsTimeout || dns.IsTemporary
	case errors.As(err, &ne) && ne.Timeout():
		return true
	}
	return false
}

type timeoutError struct{ msg string }

func (e *timeoutError) Error() string   { return e.msg }
func (e *timeoutError) Timeout() bool   { return true }
func (e *timeoutError) Temporary() bool { return true }

// ErrTooLong is wrapped by the error for a body over the limit.
var ErrTooLong = errors.New("body longer than the limit")

type tooLongError struct{ limit int64 }

func tooLong(limit int64) error { return &tooLongError{limit} }

func (e *tooLongError) Error() string        { return fmt.Sprintf("longer than %d bytes", e.limit) }
func (e *tooLongError) Is(target error) bool { return target == ErrTooLong }

// limited enforces the size limit on any body.
type limited struct {
	r     io.Reader
	c     io.Closer
	url   string
	limit int64 // < 0: none
	whole int64 // the limit of the whole file, for the message (limit is what is left of it)
	n     int64
	err   error // sticky once over the limit
}

func (l *limited) Read(p []byte) (int, error) {
	if l.err != nil {
		return 0, l.err
	}
	if l.limit >= 0 {
		if rest := l.limit - l.n; rest < int64(len(p)) {
			// One byte past the limit is enough to know it is passed.
			p = p[:rest+1]
		}
	}
	n, err := l.r.Read(p)
	l.n += int64(n)
	if l.limit >= 0 && l.n > l.limit {
		n -= int(l.n - l.limit)
		l.n = l.limit
		l.err = &Error{URL: l.url, Err: tooLong(l.whole)}
		return n, l.err
	}
	return n, err
}

func (l *limited) Close() error { return l.c.Close() }

// openFile opens a file: URL from offset on. Only local paths are accepted.
func openFile(ctx context.Context, u *url.URL, shown string, limit, offset int64) (*Part, error) {
	if u.Host != "" && u.Host != "localhost" {
		return nil, &Error{URL: shown, Err: fmt.Errorf("a file URL must name a local path (file:///path), not host %q", u.Host)}
	}
	if u.Path == "" || !strings.HasPrefix(u.Path, "/") {
		return nil, &Error{URL: shown, Err: errors.New("a file URL needs an absolute path (file:///path)")}
	}
	if err := ctx.Err(); err != nil {
		return nil, &Error{URL: shown, Err: err}
	}
	// A FIFO published as a file would block the open itself until a writer came, with no way
	// to cancel it: only a regular file is opened.
	f, fi, err := fsutil.OpenRegular(afero.NewOsFs(), u.Path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, &Error{URL: shown, Err: fmt.Errorf("no such file %s: %w", u.Path, fs.ErrNotExist)}
	}
	if err != nil {
		return nil, &Error{URL: shown, Err: err}
	}
	if limit >= 0 && fi.Size() > limit {
		f.Close()
		return nil, &Error{URL: shown, Err: tooLong(limit)}
	}
	if offset > fi.Size() {
		f.Close()
		return nil, &Error{URL: shown, Temporary: true, Err: &badRangeError{fmt.Sprintf("%s has %d bytes, cannot continue at byte %d", u.Path, fi.Size(), offset)}}
	}
	if _, err := f.Seek(offset, io.SeekStart); err != nil {
		f.Close()
		return nil, &Error{URL: shown, Err: err}
	}
	rest := limit
	if limit >= 0 {
		rest = limit - offset
	}
	return &Part{ReadCloser: &limited{r: &fileBody{f: f, ctx: ctx, url: shown}, c: f, url: shown, limit: rest, whole: limit}, Offset: offset}, nil
}

// fileBody stops reading once the caller's context is done.
type fileBody struct {
	f   io.Reader
	ctx context.Context
	url string
}

func (b *fileBody) Read(p []byte) (int, error) {
	if err := b.ctx.Err(); err != nil {
		return 0, &Error{URL: b.url, Err: err}
	}
	n, err := b.f.Read(p)
	if err != nil && err != io.EOF {
		return n, &Error{URL: b.url, Err: err}
	}
	return n, err
}

// Error is a failed fetch. Its text names the URL, without user or
// password, and the cause; never the body.
type Error struct {
	URL        string // as shown: userinfo removed
	StatusCode int    // HTTP status, 0 if there was no response
	Err        error
	Temporary  bool // a 5xx, reset, timeout or short read: trying again may help
}

func (e *Error) Error() string {
	cause := "failed"
	switch {
	case e.Err != nil:
		cause = e.Err.Error()
	case e.StatusCode != 0:
		cause = fmt.Sprintf("server answered %d %s", e.StatusCode, http.StatusText(e.StatusCode))
	}
	return fmt.Sprintf("cannot fetch %s: %s", e.URL, cause)
}

func (e *Error) Unwrap() error { return e.Err }

// Redact returns rawURL without its userinfo (user and password), for
// messages and logs.
func Redact(rawURL string) string {
	if u, err := url.Parse(rawURL); err == nil {
		if u.User == nil {
			return rawURL
		}
		u.User = nil
		return u.String()
	}
	// Unparseable: cut whatever sits between "://" and an '@' in the
	// authority.
	if i := strings.Index(rawURL, "://"); i >= 0 {
		rest := rawURL[i+3:]
		end := strings.IndexAny(rest, "/?#")
		if end < 0 {
			end = len(rest)
		}
		if at := strings.LastIndex(rest[:end], "@"); at >= 0 {
			return rawURL[:i+3] + rest[at+1:]
		}
	}
	return rawURL
}
