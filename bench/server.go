package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// server serves a directory over HTTP/1.1 on loopback, as a plain static file server would: a
// strong ETag per file (mtime and size, like nginx's), Range and If-Range through
// http.ServeContent. It counts the body bytes it sends and can break one response on purpose.
type server struct {
	root string
	srv  *http.Server
	ln   net.Listener
	sent atomic.Int64

	mu        sync.Mutex
	breakPath string // the next response for this URL path is cut after breakAt body bytes
	breakAt   int64
}

func startServer(root string) (*server, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("cannot listen on loopback: %w", err)
	}
	s := &server{root: root, ln: ln}
	s.srv = &http.Server{Handler: s, ReadHeaderTimeout: 10 * time.Second}
	go s.srv.Serve(ln)
	return s, nil
}

func (s *server) URL(p string) string { return "http://" + s.ln.Addr().String() + "/" + p }

func (s *server) Close() {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	s.srv.Shutdown(ctx)
}

// breakNext makes the next response for urlPath stop after at body bytes, the connection closed
// as if the network had failed.
func (s *server) breakNext(urlPath string, at int64) {
	s.mu.Lock()
	s.breakPath, s.breakAt = urlPath, at
	s.mu.Unlock()
}

func (s *server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	name := path.Clean("/" + r.URL.Path)
	f, err := os.Open(filepath.Join(s.root, filepath.FromSlash(strings.TrimPrefix(name, "/"))))
	if err != nil {
		http.NotFound(w, r)
		return
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil || !fi.Mode().IsRegular() {
		http.NotFound(w, r)
		return
	}
	cw := &countingWriter{ResponseWriter: w, sent: &s.sent, limit: -1}
	s.mu.Lock()
	if s.breakPath == name {
		cw.limit = s.breakAt
		s.breakPath = ""
	}
	s.mu.Unlock()
	w.Header().Set("ETag", fmt.Sprintf(`"%x-%x"`, fi.ModTime().Unix(), fi.Size()))
	w.Header().Set("Content-Type", "application/octet-stream")
	http.ServeContent(cw, r, "", fi.ModTime(), f)
}

// countingWriter counts body bytes and, with limit >= 0, aborts the response once limit bytes
// are out.
type countingWriter struct {
	http.ResponseWriter
	sent  *atomic.Int64
	limit int64
	n     int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	if c.limit >= 0 && c.n+int64(len(p)) > c.limit {
		p = p[:c.limit-c.n]
		n, _ := c.ResponseWriter.Write(p)
		c.sent.Add(int64(n))
		http.NewResponseController(c.ResponseWriter).Flush()
		panic(http.ErrAbortHandler) // net/http closes the connection without ending the body
	}
	n, err := c.ResponseWriter.Write(p)
	c.n += int64(n)
	c.sent.Add(int64(n))
	return n, err
}

// ReadFrom lets the server send a whole body with sendfile, as a static file server does;
// a response to be broken goes through Write.
func (c *countingWriter) ReadFrom(r io.Reader) (int64, error) {
	rf, ok := c.ResponseWriter.(io.ReaderFrom)
	if c.limit >= 0 || !ok {
		return io.Copy(writerOnly{c}, r)
	}
	n, err := rf.ReadFrom(r)
	c.n += n
	c.sent.Add(n)
	return n, err
}

type writerOnly struct{ io.Writer }
