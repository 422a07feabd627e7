package main

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"syscall"
	"time"

	"github.com/sdupdate/sdupdate/internal/human"
)

// row is one line of the table. A row checks the targets it has: a ratio of wall times, an
// exact or a highest number of bytes fetched, a highest peak RSS.
type row struct {
	kase, contender string
	ours            stats
	theirs          *stats
	ratio           float64
	target          float64 // ratio must be <= target; 0: none
	ratioNote       string  // what the ratio divides, when it is not sdupdate/contender
	exactBytes      *int64  // bytes fetched must be exactly this
	bytesTarget     int64   // bytes fetched must be <= this; 0: none
	rssTarget       int64   // peak RSS must be < this; 0: none
}

func (b *bench) add(r row) { b.rows = append(b.rows, r) }

func ratio(ours, theirs stats) float64 {
	return float64(ours.wall) / float64(theirs.wall)
}

func (r row) met() bool {
	ok := true
	if r.target > 0 {
		ok = ok && r.ratio <= r.target
	}
	if r.exactBytes != nil {
		ok = ok && r.ours.fetched == *r.exactBytes
	}
	if r.bytesTarget > 0 {
		ok = ok && r.ours.fetched <= r.bytesTarget
	}
	if r.rssTarget > 0 {
		ok = ok && r.ours.rss < r.rssTarget
	}
	return ok
}

func (b *bench) allMet() bool {
	for _, r := range b.rows {
		if !r.met() {
			return false
		}
	}
	return true
}

func (b *bench) print(w io.Writer) {
	fmt.Fprintln(w, "| case | contender | sdupdate | contender | measured | target | sdupdate CPU | sdupdate peak RSS | fetched by sdupdate | met |")
	fmt.Fprintln(w, "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
	for _, r := range b.rows {
		theirs, measured, target := "", "", ""
		if r.theirs != nil {
			theirs = seconds(r.theirs.wall)
		}
		var targets []string
		if r.target > 0 {
			measured = fmt.Sprintf("%.2f×", r.ratio)
			if r.ratioNote != "" {
				measured += " (" + r.ratioNote + ")"
			}
			targets = append(targets, fmt.Sprintf("≤ %.2g×", r.target))
		}
		if r.exactBytes != nil {
			targets = append(targets, fmt.Sprintf("fetched = %d B (changed + manifest + signature)", *r.exactBytes))
		}
		if r.bytesTarget > 0 {
			measured = size(r.ours.fetched)
			targets = append(targets, "≤ "+size(r.bytesTarget))
		}
		if r.rssTarget > 0 {
			targets = append(targets, "RSS < "+size(r.rssTarget))
		}
		target = strings.Join(targets, ", ")
		met := "yes"
		if !r.met() {
			met = "**no**"
		}
		if !b.sz.targetsChecked {
			met = "(not checked)"
		}
		fmt.Fprintf(w, "| %s | %s | %s | %s | %s | %s | %s | %s | %d B | %s |\n", r.kase, dash(r.contender), seconds(r.ours.wall),
			dash(theirs), dash(measured), target, seconds(r.ours.cpu), size(r.ours.rss), r.ours.fetched, met)
	}
}

func dash(s string) string {
	if s == "" {
		return "—"
	}
	return s
}

func seconds(d time.Duration) string {
	if d < time.Second {
		return fmt.Sprintf("%.1f ms", float64(d)/float64(time.Millisecond))
	}
	return fmt.Sprintf("%.2f s", d.Seconds())
}

// size is human.Bytes without the ".0" of a round size, so that case names read as the
// README's table does ("one 16 MiB file", "2,000 × 64 KiB").
func size(n int64) string { return strings.Replace(human.Bytes(n), ".0 ", " ", 1) }

// count writes n with thousands separators, as the README's tables do.
func count(n int) string {
	s := fmt.Sprint(n)
	for i := len(s) - 3; i > 0; i -= 3 {
		s = s[:i] + "," + s[i:]
	}
	return s
}

// machine describes where the figures were measured.
func machine(dir string) string {
	cpu := "unknown CPU"
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(l, ":"); ok && strings.TrimSpace(k) == "model name" {
				cpu = strings.TrimSpace(v)
				break
			}
		}
	}
	mem := ""
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		if l, _, ok := strings.Cut(string(b), "\n"); ok {
			mem = strings.Join(strings.Fields(l)[1:], " ") + " RAM"
		}
	}
	var u syscall.Utsname
	syscall.Uname(&u)
	var st syscall.Statfs_t
	fsType := "unknown filesystem"
	if syscall.Statfs(dir, &st) == nil {
		fsType = map[int64]string{0xEF53: "ext4", 0x58465342: "xfs", 0x9123683E: "btrfs", 0x01021994: "tmpfs"}[int64(st.Type)]
		if fsType == "" {
			fsType = fmt.Sprintf("filesystem 0x%x", st.Type)
		}
	}
	return fmt.Sprintf("machine: %s, %d CPUs, %s; Linux %s; %s at %s; %s; %s; %s; loopback",
		cpu, runtime.NumCPU(), mem, utsString(u.Release[:]), fsType, dir, runtime.Version(),
		firstLine("curl", "--version"), firstLine("rsync", "--version"))
}

func utsString(b []int8) string {
	var out []byte
	for _, c := range b {
		if c == 0 {
			break
		}
		out = append(out, byte(c))
	}
	return string(out)
}

func firstLine(name string, args ...string) string {
	out, err := exec.Command(name, args...).Output()
	if err != nil {
		return name + " missing"
	}
	l, _, _ := bytes.Cut(out, []byte("\n"))
	f := strings.Fields(string(l))
	if len(f) > 3 {
		f = f[:3]
	}
	return strings.Join(f, " ")
}
