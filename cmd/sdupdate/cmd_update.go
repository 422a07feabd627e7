package main

import (
	"context"
	"fmt"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/sdupdate/sdupdate/internal/human"
	"github.com/sdupdate/sdupdate/updater"
)

// updateOptions are update's flags.
type updateOptions struct {
	updater.UpdateOptions
}

func (o *updateOptions) AddFlags(f *pflag.FlagSet) {
	f.BoolVarP(&o.DryRun, "dry-run", "n", false, "print the plan (files to add, change, remove, bytes) and change nothing")
	f.BoolVar(&o.AllowDowngrade, "allow-downgrade", false, "accept a manifest older than the installed version")
	f.BoolVar(&o.Repair, "repair", false, "re-fetch installed files whose hash no longer matches the installed version")
}

// lockMode: a dry run only reads.
func (o *updateOptions) lockMode() lockMode {
	if o.DryRun {
		return readsInstall
	}
	return changesInstall
}

func newUpdateCommand(g *globalOptions) *cobra.Command {
	var opts updateOptions
	cmd := &cobra.Command{
		Use:   "update [--dry-run] [--allow-downgrade] [--repair]",
		Short: "Update the agent to the version the manifest offers",
		Long: `Fetch and verify the manifest, download the changed files, snapshot the install, replace
files crash-safely, restart the agent and roll back if it does not come up.` + exitStatusHelp,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return withApp(cmd.Context(), g, opts.lockMode(), func(ctx context.Context, a *app) error {
				return runUpdate(ctx, opts, g, a)
			})
		},
	}
	opts.AddFlags(cmd.Flags())
	return cmd
}

func runUpdate(ctx context.Context, opts updateOptions, g *globalOptions, a *app) error {
	res, err := a.engine.Update(ctx, opts.UpdateOptions)
	// Under systemd the outcome is already in the journal as an event.
	if err != nil || res == nil || opts.DryRun || g.stdoutJournal {
		return err
	}
	switch res.Outcome {
	case updater.OutcomeUpToDate:
		fmt.Fprintf(g.stdout, "already up to date (%s)\n", res.From)
	case updater.OutcomeUpdated:
		fmt.Fprintf(g.stdout, "updated %s -> %s (snapshot %s)\n", human.Version(res.From), res.To, res.Snapshot)
	}
	return nil
}
