package updater

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"

	"github.com/spf13/afero"

	"github.com/sdupdate/sdupdate/fsutil"
	"github.com/sdupdate/sdupdate/statindex"
)

// The journal's large fields — both manifests and the ops, each as long as the release has
// files — are set once or twice per run, while the record is rewritten at every phase change.
// They are kept as parts: files StateDirectory/txn-part-<sha256> holding the field's bytes
// (the manifests exactly as recorded, the ops as a JSON array), each written atomically and
// durably before the first record that names it by its sha256, and removed only once no record
// on disk names it. txn.json itself holds the small fields and the parts' sums. A part's name is
// derived from a sum that must be 64 hex digits, never read as a path, and its content must
// hash to it.

// Parts names the journal's large fields by the sha256 of their part ("" when empty).
type Parts struct {
	OldManifest string `json:"old_manifest,omitempty"`
	NewManifest string `json:"new_manifest,omitempty"`
	Ops         string `json:"ops,omitempty"`
}

// savedParts is what the journal on disk holds of a record's large fields: a save compares
// the record with it and writes only what differs.
type savedParts struct {
	sums     Parts
	old, new []byte
	ops      []Op
}

const partPrefix = "txn-part-"

var partSumPattern = regexp.MustCompile(`^[0-9a-f]{64}$`)

func (j journal) partPath(sum string) string { return filepath.Join(dirOf(j.path), partPrefix+sum) }

// saveParts writes the parts of r's large fields that differ from what is saved and returns
// what is saved then. The parts are written at once: none has to be durable before another
// (only before the record that names them, which write writes after), so the waits of their
// fsyncs overlap instead of adding up — a run's first record writes all three.
func (j journal) saveParts(r *Record) (savedParts, error) {
	s := r.saved
	opsChanged := !slices.Equal(r.Ops, s.ops)
	var ops []byte
	if opsChanged && len(r.Ops) > 0 {
		var err error
		if ops, err = json.Marshal(r.Ops); err != nil {
			return s, fmt.Errorf("cannot encode the journal's ops: %w", err)
		}
	}
	fields := []struct {
		changed bool
		data    []byte
		sum     *string
	}{
		{!bytes.Equal(r.OldManifest, s.old), r.OldManifest, &s.sums.OldManifest},
		{!bytes.Equal(r.NewManifest, s.new), r.NewManifest, &s.sums.NewManifest},
		{opsChanged, ops, &s.sums.Ops},
	}
	errs := make([]error, len(fields))
	var wg sync.WaitGroup
	for i, f := range fields {
		if f.changed {
			wg.Go(func() { *f.sum, errs[i] = j.writePart(f.data) })
		}
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return s, err
	}
	if fields[0].changed {
		s.old = bytes.Clone(r.OldManifest)
	}
	if fields[1].changed {
		s.new = bytes.Clone(r.NewManifest)
	}
	if opsChanged {
		s.ops = slices.Clone(r.Ops)
	}
	return s, nil
}

// writePart writes data as the part named by its sum, which it returns ("" for no data).
func (j journal) writePart(data []byte) (string, error) {
	if len(data) == 0 {
		return "", nil
	}
	sum := statindex.SumOf(data)
	if err := fsutil.WriteFileAtomic(j.fs, j.partPath(sum), data, 0o600); err != nil {
		return "", fmt.Errorf("cannot write transaction journal part: %w", err)
	}
	return sum, nil
}

// loadParts reads the parts a record of format 2 names into its fields.
func (j journal) loadParts(r *Record) error {
	var p Parts
	if r.Parts != nil {
		p = *r.Parts
	}
	if len(r.OldManifest) > 0 || len(r.NewManifest) > 0 || len(r.Ops) > 0 {
		return fmt.Errorf("transaction journal %s of format %d holds fields that belong in its parts, which sdupdate never writes (move it away and run `sdupdate verify`)", j.path, r.Format)
	}
	var err error
	if r.OldManifest, err = j.readPart(p.OldManifest); err != nil {
		return err
	}
	if r.NewManifest, err = j.readPart(p.NewManifest); err != nil {
		return err
	}
	ops, err := j.readPart(p.Ops)
	if err != nil {
		return err
	}
	if ops != nil {
		if err := json.Unmarshal(ops, &r.Ops); err != nil {
			return fmt.Errorf("cannot parse the ops of transaction journal %s (move it away and run `sdupdate verify`): %w", j.path, err)
		}
	}
	r.saved = savedParts{sums: p, old: bytes.Clone(r.OldManifest), new: bytes.Clone(r.NewManifest), ops: slices.Clone(r.Ops)}
	return nil
}

// readPart returns the content of the part named by sum (nil for "").
func (j journal) readPart(sum string) ([]byte, error) {
	if sum == "" {
		return nil, nil
	}
	if !partSumPattern.MatchString(sum) {
		return nil, fmt.Errorf("transaction journal %s names part %q, which sdupdate never writes (move it away and run `sdupdate verify`)", j.path, sum)
	}
	p := j.partPath(sum)
	data, err := fsutil.ReadRegularFile(j.fs, p)
	if err != nil {
		return nil, fmt.Errorf("cannot read part %s of transaction journal %s: %w", p, j.path, err)
	}
	if statindex.SumOf(data) != sum {
		return nil, fmt.Errorf("part %s of transaction journal %s does not hold what the journal recorded (move both away and run `sdupdate verify`)", p, j.path)
	}
	return data, nil
}

// dropParts removes the parts prev names and now does not, once the record naming now is on
// disk. One that cannot be removed is garbage the next command removes.
func (j journal) dropParts(prev, now Parts) {
	keep := map[string]bool{now.OldManifest: true, now.NewManifest: true, now.Ops: true}
	for _, sum := range []string{prev.OldManifest, prev.NewManifest, prev.Ops} {
		if sum != "" && !keep[sum] {
			_ = j.fs.Remove(j.partPath(sum))
		}
	}
}

// isPartName reports whether name is the base name of a journal part.
func isPartName(name string) bool {
	sum, ok := strings.CutPrefix(name, partPrefix)
	return ok && partSumPattern.MatchString(sum)
}

// removeParts removes every journal part in dir: call it only when no journal is on disk.
func removeParts(fsys afero.Fs, dir string) {
	f, err := fsys.Open(dir)
	if err != nil {
		return
	}
	names, err := f.Readdirnames(-1)
	f.Close()
	if err != nil {
		return
	}
	for _, n := range names {
		if isPartName(n) {
			_ = fsys.Remove(filepath.Join(dir, n))
		}
	}
}
