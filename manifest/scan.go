package manifest

import (
	"encoding/json"
	"errors"
	"fmt"
	"unicode/utf8"
)

// The parser reads the manifest in two passes: validJSON checks the syntax of the whole
// document without allocating, then the helpers below walk the bytes, which are known to be
// valid JSON, keeping slices of the values of known keys. This replaces a RawMessage per value
// and a json.Decoder per object, which cost most of the time of a large manifest.

// object holds the values of the known keys of one JSON object, as slices of the document.
type object struct {
	keys []string
	vals [8][]byte // vals[i] is keys[i]'s value; nil when absent or null (so at most 8 keys)
}

// get returns key's value and whether it was given (and not null).
func (o *object) get(key string) ([]byte, bool) {
	for i, k := range o.keys {
		if k == key {
			return o.vals[i], o.vals[i] != nil
		}
	}
	return nil, false
}

// decodeObject reads the JSON object raw (valid JSON), keeping the values of the known keys
// only. Keys match exactly; a known key given twice is an error, even when one of them is null.
func decodeObject(raw []byte, known ...string) (*object, error) {
	o := &object{keys: known}
	if _, err := o.decode(raw); err != nil {
		return nil, err
	}
	return o, nil
}

// decode reads the JSON object that raw starts with (valid JSON; more may follow it) into o and
// returns the index just past the object.
func (o *object) decode(raw []byte) (int, error) {
	if len(raw) == 0 || raw[0] != '{' {
		return 0, errors.New("must be a JSON object")
	}
	var seen uint8
	i := skipSpace(raw, 1)
	for raw[i] != '}' {
		end := skipString(raw, i)
		key := raw[i:end]
		i = skipSpace(raw, end)
		i = skipSpace(raw, i+1) // the colon
		vend := skipValue(raw, i)
		if k := o.index(key); k >= 0 {
			if seen&(1<<k) != 0 {
				return 0, fmt.Errorf("key %q is given twice", o.keys[k])
			}
			seen |= 1 << k
			if v := raw[i:vend]; string(v) != "null" {
				o.vals[k] = v
			}
		}
		i = skipSpace(raw, vend)
		if raw[i] == ',' {
			i = skipSpace(raw, i+1)
		}
	}
	return i + 1, nil
}

// index is the position of the quoted JSON key among o.keys, or -1.
func (o *object) index(quoted []byte) int {
	body := quoted[1 : len(quoted)-1]
	for i, k := range o.keys {
		if string(body) == k {
			return i
		}
	}
	for _, c := range body {
		if c == '\\' || c >= utf8.RuneSelf {
			// An escaped key can still spell a known one ("n\u0061me"): decode it as
			// encoding/json would. A plain key that matched nothing above cannot.
			var s string
			if json.Unmarshal(quoted, &s) != nil {
				return -1
			}
			for i, k := range o.keys {
				if s == k {
					return i
				}
			}
			return -1
		}
	}
	return -1
}

// eachElement calls fn with every element of the JSON array raw (valid JSON) in order, as the
// rest of the array from that element on: fn returns the element's length, so an element it
// decodes is walked once. It stops at the first error; it reports false if raw is not an array.
func eachElement(raw []byte, fn func(rest []byte) (int, error)) (bool, error) {
	if len(raw) == 0 || raw[0] != '[' {
		return false, nil
	}
	i := skipSpace(raw, 1)
	for raw[i] != ']' {
		n, err := fn(raw[i:])
		if err != nil {
			return true, err
		}
		i = skipSpace(raw, i+n)
		if raw[i] == ',' {
			i = skipSpace(raw, i+1)
		}
	}
	return true, nil
}

// element is the element rest starts with, for an eachElement fn that does not decode it.
func element(rest []byte) []byte { return rest[:skipValue(rest, 0)] }

// countElements is the number of elements of the JSON array raw (valid JSON), or -1.
func countElements(raw []byte) int {
	n := 0
	if ok, _ := eachElement(raw, func(rest []byte) (int, error) { n++; return len(element(rest)), nil }); !ok {
		return -1
	}
	return n
}

// decodeString returns the JSON string raw as encoding/json would decode it; ok is false if raw
// is not a string.
func decodeString(raw []byte) (string, bool) {
	if len(raw) == 0 || raw[0] != '"' {
		return "", false
	}
	body := raw[1 : len(raw)-1]
	for _, c := range body {
		if c == '\\' || c >= utf8.RuneSelf {
			// Escapes and non-ASCII (which encoding/json repairs when invalid) take the
			// general path; plain ASCII, nearly every manifest string, is copied as is.
			var s string // declared here: its address escapes, and the plain path needs none
			if json.Unmarshal(raw, &s) != nil {
				return "", false
			}
			return s, true
		}
	}
	return string(body), true
}

func skipSpace(b []byte, i int) int {
	for i < len(b) {
		switch b[i] {
		case ' ', '\t', '\n', '\r':
			i++
		default:
			return i
		}
	}
	return i
}

// skipString returns the index just past the string starting at b[i] (valid JSON).
func skipString(b []byte, i int) int {
	for i++; ; i++ {
		switch b[i] {
		case '\\':
			i++
		case '"':
			return i + 1
		}
	}
}

// skipValue returns the index just past the value starting at b[i] (valid JSON).
func skipValue(b []byte, i int) int {
	switch b[i] {
	case '"':
		return skipString(b, i)
	case '{', '[':
		depth := 0
		for ; ; i++ {
			switch b[i] {
			case '"':
				i = skipString(b, i) - 1
			case '{', '[':
				depth++
			case '}', ']':
				if depth--; depth == 0 {
					return i + 1
				}
			}
		}
	default: // number, true, false, null
		for i < len(b) {
			switch b[i] {
			case ',', '}', ']', ' ', '\t', '\n', '\r':
				return i
			}
			i++
		}
		return i
	}
}
