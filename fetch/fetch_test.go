package fetch

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

const short = 300 * time.Millisecond

// asError asserts err is an *Error with the given Temporary whose text
// contains each of msgs.
func asError(t *testing.T, err error, temporary bool, msgs ...string) *Error {
	t.Helper()
	var fe *Error
	if !errors.As(err, &fe) {
		t.Fatalf("err = %v (%T), want *fetch.Error", err, err)
	}
	if fe.Temporary != temporary {
		t.Errorf("Temporary = %v, want %v (%v)", fe.Temporary, temporary, err)
	}
	for _, m := range msgs {
		if !strings.Contains(err.Error(), m) {
			t.Errorf("error %q does not mention %q", err, m)
		}
	}
	return fe
}

func serve(t *testing.T, h http.HandlerFunc) *httptest.Server {
	t.Helper()
	s := httptest.NewServer(h)
	t.Cleanup(s.Close)
	return s
}

func TestGet200(t *testing.T) {
	s := serve(t, func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("User-Agent") != "sdupdate" {
			t.Errorf("User-Agent = %q", r.Header.Get("User-Agent"))
		}
		io.WriteString(w, "hello")
	})
	b, err := New(time.Second).Get(context.Background(), s.URL+"/m.json", 5)
	if err != nil || string(b) != "hello" {
		t.Fatalf("Get = %q, %v", b, err)
	}
	// No limit.
	b, err = New(time.Second).Get(context.Background(), s.URL+"/m.json", -1)
	if err != nil || string(b) != "hello" {
		t.Fatalf("Get without limit = %q, %v", b, err)
	}
}

func TestStatusErrors(t *testing.T) {
	s := serve(t, func(w http.ResponseWriter, r *http.Request) {
		code, _ := strconv.Atoi(strings.TrimPrefix(r.URL.Path, "/"))
		w.WriteHeader(code)
		io.WriteString(w, "secret body text")
	})
	tests := []struct {
		code      int
		temporary bool
	}{
		{404, false}, {403, false}, {410, false},
		{500, true}, {502, true}, {503, true}, {429, true}, {408, true},
	}
	for _, tt := range tests {
		t.Run(strconv.Itoa(tt.code), func(t *testing.T) {
			u := strings.Replace(s.URL, "http://", "http://alice:hunter2@", 1) + "/" + strconv.Itoa(tt.code)
			_, err := New(time.Second).Get(context.Background(), u, 1000)
			fe := asError(t, err, tt.temporary, strconv.Itoa(tt.code), s.URL+"/"+strconv.Itoa(tt.code))
			if fe.StatusCode != tt.code {
				t.Errorf("StatusCode = %d", fe.StatusCode)
			}
			for _, leak := range []string{"secret body", "hunter2", "alice"} {
				if strings.Contains(err.Error(), leak) {
					t.Errorf("error %q shows %q", err, leak)
				}
			}
		})
	}
}

func TestBodyLongerThanLimit(t *testing.T) {
	// Chunked, so the length is not known up front.
	s := serve(t, func(w http.ResponseWriter, r *http.Request) {
		for range 10 {
			io.WriteString(w, "0123456789")
			w.(http.Flusher).Flush()
		}
	})
	_, err := New(time.Second).Get(context.Background(), s.URL, 42)
	asError(t, err, false, "longer than 42 bytes")
	if !errors.Is(err, ErrTooLong) {
		t.Errorf("errors.Is(err, ErrTooLong) = false")
	}

	// Streaming: exactly limit bytes are delivered, then the error.
	rc, err := New(time.Second).Open(context.Background(), s.URL, 42)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if len(b) != 42 || !errors.Is(err, ErrTooLong) {
		t.Fatalf("read %d bytes, %v; want 42 and ErrTooLong", len(b), err)
	}
	// Exactly at the limit is fine.
	b, err = New(time.Second).Get(context.Background(), s.URL, 100)
	if err != nil || len(b) != 100 {
		t.Fatalf("Get at the limit: %d bytes, %v", len(b), err)
	}
}

