// Package human renders values for people: in the CLI's output and in the engine's log
// messages alike, so both say a version, a size or a count the same way.
package human

import (
	"fmt"
	"strconv"
	"strings"
	"unicode"
)

// Name renders a file name from a manifest for a person. A name with a character that does not
// print as itself — a bidi override, a zero-width space, any other format or control character —
// is shown quoted with that character escaped ("a\u202etxt.exe"), as ls quotes such names: on a
// terminal it could make another name appear. Other names are shown as they are.
func Name(s string) string {
	if strings.IndexFunc(s, func(r rune) bool { return !unicode.IsPrint(r) && r != ' ' }) < 0 {
		return s
	}
	return strconv.Quote(s)
}

// Version renders a version: "" (not known yet, as before the first update) is "unknown".
func Version(v string) string {
	if v == "" {
		return "unknown"
	}
	return v
}

// Bytes renders a byte count in binary units with one decimal: "512 B", "1.5 MiB".
func Bytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

// Plural picks one or many by n.
func Plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}
