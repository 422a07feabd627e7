package logging

import (
	"bytes"
	"sort"
	"strconv"
	"strings"
	"unicode"

	"github.com/sirupsen/logrus"
)

// TerminalFormatter renders an entry as one line for a person at a terminal:
//
//	sdupdate: warning: download of agent.py failed: HTTP 503 try=1 url=https://…
//
// The level is named for warnings, errors and debug entries only. The reason
// (SDUPDATE_REASON) follows the message; further lines of a multi-line reason, such as a
// health command's output, follow indented. The other SDUPDATE_* fields and MESSAGE_ID are
// for the journal and are not shown; any other field is appended as key=value.
type TerminalFormatter struct{}

func (TerminalFormatter) Format(e *logrus.Entry) ([]byte, error) {
	var b bytes.Buffer
	b.WriteString(Identifier + ": ")
	switch e.Level {
	case logrus.PanicLevel, logrus.FatalLevel, logrus.ErrorLevel:
		b.WriteString("error: ")
	case logrus.WarnLevel:
		b.WriteString("warning: ")
	case logrus.DebugLevel, logrus.TraceLevel:
		b.WriteString("debug: ")
	}
	b.WriteString(e.Message)

	var more []string
	// A message that already says its reason (as journal messages do, to stand alone) is not
	// followed by it a second time.
	if r, ok := e.Data[FieldReason]; ok && !strings.Contains(e.Message, strings.TrimSpace(fieldValue(r))) {
		reason := strings.TrimSpace(fieldValue(r))
		first, rest, _ := strings.Cut(reason, "\n")
		if reason != "" {
			if e.Message != "" {
				b.WriteString(": ")
			}
			b.WriteString(first)
		}
		if rest != "" {
			more = strings.Split(rest, "\n")
		}
	}

	keys := make([]string, 0, len(e.Data))
	for k := range e.Data {
		if k == FieldMessageID || strings.HasPrefix(k, "SDUPDATE_") {
			continue
		}
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		b.WriteByte(' ')
		b.WriteString(k)
		b.WriteByte('=')
		b.WriteString(quoteIfNeeded(fieldValue(e.Data[k])))
	}
	b.WriteByte('\n')
	for _, l := range more {
		b.WriteString("    ")
		b.WriteString(l)
		b.WriteByte('\n')
	}
	return b.Bytes(), nil
}

// quoteIfNeeded quotes a value that would not read back as one key=value token.
func quoteIfNeeded(s string) string {
	if s == "" {
		return `""`
	}
	for _, r := range s {
		if unicode.IsSpace(r) || !unicode.IsPrint(r) || r == '"' || r == '=' {
			return strconv.Quote(s)
		}
	}
	return s
}
