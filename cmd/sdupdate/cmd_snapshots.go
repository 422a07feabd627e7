package main

import (
	"context"
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/sdupdate/sdupdate/internal/human"
	"github.com/sdupdate/sdupdate/updater"
)

func newSnapshotsCommand(g *globalOptions) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "snapshots [--json]",
		Short: "List snapshots: id, version, created, files, bytes",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return withApp(cmd.Context(), g, readsLocal, func(_ context.Context, a *app) error {
				return runSnapshots(g, a)
			})
		},
	}
	addJSONFlag(cmd, g)
	return cmd
}

func runSnapshots(g *globalOptions, a *app) error {
	list, err := a.engine.Snapshots()
	if err != nil {
		return err
	}
	if g.json {
		return writeJSON(g.stdout, list)
	}
	printSnapshots(g.stdout, list)
	return nil
}

// printSnapshots writes the table that snapshots and status show.
func printSnapshots(w io.Writer, list []updater.SnapshotInfo) {
	if len(list) == 0 {
		fmt.Fprintln(w, "no snapshots")
		return
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tVERSION\tCREATED\tFILES\tHELD\tCOMPLETE")
	for _, s := range list {
		if s.Corrupt != "" {
			fmt.Fprintf(tw, "%s\tCORRUPT\t-\t-\t-\tno\n", s.ID)
			continue
		}
		complete := "yes"
		if !s.Complete {
			complete = "no (files changed in place since)"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\t%s\n", s.ID, human.Version(s.Version), s.Created.Local().Format(time.RFC3339), s.Files, human.Bytes(s.Bytes), complete)
	}
	tw.Flush()
}
