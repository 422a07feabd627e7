package config

import (
	"bytes"
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/coreos/go-systemd/v22/unit"
)

// item is one section header or one option, with the line it starts on.
type item struct {
	header  bool // a [Section] line; key and value are empty
	section string
	key     string
	value   string
	line    int
}

// maxLine is the longest line go-systemd's parser accepts (it refuses
// SYSTEMD_LINE_MAX bytes without a line break).
const maxLine = unit.SYSTEMD_LINE_MAX - 1

// parse reads one file. go-systemd's parser gives the values but no line
// numbers, so scan walks the same text with the same rules to find where
// each option starts, and refuses what the parser would silently skip or
// report without a line (an option before any section, a line without '=').
// The two must agree option by option; a disagreement is reported rather
// than guessed around.
func parse(name string, data []byte) ([]item, error) {
	// systemd skips a UTF-8 byte order mark at the start of a unit file (editors on other
	// systems write one); so does sdupdate, rather than read "\ufeff[Source]" as an option.
	data = bytes.TrimPrefix(data, []byte("\ufeff"))
	items, err := scan(name, data)
	if err != nil {
		return nil, err
	}
	opts, err := unit.DeserializeOptions(bytes.NewReader(data))
	if err != nil {
		return nil, &Error{File: name, Msg: "cannot parse: " + err.Error()}
	}
	i := 0
	for j := range items {
		it := &items[j]
		if it.header {
			continue
		}
		if i >= len(opts) || opts[i].Section != it.section || opts[i].Name != it.key {
			return nil, &Error{File: name, Line: it.line, Section: it.section, Key: it.key,
				Msg: "cannot parse this line unambiguously; check the continuation lines around it"}
		}
		it.value = cleanValue(opts[i].Value)
		i++
	}
	if i != len(opts) {
		return nil, &Error{File: name, Section: opts[i].Section, Key: opts[i].Name,
			Msg: "cannot find the line of this option; check continuation lines"}
	}
	return items, nil
}

// cleanValue turns go-systemd's raw continuation ("a \\\nb") into what
// systemd itself makes of it: the backslash and line break become one
// space, and comment lines inside the continuation are dropped.
func cleanValue(v string) string {
	if !strings.Contains(v, "\\\n") && !strings.HasSuffix(v, "\\") {
		return v
	}
	parts := strings.Split(v, "\\\n")
	kept := parts[:1]
	for _, p := range parts[1:] {
		t := strings.TrimLeftFunc(p, unicode.IsSpace)
		if strings.HasPrefix(t, "#") || strings.HasPrefix(t, ";") {
			continue
		}
		kept = append(kept, p)
	}
	out := strings.Join(kept, " ")
	// A file ending in a backslash leaves it on the value.
	out = strings.TrimSuffix(strings.TrimSpace(out), "\\")
	return strings.TrimSpace(out)
}

// scan mirrors the lexer of go-systemd's unit package (deserialize.go) line
// by line:
//   - leading whitespace is skipped; blank lines are skipped;
//   - '[' starts a header that ends at ']', with only blanks after it;
//   - '#' or ';' starts a comment, which a trailing backslash (after at most
//     one space) continues onto the next line;
//   - anything else is Key=Value; the value continues onto the next line
//     while its line ends in a backslash, and a blank line ends it.
//
// Lines are split at '\n' only; the lexer keeps a '\r' before it, and so
// does this.
func scan(name string, data []byte) ([]item, error) {
	lines := strings.Split(string(data), "\n")
	if n := len(lines); n > 0 && lines[n-1] == "" {
		lines = lines[:n-1]
	}
	var (
		items   []item
		section string
		inSect  bool
	)
	for i := 0; i < len(lines); i++ {
		lineNo := i + 1
		line := lines[i]
		if err := checkLine(name, lineNo, line); err != nil {
			return nil, err
		}
		t := strings.TrimLeftFunc(line, unicode.IsSpace)
		var err error
		switch {
		case t == "":
			continue
		case t[0] == '#' || t[0] == ';':
			// The lexer trims one trailing space, then a backslash continues
			// the comment.
			i, err = followLines(name, lines, i, lines[i], func(l string) bool {
				return strings.HasSuffix(strings.TrimSuffix(l, " "), "\\")
			})
		case t[0] == '[':
			if section, err = parseHeader(name, lineNo, t); err != nil {
				return nil, err
			}
			inSect = true
			items = append(items, item{header: true, section: section, line: lineNo})
		default:
			key, value, kerr := parseKeyValue(name, lineNo, t, section, inSect)
			if kerr != nil {
				return nil, kerr
			}
			items = append(items, item{section: section, key: key, line: lineNo})
			// The value's first part is the rest of this line.
			i, err = followLines(name, lines, i, value, func(v string) bool {
				return strings.TrimSpace(v) != "" && strings.HasSuffix(v, "\\")
			})
		}
		if err != nil {
			return nil, err
		}
	}
	return items, nil
}

// followLines skips the lines after lines[i] that first (the end of line i)
// and then each skipped line continue, checking each; it returns the index of
// the last line skipped.
func followLines(name string, lines []string, i int, first string, continues func(string) bool) (int, error) {
	for l := first; continues(l) && i+1 < len(lines); l = lines[i] {
		i++
		if err := checkLine(name, i+1, lines[i]); err != nil {
			return i, err
		}
	}
	return i, nil
}

// parseHeader returns the section name of the header line t.
func parseHeader(name string, lineNo int, t string) (string, error) {
	end := strings.IndexByte(t, ']')
	if end < 0 {
		return "", &Error{File: name, Line: lineNo, Msg: "section header without closing ']'"}
	}
	section := t[1:end]
	if rest := strings.TrimSpace(t[end+1:]); rest != "" {
		return "", &Error{File: name, Line: lineNo, Section: section,
			Msg: fmt.Sprintf("unexpected %q after the section header", rest)}
	}
	if section == "" {
		return "", &Error{File: name, Line: lineNo, Msg: "empty section name"}
	}
	return section, nil
}

// parseKeyValue returns the key of the Key=Value line t and the first part
// of its value.
func parseKeyValue(name string, lineNo int, t, section string, inSect bool) (key, value string, err error) {
	eq := strings.IndexByte(t, '=')
	if eq < 0 {
		return "", "", &Error{File: name, Line: lineNo, Section: section,
			Msg: fmt.Sprintf("%q is not Key=Value", strings.TrimSpace(t))}
	}
	if strings.ContainsRune(t[:eq], '\r') {
		return "", "", &Error{File: name, Line: lineNo, Section: section, Msg: "carriage return before '='"}
	}
	key = strings.TrimSpace(t[:eq])
	if key == "" {
		return "", "", &Error{File: name, Line: lineNo, Section: section, Msg: "missing key before '='"}
	}
	if !inSect {
		return "", "", &Error{File: name, Line: lineNo, Key: key,
			Msg: "option outside any section; put it under [Source], [Install] or [Agent]"}
	}
	return key, t[eq+1:], nil
}

// checkLine refuses what the parser cannot take or would change: overlong
// lines, and invalid UTF-8 (its lexer turns bad bytes in a key into U+FFFD).
func checkLine(name string, lineNo int, line string) error {
	if len(line) > maxLine {
		return &Error{File: name, Line: lineNo, Msg: fmt.Sprintf("line longer than %d bytes", maxLine)}
	}
	if !utf8.ValidString(line) {
		return &Error{File: name, Line: lineNo, Msg: "not valid UTF-8"}
	}
	return nil
}
