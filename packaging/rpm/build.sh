#!/usr/bin/env bash
# Builds the qmd RPM from this checkout with rpmbuild (Debian's `rpm`
# package has it):
#
#   packaging/rpm/build.sh OUTDIR
#
# --build-in-place builds the working tree (no tarball); --nodeps because a
# Debian host has no RPM database listing the BuildRequires (golang,
# go-md2man, make: `make deps` installs their Debian packages). The version
# comes from packaging/version.sh. Debian's rpm runs brp-compress, a bash
# script (read -d), with /bin/sh; it is called with bash here so that the
# man pages get compressed as on Fedora.
set -euo pipefail

out=${1:?usage: $0 OUTDIR}
here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/../.." && pwd)
command -v rpmbuild >/dev/null || {
	echo "$0: rpmbuild not found: apt-get install rpm (make deps)" >&2
	exit 1
}

version=$("$top/packaging/version.sh" rpm)
# The Packager tag belongs to the build, not to the spec (Fedora forbids it there).
packager=${QMD_PKG_MAINTAINER:-$(git -C "$top" log -1 --format='%an <%ae>' 2>/dev/null || echo 'qmd maintainers <root@localhost>')}
topdir=$top/build/rpm
rm -rf "$topdir"
mkdir -p "$topdir" "$out"
cd "$top"
SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || date +%s)} \
	rpmbuild -bb --build-in-place --nodeps --quiet \
	--define "_topdir $topdir" \
	--define "qmd_version $version" \
	--define "packager $packager" \
	--define "__brp_compress bash %{_rpmconfigdir}/brp-compress %{?_prefix}" \
	--define "_binary_payload w2T.xzdio" \
	--define "use_source_date_epoch_as_buildtime 1" \
	--define "clamp_mtime_to_source_date_epoch 1" \
	"$here/qmd.spec" >"$topdir/rpmbuild.log" 2>&1 || {
	cat "$topdir/rpmbuild.log" >&2
	exit 1
}
for rpm in "$topdir"/RPMS/*/*.rpm; do
	cp "$rpm" "$out/"
	echo "$out/$(basename "$rpm")"
done
