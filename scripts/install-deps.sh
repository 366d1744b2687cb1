#!/usr/bin/env bash
# Installs what qmd's demo and tests need on a fresh Debian 12 machine:
# Podman (4.3.1 from Debian) with runc, busybox for the demo/test rootfs,
# dbus-daemon and busctl for the D-Bus tests, util-linux's setpriv; the
# packaging tools (see packaging/README.md).
# Idempotent and quiet when everything is there.
set -euo pipefail

need=()
# go-md2man builds the man pages; rpm (rpmbuild), lintian and rpmlint build and
# check the packages (make deb/rpm/check-packages); zsh checks the zsh completion.
for pkg in podman runc busybox-static dbus-daemon systemd util-linux procps containernetworking-plugins iptables uidmap \
	go-md2man rpm lintian rpmlint zsh; do
	dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || need+=("$pkg")
done
# dbus-daemon is in package "dbus" on bookworm (dbus-daemon exists as a
# separate package only on newer releases): map it.
if [ ${#need[@]} -gt 0 ]; then
	mapped=()
	for p in "${need[@]}"; do
		if [ "$p" = dbus-daemon ] && ! apt-cache show dbus-daemon >/dev/null 2>&1; then
			dpkg-query -W -f='${Status}' dbus 2>/dev/null | grep -q "install ok installed" || mapped+=(dbus)
		else
			mapped+=("$p")
		fi
	done
	if [ ${#mapped[@]} -gt 0 ]; then
		echo "==> installing: ${mapped[*]}"
		export DEBIAN_FRONTEND=noninteractive
		apt-get update -qq
		apt-get install -y -qq --no-install-recommends "${mapped[@]}" >/dev/null
	fi
fi
echo "==> podman $(podman --version | awk '{print $3}'), runc $(runc --version | head -1 | awk '{print $3}')"
