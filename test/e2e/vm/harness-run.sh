#!/bin/bash
# Runs inside the e2e VM, started by harness.service (baked into the image)
# from the 9p share /mnt/harness. Installs qmd's Debian package from the share
# as an operator would (apt-get install ./qmd_*.deb), runs scenarios.sh, dumps
# the journal to the share and powers off.
# Everything it produces lands in /mnt/harness:
#   harness.log  this script's progress      results   PASS/FAIL/INFO lines
#   install.status  "ok" or why qmd could not be installed (apt-install.log)
#   journal.txt / qmd-journal.txt / journal.export   journal dumps
#   rc           the exit code of scenarios.sh
set -uo pipefail

S=/mnt/harness
exec >>"$S/harness.log" 2>&1
t0=$(date +%s)
log() { printf '%s [vm +%ss] %s\n' "$(date +%H:%M:%S)" "$(( $(date +%s) - t0 ))" "$*"; }

finish() {
	local rc=$1
	log "dumping the journal"
	journalctl -b --no-pager -o short-precise >"$S/journal.txt" 2>&1
	journalctl -b --no-pager -u qmd.service -o verbose >"$S/qmd-journal.txt" 2>&1
	journalctl -b --no-pager -o export >"$S/journal.export" 2>&1
	echo "$rc" >"$S/rc"
	sync
	log "done (rc $rc), powering off"
	# Everything is on the share (9p, cache=none) and the disk is a throw-away
	# snapshot: power off at once. A clean stop waits ~90 s for the partition
	# (its systemd ignores SIGTERM), and so does systemd-shutdown after a
	# single --force.
	systemctl poweroff --force --force
	exit 0
}

# Settings passed from the host (E2E_SCENARIOS, E2E_CRASH_REPS, ...).
set -a
# shellcheck disable=SC1091 # written by run.sh
[ -f "$S/env" ] && . "$S/env"
set +a

log "harness started; waiting for the system to be up"
state=$(timeout 300 systemctl is-system-running --wait 2>&1)
log "system state: $state (uptime $(cut -d' ' -f1 /proc/uptime)s)"
cut -d' ' -f1 /proc/uptime >"$S/boot-seconds"
if [ "$state" != running ]; then
	systemctl --failed --no-pager
fi

# --- test fixtures that are not qmd ---------------------------------------------
log "installing test units (asil-bystander, qm-plain)"
install -m 0644 "$S/units/asil-bystander.service" /etc/systemd/system/
install -m 0644 "$S/units/qm-plain.service" /etc/systemd/system/
# The plain unit runs the same rootfs with its own /etc and /var, like qm's setup.
install -m 0755 "$S/e2e-hog" /usr/local/bin/e2e-hog
install -m 0755 "$S/e2e-hog" /usr/lib/qm/rootfs/usr/local/bin/e2e-hog
# ffiprobe (issue #9 benchmark): probes on the host, workloads in the partition.
install -m 0755 "$S/ffiprobe" /usr/local/bin/ffiprobe
install -m 0755 "$S/ffiprobe" /usr/lib/qm/rootfs/usr/local/bin/ffiprobe
mkdir -p /etc/qm/containers/containers.conf.d
install -m 0644 "$S/qm-containers.conf" /etc/qm/containers/containers.conf.d/50-e2e.conf
cp -a /etc/qm /etc/qm-plain
cp -a /var/qm /var/qm-plain
systemctl daemon-reload
systemctl start asil-bystander.service || log "WARNING: asil-bystander.service did not start"

