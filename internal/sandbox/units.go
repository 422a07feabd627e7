package sandbox

import (
	"context"
	"fmt"
	"strings"
	"time"
)

// UnitProperty returns one property of a unit, as `systemctl show -p` has it.
func (s *Sandbox) UnitProperty(ctx context.Context, unit, property string) (string, error) {
	out, err := s.Output(ctx, "systemctl", "show", "--value", "-p", property, unit)
	if err != nil {
		return "", fmt.Errorf("cannot read %s of %s: %w", property, unit, err)
	}
	return strings.TrimSpace(out), nil
}

// WaitState waits until the unit's ActiveState is state (active, inactive,
// failed, ...). A unit that fails meanwhile ends the wait with an error.
func (s *Sandbox) WaitState(ctx context.Context, unit, state string) error {
	last := ""
	for {
		got, err := s.UnitProperty(ctx, unit, "ActiveState")
		if err == nil {
			last = got
		}
		if last == state {
			return nil
		}
		if last == "failed" {
			return fmt.Errorf("unit %s failed while waiting for it to be %s", unit, state)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("unit %s is %q, not %s: %w", unit, last, state, ctx.Err())
		case <-time.After(pollInterval):
		}
	}
}
