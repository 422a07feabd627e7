package manifest

import (
	"fmt"
)

// MaxDeltas is how many deltas one file may list: one per earlier version a release serves
// deltas from, with room to spare.
const MaxDeltas = 16

// Source is a published form of a file's content other than the file itself: its zstd-compressed
// object, or a zstd delta against an earlier content. URL is relative to the file base URL, like
// a file name, and SHA256 and Size are those of the published bytes (not of the file they decode
// to, which are the entry's own).
type Source struct {
	URL    string
	SHA256 string
	Size   int64
}

// Delta is a source that decodes only with the content whose sha256 is From as its dictionary.
type Delta struct {
	From string
	Source
}

// MaxSourceSize is the largest source a file of size bytes may list: zstd's worst case for
// incompressible data (a 1/256 overhead plus headers), so a source is never a way to make a
// client fetch more than the file itself would cost, give or take.
func MaxSourceSize(size int64) int64 { return size + size/256 + 64<<10 }

// parseSources reads an entry's optional "object" and "deltas" into f. Every limit is checked
// here, before anything is fetched: URLs are relative paths inside the base, sizes are positive
// and within MaxSourceSize of the file, hashes are lowercase hex, and deltas are at most
// MaxDeltas, from distinct contents other than the file's own.
func parseSources(obj *object, f *File, kind string) error {
	rawObject, hasObject := obj.get("object")
	rawDeltas, hasDeltas := obj.get("deltas")
	if (hasObject || hasDeltas) && kind != "sha256" {
		return fmt.Errorf("object and deltas need a sha256 entry, not a legacy md5 one")
	}
	if hasObject {
		s, err := parseSource(rawObject, "object", f.Size, false)
		if err != nil {
			return err
		}
		f.Object = &s.Source
	}
	if !hasDeltas {
		return nil
	}
	n := countElements(rawDeltas)
	if n < 0 {
		return fmt.Errorf("deltas must be a JSON array of objects")
	}
	if n > MaxDeltas {
		return fmt.Errorf("lists %d deltas, more than the limit of %d", n, MaxDeltas)
	}
	seen := map[string]bool{}
	_, err := eachElement(rawDeltas, func(rest []byte) (int, error) {
		i, raw := len(f.Deltas), element(rest)
		d, err := parseSource(raw, fmt.Sprintf("delta #%d", i+1), f.Size, true)
		if err != nil {
			return 0, err
		}
		switch {
		case d.From == f.SHA256:
			return 0, fmt.Errorf("delta #%d is from the file's own content", i+1)
		case seen[d.From]:
			return 0, fmt.Errorf("delta #%d: from_sha256 %s is listed twice", i+1, d.From)
		}
		seen[d.From] = true
		f.Deltas = append(f.Deltas, d)
		return len(raw), nil
	})
	return err
}

func parseSource(raw []byte, what string, fileSize int64, isDelta bool) (Delta, error) {
	keys := []string{"url", "sha256", "size"}
	if isDelta {
		keys = append(keys, "from_sha256")
	}
	obj, err := decodeObject(raw, keys...)
	if err != nil {
		return Delta{}, fmt.Errorf("%s: %w", what, err)
	}
	var d Delta
	if d.URL, err = stringField(obj, "url", true); err != nil {
		return Delta{}, fmt.Errorf("%s: %w", what, err)
	}
	if reason := pathProblem(d.URL); reason != "" {
		return Delta{}, fmt.Errorf("%s: url %q %s; it must be a relative path below the base URL", what, truncate(d.URL), reason)
	}
	if d.SHA256, err = hexField(obj, "sha256"); err != nil {
		return Delta{}, fmt.Errorf("%s: %w", what, err)
	}
	if isDelta {
		if d.From, err = hexField(obj, "from_sha256"); err != nil {
			return Delta{}, fmt.Errorf("%s: %w", what, err)
		}
	}
	rawSize, ok := obj.get("size")
	if !ok {
		return Delta{}, fmt.Errorf("%s: size missing", what)
	}
	size, err := parseInt(rawSize)
	if err != nil {
		return Delta{}, fmt.Errorf("%s: size must be a whole number of bytes, got %s", what, truncate(string(rawSize)))
	}
	if limit := MaxSourceSize(fileSize); size < 1 || size > limit {
		return Delta{}, fmt.Errorf("%s: size %d is outside 1..%d, what a zstd form of a %d-byte file can take", what, size, limit, fileSize)
	}
	d.Size = size
	return d, nil
}

func hexField(obj *object, key string) (string, error) {
	s, err := stringField(obj, key, true)
	if err != nil {
		return "", err
	}
	if msg := hexProblem(s, 64, false); msg != "" {
		return "", fmt.Errorf("%s %s", key, msg)
	}
	return s, nil
}

type wireSource struct {
	From   string `json:"from_sha256,omitempty"`
	URL    string `json:"url"`
	SHA256 string `json:"sha256"`
	Size   int64  `json:"size"`
}

func wireSources(f File) (*wireSource, []wireSource) {
	var obj *wireSource
	if f.Object != nil {
		obj = &wireSource{URL: f.Object.URL, SHA256: f.Object.SHA256, Size: f.Object.Size}
	}
	var deltas []wireSource
	for _, d := range f.Deltas {
		deltas = append(deltas, wireSource{From: d.From, URL: d.URL, SHA256: d.SHA256, Size: d.Size})
	}
	return obj, deltas
}
