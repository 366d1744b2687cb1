#!/bin/sh
# Prints qmd's package version, derived from `git describe`, in the syntax
# of one packaging system:
#
#   packaging/version.sh deb    0.0~git98.g08f454e      1.2.0+git5.gabc1234   1.2.0
#   packaging/version.sh rpm    0^98.g08f454e           1.2.0^5.gabc1234      1.2.0
#                               (no tag: N = commits)   (tag v1.2.0 + 5)       (on tag v1.2.0)
#
# N is the commit count (since the tag, or in all), so that the build of a
# later commit always has a higher version: package N upgrades to N+1. The
# hash only tells builds apart. A tree with uncommitted changes gets
# ".dirty". Without git, QMD_PKG_VERSION must be set (it always wins).
set -eu

kind=${1:-}
case $kind in
deb | rpm) ;;
*)
	echo "usage: $0 deb|rpm" >&2
	exit 2
	;;
esac

if [ -n "${QMD_PKG_VERSION:-}" ]; then
	printf '%s\n' "$QMD_PKG_VERSION"
	exit 0
fi

cd "$(dirname "$0")/.."
if ! git rev-parse --git-dir >/dev/null 2>&1; then
	echo "$0: not a git checkout: set QMD_PKG_VERSION" >&2
	exit 1
fi

hash=g$(git rev-parse --short=7 HEAD)
dirty=""
if ! git diff --quiet HEAD -- 2>/dev/null; then
	dirty=.dirty
fi

if desc=$(git describe --tags --long --match 'v[0-9]*' 2>/dev/null); then
	# v1.2.0-5-gabc1234
	base=${desc%-*-g*}
	count=${desc#"$base"-}
	count=${count%%-*}
	base=${base#v}
	if [ "$count" = 0 ] && [ -z "$dirty" ]; then
		printf '%s\n' "$base"
		exit 0
	fi
	case $kind in
	deb) printf '%s+git%s.%s%s\n' "$base" "$count" "$hash" "$dirty" ;;
	rpm) printf '%s^%s.%s%s\n' "$base" "$count" "$hash" "$dirty" ;;
	esac
	exit 0
fi

count=$(git rev-list --count HEAD)
case $kind in
deb) printf '0.0~git%s.%s%s\n' "$count" "$hash" "$dirty" ;;
rpm) printf '0^%s.%s%s\n' "$count" "$hash" "$dirty" ;;
esac
