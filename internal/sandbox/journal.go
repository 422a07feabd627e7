package sandbox

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
)

// JournalCursor returns the cursor of the newest journal entry inside, to
// read what a step logs with JournalJSON(ctx, cursor, ...) afterwards.
func (s *Sandbox) JournalCursor(ctx context.Context) (string, error) {
	// Have journald write out what it has received first: an entry logged before this call
	// but stored after the cursor would be taken for one logged after it.
	if _, err := s.Output(ctx, "journalctl", "--sync"); err != nil {
		return "", fmt.Errorf("cannot read journal cursor: %w", err)
	}
	out, err := s.Output(ctx, "journalctl", "--no-pager", "-n", "0", "--show-cursor")
	if err != nil {
		return "", fmt.Errorf("cannot read journal cursor: %w", err)
	}
	for _, line := range strings.Split(out, "\n") {
		if c, ok := strings.CutPrefix(line, "-- cursor: "); ok {
			return strings.TrimSpace(c), nil
		}
	}
	return "", fmt.Errorf("cannot read journal cursor: no cursor in %q", out)
}

// JournalJSON returns the journal entries after afterCursor (all when it is
// empty) that match every match ("FIELD=value", as journalctl takes them,
// e.g. "SYSLOG_IDENTIFIER=sdupdate"), oldest first. Values are strings,
// except for binary fields. Match SYSLOG_IDENTIFIER rather than _SYSTEMD_UNIT
// for short-lived processes: journald may not learn their unit in time.
func (s *Sandbox) JournalJSON(ctx context.Context, afterCursor string, matches ...string) ([]map[string]any, error) {
	// Have journald write out everything it has received so far.
	if _, err := s.Output(ctx, "journalctl", "--sync"); err != nil {
		return nil, fmt.Errorf("cannot read journal: %w", err)
	}
	args := []string{"journalctl", "--no-pager", "--quiet", "-o", "json"}
	if afterCursor != "" {
		// Not --after-cursor: with a match, journalctl 252 shows nothing
		// when the cursor's own entry does not match. --cursor starts at
		// that entry; it is dropped below.
		args = append(args, "--cursor="+afterCursor)
	}
	out, err := s.Output(ctx, append(args, matches...)...)
	if err != nil {
		return nil, fmt.Errorf("cannot read journal: %w", err)
	}
	var entries []map[string]any
	for _, line := range strings.Split(out, "\n") {
		if strings.TrimSpace(line) == "" {
			continue
		}
		var e map[string]any
		if err := json.Unmarshal([]byte(line), &e); err != nil {
			return nil, fmt.Errorf("cannot parse journal entry %q: %w", line, err)
		}
		if afterCursor != "" && e["__CURSOR"] == afterCursor {
			continue
		}
		entries = append(entries, e)
	}
	return entries, nil
}
