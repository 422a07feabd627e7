package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/afero"
	"github.com/spf13/cobra"

	"github.com/sdupdate/sdupdate/release"
	"github.com/sdupdate/sdupdate/sign"
	"github.com/sdupdate/sdupdate/updater"
)

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func newUpdateCommand(g *globalOptions) *cobra.Command {
	var opts updater.UpdateOptions
	cmd := &cobra.Command{
		Use:   "update [--dry-run] [--allow-downgrade] [--repair]",
		Short: "Update the agent to the version the manifest offers",
		Long: `Fetch and verify the manifest, download the changed files, snapshot the install, replace
files crash-safely, restart the agent and roll back if it does not come up.` + exitStatusHelp,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			a, err := newApp(g)
			if err != nil {
				return err
			}
			defer a.close()
			run := func() error {
				res, err := a.engine.Update(cmd.Context(), opts)
				// Under systemd the outcome is already in the journal as an event.
				if err == nil && res != nil && !opts.DryRun && !g.stdoutJournal {
					switch res.Outcome {
					case updater.OutcomeUpToDate:
						fmt.Fprintf(g.stdout, "already up to date (%s)\n", res.From)
					case updater.OutcomeUpdated:
						fmt.Fprintf(g.stdout, "updated %s -> %s (snapshot %s)\n", updater.DisplayVersion(res.From), res.To, res.Snapshot)
					}
				}
				return err
			}
			if opts.DryRun {
				return a.shared(cmd.Context(), run)
			}
			return a.exclusive(cmd.Context(), run)
		},
	}
	cmd.Flags().BoolVarP(&opts.DryRun, "dry-run", "n", false, "print the plan (files to add, change, remove, bytes) and change nothing")
	cmd.Flags().BoolVar(&opts.AllowDowngrade, "allow-downgrade", false, "accept a manifest older than the installed version")
	cmd.Flags().BoolVar(&opts.Repair, "repair", false, "re-fetch installed files whose hash no longer matches the installed version")
	return cmd
}

func newCheckCommand(g *globalOptions) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "check [--json]",
		Short: "Tell whether a newer version is available (fetch and verify only)",
		Long:  "Fetch and verify the manifest and compare it with the installed version. Exit 0: up to date; 100: an update is available; 1: error; 2: usage.",
		Args:  noArgs,
		RunE: withApp(g, readsInstall, func(ctx context.Context, a *app) error {
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
					updater.DisplayVersion(res.Installed), res.Available, res.FilesChanged, res.FilesRemoved, updater.HumanBytes(res.BytesToDownload))
			} else {
				fmt.Fprintf(g.stdout, "up to date: installed %s, available %s\n", updater.DisplayVersion(res.Installed), res.Available)
			}
			if res.UpdateAvailable {
				return &exitError{code: updater.CodeUpdateAvailable, msg: "update available"}
			}
			return nil
		}),
	}
	cmd.Flags().BoolVar(&g.json, "json", false, "print one JSON document")
	return cmd
}

func newRollbackCommand(g *globalOptions) *cobra.Command {
	var to string
	cmd := &cobra.Command{
		Use:   "rollback [--to ID]",
		Short: "Restore the newest snapshot (or ID), restart and health-check the agent",
		Long: `Restore a snapshot taken by an earlier update: by default the newest one of another
version than the installed one. The agent is restarted and watched if it was running.` + exitStatusHelp,
		Args: noArgs,
		RunE: withApp(g, changesInstall, func(ctx context.Context, a *app) error {
			res, err := a.engine.Rollback(ctx, to)
			if err == nil && !g.stdoutJournal {
				fmt.Fprintf(g.stdout, "rolled back %s -> %s (snapshot %s)\n", updater.DisplayVersion(res.From), updater.DisplayVersion(res.To), res.Snapshot)
			}
			return err
		}),
	}
	cmd.Flags().StringVar(&to, "to", "", "snapshot id to restore (see `sdupdate snapshots`)")
	return cmd
}

func newSnapshotsCommand(g *globalOptions) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "snapshots [--json]",
		Short: "List snapshots: id, version, created, files, bytes",
		Args:  noArgs,
		RunE: withApp(g, readsInstall, func(ctx context.Context, a *app) error {
			list, err := a.engine.Snapshots()
			if err != nil {
				return err
			}
			if g.json {
				return writeJSON(g.stdout, list)
			}
			printSnapshots(g.stdout, list)
			return nil
		}),
	}
	cmd.Flags().BoolVar(&g.json, "json", false, "print one JSON document")
	return cmd
}

