package logging

import (
	"fmt"
	"io"
	"strings"
	"sync"

	"github.com/coreos/go-systemd/v22/journal"
	"github.com/sirupsen/logrus"
)

// sendFunc has the signature of journal.Send.
type sendFunc func(message string, priority journal.Priority, vars map[string]string) error

// journalHook sends each logrus entry to journald as one structured entry.
type journalHook struct {
	send sendFunc
	// fallback gets the entry as a terminal line when journald refuses it (socket gone, full),
	// so a message is never lost silently.
	fallback io.Writer
	format   logrus.Formatter
	mu       sync.Mutex // serialises fallback writes
}

func (h *journalHook) Levels() []logrus.Level { return logrus.AllLevels }

func (h *journalHook) Fire(e *logrus.Entry) error {
	vars := journalFields(e)
	if err := h.send(e.Message, priority(e.Level), vars); err != nil {
		line, ferr := h.format.Format(e)
		if ferr != nil {
			return ferr
		}
		h.mu.Lock()
		defer h.mu.Unlock()
		_, _ = h.fallback.Write(line)
	}
	// Errors are handled above: a hook error would only make logrus print a second,
	// less useful line.
	return nil
}

// reserved are fields journal.Send sets itself or that identify sdupdate; a logrus field with
// such a name is sent under a prefixed name rather than overriding or duplicating them.
var reserved = map[string]bool{"MESSAGE": true, "PRIORITY": true, "SYSLOG_IDENTIFIER": true}

func journalFields(e *logrus.Entry) map[string]string {
	vars := make(map[string]string, len(e.Data)+4)
	for k, v := range e.Data {
		name := FieldName(k)
		if reserved[name] {
			name = "FIELD_" + name
		}
		vars[name] = fieldValue(v)
	}
	vars["SYSLOG_IDENTIFIER"] = Identifier
	if e.HasCaller() {
		vars["CODE_FILE"] = e.Caller.File
		vars["CODE_LINE"] = fmt.Sprint(e.Caller.Line)
		vars["CODE_FUNC"] = e.Caller.Function
	}
	return vars
}

// FieldName maps a logrus field key to a valid journal field name: upper case, every character
// other than A-Z, 0-9 and '_' replaced by '_', no leading '_' (those are trusted fields journald
// sets itself) or digit, at most 64 characters. "error" becomes ERROR.
func FieldName(key string) string {
	var b strings.Builder
	for _, r := range strings.ToUpper(key) {
		if (r >= 'A' && r <= 'Z') || (r >= '0' && r <= '9') || r == '_' {
			b.WriteRune(r)
		} else {
			b.WriteByte('_')
		}
	}
	name := strings.TrimLeft(b.String(), "_")
	if name == "" || (name[0] >= '0' && name[0] <= '9') {
		name = "FIELD_" + name
	}
	if len(name) > 64 {
		name = name[:64]
	}
	return name
}

func fieldValue(v any) string {
	switch v := v.(type) {
	case string:
		return v
	case error:
		return v.Error()
	case fmt.Stringer:
		return v.String()
	}
	return fmt.Sprint(v)
}

func priority(l logrus.Level) journal.Priority {
	switch l {
	case logrus.PanicLevel, logrus.FatalLevel:
		return journal.PriCrit
	case logrus.ErrorLevel:
		return journal.PriErr
	case logrus.WarnLevel:
		return journal.PriWarning
	case logrus.InfoLevel:
		return journal.PriInfo
	}
	return journal.PriDebug
}
