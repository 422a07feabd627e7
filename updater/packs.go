package updater

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/sirupsen/logrus"

	"github.com/sdupdate/sdupdate/delta"
	"github.com/sdupdate/sdupdate/fetch"
	"github.com/sdupdate/sdupdate/fsutil"
	"github.com/sdupdate/sdupdate/manifest"
)

// Packs. A pack is one zstd stream of several small files one after another (see
// manifest.Pack): small files compress far better together than each alone. After every change
// has its own sources, a pack becomes the first source of its members when fetching it costs
// less than fetching, each from its cheapest source, the members this run needs: not those
// already installed, nor those staged as a copy of another change. Each of them then comes from
// the pack, its own sources after it.
//
// A pack is fetched once, by one worker, and decoded as it streams (delta.DecodePack: its own
// size and sha256 checked, its window at most delta.PackWindow of its size, its output cut
// at its members' total). Each member this run needs is written to its staging file like any
// other source's output and must match its own entry; the others are decoded and dropped.
// When the pack fails — its bytes, its decoding, a member that does not match, a stream too
// short or too long — the members not yet staged are fetched from their own sources in the
// same run; one warning says so. A member staged before the failure matched its own sha256 and
// stays.

// PackUse is a pack an update fetches.
type PackUse struct {
	manifest.Pack
	Number  int // its place in the manifest's list of packs, from 1: how the plan names it
	Files   int // how many changes it stages
	members []delta.Member
	changes []int // per member: its change's position in the plan when the pack stages it, else -1
}

// choosePacks makes each pack that costs less than the members p fetches on their own the
// first source of those members, and lists it in p.Packs.
func choosePacks(p *Plan) {
	if p.Resolved == nil || len(p.Resolved.Packs) == 0 {
		return
	}
	fetched := make(map[string]int, len(p.Changes)) // name → position, of changes fetched from their sources
	for i := range p.Changes {
		if c := &p.Changes[i]; !c.Local && c.CopyOf == "" && len(c.Sources) > 0 {
			fetched[c.File.Name] = i
		}
	}
	for k, pk := range p.Resolved.Packs {
		use := &PackUse{Pack: pk, Number: k + 1, members: make([]delta.Member, len(pk.Files)), changes: make([]int, len(pk.Files))}
		var alone int64 // what the needed members cost each from its cheapest source
		for j, name := range pk.Files {
			f, _ := p.Resolved.Lookup(name) // every member is an entry: Parse checked it
			use.members[j] = delta.Member{Name: name, Want: delta.Want{SHA256: f.SHA256, Size: f.Size}}
			use.changes[j] = -1
			if i, ok := fetched[name]; ok {
				use.changes[j] = i
				use.Files++
				alone += p.Changes[i].Sources[0].Want.Size
			}
		}
		if use.Files == 0 || pk.Size >= alone {
			continue
		}
		src := Source{Kind: SourcePack, URL: pk.URL, Want: delta.Want{SHA256: pk.SHA256, Size: pk.Size}, Pack: use}
		for _, i := range use.changes {
			if i >= 0 {
				c := &p.Changes[i]
				c.Sources = append([]Source{src}, c.Sources...)
			}
		}
		p.Packs = append(p.Packs, use)
	}
}

// inPack is the pack that stages c, or nil.
func (c *Change) inPack() *PackUse {
	if len(c.Sources) > 0 && c.Sources[0].Kind == SourcePack {
		return c.Sources[0].Pack
	}
	return nil
}

