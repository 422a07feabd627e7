package manifest

import (
	"errors"
	"fmt"
)

// MaxPackSize is the most a pack may decode to: what one decoder goroutine of a client holds
// in flight is bounded by the pack's window, and a pack that fails costs at most this much work
// before its members fall back to their own sources.
const MaxPackSize = 16 << 20

// MinPackFiles is the fewest members a pack may have: one file alone is its own object.
const MinPackFiles = 2

// MaxPacks is the most packs one manifest may list. Every member is a distinct entry, so packs
// cannot make a manifest describe more than its files; this bounds the list itself.
const MaxPacks = 1 << 16

// Pack is a source shared by several files: one zstd stream whose decoded bytes are the contents
// of Files, in that order, one after another. Small files compress far better together than each
// alone, so a client that needs many of them (a fresh install) fetches one pack instead of an
// object each. SHA256 and Size are those of the published bytes; each member is verified by its
// own entry once cut out, as from any other source.
type Pack struct {
	Source
	Files   []string // names of sha256 entries of the same manifest, each in one pack at most
	RawSize int64    // the members' sizes added up: what the pack decodes to
}

// packKeys are the keys of a pack.
var packKeys = []string{"url", "sha256", "size", "files"}

// parsePacks reads the top object's optional "packs" into m.Packs, after the files, which every
// member must name. Every limit is checked here, before anything is fetched.
func (m *Manifest) parsePacks(top *object) error {
	raw, ok := top.get("packs")
	if !ok {
		return nil
	}
	if m.Legacy {
		return errors.New("manifest: packs need sha256 entries, not legacy md5 ones")
	}
	n := countElements(raw)
	if n < 0 {
		return errors.New("manifest: packs must be a JSON array of objects")
	}
	if n > MaxPacks {
		return fmt.Errorf("manifest: lists %d packs, more than the limit of %d", n, MaxPacks)
	}
	if n == 0 {
		return nil // an empty list is no packs, as a manifest without the key says
	}
	m.Packs = make([]Pack, 0, n)
	inPack := make(map[string]int) // member name → 1-based pack number
	_, err := eachElement(raw, func(rest []byte) (int, error) {
		elem := element(rest)
		p, err := m.parsePack(elem, len(m.Packs)+1, inPack)
		if err != nil {
			return 0, fmt.Errorf("manifest: pack #%d: %w", len(m.Packs)+1, err)
		}
		m.Packs = append(m.Packs, p)
		return len(elem), nil
	})
	return err
}

// parsePack validates pack number num (1-based); inPack says which pack already holds a name.
func (m *Manifest) parsePack(raw []byte, num int, inPack map[string]int) (Pack, error) {
	obj, err := decodeObject(raw, packKeys...)
	if err != nil {
		return Pack{}, err
	}
	var p Pack
	rawFiles, ok := obj.get("files")
	if !ok {
		return Pack{}, errors.New("files missing")
	}
	_, err = eachElement(rawFiles, func(rest []byte) (int, error) {
		elem := element(rest)
		name, isString := decodeString(elem)
		if !isString {
			return 0, fmt.Errorf("files must be file names (strings), got %s", truncate(string(elem)))
		}
		return len(elem), m.addMember(&p, name, num, inPack)
	})
	switch {
	case err != nil:
		return Pack{}, err
	case rawFiles[0] != '[':
		return Pack{}, errors.New("files must be a JSON array of file names")
	case len(p.Files) < MinPackFiles:
		return Pack{}, fmt.Errorf("has %d file(s); a pack holds at least %d", len(p.Files), MinPackFiles)
	case p.RawSize == 0:
		return Pack{}, errors.New("its files are all empty; an empty file needs no source")
	}
	// The published bytes are checked like an object of a file of the pack's raw size.
	src, err := parseSource(raw, "pack", p.RawSize, false)
	if err != nil {
		return Pack{}, err
	}
	p.Source = src.Source
	return p, nil
}

// addMember appends name to p, which must be a listed file in no other pack, and keeps the
// pack's raw size within MaxPackSize.
func (m *Manifest) addMember(p *Pack, name string, num int, inPack map[string]int) error {
	i, listed := m.index[name]
	if !listed {
		return fmt.Errorf("file %q is not listed in files", truncate(name))
	}
	if other, dup := inPack[name]; dup {
		if other == num {
			return fmt.Errorf("file %q is listed twice", name)
		}
		return fmt.Errorf("file %q is already in pack #%d", name, other)
	}
	size := m.Files[i].Size
	if p.RawSize+size > MaxPackSize {
		return fmt.Errorf("its files add up to more than the limit of %d bytes (16 MiB) by file %q", MaxPackSize, name)
	}
	inPack[name] = num
	p.RawSize += size
	p.Files = append(p.Files, name)
	return nil
}

type wirePack struct {
	URL    string   `json:"url"`
	SHA256 string   `json:"sha256"`
	Size   int64    `json:"size"`
	Files  []string `json:"files"`
}

func wirePacks(packs []Pack) []wirePack {
	var out []wirePack
	for _, p := range packs {
		out = append(out, wirePack{URL: p.URL, SHA256: p.SHA256, Size: p.Size, Files: p.Files})
	}
	return out
}
