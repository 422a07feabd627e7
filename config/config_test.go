package config

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/coreos/go-systemd/v22/unit"
	"github.com/spf13/afero"
)

// Two well-formed minisign public keys (the second from minisign's docs).
const (
	key1 = "RWQf6LRCGA9i53mlYecO4IzT51TGPpvWucNSCh1CBM0QTaLn73Y7GFO3"
	key2 = "RWTAPRW2qy9FjsBiMXp7ZPOj1z6KrXVJtvOlv3dGWl2iQ9UmrsVbwNhd"
)

const confPath = "/etc/sdupdate/sdupdate.conf"

// minimal is the smallest valid file.
const minimal = "[Source]\nManifestURL=https://u.example.com/m.json\nPublicKey=" + key1 + "\n"

func load(t *testing.T, files map[string]string) (*Config, error) {
	t.Helper()
	fsys := afero.NewMemMapFs()
	for name, body := range files {
		if err := afero.WriteFile(fsys, name, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return Load(fsys, confPath)
}

// wantErr asserts err is an *Error at file:line naming key, whose text
// contains each of msgs.
func wantErr(t *testing.T, err error, file string, line int, key string, msgs ...string) *Error {
	t.Helper()
	var ce *Error
	if !errors.As(err, &ce) {
		t.Fatalf("err = %v (%T), want *config.Error", err, err)
	}
	if ce.File != file || ce.Line != line || ce.Key != key {
		t.Fatalf("error at %s:%d key %q, want %s:%d key %q (%v)", ce.File, ce.Line, ce.Key, file, line, key, err)
	}
	for _, m := range msgs {
		if !strings.Contains(err.Error(), m) {
			t.Errorf("error %q does not mention %q", err, m)
		}
	}
	return ce
}

func TestFullFile(t *testing.T) {
	c, err := load(t, map[string]string{confPath: `# sdupdate configuration
[Source]
ManifestURL=https://updates.example.com/sd-agent/manifest.json
BaseURL=https://cdn.example.com/sd-agent/
PublicKey=` + key1 + `
PublicKey=` + key2 + `
AllowUnsigned=no
TimeoutSec=1m30s
Retries=5
Parallel=8
MaxDeltaFileSize=64M

[Install]
Directory=/srv/agent/
StateDirectory=/var/lib/sdupdate-test
KeepSnapshots=7

[Agent]
Unit=agent@main.service
StartTimeoutSec=120
SettleSec=0
HealthCommand=/usr/bin/curl -fsS http://127.0.0.1:17123/health

[Metrics]
TextfileDirectory=/var/lib/prometheus/node-exporter/
`})
	if err != nil {
		t.Fatal(err)
	}
	want := &Config{
		ManifestURL:      "https://updates.example.com/sd-agent/manifest.json",
		BaseURL:          "https://cdn.example.com/sd-agent/",
		PublicKeys:       []string{key1, key2},
		Timeout:          90 * time.Second,
		Retries:          5,
		Parallel:         8,
		MaxDeltaFileSize: 64 << 20,
		Directory:        "/srv/agent",
		StateDirectory:   "/var/lib/sdupdate-test",
		KeepSnapshots:    7,
		Unit:             "agent@main.service",
		StartTimeout:     120 * time.Second,
		Settle:           0,
		HealthCommand:    "/usr/bin/curl -fsS http://127.0.0.1:17123/health",
		Files:            []string{confPath},

		TextfileDirectory: "/var/lib/prometheus/node-exporter",
	}
	if !reflect.DeepEqual(c, want) {
		t.Fatalf("got  %+v\nwant %+v", c, want)
	}
}

func TestDefaults(t *testing.T) {
	c, err := load(t, map[string]string{confPath: minimal})
	if err != nil {
		t.Fatal(err)
	}
	want := Default()
	want.ManifestURL = "https://u.example.com/m.json"
	want.PublicKeys = []string{key1}
	want.Files = []string{confPath}
	if !reflect.DeepEqual(*c, want) {
		t.Fatalf("got  %+v\nwant %+v", *c, want)
	}
	d := Default()
	if d.Timeout != 30*time.Second || d.Retries != 2 || d.Parallel != 4 || d.Directory != "/opt/sd-agent" ||
		d.StateDirectory != "/var/lib/sdupdate" || d.KeepSnapshots != 3 || d.Unit != "sd-agent.service" ||
		d.StartTimeout != 90*time.Second || d.Settle != 10*time.Second || d.HealthCommand != "" || d.AllowUnsigned ||
		d.TextfileDirectory != "" {
		t.Fatalf("Default() = %+v, not the documented defaults", d)
	}
}

func TestMissingMainFile(t *testing.T) {
	_, err := load(t, map[string]string{confPath + ".d/10.conf": minimal})
	ce := wantErr(t, err, confPath, 0, "", "not found", "ManifestURL=", "[Source]")
	if !errors.Is(ce, fs.ErrNotExist) {
		t.Errorf("errors.Is(err, fs.ErrNotExist) = false")
	}
	if !strings.HasPrefix(err.Error(), confPath+": ") {
		t.Errorf("error %q does not start with the confPath looked at", err)
	}
}

func TestDropIns(t *testing.T) {
	d := confPath + ".d/"
	c, err := load(t, map[string]string{
		confPath: minimal + "Retries=3\n[Agent]\nUnit=a.service\n",
		// Read in lexical order: 10 before 20 before 9 (strings, not numbers).
		d + "20-b.conf":    "[Source]\nRetries=5\nPublicKey=" + key2 + "\n",
		d + "10-a.conf":    "[Source]\nRetries=4\n[Agent]\nUnit=\n",
		d + "9-last.conf":  "[Install]\nKeepSnapshots=9\n",
		d + "notes.txt":    "[Bogus]\nnot=read\n",
		d + "dir.conf/x":   "[Bogus]\n",
		d + "30-x.conf.bk": "garbage",
	})
	if err != nil {
		t.Fatal(err)
	}
	if c.Retries != 5 || c.Unit != "" || c.KeepSnapshots != 9 {
		t.Errorf("Retries=%d Unit=%q KeepSnapshots=%d; want 5, \"\", 9", c.Retries, c.Unit, c.KeepSnapshots)
	}
	if !reflect.DeepEqual(c.PublicKeys, []string{key1, key2}) {
		t.Errorf("PublicKeys = %v; want both, in order", c.PublicKeys)
	}
	wantFiles := []string{confPath, d + "10-a.conf", d + "20-b.conf", d + "9-last.conf"}
	if !reflect.DeepEqual(c.Files, wantFiles) {
		t.Errorf("Files = %v\nwant %v", c.Files, wantFiles)
	}
}

func TestEmptyPublicKeyResetsList(t *testing.T) {
	c, err := load(t, map[string]string{
		confPath:                 minimal,
		confPath + ".d/rot.conf": "[Source]\nPublicKey=\nPublicKey=" + key2 + "\n",
	})
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(c.PublicKeys, []string{key2}) {
		t.Fatalf("PublicKeys = %v; want only the key after the reset", c.PublicKeys)
	}
	// A reset with nothing after it leaves no key, which is refused.
	_, err = load(t, map[string]string{
		confPath:                 minimal,
		confPath + ".d/rot.conf": "[Source]\n\nPublicKey=\n",
	})
	wantErr(t, err, confPath+".d/rot.conf", 3, "PublicKey", "PublicKey=", "AllowUnsigned=yes")
}

func TestEmptyAssignmentMeansDefault(t *testing.T) {
	c, err := load(t, map[string]string{confPath: minimal +
		"TimeoutSec=5\nTimeoutSec=\nRetries=9\nRetries=\nAllowUnsigned=yes\nAllowUnsigned=\n" +
		"[Install]\nDirectory=/x\nDirectory=\n[Agent]\nHealthCommand=true\nHealthCommand=\nSettleSec=\n"})
	if err != nil {
		t.Fatal(err)
	}
	d := Default()
	if c.Timeout != d.Timeout || c.Retries != d.Retries || c.AllowUnsigned || c.Directory != d.Directory ||
		c.HealthCommand != "" || c.Settle != d.Settle {
		t.Fatalf("got %+v; empty assignments should restore defaults", c)
	}
}

func TestLineNumbers(t *testing.T) {
	tests := []struct {
		name string
		body string
		line int
		key  string
		msgs []string
	}{
		{"after comments and blanks", "# a\n; b\n\n[Source]\n  # indented comment\nManifestURL=https://x/m\nPublickey=" + key1 + "\n",
			7, "Publickey", []string{"unknown key", "did you mean PublicKey?"}},
		{"key in the wrong section", minimal + "[Install]\nUnit=x.service\n", 5, "Unit", []string{"[Install] Unit", "belongs in [Agent]"}},
		{"repeated key, second one bad", minimal + "Retries=2\nRetries=0\n", 5, "Retries", []string{"at least 1"}},
		{"after a continued value", "[Agent]\nHealthCommand=a \\\n  b \\\n  c\nBogus=1\n", 5, "Bogus", nil},
		{"after a continued comment", "[Agent]\n# comment \\\nBogus=still comment\nBogus=2\n", 4, "Bogus", nil},
		{"comment continued by backslash-space", "[Agent]\n# comment \\ \nBogus=still comment\nBogus=2\n", 4, "Bogus", nil},
		{"blank line ends a continuation", "[Agent]\nHealthCommand=a \\\n\nBogus=3\n", 4, "Bogus", nil},
		{"CRLF", "[Source]\r\nManifestURL=https://x/m\r\n\r\nNope=1\r\n", 4, "Nope", nil},
		{"unknown section", minimal + "\n[Sorce]\nManifestURL=https://x/m\n", 5, "", []string{"[Sorce]", "unknown section"}},
		{"unknown empty section", minimal + "[Agnet]\n", 4, "", []string{"[Agnet]"}},
		{"option before any section", "# c\nManifestURL=https://x/m\n[Source]\n", 2, "ManifestURL", []string{"outside any section"}},
		{"no equals sign", minimal + "Retries 3\n", 4, "", []string{"Retries 3", "Key=Value"}},
		{"no equals sign at end of file", minimal + "Retries", 4, "", []string{"Key=Value"}},
		{"header not closed", minimal + "[Agent\nUnit=a.service\n", 4, "", []string{"']'"}},
		{"garbage after header", minimal + "[Agent] x\n", 4, "", []string{`"x"`}},
		{"bad value", minimal + "[Agent]\nSettleSec=5min\n", 5, "SettleSec", []string{"5min", "1m30s"}},
		{"invalid UTF-8", minimal + "Ret\xa8ries=1\n", 4, "", []string{"UTF-8"}},
		{"long line", minimal + "# " + strings.Repeat("x", 3000) + "\n", 4, "", []string{"longer than"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := load(t, map[string]string{confPath: tt.body})
			wantErr(t, err, confPath, tt.line, tt.key, tt.msgs...)
		})
	}
}

func TestErrorInDropInNamesIt(t *testing.T) {
	d := confPath + ".d/50-x.conf"
	_, err := load(t, map[string]string{confPath: minimal, d: "\n[Install]\nKeepSnapshots=0\n"})
	wantErr(t, err, d, 3, "KeepSnapshots", d+":3: [Install] KeepSnapshots: must be at least 1")
}

func TestErrorText(t *testing.T) {
	tests := []struct {
		e    Error
		want string
	}{
		{Error{File: "f", Line: 3, Section: "S", Key: "K", Msg: "m"}, "f:3: [S] K: m"},
		{Error{File: "f", Section: "S", Key: "K", Msg: "m"}, "f: [S] K: m"},
		{Error{File: "f", Line: 3, Section: "S", Msg: "m"}, "f:3: [S]: m"},
		{Error{File: "f", Line: 3, Msg: "m"}, "f:3: m"},
		{Error{File: "f", Line: 3, Key: "K", Msg: "m"}, "f:3: K: m"},
		{Error{Msg: "m"}, "m"},
	}
	for _, tt := range tests {
		if got := tt.e.Error(); got != tt.want {
			t.Errorf("%+v.Error() = %q, want %q", tt.e, got, tt.want)
		}
	}
}

func TestContinuedValue(t *testing.T) {
	c, err := load(t, map[string]string{confPath: minimal +
		"[Agent]\nHealthCommand=/bin/check \\\n  --port 1 \\\n  --fast\n"})
	if err != nil {
		t.Fatal(err)
	}
	// systemd: backslash-newline becomes a space.
	if c.HealthCommand != "/bin/check    --port 1    --fast" {
		t.Fatalf("HealthCommand = %q", c.HealthCommand)
	}
	// go-systemd ends a value at a line without a trailing backslash, even a
	// comment; what follows is then a line of its own.
	_, err = load(t, map[string]string{confPath: minimal +
		"[Agent]\nHealthCommand=/bin/check \\\n# a comment\n  --fast\n"})
	wantErr(t, err, confPath, 7, "", `"--fast" is not Key=Value`)
	c, err = load(t, map[string]string{confPath: minimal +
		"[Agent]\nHealthCommand=/bin/check \\\n# a comment \\\n  --fast\n"})
	if err != nil {
		t.Fatal(err)
	}
	if c.HealthCommand != "/bin/check    --fast" {
		t.Fatalf("HealthCommand = %q; the comment line should be dropped", c.HealthCommand)
	}
	// A backslash at the very end of the file is dropped.
	c, err = load(t, map[string]string{confPath: minimal + "[Agent]\nHealthCommand=/bin/check \\"})
	if err != nil {
		t.Fatal(err)
	}
	if c.HealthCommand != "/bin/check" {
		t.Fatalf("HealthCommand = %q", c.HealthCommand)
	}
}

func TestValues(t *testing.T) {
	tests := []struct {
		line  string // under [Source] unless it starts with '['
		check func(c *Config) bool
		err   string // substring; "" = valid
	}{
		{"AllowUnsigned=yes", func(c *Config) bool { return c.AllowUnsigned }, ""},
		{"AllowUnsigned=TRUE", func(c *Config) bool { return c.AllowUnsigned }, ""},
		{"AllowUnsigned=on", func(c *Config) bool { return c.AllowUnsigned }, ""},
		{"AllowUnsigned=1", func(c *Config) bool { return c.AllowUnsigned }, ""},
		{"AllowUnsigned=off", func(c *Config) bool { return !c.AllowUnsigned }, ""},
		{"AllowUnsigned=false", func(c *Config) bool { return !c.AllowUnsigned }, ""},
		{"AllowUnsigned=0", func(c *Config) bool { return !c.AllowUnsigned }, ""},
		{"AllowUnsigned=maybe", nil, `"maybe" is not a boolean`},
		{"TimeoutSec=45", func(c *Config) bool { return c.Timeout == 45*time.Second }, ""},
		{"TimeoutSec=1m30s", func(c *Config) bool { return c.Timeout == 90*time.Second }, ""},
		{"TimeoutSec=250ms", func(c *Config) bool { return c.Timeout == 250*time.Millisecond }, ""},
		{"TimeoutSec=0", nil, "more than 0"},
		{"TimeoutSec=-5s", nil, "negative"},
		{"TimeoutSec=5min", nil, "whole seconds"},
		{"TimeoutSec=99999999999999999999", nil, "whole seconds"},
		{"TimeoutSec=infinity", nil, "whole seconds"},
		{"Retries=1", func(c *Config) bool { return c.Retries == 1 }, ""},
		{"Retries=0", nil, "at least 1"},
		{"Parallel=-1", nil, "at least 1"},
		{"Parallel=two", nil, "whole number"},
		{"MaxDeltaFileSize=0", func(c *Config) bool { return c.MaxDeltaFileSize == 0 }, ""},
		{"MaxDeltaFileSize=1048576", func(c *Config) bool { return c.MaxDeltaFileSize == 1<<20 }, ""},
		{"MaxDeltaFileSize=2G", func(c *Config) bool { return c.MaxDeltaFileSize == 2<<30 }, ""},
		{"MaxDeltaFileSize=128m", func(c *Config) bool { return c.MaxDeltaFileSize == 128<<20 }, ""},
		{"MaxDeltaFileSize=-1", nil, "not a size"},
		{"MaxDeltaFileSize=M", nil, "not a size"},
		{"MaxDeltaFileSize=5T", nil, "not a size"},
		{"MaxDeltaFileSize=2000G", nil, "more than 1 TiB"},
		{"PublicKey=RWnotakey", nil, "not a minisign public key"},
		{"ManifestURL=ftp://x/m.json", nil, `unsupported scheme "ftp"`},
		{"ManifestURL=updates.example.com/m.json", nil, "no scheme"},
		{"ManifestURL=https:///m.json", nil, "no host"},
		{"ManifestURL=file:///srv/updates/manifest.json", func(c *Config) bool { return c.ManifestURL == "file:///srv/updates/manifest.json" }, ""},
		{"ManifestURL=file://server/x", nil, "local path"},
		{"ManifestURL=http://10.0.0.1:8080/m.json", func(c *Config) bool { return c.ManifestURL == "http://10.0.0.1:8080/m.json" }, ""},
		{"BaseURL=https://cdn.example.com/files/", func(c *Config) bool { return c.BaseURL == "https://cdn.example.com/files/" }, ""},
		{"BaseURL=gopher://x/", nil, "unsupported scheme"},
		{"BaseURL=https://user:s3cret@/", nil, "no host"},
		{"BaseURL=https://user:s3cr et@x/", nil, "invalid userinfo"},
		{"[Install]\nDirectory=opt/agent", nil, "not an absolute path"},
		{"[Install]\nDirectory=/", nil, "root"},
		{"[Install]\nStateDirectory=/var/lib/x/../y/", func(c *Config) bool { return c.StateDirectory == "/var/lib/y" }, ""},
		{"[Install]\nKeepSnapshots=0", nil, "at least 1"},
		{"[Install]\nDirectory=/" + strings.Repeat("d", 1023), func(c *Config) bool { return len(c.Directory) == 1024 }, ""},
		{"[Install]\nDirectory=/" + strings.Repeat("d", 1024), nil, "1025 bytes long, more than the limit of 1024 bytes"},
		{"[Install]\nStateDirectory=/" + strings.Repeat("s/", 600), nil, "1200 bytes long, more than the limit of 1024 bytes"},
		{"[Agent]\nUnit=", func(c *Config) bool { return c.Unit == "" }, ""},
		{"[Agent]\nUnit=agent.socket", func(c *Config) bool { return c.Unit == "agent.socket" }, ""},
		{"[Agent]\nUnit=sd-agent", nil, "must end in a unit type"},
		{"[Agent]\nUnit=sd-agent.servic", nil, "must end in a unit type"},
		{"[Agent]\nUnit=sd agent.service", nil, `contains ' '`},
		{"[Agent]\nUnit=agent@.service", nil, "template"},
		{"[Agent]\nUnit=.service", nil, "not a unit name"},
		{"[Agent]\nStartTimeoutSec=0", nil, "more than 0"},
		{"[Agent]\nSettleSec=0", func(c *Config) bool { return c.Settle == 0 }, ""},
		{"[Metrics]\nTextfileDirectory=", func(c *Config) bool { return c.TextfileDirectory == "" }, ""},
		{"[Metrics]\nTextfileDirectory=/var/lib/prometheus/node-exporter", func(c *Config) bool { return c.TextfileDirectory == "/var/lib/prometheus/node-exporter" }, ""},
		{"[Metrics]\nTextfileDirectory=node-exporter", nil, "not an absolute path"},
		{"[Metrics]\nTextfile=/x", nil, "unknown key"},
	}
	for _, tt := range tests {
		t.Run(tt.line, func(t *testing.T) {
			body := minimal + tt.line + "\n"
			if !strings.HasPrefix(tt.line, "[") {
				body = minimal + "\n" + tt.line + "\n" // still under [Source]
			}
			c, err := load(t, map[string]string{confPath: body})
			if err != nil && strings.Contains(err.Error(), "s3cr") {
				t.Errorf("error %q repeats the password", err)
			}
			if tt.err != "" {
				line := strings.Count(body, "\n")
				key := tt.line[strings.LastIndex(tt.line, "\n")+1 : strings.IndexByte(tt.line, '=')]
				wantErr(t, err, confPath, line, key, tt.err)
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !tt.check(c) {
				t.Fatalf("%q gave %+v", tt.line, c)
			}
		})
	}
}

func TestValidation(t *testing.T) {
	t.Run("ManifestURL required", func(t *testing.T) {
		_, err := load(t, map[string]string{confPath: "[Source]\nPublicKey=" + key1 + "\n"})
		wantErr(t, err, confPath, 0, "ManifestURL", "required", "ManifestURL=https://")
	})
	t.Run("emptied ManifestURL points at the line", func(t *testing.T) {
		_, err := load(t, map[string]string{confPath: minimal, confPath + ".d/a.conf": "[Source]\nManifestURL=\n"})
		wantErr(t, err, confPath+".d/a.conf", 2, "ManifestURL", "required")
	})
	t.Run("no key and signatures required", func(t *testing.T) {
		_, err := load(t, map[string]string{confPath: "[Source]\nManifestURL=https://x/m\n"})
		wantErr(t, err, confPath, 0, "PublicKey", "add PublicKey=", "AllowUnsigned=yes")
	})
	t.Run("no key but unsigned allowed", func(t *testing.T) {
		c, err := load(t, map[string]string{confPath: "[Source]\nManifestURL=https://x/m\nAllowUnsigned=yes\n"})
		if err != nil || !c.AllowUnsigned || len(c.PublicKeys) != 0 {
			t.Fatalf("%+v, %v", c, err)
		}
	})
	t.Run("same directories", func(t *testing.T) {
		_, err := load(t, map[string]string{confPath: minimal,
			confPath + ".d/a.conf": "[Install]\nDirectory=/srv/a\nStateDirectory=/srv/a/\n"})
		wantErr(t, err, confPath+".d/a.conf", 3, "StateDirectory", "must differ from Directory")
	})
	t.Run("state inside install", func(t *testing.T) {
		_, err := load(t, map[string]string{confPath: minimal + "[Install]\nStateDirectory=/opt/sd-agent/state\n"})
		wantErr(t, err, confPath, 5, "StateDirectory", "inside Directory")
	})
	t.Run("install inside state", func(t *testing.T) {
		_, err := load(t, map[string]string{confPath: minimal + "[Install]\nDirectory=/var/lib/sdupdate/agent\n"})
		wantErr(t, err, confPath, 5, "Directory", "inside StateDirectory")
	})
	t.Run("sibling prefix is not inside", func(t *testing.T) {
		_, err := load(t, map[string]string{confPath: minimal + "[Install]\nDirectory=/srv/a\nStateDirectory=/srv/ab\n"})
		if err != nil {
			t.Fatal(err)
		}
	})
}

// On the real filesystem: --config FILE elsewhere, its FILE.d, and a
// drop-in masked by a symlink to /dev/null as systemd allows.
func TestOsFsAndMasking(t *testing.T) {
	dir := t.TempDir()
	main := filepath.Join(dir, "custom.conf")
	write := func(name, body string) {
		t.Helper()
		if err := os.MkdirAll(filepath.Dir(name), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(name, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write(main, minimal)
	write(filepath.Join(dir, "custom.conf.d", "10.conf"), "[Source]\nRetries=7\n")
	if err := os.Symlink("/dev/null", filepath.Join(dir, "custom.conf.d", "20.conf")); err != nil {
		t.Fatal(err)
	}
	c, err := Load(afero.NewOsFs(), main)
	if err != nil {
		t.Fatal(err)
	}
	if c.Retries != 7 || len(c.Files) != 3 {
		t.Fatalf("Retries=%d Files=%v", c.Retries, c.Files)
	}
	// An unreadable drop-in directory is an error, not silently skipped.
	if os.Geteuid() != 0 {
		if err := os.Chmod(filepath.Join(dir, "custom.conf.d"), 0); err != nil {
			t.Fatal(err)
		}
		defer os.Chmod(filepath.Join(dir, "custom.conf.d"), 0o755)
		_, err := Load(afero.NewOsFs(), main)
		wantErr(t, err, filepath.Join(dir, "custom.conf.d"), 0, "", "permission denied")
	}
}

// scan must find exactly the options go-systemd's parser finds, in the same
// order, each on a line that starts with its key; otherwise line numbers
// would point at the wrong place.
func FuzzScanMatchesParser(f *testing.F) {
	for _, s := range []string{
		minimal,
		"[A]\nK=v \\\nw\nL=x\n",
		"[A]\n# c \\\nK=v\nL=1\n",
		"[A]\n#c \\ \nK=v\n",
		"[A]\nK=\\\n\nL=1\n",
		"[A]\r\nK=v\\\r\nL=w\r\n",
		"[A]\n  [B]  \n K = v \n",
		"[A]\nK=v\\",
		"[[A]\nK=v\n",
		"[A]\nK=a\\\n[B]\\\nL=c\n",
		"\xef\xbb\xbf[A]\nK=v\n",
		"[A]\n\u00a0K=v\n",
		"[A]\nK=v\n;x\\\n\\\nL=w\n",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		items, err := scan("f", []byte(s))
		if err != nil {
			return
		}
		opts, err := unit.DeserializeOptions(strings.NewReader(s))
		if err != nil {
			t.Fatalf("scan accepted what the parser refuses: %v", err)
		}
		lines := strings.Split(s, "\n")
		i := 0
		for _, it := range items {
			if it.header {
				continue
			}
			if i >= len(opts) {
				t.Fatalf("scan found more options than the parser (%d)", len(opts))
			}
			if opts[i].Section != it.section || opts[i].Name != it.key {
				t.Fatalf("option %d: scan [%s] %s, parser [%s] %s", i, it.section, it.key, opts[i].Section, opts[i].Name)
			}
			l := strings.TrimLeftFunc(lines[it.line-1], func(r rune) bool { return strings.ContainsRune(" \t\r\v\f\u0085\u00a0", r) })
			if !strings.HasPrefix(l, it.key) {
				t.Fatalf("option %s on line %d: %q", it.key, it.line, lines[it.line-1])
			}
			i++
		}
		if i != len(opts) {
			t.Fatalf("parser found %d options, scan %d", len(opts), i)
		}
	})
}

// systemd skips a UTF-8 byte order mark at the start of a file; so does sdupdate, in the main
// file and in a drop-in, and the line numbers of errors stay right.
func TestByteOrderMarkIsSkipped(t *testing.T) {
	c, err := load(t, map[string]string{confPath: "\ufeff" + minimal, confPath + ".d/a.conf": "\ufeff[Agent]\nUnit=\n"})
	if err != nil || c.ManifestURL != "https://u.example.com/m.json" || c.Unit != "" {
		t.Fatalf("a file starting with a BOM: %+v, %v", c, err)
	}
	_, err = load(t, map[string]string{confPath: "\ufeff" + minimal + "Frob=1\n"})
	wantErr(t, err, confPath, 4, "Frob", "unknown key")
}
