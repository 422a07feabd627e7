// Package logging sets up sdupdate's logrus logger: under systemd every entry goes to journald by
// its native protocol, so structured fields (run id, phase, versions, reason) stay searchable with
// `journalctl SDUPDATE_RUN_ID=…`; in a terminal entries become short readable lines on stderr.
// It also owns the journal field names and the MESSAGE_IDs of the events that
// packaging/sdupdate.catalog explains.
package logging

import (
	"crypto/rand"
	"encoding/hex"
	"io"
	"os"

	"github.com/coreos/go-systemd/v22/journal"
	"github.com/sirupsen/logrus"
)

// Journal fields set by sdupdate. Use them as logrus field keys: under systemd they are sent to
// journald unchanged, in a terminal all but the reason are hidden.
const (
	FieldRunID     = "SDUPDATE_RUN_ID"
	FieldPhase     = "SDUPDATE_PHASE"
	FieldFrom      = "SDUPDATE_FROM_VERSION"
	FieldTo        = "SDUPDATE_TO_VERSION"
	FieldSnapshot  = "SDUPDATE_SNAPSHOT"
	FieldReason    = "SDUPDATE_REASON"
	FieldMessageID = "MESSAGE_ID"
)

// Phase is the value of SDUPDATE_PHASE: which step of a run an entry is about. The values are
// the external contract's; a run's journal has its own, finer states (updater.Phase), each of
// which falls in one of these.
type Phase string

const (
	PhaseCheck    Phase = "check"    // reading the installed version, fetching and verifying the manifest, planning
	PhaseDownload Phase = "download" // fetching and verifying files into staging
	PhaseVerify   Phase = "verify"   // checking installed files against the installed manifest
	PhaseSnapshot Phase = "snapshot" // taking or pruning snapshots
	PhaseApply    Phase = "apply"    // putting the new files in place
	PhaseRestart  Phase = "restart"  // restarting the agent unit
	PhaseHealth   Phase = "health"   // watching the restarted agent
	PhaseRollback Phase = "rollback" // restoring a snapshot
	PhaseRecover  Phase = "recover"  // finishing or undoing an interrupted run
)

// MESSAGE_IDs of the events, one journal entry each. They are part of the external contract and
// are explained in packaging/sdupdate.catalog: never change one.
const (
	MsgUpdateStarted  = "bf4c2abf184640d49aa07cf1b7476dd9"
	MsgUpdated        = "f1036bc39d7c4b42889d12a99964c075"
	MsgUpToDate       = "d8a0f37ffaae4ab79e08d291f285948a"
	MsgFailed         = "65558110b74d4d3085773548dacbdd3d"
	MsgRolledBack     = "059c5cda8c9a4e2083e61b60496746a6"
	MsgRollbackFailed = "3db5fbbe85594affa1c80a59e099daba"
)

// Identifier is the SYSLOG_IDENTIFIER of every journal entry sdupdate sends.
const Identifier = "sdupdate"

// Options configures New.
type Options struct {
	// Stderr receives terminal lines, and journal entries that journald refused.
	// Nil means os.Stderr.
	Stderr io.Writer
	// Verbose logs debug entries too.
	Verbose bool
	// ForceJournal sends entries to journald even when stderr is not the journal stream.
	ForceJournal bool
}

// New returns the logger for one sdupdate process. Under systemd (stderr is the journal stream,
// see JOURNAL_STREAM) entries are sent by the native protocol and nothing is printed, so the
// journal holds each entry once, with its fields. Otherwise entries are readable lines on
// opts.Stderr.
func New(opts Options) *logrus.Logger {
	toJournal := opts.ForceJournal
	if !toJournal {
		// An error only means JOURNAL_STREAM is malformed or stderr cannot be stat'ed: then
		// stderr is not the journal as far as we can tell, and plain lines are the safe choice.
		toJournal, _ = journal.StderrIsJournalStream()
	}
	var send sendFunc
	if toJournal {
		send = journal.Send
	}
	return newLogger(opts, send)
}

// newLogger builds the logger; send is nil for terminal output. Tests pass a fake send.
func newLogger(opts Options, send sendFunc) *logrus.Logger {
	stderr := opts.Stderr
	if stderr == nil {
		stderr = os.Stderr
	}
	l := logrus.New()
	l.SetLevel(logrus.InfoLevel)
	if opts.Verbose {
		l.SetLevel(logrus.DebugLevel)
	}
	term := &TerminalFormatter{}
	if send == nil {
		l.SetOutput(stderr)
		l.SetFormatter(term)
		return l
	}
	// The hook delivers every entry; logrus still formats and writes each one to Out, so make
	// that step free and silent instead of printing a duplicate plain line.
	l.SetOutput(io.Discard)
	l.SetFormatter(discardFormatter{})
	l.AddHook(&journalHook{send: send, fallback: stderr, format: term})
	return l
}

type discardFormatter struct{}

func (discardFormatter) Format(*logrus.Entry) ([]byte, error) { return nil, nil }

// NewRunID returns a random 128-bit id as 32 lowercase hex digits, the form journald uses for
// its own ids (a version 4 UUID without dashes, like sd_id128_randomize), so that
// `journalctl SDUPDATE_RUN_ID=<id>` shows one run whole.
func NewRunID() string {
	var b [16]byte
	// crypto/rand.Read never returns an error on Linux (it aborts the program instead).
	_, _ = rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return hex.EncodeToString(b[:])
}
