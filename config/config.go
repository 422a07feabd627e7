// Package config loads sdupdate's configuration: a systemd-style INI file,
// /etc/sdupdate/sdupdate.conf by default, then its drop-ins
// <file>.d/*.conf in lexical order.
//
//	/etc/sdupdate/
//	├── sdupdate.conf          main file, required (--config FILE replaces it)
//	└── sdupdate.conf.d/
//	    ├── 10-keys.conf       drop-ins, read in lexical order; later values win,
//	    └── 50-proxy.conf      PublicKey= adds to the list, an empty one clears it
//
// The syntax is systemd's (parsed with go-systemd's unit parser): [Section]
// headers, Key=Value lines, whole-line comments starting with # or ;, and a
// trailing backslash continuing a value on the next line. Every mistake is
// an *Error naming the file, line, section and key, because the person
// fixing it is reading that file in an editor.
//
// Empty assignments follow systemd: "PublicKey=" clears the list, "Unit=",
// "BaseURL=" and "HealthCommand=" set the empty string (no restart, no
// override, no health check), and an empty numeric, duration, boolean or
// directory setting means its default.
package config

import (
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"aead.dev/minisign"
	"github.com/spf13/afero"

	"github.com/sdupdate/sdupdate/fsutil"
	"github.com/sdupdate/sdupdate/manifest"
)

// DefaultPath is the main configuration file read without --config.
const DefaultPath = "/etc/sdupdate/sdupdate.conf"

// Config is the merged configuration. Zero values are not meaningful: start
// from Default or Load.
type Config struct {
	// [Source]
	ManifestURL   string
	BaseURL       string        // "" = the manifest's base_url, resolved against ManifestURL
	PublicKeys    []string      // minisign public keys; any one may sign (rotation)
	AllowUnsigned bool          // accept a manifest without signature
	Timeout       time.Duration // TimeoutSec: connect and idle timeout of one request
	Retries       int           // tries per file, in all
	Parallel      int           // files downloaded at once
	// MaxDeltaFileSize is the largest file (and delta base) that is delta-decoded; a larger one
	// is fetched as its compressed object or whole. Both contents are held in memory while
	// decoding. 0: never delta-decode.
	MaxDeltaFileSize int64

	// [Install]
	Directory      string // the managed install, absolute
	StateDirectory string // snapshots, staging, journal, lock, absolute
	KeepSnapshots  int

	// [Agent]
	Unit          string        // "" = never restart
	StartTimeout  time.Duration // StartTimeoutSec: restart job and HealthCommand
	Settle        time.Duration // SettleSec: how long the unit must stay up
	HealthCommand string        // "" = none

	// [Metrics]
	TextfileDirectory string // "" = no metrics; else sdupdate.prom is written here after every run

	// Files lists the files read, in order, for status output and messages.
	Files []string
}

// Default returns the built-in defaults; ManifestURL is left empty because
// there is no sensible default for it.
func Default() Config {
	return Config{
		Timeout:          30 * time.Second,
		Retries:          2,
		Parallel:         4,
		MaxDeltaFileSize: 128 << 20,
		Directory:        "/opt/sd-agent",
		StateDirectory:   "/var/lib/sdupdate",
		KeepSnapshots:    3,
		Unit:             "sd-agent.service",
		StartTimeout:     90 * time.Second,
		Settle:           10 * time.Second,
	}
}

// Error is a configuration mistake. Its text reads
// "FILE:LINE: [Section] Key: MSG", leaving out the parts that do not apply.
type Error struct {
	File    string
	Line    int // 1-based; 0 when the mistake is not on one line
	Section string
	Key     string
	Msg     string

	err error // underlying cause, for errors.Is (e.g. fs.ErrNotExist)
}

func (e *Error) Error() string {
	var b strings.Builder
	if e.File != "" {
		b.WriteString(e.File)
		if e.Line > 0 {
			b.WriteString(":" + strconv.Itoa(e.Line))
		}
		b.WriteString(": ")
	}
	switch {
	case e.Section != "" && e.Key != "":
		fmt.Fprintf(&b, "[%s] %s: ", e.Section, e.Key)
	case e.Section != "":
		fmt.Fprintf(&b, "[%s]: ", e.Section)
	case e.Key != "":
		b.WriteString(e.Key + ": ")
	}
	b.WriteString(e.Msg)
	return b.String()
}

