#!/bin/bash
# qmd end-to-end run: build or reuse the VM image, install qmd into a 9p share
# with `make install DESTDIR=...`, boot the VM under qemu (software CPU), and
# report the scenario results that come back through the share.
#
# Environment:
#   E2E_SCENARIOS   scenarios to run, e.g. "1 3" (default: 0 1 2 ... 10; 0 is
#                   the VM preflight that needs no qmd)
#   E2E_TIMEOUT     hard limit for the VM in seconds (default 3000)
#   E2E_MEM         VM memory in MiB (default 4096)
#   E2E_CRASH_REPS  crash repetitions per supervisor in scenarios 3 and 10 (default 3)
#   E2E_LOAD_VM_PCT share of RAM per stress-ng VM worker in scenario 10 (default 25)
#   E2E_BUILD       build directory (default build/e2e)
#   E2E_SKIP_INSTALL=1  do not run make build/install (qmd scenarios then FAIL)
#   E2E_DEBUG_SCRIPT  a script run in the VM before the scenarios (debug.log)
#   E2E_QMD_CONFIG  another file to install as /etc/qmd/qmd.toml (experiments)
#   E2E_SRC         the qmd source tree to build and install (default: this
#                   checkout), e.g. an older commit: mkdir /tmp/old &&
#                   git archive COMMIT | tar -x -C /tmp/old; E2E_SRC=/tmp/old
# Exit status: 0 only if every selected scenario reported PASS.
set -euo pipefail

# Everything is in main(), called on the last line: bash reads a script while
# it runs, so editing this file during a run must not change the running one.
main() {

	here=$(cd "$(dirname "$0")" && pwd)
	top=$(cd "$here/../.." && pwd)
	build=${E2E_BUILD:-$top/build/e2e}
	MAKE=${MAKE:-make}
	timeout_s=${E2E_TIMEOUT:-3000}
	mem=${E2E_MEM:-4096}
	scenarios=${E2E_SCENARIOS:-0 1 2 3 4 5 6 7 8 9 10}

	t0=$(date +%s)
	log() { printf '%s [e2e +%ss] %s\n' "$(date +%H:%M:%S)" "$(( $(date +%s) - t0 ))" "$*"; }

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

	# --- share: scripts, config, units and the qmd install tree ------------------------
	share=$build/share
	rm -rf "$share"
	mkdir -p "$share/units"
	install -m 0755 "$here/vm/harness-run.sh" "$here/vm/scenarios.sh" "$share/"
	install -m 0755 "$here/vm/e2e-hog" "$share/"
	install -m 0644 "$here/vm/qmd.toml" "$here/vm/50-crashloop.toml" "$here/vm/qm-containers.conf" "$share/"
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
		for v in E2E_CRASH_REPS E2E_RESYNC_WAIT E2E_PRESSURE_WAIT E2E_RESTORE_WAIT E2E_WATCHDOG_SLACK E2E_LOAD_VM_PCT; do
			[ -z "${!v:-}" ] || printf '%s=%q\n' "$v" "${!v}"
		done
	} >"$share/env"

	t_inst=$(date +%s)
	src=${E2E_SRC:-$top}
	if [ "${E2E_SKIP_INSTALL:-0}" = 1 ]; then
		echo "E2E_SKIP_INSTALL=1 was set" >"$share/install.err"
		log "skipping make build/install (E2E_SKIP_INSTALL=1)"
	else
		log "make -C $src build && make -C $src install DESTDIR=$share/root PREFIX=/usr (log: $build/install.log)"
		if ! { "$MAKE" -C "$src" build && "$MAKE" -C "$src" install DESTDIR="$share/root" PREFIX=/usr; } \
			>"$build/install.log" 2>&1; then
			grep -Ev '^make(\[[0-9]+\])?: (Entering|Leaving)' "$build/install.log" | tail -n 5 >"$share/install.err"
			log "make build/install FAILED; scenarios that need qmd will FAIL. Last lines:"
			sed 's/^/    /' "$share/install.err"
		fi
	fi
	t_install=$(( $(date +%s) - t_inst ))
	log "install step took ${t_install}s"

	# --- boot -----------------------------------------------------------------------
	console=$build/console.log
	: >"$console"
	log "booting the VM (kernel $KVER, ${mem} MiB, 2 vCPUs, TCG; hard timeout ${timeout_s}s; console: $console)"
	t_boot=$(date +%s)
	qemu-system-x86_64 -accel tcg,thread=multi -smp 2 -m "$mem" \
		-display none -monitor none -no-reboot -nodefaults \
		-serial "file:$console" -device virtio-rng-pci \
		-kernel "$KERNEL" -initrd "$INITRD" \
		-drive "file=$raw,format=raw,if=virtio,cache=unsafe,snapshot=on" \
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
	echo "timings: image ${t_image}s, make build+install ${t_install}s, VM boot to ready ${boot}s (VM uptime), VM run ${t_vm}s, total $(( $(date +%s) - t0 ))s"
	echo "per scenario: $(grep -E '^(PASS|FAIL) ' "$share/results" | awk '{ print $2 "=" $4 }' | sed 's/:$//' | paste -sd' ' -)"
	echo "artifacts: $share (results, harness.log, s<n>.log, journal.txt, qmd-journal.txt, journal.export), $console"
	return "$bad"
}

main "$@"
