package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// contender is one command of a comparison: setup runs before every run, untimed.
type contender struct {
	name  string
	setup func() error
	args  []string
	exit  int // the exit status it must end with
}

// sample is one timed run.
type sample struct {
	wall    time.Duration
	cpu     time.Duration // user + system time: what the run cost a machine also busy with other work
	rss     int64         // peak resident set, bytes, from wait4's rusage (what /usr/bin/time -v reports)
	fetched int64         // body bytes the HTTP server sent during the run
}

// runOnce runs c's setup, flushes dirty pages (so one contender's writeback never lands in the
// next one's time), then times c's command.
func (b *bench) runOnce(c *contender) (sample, error) {
	if c.setup != nil {
		if err := c.setup(); err != nil {
			return sample{}, fmt.Errorf("%s: setup: %w", c.name, err)
		}
	}
	syscall.Sync()
	b.srv.sent.Store(0)
	// The peak RSS is what /usr/bin/time reports: the command runs as its child, forked from a
	// small process. wait4's own figure for a command started from this one would be wrong:
	// Go starts a command with vfork, and exec records the peak of the memory it replaces, so
	// the command would be charged the benchmark's own peak (80 MiB after the real releases).
	rssFile := filepath.Join(b.dir, "rss")
	cmd := exec.Command(timeTool, append([]string{"-f", "%M", "-o", rssFile}, c.args...)...)
	cmd.Env = cleanEnv()
	var out tail
	cmd.Stdout, cmd.Stderr = &out, &out
	start := time.Now()
	err := cmd.Run()
	wall := time.Since(start)
	if cmd.ProcessState == nil {
		return sample{}, fmt.Errorf("%s: %w", c.name, err)
	}
	if code := cmd.ProcessState.ExitCode(); code != c.exit {
		return sample{}, fmt.Errorf("%s: %s exited %d, want %d:\n%s", c.name, strings.Join(c.args, " "), code, c.exit, out.String())
	}
	// /usr/bin/time's own CPU includes its child's, which it waited for.
	ru := cmd.ProcessState.SysUsage().(*syscall.Rusage)
	cpu := time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	rss, err := peakRSS(rssFile)
	if err != nil {
		return sample{}, fmt.Errorf("%s: %w", c.name, err)
	}
	return sample{wall: wall, cpu: cpu, rss: rss, fetched: b.srv.sent.Load()}, nil
}

// timeTool is GNU time (Debian's package "time"), which reports a command's peak RSS.
const timeTool = "/usr/bin/time"

// peakRSS reads the peak RSS, in KiB, that timeTool wrote to path; it returns bytes.
func peakRSS(path string) (int64, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return 0, fmt.Errorf("cannot read the peak RSS %s wrote: %w", timeTool, err)
	}
	lines := strings.Split(strings.TrimSpace(string(data)), "\n")
	kib, err := strconv.ParseInt(strings.TrimSpace(lines[len(lines)-1]), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("%s wrote %q, not a peak RSS in KiB: %w", timeTool, data, err)
	}
	return kib * 1024, nil
}

// compare runs each contender once to warm up, then runs rounds of them in turn, so a drift of
// the machine hits all alike. It returns every contender's timed samples.
func (b *bench) compare(cs ...*contender) ([][]sample, error) {
	for _, c := range cs {
		if _, err := b.runOnce(c); err != nil {
			return nil, err
		}
	}
	out := make([][]sample, len(cs))
	for r := 0; r < b.runs; r++ {
		for i, c := range cs {
			s, err := b.runOnce(c)
			if err != nil {
				return nil, err
			}
			out[i] = append(out[i], s)
		}
	}
	return out, nil
}

// stats is the median wall and CPU time, the highest peak RSS and the median bytes fetched of
// samples.
type stats struct {
	wall    time.Duration
	cpu     time.Duration
	rss     int64
	fetched int64
}

func summarize(ss []sample) stats {
	walls, cpus := make([]time.Duration, len(ss)), make([]time.Duration, len(ss))
	fetched := make([]int64, len(ss))
	var st stats
	for i, s := range ss {
		walls[i], cpus[i], fetched[i] = s.wall, s.cpu, s.fetched
		st.rss = max(st.rss, s.rss)
	}
	st.wall, st.cpu, st.fetched = median(walls), median(cpus), median(fetched)
	return st
}

// cleanEnv keeps the commands from logging to a journal or notifying a unit the benchmark may
// run under.
func cleanEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		switch strings.SplitN(kv, "=", 2)[0] {
		case "JOURNAL_STREAM", "NOTIFY_SOCKET", "INVOCATION_ID":
			continue
		}
		env = append(env, kv)
	}
	return env
}

// tail keeps the last 8 KiB written: enough for an error message, bounded for a plan of
// 150,000 lines.
type tail struct{ b []byte }

func (t *tail) Write(p []byte) (int, error) {
	t.b = append(t.b, p...)
	if len(t.b) > 8<<10 {
		t.b = append(t.b[:0], t.b[len(t.b)-8<<10:]...)
	}
	return len(p), nil
}

func (t *tail) String() string { return string(t.b) }

func median[T time.Duration | int64](v []T) T {
	sort.Slice(v, func(i, j int) bool { return v[i] < v[j] })
	return v[len(v)/2]
}