func (e *Error) Unwrap() error { return e.err }

// example is what the missing-file error suggests writing.
const example = `[Source]
ManifestURL=https://updates.example.com/sd-agent/manifest.json
PublicKey=<minisign public key, the second line of the publisher's .pub file>`

// Load reads path and then path+".d/*.conf" in lexical order, and validates
// the merged result. Every error is an *Error.
func Load(fsys afero.Fs, path string) (*Config, error) {
	c, source, err := LoadLocal(fsys, path)
	if err != nil {
		return nil, err
	}
	if source != nil {
		return nil, source
	}
	return c, nil
}

// LoadLocal is Load for the commands that only read the install and the state (status,
// snapshots, verify). They never fetch, so a [Source] that is not configured yet — as in the
// packaged default file — is returned as source, an *Error, beside a configuration that is
// otherwise valid, instead of failing the load: status still answers after a fresh install.
func LoadLocal(fsys afero.Fs, path string) (cfg *Config, source error, err error) {
	c, err := loadFiles(fsys, path)
	if err != nil {
		return nil, nil, err
	}
	return c.cfg, c.validateSource(path), nil
}

// loadFiles reads and merges the files and checks all but the [Source] section's completeness.
func loadFiles(fsys afero.Fs, path string) (*loadState, error) {
	c := Default()
	st := &loadState{cfg: &c, origin: map[string]origin{}}

	data, err := readFile(fsys, path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, &Error{File: path, err: err,
			Msg: "configuration file not found; create it with at least:\n\n" + example}
	}
	if err != nil {
		return nil, &Error{File: path, err: err, Msg: "cannot read: " + unwrapPath(err)}
	}
	if err := st.parseFile(path, data); err != nil {
		return nil, err
	}

	dropins, err := dropInFiles(fsys, path+".d")
	if err != nil {
		return nil, err
	}
	for _, name := range dropins {
		data, err := readFile(fsys, name)
		if err != nil {
			return nil, &Error{File: name, err: err, Msg: "cannot read: " + unwrapPath(err)}
		}
		if err := st.parseFile(name, data); err != nil {
			return nil, err
		}
	}

	if err := st.validate(path); err != nil {
		return nil, err
	}
	return st, nil
}

// readFile reads one configuration file. Only a regular file is read, opened without blocking, so
// a FIFO dropped into sdupdate.conf.d is an error naming it rather than a hang that no signal
// ends. /dev/null reads as empty: a drop-in linked to it masks one, as in systemd.
func readFile(fsys afero.Fs, name string) ([]byte, error) {
	if fi, err := fsys.Stat(name); err == nil && fi.Mode()&os.ModeCharDevice != 0 {
		if null, err := fsys.Stat(os.DevNull); err == nil && os.SameFile(fi, null) {
			return nil, nil
		}
	}
	return fsutil.ReadRegularFile(fsys, name)
}

// dropInFiles lists dir/*.conf in lexical order; a missing dir has none.
func dropInFiles(fsys afero.Fs, dir string) ([]string, error) {
	entries, err := afero.ReadDir(fsys, dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, &Error{File: dir, err: err, Msg: "cannot list drop-ins: " + unwrapPath(err)}
	}
	var names []string
	for _, e := range entries {
		// Directories are skipped; symlinks are followed when read, so a
		// drop-in linked to /dev/null masks one as in systemd.
		if e.IsDir() || !strings.HasSuffix(e.Name(), ".conf") {
			continue
		}
		names = append(names, filepath.Join(dir, e.Name()))
	}
	sort.Strings(names)
	return names, nil
}

// unwrapPath drops the path an *fs.PathError repeats, since Error already
// names the file.
func unwrapPath(err error) string {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err.Error()
	}
	return err.Error()
}

// origin is where a setting's current value came from.
type origin struct {
	file string
	line int
}

