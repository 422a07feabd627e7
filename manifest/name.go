package manifest

import (
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/sdupdate/sdupdate/fsutil"
)

// ReservedName is the top-level name under the install directory that sdupdate keeps for its own
// staging and snapshots when StateDirectory is on another filesystem. No manifest may use it.
const ReservedName = ".sdupdate"

// The length limits, decided once here for every path sdupdate derives from a name. Linux refuses a
// path segment over NAME_MAX (255 bytes) and a whole path over PATH_MAX (4096 bytes with its
// NUL), so a name is refused when it is validated if any path made from it could break either:
//
//   - a segment may not exceed 255 bytes less fsutil.TempNameOverhead, because a file is replaced
//     through a temp name in its own directory (".sdupdate-<12 hex>-<base>", on apply, rollback and
//     recovery alike);
//   - a whole name may not exceed MaxName bytes, and Directory and StateDirectory may not exceed
//     MaxDirectory bytes (the configuration checks that), so that the longest path made from a
//     name — a snapshot's copy, <Directory>/.sdupdate/snapshots/<id>/files/<name>, or its temp
//     name in the install — stays far below PATH_MAX.
//
// Staged files are named by their position, not by the name, so staging adds nothing.
const (
	nameMax = 255 // NAME_MAX
	pathMax = 4095

	// MaxSegment is the longest segment of a name, in bytes.
	MaxSegment = nameMax - fsutil.TempNameOverhead
	// MaxName is the longest name, in bytes.
	MaxName = 2048
	// MaxDirectory is the longest Directory= or StateDirectory=, in bytes.
	MaxDirectory = 1024
	// MaxDerived is the most any path made from a name adds to MaxDirectory and MaxName: the
	// snapshot store under <Directory>/.sdupdate: /.sdupdate/snapshots/<id>/files/, where a
	// snapshot id is at most 128 bytes.
	MaxDerived = len("/.sdupdate/snapshots/") + 128 + len("/files/")
)

// The limits must leave every derived path inside PATH_MAX; this fails to compile otherwise.
var _ = [pathMax - (MaxDirectory + MaxDerived + MaxName + fsutil.TempNameOverhead)]struct{}{}

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
	if top, _, _ := strings.Cut(name, "/"); top == ReservedName {
		return fmt.Sprintf("uses the reserved top-level name %q", ReservedName)
	}
	return ""
}

// charProblem returns why name holds a character no name may, or "".
func charProblem(name string) string {
	// Nearly every name is printable ASCII: one pass over its bytes says so.
	plain := true
	for i := 0; i < len(name) && plain; i++ {
		plain = name[i] >= 0x20 && name[i] < 0x7f && name[i] != '\\'
	}
	if plain {
		return ""
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
	return ""
}

// pathProblem returns why name is not a relative slash path that stays below the directory it is
// joined to, or "" when it is one.
func pathProblem(name string) string {
	if name == "" {
		return "is empty"
	}
	if reason := charProblem(name); reason != "" {
		return reason
	}
	if strings.HasPrefix(name, "/") {
		return "is absolute"
	}
	if len(name) > MaxName {
		return fmt.Sprintf("is %d bytes long, more than the limit of %d bytes", len(name), MaxName)
	}
	// strings.Cut rather than Split: this runs for every entry of a manifest, and a slice of
	// segments per entry was a large share of parsing's allocations.
	for rest, more := name, true; more; {
		var seg string
		seg, rest, more = strings.Cut(rest, "/")
		switch {
		case seg == "" && !more:
			return "ends with a slash"
		case seg == "":
			return "contains an empty segment (\"//\")"
		case seg == ".":
			return "contains a \".\" segment"
		case seg == "..":
			return "contains a \"..\" segment"
		case fsutil.IsTempName(seg):
			// Recovery removes such names as leftovers of an interrupted replace.
			return fmt.Sprintf("has a segment %q shaped like sdupdate's temp names (.sdupdate-<12 hex>-…)", seg)
		case len(seg) > MaxSegment:
			return fmt.Sprintf("has a segment of %d bytes, more than the limit of %d bytes", len(seg), MaxSegment)
		}
	}
	return ""
}
