#!/bin/bash
# qmd end-to-end run: build or reuse the VM image, build qmd's Debian package
# (`make deb`) and a second one with a higher version (for the upgrade
# scenario) into a 9p share, boot the VM under qemu (software CPU), which
# installs the first with apt-get, and report the scenario results that come
# back through the share.
#
# Environment:
#   E2E_SCENARIOS   scenarios to run, e.g. "1 3" (default: 0 1 2 ... 11 13 14 15 16 17 12; 0 is
#                   the VM preflight that needs no qmd, 11 upgrades the
#                   package, 12 removes it)
#   E2E_TIMEOUT     hard limit for the VM in seconds (default 3900: a loaded
#                   build host needs about 2 times the quiet run's 1400 s)
#   E2E_MEM         VM memory in MiB (default 4096)
#   E2E_CRASH_REPS  crash repetitions per supervisor in scenarios 3 and 10 (default 3)
#   E2E_LOAD_VM_PCT share of RAM per stress-ng VM worker in scenario 10 (default 25)
#   E2E_BUILD       build directory (default build/e2e)
#   E2E_SKIP_INSTALL=1  do not build qmd (qmd scenarios then FAIL)
#   E2E_DEBUG_SCRIPT  a script run in the VM before the scenarios (debug.log)
#   E2E_QMD_CONFIG  another file to install as /etc/qmd/qmd.toml (experiments)
#   E2E_SRC         the qmd source tree to build and install (default: this
#                   checkout), e.g. an older commit: mkdir /tmp/old &&
#                   git archive COMMIT | tar -x -C /tmp/old; E2E_SRC=/tmp/old
#                   (a tree without packaging/ is installed from its
#                   `make install` tree instead of a package)
# Exit status: 0 only if every selected scenario reported PASS.
set -euo pipefail