# --- qmd, installed from its Debian package -------------------------------------
# As an operator does: the administrator's /etc/qmd/qmd.toml first, then
# `apt-get install ./qmd_*.deb` (offline: the image has every dependency).
# The package's postinst creates the group, the directories, updates the
# catalog, reloads the bus policy, enables qmd.service and starts it (when
# `qmd check-config` passes; `systemctl start` waits for READY=1).
# dpkg without an fsync per file (the disk is a throw-away snapshot, qemu
# snapshot=on) and without its progress bar (apt's logs are on the share).
dpkg_quick() {
	echo force-unsafe-io >/etc/dpkg/dpkg.cfg.d/50-e2e
	echo 'Dpkg::Use-Pty "0";' >/etc/apt/apt.conf.d/50-e2e
}
install_config() {
	mkdir -p /etc/qmd/qmd.toml.d
	install -m 0644 "$S/qmd.toml" /etc/qmd/qmd.toml
}
install_deb() {
	local deb st
	deb=$(cd "$S/pkg" && ls qmd_*.deb)
	[ "$(wc -w <<<"$deb")" = 1 ] || { echo "want one qmd_*.deb in the share's pkg/, found: ${deb:-none}"; return 1; }
	install_config
	dpkg_quick
	if ! (cd "$S/pkg" && DEBIAN_FRONTEND=noninteractive timeout 600 apt-get install -y -q "./$deb") >"$S/apt-install.log" 2>&1; then
		echo "apt-get install ./$deb failed: $(grep -E '^(E|W): ' "$S/apt-install.log" | head -n 3 | paste -sd' ' -) (apt-install.log)"
		return 1
	fi
	st=$(dpkg-query -W -f '${db:Status-Abbrev}${Version}' qmd 2>&1)
	[ "$st" = "ii $(dpkg-deb -f "$S/pkg/$deb" Version)" ] || { echo "dpkg-query after apt-get install: '$st'"; return 1; }
	st=$(systemctl is-enabled qmd.service 2>&1)
	[ "$st" = enabled ] || { echo "the package did not enable qmd.service (is-enabled: $st)"; return 1; }
	if ! systemctl is-active -q qmd.service; then
		echo "the package did not start qmd.service ($(systemctl show -p ActiveState,SubState,Result --value qmd.service | paste -sd/ -)); qmd check-config: $(qmd check-config 2>&1 >/dev/null | tail -n 2 | paste -sd' ' -)"
		return 1
	fi
	return 0
}
# E2E_SRC without packaging/: its `make install DESTDIR=share/root` tree.
install_tree() {
	[ -x "$S/root/usr/bin/qmd" ] || { echo "no usr/bin/qmd in the make install tree"; return 1; }
	[ -f "$S/root/usr/lib/systemd/system/qmd.service" ] ||
		{ echo "no usr/lib/systemd/system/qmd.service in the make install tree"; return 1; }
	cp -a "$S/root/." / || { echo "copying the install tree into / failed"; return 1; }
	systemd-sysusers || { echo "systemd-sysusers failed"; return 1; }
	systemctl daemon-reload
	journalctl --update-catalog || { echo "journalctl --update-catalog failed"; return 1; }
	# D-Bus policy from /usr/share/dbus-1/system.d: make the bus see it.
	systemctl reload dbus.service || true
	install_config
	if ! timeout 300 systemctl enable --now qmd.service; then
		echo "systemctl enable --now qmd.service failed: $(systemctl show -p ActiveState,SubState,Result --value qmd.service | paste -sd/ -)"
		return 1
	fi
	return 0
}
install_qmd() {
	if [ -f "$S/install.err" ]; then
		echo "building qmd failed on the build host: $(tail -n 1 "$S/install.err")"
		return 1
	fi
	if [ -d "$S/pkg" ]; then
		install_deb
	else
		install_tree
	fi
}
t_i=$(date +%s)
log "installing qmd from the share ($(cd "$S" && ls pkg/qmd_*.deb 2>/dev/null || echo "make install tree"))"
if why=$(install_qmd 2>"$S/install.stderr"); then
	echo ok >"$S/install.status"
	# Scenario 1 checks that qmd.service keeps this MainPID (no restart).
	systemctl show -p MainPID --value qmd.service >"$S/qmd-mainpid"
	log "qmd installed in $(( $(date +%s) - t_i ))s and started: $(systemctl is-active qmd.service), MainPID $(cat "$S/qmd-mainpid"), NRestarts $(systemctl show -p NRestarts --value qmd.service), package $(dpkg-query -W -f '${Version}' qmd 2>/dev/null || echo none)"
else
	echo "$why" >"$S/install.status"
	log "qmd NOT installed: $why"
fi

if [ -f "$S/debug.sh" ]; then # E2E_DEBUG_SCRIPT on the host: poke around first
	log "running debug.sh (output: debug.log)"
	timeout 600 bash -x "$S/debug.sh" >"$S/debug.log" 2>&1
fi
log "running scenarios: ${E2E_SCENARIOS:-all}"
timeout -k 10 "${E2E_VM_TIMEOUT:-2400}" bash "$S/scenarios.sh"
rc=$?
log "scenarios.sh exited with $rc"
finish "$rc"
