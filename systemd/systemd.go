// Package systemd owns sdupdate's side of talking to systemd: the D-Bus seam (Conn, the few
// go-systemd methods used, so the logic can run against a fake), the restart-and-health gate
// that decides whether the agent came up after an update, and sd_notify status reports.
package systemd

import (
	"context"
	"encoding/hex"
	"fmt"
	"os"
	"strings"

	"github.com/coreos/go-systemd/v22/daemon"
	"github.com/coreos/go-systemd/v22/dbus"
)

// Conn is exactly the part of go-systemd's *dbus.Conn that sdupdate calls.
type Conn interface {
	// RestartUnitContext enqueues a restart job; the job's result ("done", "failed",
	// "timeout", "canceled", "dependency", "skipped") is sent once on ch, which the caller
	// must buffer or drain: until that send completes the connection handles no other job.
	RestartUnitContext(ctx context.Context, name string, mode string, ch chan<- string) (int, error)
	// GetUnitPropertiesContext returns the org.freedesktop.systemd1.Unit properties.
	GetUnitPropertiesContext(ctx context.Context, unit string) (map[string]any, error)
	// GetUnitTypePropertiesContext returns the properties of a unit type's interface,
	// e.g. unitType "Service".
	GetUnitTypePropertiesContext(ctx context.Context, unit string, unitType string) (map[string]any, error)
	Close()
}

var _ Conn = (*dbus.Conn)(nil)

// Dial connects to systemd over the system bus. As root, when the bus itself is unreachable
// (dbus-daemon stopped or missing), it falls back to systemd's private socket, as systemctl does.
func Dial(ctx context.Context) (Conn, error) {
	c, err := dbus.NewSystemConnectionContext(ctx)
	if err == nil {
		return c, nil
	}
	if os.Geteuid() == 0 {
		if c, perr := dbus.NewSystemdConnectionContext(ctx); perr == nil {
			return c, nil
		}
	}
	return nil, fmt.Errorf("cannot connect to systemd over D-Bus: %w "+
		"(is systemd running as PID 1 with the system bus up? To update without restarting "+
		"the agent, set Unit= empty in [Agent] and restart it yourself)", err)
}

// Notifier reports progress to systemd (`systemctl status` shows it) when sdupdate runs as a
// service with NotifyAccess=main; outside systemd it does nothing.
type Notifier struct{}

// Status sets the unit's status text.
func (Notifier) Status(s string) {
	// Best effort: a lost status line must never fail an update.
	_, _ = daemon.SdNotify(false, "STATUS="+s)
}

// unitSuffixes are the unit types systemd knows; a name without one means a service, as it
// does for systemctl.
var unitSuffixes = []string{".service", ".socket", ".target", ".device", ".mount", ".automount",
	".swap", ".timer", ".path", ".slice", ".scope"}

// UnitName returns name as systemd's D-Bus API needs it: with ".service" added when it has no
// unit type suffix ("sd-agent" → "sd-agent.service").
func UnitName(name string) string {
	for _, s := range unitSuffixes {
		if strings.HasSuffix(name, s) {
			return name
		}
	}
	return name + ".service"
}

// props are the unit properties the gate watches.
type props struct {
	load, active, sub string
	invocation        string // hex; changes whenever the unit is started again
	isService         bool   // the fields below are known only for services
	result            string
	nRestarts         uint32
	mainPID           uint32
	execMainStatus    int32
}

func readProps(ctx context.Context, c Conn, unit string) (props, error) {
	var p props
	u, err := c.GetUnitPropertiesContext(ctx, unit)
	if err != nil {
		return p, fmt.Errorf("cannot read properties of %s: %w", unit, err)
	}
	p.load, p.active, p.sub = str(u["LoadState"]), str(u["ActiveState"]), str(u["SubState"])
	if b, ok := u["InvocationID"].([]byte); ok {
		p.invocation = hex.EncodeToString(b)
	}
	if !strings.HasSuffix(unit, ".service") {
		return p, nil
	}
	s, err := c.GetUnitTypePropertiesContext(ctx, unit, "Service")
	if err != nil {
		return p, fmt.Errorf("cannot read service properties of %s: %w", unit, err)
	}
	p.isService = true
	p.result = str(s["Result"])
	p.nRestarts = uint32(num(s["NRestarts"]))
	p.mainPID = uint32(num(s["MainPID"]))
	p.execMainStatus = int32(num(s["ExecMainStatus"]))
	return p, nil
}

func str(v any) string {
	s, _ := v.(string)
	return s
}

// num reads an integer property whatever integer type the bus or a fake delivers.
func num(v any) int64 {
	switch n := v.(type) {
	case uint32:
		return int64(n)
	case int32:
		return int64(n)
	case uint64:
		return int64(n)
	case int64:
		return n
	case int:
		return int64(n)
	case uint:
		return int64(n)
	}
	return 0
}

// isActive: a unit that is reloading (or refreshing) keeps running and counts as up.
func isActive(state string) bool {
	return state == "active" || state == "reloading" || state == "refreshing"
}

// UnitState is a unit's state as values, each exactly as systemd spells it: tools compare
// them, people read String.
type UnitState struct {
	Active string // ActiveState: active, reloading, inactive, failed, activating, deactivating, ...
	Sub    string // SubState, e.g. running, dead, auto-restart
	Load   string // LoadState, e.g. loaded, not-found, masked
}

// String renders like systemctl's "Active:" line, e.g. "active (running)" or
// "inactive (dead); not-found".
func (u UnitState) String() string {
	s := u.Active
	if u.Sub != "" {
		s += " (" + u.Sub + ")"
	}
	if u.Load != "" && u.Load != "loaded" {
		s += "; " + u.Load
	}
	return s
}

func (p props) state() string { return UnitState{Active: p.active, Sub: p.sub, Load: p.load}.String() }

// why explains a failed or restarting service, e.g. "Result=exit-code, ExecMainStatus=1".
func (p props) why() string {
	if !p.isService || p.result == "" || p.result == "success" {
		return ""
	}
	s := "Result=" + p.result
	if p.execMainStatus != 0 {
		s += fmt.Sprintf(", ExecMainStatus=%d", p.execMainStatus)
	}
	return s
}
