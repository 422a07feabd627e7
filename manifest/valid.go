package manifest

// validJSON reports whether data is one JSON value with only whitespace around it, exactly as
// json.Valid does (its nesting limit included), for the walk in scan.go to rely on. It does
// what json.Valid does in one loop instead of a state function called per byte, which made the
// syntax check a third of a manifest's parse. Open objects and arrays are kept on a stack of
// its own, so a deeply nested document costs a byte per level, never a goroutine stack frame
// (the JSON validators of fastjson and gjson recurse without a limit). FuzzValidJSON holds it
// to json.Valid.
func validJSON(data []byte) bool {
	var shallow [64]byte
	open := shallow[:0] // '{' or '[' per open container, innermost last
	i := skipSpace(data, 0)
	for {
		// A value starts at i.
		if i >= len(data) {
			return false
		}
		switch data[i] {
		case '{', '[':
			if len(open) >= maxNesting {
				return false
			}
			c := data[i]
			i = skipSpace(data, i+1)
			if i < len(data) && data[i] == c+2 { // '}' is '{'+2, ']' is '['+2
				i++
				break
			}
			open = append(open, c)
			if c == '{' {
				if i = validMember(data, i); i < 0 {
					return false
				}
			}
			continue
		default:
			if i = validScalar(data, i); i < 0 {
				return false
			}
		}
		// After a value: close what it ends, then a comma leads to the next value.
		for {
			i = skipSpace(data, i)
			if len(open) == 0 {
				return i == len(data)
			}
			if i >= len(data) {
				return false
			}
			c, top := data[i], open[len(open)-1]
			if c == top+2 {
				open = open[:len(open)-1]
				i++
				continue
			}
			if c != ',' {
				return false
			}
			i = skipSpace(data, i+1)
			if top == '{' {
				if i = validMember(data, i); i < 0 {
					return false
				}
			}
			break
		}
	}
}

// validScalar returns the index just past the string, number or literal at data[i], or -1.
func validScalar(data []byte, i int) int {
	switch data[i] {
	case '"':
		return validString(data, i)
	case 't':
		return validLiteral(data, i, "true")
	case 'f':
		return validLiteral(data, i, "false")
	case 'n':
		return validLiteral(data, i, "null")
	}
	return validNumber(data, i)
}

// maxNesting is encoding/json's limit on nested objects and arrays.
const maxNesting = 10000

// validMember checks an object's `"key" :` at i and returns where its value starts, or -1.
func validMember(data []byte, i int) int {
	if i >= len(data) || data[i] != '"' {
		return -1
	}
	if i = validString(data, i); i < 0 {
		return -1
	}
	i = skipSpace(data, i)
	if i >= len(data) || data[i] != ':' {
		return -1
	}
	return skipSpace(data, i+1)
}

// plainInString marks the bytes a JSON string holds as they are: all but '"', '\\' and control
// characters. Like encoding/json, any other byte passes, invalid UTF-8 included (decoding
// replaces it).
var plainInString = func() (t [256]bool) {
	for c := 0x20; c < 256; c++ {
		t[c] = c != '"' && c != '\\'
	}
	return t
}()

// validString returns the index just past the JSON string starting at data[i] ('"'), or -1.
func validString(data []byte, i int) int {
	for i++; i < len(data); {
		c := data[i]
		if plainInString[c] {
			i++
			continue
		}
		switch c {
		case '"':
			return i + 1
		case '\\':
			i++
			if i >= len(data) {
				return -1
			}
			switch data[i] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				i++
			case 'u':
				if i+4 >= len(data) || !isHex(data[i+1]) || !isHex(data[i+2]) || !isHex(data[i+3]) || !isHex(data[i+4]) {
					return -1
				}
				i += 5
			default:
				return -1
			}
		default: // a control character
			return -1
		}
	}
	return -1
}

func isHex(c byte) bool { return hexClass[c] != 0 }

// validLiteral returns the index just past lit at data[i], or -1.
func validLiteral(data []byte, i int, lit string) int {
	if len(data)-i < len(lit) || string(data[i:i+len(lit)]) != lit {
		return -1
	}
	return i + len(lit)
}

// validNumber returns the index just past the JSON number at data[i], or -1:
// -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?
func validNumber(data []byte, i int) int {
	if i < len(data) && data[i] == '-' {
		i++
	}
	switch {
	case i < len(data) && data[i] == '0':
		i++
	case i < len(data) && data[i] >= '1' && data[i] <= '9':
		i = digits(data, i)
	default:
		return -1
	}
	if i < len(data) && data[i] == '.' {
		if i = digits(data, i+1); i < 0 {
			return -1
		}
	}
	if i < len(data) && (data[i] == 'e' || data[i] == 'E') {
		i++
		if i < len(data) && (data[i] == '+' || data[i] == '-') {
			i++
		}
		if i = digits(data, i); i < 0 {
			return -1
		}
	}
	return i
}

// digits returns the index past the run of at least one digit at data[i], or -1.
func digits(data []byte, i int) int {
	start := i
	for i < len(data) && data[i] >= '0' && data[i] <= '9' {
		i++
	}
	if i == start {
		return -1
	}
	return i
}
