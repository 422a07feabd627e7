package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
)

// A reference is a delta program the patch release is measured against, file by file: for
// each content of the new tree that the old install does not have under that name, the least
// of what the program makes of it against its base (the old file of the same name, else the
// content the release's first delta of it starts from), `zstd -19` of it and the file itself.
// A content is counted once, as an update fetches it once.
type reference struct {
	name string
	// args is the command that writes file's delta from base to out.
	args func(file, base, out string) []string
}

// zstdReference is the format sdupdate's deltas have, made by the reference encoder.
func zstdReference(zstd string) reference {
	return reference{name: "`zstd -19 --patch-from`", args: func(file, base, out string) []string {
		return []string{zstd, "-19", "-qq", "-f", "--patch-from=" + base, "-o", out, "--", file}
	}}
}

// bsdiffReference is the smallest of the per-file deltas the patch target was set from: not a
// format a client decodes here, but a floor — what no per-file delta is known to beat.
func bsdiffReference(bsdiff string) reference {
	return reference{name: "`bsdiff`", args: func(file, base, out string) []string {
		return []string{bsdiff, base, file, out}
	}}
}

// referenceBytes is what ref would send for r's patch (see reference).
func (b *bench) referenceBytes(r *realRelease, ref reference) (int64, error) {
	old, err := hashTree(r.oldTree)
	if err != nil {
		return 0, err
	}
	tmp, err := os.MkdirTemp(b.dir, "reference-")
	if err != nil {
		return 0, err
	}
	defer os.RemoveAll(tmp)
	var total int64
	counted := map[string]bool{}
	for _, f := range r.m.Files {
		oldPath := filepath.Join(r.oldTree, filepath.FromSlash(f.Name))
		if sum, ok := old.byPath[oldPath]; ok && sum == f.SHA256 || counted[f.SHA256] {
			continue
		}
		counted[f.SHA256] = true
		if _, ok := old.byPath[oldPath]; !ok {
			oldPath = ""
			if len(f.Deltas) > 0 {
				oldPath = old.bySum[f.Deltas[0].From]
			}
		}
		n, err := referenceCost(r.zstd, ref, filepath.Join(r.newTree, filepath.FromSlash(f.Name)), oldPath, f.Size, tmp)
		if err != nil {
			return 0, err
		}
		total += n
	}
	return total, nil
}

// referenceCost is the least of the file's size, `zstd -19` of it and, with a base, ref's delta
// of it, made in tmp.
func referenceCost(zstd string, ref reference, file, base string, size int64, tmp string) (int64, error) {
	out := filepath.Join(tmp, "out")
	runs := [][]string{{zstd, "-19", "-qq", "-f", "-o", out, "--", file}}
	if base != "" {
		runs = append(runs, ref.args(file, base, out))
	}
	best := size
	for _, args := range runs {
		cmd := exec.Command(args[0], args[1:]...)
		if out, err := cmd.CombinedOutput(); err != nil {
			return 0, fmt.Errorf("%s: %v: %s", cmd, err, out)
		}
		fi, err := os.Stat(out)
		if err != nil {
			return 0, err
		}
		best = min(best, fi.Size())
	}
	return best, nil
}

// trees maps a tree's files to their sha256 and back.
type trees struct {
	byPath map[string]string // path → sha256
	bySum  map[string]string // sha256 → a path
}

func hashTree(dir string) (trees, error) {
	t := trees{byPath: map[string]string{}, bySum: map[string]string{}}
	err := filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		if err != nil || !fi.Mode().IsRegular() {
			return err
		}
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		sum := sha(data)
		t.byPath[p], t.bySum[sum] = sum, p
		return nil
	})
	return t, err
}
