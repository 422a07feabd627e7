package main

import (
	"encoding/json"
	"io"

	"github.com/spf13/cobra"
)

// addJSONFlag gives a command --json. It sets the global option, so that a failure is printed
// as JSON too.
func addJSONFlag(cmd *cobra.Command, g *globalOptions) {
	cmd.Flags().BoolVar(&g.json, "json", false, "print one JSON document")
}

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// writtenTo remembers whether anything was written through it.
type writtenTo struct {
	w       io.Writer
	written bool
}

func (t *writtenTo) Write(p []byte) (int, error) {
	t.written = t.written || len(p) > 0
	return t.w.Write(p)
}
