package main

import (
	"compress/gzip"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/cobra/doc"

	"github.com/sdupdate/sdupdate/internal/version"
)

// docsOptions are the flags of the hidden `docs` command, which the package build runs.
type docsOptions struct {
	out  string
	date string
}

// newDocsCommand generates the man pages and shell completions from the CLI's own help, so they
// never disagree with it. It is hidden: packagers run it, operators read what it wrote.
func newDocsCommand() *cobra.Command {
	var opts docsOptions
	cmd := &cobra.Command{
		Use:    "docs --out DIR [--date YYYY-MM-DD]",
		Short:  "Write the man pages and shell completions into DIR (for packaging)",
		Hidden: true,
		Args:   noArgs,
		Long: `Write sdupdate(8) and one page per command into DIR/man8/ (gzip-compressed), and the
bash, zsh and fish completions into DIR/completions/. The pages carry --date, or the date of
SOURCE_DATE_EPOCH, never today's: the same sources make the same files.`,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if opts.out == "" {
				return &usageError{fmt.Errorf("docs needs --out DIR")}
			}
			date, err := docsDate(opts.date)
			if err != nil {
				return &usageError{err}
			}
			root := cmd.Root()
			if err := writeManPages(root, filepath.Join(opts.out, "man8"), date); err != nil {
				return err
			}
			return writeCompletions(root, filepath.Join(opts.out, "completions"))
		},
	}
	cmd.Flags().StringVar(&opts.out, "out", "", "directory to write man8/ and completions/ into")
	cmd.Flags().StringVar(&opts.date, "date", "", "date of the man pages, YYYY-MM-DD (default: SOURCE_DATE_EPOCH)")
	return cmd
}

// docsDate is the pages' date: a build must not depend on the day it ran.
func docsDate(flag string) (time.Time, error) {
	if flag != "" {
		d, err := time.Parse(time.DateOnly, flag)
		if err != nil {
			return time.Time{}, fmt.Errorf("--date %q is not YYYY-MM-DD", flag)
		}
		return d, nil
	}
	epoch := os.Getenv("SOURCE_DATE_EPOCH")
	if epoch == "" {
		return time.Time{}, fmt.Errorf("docs needs --date YYYY-MM-DD or SOURCE_DATE_EPOCH, so that the pages do not carry the day they were built")
	}
	secs, err := strconv.ParseInt(epoch, 10, 64)
	if err != nil {
		return time.Time{}, fmt.Errorf("SOURCE_DATE_EPOCH=%q is not a number of seconds", epoch)
	}
	return time.Unix(secs, 0).UTC(), nil
}

// writeManPages writes section 8 pages (sdupdate is run by the administrator), compressed as
// Debian policy wants them, with gzip's name and time left out so the bytes are reproducible.
func writeManPages(root *cobra.Command, dir string, date time.Time) error {
	tmp, err := os.MkdirTemp("", "sdupdate-man-")
	if err != nil {
		return fmt.Errorf("cannot write man pages: %w", err)
	}
	defer os.RemoveAll(tmp)
	forManPages(root)
	header := &doc.GenManHeader{
		Title:   "SDUPDATE",
		Section: "8",
		Date:    &date,
		Source:  "sdupdate " + version.String(),
		Manual:  "System Manager's Manual",
	}
	if err := doc.GenManTree(root, header, tmp); err != nil {
		return fmt.Errorf("cannot generate man pages: %w", err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("cannot write man pages: %w", err)
	}
	pages, err := os.ReadDir(tmp)
	if err != nil {
		return fmt.Errorf("cannot write man pages: %w", err)
	}
	for _, p := range pages {
		if err := gzipFile(filepath.Join(tmp, p.Name()), filepath.Join(dir, p.Name()+".gz")); err != nil {
			return err
		}
	}
	return nil
}

// forManPages readies every command's help for a page: the exit status table, a block of
// aligned lines in a terminal, becomes a section of its own with one entry a status, and the
// "generated on DATE by cobra" section is left out.
func forManPages(c *cobra.Command) {
	c.DisableAutoGenTag = true
	c.Long = strings.Replace(c.Long, exitStatusHelp, manExitStatus(exitStatusHelp), 1)
	for _, sub := range c.Commands() {
		forManPages(sub)
	}
}

// manExitStatus turns "EXIT STATUS" and its "  CODE  meaning" lines into a markdown section
// with a definition list, which go-md2man renders as .SH and .TP.
func manExitStatus(help string) string {
	lines := strings.Split(strings.TrimSpace(help), "\n")
	var b strings.Builder
	fmt.Fprintf(&b, "\n\n# %s\n", lines[0])
	for _, line := range lines[1:] {
		code, meaning, _ := strings.Cut(strings.TrimSpace(line), " ")
		fmt.Fprintf(&b, "\n**%s**\n: %s\n", code, strings.TrimSpace(meaning))
	}
	return b.String()
}

func gzipFile(src, dst string) error {
	data, err := os.ReadFile(src)
	if err != nil {
		return fmt.Errorf("cannot compress %s: %w", src, err)
	}
	f, err := os.Create(dst)
	if err != nil {
		return fmt.Errorf("cannot compress into %s: %w", dst, err)
	}
	zw, err := gzip.NewWriterLevel(f, gzip.BestCompression)
	if err == nil {
		_, err = zw.Write(data)
	}
	if err == nil {
		err = zw.Close()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("cannot compress into %s: %w", dst, err)
	}
	return nil
}

// writeCompletions writes the completion scripts under the names each shell looks them up by.
// They ask the binary itself (its hidden __complete command), so they follow it when it changes.
func writeCompletions(root *cobra.Command, dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("cannot write completions: %w", err)
	}
	scripts := []struct {
		name string
		gen  func(f *os.File) error
	}{
		{"sdupdate.bash", func(f *os.File) error { return root.GenBashCompletionV2(f, true) }},
		{"_sdupdate", func(f *os.File) error { return root.GenZshCompletion(f) }},
		{"sdupdate.fish", func(f *os.File) error { return root.GenFishCompletion(f, true) }},
	}
	for _, s := range scripts {
		p := filepath.Join(dir, s.name)
		f, err := os.Create(p)
		if err != nil {
			return fmt.Errorf("cannot write completion %s: %w", p, err)
		}
		err = s.gen(f)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return fmt.Errorf("cannot write completion %s: %w", p, err)
		}
	}
	return nil
}
