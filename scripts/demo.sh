#!/usr/bin/env bash
# make demo: run qmd in the foreground on its built-in default configuration
# against a small demo QM partition. Creates what is missing (and only that):
#   - a busybox rootfs at /usr/lib/qm/rootfs when that does not exist,
#   - /etc/qm, /var/qm, /var/qm/tmp (the partition's writable host paths),
#   - /usr/share/qmd/seccomp-no-rt.json (the default seccomp profile),
#   - a Podman API service on /run/podman/podman.sock when none listens.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
[ "$(id -u)" = 0 ] || { echo "make demo needs root (it runs a rootful Podman partition)" >&2; exit 1; }

rootfs=/usr/lib/qm/rootfs
if [ ! -e "$rootfs" ]; then
	echo "==> creating demo partition rootfs at $rootfs (busybox)"
	bash "$top/scripts/mkrootfs.sh" "$rootfs"
fi
if [ ! -e /etc/qm/passwd ]; then
	mkdir -p /etc/qm
	cp -a "$rootfs/etc/." /etc/qm/ 2>/dev/null || true
fi
mkdir -p /var/qm/tmp
install -D -m 0644 "$top/configs/seccomp-no-rt.json" /usr/share/qmd/seccomp-no-rt.json

sock=/run/podman/podman.sock
svc_pid=
if ! curl -s --unix-socket "$sock" http://d/_ping >/dev/null 2>&1; then
	echo "==> starting a Podman API service on $sock"
	mkdir -p /run/podman
	CONTAINERS_CONF="$top/configs/containers-host.conf" podman system service --time=0 "unix://$sock" \
		>/tmp/qmd-demo-podman.log 2>&1 &
	svc_pid=$!
	for _ in $(seq 50); do [ -S "$sock" ] && break; sleep 0.1; done
fi
cleanup() { [ -n "$svc_pid" ] && kill "$svc_pid" 2>/dev/null || true; }
trap cleanup EXIT

cat <<MSG
==> running qmd in the foreground (Ctrl-C stops qmd; the partition keeps running).
    In another terminal:
      podman ps                                           # the partition "qm"
      kill -9 \$(podman inspect -f '{{.State.Pid}}' qm)   # crash its init: qmd restarts it
      cat /proc/\$(podman inspect -f '{{.State.Pid}}' qm)/oom_score_adj   # 500
MSG
export CONTAINERS_CONF="$top/configs/containers-host.conf"
"$top/bin/qmd" "$@"