func TestContentLengthOverLimitRefusedBeforeReading(t *testing.T) {
	release := make(chan struct{})
	defer close(release)
	s := serve(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", strconv.Itoa(1<<30))
		w.WriteHeader(200)
		w.(http.Flusher).Flush()
		// Sends nothing more: reading the body would hang until the
		// timeout.
		select {
		case <-r.Context().Done():
		case <-release:
		}
	})
	start := time.Now()
	_, err := New(5*time.Second).Get(context.Background(), s.URL, 1<<20)
	asError(t, err, false, "longer than 1048576 bytes")
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("took %v: the body was waited for", d)
	}
}

func TestHangBeforeHeaders(t *testing.T) {
	release := make(chan struct{})
	defer close(release)
	s := serve(t, func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-release:
		}
	})
	start := time.Now()
	_, err := New(short).Get(context.Background(), s.URL, -1)
	d := time.Since(start)
	asError(t, err, true, s.URL)
	if d < short || d > 5*time.Second {
		t.Fatalf("gave up after %v, want about %v", d, short)
	}
}

func TestStallMidBody(t *testing.T) {
	release := make(chan struct{})
	defer close(release)
	s := serve(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", "100")
		io.WriteString(w, "first ten.")
		w.(http.Flusher).Flush()
		select {
		case <-r.Context().Done():
		case <-release:
		}
	})
	start := time.Now()
	rc, err := New(short).Open(context.Background(), s.URL, -1)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	d := time.Since(start)
	asError(t, err, true, "no data received for 300ms")
	if string(b) != "first ten." {
		t.Errorf("read %q before the stall", b)
	}
	if d < short || d > 5*time.Second {
		t.Fatalf("gave up after %v, want about %v", d, short)
	}
}

// The timeout is on silence, not on the whole transfer.
func TestSlowButSteadyBodyCompletes(t *testing.T) {
	s := serve(t, func(w http.ResponseWriter, r *http.Request) {
		for i := range 8 {
			fmt.Fprint(w, i)
			w.(http.Flusher).Flush()
			time.Sleep(short / 3)
		}
	})
	start := time.Now()
	b, err := New(short).Get(context.Background(), s.URL, -1)
	if err != nil || string(b) != "01234567" {
		t.Fatalf("Get = %q, %v", b, err)
	}
	if d := time.Since(start); d < 2*short {
		t.Fatalf("took only %v; the test needs a transfer longer than the timeout", d)
	}
}

// A consumer that takes a while between reads (writing to a slow disk) is
// not mistaken for a silent server.
func TestSlowConsumerIsNotIdle(t *testing.T) {
	s := serve(t, func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, strings.Repeat("x", 100))
	})
	rc, err := New(short).Open(context.Background(), s.URL, -1)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	buf := make([]byte, 10)
	total := 0
	for {
		n, err := rc.Read(buf)
		total += n
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("after %d bytes: %v", total, err)
		}
		time.Sleep(short * 2)
		if total >= 20 {
			// Enough to prove it; the rest is buffered anyway.
			io.Copy(io.Discard, rc)
			break
		}
	}
}

func TestCallerCancelIsNotTemporary(t *testing.T) {
	release := make(chan struct{})
	defer close(release)
	s := serve(t, func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "partial")
		w.(http.Flusher).Flush()
		select {
		case <-r.Context().Done():
		case <-release:
		}
	})
	ctx, cancel := context.WithCancel(context.Background())
	rc, err := New(5*time.Second).Open(ctx, s.URL, -1)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	time.AfterFunc(50*time.Millisecond, cancel)
	_, err = io.ReadAll(rc)
	asError(t, err, false)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
}

// rawServer answers each connection with f, below HTTP.
func rawServer(t *testing.T, f func(c net.Conn)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				// Read the request head first.
				br := bufio.NewReader(c)
				for {
					line, err := br.ReadString('\n')
					if err != nil || line == "\r\n" {
						break
					}
				}
				f(c)
			}()
		}
	}()
	return "http://" + ln.Addr().String() + "/file"
}

func TestShortReadIsTemporary(t *testing.T) {
	u := rawServer(t, func(c net.Conn) {
		io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly this much")
		c.Close()
	})
	_, err := New(time.Second).Get(context.Background(), u, -1)
	asError(t, err, true, "closed before the whole body arrived")
}

func TestResetIsTemporary(t *testing.T) {
	u := rawServer(t, func(c net.Conn) {
		c.(*net.TCPConn).SetLinger(0) // close with RST
		c.Close()
	})
	_, err := New(time.Second).Get(context.Background(), u, -1)
	asError(t, err, true)
}

