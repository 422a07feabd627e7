package manifest

import (
	"fmt"
	"strconv"
	"strings"

	goversion "github.com/hashicorp/go-version"
)

// CompareVersions returns -1, 0 or 1 as a is older than, the same as, or newer than b.
//
// Both semver ("1.2.0-rc.1") and the original updater's Python style ("1.0.0b4", "1.0.0rc1") are
// understood: a pre-release sorts before its release, and numbers sort as numbers, in the
// release segments (1.10.0 > 1.9.0) and in pre-release tags alike (1.0.0b10 > 1.0.0b9; plain
// hashicorp/go-version compares "b10" and "b9" as strings). So "1.0.0rc1" and "1.0.0-rc.1" are
// the same version. Build metadata ("+abc") is ignored, as semver says.
func CompareVersions(a, b string) (int, error) {
	va, err := parseVersion(a)
	if err != nil {
		return 0, err
	}
	vb, err := parseVersion(b)
	if err != nil {
		return 0, err
	}
	return va.Compare(vb), nil
}

// parseVersion parses v with hashicorp/go-version, then splits the pre-release tag where letters
// meet digits ("rc1" becomes "rc.1") so that go-version compares the number part numerically.
func parseVersion(v string) (*goversion.Version, error) {
	if v == "" {
		return nil, fmt.Errorf("version is empty")
	}
	parsed, err := goversion.NewVersion(v)
	if err != nil {
		// Not wrapped: go-version's message repeats v unquoted, and v comes from the server,
		// so it could hold terminal escape sequences.
		return nil, fmt.Errorf("cannot parse version %q: not a version such as 1.2.0, 1.2.0-rc.1 or 1.0.0b4", v)
	}
	pre := parsed.Prerelease()
	if pre == "" {
		return parsed, nil
	}
	segs := parsed.Segments64()
	parts := make([]string, len(segs))
	for i, s := range segs {
		parts[i] = strconv.FormatInt(s, 10)
	}
	normal, err := goversion.NewVersion(strings.Join(parts, ".") + "-" + splitPrerelease(pre))
	if err != nil {
		// Cannot happen for a tag go-version accepted (only dots are added between
		// non-empty runs), but the unsplit form is still a sound order.
		return parsed, nil
	}
	return normal, nil
}

// splitPrerelease inserts a dot wherever a digit meets a non-digit inside a dot-separated
// identifier: "b10" → "b.10", "rc1.2" → "rc.1.2".
func splitPrerelease(pre string) string {
	var sb strings.Builder
	for i := 0; i < len(pre); i++ {
		c := pre[i]
		if i > 0 && c != '.' && pre[i-1] != '.' && isDigit(c) != isDigit(pre[i-1]) {
			sb.WriteByte('.')
		}
		sb.WriteByte(c)
	}
	return sb.String()
}

func isDigit(c byte) bool { return c >= '0' && c <= '9' }
