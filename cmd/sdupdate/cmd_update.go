package main

import (
	"context"
	"fmt"
	"io"

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
	if err == nil && opts.DryRun && res.Plan != nil {
		printPlan(g.stdout, res.Plan)
	}
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

// printPlan writes what update --dry-run found to do, as a person reads it.
func printPlan(w io.Writer, p *updater.Plan) {
	add, change, remove := p.Counts()
	bytes, files := p.DownloadBytes()
	fmt.Fprintf(w, "update %s -> %s: %d to add, %d to change, %d to remove; %d files to download (%s)\n",
		human.Version(p.From), p.To, add, change, remove, files, human.Bytes(bytes))
	// A pack's bytes are shown once, here; each file it gives names it.
	for _, pk := range p.Packs {
		fmt.Fprintf(w, "  %-6s %d: fetch %s for %d files (%s)\n", "pack", pk.Number, human.Bytes(pk.Size), pk.Files, human.Name(pk.URL))
	}
	for _, c := range p.Changes {
		kind := "change"
		if c.Add {
			kind = "add"
		} else if c.Local {
			kind = "mode"
		}
		size := ""
		if c.File.Size >= 0 {
			size = human.Bytes(c.File.Size)
		}
		// What it costs and in which form: the file, its compressed object or a delta (from an
		// installed file or a snapshot), its share of a pack, or nothing for a copy of another
		// file of the update.
		switch {
		case c.CopyOf != "":
			size += ", fetch nothing: a copy of " + human.Name(c.CopyOf)
		case len(c.Sources) > 0 && c.Sources[0].Pack != nil:
			size += fmt.Sprintf(", in pack %d", c.Sources[0].Pack.Number)
		case !c.Local && len(c.Sources) > 0 && c.File.Size >= 0:
			size += fmt.Sprintf(", fetch %s as %s", human.Bytes(c.Cost()), c.Sources[0])
		}
		fmt.Fprintf(w, "  %-6s %s %s %s\n", kind, human.Name(c.File.Name), c.Mode, size)
	}
	for _, name := range p.Removes {
		fmt.Fprintf(w, "  %-6s %s\n", "remove", human.Name(name))
	}
}
