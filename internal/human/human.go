// Package human renders values for people: in the CLI's output and in the engine's log
// messages alike, so both say a version, a size or a count the same way.
package human

import "fmt"

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
