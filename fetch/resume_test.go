package fetch

import (
	"bytes"
	"context"
	"errors"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// rangeServer serves one file as a static server does (ServeContent: Range, If-Range, a strong
// ETag) and cuts the first response after breakAt body bytes, the connection closed mid-body.
type rangeServer struct {
	mu      sync.Mutex
	data    []byte
	etag    string
	breakAt int64 // < 0: never
	sent    int64
	reqs    []http.Header
	// handlers counts the responses still being written: the client can have read a body
	// whole before its handler has counted the last write.
	handlers sync.WaitGroup
}

func (s *rangeServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.handlers.Add(1)
	defer s.handlers.Done()
	s.mu.Lock()
	data, etag, breakAt := s.data, s.etag, s.breakAt
	s.breakAt = -1
	s.reqs = append(s.reqs, r.Header.Clone())
	s.mu.Unlock()
	if etag != "" {
		w.Header().Set("ETag", etag)
	}
	http.ServeContent(&cutWriter{ResponseWriter: w, s: s, left: breakAt}, r, "", time.Time{}, bytes.NewReader(data))
}

type cutWriter struct {
	http.ResponseWriter
	s    *rangeServer
	left int64
}

func (c *cutWriter) Write(p []byte) (int, error) {
	if c.left >= 0 && int64(len(p)) > c.left {
		n, _ := c.ResponseWriter.Write(p[:c.left])
		c.s.count(n)
		http.NewResponseController(c.ResponseWriter).Flush()
		panic(http.ErrAbortHandler)
	}
	n, err := c.ResponseWriter.Write(p)
	c.left -= int64(n)
	c.s.count(n)
	return n, err
}

// settled waits for every response to be written and returns what the server sent in all and
// the requests it saw.
func (s *rangeServer) settled() (int64, []http.Header) {
	s.handlers.Wait()
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.sent, s.reqs
}

func (s *rangeServer) count(n int) {
	s.mu.Lock()
	s.sent += int64(n)
	s.mu.Unlock()
}

func randomBytes(n int) []byte {
	b := make([]byte, n)
	rand.NewChaCha8([32]byte{1}).Read(b)
	return b
}

// download is what the updater does with OpenFrom: append what arrives to the partial file,
// start over when the server sends the file whole, and continue from the partial's length on
// the next try.
func download(t *testing.T, c *Client, url string, size int64, partial *os.File, tries int) error {
	t.Helper()
	etag := ""
	var err error
	for try := 0; try < tries; try++ {
		fi, _ := partial.Stat()
		var p *Part
		p, err = c.OpenFrom(context.Background(), url, size, fi.Size(), etag)
		if err != nil {
			if errors.Is(err, ErrBadRange) {
				partial.Truncate(0)
			}
			continue
		}
		etag = p.ETag
		if p.Offset == 0 {
			partial.Truncate(0)
		}
		partial.Seek(p.Offset, io.SeekStart)
		_, err = io.Copy(partial, p)
		p.Close()
		if err == nil {
			return nil
		}
	}
	return err
}

func TestResumeAfterABreakMidBody(t *testing.T) {
	data := randomBytes(4 << 20)
	rs := &rangeServer{data: data, etag: `"v1"`, breakAt: 1 << 20}
	s := serve(t, rs.ServeHTTP)
	partial, err := os.Create(filepath.Join(t.TempDir(), "partial"))
	if err != nil {
		t.Fatal(err)
	}
	defer partial.Close()
	if err := download(t, New(time.Second), s.URL+"/f", int64(len(data)), partial, 3); err != nil {
		t.Fatalf("download: %v", err)
	}
	got, _ := os.ReadFile(partial.Name())
	if !bytes.Equal(got, data) {
		t.Fatalf("resumed file differs from the served one (%d bytes, want %d)", len(got), len(data))
	}
	sent, reqs := rs.settled()
	if sent != int64(len(data)) {
		t.Errorf("server sent %d bytes in all for a %d-byte file broken once: the second request did not continue", sent, len(data))
	}
	if len(reqs) != 2 || reqs[1].Get("Range") != "bytes=1048576-" || reqs[1].Get("If-Range") != `"v1"` {
		t.Errorf("requests = %v, want a second one with Range: bytes=1048576- and If-Range: \"v1\"", reqs)
	}
}

func TestResumeOfAChangedFileStartsOver(t *testing.T) {
	data := randomBytes(1 << 20)
	rs := &rangeServer{data: data, etag: `"v1"`, breakAt: 300 << 10}
	s := serve(t, rs.ServeHTTP)
	partial, _ := os.Create(filepath.Join(t.TempDir(), "partial"))
	defer partial.Close()
	c := New(time.Second)
	p, err := c.OpenFrom(context.Background(), s.URL+"/f", int64(len(data)), 0, "")
	if err != nil {
		t.Fatal(err)
	}
	if p.ETag != `"v1"` {
		t.Errorf("ETag = %q, want \"v1\"", p.ETag)
	}
	n, _ := io.Copy(partial, p)
	p.Close()
	// The file changes on the server; the If-Range no longer matches, so the whole new file
	// comes back with a 200 at offset 0.
	rs.mu.Lock()
	rs.data, rs.etag = randomBytes(1<<20+7), `"v2"`
	rs.mu.Unlock()
	p, err = c.OpenFrom(context.Background(), s.URL+"/f", 2<<20, n, `"v1"`)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	if p.Offset != 0 || p.ETag != `"v2"` {
		t.Fatalf("after the file changed: Offset %d, ETag %q; want 0 and \"v2\"", p.Offset, p.ETag)
	}
	body, _ := io.ReadAll(p)
	if !bytes.Equal(body, rs.data) {
		t.Errorf("body after a 200 to a range request is not the whole new file")
	}
}

func TestWeakETagSendsNoIfRange(t *testing.T) {
	rs := &rangeServer{data: randomBytes(1000), etag: `W/"weak"`, breakAt: -1}
	s := serve(t, rs.ServeHTTP)
	c := New(time.Second)
	p, err := c.OpenFrom(context.Background(), s.URL+"/f", 1000, 0, "")
	if err != nil {
		t.Fatal(err)
	}
	p.Close()
	if p.ETag != "" {
		t.Errorf("weak ETag returned as a validator: %q", p.ETag)
	}
	p, err = c.OpenFrom(context.Background(), s.URL+"/f", 1000, 500, `W/"weak"`)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(p)
	p.Close()
	if _, reqs := rs.settled(); reqs[1].Get("If-Range") != "" {
		got := reqs[1].Get("If-Range")
		t.Errorf("If-Range %q sent with a weak ETag", got)
	}
	if p.Offset != 500 || !bytes.Equal(body, rs.data[500:]) {
		t.Errorf("range without If-Range: offset %d, %d bytes", p.Offset, len(body))
	}
}

func TestRangeAnswersThatDoNotContinue(t *testing.T) {
	tests := []struct {
		desc    string
		handler http.HandlerFunc
	}{
		{"Content-Range starting elsewhere", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Range", "bytes 0-99/100")
			w.WriteHeader(http.StatusPartialContent)
			w.Write(make([]byte, 100))
		}},
		{"invalid Content-Range", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Range", "bytes */100")
			w.WriteHeader(http.StatusPartialContent)
		}},
		{"416", func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(http.StatusRequestedRangeNotSatisfiable)
		}},
	}
	for _, tc := range tests {
		t.Run(tc.desc, func(t *testing.T) {
			s := serve(t, tc.handler)
			_, err := New(time.Second).OpenFrom(context.Background(), s.URL+"/f", 100, 50, `"x"`)
			if !errors.Is(err, ErrBadRange) {
				t.Fatalf("err = %v, want ErrBadRange", err)
			}
			asError(t, err, true, s.URL+"/f")
		})
	}
}

