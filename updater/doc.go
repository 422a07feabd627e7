// Package updater is the update engine: it fetches and verifies a manifest, plans the change
// against the installed files, downloads into a staging area, snapshots the install, replaces
// files by rename, hands the agent to the restart gate and rolls back when it does not come up.
//
// Every run is a transaction recorded in a journal before each step acts, so a kill or power
// loss at any instant is finished or undone by the next command (see recover.go for the
// decision per phase). On disk:
//
//	StateDirectory/                 (0700)
//	├── lock                        flock held by the running command; holds its pid
//	├── txn.json                    the journal of the run in progress (absent when none)
//	├── txn-part-<sha256>           its large fields (manifests, ops), written once each (txnparts.go)
//	├── installed.json              the manifest of the installed version (absent before the first update)
//	├── installed.version           which version installed.json's exact bytes are, and which signed manifest bytes were parsed whole (see installed.go)
//	├── last-run.json               the outcome of the last update, rollback or recovery; run totals
//	├── last-check.json             the version `check` last saw offered (metrics)
//	├── staging/<run-id>/NNNNN      verified downloads waiting to be renamed into place
//	└── snapshots/<id>/             see package snapshot
//
// Staging and snapshots must share the install directory's filesystem (rename and hard links
// cannot cross filesystems); when StateDirectory does not, they live in
// Directory/.sdupdate/{staging,snapshots} instead, a name no manifest may use.
package updater
