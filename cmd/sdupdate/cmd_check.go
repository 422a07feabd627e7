package main

import (
	"context"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/sdupdate/sdupdate/internal/human"
	"github.com/sdupdate/sdupdate/updater"
)

func newCheckCommand(g *globalOptions) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "check [--json]",
		Short: "Tell whether a newer version is available (fetch and verify only)",
		Long:  "Fetch and verify the manifest and compare it with the installed version. Exit 0: up to date; 100: an update is available; 1: error; 2: usage.",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return withApp(cmd.Context(), g, readsInstall, func(ctx context.Context, a *app) error {
				return runCheck(ctx, g, a)
			})
		},
	}
	addJSONFlag(cmd, g)
	return cmd
}

func runCheck(ctx context.Context, g *globalOptions, a *app) error {
	res, err := a.engine.Check(ctx)
	if err != nil {
		return err
	}
	if g.json {
		if err := writeJSON(g.stdout, res); err != nil {
			return err
		}
	} else if res.UpdateAvailable {
		fmt.Fprintf(g.stdout, "update available: %s -> %s (%d files to change, %d to remove, %s to download)\n",
			human.Version(res.Installed), res.Available, res.FilesChanged, res.FilesRemoved, human.Bytes(res.BytesToDownload))
	} else {
		fmt.Fprintf(g.stdout, "up to date: installed %s, available %s\n", human.Version(res.Installed), res.Available)
	}
	if res.UpdateAvailable {
		return &exitError{code: updater.CodeUpdateAvailable, msg: "update available"}
	}
	return nil
}
