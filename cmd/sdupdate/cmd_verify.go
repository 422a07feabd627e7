package main

import (
	"context"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/sdupdate/sdupdate/internal/human"
)

func newVerifyCommand(g *globalOptions) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "verify",
		Short: "Check the installed files against the installed manifest; list each mismatch",
		Long:  "Exit 0 when every installed file matches the installed manifest, 1 when one does not (each is listed) or nothing is installed yet.",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return withApp(cmd.Context(), g, readsLocal, func(ctx context.Context, a *app) error {
				return runVerify(ctx, g, a)
			})
		},
	}
	addJSONFlag(cmd, g)
	return cmd
}

func runVerify(ctx context.Context, g *globalOptions, a *app) error {
	version, mismatches, err := a.engine.Verify(ctx)
	if err != nil {
		return err
	}
	if g.json {
		if err := writeJSON(g.stdout, map[string]any{"version": version, "intact": len(mismatches) == 0, "mismatches": mismatches}); err != nil {
			return err
		}
	} else {
		for _, m := range mismatches {
			fmt.Fprintf(g.stdout, "MISMATCH %s: %s\n", human.Name(m.Name), m.Problem)
		}
	}
	if n := len(mismatches); n > 0 {
		// An unclassified error is exit 1, as the contract wants for a damaged install.
		return fmt.Errorf("%d installed %s from version %s; `sdupdate update --repair` fetches %s again",
			n, human.Plural(n, "file differs", "files differ"), version, human.Plural(n, "it", "them"))
	}
	if !g.json {
		fmt.Fprintf(g.stdout, "intact: every file of version %s matches\n", version)
	}
	return nil
}
