#!/bin/sh
# io-v2-vm.sh: run qmd's real cgroup v2 IO tests in a throwaway VM.
#
# The build machines are cgroup v1 hybrid hosts: io.max, io.weight and
# per-cgroup io.pressure with the io controller only exist on a cgroup v2
# host. This boots the Debian kernel from /boot under qemu (TCG, one CPU)
# with a busybox initramfs, mounts cgroup2 (every controller) and runs the
# v2 IO tests of pkg/cgroups and pkg/policy against a spare virtio disk
# (QMD_IO_TEST_DEV=/dev/vda), then powers off. About 30 s; no image build,
# no network, no root. Needs qemu-system-x86, busybox, cpio, Go, and a
# kernel in /boot with its modules in /lib/modules (the e2e image's
# linux-image-amd64 provides both).
#
#   scripts/io-v2-vm.sh            # exit status: 0 when the tests passed
set -eu
cd "$(dirname "$0")/.."
KVER=${KVER:-$(find /boot -maxdepth 1 -name 'vmlinuz-*' | sed 's|.*/vmlinuz-||' | sort -V | tail -1)}
M=/lib/modules/$KVER/kernel
W=$(mktemp -d /tmp/qmd-io-v2-vm.XXXXXX)
trap 'rm -rf "$W"' EXIT
mkdir -p "$W/root/bin" "$W/root/proc" "$W/root/sys" "$W/root/dev" "$W/root/tmp" "$W/root/mods"
for m in drivers/virtio/virtio_ring drivers/virtio/virtio drivers/virtio/virtio_pci_legacy_dev \
	drivers/virtio/virtio_pci_modern_dev drivers/virtio/virtio_pci drivers/block/virtio_blk; do
	# Built in on some kernels: then there is no module to load.
	[ -f "$M/$m.ko" ] && cp "$M/$m.ko" "$W/root/mods/"
done
cp "$(command -v busybox)" "$W/root/bin/busybox"
for a in sh mount insmod dd cat echo sleep poweroff ls mkdir; do ln -s busybox "$W/root/bin/$a"; done
CGO_ENABLED=0 go test -c -o "$W/root/cgroups.test" ./pkg/cgroups
CGO_ENABLED=0 go test -c -o "$W/root/policy.test" ./pkg/policy
cat >"$W/root/init" <<'INIT'
#!/bin/sh
export PATH=/bin
mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev
mount -t cgroup2 cgroup2 /sys/fs/cgroup
for m in virtio_ring virtio virtio_pci_legacy_dev virtio_pci_modern_dev virtio_pci virtio_blk; do
	[ -f /mods/$m.ko ] && insmod /mods/$m.ko
done
sleep 1
echo "=== kernel $(cat /proc/sys/kernel/osrelease); controllers: $(cat /sys/fs/cgroup/cgroup.controllers)"
cd /tmp
rc=0
QMD_INTEGRATION=1 QMD_IO_TEST_DEV=/dev/vda /cgroups.test -test.v -test.run 'TestRealV2IOLimits|TestIOV2' 2>&1 || rc=1
QMD_INTEGRATION=1 QMD_IO_TEST_DEV=/dev/vda /policy.test -test.v -test.run 'TestRealV2ASILIOPressureChain' 2>&1 || rc=1
echo "=== rc $rc"
poweroff -f
INIT
chmod +x "$W/root/init"
(cd "$W/root" && find . | cpio -o -H newc 2>/dev/null | gzip -1 >"$W/initrd.gz")
truncate -s 512M "$W/disk.raw"
timeout 300 qemu-system-x86_64 -accel tcg -smp 1 -m 768 -nographic -no-reboot -nodefaults -serial stdio \
	-kernel "/boot/vmlinuz-$KVER" -initrd "$W/initrd.gz" \
	-drive "file=$W/disk.raw,format=raw,if=virtio,cache=none" \
	-append "console=ttyS0 quiet panic=-1 rdinit=/init" | tr -d '\r' | tee "$W/console.log" | grep -E '(===|---|    |PASS|FAIL|ok)'
grep -q '^=== rc 0' "$W/console.log"
