package logging

import (
	"os"
	"regexp"
	"sort"
	"strings"
	"testing"
)

// Every event's MESSAGE_ID is explained in the catalog that packaging installs, and the catalog
// explains nothing else.
func TestCatalogCoversEveryEvent(t *testing.T) {
	b, err := os.ReadFile("../packaging/sdupdate.catalog")
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, m := range regexp.MustCompile(`(?m)^-- ([0-9a-f]{32})$`).FindAllStringSubmatch(string(b), -1) {
		got = append(got, m[1])
	}
	want := []string{MsgUpdateStarted, MsgUpdated, MsgUpToDate, MsgFailed, MsgRolledBack, MsgRollbackFailed}
	sort.Strings(got)
	sort.Strings(want)
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("catalog entries %v, want %v", got, want)
	}
	// Substitutions must name fields sdupdate sets, or journalctl -x shows them verbatim.
	known := map[string]bool{FieldRunID: true, FieldPhase: true, FieldFrom: true, FieldTo: true,
		FieldSnapshot: true, FieldReason: true}
	for _, m := range regexp.MustCompile(`@([A-Z0-9_]+)@`).FindAllStringSubmatch(string(b), -1) {
		if !known[m[1]] {
			t.Errorf("catalog substitutes unknown field %s", m[1])
		}
	}
}