func TestRangeRespectsTheWholeFileLimit(t *testing.T) {
	rs := &rangeServer{data: randomBytes(1000), breakAt: -1}
	s := serve(t, rs.ServeHTTP)
	// 600 bytes are left from 400 on, but only 500 may be in all: refused from Content-Length.
	_, err := New(time.Second).OpenFrom(context.Background(), s.URL+"/f", 900, 400, "")
	if !errors.Is(err, ErrTooLong) || !strings.Contains(err.Error(), "900") {
		t.Fatalf("err = %v, want ErrTooLong naming the 900-byte limit", err)
	}
}

func TestFileURLFromOffset(t *testing.T) {
	dir := t.TempDir()
	data := randomBytes(1000)
	os.WriteFile(filepath.Join(dir, "f"), data, 0o644)
	c := New(time.Second)
	p, err := c.OpenFrom(context.Background(), fileURL(filepath.Join(dir, "f")), 1000, 600, "")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(p)
	p.Close()
	if p.Offset != 600 || !bytes.Equal(body, data[600:]) {
		t.Errorf("file URL from 600: offset %d, %d bytes", p.Offset, len(body))
	}
	if _, err := c.OpenFrom(context.Background(), fileURL(filepath.Join(dir, "f")), 2000, 1001, ""); !errors.Is(err, ErrBadRange) {
		t.Errorf("offset past the end: err = %v, want ErrBadRange", err)
	}
}
