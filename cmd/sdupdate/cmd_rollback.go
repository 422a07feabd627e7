package main

import (
	"context"
	"fmt"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/sdupdate/sdupdate/internal/human"
)

// rollbackOptions are rollback's flags.
type rollbackOptions struct {
	to string // snapshot id; "" is the newest of another version
}

func (o *rollbackOptions) AddFlags(f *pflag.FlagSet) {
	f.StringVar(&o.to, "to", "", "snapshot id to restore (see `sdupdate snapshots`)")
}

func newRollbackCommand(g *globalOptions) *cobra.Command {
	var opts rollbackOptions
	cmd := &cobra.Command{
		Use:   "rollback [--to ID]",
		Short: "Restore the newest snapshot (or ID), restart and health-check the agent",
		Long: `Restore a snapshot taken by an earlier update: by default the newest one of another
version than the installed one. The agent is restarted and watched if it was running.` + exitStatusHelp,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return withApp(cmd.Context(), g, changesInstall, func(ctx context.Context, a *app) error {
				return runRollback(ctx, opts, g, a)
			})
		},
	}
	opts.AddFlags(cmd.Flags())
	return cmd
}

func runRollback(ctx context.Context, opts rollbackOptions, g *globalOptions, a *app) error {
	res, err := a.engine.Rollback(ctx, opts.to)
	// Under systemd the outcome is already in the journal as an event.
	if err == nil && !g.stdoutJournal {
		fmt.Fprintf(g.stdout, "rolled back %s -> %s (snapshot %s)\n", human.Version(res.From), human.Version(res.To), res.Snapshot)
		// The operator's own edits are the one thing a rollback does not undo: say so where
		// the outcome is read, not only in the log.
		if len(res.ModifiedLocally) > 0 {
			fmt.Fprintf(g.stdout, "left as modified locally: %s\n", strings.Join(res.ModifiedLocally, ", "))
		}
	}
	return err
}
