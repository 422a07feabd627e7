package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/sdupdate/sdupdate/internal/fixture"
	"github.com/sdupdate/sdupdate/internal/sandbox"
	"github.com/sdupdate/sdupdate/logging"
)

// sandboxAvailable reports whether a real systemd can be booted here for the demo.
func sandboxAvailable() error { return sandbox.Available() }

// The units as an operator types them.
var (
	updateUnit = strings.TrimSuffix(fixture.UpdateUnit, ".service")
	agentUnit  = strings.TrimSuffix(fixture.AgentUnitID, ".service")
)

// server is the demo's server: a real systemd booted in a throwaway namespace, with sdupdate,
// its unit and the agent's unit installed. Commands run on it are shown as a root shell would.
type server struct {
	ctx    context.Context
	sb     *sandbox.Sandbox
	prompt string
}

// runSandbox tells the story under a real systemd: install and start the agent, update it,
// watch a broken release roll back by itself, read the journal, roll back by hand. The
// sandbox is always closed, also on an error or Ctrl-C.
func (d *demo) runSandbox() (err error) {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	began := time.Now()

	step("the publisher releases 1.0.0, signed with minisign, and serves it over HTTP")
	if err := d.publish("1.0.0", false); err != nil {
		return err
	}
	site := fixture.Serve(d.site)
	defer site.Close()
	fmt.Printf("# serving %s at %s\n", d.site, site.URL())

	step("a server boots: a real systemd in a throwaway namespace")
	booted := time.Now()
	sb, err := fixture.Host{
		Name: "demo-server",
		Bin:  d.bin,
		Config: fixture.Config{
			ManifestURL: site.ManifestURL(), PublicKey: fixture.PublicKeyLine(d.pubkey),
			Settle: 3 * time.Second, StartTimeout: 10 * time.Second,
		},
	}.Boot(ctx)
	if err != nil {
		return err
	}
	defer func() {
		if cerr := sb.Close(); cerr != nil && err == nil {
			err = cerr
		}
	}()
	bootTime := time.Since(booted)
	fmt.Printf("# booted in %v with /usr/bin/sdupdate, the repository's %s and catalog, and the agent's %s\n",
		bootTime.Round(time.Millisecond), fixture.UpdateUnit, fixture.AgentUnitID)
	s := &server{ctx: ctx, sb: sb, prompt: "root@" + sb.Name() + ":~#"}
	if err := s.story(d); err != nil {
		if ctx.Err() != nil {
			return fmt.Errorf("interrupted; the sandbox is being shut down")
		}
		return err
	}
	fmt.Printf("\n# the whole story took %v under a real systemd (boot: %v)\n",
		time.Since(began).Round(100*time.Millisecond), bootTime.Round(time.Millisecond))
	return nil
}

// story tells the demo in its acts, each on the state the one before left.
func (s *server) story(d *demo) error {
	if _, err := s.sh("cat", fixture.ConfigFile); err != nil {
		return err
	}
	for _, act := range []func(*demo) error{s.firstInstall, s.goodUpdate, s.brokenUpdate, s.journal, s.rollback} {
		if err := act(d); err != nil {
			return err
		}
	}
	return nil
}

// firstInstall installs 1.0.0 and starts the agent.
func (s *server) firstInstall(*demo) error {
	step("install 1.0.0 (the agent is not running yet, so it is left stopped), then start the agent")
	if err := s.want(0, "systemctl", "start", updateUnit); err != nil {
		return err
	}
	if err := s.want(0, "systemctl", "start", agentUnit); err != nil {
		return err
	}
	return s.agentStatus("1.0.0")
}

// goodUpdate publishes 1.1.0 and updates to it, restarting the agent.
func (s *server) goodUpdate(d *demo) error {
	step("the publisher releases 1.1.0")
	if err := d.publish("1.1.0", false); err != nil {
		return err
	}
	step("update: systemctl starts sdupdate, which restarts the agent and watches it settle")
	before, err := s.mainPID()
	if err != nil {
		return err
	}
	if err := s.want(0, "systemctl", "start", updateUnit); err != nil {
		return err
	}
	after, err := s.mainPID()
	if err != nil {
		return err
	}
	fmt.Printf("# the agent's MainPID went %s -> %s: it was restarted\n", before, after)
	return s.agentStatus("1.1.0")
}

// brokenUpdate publishes a 1.2.0 that does not come up: the update rolls itself back.
func (s *server) brokenUpdate(d *demo) error {
	step("the publisher releases a broken 1.2.0 (it exits at once)")
	if err := d.publish("1.2.0", true); err != nil {
		return err
	}
	step("update: 1.2.0 does not come up, so sdupdate restores 1.1.0 by itself, exits 3 and the unit fails")
	if err := s.want(1, "systemctl", "start", updateUnit); err != nil {
		return err
	}
	if _, err := s.sh("systemctl", "show", "-p", "Result,ExecMainStatus,StatusText", updateUnit); err != nil {
		return err
	}
	if err := s.agentStatus("1.1.0"); err != nil {
		return err
	}
	return s.want(0, "sdupdate", "status")
}

