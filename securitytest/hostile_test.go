package securitytest

import (
	"bytes"
	"crypto/md5"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// mdoc is a manifest as JSON, for writing hostile ones; mfile is one entry.
type mdoc struct {
	Version string  `json:"version"`
	BaseURL string  `json:"base_url,omitempty"`
	Expires string  `json:"expires,omitempty"`
	Files   []mfile `json:"files"`
}

type mfile struct {
	Name   string `json:"name"`
	SHA256 string `json:"sha256,omitempty"`
	MD5    string `json:"md5,omitempty"`
	Size   *int64 `json:"size,omitempty"`
	Mode   string `json:"mode,omitempty"`
}

func entry(name, content, mode string) mfile {
	sum := sha256.Sum256([]byte(content))
	size := int64(len(content))
	return mfile{Name: name, SHA256: hex.EncodeToString(sum[:]), Size: &size, Mode: mode}
}

func legacyEntry(name, content string) mfile {
	sum := md5.Sum([]byte(content))
	return mfile{Name: name, MD5: hex.EncodeToString(sum[:])}
}

func (e *env) siteManifest() mdoc {
	e.t.Helper()
	var m mdoc
	if err := json.Unmarshal([]byte(readFile(e.t, filepath.Join(e.site, "manifest.json"))), &m); err != nil {
		e.t.Fatal(err)
	}
	return m
}

// publish replaces the site's manifest with m, signed by k with the minisign CLI (a zero k:
// unsigned, and any old signature removed).
func (e *env) publish(m mdoc, k keyPair) {
	e.t.Helper()
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	if err := enc.Encode(m); err != nil {
		e.t.Fatal(err)
	}
	path := filepath.Join(e.site, "manifest.json")
	writeFile(e.t, path, b.String(), 0o644)
	os.Remove(path + ".minisig")
	if k.sec != "" {
		minisignSign(e.t, k, path)
	}
}

// withEntry publishes the current 1.1.0 manifest with f added, signed by the publisher.
func (e *env) withEntry(f mfile) {
	m := e.siteManifest()
	m.Files = append(m.Files, f)
	e.publish(m, e.key)
}

// endless answers with prefix and then 'A's until the client hangs up, counting what it sent.
// contentLength > 0 is declared in the header.
func endless(prefix string, contentLength int64, sent *atomic.Int64) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if contentLength > 0 {
			w.Header().Set("Content-Length", strconv.FormatInt(contentLength, 10))
		}
		n, err := w.Write([]byte(prefix))
		sent.Add(int64(n))
		chunk := bytes.Repeat([]byte("A"), 32<<10)
		for err == nil && sent.Load() < 1<<30 {
			n, err = w.Write(chunk)
			sent.Add(int64(n))
		}
	}
}

// hang sends nothing (prefix "") or the headers and prefix, then waits for the client to give up.
func hang(prefix string, contentLength int) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if prefix != "" {
			w.Header().Set("Content-Length", strconv.Itoa(contentLength))
			w.Write([]byte(prefix))
			w.(http.Flusher).Flush()
		}
		select {
		case <-r.Context().Done():
		case <-time.After(20 * time.Second):
		}
	}
}

// symlinkDir replaces the directory at path with a symlink to target.
func symlinkDir(t *testing.T, path, target string) {
	t.Helper()
	if err := os.RemoveAll(path); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(target, path); err != nil {
		t.Fatal(err)
	}
}

func serve(body string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) { w.Write([]byte(body)) }
}

// escapes would clear the terminal and print a fake line over it.
const escapes = "\x1b[2J\x1b[H\x1b[32mupdated 1.0.0 -> 1.1.0\x07"

// noEscapes checks that nothing the server sent reached the terminal as a control character.
func noEscapes(t *testing.T, e *env, r result) {
	if strings.ContainsAny(r.output(), "\x1b\x07") {
		t.Errorf("the output holds the server's control characters: %q", r.output())
	}
}

// password is the one withPassword puts in ManifestURL.
const password = "s3cret-fleet-pw"