func TestConnectionRefusedIsTemporary(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	_, err = New(time.Second).Get(context.Background(), "http://"+addr+"/m.json", -1)
	asError(t, err, true, "refused")
}

func TestRedirects(t *testing.T) {
	var s *httptest.Server
	s = serve(t, func(w http.ResponseWriter, r *http.Request) {
		switch p := r.URL.Path; {
		case p == "/final":
			io.WriteString(w, "arrived")
		case strings.HasPrefix(p, "/hop/"):
			// /hop/N redirects N more times before /final.
			n, _ := strconv.Atoi(strings.TrimPrefix(p, "/hop/"))
			next := "/final"
			if n > 1 {
				next = "/hop/" + strconv.Itoa(n-1)
			}
			http.Redirect(w, r, next, http.StatusFound)
		case p == "/to-file":
			http.Redirect(w, r, "file:///etc/passwd", http.StatusMovedPermanently)
		case p == "/to-https":
			http.Redirect(w, r, strings.Replace(s.URL, "http:", "https:", 1)+"/final", http.StatusMovedPermanently)
		}
	})
	c := New(time.Second)
	ctx := context.Background()
	if b, err := c.Get(ctx, s.URL+"/hop/1", -1); err != nil || string(b) != "arrived" {
		t.Fatalf("one redirect: %q, %v", b, err)
	}
	if b, err := c.Get(ctx, s.URL+"/hop/10", -1); err != nil || string(b) != "arrived" {
		t.Fatalf("ten redirects: %q, %v", b, err)
	}
	_, err := c.Get(ctx, s.URL+"/hop/11", -1)
	asError(t, err, false, "stopped after 10 redirects")

	_, err = c.Get(ctx, s.URL+"/to-file", -1)
	asError(t, err, false, "refusing redirect to file:///etc/passwd", "from http to file")
	_, err = c.Get(ctx, s.URL+"/to-https", -1)
	asError(t, err, false, "from http to https")
}

func TestRedirectHTTPSToHTTPRefused(t *testing.T) {
	plain := serve(t, func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "downgraded") })
	tlsSrv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/ok" {
			io.WriteString(w, "secure")
			return
		}
		http.Redirect(w, r, plain.URL+"/m.json", http.StatusFound)
	}))
	defer tlsSrv.Close()
	c := New(time.Second)
	c.transport.TLSClientConfig = tlsSrv.Client().Transport.(*http.Transport).TLSClientConfig.Clone()

	if b, err := c.Get(context.Background(), tlsSrv.URL+"/ok", -1); err != nil || string(b) != "secure" {
		t.Fatalf("https: %q, %v", b, err)
	}
	_, err := c.Get(context.Background(), tlsSrv.URL+"/m.json", -1)
	asError(t, err, false, "from https to http", tlsSrv.URL+"/m.json")

	// Without the test CA, the certificate is refused, and retrying won't help.
	_, err = New(time.Second).Get(context.Background(), tlsSrv.URL+"/ok", -1)
	asError(t, err, false, "certificate")
}

// The proxy test runs in a child process: Go reads the proxy environment
// once per process, so setting it here would not be seen after any other
// request.
const proxyChildEnv = "SDUPDATE_FETCH_PROXY_CHILD"

func TestProxyFromEnvironment(t *testing.T) {
	if target := os.Getenv(proxyChildEnv); target != "" {
		proxyChild(t, target)
		return
	}
	var proxied atomic.Int32
	proxy := serve(t, func(w http.ResponseWriter, r *http.Request) {
		// A proxy gets the absolute URL in the request line.
		if !r.URL.IsAbs() || r.URL.Host != "updates.example.invalid" {
			http.Error(w, "not a proxy request: "+r.URL.String(), 400)
			return
		}
		proxied.Add(1)
		io.WriteString(w, "via proxy "+r.URL.Path)
	})
	direct := serve(t, func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "direct") })

	cmd := exec.Command(os.Args[0], "-test.run=^TestProxyFromEnvironment$", "-test.v")
	cmd.Env = append(os.Environ(),
		proxyChildEnv+"="+direct.URL,
		"HTTP_PROXY="+proxy.URL, "http_proxy="+proxy.URL,
		"NO_PROXY=", "no_proxy=")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("child: %v\n%s", err, out)
	}
	if proxied.Load() != 1 {
		t.Fatalf("proxy saw %d requests, want 1\n%s", proxied.Load(), out)
	}
}