// journal shows what the runs left in the journal.
func (s *server) journal(*demo) error {
	step("the journal: each run's lines, as journald has them")
	if _, err := s.sh("journalctl", "--no-pager", "-o", "cat", "-u", updateUnit); err != nil {
		return err
	}
	step("the events, with their MESSAGE_IDs and fields (journalctl -o json, one line each)")
	if err := s.events(); err != nil {
		return err
	}
	step("journalctl -x explains an event from the catalog")
	if _, err := s.sh("journalctl", "--no-pager", "-x", "-t", logging.Identifier, "MESSAGE_ID="+logging.MsgRolledBack); err != nil {
		return err
	}
	return nil
}

// rollback rolls back by hand to 1.0.0.
func (s *server) rollback(*demo) error {
	step("the snapshots, and a rollback by hand to 1.0.0")
	if err := s.want(0, "sdupdate", "snapshots"); err != nil {
		return err
	}
	if err := s.want(0, "sdupdate", "rollback"); err != nil {
		return err
	}
	return s.agentStatus("1.0.0")
}

// sh runs a command on the server and prints it with its output, as in a terminal.
func (s *server) sh(args ...string) (sandbox.Result, error) {
	fmt.Printf("%s %s\n", s.prompt, shellJoin(args))
	r, err := s.sb.Run(s.ctx, args...)
	if err != nil {
		return r, err
	}
	// sdupdate logs on stderr as it goes and prints its result on stdout at the end.
	fmt.Print(r.Stderr)
	fmt.Print(r.Stdout)
	if r.ExitCode != 0 {
		fmt.Printf("(exit status %d)\n", r.ExitCode)
	}
	return r, nil
}

// want runs a command like sh and fails the demo unless it exits with status code.
func (s *server) want(code int, args ...string) error {
	r, err := s.sh(args...)
	if err != nil {
		return err
	}
	if r.ExitCode != code {
		return fmt.Errorf("%s exited with status %d, not %d as the story expects", shellJoin(args), r.ExitCode, code)
	}
	return nil
}

func (s *server) mainPID() (string, error) {
	r, err := s.sh("systemctl", "show", "-p", "MainPID", agentUnit)
	return strings.TrimPrefix(strings.TrimSpace(r.Stdout), "MainPID="), err
}

// agentStatus shows `systemctl status` of the agent once it says it runs version v.
func (s *server) agentStatus(v string) error {
	deadline := time.Now().Add(10 * time.Second)
	for {
		out, err := s.sb.Output(s.ctx, "journalctl", "--no-pager", "-o", "cat", "-n", "1", "-t", "sd-agent")
		if err != nil {
			return err
		}
		if strings.Contains(out, fixture.RunningLine(v)) {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the agent did not report running %s; its last line: %q", v, out)
		}
		select {
		case <-s.ctx.Done():
			return s.ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
	_, err := s.sh("systemctl", "status", "--no-pager", agentUnit)
	return err
}

// eventNames are the contract's events by MESSAGE_ID.
var eventNames = map[string]string{
	logging.MsgUpdateStarted:  "update started",
	logging.MsgUpdated:        "updated",
	logging.MsgUpToDate:       "up to date",
	logging.MsgFailed:         "update failed",
	logging.MsgRolledBack:     "rolled back",
	logging.MsgRollbackFailed: "rollback failed",
}

// events prints sdupdate's journal entries that carry a MESSAGE_ID, one line each.
func (s *server) events() error {
	fields := []string{"MESSAGE_ID", logging.FieldRunID, logging.FieldPhase, logging.FieldFrom, logging.FieldTo,
		logging.FieldSnapshot, logging.FieldReason}
	args := []string{"journalctl", "--no-pager", "-t", logging.Identifier, "-o", "json", "--output-fields=" + strings.Join(fields, ",")}
	fmt.Printf("%s %s | (one line per event)\n", s.prompt, shellJoin(args))
	out, err := s.sb.Output(s.ctx, args...)
	if err != nil {
		return err
	}
	for _, line := range strings.Split(out, "\n") {
		var e map[string]any
		if json.Unmarshal([]byte(line), &e) != nil {
			continue
		}
		get := func(k string) string { v, _ := e[k].(string); return v }
		id := get("MESSAGE_ID")
		if id == "" {
			continue
		}
		when := ""
		if us, err := strconv.ParseInt(get("__REALTIME_TIMESTAMP"), 10, 64); err == nil {
			when = time.UnixMicro(us).Local().Format("15:04:05")
		}
		run := get(logging.FieldRunID)
		if len(run) > 8 {
			run = run[:8]
		}
		fmt.Printf("%s run %s  MESSAGE_ID=%s… %-15s phase=%s %s -> %s", when, run, id[:8], "("+eventNames[id]+")",
			get(logging.FieldPhase), get(logging.FieldFrom), get(logging.FieldTo))
		if snap := get(logging.FieldSnapshot); snap != "" {
			fmt.Printf(" snapshot=%s", snap)
		}
		if reason := get(logging.FieldReason); reason != "" {
			fmt.Printf("\n%23s reason=%q", "", reason)
		}
		fmt.Println()
	}
	return nil
}

// shellJoin renders a command line as it would be typed.
func shellJoin(args []string) string {
	quoted := make([]string, len(args))
	for i, a := range args {
		if a == "" || strings.ContainsAny(a, " \t\n'\"$`\\|&;<>()*?[]#~") {
			a = "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
		}
		quoted[i] = a
	}
	return strings.Join(quoted, " ")
}
