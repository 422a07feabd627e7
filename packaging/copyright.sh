#!/usr/bin/env bash
# Writes sdupdate's copyright files into DIR: copyright.deb (for /usr/share/doc/sdupdate) and
# copyright.rpm (for rpm's license directory). Each has sdupdate's own notice, then, because the
# binary is statically linked, the license of every Go module compiled into it and of Go's
# standard library, as their licenses ask of a binary distribution. In the deb's, an Apache-2.0
# text is a pointer to /usr/share/common-licenses/Apache-2.0, as Debian policy 12.5 asks; the
# NOTICE files that license asks to pass on stay in full.
set -euo pipefail
dir=${1:?usage: copyright.sh DIR}
cd "$(dirname "$0")/.."

head() {
	cat packaging/copyright.head
	echo
	echo "sdupdate is statically linked with the Go standard library and these Go modules."
	echo "Their licenses follow."
}
head >"$dir/copyright.deb"
head >"$dir/copyright.rpm"
emit() { # module version dir
	local f
	for f in "$3"/LICENSE* "$3"/COPYING* "$3"/NOTICE*; do
		[ -f "$f" ] || continue
		printf '\n%s\n%s %s, %s:\n\n' "------------------------------------------------------------------------" "$1" "$2" "$(basename "$f")" |
			tee -a "$dir/copyright.deb" >>"$dir/copyright.rpm"
		# Indented, blank lines as " .", as a Debian copyright file has them.
		sed 's/[[:space:]]*$//; s/^/ /; s/^ $/ ./' "$f" >>"$dir/copyright.rpm"
		if grep -q 'Apache License' "$f" && grep -q 'Version 2.0, January 2004' "$f"; then
			printf ' Apache License, Version 2.0. On Debian systems, the full text is in\n /usr/share/common-licenses/Apache-2.0.\n' >>"$dir/copyright.deb"
		else
			sed 's/[[:space:]]*$//; s/^/ /; s/^ $/ ./' "$f" >>"$dir/copyright.deb"
		fi
	done
}
read -r goversion goroot < <(go env GOVERSION GOROOT | paste -sd ' ')
emit "Go standard library" "$goversion" "$goroot"
CGO_ENABLED=0 GOOS=linux GOARCH=amd64 go list -deps -f '{{with .Module}}{{if not .Main}}{{.Path}} {{.Version}} {{.Dir}}{{end}}{{end}}' ./cmd/sdupdate |
	sort -u | while read -r path version moddir; do
		emit "$path" "$version" "$moddir"
	done