// stagePack stages from pu the members of p it gives this run, with retries while trying again
// may help. A pack is at most 16 MiB (manifest.MaxPackSize, and its bytes at most a little
// more), so a broken transfer is fetched again whole, never resumed. It returns the positions
// of the changes it could not stage, which fall back to their own sources; only a failure of
// this machine, or the run's end, is an error.
func (e *Engine) stagePack(ctx context.Context, log *logrus.Entry, baseURL string, rec *Record, p *Plan, pu *PackUse, got []verified, sh *stageShared) ([]int, error) {
	u, err := fetch.Join(baseURL, pu.URL)
	if err != nil {
		err = &badSourceError{fmt.Errorf("cannot build URL of pack %s: %w", pu.URL, err)}
	} else {
		_, err = e.withRetries(ctx, log, fetch.Redact(u), SourcePack, func() (verified, error) {
			return verified{}, e.fetchPack(ctx, u, rec, p, pu, got, sh)
		})
	}
	var le *localError
	switch {
	case err == nil:
		return nil, nil
	case ctx.Err() != nil:
		return nil, ctx.Err()
	case errors.As(err, &le):
		return nil, err
	}
	var rest []int
	for _, i := range pu.changes {
		if i >= 0 && got[i].sha256 == "" {
			rest = append(rest, i)
		}
	}
	log.WithFields(logrus.Fields{"pack": pu.URL, "error": err.Error(), "files": len(rest)}).
		Warnf("cannot use pack %d: %v; %d of the %d files it was to give are fetched on their own", pu.Number, err, len(rest), pu.Files)
	return rest, nil
}

// fetchPack is one try of stagePack. Members already staged by an earlier try are decoded and
// dropped like those this run does not need.
func (e *Engine) fetchPack(ctx context.Context, u string, rec *Record, p *Plan, pu *PackUse, got []verified, sh *stageShared) error {
	done, err := sh.takeTurn(ctx, pu.RawSize)
	if err != nil {
		return err
	}
	defer done()
	body, err := e.Fetcher.Open(ctx, u, pu.Size)
	if err != nil {
		return err
	}
	defer body.Close()
	var r io.Reader = body
	if sh.progress != nil {
		r = &countingReader{r: body, p: sh.progress}
	}
	d, err := delta.NewDecoder()
	if err != nil {
		return &localError{err}
	}
	defer d.Close()
	sink := &stagingSink{e: e, rec: rec, p: p, pu: pu, got: got, sh: sh}
	defer sink.abandon()
	err = d.DecodePack(r, delta.Want{SHA256: pu.SHA256, Size: pu.Size}, pu.members, sink)
	var we *delta.WriteError
	switch {
	case errors.As(err, &we):
		return &localError{fmt.Errorf("cannot write staging file: %w", we.Err)}
	case errors.Is(err, delta.ErrBadSource):
		return &badSourceError{err}
	}
	return err
}

// stagingSink writes the members a pack gives to their staging files, each given its mode and
// owner and made durable like any staged file once it matched its entry.
type stagingSink struct {
	e   *Engine
	rec *Record
	p   *Plan
	pu  *PackUse
	got []verified
	sh  *stageShared
	cur *fsutil.FileWriter // the member being written
}

func (s *stagingSink) Open(j int) (io.Writer, error) {
	i := s.pu.changes[j]
	if i < 0 || s.got[i].sha256 != "" {
		return nil, nil
	}
	// DecodePack hashes what it writes to check it: the staging file need not hash it again.
	w, err := fsutil.CreateUnhashed(s.e.Fs, s.rec.Ops[i].Staged)
	if err != nil {
		return nil, &localError{err}
	}
	s.cur = w
	return w, nil
}

func (s *stagingSink) Verified(j int) error {
	i := s.pu.changes[j]
	w := s.cur
	s.cur = nil
	if err := w.CommitVia(stagedAttrs(&s.p.Changes[i]), s.sh.syncs); err != nil {
		return &localError{err}
	}
	s.got[i] = verified{sha256: s.pu.members[j].Want.SHA256, size: w.Size()}
	s.sh.filesDone.Add(1)
	return nil
}

// abandon closes a member cut short; a retry or its own source writes it again from the start.
func (s *stagingSink) abandon() {
	if s.cur != nil {
		s.cur.Close()
	}
}

// takeTurn waits, when a decode of size bytes is a big one (see bigDecode), for the other big
// decodes to end; done ends this one's turn.
func (sh *stageShared) takeTurn(ctx context.Context, size int64) (done func(), err error) {
	if size <= bigDecode || sh.turns == nil {
		return func() {}, nil
	}
	select {
	case sh.turns <- struct{}{}:
		return func() { <-sh.turns }, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}
