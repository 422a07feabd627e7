package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/sdupdate/sdupdate/config"
	"github.com/sdupdate/sdupdate/internal/human"
	"github.com/sdupdate/sdupdate/systemd"
	"github.com/sdupdate/sdupdate/updater"
)

func newStatusCommand(g *globalOptions) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "status [--json]",
		Short: "Show the installed version, the agent unit, the last run and the snapshots",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return withApp(cmd.Context(), g, readsLocal, func(ctx context.Context, a *app) error {
				return runStatus(ctx, g, a)
			})
		},
	}
	addJSONFlag(cmd, g)
	return cmd
}

func runStatus(ctx context.Context, g *globalOptions, a *app) error {
	st, err := a.engine.Status(ctx)
	if err != nil {
		return err
	}
	if a.source != nil {
		var ce *config.Error
		path := ""
		if errors.As(a.source, &ce) {
			path = ce.File
		}
		st.Findings = append(st.Findings, updater.Finding{Code: updater.FindingSourceMissing, Path: path, Message: a.source.Error()})
	}
	if g.json {
		return writeJSON(g.stdout, st)
	}
	printStatus(g.stdout, st)
	return nil
}

func printStatus(w io.Writer, st *updater.Status) {
	fmt.Fprintf(w, "version:    %s\n", human.Version(st.Version))
	fmt.Fprintf(w, "directory:  %s (%d managed files)\n", st.Directory, st.Files)
	fmt.Fprintf(w, "source:     %s\n", st.ManifestURL)
	fmt.Fprintf(w, "unit:       %s\n", unitLine(st))
	if p := st.InProgress; p != nil {
		fmt.Fprintf(w, "in progress: %s %s -> %s, phase %s, pid %d (run %s)\n", p.Kind,
			human.Version(p.From), human.Version(p.To), p.Phase, p.PID, p.RunID)
	}
	if lr := st.LastRun; lr != nil {
		fmt.Fprintf(w, "last run:   %s %s (%s -> %s) at %s, run %s\n", lr.Command, lr.Result, human.Version(lr.From), human.Version(lr.To),
			lr.Finished.Local().Format(time.RFC3339), lr.RunID)
		if lr.Reason != "" {
			fmt.Fprintf(w, "            reason: %s\n", lr.Reason)
		}
		if len(lr.ModifiedLocally) > 0 {
			fmt.Fprintf(w, "            modified locally (changed in place since the snapshot, left as they are): %s\n", strings.Join(lr.ModifiedLocally, ", "))
		}
	} else {
		fmt.Fprintln(w, "last run:   none")
	}
	if st.Previous != nil {
		fmt.Fprintf(w, "previous:   %s (snapshot %s; `sdupdate rollback` restores it)\n", human.Version(st.Previous.Version), st.Previous.Snapshot)
	}
	for _, f := range st.Findings {
		fmt.Fprintf(w, "finding:    %s: %s\n", f.Code, f.Message)
	}
	fmt.Fprintf(w, "snapshots:  %d (the store holds %s)\n", len(st.Snapshots), human.Bytes(st.StoreBytes))
	if len(st.Snapshots) > 0 {
		printSnapshots(w, st.Snapshots)
	}
}

// unitLine reads like systemctl's "Active:" line, e.g. "sd-agent.service: active (running)".
func unitLine(st *updater.Status) string {
	switch st.UnitState {
	case updater.UnitStateNotManaged:
		return "(none): Unit= is empty, restart the agent yourself"
	case updater.UnitStateUnknown:
		return fmt.Sprintf("%s: unknown (%s)", st.Unit, st.UnitError)
	}
	return st.Unit + ": " + systemd.UnitState{Active: st.UnitState, Sub: st.UnitSubState, Load: st.UnitLoadState}.String()
}
