package main

import (
	"context"
	"fmt"

	"github.com/spf13/afero"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/sdupdate/sdupdate/internal/human"
	"github.com/sdupdate/sdupdate/release"
	"github.com/sdupdate/sdupdate/sign"
)

// releaseOptions are release's flags.
type releaseOptions struct {
	release.Options
	expires string // a Go duration or days ("30d"), parsed by runRelease
}

func (o *releaseOptions) AddFlags(f *pflag.FlagSet) {
	f.StringVar(&o.From, "from", "", "directory holding the agent's files")
	f.StringVar(&o.Version, "version", "", "version to publish")
	f.StringVar(&o.Out, "out", "", "site directory (manifest.json and one directory per version)")
	f.StringVar(&o.SignKey, "sign-key", "", "minisign secret key file")
	f.StringVar(&o.expires, "expires", "", "the manifest expires this long after now (e.g. 720h or 30d)")
	f.IntVar(&o.Deltas, "deltas", 3, "publish deltas from this many of the latest earlier versions in OUT (0: compressed objects only)")
	f.StringVar(&o.Zstd, "zstd", "", "make objects and deltas with the zstd program at `PATH` (zstd -19, 1.4.5 or later) instead of the built-in encoder: smaller, slower")
}

func newReleaseCommand(g *globalOptions) *cobra.Command {
	var opts releaseOptions
	cmd := &cobra.Command{
		Use:   "release --from DIR --version V --out DIR [--sign-key FILE] [--expires DURATION] [--deltas K] [--zstd PATH]",
		Short: "Publisher side: publish DIR's files as version V under OUT with a (signed) manifest",
		Long: `Copy DIR's files to OUT/V/, write OUT/manifest.json (base_url "V/") and, with a minisign
secret key, OUT/manifest.json.minisig. An encrypted key's password is read from
SDUPDATE_SIGN_PASSWORD or asked on the terminal. --expires takes a Go duration or days ("30d").
Each file is also published zstd-compressed and, for each of the --deltas latest earlier
versions in OUT whose content of it differs, as a zstd delta from that content (kept only
when markedly smaller); both go in OUT/V/.sdupdate/, named by their sha256. With --zstd PATH
they are made by the reference zstd program at PATH (zstd -19, --patch-from for deltas), about
15 % smaller than the built-in encoder's for several times the CPU time; every one is decoded
back as an updater would before it is published, and one the updater would refuse is made
with the built-in encoder instead, with a warning.`,
		Args: noArgs,
		// The publisher's machine has no sdupdate configuration: no app, no lock.
		RunE: func(cmd *cobra.Command, _ []string) error { return runRelease(cmd.Context(), opts, g) },
	}
	opts.AddFlags(cmd.Flags())
	return cmd
}

func runRelease(ctx context.Context, opts releaseOptions, g *globalOptions) error {
	if opts.From == "" || opts.Version == "" || opts.Out == "" {
		return &usageError{fmt.Errorf("release needs --from, --version and --out")}
	}
	if opts.expires != "" {
		d, err := release.ParseExpiry(opts.expires)
		if err != nil {
			return &usageError{fmt.Errorf("--expires: %w", err)}
		}
		opts.Expires = d
	}
	opts.Password = sign.PasswordFromEnvOrTerminal("SDUPDATE_SIGN_PASSWORD")
	res, err := release.RunContext(ctx, afero.NewOsFs(), opts.Options)
	if err != nil {
		return err
	}
	for _, w := range res.Warnings {
		fmt.Fprintf(g.stderr, "sdupdate: warning: %s\n", w)
	}
	fmt.Fprintf(g.stdout, "released %s: %d files (%s), %d compressed, %d deltas, %d packs, %s",
		opts.Version, res.Files, human.Bytes(res.Bytes), res.Objects, res.Deltas, res.Packs, res.ManifestPath)
	if res.SignaturePath != "" {
		fmt.Fprintf(g.stdout, ", signed: %s", res.SignaturePath)
	}
	fmt.Fprintln(g.stdout)
	return nil
}