type loadState struct {
	cfg    *Config
	origin map[string]origin // by key name
}

func (st *loadState) parseFile(name string, data []byte) error {
	items, err := parse(name, data)
	if err != nil {
		return err
	}
	st.cfg.Files = append(st.cfg.Files, name)
	for _, it := range items {
		keys, ok := schema[it.section]
		if !ok {
			// Checked at the header, so that a misspelt [Sourse] with no
			// options in it is not silently ignored either.
			return &Error{File: name, Line: it.line, Section: it.section,
				Msg: "unknown section; sections are [Source], [Install], [Agent] and [Metrics]"}
		}
		if it.header {
			continue
		}
		set, ok := keys[it.key]
		if !ok {
			return &Error{File: name, Line: it.line, Section: it.section, Key: it.key,
				Msg: "unknown key" + suggest(it.section, it.key)}
		}
		if err := set(st.cfg, it.value); err != nil {
			return &Error{File: name, Line: it.line, Section: it.section, Key: it.key, Msg: err.Error()}
		}
		st.origin[it.key] = origin{name, it.line}
	}
	return nil
}

// suggest names the known key or section a misspelling probably meant.
func suggest(section, key string) string {
	for s, keys := range schema {
		for k := range keys {
			if strings.EqualFold(k, key) && (s != section || k != key) {
				if s == section {
					return fmt.Sprintf(" (did you mean %s?)", k)
				}
				return fmt.Sprintf(" (%s belongs in [%s])", k, s)
			}
		}
	}
	return ""
}

func (st *loadState) errAt(main, section, key, msg string) error {
	e := &Error{File: main, Section: section, Key: key, Msg: msg}
	if o, ok := st.origin[key]; ok {
		e.File, e.Line = o.file, o.line
	}
	return e
}

// validateSource checks that the merged [Source] says where to fetch from and how to trust it.
func (st *loadState) validateSource(main string) error {
	c := st.cfg
	if c.ManifestURL == "" {
		return st.errAt(main, "Source", "ManifestURL",
			"required: where the manifest is published, e.g. ManifestURL=https://updates.example.com/sd-agent/manifest.json")
	}
	if len(c.PublicKeys) == 0 && !c.AllowUnsigned {
		return st.errAt(main, "Source", "PublicKey",
			"no public key configured: add PublicKey=<minisign public key> to check the manifest's signature, or set AllowUnsigned=yes to accept unsigned manifests")
	}
	return nil
}

// validate checks what only the merged result can show, but for validateSource's part.
func (st *loadState) validate(main string) error {
	c := st.cfg
	if c.Directory == c.StateDirectory {
		return st.errAt(main, "Install", "StateDirectory",
			fmt.Sprintf("must differ from Directory (both are %s)", c.Directory))
	}
	if within(c.StateDirectory, c.Directory) {
		return st.errAt(main, "Install", "StateDirectory",
			fmt.Sprintf("%s is inside Directory=%s, where an update could overwrite it", c.StateDirectory, c.Directory))
	}
	if within(c.Directory, c.StateDirectory) {
		return st.errAt(main, "Install", "Directory",
			fmt.Sprintf("%s is inside StateDirectory=%s", c.Directory, c.StateDirectory))
	}
	return nil
}

// within reports whether p is strictly below dir; both are clean and absolute.
func within(p, dir string) bool {
	return strings.HasPrefix(p, strings.TrimSuffix(dir, "/")+"/")
}

// setter parses one value into the config; its error text becomes Error.Msg.
type setter func(c *Config, v string) error

