// Package e2e holds sdupdate's end-to-end tests: each boots a real systemd in a sandbox
// (internal/sandbox), installs the freshly built binary, the repository's unit file and
// catalog and a small test agent unit, serves signed releases from a loopback HTTP server, and
// checks the outcome the way an operator would: with systemctl, journalctl and
// `sdupdate status`. They need root; elsewhere they are skipped (and fail under CI=true).
package e2e
