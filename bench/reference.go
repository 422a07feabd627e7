package main

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
)

// referenceBytes is what the reference zstd would send for r's patch, file by file: for each
// content of the new tree that the old install does not have under that name, the least of
// `zstd -19 --patch-from=OLD` (OLD: the old file of the same name, else the content the
// release's first delta of it starts from), `zstd -19` and the file itself. A content is
// counted once, as an update fetches it once.
func (b *bench) referenceBytes(r *realRelease) (int64, error) {
	old, err := hashTree(r.oldTree)
	if err != nil {
		return 0, err
	}
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
		n, err := referenceCost(r.zstd, filepath.Join(r.newTree, filepath.FromSlash(f.Name)), oldPath, f.Size)
		if err != nil {
			return 0, err
		}
		total += n
	}
	return total, nil
}

// referenceCost is the least of the file's size, `zstd -19` of it and, with a base, `zstd -19
// --patch-from=base` of it.
func referenceCost(zstd, file, base string, size int64) (int64, error) {
	best := size
	runs := [][]string{{"-19"}}
	if base != "" {
		runs = append(runs, []string{"-19", "--patch-from=" + base})
	}
	for _, args := range runs {
		cmd := exec.Command(zstd, append(args, "-qq", "-c", "--", file)...)
		var n countWriter
		var stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &n, &stderr
		if err := cmd.Run(); err != nil {
			return 0, fmt.Errorf("%s: %v: %s", cmd, err, stderr.Bytes())
		}
		best = min(best, n.n)
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
