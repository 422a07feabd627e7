package release

import (
	"bytes"
	"fmt"
	"io"

	"github.com/sdupdate/sdupdate/delta"
	"github.com/sdupdate/sdupdate/manifest"
)

// Which files go in packs, and how large a pack is, were chosen by measuring fresh installs of
// the benchmark's real trees: A, python3.11 + bind9 (24.8 MB, 675 files, 8.07 MB as .tar.gz),
// and B, perl + openssh (48 MB, 1,071 files, 12.23 MB as .tar.gz). Packs plus the other files'
// objects, in MB, built-in encoder (zstd -19 in brackets, where measured):
//
//	threshold  pack  A             B
//	256 KiB    2 MiB 7.56 (6.61)  10.21
//	256 KiB    8 MiB 7.43 (6.52)  10.02
//	512 KiB    8 MiB 7.41 (6.51)   9.79
//	512 KiB   16 MiB 7.38 (6.47)   9.66
//	1 MiB      4 MiB 7.50 (6.61)   9.40
//	1 MiB      8 MiB 7.39 (6.48)   9.25 (8.40)
//	1 MiB     16 MiB 7.37          9.21
//
// against per-file objects alone 8.14 (7.33) and 12.18 (11.14). Packs of 16 MiB gain under
// 0.5 % over 8, for twice the window a client decodes with and more bytes when a patch needs
// one member.
// Grouping files by extension instead of by name was measured too: B 8.81 but A 7.53, so files
// stay in manifest order.
const (
	// packThreshold: only files smaller than this go in packs. A larger file compresses about
	// as well alone, and a patch that changes it should not have to fetch it with others.
	packThreshold = 1 << 20
	// packTarget is the most raw bytes one pack holds (manifest.MaxPackSize at most).
	packTarget = 8 << 20
	// packKeepPercent: a pack is listed only when it is at most this share of what its members
	// cost alone (their objects, or the files where they have none).
	packKeepPercent = 90
	// tinyFile: a file below this size without an object may only be too small for one (zstd's
	// frame costs more than it saves); a larger one without an object does not compress, and is
	// left out of packs.
	tinyFile = 4 << 10
)

// packGroups returns the files to pack together, as indexes into files, in manifest order (a
// directory's files, which are alike, stay together). Each content appears in one group at most,
// under its first name: a client copies the others from it.
func packGroups(files []manifest.File) [][]int {
	var groups [][]int
	var group []int
	var raw int64
	flush := func() {
		if len(group) >= manifest.MinPackFiles && len(groups) < manifest.MaxPacks {
			groups = append(groups, group)
		}
		group, raw = nil, 0
	}
	seen := map[string]bool{}
	for i, f := range files {
		if f.Size == 0 || f.Size >= packThreshold || f.Object == nil && f.Size >= tinyFile || seen[f.SHA256] {
			continue
		}
		seen[f.SHA256] = true
		if raw+f.Size > packTarget {
			flush()
		}
		group = append(group, i)
		raw += f.Size
	}
	flush()
	return groups
}

// publishPacks makes a pack of each group of packGroups and returns those worth listing.
func (p *publisher) publishPacks(files []manifest.File) ([]manifest.Pack, error) {
	groups := packGroups(files)
	packs := make([]*manifest.Pack, len(groups))
	err := parallel(p.ctx, len(groups), p.workers, func(i int) error {
		var err error
		packs[i], err = p.publishPack(files, groups[i])
		return err
	})
	if err != nil {
		return nil, err
	}
	var kept []manifest.Pack
	for _, pk := range packs {
		if pk != nil {
			kept = append(kept, *pk)
		}
	}
	return kept, nil
}

// publishPack makes the pack of files[group], or nil when it saves too little.
func (p *publisher) publishPack(files []manifest.File, group []int) (*manifest.Pack, error) {
	pk := &manifest.Pack{Files: make([]string, 0, len(group))}
	members := make([]delta.Member, 0, len(group))
	var alone int64
	var content bytes.Buffer
	for _, i := range group {
		f := files[i]
		data, err := readSmall(p.fsys, p.path(f.Name), f.Size)
		if err != nil {
			return nil, err
		}
		content.Write(data)
		pk.Files = append(pk.Files, f.Name)
		members = append(members, delta.Member{Name: f.Name, Want: delta.Want{SHA256: f.SHA256, Size: f.Size}})
		pk.RawSize += f.Size
		alone += f.Size
		if f.Object != nil {
			alone += f.Object.Size - f.Size
		}
	}
	if int64(content.Len()) != pk.RawSize {
		return nil, fmt.Errorf("%s changed while it was released", p.dir)
	}
	s, err := p.make(recipe{
		what:   fmt.Sprintf("the pack of %d files from %s to %s", len(group), pk.Files[0], pk.Files[len(pk.Files)-1]),
		keep:   func(n int64) bool { return n*100 <= alone*packKeepPercent },
		encode: func(enc encoder, w io.Writer) error { return enc.pack(p.ctx, w, content.Bytes()) },
		decode: func(dec *delta.Decoder, r io.Reader, src delta.Want) error {
			return dec.DecodePack(r, src, members, checkAll{})
		},
	})
	if err != nil || s == nil {
		return nil, err
	}
	pk.Source = *s
	return pk, nil
}

// checkAll is a delta.PackSink that wants every member, so each is checked against its
// sha256 and size, and keeps none.
type checkAll struct{}

func (checkAll) Open(int) (io.Writer, error) { return io.Discard, nil }
func (checkAll) Verified(int) error          { return nil }
