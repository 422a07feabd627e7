package logging

import (
	"bytes"
	"errors"
	"regexp"
	"strings"
	"testing"

	"github.com/coreos/go-systemd/v22/journal"
	"github.com/sirupsen/logrus"
)

type sent struct {
	msg  string
	pri  journal.Priority
	vars map[string]string
}

// fakeJournal records what would have been sent to journald.
type fakeJournal struct {
	entries []sent
	err     error
}

func (f *fakeJournal) send(msg string, pri journal.Priority, vars map[string]string) error {
	if f.err != nil {
		return f.err
	}
	f.entries = append(f.entries, sent{msg, pri, vars})
	return nil
}

func TestJournalEntryCarriesFields(t *testing.T) {
	var stderr bytes.Buffer
	fj := &fakeJournal{}
	log := newLogger(Options{Stderr: &stderr}, fj.send)

	log.WithFields(logrus.Fields{
		FieldRunID:     "0123456789abcdef0123456789abcdef",
		FieldMessageID: MsgRolledBack,
		FieldReason:    "NRestarts went 3→4",
		"file":         "bin/sd-agent",
		"http.status":  503,
	}).WithError(errors.New("cannot fetch x: boom")).Error("rolled back")

	if len(fj.entries) != 1 {
		t.Fatalf("sent %d entries, want 1", len(fj.entries))
	}
	e := fj.entries[0]
	if e.msg != "rolled back" || e.pri != journal.PriErr {
		t.Errorf("message %q priority %d, want %q %d", e.msg, e.pri, "rolled back", journal.PriErr)
	}
	want := map[string]string{
		"SYSLOG_IDENTIFIER": "sdupdate",
		"SDUPDATE_RUN_ID":   "0123456789abcdef0123456789abcdef",
		"MESSAGE_ID":        MsgRolledBack,
		"SDUPDATE_REASON":   "NRestarts went 3→4",
		"FILE":              "bin/sd-agent",
		"HTTP_STATUS":       "503",
		"ERROR":             "cannot fetch x: boom",
	}
	for k, v := range want {
		if e.vars[k] != v {
			t.Errorf("field %s = %q, want %q", k, e.vars[k], v)
		}
	}
	if len(e.vars) != len(want) {
		t.Errorf("fields %v, want exactly %v", e.vars, want)
	}
	if stderr.Len() != 0 {
		t.Errorf("journal mode printed to stderr: %q", stderr.String())
	}
}

func TestJournalPriorities(t *testing.T) {
	fj := &fakeJournal{}
	log := newLogger(Options{Verbose: true}, fj.send)
	log.Debug("d")
	log.Info("i")
	log.Warn("w")
	log.Error("e")
	want := []journal.Priority{journal.PriDebug, journal.PriInfo, journal.PriWarning, journal.PriErr}
	if len(fj.entries) != len(want) {
		t.Fatalf("sent %d entries, want %d", len(fj.entries), len(want))
	}
	for i, p := range want {
		if fj.entries[i].pri != p {
			t.Errorf("entry %q priority %d, want %d", fj.entries[i].msg, fj.entries[i].pri, p)
		}
	}
}

func TestDebugHiddenUnlessVerbose(t *testing.T) {
	fj := &fakeJournal{}
	log := newLogger(Options{}, fj.send)
	log.Debug("d")
	if len(fj.entries) != 0 {
		t.Errorf("debug entry sent without Verbose")
	}
}

func TestJournalFailureFallsBackToStderr(t *testing.T) {
	var stderr bytes.Buffer
	fj := &fakeJournal{err: errors.New("connection refused")}
	log := newLogger(Options{Stderr: &stderr}, fj.send)
	log.WithField(FieldReason, "signature check failed").Error("update failed")
	if got, want := stderr.String(), "sdupdate: error: update failed: signature check failed\n"; got != want {
		t.Errorf("stderr = %q, want %q", got, want)
	}
}

func TestFieldName(t *testing.T) {
	for in, want := range map[string]string{
		"error":                 "ERROR",
		"SDUPDATE_PHASE":        "SDUPDATE_PHASE",
		"file-name":             "FILE_NAME",
		"_hidden":               "HIDDEN",
		"2fa":                   "FIELD_2FA",
		"":                      "FIELD_",
		"größe":                 "GR__E",
		strings.Repeat("a", 80): strings.Repeat("A", 64),
	} {
		if got := FieldName(in); got != want {
			t.Errorf("FieldName(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestReservedFieldsAreNotOverridden(t *testing.T) {
	fj := &fakeJournal{}
	log := newLogger(Options{}, fj.send)
	log.WithFields(logrus.Fields{"priority": "high", "syslog_identifier": "x"}).Info("m")
	v := fj.entries[0].vars
	if v["SYSLOG_IDENTIFIER"] != "sdupdate" || v["FIELD_PRIORITY"] != "high" || v["FIELD_SYSLOG_IDENTIFIER"] != "x" {
		t.Errorf("fields %v", v)
	}
	if _, ok := v["PRIORITY"]; ok {
		t.Errorf("PRIORITY set from a logrus field: %v", v)
	}
}

func TestTerminalOutput(t *testing.T) {
	tests := []struct {
		desc  string
		level logrus.Level
		msg   string
		data  logrus.Fields
		want  string
	}{
		{"info hides journal-only fields", logrus.InfoLevel, "updating 1.1.0 → 1.2.0",
			logrus.Fields{FieldRunID: "abc", FieldMessageID: MsgUpdateStarted, FieldPhase: "check",
				FieldFrom: "1.1.0", FieldTo: "1.2.0"},
			"sdupdate: updating 1.1.0 → 1.2.0\n"},
		{"warning with fields sorted and quoted", logrus.WarnLevel, "download failed, retrying",
			logrus.Fields{"url": "https://example.com/a b", "try": 1, "file": "agent.py"},
			`sdupdate: warning: download failed, retrying file=agent.py try=1 url="https://example.com/a b"` + "\n"},
		{"error with reason and error", logrus.ErrorLevel, "update failed, install unchanged",
			logrus.Fields{FieldReason: "manifest expired", "error": errors.New("cannot verify: expired")},
			`sdupdate: error: update failed, install unchanged: manifest expired error="cannot verify: expired"` + "\n"},
		{"multi-line reason indented", logrus.ErrorLevel, "rolled back",
			logrus.Fields{FieldReason: "health command exited with status 1:\ncurl: (7) refused\nbye\n"},
			"sdupdate: error: rolled back: health command exited with status 1:\n    curl: (7) refused\n    bye\n"},
		{"debug", logrus.DebugLevel, "polling", nil, "sdupdate: debug: polling\n"},
	}
	for _, tc := range tests {
		t.Run(tc.desc, func(t *testing.T) {
			var out bytes.Buffer
			log := newLogger(Options{Stderr: &out, Verbose: true}, nil)
			log.WithFields(tc.data).Log(tc.level, tc.msg)
			if out.String() != tc.want {
				t.Errorf("got  %q\nwant %q", out.String(), tc.want)
			}
		})
	}
}

func TestNewRunID(t *testing.T) {
	re := regexp.MustCompile(`^[0-9a-f]{32}$`)
	a, b := NewRunID(), NewRunID()
	if !re.MatchString(a) || !re.MatchString(b) {
		t.Fatalf("run ids %q %q are not 32 lowercase hex digits", a, b)
	}
	if a == b {
		t.Errorf("two run ids are equal: %s", a)
	}
}
