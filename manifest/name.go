package manifest

import (
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"
)

// ReservedName is the top-level name under the install directory that sdupdate keeps for its own
// staging and snapshots when StateDirectory is on another filesystem. No manifest may use it.
const ReservedName = ".sdupdate"

// maxSegment is NAME_MAX on Linux filesystems: a longer segment could never be created, so it is
// refused here, before anything is downloaded.
const maxSegment = 255

// ValidateName checks a manifest file name against the contract: a relative slash path that is
// not empty, not absolute, has no "", "." or ".." segment (so no trailing slash or "a//b"), no
// backslash, no control character, is valid UTF-8, and does not start with the reserved
// ".sdupdate". A name that passes can be joined to the install directory without escaping it.
// Symlinks inside the install directory are a separate, filesystem-level check.
func ValidateName(name string) error {
	if reason := nameProblem(name); reason != "" {
		return fmt.Errorf("name %q %s", name, reason)
	}
	return nil
}

// nameProblem returns why name is refused, phrased to follow the word "name", or "" when it is fine.
func nameProblem(name string) string {
	if reason := pathProblem(name); reason != "" {
		return reason
	}
	if strings.Split(name, "/")[0] == ReservedName {
		return fmt.Sprintf("uses the reserved top-level name %q", ReservedName)
	}
	return ""
}

// pathProblem returns why name is not a relative slash path that stays below the directory it is
// joined to, or "" when it is one.
func pathProblem(name string) string {
	if name == "" {
		return "is empty"
	}
	if !utf8.ValidString(name) {
		return "is not valid UTF-8"
	}
	for _, r := range name {
		if unicode.IsControl(r) {
			return fmt.Sprintf("contains the control character %U", r)
		}
	}
	if strings.ContainsRune(name, '\\') {
		return "contains a backslash"
	}
	if strings.HasPrefix(name, "/") {
		return "is absolute"
	}
	segments := strings.Split(name, "/")
	for i, seg := range segments {
		switch {
		case seg == "" && i == len(segments)-1:
			return "ends with a slash"
		case seg == "":
			return "contains an empty segment (\"//\")"
		case seg == ".":
			return "contains a \".\" segment"
		case seg == "..":
			return "contains a \"..\" segment"
		case len(seg) > maxSegment:
			return fmt.Sprintf("has a segment longer than %d bytes", maxSegment)
		}
	}
	return ""
}