func printSnapshots(w io.Writer, list []updater.SnapshotInfo) {
	if len(list) == 0 {
		fmt.Fprintln(w, "no snapshots")
		return
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tVERSION\tCREATED\tFILES\tBYTES")
	for _, s := range list {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\n", s.ID, updater.DisplayVersion(s.Version), s.Created.Local().Format(time.RFC3339), s.Files, updater.HumanBytes(s.Bytes))
	}
	tw.Flush()
}

func newStatusCommand(g *globalOptions) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "status [--json]",
		Short: "Show the installed version, the agent unit, the last run and the snapshots",
		Args:  noArgs,
		RunE: withApp(g, readsInstall, func(ctx context.Context, a *app) error {
			st, err := a.engine.Status(ctx)
			if err != nil {
				return err
			}
			if g.json {
				return writeJSON(g.stdout, st)
			}
			w := g.stdout
			fmt.Fprintf(w, "version:    %s\n", updater.DisplayVersion(st.Version))
			fmt.Fprintf(w, "directory:  %s (%d managed files)\n", st.Directory, st.Files)
			fmt.Fprintf(w, "source:     %s\n", st.ManifestURL)
			unit := st.Unit
			if unit == "" {
				unit = "(none)"
			}
			fmt.Fprintf(w, "unit:       %s: %s\n", unit, st.UnitState)
			if st.InProgress != nil {
				fmt.Fprintf(w, "in progress: %s %s -> %s, phase %s, pid %d (run %s)\n", st.InProgress.Kind,
					updater.DisplayVersion(st.InProgress.From), updater.DisplayVersion(st.InProgress.To), st.InProgress.Phase, st.InProgress.PID, st.InProgress.RunID)
			}
			if lr := st.LastRun; lr != nil {
				fmt.Fprintf(w, "last run:   %s %s (%s -> %s) at %s, run %s\n", lr.Command, lr.Result, updater.DisplayVersion(lr.From), updater.DisplayVersion(lr.To),
					lr.Finished.Local().Format(time.RFC3339), lr.RunID)
				if lr.Reason != "" {
					fmt.Fprintf(w, "            reason: %s\n", lr.Reason)
				}
			} else {
				fmt.Fprintln(w, "last run:   none")
			}
			fmt.Fprintf(w, "snapshots:  %d\n", len(st.Snapshots))
			if len(st.Snapshots) > 0 {
				printSnapshots(w, st.Snapshots)
			}
			return nil
		}),
	}
	cmd.Flags().BoolVar(&g.json, "json", false, "print one JSON document")
	return cmd
}

func newVerifyCommand(g *globalOptions) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "verify",
		Short: "Check the installed files against the installed manifest; list each mismatch",
		Long:  "Exit 0 when every installed file matches the installed manifest, 1 when one does not (each is listed) or nothing is installed yet.",
		Args:  noArgs,
		RunE: withApp(g, readsInstall, func(ctx context.Context, a *app) error {
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
					fmt.Fprintf(g.stdout, "MISMATCH %s: %s\n", m.Name, m.Problem)
				}
			}
			if len(mismatches) > 0 {
				return &updater.Error{Code: updater.CodeFailed, Err: fmt.Errorf("%d installed %s differ from version %s; `sdupdate update --repair` fetches them again",
					len(mismatches), map[bool]string{true: "file", false: "files"}[len(mismatches) == 1], version)}
			}
			if !g.json {
				fmt.Fprintf(g.stdout, "intact: every file of version %s matches\n", version)
			}
			return nil
		}),
	}
	cmd.Flags().BoolVar(&g.json, "json", false, "print one JSON document")
	return cmd
}

func newRecoverCommand(g *globalOptions) *cobra.Command {
	return &cobra.Command{
		Use:   "recover",
		Short: "Finish or undo a run that was interrupted",
		Long: `Finish or undo an update or rollback that was interrupted (killed, power loss). The unit runs it
as ExecStopPost=, so a killed updater is recovered at once. Exit 0: nothing to do or recovered;
4: an operator is needed.`,
		Args: noArgs,
		// Taking the lock recovers whatever the journal holds; nothing else is left to do.
		RunE: withApp(g, changesInstall, func(context.Context, *app) error { return nil }),
	}
}

func newReleaseCommand(g *globalOptions) *cobra.Command {
	var (
		opts    release.Options
		expires string
	)
	cmd := &cobra.Command{
		Use:   "release --from DIR --version V --out DIR [--sign-key FILE] [--expires DURATION]",
		Short: "Publisher side: publish DIR's files as version V under OUT with a (signed) manifest",
		Long: `Copy DIR's files to OUT/V/, write OUT/manifest.json (base_url "V/") and, with a minisign
secret key, OUT/manifest.json.minisig. An encrypted key's password is read from
SDUPDATE_SIGN_PASSWORD or asked on the terminal. --expires takes a Go duration or days ("30d").`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if opts.From == "" || opts.Version == "" || opts.Out == "" {
				return &usageError{fmt.Errorf("release needs --from, --version and --out")}
			}
			if expires != "" {
				d, err := parseDays(expires)
				if err != nil {
					return &usageError{fmt.Errorf("--expires %q: %w", expires, err)}
				}
				opts.Expires = d
			}
			opts.Password = sign.PasswordFromEnvOrTerminal("SDUPDATE_SIGN_PASSWORD")
			res, err := release.Run(afero.NewOsFs(), opts)
			if err != nil {
				return err
			}
			fmt.Fprintf(g.stdout, "released %s: %d files (%s), %s", opts.Version, res.Files, updater.HumanBytes(res.Bytes), res.ManifestPath)
			if res.SignaturePath != "" {
				fmt.Fprintf(g.stdout, ", signed: %s", res.SignaturePath)
			}
			fmt.Fprintln(g.stdout)
			return nil
		},
	}
	cmd.Flags().StringVar(&opts.From, "from", "", "directory holding the agent's files")
	cmd.Flags().StringVar(&opts.Version, "version", "", "version to publish")
	cmd.Flags().StringVar(&opts.Out, "out", "", "site directory (manifest.json and one directory per version)")
	cmd.Flags().StringVar(&opts.SignKey, "sign-key", "", "minisign secret key file")
	cmd.Flags().StringVar(&expires, "expires", "", "the manifest expires this long after now (e.g. 720h or 30d)")
	return cmd
}

// parseDays accepts a Go duration or a whole number of days ("30d").
func parseDays(s string) (time.Duration, error) {
	if d, ok := strings.CutSuffix(s, "d"); ok {
		n, err := strconv.Atoi(d)
		if err != nil || n <= 0 {
			return 0, fmt.Errorf("want a positive number of days like 30d")
		}
		return time.Duration(n) * 24 * time.Hour, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil || d <= 0 {
		return 0, fmt.Errorf("want a positive duration like 720h or 30d")
	}
	return d, nil
}
