package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"sync"
	"syscall"

	"github.com/coreos/go-systemd/v22/journal"
	"github.com/sirupsen/logrus"
	"github.com/spf13/cobra"

	"github.com/sdupdate/sdupdate/config"
	"github.com/sdupdate/sdupdate/internal/version"
	"github.com/sdupdate/sdupdate/lock"
	"github.com/sdupdate/sdupdate/logging"
	"github.com/sdupdate/sdupdate/release"
	"github.com/sdupdate/sdupdate/updater"
)

// usageError marks bad arguments: exit 2.
type usageError struct{ err error }

func (e *usageError) Error() string { return e.err.Error() }
func (e *usageError) Unwrap() error { return e.err }

// exitError carries a status that is not a failure, like `check`'s 100.
type exitError struct {
	code int
	msg  string
}

func (e *exitError) Error() string { return e.msg }

// globalOptions are the flags every command takes.
type globalOptions struct {
	configPath string
	verbose    bool
	stdout     io.Writer
	stderr     io.Writer
	json       bool // set by commands that print JSON, so errors are JSON too
	// Under systemd, stdout and stderr are the journal. Every entry is then sent to journald
	// with its fields, and the exit path must not repeat an outcome as a plain line: it would
	// be a second journal entry without SDUPDATE_RUN_ID or MESSAGE_ID.
	stdoutJournal, stderrJournal bool
	logger                       *logrus.Logger // set by newApp
	logged                       loggedEntries
}

// loggedEntries remembers what a command logged, for the exit path.
type loggedEntries struct {
	mu          sync.Mutex
	runID       string // of the last entry that had one
	errorLogged bool
}

func (l *loggedEntries) Levels() []logrus.Level { return logrus.AllLevels }

func (l *loggedEntries) Fire(e *logrus.Entry) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if id, ok := e.Data[logging.FieldRunID].(string); ok {
		l.runID = id
	}
	if e.Level <= logrus.ErrorLevel {
		l.errorLogged = true
	}
	return nil
}

// reportError tells the user why the command failed: on stderr, or under systemd through the
// journal, once. An engine failure was already logged as an event with its fields; anything
// else is logged now, under the run id of the run it ended, if there was one.
func (g *globalOptions) reportError(stderr io.Writer, err error) {
	g.logged.mu.Lock()
	runID, done := g.logged.runID, g.logged.errorLogged
	g.logged.mu.Unlock()
	if done {
		// The engine logged the failure with its reason already, on the terminal too.
		return
	}
	if !g.stderrJournal || g.logger == nil {
		fmt.Fprintf(stderr, "sdupdate: %v\n", err)
		return
	}
	entry := logrus.NewEntry(g.logger)
	if runID != "" {
		entry = entry.WithField(logging.FieldRunID, runID)
	}
	entry.Error(err.Error())
}

const exitStatusHelp = `
EXIT STATUS
  0    success (updated, already up to date, rolled back on request, intact)
  1    failed or refused; the install is unchanged
  2    usage or configuration error
  3    the new version failed to come up; it was rolled back and the old one runs
  4    rollback failed or is incomplete: an operator is needed
  100  check: a newer version is available`

// run is the one exit path: every command returns an error, mapped here to the contract's
// exit status.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	ctx, stop := signal.NotifyContext(ctx, syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	out := &writtenTo{w: stdout}
	g := &globalOptions{stdout: out, stderr: stderr}
	// As logging.New decides: by JOURNAL_STREAM and the descriptors themselves.
	g.stdoutJournal, _ = journal.StdoutIsJournalStream()
	g.stderrJournal, _ = journal.StderrIsJournalStream()
	root := newRootCommand(g)
	root.SetArgs(args)
	root.SetOut(stdout)
	root.SetErr(stderr)
	err := root.ExecuteContext(ctx)
	if err == nil {
		return 0
	}
	code := exitCode(err)
	var ee *exitError
	if errors.As(err, &ee) {
		return code
	}
	// --json promises one document on stdout: a command that already printed its own (verify
	// listing mismatches, say) carries the failure in it, and the error goes to stderr only.
	if g.json && !out.written {
		_ = json.NewEncoder(stdout).Encode(map[string]any{"error": err.Error(), "exit_status": code})
	}
	g.reportError(stderr, err)
	if code == updater.CodeUsage {
		var ue *usageError
		if errors.As(err, &ue) {
			fmt.Fprintln(stderr, "Run 'sdupdate --help' for usage.")
		}
	}
	return code
}

func exitCode(err error) int {
	var (
		ue   *usageError
		ce   *config.Error
		held *lock.HeldError
		ee   *exitError
	)
	switch {
	case errors.As(err, &ee):
		return ee.code
	case errors.As(err, &ue), errors.As(err, &ce), errors.Is(err, release.ErrUsage):
		return updater.CodeUsage
	case errors.As(err, &held):
		return updater.CodeFailed
	}
	return updater.ExitCode(err)
}

func newRootCommand(g *globalOptions) *cobra.Command {
	root := &cobra.Command{
		Use:   "sdupdate",
		Short: "Update the monitoring agent, verified, snapshotted and rolled back if it does not come up",
		Long: `sdupdate updates the monitoring agent installed in a directory on a systemd server.
An update only happens when you ask for it: it fetches the signed manifest, verifies every
file before anything is touched, snapshots the install, replaces files crash-safely, restarts
the agent over D-Bus and rolls back by itself if it does not come up.` + exitStatusHelp,
		SilenceErrors: true,
		SilenceUsage:  true,
		Version:       version.String(),
	}
	root.SetVersionTemplate("sdupdate {{.Version}}\n")
	root.PersistentFlags().StringVarP(&g.configPath, "config", "c", config.DefaultPath, "configuration file (its drop-ins are FILE.d/*.conf)")
	root.PersistentFlags().BoolVarP(&g.verbose, "verbose", "v", false, "log more detail")
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return &usageError{err} })
	// Without a command, or with an unknown one, the answer is the usage and exit 2.
	root.Args = func(_ *cobra.Command, args []string) error {
		if len(args) > 0 {
			return &usageError{fmt.Errorf("unknown command %q", args[0])}
		}
		return nil
	}
	root.RunE = func(cmd *cobra.Command, _ []string) error {
		_ = cmd.Usage()
		return &usageError{fmt.Errorf("a command is required")}
	}
	root.AddCommand(
		newUpdateCommand(g),
		newCheckCommand(g),
		newRollbackCommand(g),
		newSnapshotsCommand(g),
		newStatusCommand(g),
		newVerifyCommand(g),
		newRecoverCommand(g),
		newReleaseCommand(g),
		newDocsCommand(),
	)
	root.CompletionOptions.DisableDefaultCmd = true
	return root
}

// noArgs refuses positional arguments as a usage error.
func noArgs(cmd *cobra.Command, args []string) error {
	if len(args) > 0 {
		return &usageError{fmt.Errorf("%s takes no arguments, got %q", cmd.CommandPath(), args)}
	}
	return nil
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}