// withPassword makes ManifestURL carry a user and password, as a fleet's basic-auth mirror does.
func (e *env) withPassword() {
	e.t.Helper()
	e.cfg.manifestURL = strings.Replace(e.srv.URL, "http://", "http://fleet:"+password+"@", 1) + "/manifest.json"
	e.writeConfig()
}

// noPassword checks that the password is in no output, status included.
func noPassword(t *testing.T, e *env, r result) {
	outputs := map[string]string{"update": r.output()}
	for _, args := range [][]string{{"status"}, {"status", "--json"}, {"check"}} {
		outputs[strings.Join(args, " ")] = e.sdupdate(args...).output()
	}
	for cmd, out := range outputs {
		if strings.Contains(out, password) {
			t.Errorf("sdupdate %s shows the password of ManifestURL:\n%s", cmd, out)
		}
	}
}

// secret is content that must never reach the terminal or the journal.
const secret = "TOPSECRET-8c1f2e"

type hostileCase struct {
	name string
	// prepare runs before the baseline is installed, setup after it.
	prepare func(t *testing.T, e *env)
	setup   func(t *testing.T, e *env)
	args    []string // default: update
	code    int      // default: 1
	// succeeds: the command must exit 0 (it has nothing to refuse) and still change nothing.
	succeeds bool
	// want are substrings (case-insensitive) the output must hold: the check that failed.
	want []string
	// onlyManifest: nothing but the manifest and its signature may be requested.
	onlyManifest bool
	// noRequests: not even the manifest.
	noRequests bool
	// maxTime bounds how long the run may take.
	maxTime time.Duration
	check   func(t *testing.T, e *env, r result)
}