var schema = map[string]map[string]setter{
	"Source": {
		"ManifestURL": func(c *Config, v string) error {
			if v == "" {
				c.ManifestURL = ""
				return nil
			}
			if err := checkURL(v); err != nil {
				return err
			}
			c.ManifestURL = v
			return nil
		},
		"BaseURL": func(c *Config, v string) error {
			if v != "" {
				if err := checkURL(v); err != nil {
					return err
				}
			}
			c.BaseURL = v
			return nil
		},
		"PublicKey": func(c *Config, v string) error {
			if v == "" {
				c.PublicKeys = nil
				return nil
			}
			if err := checkPublicKey(v); err != nil {
				return err
			}
			c.PublicKeys = append(c.PublicKeys, v)
			return nil
		},
		"AllowUnsigned": boolSetter(func(c *Config) *bool { return &c.AllowUnsigned }, false),
		"TimeoutSec":    secSetter(func(c *Config) *time.Duration { return &c.Timeout }, Default().Timeout, false),
		"Retries":       countSetter(func(c *Config) *int { return &c.Retries }, Default().Retries),
		"Parallel":      countSetter(func(c *Config) *int { return &c.Parallel }, Default().Parallel),
		"MaxDeltaFileSize": func(c *Config, v string) error {
			if v == "" {
				c.MaxDeltaFileSize = Default().MaxDeltaFileSize
				return nil
			}
			n, err := parseSize(v)
			if err != nil {
				return err
			}
			c.MaxDeltaFileSize = n
			return nil
		},
	},
	"Install": {
		"Directory":      dirSetter(func(c *Config) *string { return &c.Directory }, Default().Directory),
		"StateDirectory": dirSetter(func(c *Config) *string { return &c.StateDirectory }, Default().StateDirectory),
		"KeepSnapshots":  countSetter(func(c *Config) *int { return &c.KeepSnapshots }, Default().KeepSnapshots),
	},
	"Agent": {
		"Unit": func(c *Config, v string) error {
			if v != "" {
				if err := checkUnitName(v); err != nil {
					return err
				}
			}
			c.Unit = v
			return nil
		},
		"StartTimeoutSec": secSetter(func(c *Config) *time.Duration { return &c.StartTimeout }, Default().StartTimeout, false),
		"SettleSec":       secSetter(func(c *Config) *time.Duration { return &c.Settle }, Default().Settle, true),
		"HealthCommand": func(c *Config, v string) error {
			c.HealthCommand = v
			return nil
		},
	},
	"Metrics": {
		// Off unless set: node_exporter's textfile directory, e.g. /var/lib/prometheus/node-exporter.
		"TextfileDirectory": dirSetter(func(c *Config) *string { return &c.TextfileDirectory }, ""),
	},
}

// checkURL's messages never repeat the URL: it may carry a password, and
// the error already names the file and line.
func checkURL(v string) error {
	u, err := url.Parse(v)
	if err != nil {
		return fmt.Errorf("not a URL: %v", errors.Unwrap(err))
	}
	switch u.Scheme {
	case "https", "http":
		if u.Host == "" {
			return fmt.Errorf("the URL has no host")
		}
	case "file":
		if u.Host != "" && u.Host != "localhost" {
			return fmt.Errorf("a file URL names a local path, as file:///srv/updates/manifest.json")
		}
		if !path.IsAbs(u.Path) {
			return fmt.Errorf("a file URL needs an absolute path, as file:///srv/updates/manifest.json")
		}
	case "":
		return fmt.Errorf("the URL has no scheme; use https://, http:// or file://")
	default:
		return fmt.Errorf("unsupported scheme %q; use https, http or file", u.Scheme)
	}
	return nil
}

func boolSetter(field func(*Config) *bool, def bool) setter {
	return func(c *Config, v string) error {
		if v == "" {
			*field(c) = def
			return nil
		}
		switch strings.ToLower(v) {
		case "1", "yes", "y", "true", "t", "on":
			*field(c) = true
		case "0", "no", "n", "false", "f", "off":
			*field(c) = false
		default:
			return fmt.Errorf("%q is not a boolean; use yes or no", v)
		}
		return nil
	}
}

// countSetter parses an integer that must be at least 1.
func countSetter(field func(*Config) *int, def int) setter {
	return func(c *Config, v string) error {
		if v == "" {
			*field(c) = def
			return nil
		}
		n, err := strconv.Atoi(v)
		if err != nil {
			return fmt.Errorf("%q is not a whole number", v)
		}
		if n < 1 {
			return fmt.Errorf("must be at least 1, not %d", n)
		}
		*field(c) = n
		return nil
	}
}