func proxyChild(t *testing.T, loopbackURL string) {
	c := New(time.Second)
	b, err := c.Get(context.Background(), "http://updates.example.invalid/sd-agent/manifest.json", -1)
	if err != nil || string(b) != "via proxy /sd-agent/manifest.json" {
		t.Fatalf("through HTTP_PROXY: %q, %v", b, err)
	}
	// Go never proxies loopback addresses, whatever HTTP_PROXY says.
	b, err = c.Get(context.Background(), loopbackURL, -1)
	if err != nil || string(b) != "direct" {
		t.Fatalf("loopback: %q, %v", b, err)
	}
}

func fileURL(p string) string {
	return (&url.URL{Scheme: "file", Path: p}).String()
}

func TestFileURLs(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "pub dir#1")
	if err := os.MkdirAll(filepath.Join(dir, "1.2.0"), 0o755); err != nil {
		t.Fatal(err)
	}
	name := filepath.Join(dir, "1.2.0", "agent ü?.py")
	if err := os.WriteFile(name, []byte("print('hi')\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	c := New(time.Second)

	u, err := Join(fileURL(dir)+"/1.2.0/", "agent ü?.py")
	if err != nil {
		t.Fatal(err)
	}
	b, err := c.Get(ctx, u, 100)
	if err != nil || string(b) != "print('hi')\n" {
		t.Fatalf("Get %s = %q, %v", u, b, err)
	}
	if b, err := c.Get(ctx, "file://localhost"+(&url.URL{Path: name}).EscapedPath(), -1); err != nil || len(b) != 12 {
		t.Fatalf("file://localhost: %q, %v", b, err)
	}

	_, err = c.Get(ctx, u, 5)
	asError(t, err, false, "longer than 5 bytes")

	_, err = c.Get(ctx, fileURL(filepath.Join(dir, "missing.json")), -1)
	fe := asError(t, err, false, "no such file", filepath.Join(dir, "missing.json"))
	if !errors.Is(fe, fs.ErrNotExist) {
		t.Errorf("errors.Is(err, fs.ErrNotExist) = false")
	}
	_, err = c.Get(ctx, fileURL(dir), -1)
	asError(t, err, false, "not a regular file")
	_, err = c.Get(ctx, "file://server/share/m.json", -1)
	asError(t, err, false, "local path")

	ctxDone, cancel := context.WithCancel(ctx)
	cancel()
	_, err = c.Get(ctxDone, u, -1)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("canceled: %v", err)
	}
}

func TestUnsupportedAndInvalidURLs(t *testing.T) {
	c := New(time.Second)
	_, err := c.Get(context.Background(), "ftp://x/m.json", -1)
	asError(t, err, false, "unsupported scheme \"ftp\"")
	_, err = c.Get(context.Background(), "https://user:pa ss@x/m.json", -1)
	fe := asError(t, err, false, "invalid")
	if strings.Contains(fe.Error(), "pa ss") {
		t.Errorf("error %q shows the password", fe)
	}
}

func TestRedact(t *testing.T) {
	for in, want := range map[string]string{
		"https://u:p@h/x?q=1":  "https://h/x?q=1",
		"https://u@h/x":        "https://h/x",
		"https://h/x":          "https://h/x",
		"https://u:p q@h/x":    "https://h/x",
		"https://u:p@q@h/x#@y": "https://h/x#@y",
		"file:///srv/x":        "file:///srv/x",
	} {
		if got := Redact(in); got != want {
			t.Errorf("Redact(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestErrorText(t *testing.T) {
	e := &Error{URL: "https://h/m.json", StatusCode: 503}
	if got := e.Error(); got != "cannot fetch https://h/m.json: server answered 503 Service Unavailable" {
		t.Errorf("Error() = %q", got)
	}
	inner := errors.New("boom")
	e = &Error{URL: "https://h/m.json", Err: inner}
	if got := e.Error(); got != "cannot fetch https://h/m.json: boom" || !errors.Is(e, inner) {
		t.Errorf("Error() = %q, Is = %v", got, errors.Is(e, inner))
	}
}
