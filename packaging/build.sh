#!/usr/bin/env bash
# Builds sdupdate's packages from this checkout:
#   dist/sdupdate_<version>_amd64.deb  and  dist/sdupdate-<version>.x86_64.rpm
# with nothing but Go: nfpm runs as a Go tool from packaging/tools/go.mod. DIST=DIR writes them
# into DIR instead of dist/. The last line printed is the version; `build.sh --version` prints
# only that, building nothing.
#
# The version is the one `sdupdate --version` prints (linked in with -ldflags -X): the tag
# vX.Y.Z of the commit, or, between tags, <last tag or 0.0.0>+dev.<commit time>.<commit>
# (".dirty" added for uncommitted changes). Both sort after the tag they follow and before the
# next in dpkg and rpm. VERSION=... overrides it; SOURCE_DATE_EPOCH (default: the commit's time)
# dates the man pages, the changelog and the files in the packages; MAINTAINER="Name <mail>"
# signs them (the default is a placeholder at a reserved domain).
set -euo pipefail
cd "$(dirname "$0")/.."

version_from_git() {
	local tag base stamp commit
	if tag=$(git describe --tags --exact-match --match 'v[0-9]*' 2>/dev/null) && git diff --quiet HEAD; then
		echo "${tag#v}" | tr - '~'   # v1.2.0-rc.1 → 1.2.0~rc.1: before 1.2.0 for dpkg and rpm
		return
	fi
	base=$(git describe --tags --abbrev=0 --match 'v[0-9]*' 2>/dev/null || echo v0.0.0)
	base=$(echo "${base#v}" | tr - '~')
	stamp=$(TZ=UTC git log -1 --date=format-local:%Y%m%d%H%M%S --format=%cd)
	commit=$(git rev-parse --short=12 HEAD)
	git diff --quiet HEAD || commit="$commit.dirty"
	echo "$base+dev.$stamp.$commit"
}

if [ -z "${VERSION:-}" ]; then
	git rev-parse --git-dir >/dev/null 2>&1 || { echo "build.sh: not a git checkout: set VERSION=" >&2; exit 2; }
	VERSION=$(version_from_git)
fi
# Valid for dpkg (upstream version of a native package) and for rpm's Version: no '-', no '_'.
if ! [[ $VERSION =~ ^[0-9][A-Za-z0-9.+~]*$ ]]; then
	echo "build.sh: VERSION=$VERSION is not a version dpkg and rpm both take (digits first, then letters, digits, . + ~)" >&2
	exit 2
fi
export VERSION
if [ "${1:-}" = --version ]; then
	echo "$VERSION"
	exit 0
fi
export MAINTAINER=${MAINTAINER:-sdupdate maintainers <maintainers@sdupdate.example>}
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || date +%s)}

dist=${DIST:-dist}
mkdir -p "$dist"
# What the packages are made of (binary, man pages, completions, changelog, copyright), for
# nfpm.yaml's ${PKGBUILD}/... sources.
build=$(mktemp -d "${TMPDIR:-/tmp}/sdupdate-package.XXXXXX")
trap 'rm -rf "$build"' EXIT
export PKGBUILD=$build

# Static (no cgo), without build paths or a build id, so that the same commit gives the same binary.
CGO_ENABLED=0 GOOS=linux GOARCH=amd64 go build -trimpath -buildvcs=false \
	-ldflags "-s -w -buildid= -X github.com/sdupdate/sdupdate/internal/version.version=$VERSION" \
	-o "$build/sdupdate" ./cmd/sdupdate
got=$("$build/sdupdate" --version)
[ "$got" = "sdupdate $VERSION" ] || { echo "build.sh: the binary says \"$got\", not sdupdate $VERSION" >&2; exit 1; }

"$build/sdupdate" docs --out "$build"
packaging/changelog.sh "$VERSION" | gzip -9n >"$build/changelog.gz"
packaging/copyright.sh "$build"

nfpm() { go tool -modfile=packaging/tools/go.mod nfpm "$@"; }
deb=$dist/sdupdate_${VERSION}_amd64.deb
rpm=$dist/sdupdate-${VERSION}.x86_64.rpm
rm -f "$deb" "$rpm"
nfpm package --config packaging/nfpm.yaml --packager deb --target "$deb"
nfpm package --config packaging/nfpm.yaml --packager rpm --target "$rpm"
echo "$VERSION"
