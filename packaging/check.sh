#!/usr/bin/env bash
# Checks a built .deb as Debian would: every path of packaging/contents.txt with its mode and
# owner root, nothing else; the configuration as its one conffile; lintian with no error or
# warning, and no override that is not needed any more.
#   packaging/check.sh dist/sdupdate_<version>_amd64.deb
set -euo pipefail
deb=${1:?usage: check.sh FILE.deb}
here=$(dirname "$0")
fail=0
for tool in dpkg-deb lintian; do
	command -v "$tool" >/dev/null || { echo "check.sh: $tool is missing (apt-get install lintian)" >&2; exit 2; }
done

# "drwxr-xr-x root/root 0 2026-12-01 19:46 ./etc/sdupdate/" → "drwxr-xr-x /etc/sdupdate/";
# the directories every package has (/etc/, /usr/share/, ...) are left out.
listed=$(dpkg-deb --contents "$deb" | awk '{ if ($2 != "root/root") print "not owned by root: " $6; sub(/^\./, "", $6); print $1, $6 }')
if grep '^not owned' <<<"$listed"; then fail=1; fi
want=$(grep -v '^#' "$here/contents.txt" | sort)
got=$(grep -v '^not owned' <<<"$listed" | grep -vxE 'd[rwx-]+ /(etc|usr|usr/bin|usr/lib|usr/lib/systemd|usr/lib/systemd/(system|catalog)|usr/share|usr/share/(man|man/man8|bash-completion|bash-completion/completions|zsh|zsh/vendor-completions|fish|fish/vendor_completions.d|doc|lintian|lintian/overrides))/' | sort)
if [ "$want" != "$got" ]; then
	echo "check.sh: $deb does not hold what packaging/contents.txt lists (< wanted, > found):"
	diff <(echo "$want") <(echo "$got") || true
	fail=1
fi

conffiles=$(dpkg-deb --info "$deb" conffiles)
if [ "$conffiles" != /etc/sdupdate/sdupdate.conf ]; then
	echo "check.sh: conffiles of $deb are \"$conffiles\", want /etc/sdupdate/sdupdate.conf"
	fail=1
fi

# lintian refuses to be quiet about running as root; that line is not a finding.
findings=$(lintian --display-level '>=info' "$deb" 2>&1 | grep -v '^running with root privileges' || true)
if grep -E '^(E|W): |unused-override' <<<"$findings"; then
	echo "check.sh: lintian has errors or warnings for $deb (overrides need a reason in packaging/lintian-overrides)"
	fail=1
fi
[ -z "$findings" ] || printf 'lintian (informational):\n%s\n' "$findings"
[ "$fail" = 0 ] && echo "check.sh: $(basename "$deb"): contents, modes, conffiles and lintian as expected"
exit "$fail"
