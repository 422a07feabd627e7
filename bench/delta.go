package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"time"
)

// deltaSite is an install of version 1.0.0 that each timed run updates to 1.0.1, which changes
// a few files; the untimed setup before it goes back to 1.0.0 (--allow-downgrade), so every run
// starts from an install sdupdate itself left, state files and all.
type deltaSite struct {
	name         string
	b1, b2       string // build trees of both versions
	conf1, conf2 string
	changedBytes int64
	manifest2    string // URL of 1.0.1's manifest
	overhead     int64  // bytes of 1.0.1's compressed manifest and its signature
	atV2         bool
}

func (b *bench) newDeltaSite(name string, total int64, seed uint64) (*deltaSite, error) {
	d := &deltaSite{name: name, b1: b.path("build/" + name + "1"), b2: b.path("build/" + name + "2")}
	files := specs(b.sz.deltaN, total)
	if err := writeTree(d.b1, files, seed, v1Time); err != nil {
		return nil, err
	}
	if err := linkTree(d.b1, d.b2); err != nil {
		return nil, err
	}
	var changed []spec
	for i := 0; i < b.sz.changed; i++ {
		f := files[i*len(files)/b.sz.changed]
		if err := os.Remove(filepath.Join(d.b2, filepath.FromSlash(f.name))); err != nil {
			return nil, err
		}
		changed = append(changed, f)
		d.changedBytes += f.size
	}
	if err := writeTree(d.b2, changed, seed+1000, v1Time.Add(time.Hour)); err != nil {
		return nil, err
	}
	url1, err := b.pub.release(name, "1.0.0", d.b1)
	if err != nil {
		return nil, err
	}
	if d.manifest2, err = b.pub.release(name, "1.0.1", d.b2); err != nil {
		return nil, err
	}
	// A signed update fetches the compressed manifest, and the plain one only if that fails.
	for _, ext := range []string{".zst", ".minisig"} {
		fi, err := os.Stat(filepath.Join(b.pub.site, name, "1.0.1.json"+ext))
		if err != nil {
			return nil, err
		}
		d.overhead += fi.Size()
	}
	in := install{dir: b.path(name + "/install"), state: b.path(name + "/state")}
	d.conf1, d.conf2 = b.path(name+"/v1.conf"), b.path(name+"/v2.conf")
	if err := in.config(d.conf1, url1, b.pub.pub.PublicKey, 2); err != nil {
		return nil, err
	}
	if err := in.config(d.conf2, d.manifest2, b.pub.pub.PublicKey, 2); err != nil {
		return nil, err
	}
	if _, err := b.runOnce(b.update(d.conf1)); err != nil {
		return nil, err
	}
	return d, nil
}

// contender updates the install to 1.0.1, from 1.0.0.
func (d *deltaSite) contender(b *bench, name string) *contender {
	c := b.update(d.conf2)
	c.name = name
	c.setup = func() error {
		if d.atV2 {
			if _, err := b.runOnce(b.update(d.conf1, "--allow-downgrade")); err != nil {
				return err
			}
		}
		d.atV2 = true
		return nil
	}
	return c
}

// delta: a few files changed in a big install, against `rsync -a --checksum` from a daemon;
// the same change in a small install; then "already up to date" against fetching the manifest.
func (b *bench) delta() error {
	big, err := b.newDeltaSite("c", b.sz.deltaBig, 3)
	if err != nil {
		return err
	}
	small, err := b.newDeltaSite("d", b.sz.deltaSmall, 4)
	if err != nil {
		return err
	}
	rd, err := startRsyncd(b.dir, map[string]string{"c1": big.b1, "c2": big.b2})
	if err != nil {
		return err
	}
	defer rd.Close()
	dest := b.path("c/rsync-dest") + "/"
	if out, err := exec.Command("rsync", "-a", rd.URL("c1"), dest).CombinedOutput(); err != nil {
		return fmt.Errorf("rsync: %v: %s", err, out)
	}
	rsync := &contender{name: "`rsync -a --checksum` from the daemon", args: []string{"rsync", "-a", "--checksum", rd.URL("c2"), dest},
		setup: func() error {
			// rsync's own quick check (size and mtime) puts 1.0.0's files back.
			if out, err := exec.Command("rsync", "-a", rd.URL("c1"), dest).CombinedOutput(); err != nil {
				return fmt.Errorf("rsync: %v: %s", err, out)
			}
			return nil
		}}
	ob, osm := big.contender(b, "sdupdate "+size(b.sz.deltaBig)), small.contender(b, "sdupdate "+size(b.sz.deltaSmall))
	s, err := b.compare(ob, rsync, osm)
	if err != nil {
		return err
	}
	o, t, sm := summarize(s[0]), summarize(s[1]), summarize(s[2])
	want := big.changedBytes + big.overhead
	caseName := fmt.Sprintf("%s / %s files, %d changed", size(b.sz.deltaBig), count(b.sz.deltaN), b.sz.changed)
	b.add(row{kase: caseName, contender: rsync.name, ours: o, theirs: &t, ratio: ratio(o, t), target: 0.2,
		exactBytes: &want})
	b.add(row{kase: fmt.Sprintf("same change on a %s / %s-file install", size(b.sz.deltaSmall), count(b.sz.deltaN)),
		contender: "the " + size(b.sz.deltaBig) + " case", ours: sm, theirs: &o, ratio: ratio(o, sm), target: 1.2,
		ratioNote: "big/small"})

	// Already up to date: the big install is at 1.0.1 after the last timed run.
	if !big.atV2 {
		return fmt.Errorf("the install is not at 1.0.1")
	}
	noop := b.update(big.conf2)
	curl := &contender{name: "`curl` of the manifest alone", args: []string{"curl", "-sSf", "-o", "/dev/null", big.manifest2}}
	s, err = b.compare(noop, curl)
	if err != nil {
		return err
	}
	n, m := summarize(s[0]), summarize(s[1])
	b.add(row{kase: fmt.Sprintf("already up to date, %s files", count(b.sz.deltaN)), contender: curl.name,
		ours: n, theirs: &m, ratio: ratio(n, m), target: 2})
	return nil
}