func TestHostile(t *testing.T) {
	cases := []hostileCase{
		// Signatures.
		{
			name: "no signature",
			setup: func(t *testing.T, e *env) {
				os.Remove(filepath.Join(e.site, "manifest.json.minisig"))
			},
			want:         []string{"signature", "404"},
			onlyManifest: true,
		},
		{
			name: "signature by an unknown key",
			setup: func(t *testing.T, e *env) {
				minisignSign(t, newKey(t, e.keys, "stranger"), filepath.Join(e.site, "manifest.json"))
			},
			want:         []string{"signature check failed", "not a trusted public key"},
			onlyManifest: true,
		},
		{
			name: "manifest modified after signing (one byte)",
			setup: func(t *testing.T, e *env) {
				path := filepath.Join(e.site, "manifest.json")
				data := []byte(readFile(t, path))
				i := bytes.Index(data, []byte(`"1.1.0"`))
				data[i+5] = '9' // version 1.1.9
				writeFile(t, path, string(data), 0o644)
			},
			want:         []string{"signature check failed", "modified"},
			onlyManifest: true,
		},
		{
			name: "trusted comment altered",
			setup: func(t *testing.T, e *env) {
				path := filepath.Join(e.site, "manifest.json.minisig")
				sig := strings.Replace(readFile(t, path), "trusted comment: timestamp:", "trusted comment: timestamp:1", 1)
				writeFile(t, path, sig, 0o644)
			},
			want:         []string{"signature check failed", "trusted comment", "altered"},
			onlyManifest: true,
		},
		{
			name: "signature file is garbage",
			setup: func(t *testing.T, e *env) {
				writeFile(t, filepath.Join(e.site, "manifest.json.minisig"), "<html>not found</html>\n", 0o644)
			},
			want:         []string{"signature check failed", "malformed signature"},
			onlyManifest: true,
		},
		{
			name: "AllowUnsigned=yes does not excuse a bad signature",
			setup: func(t *testing.T, e *env) {
				e.cfg.allowUnsigned = true
				e.writeConfig()
				minisignSign(t, newKey(t, e.keys, "stranger"), filepath.Join(e.site, "manifest.json"))
			},
			want:         []string{"signature check failed", "not a trusted public key"},
			onlyManifest: true,
		},

		// Replay and freeze.
		{
			name: "expired manifest",
			setup: func(t *testing.T, e *env) {
				m := e.siteManifest()
				m.Expires = time.Now().Add(-time.Hour).UTC().Format(time.RFC3339)
				e.publish(m, e.key)
			},
			want:         []string{"expired"},
			onlyManifest: true,
		},
		{
			name: "replayed older signed manifest",
			setup: func(t *testing.T, e *env) {
				e.mustUpdate("1.1.0")
				writeFile(t, filepath.Join(e.site, "manifest.json"), string(e.manifest100), 0o644)
				writeFile(t, filepath.Join(e.site, "manifest.json.minisig"), string(e.sig100), 0o644)
			},
			want:         []string{"refusing to downgrade from 1.1.0 to 1.0.0", "--allow-downgrade"},
			onlyManifest: true,
		},

		// Names.
		{
			name:         "name with ..",
			setup:        func(t *testing.T, e *env) { e.withEntry(entry("../../etc/x", "pwned\n", "0644")) },
			want:         []string{`"../../etc/x"`, `".." segment`},
			onlyManifest: true,
		},
		{
			name:         "absolute name",
			setup:        func(t *testing.T, e *env) { e.withEntry(entry(filepath.Join(e.etc, "x"), "pwned\n", "0644")) },
			want:         []string{"absolute"},
			onlyManifest: true,
		},
		{
			name:         "name with backslash",
			setup:        func(t *testing.T, e *env) { e.withEntry(entry(`..\..\etc\x`, "pwned\n", "0644")) },
			want:         []string{"backslash"},
			onlyManifest: true,
		},
		{
			name:         "name with a control character",
			setup:        func(t *testing.T, e *env) { e.withEntry(entry("lib/x\n", "pwned\n", "0644")) },
			want:         []string{"control character"},
			onlyManifest: true,
		},
		{
			name:         "reserved name .sdupdate/x",
			setup:        func(t *testing.T, e *env) { e.withEntry(entry(".sdupdate/x", "pwned\n", "0644")) },
			want:         []string{"reserved", ".sdupdate"},
			onlyManifest: true,
		},
		{
			name:         "duplicate name",
			setup:        func(t *testing.T, e *env) { e.withEntry(entry("lib/x", "pwned\n", "0644")) },
			want:         []string{`"lib/x"`, "listed twice"},
			onlyManifest: true,
		},
		{
			name:         "name with empty segment",
			setup:        func(t *testing.T, e *env) { e.withEntry(entry("lib//w", "pwned\n", "0644")) },
			want:         []string{"empty segment"},
			onlyManifest: true,
		},

		// Modes.
		{
			name:         "setuid mode",
			setup:        func(t *testing.T, e *env) { e.withEntry(entry("bin/su", "pwned\n", "4755")) },
			want:         []string{"setuid"},
			onlyManifest: true,
		},
		{
			name:         "setgid mode",
			setup:        func(t *testing.T, e *env) { e.withEntry(entry("bin/sg", "pwned\n", "2755")) },
			want:         []string{"setgid"},
			onlyManifest: true,
		},
		{
			name:         "sticky mode",
			setup:        func(t *testing.T, e *env) { e.withEntry(entry("lib/tmp", "pwned\n", "1777")) },
			want:         []string{"sticky"},
			onlyManifest: true,
		},

		// Symlinks inside the install.
		{
			name:         "directory replaced by a symlink to an outside dir (lib -> etc)",
			setup:        func(t *testing.T, e *env) { symlinkDir(t, filepath.Join(e.install, "lib"), e.etc) },
			want:         []string{"symlink", "lib"},
			onlyManifest: true,
		},
		{
			name: "file replaced by a symlink to an outside file",
			setup: func(t *testing.T, e *env) {
				agent := filepath.Join(e.install, "agent.py")
				if err := os.Remove(agent); err != nil {
					t.Fatal(err)
				}
				if err := os.Symlink(filepath.Join(e.etc, "x"), agent); err != nil {
					t.Fatal(err)
				}
			},
			want:         []string{"symlink", "agent.py"},
			onlyManifest: true,
		},
		{
			name:         "file removal through a symlinked directory (share -> etc)",
			setup:        func(t *testing.T, e *env) { symlinkDir(t, filepath.Join(e.install, "share"), e.etc) },
			want:         []string{"refusing to remove", "share/y", "symlink"},
			onlyManifest: true,
		},
		{
			name: "rollback through a symlinked directory",
			setup: func(t *testing.T, e *env) {
				e.mustUpdate("1.1.0")
				symlinkDir(t, filepath.Join(e.install, "lib"), e.etc)
			},
			args:       []string{"rollback"},
			want:       []string{"lib", "symlink"},
			noRequests: true,
		},
		{
			name: "repair through a symlinked directory",
			setup: func(t *testing.T, e *env) {
				e.mustUpdate("1.1.0")
				symlinkDir(t, filepath.Join(e.install, "lib"), e.etc)
			},
			args:         []string{"update", "--repair"},
			want:         []string{"lib", "symlink"},
			onlyManifest: true,
		},
		{
			name: "name of an existing directory",
			setup: func(t *testing.T, e *env) {
				writeFile(t, filepath.Join(e.install, "data", "cache"), "local cache\n", 0o644)
				e.withEntry(entry("data", "pwned\n", "0644"))
			},
			want:         []string{"data", "not a regular file"},
			onlyManifest: true,
		},
		{
			name:    "reserved .sdupdate replaced by a symlink (state on another filesystem)",
			prepare: func(t *testing.T, e *env) { e.stateElsewhere() },
			setup: func(t *testing.T, e *env) {
				reserved := e.reservedInUse()
				if err := os.Rename(reserved, filepath.Join(e.root, "reserved.old")); err != nil {
					t.Fatal(err)
				}
				if err := os.Symlink(e.etc, reserved); err != nil {
					t.Fatal(err)
				}
			},
			want:       []string{".sdupdate is a symlink"},
			noRequests: true,
		},
		{
			name:    "reserved .sdupdate owned by another user",
			prepare: func(t *testing.T, e *env) { e.stateElsewhere() },
			setup: func(t *testing.T, e *env) {
				if err := os.Chown(e.reservedInUse(), 65534, 65534); err != nil {
					t.Fatal(err)
				}
			},
			want:       []string{".sdupdate belongs to uid 65534"},
			noRequests: true,
		},
		{
			name: "planted .sdupdate/staging symlink is not emptied by recover",
			setup: func(t *testing.T, e *env) {
				reserved := filepath.Join(e.install, ".sdupdate")
				if err := os.Mkdir(reserved, 0o700); err != nil {
					t.Fatal(err)
				}
				if err := os.Symlink(e.etc, filepath.Join(reserved, "staging")); err != nil {
					t.Fatal(err)
				}
			},
			args:       []string{"recover"},
			succeeds:   true,
			want:       []string{"ignoring", ".sdupdate/staging is a symlink"},
			noRequests: true,
		},
		{
			name: "planted .sdupdate/staging symlink is not emptied by status",
			setup: func(t *testing.T, e *env) {
				reserved := filepath.Join(e.install, ".sdupdate")
				if err := os.Mkdir(reserved, 0o700); err != nil {
					t.Fatal(err)
				}
				if err := os.Symlink(e.etc, filepath.Join(reserved, "staging")); err != nil {
					t.Fatal(err)
				}
			},
			args:       []string{"status"},
			succeeds:   true,
			want:       []string{"ignoring", ".sdupdate/staging is a symlink"},
			noRequests: true,
		},
		{
			name: "install directory itself replaced by a symlink",
			setup: func(t *testing.T, e *env) {
				if err := os.Rename(e.install, e.install+".real"); err != nil {
					t.Fatal(err)
				}
				if err := os.Symlink(e.etc, e.install); err != nil {
					t.Fatal(err)
				}
			},
			want:       []string{"install directory", "symlink"},
			noRequests: true,
		},

		// Hostile file bodies.
		{
			name: "file body longer than declared (endless)",
			setup: func(t *testing.T, e *env) {
				e.srv.handle("/1.1.0/lib/x", endless(v110["lib/x"], 0, &e.sent))
			},
			want: []string{"lib/x", "after 2 tries", "longer than 22 bytes"},
			check: func(t *testing.T, e *env, r result) {
				if n := e.srv.count("/1.1.0/lib/x"); n != 2 {
					t.Errorf("lib/x was fetched %d times, want Retries=2", n)
				}
				e.srv.waitHandlers(t, 5*time.Second)
				if n := e.sent.Load(); n > 32<<20 {
					t.Errorf("the server sent %d bytes of an endless body: it was not cut", n)
				}
			},
		},
		{
			name: "file body longer than declared (Content-Length)",
			setup: func(t *testing.T, e *env) {
				e.srv.handle("/1.1.0/lib/x", serve(v110["lib/x"]+"and more"))
			},
			want: []string{"lib/x", "after 2 tries", "longer than 22 bytes"},
			check: func(t *testing.T, e *env, r result) {
				if n := e.srv.count("/1.1.0/lib/x"); n != 2 {
					t.Errorf("lib/x was fetched %d times, want Retries=2", n)
				}
			},
		},
		{
			name: "file body shorter than declared",
			setup: func(t *testing.T, e *env) {
				e.srv.handle("/1.1.0/lib/x", serve(v110["lib/x"][:10]))
			},
			want: []string{"lib/x", "after 2 tries", "got 10 bytes, the manifest says 22"},
			check: func(t *testing.T, e *env, r result) {
				if n := e.srv.count("/1.1.0/lib/x"); n != 2 {
					t.Errorf("lib/x was fetched %d times, want Retries=2", n)
				}
			},
		},
		{
			name: "file with the wrong hash",
			setup: func(t *testing.T, e *env) {
				e.srv.handle("/1.1.0/lib/x", serve(strings.ToUpper(v110["lib/x"])))
			},
			want: []string{"lib/x", "after 2 tries", "sha256"},
			check: func(t *testing.T, e *env, r result) {
				if n := e.srv.count("/1.1.0/lib/x"); n != 2 {
					t.Errorf("lib/x was fetched %d times, want Retries=2", n)
				}
			},
		},
		{
			name: "errors never print file contents",
			setup: func(t *testing.T, e *env) {
				body := secret + strings.Repeat("!", len(v110["lib/x"])-len(secret))
				e.srv.handle("/1.1.0/lib/x", serve(body))
				e.srv.handle("/1.1.0/agent.py", func(w http.ResponseWriter, r *http.Request) {
					http.Error(w, secret+" internal error page", http.StatusInternalServerError)
				})
			},
			args: []string{"update", "--verbose"},
			want: []string{"after 2 tries"},
			check: func(t *testing.T, e *env, r result) {
				if strings.Contains(r.output(), "TOPSECRET") {
					t.Errorf("the output shows the served content:\n%s", r.output())
				}
				// The reason is kept for `status`: it must not hold the content either.
				for _, args := range [][]string{{"status"}, {"status", "--json"}} {
					if st := e.sdupdate(args...); strings.Contains(st.output(), "TOPSECRET") {
						t.Errorf("sdupdate %s shows the served content:\n%s", strings.Join(args, " "), st.output())
					}
				}
			},
		},

		{
			name: "terminal escapes in the status line",
			setup: func(t *testing.T, e *env) {
				e.srv.handle("/manifest.json", func(w http.ResponseWriter, r *http.Request) {
					conn, _, err := w.(http.Hijacker).Hijack()
					if err != nil {
						t.Error(err)
						return
					}
					defer conn.Close()
					conn.Write([]byte("HTTP/1.1 503 " + escapes + "\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"))
				})
			},
			want:         []string{"server answered 503 Service Unavailable"},
			onlyManifest: true,
			check:        noEscapes,
		},
		{
			name: "terminal escapes in the version of an unsigned manifest",
			setup: func(t *testing.T, e *env) {
				e.cfg.noKeys, e.cfg.allowUnsigned = true, true
				e.writeConfig()
				m := e.siteManifest()
				m.Version = "1.2.0" + escapes
				e.publish(m, keyPair{})
			},
			want:         []string{"cannot parse version"},
			onlyManifest: true,
			check:        noEscapes,
		},

		{
			name: "the password in ManifestURL is never shown (refused manifest)",
			setup: func(t *testing.T, e *env) {
				e.withPassword()
				os.Remove(filepath.Join(e.site, "manifest.json.minisig"))
			},
			want:         []string{"signature", "404"},
			onlyManifest: true,
			check:        noPassword,
		},
		{
			name: "the password in ManifestURL is never shown (refused file)",
			setup: func(t *testing.T, e *env) {
				e.withPassword()
				e.srv.handle("/1.1.0/lib/x", serve(strings.ToUpper(v110["lib/x"])))
			},
			want:  []string{"lib/x", "sha256"},
			check: noPassword,
		},

		// Hostile servers.
		{
			name: "server hangs before answering the manifest",
			setup: func(t *testing.T, e *env) {
				e.srv.handle("/manifest.json", hang("", 0))
			},
			want:         []string{"manifest", "timeout"},
			onlyManifest: true,
			maxTime:      5 * time.Second,
		},
		{
			name: "server hangs in the middle of a file",
			setup: func(t *testing.T, e *env) {
				e.srv.handle("/1.1.0/lib/x", hang(v110["lib/x"][:5], len(v110["lib/x"])))
			},
			want:    []string{"lib/x", "after 2 tries", "no data received for 1s"},
			maxTime: 6 * time.Second,
			check: func(t *testing.T, e *env, r result) {
				if n := e.srv.count("/1.1.0/lib/x"); n != 2 {
					t.Errorf("lib/x was fetched %d times, want Retries=2", n)
				}
			},
		},
		{
			name: "endless manifest",
			setup: func(t *testing.T, e *env) {
				e.srv.handle("/manifest.json", endless(`{"version":"9.0.0","files":[{"name":"`, 0, &e.sent))
			},
			want:         []string{"manifest", "longer than 16777216 bytes"},
			onlyManifest: true,
			check: func(t *testing.T, e *env, r result) {
				e.srv.waitHandlers(t, 5*time.Second)
				if n := e.sent.Load(); n > 32<<20 {
					t.Errorf("the server sent %d bytes of an endless manifest: it was not cut at 16 MiB", n)
				}
			},
		},
		{
			name: "manifest declaring 1 GiB",
			setup: func(t *testing.T, e *env) {
				e.srv.handle("/manifest.json", endless(`{"version":"9.0.0","files":[{"name":"`, 1<<30, &e.sent))
			},
			want:         []string{"manifest", "longer than 16777216 bytes"},
			onlyManifest: true,
			check: func(t *testing.T, e *env, r result) {
				e.srv.waitHandlers(t, 5*time.Second)
				if n := e.sent.Load(); n >= 16<<20 {
					t.Errorf("the server sent %d bytes of a manifest declared as 1 GiB: it was read, not refused", n)
				}
			},
		},
		{
			name: "manifest redirected to file://",
			setup: func(t *testing.T, e *env) {
				// A valid signed manifest sits there: the refusal is about the scheme.
				e.srv.handle("/manifest.json", func(w http.ResponseWriter, r *http.Request) {
					http.Redirect(w, r, "file://"+filepath.Join(e.site, "manifest.json"), http.StatusFound)
				})
			},
			want:         []string{"redirect", "scheme"},
			onlyManifest: true,
		},
		{
			name: "file redirected from http to https",
			setup: func(t *testing.T, e *env) {
				tls := httptest.NewTLSServer(http.FileServer(http.Dir(e.site)))
				t.Cleanup(tls.Close)
				e.srv.handle("/1.1.0/lib/x", func(w http.ResponseWriter, r *http.Request) {
					http.Redirect(w, r, tls.URL+r.URL.Path, http.StatusFound)
				})
			},
			want: []string{"lib/x", "redirect", "changes the scheme from http to https"},
			check: func(t *testing.T, e *env, r result) {
				if n := e.srv.count("/1.1.0/lib/x"); n != 1 {
					t.Errorf("lib/x was fetched %d times; a refused redirect is not worth a retry", n)
				}
			},
		},
		{
			name: "redirect loop",
			setup: func(t *testing.T, e *env) {
				e.srv.handle("/manifest.json", func(w http.ResponseWriter, r *http.Request) {
					http.Redirect(w, r, "/manifest.json", http.StatusFound)
				})
			},
			want:         []string{"stopped after 10 redirects"},
			onlyManifest: true,
			check: func(t *testing.T, e *env, r result) {
				if n := e.srv.count("/manifest.json"); n > 11 {
					t.Errorf("the manifest was asked for %d times", n)
				}
			},
		},
		{
			name: "endless signature file",
			setup: func(t *testing.T, e *env) {
				e.srv.handle("/manifest.json.minisig", endless("untrusted comment: ", 0, &e.sent))
			},
			want:         []string{"signature", "longer than 65536 bytes"},
			onlyManifest: true,
			check: func(t *testing.T, e *env, r result) {
				e.srv.waitHandlers(t, 5*time.Second)
			},
		},
		{
			name: "https server with a certificate no CA vouches for",
			setup: func(t *testing.T, e *env) {
				tls := httptest.NewTLSServer(http.FileServer(http.Dir(e.site)))
				t.Cleanup(tls.Close)
				e.cfg.manifestURL = tls.URL + "/manifest.json"
				e.writeConfig()
			},
			want:       []string{"manifest", "certificate"},
			noRequests: true,
		},
		{
			name: "check refuses a modified manifest too",
			setup: func(t *testing.T, e *env) {
				path := filepath.Join(e.site, "manifest.json")
				writeFile(t, path, strings.Replace(readFile(t, path), `"1.1.0"`, `"1.1.9"`, 1), 0o644)
			},
			args:         []string{"check"},
			want:         []string{"signature check failed", "modified"},
			onlyManifest: true,
		},
		{
			name:         "update --dry-run refuses an unsigned manifest too",
			setup:        func(t *testing.T, e *env) { os.Remove(filepath.Join(e.site, "manifest.json.minisig")) },
			args:         []string{"update", "--dry-run"},
			want:         []string{"signature", "404"},
			onlyManifest: true,
		},
		{
			name: "signed base_url pointing at local files",
			setup: func(t *testing.T, e *env) {
				m := e.siteManifest()
				m.BaseURL = "file://" + e.etc + "/"
				e.publish(m, e.key)
			},
			want:         []string{"base_url", "local files"},
			onlyManifest: true,
		},

		// Legacy and unsigned.
		{
			name: "legacy md5 manifest without AllowUnsigned=yes",
			setup: func(t *testing.T, e *env) {
				e.publish(mdoc{Version: "1.2.0", Files: []mfile{legacyEntry("agent.py", "print('legacy')\n")}}, e.key)
			},
			want:         []string{"legacy md5", "AllowUnsigned=yes"},
			onlyManifest: true,
		},
		{
			name: "missing PublicKey with AllowUnsigned=no",
			setup: func(t *testing.T, e *env) {
				e.cfg.noKeys = true
				e.writeConfig()
			},
			code:       2,
			want:       []string{"PublicKey", "AllowUnsigned=yes"},
			noRequests: true,
		},
	}

	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t)
			if c.prepare != nil {
				c.prepare(t, e)
			}
			e.baseline()
			c.setup(t, e)
			e.srv.reset()
			before := e.capture()
			args := c.args
			if args == nil {
				args = []string{"update"}
			}
			r := e.sdupdate(args...)
			t.Logf("sdupdate %s: exit %d in %v\n%s", strings.Join(args, " "), r.code, r.elapsed.Round(time.Millisecond), r.output())

			wantCode := c.code
			switch {
			case c.succeeds:
				wantCode = 0
			case wantCode == 0:
				wantCode = 1
			}
			if r.code != wantCode {
				t.Errorf("exit status %d, want %d", r.code, wantCode)
			}
			low := strings.ToLower(r.output())
			for _, w := range c.want {
				if !strings.Contains(low, strings.ToLower(w)) {
					t.Errorf("the output does not say %q", w)
				}
			}
			e.assertUnchanged(before)
			paths := e.srv.paths()
			switch {
			case c.noRequests && len(paths) > 0:
				t.Errorf("requests were made: %v", paths)
			case c.onlyManifest:
				for _, p := range paths {
					if !isManifestPath(p) {
						t.Errorf("%s was requested although the manifest was refused", p)
					}
				}
			}
			if c.maxTime > 0 && r.elapsed > c.maxTime {
				t.Errorf("the run took %v, want at most %v", r.elapsed, c.maxTime)
			}
			if c.check != nil {
				c.check(t, e, r)
			}
		})
	}
}
