package manifest

import (
	"encoding/json"
	"strings"
	"testing"
)

// validCases are documents at the edges of the JSON grammar, each judged by json.Valid.
var validCases = []string{
	``, ` `, `1`, `-`, `-0`, `-01`, `01`, `1.`, `1.5`, `.5`, `1e`, `1e+`, `1E-7`, `1.5e+10`, `+1`, `0x1`,
	`"`, `""`, `"\"`, `"\\"`, `"\u00e9"`, `"\u00G9"`, `"\u00e"`, `"\x"`, `"\/\b\f\n\r\t"`, "\"\x01\"", "\"\x7f\"",
	"\"\xff\xfe\"", "\"tab\tinside\"", `true`, `tru`, `truex`, `false`, `null`, `nul`, `null null`, `NaN`,
	`[]`, `[ ]`, `[1,]`, `[,1]`, `[1 2]`, `[1,2]`, `{}`, `{ }`, `{"a":1}`, `{"a":1,}`, `{"a" 1}`, `{"a":}`,
	`{1:2}`, `{"a":1 "b":2}`, `{"a":[{"b":{}}]}`, `[[]]x`, `[}`, `{]`, `[[]`, `]`, `}`, "\t{\n}\r\n ",
	"\ufeff{}", `{"a":1}{}`, `{"a":"b"}` + "\x00",
}

func TestValidJSONAgreesWithEncodingJSON(t *testing.T) {
	deep := func(n int, open, close, inner string) string {
		return strings.Repeat(open, n) + inner + strings.Repeat(close, n)
	}
	cases := append([]string(nil), validCases...)
	for _, n := range []int{maxNesting - 1, maxNesting, maxNesting + 1} {
		cases = append(cases, deep(n, "[", "]", ""), deep(n-1, "[", "]", "[]"), deep(n, `{"a":`, "}", "1"),
			deep(n-1, `{"a":`, "}", "{}"), deep(n-1, `[{"a":`, "}]", "0"))
	}
	for _, c := range cases {
		if got, want := validJSON([]byte(c)), json.Valid([]byte(c)); got != want {
			t.Errorf("validJSON(%.40q) = %v, json.Valid says %v", c, got, want)
		}
	}
}

func FuzzValidJSON(f *testing.F) {
	for _, c := range validCases {
		f.Add([]byte(c))
	}
	f.Add([]byte(`{"version":"1.2.0","files":[{"name":"a","sha256":"` + sumA + `","size":1,"mode":"0644"}]}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		if got, want := validJSON(data), json.Valid(data); got != want {
			t.Fatalf("validJSON(%q) = %v, json.Valid says %v", data, got, want)
		}
	})
}
