#!/usr/bin/env bash
# Builds the qmd Debian package from a tree that `make install` filled.
#
#   packaging/debian/build.sh ROOT OUTDIR
#
# ROOT is `make install DESTDIR=ROOT PREFIX=/usr` output (the Makefile's deb
# target makes it); this script adds what only the package has (the preset,
# the documentation, the changelog and copyright, the maintainer scripts),
# compresses the man pages as Debian wants them, writes DEBIAN/control and
# md5sums and runs dpkg-deb. The version comes from packaging/version.sh.
set -euo pipefail

root=${1:?usage: $0 ROOT OUTDIR}
out=${2:?usage: $0 ROOT OUTDIR}
here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/../.." && pwd)

version=$("$top/packaging/version.sh" deb)
goarch=${GOARCH:-$(go env GOARCH)}
case $goarch in
amd64 | arm64 | s390x | riscv64) arch=$goarch ;;
386) arch=i386 ;;
arm) arch=armhf ;;
ppc64le) arch=ppc64el ;;
*)
	echo "$0: no Debian architecture for GOARCH=$goarch" >&2
	exit 1
	;;
esac
maintainer=${QMD_PKG_MAINTAINER:-$(git -C "$top" log -1 --format='%an <%ae>' 2>/dev/null || echo 'qmd maintainers <root@localhost>')}
# The date of the commit, so that the package of a commit is reproducible.
date=$(git -C "$top" log -1 --format=%aD 2>/dev/null || date -R)
commit=$(git -C "$top" rev-parse --short=7 HEAD 2>/dev/null || echo unknown)

test -x "$root/usr/bin/qmd" || {
	echo "$0: $root/usr/bin/qmd missing: run make deb" >&2
	exit 1
}

# Only the package has these.
install -D -m 0644 "$top/packaging/qmd.preset" "$root/usr/lib/systemd/system-preset/50-qmd.preset"
doc=$root/usr/share/doc/qmd
install -D -m 0644 "$top/README.md" "$doc/README.md"
install -D -m 0644 "$here/copyright" "$doc/copyright"
cat >"$doc/changelog" <<EOF
qmd ($version) unstable; urgency=medium

  * Package of git commit $commit.

 -- $maintainer  $date
EOF
gzip -9nf "$doc/changelog"
if [ -s "$here/lintian-overrides" ]; then
	install -D -m 0644 "$here/lintian-overrides" "$root/usr/share/lintian/overrides/qmd"
fi

# Debian compresses man pages.
find "$root/usr/share/man" -type f ! -name '*.gz' -exec gzip -9nf {} +

# Debian's binaries are stripped; bin/qmd is built with -s -w already.
chmod 0755 "$root/usr/bin/qmd"

mkdir -p "$root/DEBIAN"
for s in postinst prerm postrm; do
	install -m 0755 "$here/$s" "$root/DEBIAN/$s"
done
size=$(du -sk --exclude=DEBIAN "$root" | cut -f1)
sed -e "s|@VERSION@|$version|" -e "s|@ARCH@|$arch|" -e "s|@MAINTAINER@|$maintainer|" -e "s|@SIZE@|$size|" \
	"$here/control.in" >"$root/DEBIAN/control"
(cd "$root" && find . -path ./DEBIAN -prune -o -type f -printf '%P\0' | LC_ALL=C sort -z | xargs -0 md5sum) >"$root/DEBIAN/md5sums"
chmod 0644 "$root/DEBIAN/control" "$root/DEBIAN/md5sums"

mkdir -p "$out"
# xz preset 0: 1-2 s for the 25 MB binary instead of ~20 s for the default
# preset, 20 % bigger; QMD_DEB_COMPRESSION="-Zxz -z9" for a release.
read -r -a compression <<<"${QMD_DEB_COMPRESSION:--Zxz -z0}"
deb="$out/qmd_${version}_${arch}.deb"
SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git -C "$top" log -1 --format=%ct 2>/dev/null || date +%s)} \
	dpkg-deb --root-owner-group "${compression[@]}" --build "$root" "$deb" >/dev/null
echo "$deb"