// secSetter parses whole seconds ("30") or a Go duration ("1m30s").
func secSetter(field func(*Config) *time.Duration, def time.Duration, zeroOK bool) setter {
	return func(c *Config, v string) error {
		if v == "" {
			*field(c) = def
			return nil
		}
		d, err := parseSec(v)
		if err != nil {
			return err
		}
		if d == 0 && !zeroOK {
			return fmt.Errorf("must be more than 0")
		}
		*field(c) = d
		return nil
	}
}

// parseSize reads bytes, with an optional K, M or G suffix (powers of 1024), as systemd does.
func parseSize(v string) (int64, error) {
	bad := fmt.Errorf("%q is not a size; use bytes (1048576) or K, M, G (128M)", v)
	digits, shift := v, 0
	switch strings.ToUpper(v[len(v)-1:]) {
	case "K":
		shift = 10
	case "M":
		shift = 20
	case "G":
		shift = 30
	}
	if shift > 0 {
		digits = v[:len(v)-1]
	}
	if digits == "" || strings.Trim(digits, "0123456789") != "" {
		return 0, bad
	}
	n, err := strconv.ParseInt(digits, 10, 64)
	if err != nil || n > (1<<40)>>shift {
		return 0, fmt.Errorf("%q is more than 1 TiB", v)
	}
	return n << shift, nil
}

func parseSec(v string) (time.Duration, error) {
	bad := fmt.Errorf("%q is not a duration; use whole seconds (30) or a duration (1m30s)", v)
	if strings.Trim(v, "0123456789") == "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n > int64(1<<63-1)/int64(time.Second) {
			return 0, bad
		}
		return time.Duration(n) * time.Second, nil
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		return 0, bad
	}
	if d < 0 {
		return 0, fmt.Errorf("must not be negative")
	}
	return d, nil
}

func dirSetter(field func(*Config) *string, def string) setter {
	return func(c *Config, v string) error {
		if v == "" {
			*field(c) = def
			return nil
		}
		if !filepath.IsAbs(v) {
			return fmt.Errorf("%q is not an absolute path", v)
		}
		v = filepath.Clean(v)
		if v == "/" {
			return fmt.Errorf("cannot be the root directory")
		}
		if len(v) > manifest.MaxDirectory {
			// Every path sdupdate makes below it must stay within PATH_MAX; manifest names are
			// limited to match.
			return fmt.Errorf("is %d bytes long, more than the limit of %d bytes", len(v), manifest.MaxDirectory)
		}
		*field(c) = v
		return nil
	}
}

func checkPublicKey(v string) error {
	var k minisign.PublicKey
	if err := k.UnmarshalText([]byte(v)); err != nil {
		return fmt.Errorf("not a minisign public key (want the base64 line starting with RW from the .pub file): %v",
			strings.TrimPrefix(err.Error(), "minisign: "))
	}
	return nil
}

// unitTypes are the suffixes systemd accepts on unit names.
var unitTypes = []string{".service", ".socket", ".target", ".device", ".mount", ".automount",
	".swap", ".timer", ".path", ".slice", ".scope"}

// checkUnitName follows systemd's unit_name_is_valid: a non-empty prefix of
// [A-Za-z0-9:-_.\\@], a known type suffix, at most 255 bytes, and a template
// ("foo@.service") must have an instance to be restartable.
func checkUnitName(v string) error {
	if len(v) > 255 {
		return fmt.Errorf("unit name longer than 255 bytes")
	}
	dot := strings.LastIndexByte(v, '.')
	if dot <= 0 || !slices.Contains(unitTypes, v[dot:]) {
		return fmt.Errorf("%q is not a unit name; it must end in a unit type, as sd-agent.service", v)
	}
	for _, r := range v[:dot] {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune(":-_.\\@", r)) {
			return fmt.Errorf("%q contains %q, which unit names cannot", v, r)
		}
	}
	switch at := strings.IndexByte(v, '@'); {
	case at == 0:
		return fmt.Errorf("%q is not a unit name: nothing before '@'", v)
	case at == dot-1:
		return fmt.Errorf("%q is a template; name an instance, as %s", v, v[:at+1]+"agent"+v[dot:])
	}
	return nil
}
