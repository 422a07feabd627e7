package main

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/schollz/progressbar/v3"
	"github.com/sirupsen/logrus"
	"github.com/spf13/afero"
	"golang.org/x/sys/unix"

	"github.com/sdupdate/sdupdate/config"
	"github.com/sdupdate/sdupdate/fetch"
	"github.com/sdupdate/sdupdate/internal/version"
	"github.com/sdupdate/sdupdate/lock"
	"github.com/sdupdate/sdupdate/logging"
	"github.com/sdupdate/sdupdate/sign"
	"github.com/sdupdate/sdupdate/systemd"
	"github.com/sdupdate/sdupdate/updater"
)

// app is one command's wiring: the configuration, the engine on the real filesystem, and the
// real fetcher, verifier and agent gate.
type app struct {
	g      *globalOptions
	cfg    *config.Config
	log    *logrus.Logger
	engine *updater.Engine
	agent  *lazyAgent
	// source is why [Source] cannot be used yet (for a command that never fetches), or nil.
	source error
}

func newApp(g *globalOptions, mode lockMode) (*app, error) {
	log := logging.New(logging.Options{Stderr: g.stderr, Verbose: g.verbose})
	log.AddHook(&g.logged)
	g.logger = log
	fs := afero.NewOsFs()
	cfg, source, err := config.LoadLocal(fs, g.configPath)
	if err != nil {
		return nil, err
	}
	if source != nil && mode != readsLocal {
		return nil, source
	}
	a := &app{g: g, cfg: cfg, log: log, source: source}
	e := &updater.Engine{
		Fs:          fs,
		Config:      cfg,
		Fetcher:     fetch.New(cfg.Timeout),
		Log:         log,
		SelfVersion: version.String(),
		Notify:      systemd.Notifier{}.Status,
		FreeSpace:   freeSpace,
	}
	if len(cfg.PublicKeys) > 0 {
		v, err := sign.NewVerifier(cfg.PublicKeys)
		if err != nil {
			return nil, &config.Error{File: cfg.Files[0], Section: "Source", Key: "PublicKey", Msg: err.Error()}
		}
		e.Verifier = v
	}
	if cfg.Unit != "" {
		a.agent = &lazyAgent{cfg: cfg, log: log}
		e.Agent = a.agent
	}
	if isTerminal(g.stderr) {
		e.NewProgress = func(files int, bytes int64) updater.Progress {
			return &bar{progressbar.DefaultBytes(bytes, fmt.Sprintf("downloading %d files", files))}
		}
	}
	a.engine = e
	return a, nil
}

func (a *app) close() {
	if a.agent != nil {
		a.agent.close()
	}
}

// lockMode says what a command does with the install, and so what it does with the lock.
type lockMode int

const (
	// readsInstall: only reads. It recovers an interrupted run first when it can take the
	// lock; when another sdupdate holds it, that run is live, so the command only reads.
	readsInstall lockMode = iota
	// changesInstall: holds the lock, after finishing or undoing an interrupted run. A second
	// command fails at once.
	changesInstall
	// recoversInstall: holds the lock and the command itself is the recovery.
	recoversInstall
	// readsLocal: readsInstall for a command that never fetches (status, snapshots, verify), so
	// a [Source] not configured yet does not stop it.
	readsLocal
)

// readOnly reports whether the mode only reads: such a command still answers when it cannot
// take the lock or recover.
func (m lockMode) readOnly() bool { return m == readsInstall || m == readsLocal }

// withApp wires a command to the configuration and the engine and runs fn under the lock its
// mode asks for.
func withApp(ctx context.Context, g *globalOptions, mode lockMode, fn func(ctx context.Context, a *app) error) error {
	a, err := newApp(g, mode)
	if err != nil {
		return err
	}
	defer a.close()
	// The lock lives in StateDirectory: nothing is opened there before it passes the checks.
	if err := updater.CheckSeparate(a.engine.Fs, a.cfg.StateDirectory, a.cfg.Directory); err != nil {
		return err
	}
	if err := updater.PrepareStateDirectory(a.engine.Fs, a.cfg.StateDirectory); err != nil {
		if !mode.readOnly() {
			return err
		}
		// status reports it as a finding; the other reading commands refuse with it.
		a.log.WithError(err).Debug("reading without the lock or recovery")
		return fn(ctx, a)
	}
	lk, err := lock.Acquire(updater.LockPath(a.cfg))
	if err != nil {
		if !mode.readOnly() {
			return err
		}
		var held *lock.HeldError
		if errors.As(err, &held) {
			a.log.Debugf("%v; reading without recovering", err)
		} else {
			a.log.WithError(err).Debug("cannot take the lock; reading without recovering")
		}
		return fn(ctx, a)
	}
	defer lk.Release()
	if mode != recoversInstall {
		// The interrupted run's outcome was logged as its own event; this command goes on.
		if _, err := a.engine.Recover(ctx); err != nil {
			if !mode.readOnly() {
				return err
			}
			// A reading command still answers; status shows the unfinished run as a finding.
			a.log.WithError(err).Warn("the interrupted run could not be recovered")
		}
	}
	return fn(ctx, a)
}

func freeSpace(path string) (uint64, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(path, &st); err != nil {
		return 0, fmt.Errorf("statfs %s: %w", path, err)
	}
	return st.Bavail * uint64(st.Bsize), nil
}

type bar struct{ b *progressbar.ProgressBar }

func (b *bar) Add(n int64) { _ = b.b.Add64(n) }
func (b *bar) Done()       { _ = b.b.Finish() }

// lazyAgent dials D-Bus only when the agent is first needed, so commands that never touch the
// agent work without systemd, and a missing bus is reported as what it is.
type lazyAgent struct {
	cfg  *config.Config
	log  *logrus.Logger
	once sync.Once
	gate *systemd.Gate
	conn systemd.Conn
	err  error
}

func (l *lazyAgent) get(ctx context.Context) (*systemd.Gate, error) {
	l.once.Do(func() {
		conn, err := systemd.Dial(ctx)
		if err != nil {
			l.err = err
			return
		}
		l.conn = conn
		l.gate = &systemd.Gate{
			Unit:          l.cfg.Unit,
			StartTimeout:  l.cfg.StartTimeout,
			Settle:        l.cfg.Settle,
			HealthCommand: l.cfg.HealthCommand,
			Conn:          conn,
			Log:           logrus.NewEntry(l.log),
			Notify:        systemd.Notifier{}.Status,
		}
	})
	return l.gate, l.err
}

func (l *lazyAgent) Active(ctx context.Context) (bool, error) {
	g, err := l.get(ctx)
	if err != nil {
		return false, err
	}
	return g.Active(ctx)
}

func (l *lazyAgent) State(ctx context.Context) (systemd.UnitState, error) {
	g, err := l.get(ctx)
	if err != nil {
		return systemd.UnitState{}, err
	}
	return g.State(ctx)
}

func (l *lazyAgent) RestartAndWait(ctx context.Context, log *logrus.Entry) error {
	g, err := l.get(ctx)
	if err != nil {
		return err
	}
	g.Log = log
	return g.RestartAndWait(ctx)
}

func (l *lazyAgent) close() {
	if l.conn != nil {
		l.conn.Close()
	}
}
