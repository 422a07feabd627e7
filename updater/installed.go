package updater

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/sdupdate/sdupdate/fsutil"
	"github.com/sdupdate/sdupdate/manifest"
)

// The version record (StateDirectory/installed.version) says which version installed.json's
// bytes are, so that an update or a check finding the install up to date learns the installed
// version without parsing the installed manifest: at 5,000 entries that parse costs more than
// fetching the manifest does. Like the stat index it is an optimisation only. It is trusted only while its
// sum matches installed.json's bytes as they are now (and the sdupdate that wrote it), so a
// damaged, replaced or restored installed.json, or a damaged record, is parsed as before —
// damage reported exactly as without the record — and the record written again. It is written
// only from bytes that were parsed and validated (or that Marshal produced): a record never
// vouches for bytes this sdupdate would refuse. `status`, `verify` and `update --repair`
// never read it.

// versionRecord is the file's content.
type versionRecord struct {
	Version string `json:"version"`
	// Offered is the sha256 of the signed manifest bytes, in the modern form, that this
	// sdupdate parsed whole and found to be Version: fetched again, they need no second parse
	// of their files to be known up to date (see fetchManifest). Empty when none is known.
	Offered string `json:"offered,omitempty"`
	Sum     string `json:"sum"` // versionSum of the fields above, installed.json's bytes and sdupdate's version
}

func (l *layout) versionRecordPath() string { return filepath.Join(l.state, "installed.version") }

// versionSum binds version to raw and to the sdupdate that parsed it (a later one may refuse
// what an earlier one accepted). The lengths keep the fields apart.
func (e *Engine) versionSum(version, offered string, raw []byte) string {
	h := sha256.New()
	fmt.Fprintf(h, "sdupdate installed.version 2\n%d:%s\n%d:%s\n%d:%s\n%d\n", len(e.SelfVersion), e.SelfVersion, len(version), version, len(offered), offered, len(raw))
	h.Write(raw)
	return hex.EncodeToString(h.Sum(nil))
}

// recordedVersion is the record for raw, if it vouches for exactly these bytes.
func (e *Engine) recordedVersion(l *layout, raw []byte) (versionRecord, bool) {
	if raw == nil {
		return versionRecord{}, false
	}
	data, err := fsutil.ReadRegularFile(e.Fs, l.versionRecordPath())
	if err != nil {
		return versionRecord{}, false // missing or unreadable: the manifest is parsed, which says what is wrong
	}
	var r versionRecord
	if json.Unmarshal(data, &r) != nil || r.Version == "" || (r.Offered != "" && !isSHA256(r.Offered)) || r.Sum != e.versionSum(r.Version, r.Offered, raw) {
		return versionRecord{}, false
	}
	return r, true
}

// recordVersion writes the record for raw, a valid installed manifest of version, and offered,
// the sha256 of signed manifest bytes of version this sdupdate parsed whole ("" if none). A
// failure costs the next run a parse, nothing else.
func (e *Engine) recordVersion(l *layout, version, offered string, raw []byte) {
	if raw == nil || version == "" {
		return
	}
	data, err := json.Marshal(versionRecord{Version: version, Offered: offered, Sum: e.versionSum(version, offered, raw)})
	if err == nil {
		err = fsutil.WriteFileAtomic(e.Fs, l.versionRecordPath(), data, 0o600)
	}
	if err != nil {
		e.Log.WithError(err).Debug("cannot record the installed version; the next run parses the installed manifest")
	}
}

// versionOfInstalled reads installed.json: its bytes, its version and, unless the version
// record vouches for these bytes, the parsed manifest (m nil and raw set: left unparsed).
func (e *Engine) versionOfInstalled(l *layout) (raw []byte, version string, m *manifest.Manifest, err error) {
	raw, r, m, err := e.readVouched(l)
	return raw, r.Version, m, err
}

// readVouched is versionOfInstalled with the whole version record (empty when it vouches for
// nothing and m was parsed).
func (e *Engine) readVouched(l *layout) (raw []byte, r versionRecord, m *manifest.Manifest, err error) {
	if raw, err = e.readInstalledRaw(l); err != nil {
		return nil, r, nil, err
	}
	if r, ok := e.recordedVersion(l, raw); ok {
		return raw, r, nil, nil
	}
	if m, err = e.parseInstalled(l, raw); err != nil {
		return nil, r, nil, err
	}
	return raw, versionRecord{Version: versionOf(m)}, m, nil
}

// installedVersion is the installed version ("" before the first update).
func (e *Engine) installedVersion(l *layout) (string, error) {
	_, v, _, err := e.versionOfInstalled(l)
	return v, err
}

// readInstalled reads installed.json for an update, leaving it unparsed when the version record
// vouches for it (see needInstalled). An up-to-date run that had to parse it, or that parsed
// the fetched manifest whole, writes the record for the next run (see checkUpdate).
func (e *Engine) readInstalled(u *updateRun) (version string, err error) {
	var r versionRecord
	u.installedRaw, r, u.installed, err = e.readVouched(u.l)
	u.offered = r.Offered
	return r.Version, err
}

// needInstalled parses the installed manifest that readInstalled left unparsed, once the run
// needs more of it than its version.
func (e *Engine) needInstalled(u *updateRun) error {
	if u.installed != nil || u.installedRaw == nil {
		return nil
	}
	m, err := e.parseVouched(u.l, u.installedRaw, u.from())
	u.installed = m
	return err
}

// parseVouched parses raw, installed.json's bytes, which the version record said are version.
func (e *Engine) parseVouched(l *layout, raw []byte, version string) (*manifest.Manifest, error) {
	m, err := e.parseInstalled(l, raw)
	if err != nil {
		return nil, err
	}
	if m.Version != version {
		// Only a forged record could get here: the sum binds the version to these bytes.
		return nil, fmt.Errorf("installed manifest %s is version %s, but %s says %s (remove %s): %w",
			l.installed, m.Version, l.versionRecordPath(), version, l.versionRecordPath(), errInstalledDamaged)
	}
	return m, nil
}

// readInstalledRaw is installed.json's bytes, or nil before the first update.
func (e *Engine) readInstalledRaw(l *layout) ([]byte, error) {
	data, err := fsutil.ReadRegularFile(e.Fs, l.installed)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("cannot read installed manifest %s: %w", l.installed, err)
	}
	return data, nil
}

// parseInstalled parses raw, installed.json's bytes (nil before the first update).
func (e *Engine) parseInstalled(l *layout, raw []byte) (*manifest.Manifest, error) {
	if raw == nil {
		return nil, nil
	}
	m, err := manifest.ParseRecorded(raw)
	if err != nil {
		return nil, fmt.Errorf("installed manifest %s is damaged (run `sdupdate update --repair` or restore a snapshot): %w: %w", l.installed, errInstalledDamaged, err)
	}
	return m, nil
}
