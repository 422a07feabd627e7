package main

import (
	"context"

	"github.com/spf13/cobra"
)

func newRecoverCommand(g *globalOptions) *cobra.Command {
	return &cobra.Command{
		Use:   "recover",
		Short: "Finish or undo a run that was interrupted",
		Long: `Finish or undo an update or rollback that was interrupted (killed, power loss). The unit runs it
as ExecStopPost=, so a killed updater is recovered at once. Exit 0: nothing to do or recovered;
4: an operator is needed.`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return withApp(cmd.Context(), g, recoversInstall, runRecover)
		},
	}
}

// runRecover finishes or undoes what the journal holds. It prints nothing: the engine logs the
// interrupted run's outcome (rolled back, failed) as that run's event, under its run id, and
// recovering it succeeded whatever that outcome was.
func runRecover(ctx context.Context, a *app) error {
	_, err := a.engine.Recover(ctx)
	return err
}
