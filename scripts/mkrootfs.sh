#!/usr/bin/env bash
# mkrootfs.sh DIR [INIT-MODE]: a tiny busybox partition rootfs.
# INIT-MODE: "loop" (default) an init that runs until stopped, "exit" an
# init that exits at once (crash-loop tests).
set -euo pipefail
dir=$1 mode=${2:-loop}
bb=$(command -v busybox || echo /bin/busybox)
[ -x "$bb" ] || { echo "busybox-static is not installed" >&2; exit 1; }
mkdir -p "$dir"/{bin,sbin,etc,proc,sys,dev,tmp,run,var/tmp,root}
cp "$bb" "$dir/bin/busybox"
for a in $("$bb" --list); do
	[ "$a" = busybox ] || [ -e "$dir/bin/$a" ] || ln -s busybox "$dir/bin/$a"
done
echo 'root:x:0:0:root:/root:/bin/sh' >"$dir/etc/passwd"
echo 'root:x:0:' >"$dir/etc/group"
echo qm >"$dir/etc/hostname"
case $mode in
exit)
	printf '#!/bin/sh\necho "demo init: exiting at once"\nexit 3\n' >"$dir/sbin/init" ;;
*)
	# SIGRTMIN+3 (37) is systemd's halt signal, which Podman sends to an
	# /sbin/init container on stop.
	cat >"$dir/sbin/init" <<'INIT'
#!/bin/sh
trap 'echo "demo init: stopping"; exit 0' TERM INT 37
echo "demo init: QM partition up (pid $$)"
while :; do sleep 3600 & wait $!; done
INIT
	;;
esac
chmod 0755 "$dir/sbin/init"
