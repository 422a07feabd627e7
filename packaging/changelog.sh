#!/usr/bin/env bash
# Prints the Debian-format changelog of sdupdate VERSION (a native package: this file is its
# /usr/share/doc/sdupdate/changelog.gz): one entry for this version, listing the commits since
# the previous tag, signed by MAINTAINER and dated SOURCE_DATE_EPOCH.
set -euo pipefail
version=$1
maintainer=${MAINTAINER:?}
date=$(LC_ALL=C date -u -R -d "@${SOURCE_DATE_EPOCH:?}")

range=HEAD
if prev=$(git describe --tags --abbrev=0 --match 'v[0-9]*' HEAD^ 2>/dev/null); then
	range="$prev..HEAD"
fi

echo "sdupdate ($version) unstable; urgency=medium"
echo
commits=$(git log --no-merges --format=%s "$range" 2>/dev/null | head -n 50 || true)
if [ -z "$commits" ]; then
	echo "  * Release $version."
else
	while IFS= read -r subject; do
		# One bullet a commit, wrapped as Debian changelogs are (at most 80 columns).
		echo "$subject" | fold -s -w 74 | sed '1s/^/  * /; 2,$s/^/    /; s/ *$//'
	done <<<"$commits"
fi
echo
echo " -- $maintainer  $date"
