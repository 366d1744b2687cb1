#!/bin/bash
# Build (or reuse) the e2e VM image: a Debian 12 root with systemd, dbus and
# Podman, and a QM partition rootfs with its own systemd and Podman at
# /usr/lib/qm/rootfs. qmd itself is NOT baked in: run.sh installs it at boot
# from the 9p share, as an operator would.
#
# Output (under $E2E_BUILD, default build/e2e):
#   image-<key>.raw.zst   the packed image, key = hash of this script, the
#                         package lists, image/* and the kernel version
#   image.env             KVER, KERNEL, INITRD, IMAGE (the packed image)
# Rebuilt when the key changes; reused otherwise. E2E_REBUILD=1 forces it.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/../.." && pwd)
build=${E2E_BUILD:-$top/build/e2e}
mirror=${E2E_MIRROR:-http://deb.debian.org/debian}
suite=bookworm

t0=$(date +%s)
log() { printf '%s [e2e-image +%ss] %s\n' "$(date +%H:%M:%S)" "$(( $(date +%s) - t0 ))" "$*"; }
die() { log "ERROR: $*"; exit 1; }

[ "$(id -u)" = 0 ] || die "must run as root (debootstrap, mkfs -d with ownership)"

# --- host packages ----------------------------------------------------------
need=()
command -v qemu-system-x86_64 >/dev/null || need+=(qemu-system-x86)
command -v debootstrap >/dev/null || need+=(debootstrap)
command -v zstd >/dev/null || need+=(zstd)
command -v mkfs.ext4 >/dev/null || need+=(e2fsprogs)
ls /boot/vmlinuz-*-amd64 >/dev/null 2>&1 || need+=(linux-image-amd64)
if [ ${#need[@]} -gt 0 ]; then
	log "installing host packages: ${need[*]}"
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi

# The kernel: the newest Debian kernel in /boot that has its modules.
kver=
for k in $(ls /boot/vmlinuz-*-amd64 | sort -V -r); do
	v=${k#/boot/vmlinuz-}
	if [ -d "/lib/modules/$v" ] && [ -f "/boot/initrd.img-$v" ]; then kver=$v; break; fi
done
[ -n "$kver" ] || die "no /boot/vmlinuz-*-amd64 with /lib/modules and initrd (apt-get install linux-image-amd64)"

pkgs() { grep -v '^\s*#' "$1" | grep -v '^\s*$' | paste -sd, -; }
vm_pkgs=$(pkgs "$here/packages-vm.txt")
qm_pkgs=$(pkgs "$here/packages-qm.txt")

key=$( { cat "$here/build-image.sh" "$here/packages-vm.txt" "$here/packages-qm.txt"; \
	cat "$here"/image/*; echo "$kver $suite"; } | sha256sum | cut -c1-16)
image=$build/image-$key.raw.zst
mkdir -p "$build"

write_env() {
	cat >"$build/image.env" <<EOT
KVER=$kver
KERNEL=/boot/vmlinuz-$kver
INITRD=/boot/initrd.img-$kver
IMAGE=$image
KEY=$key
EOT
}

if [ -f "$image" ] && [ "${E2E_REBUILD:-0}" != 1 ]; then
	log "reusing cached image $image (key $key, kernel $kver)"
	write_env
	exit 0
fi
log "building image key $key (kernel $kver)"

work=$build/work
rm -rf "$work"
mkdir -p "$work"
vmroot=$work/vmroot
qmroot=$work/qmroot

# --- two debootstraps in parallel ---------------------------------------------
log "debootstrap VM root and QM root in parallel (logs: $work/debootstrap-*.log)"
debootstrap --variant=minbase --include="$vm_pkgs" "$suite" "$vmroot" "$mirror" \
	>"$work/debootstrap-vm.log" 2>&1 &
pid_vm=$!
debootstrap --variant=minbase --include="$qm_pkgs" "$suite" "$qmroot" "$mirror" \
	>"$work/debootstrap-qm.log" 2>&1 &
pid_qm=$!
rc_vm=0; wait $pid_vm || rc_vm=$?
rc_qm=0; wait $pid_qm || rc_qm=$?
[ $rc_vm = 0 ] || { tail -20 "$work/debootstrap-vm.log"; die "debootstrap of the VM root failed"; }
[ $rc_qm = 0 ] || { tail -20 "$work/debootstrap-qm.log"; die "debootstrap of the QM root failed"; }
log "debootstraps done"

mask() { # mask ROOT UNIT...
	local root=$1; shift
	for u in "$@"; do ln -sf /dev/null "$root/etc/systemd/system/$u"; done
}

# A tiny busybox rootfs (for nested containers and the crash-loop partition).
busybox_rootfs() { # busybox_rootfs SRCROOT DEST
	local src=$1 dst=$2
	mkdir -p "$dst"/{bin,sbin,etc,proc,sys,dev,tmp,run,var,root}
	cp "$src/bin/busybox" "$dst/bin/busybox"
	for a in sh ls cat echo sleep true false ps kill mount id env; do
		ln -sf busybox "$dst/bin/$a"
	done
	echo 'root:x:0:0:root:/root:/bin/sh' >"$dst/etc/passwd"
	echo 'root:x:0:' >"$dst/etc/group"
	: >"$dst/etc/hosts"; : >"$dst/etc/resolv.conf"; : >"$dst/etc/hostname"
}

# --- QM root ------------------------------------------------------------------
log "configuring the QM root"
mask "$qmroot" serial-getty@ttyS0.service getty@tty1.service console-getty.service \
	apt-daily.timer apt-daily-upgrade.timer dpkg-db-backup.timer e2scrub_all.timer \
	fstrim.timer podman-auto-update.timer podman-restart.service \
	systemd-networkd-wait-online.service
echo qm >"$qmroot/etc/hostname"
: >"$qmroot/etc/machine-id"   # systemd in the container makes its own
# Nested containers run straight from this directory (podman run --rootfs);
# it is under /var, which is writable in the partition.
busybox_rootfs "$qmroot" "$qmroot/var/lib/e2e/busybox-rootfs"
# Podman inside QM: no network backend needed (nested containers use
# --network none); keep events out of the journal noise.
mkdir -p "$qmroot/etc/containers/containers.conf.d"
cat >"$qmroot/etc/containers/containers.conf.d/50-e2e.conf" <<'EOT'
[engine]
events_logger = "file"
EOT
apt_clean() { rm -rf "$1"/var/cache/apt/archives/*.deb "$1"/var/lib/apt/lists/*; }
apt_clean "$qmroot"

# --- VM root ------------------------------------------------------------------
log "configuring the VM root"
echo qmd-e2e >"$vmroot/etc/hostname"
cat >"$vmroot/etc/fstab" <<'EOT'
/dev/vda / ext4 rw,errors=remount-ro 0 1
harness /mnt/harness 9p trans=virtio,version=9p2000.L,msize=512000,cache=none,nofail 0 0
EOT
mkdir -p "$vmroot/mnt/harness"
printf '9pnet_virtio\n9p\n' >"$vmroot/etc/modules-load.d/9p.conf"
mkdir -p "$vmroot/lib/modules"
cp -a "/lib/modules/$kver" "$vmroot/lib/modules/"
mask "$vmroot" serial-getty@ttyS0.service getty@tty1.service \
	apt-daily.timer apt-daily-upgrade.timer dpkg-db-backup.timer e2scrub_all.timer \
	fstrim.timer podman-auto-update.timer podman-restart.service \
	systemd-networkd-wait-online.service
# Podman API socket (qmd talks to it).
mkdir -p "$vmroot/etc/systemd/system/sockets.target.wants"
ln -sf /lib/systemd/system/podman.socket "$vmroot/etc/systemd/system/sockets.target.wants/podman.socket"
# Root login without password on the console, for debugging by hand.
sed -i 's/^root:[^:]*:/root::/' "$vmroot/etc/shadow"
# Journal: keep it in memory, big enough for a whole run.
mkdir -p "$vmroot/etc/systemd/journald.conf.d"
printf '[Journal]\nStorage=volatile\nRuntimeMaxUse=256M\nRateLimitBurst=0\n' \
	>"$vmroot/etc/systemd/journald.conf.d/50-e2e.conf"
install -m 0644 "$here/image/harness.service" "$vmroot/etc/systemd/system/harness.service"
busybox_rootfs "$vmroot" "$vmroot/usr/lib/qmd-e2e/busybox-rootfs"
apt_clean "$vmroot"

# The QM partition rootfs, and the host-side /etc/qm and /var/qm that the
# partition mounts over its /etc and /var (what containers/qm's setup makes).
mkdir -p "$vmroot/usr/lib/qm"
mv "$qmroot" "$vmroot/usr/lib/qm/rootfs"
cp -a "$vmroot/usr/lib/qm/rootfs/etc" "$vmroot/etc/qm"
cp -a "$vmroot/usr/lib/qm/rootfs/var" "$vmroot/var/qm"
mkdir -p "$vmroot/var/qm/tmp"

# --- pack -----------------------------------------------------------------------
log "making the ext4 image ($(du -sh "$vmroot" | cut -f1) of files)"
raw=$work/image.raw
truncate -s 8G "$raw"
mkfs.ext4 -q -L qmd-e2e -d "$vmroot" "$raw"
log "packing with zstd"
zstd -q -T2 -3 --rm "$raw" -o "$image.tmp"
mv "$image.tmp" "$image"
# Drop images of other keys and the work tree.
for old in "$build"/image-*.raw.zst "$build"/vm-*.raw; do
	[ -e "$old" ] || continue
	case "$old" in *"$key"*) ;; *) rm -f "$old" ;; esac
done
rm -rf "$work"
write_env
log "image ready: $image ($(du -h "$image" | cut -f1)) in $(( $(date +%s) - t0 ))s"