# Everything is in main(), called on the last line: bash reads a script while
# it runs, so editing this file during a run must not change the running one.
main() {

	here=$(cd "$(dirname "$0")" && pwd)
	top=$(cd "$here/../.." && pwd)
	build=${E2E_BUILD:-$top/build/e2e}
	MAKE=${MAKE:-make}
	timeout_s=${E2E_TIMEOUT:-3900}
	mem=${E2E_MEM:-4096}
	scenarios=${E2E_SCENARIOS:-0 1 2 3 4 5 6 7 8 9 10 11 13 14 15 16 17 12}

	t0=$(date +%s)
	log() { printf '%s [e2e +%ss] %s\n' "$(date +%H:%M:%S)" "$(( $(date +%s) - t0 ))" "$*"; }
	# install_failed WHAT: keep the last lines of install.log for the VM's
	# install.status (every scenario that needs qmd FAILs with them).
	install_failed() {
		grep -Ev '^make(\[[0-9]+\])?: (Entering|Leaving)' "$build/install.log" | tail -n 5 >"$share/install.err"
		log "$1 FAILED; scenarios that need qmd will FAIL. Last lines:"
		sed 's/^/    /' "$share/install.err"
	}
	# build_debs: the Debian package the VM installs (share/pkg) and a second
	# build of the same tree with higher versions, qmd "$qv+e2e1" in package
	# "$pv+e2e1" (share/pkg-next), for the upgrade of scenario 11. The second
	# build has its own binary (BIN): bin/qmd stays the first build's.
	build_debs() {
		local qv pv t
		# As the Makefile's VERSION and packaging/version.sh make them (a tree
		# that is not a git checkout gets stand-ins).
		qv=$(git -C "$src" describe --tags --always --dirty 2>/dev/null || echo dev)
		pv=$("$src/packaging/version.sh" deb 2>/dev/null || echo 0.0~e2e)
		t=$(date +%s)
		log "make -C $src deb: qmd $qv, package $pv (log: $build/install.log)"
		if ! QMD_PKG_VERSION=$pv "$MAKE" -C "$src" deb VERSION="$qv" PKGDIR="$share/pkg" >"$build/install.log" 2>&1; then
			install_failed "make deb"
			return 0
		fi
		t_deb=$(( $(date +%s) - t )); t=$(date +%s)
		log "make -C $src deb of the upgrade: qmd $qv+e2e1, package $pv+e2e1 (log: $build/install-next.log)"
		mkdir -p "$build/next"
		if ! QMD_PKG_VERSION=$pv+e2e1 "$MAKE" -C "$src" deb VERSION="$qv+e2e1" BIN="$build/next/qmd" \
			PKGDIR="$share/pkg-next" >"$build/install-next.log" 2>&1; then
			grep -Ev '^make(\[[0-9]+\])?: (Entering|Leaving)' "$build/install-next.log" | tail -n 5 >"$share/pkg-next.err"
			log "the upgrade package FAILED (scenario 11 will FAIL):"
			sed 's/^/    /' "$share/pkg-next.err"
		fi
		t_deb_next=$(( $(date +%s) - t ))
		log "packages: $(cd "$share" && ls pkg/*.deb pkg-next/*.deb 2>/dev/null | paste -sd' ' -)"
	}
	t_deb=0
	t_deb_next=0

	# --- image ----------------------------------------------------------------------
	log "image: build or reuse"
	E2E_BUILD=$build bash "$here/build-image.sh"
	# shellcheck disable=SC1091
	. "$build/image.env"
	t_image=$(( $(date +%s) - t0 ))
	raw=$build/vm-$KEY.raw
	if [ ! -f "$raw" ] || [ "$raw" -ot "$IMAGE" ]; then
		log "unpacking $IMAGE"
		zstd -q -d --sparse -f "$IMAGE" -o "$raw.tmp"
		mv "$raw.tmp" "$raw"
	fi

	# --- share: scripts, config, units and the qmd packages ----------------------------
	share=$build/share
	rm -rf "$share"
	mkdir -p "$share/units"
	install -m 0755 "$here/vm/harness-run.sh" "$here/vm/scenarios.sh" "$share/"
	install -m 0755 "$here/vm/e2e-hog" "$share/"
	install -m 0644 "$here/vm/qmd.toml" "$here/vm/50-crashloop.toml" "$here/vm/qm-containers.conf" "$share/"
	# Issue #9 (freedom from interference): the benchmark's scenarios, their
	# qmd drop-ins and ffiprobe (static: it runs on the VM host and in QM).
	install -m 0755 "$here/vm/ffi.sh" "$share/"
	install -m 0644 "$here/vm/60-ffi-protect.toml" "$here/vm/61-ffi-io.toml" "$here/vm/62-ffi-disk.toml" "$share/"
	if ! (cd "$top" && CGO_ENABLED=0 ${GO:-go} build -trimpath -o "$share/ffiprobe" ./test/tools/ffiprobe) >"$build/ffiprobe.log" 2>&1; then
		log "building ffiprobe FAILED (scenarios 13-16 will FAIL):"
		sed 's/^/    /' "$build/ffiprobe.log"
	fi
	if [ -n "${E2E_QMD_CONFIG:-}" ]; then
		log "using $E2E_QMD_CONFIG as /etc/qmd/qmd.toml (E2E_QMD_CONFIG)"
		install -m 0644 "$E2E_QMD_CONFIG" "$share/qmd.toml"
	fi
	install -m 0644 "$here/vm/asil-bystander.service" "$here/vm/qm-plain.service" "$share/units/"
	if [ -n "${E2E_DEBUG_SCRIPT:-}" ]; then
		install -m 0755 "$E2E_DEBUG_SCRIPT" "$share/debug.sh"
	fi
	{
		printf 'E2E_SCENARIOS=%q\n' "$scenarios"
		printf 'E2E_VM_TIMEOUT=%q\n' "$(( timeout_s > 600 ? timeout_s - 300 : timeout_s / 2 ))"
		for v in E2E_CRASH_REPS E2E_RESYNC_WAIT E2E_PRESSURE_WAIT E2E_RESTORE_WAIT E2E_WATCHDOG_SLACK E2E_LOAD_VM_PCT \
			E2E_FFI_MODE E2E_FFI_WINDOW E2E_FFI_WORKLOADS; do
			[ -z "${!v:-}" ] || printf '%s=%q\n' "$v" "${!v}"
		done
	} >"$share/env"

	t_inst=$(date +%s)
	src=${E2E_SRC:-$top}
	if [ "${E2E_SKIP_INSTALL:-0}" = 1 ]; then
		echo "E2E_SKIP_INSTALL=1 was set" >"$share/install.err"
		log "skipping the qmd build (E2E_SKIP_INSTALL=1)"
	elif [ -f "$src/packaging/debian/build.sh" ]; then
		build_debs
	else
		# A tree from before the packages (E2E_SRC of an old commit): the VM
		# copies the `make install` tree into / instead (scenarios 11 and 12,
		# which need the package, FAIL).
		log "$src has no packaging/: make -C $src build && make -C $src install DESTDIR=$share/root PREFIX=/usr (log: $build/install.log)"
		if ! { "$MAKE" -C "$src" build && "$MAKE" -C "$src" install DESTDIR="$share/root" PREFIX=/usr; } \
			>"$build/install.log" 2>&1; then
			install_failed "make build/install"
		fi
	fi
	t_install=$(( $(date +%s) - t_inst ))
	log "qmd build took ${t_install}s"

	# --- boot -----------------------------------------------------------------------
	console=$build/console.log
	: >"$console"
	# A second, slow disk (/dev/vdb, ext4 "qmd-slow"): qemu caps it at 8 MiB/s
	# and 200 IOPS, like the eMMC of a car's computer. The main disk is served
	# from the build host's page cache and never makes a guest process wait
	# long enough for PSI io stall; on this one a partition's writer and an
	# ASIL reader really queue behind each other (scenario 15's IO reaction).
	slow=$build/slow.raw
	rm -f "$slow"
	truncate -s 512M "$slow"
	mkfs.ext4 -q -F -L qmd-slow "$slow" # set -e: a failure ends the run here
	log "booting the VM (kernel $KVER, ${mem} MiB, 2 vCPUs, TCG; hard timeout ${timeout_s}s; console: $console)"
	t_boot=$(date +%s)
	qemu-system-x86_64 -accel tcg,thread=multi -smp 2 -m "$mem" \
		-display none -monitor none -no-reboot -nodefaults \
		-serial "file:$console" -device virtio-rng-pci \
		-kernel "$KERNEL" -initrd "$INITRD" \
		-drive "file=$raw,format=raw,if=virtio,cache=unsafe,snapshot=on" \
		-drive "file=$slow,format=raw,if=virtio,cache=none,throttling.bps-total=8388608,throttling.iops-total=200" \
		-virtfs "local,path=$share,mount_tag=harness,security_model=none" \
		-append "console=ttyS0 root=/dev/vda rw panic=-1 quiet systemd.wants=harness.service" &
	qpid=$!
	trap 'kill "$qpid" 2>/dev/null || true' EXIT

	timed_out=0
	last=
	seen=0
	while kill -0 "$qpid" 2>/dev/null; do
		if [ $(( $(date +%s) - t_boot )) -ge "$timeout_s" ]; then
			timed_out=1
			log "HARD TIMEOUT after ${timeout_s}s: killing qemu"
			kill "$qpid" 2>/dev/null || true
			sleep 2
			kill -9 "$qpid" 2>/dev/null || true
			break
		fi
		sleep 5
		cur=$(grep -vE '^(PASS|FAIL|INFO) ' "$share/harness.log" 2>/dev/null | tail -n 1 || true)
		if [ -n "$cur" ] && [ "$cur" != "$last" ]; then
			log "vm: $cur"
			last=$cur
		fi
		if [ -f "$share/results" ]; then
			while read -r line; do log "vm: $line"; done < <(tail -n +$(( seen + 1 )) "$share/results")
			seen=$(wc -l <"$share/results")
		fi
	done
	wait "$qpid" 2>/dev/null || true
	trap - EXIT
	t_vm=$(( $(date +%s) - t_boot ))

	# --- report -----------------------------------------------------------------------
	echo
	echo "===== qmd e2e results ====="
	bad=0
	if [ "$timed_out" = 1 ] || [ ! -f "$share/rc" ]; then
		bad=1
		echo "VM did not finish (timed out: $timed_out). Console tail:"
		tail -n 40 "$console" | sed 's/^/  console| /'
		echo "harness log tail:"
		tail -n 20 "$share/harness.log" 2>/dev/null | sed 's/^/  harness| /' || true
		cur=$(ls -t "$share"/s*.log 2>/dev/null | head -n 1 || true)
		if [ -n "$cur" ]; then
			echo "last scenario log ($cur):"
			tail -n 30 "$cur" | sed 's/^/  | /'
		fi
	fi
	if [ -f "$share/install.status" ] && [ "$(cat "$share/install.status")" != ok ]; then
		echo "qmd install in the VM: $(cat "$share/install.status")"
	fi
	touch "$share/results"
	grep -E '^(PASS|FAIL|INFO) ' "$share/results" || true
	missing=
	for n in $scenarios; do
		grep -qE "^(PASS|FAIL) $n " "$share/results" || missing="$missing $n"
	done
	if [ -n "$missing" ]; then
		bad=1
		echo "MISSING results for scenario(s):$missing"
	fi
	while read -r _ n name _; do
		bad=1
		echo
		echo "----- FAIL $n $name: scenario log (tail) -----"
		tail -n 15 "$share/s$n.log" 2>/dev/null || true
		echo "----- FAIL $n $name: journal -----"
		head -n 150 "$share/fail-$n.journal" 2>/dev/null || echo "(no journal captured)"
	done < <(grep '^FAIL ' "$share/results" || true)
	echo
	npass=$(grep -c '^PASS ' "$share/results" || true)
	nfail=$(grep -c '^FAIL ' "$share/results" || true)
	boot=$(cat "$share/boot-seconds" 2>/dev/null || echo "?")
	echo "passed $npass, failed $nfail, missing $(echo "$missing" | wc -w)"
	echo "timings: image ${t_image}s, qmd build ${t_install}s (make deb ${t_deb}s, upgrade package ${t_deb_next}s), VM boot to ready ${boot}s (VM uptime), VM run ${t_vm}s, total $(( $(date +%s) - t0 ))s"
	echo "per scenario: $(grep -E '^(PASS|FAIL) ' "$share/results" | awk '{ print $2 "=" $4 }' | sed 's/:$//' | paste -sd' ' -)"
	echo "artifacts: $share (results, harness.log, s<n>.log, journal.txt, qmd-journal.txt, journal.export), $console"
	# The freedom-from-interference table (scenario 13 / make ffi-bench): the
	# raw records are kept under build/ffi-bench (the share is wiped by the
	# next run).
	if [ -s "$share/ffi/results.jsonl" ]; then
		mkdir -p "$top/build/ffi-bench"
		cp "$share/ffi/results.jsonl" "$top/build/ffi-bench/results.jsonl"
		echo
		echo "===== freedom from interference (plain containers/qm vs qmd; probe latencies ms, PSI ms of ASIL stall) ====="
		"$share/ffiprobe" report "$top/build/ffi-bench/results.jsonl" | tee "$top/build/ffi-bench/table.txt" || true
		echo "raw records: $top/build/ffi-bench/results.jsonl"
	fi
	return "$bad"
}

main "$@"
