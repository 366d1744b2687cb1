#!/bin/bash
# qmd end-to-end scenarios. Runs INSIDE the e2e VM (from harness-run.sh), as
# an operator works: systemctl, busctl, journalctl, podman.
#
#   scenarios.sh          run the scenarios in $E2E_SCENARIOS (default: all)
#   scenarios.sh run N    run scenario N alone (used by the loop below)
#
# Each scenario appends one line to /mnt/harness/results:
#   PASS <n> <name> <seconds>s
#   FAIL <n> <name> <seconds>s: <why>
# plus optional "INFO <n> ..." lines (measurements). On FAIL the journal since
# the scenario started goes to /mnt/harness/fail-<n>.journal, preceded by the
# scenario's evidence (e.g. the journal around a watchdog kill of qmd that
# happened before the scenario started).
set -euo pipefail

S=${E2E_SHARE:-/mnt/harness}
RESULTS=$S/results
BUS=org.containers.qmd1
MGR=/org/containers/qmd1
MIF=org.containers.qmd1.Manager
PART=/org/containers/qmd1/partition
PIF=org.containers.qmd1.Partition
BUSYBOX_ROOTFS=/usr/lib/qmd-e2e/busybox-rootfs # on the VM host
NESTED_ROOTFS=/var/lib/e2e/busybox-rootfs      # inside the QM partition
UINT64_MAX=18446744073709551615

declare -A NAMES=(
	[0]=vm-preflight [1]=boot [2]=oom-score-adj [3]=crash [4]=crash-loop
	[5]=memory [6]=pressure [7]=qmd-restart [8]=access [9]=watchdog
	[10]=under-load [11]=upgrade [12]=remove
	[13]=ffi [14]=asil-restart [15]=io-hog [16]=disk-filler [17]=systemd-hung
)
# 13-16 (freedom from interference, vm/ffi.sh) and 17 restart qmd or the
# partition: after 11, before 12 (which removes qmd and must stay last).
ALL_SCENARIOS="0 1 2 3 4 5 6 7 8 9 10 11 13 14 15 16 17 12"
# Per-scenario time limits (seconds, inside the VM; the CPU is emulated).
declare -A LIMITS=([0]=600 [3]=1200 [6]=600 [10]=1200)
DEFAULT_LIMIT=420

# ---- helpers -------------------------------------------------------------------
T0=$(date +%s)
say() { printf '%s [s%s +%ss] %s\n' "$(date +%H:%M:%S)" "${N:-?}" "$(( $(date +%s) - T0 ))" "$*"; }
# fail WHY: end the scenario with this reason. Under guard_qmd, a restart of
# qmd.service since the guard's start is named first: it is the likely root
# cause of whatever failed after it.
fail() {
	local why=$* r
	if [ ${#GUARD[@]} -gt 0 ]; then
		r=$(qmd_restarts "${GUARD[@]}" || true)
		[ -z "$r" ] || why="$r; then: $why"
	fi
	say "FAIL: $why"
	printf '%s\n' "$why" >"$REASON"
	exit 1
}
# evidence TITLE < TEXT: kept for the report; it goes to the top of
# fail-<n>.journal when the scenario fails (the same TITLE replaces itself).
evidence() {
	local f=$S/.evidence-$N.d
	mkdir -p "$f"
	{ echo "=== evidence: $1 ==="; cat; } >"$f/$(printf '%s' "$1" | md5sum | cut -c1-8)"
	say "evidence: $1 (see fail-$N.journal)" >&2
}
num() { case $1 in '' | *[!0-9]*) echo 0 ;; *) echo "$1" ;; esac; } # "[not set]" -> 0
# check_later WHY: record a failed check, go on; the scenario fails at its end
# with every such reason (for checks that do not block the ones after them).
LATER=()
check_later() { say "FAILED CHECK: $*"; LATER+=("$*"); }
# info TEXT: a measurement line in the results.
info() { say "INFO: $*"; printf 'INFO %s %s\n' "$N" "$*" >>"$RESULTS"; }
now_ns() { date +%s%N; }
secs() { awk -v ns="$1" 'BEGIN { printf "%.2f", ns / 1e9 }'; } # ns -> "1.23"

# wait_for SECONDS DESCRIPTION CMD...: poll CMD until it succeeds.
wait_for() {
	local limit=$1 what=$2; shift 2
	local end=$(( $(date +%s) + limit ))
	until "$@" >/dev/null 2>&1; do
		if [ "$(date +%s)" -ge "$end" ]; then
			fail "timed out after ${limit}s waiting for: $what"
		fi
		sleep 1 # podman CLI calls cost ~1 s of emulated CPU: do not starve the system under test
	done
}

# The scenario needs qmd installed and running.
need_qmd() {
	local st
	st=$(cat "$S/install.status" 2>/dev/null || echo "install step did not run")
	[ "$st" = ok ] || fail "qmd not installed: $st"
	if ! systemctl is-active -q qmd.service; then
		fail "qmd.service is $(systemctl show -p ActiveState,SubState,Result --value qmd.service | paste -sd/ -)"
	fi
}

# busctl values without the type signature: 's "active"' -> active, 't 5' -> 5.
unsig() { sed -E 's/^[a-z]+ //; s/^"(.*)"$/\1/'; }
# prop PARTITION PROPERTY
prop() { busctl get-property "$BUS" "$PART/$1" "$PIF" "$2" | unsig; }
# pcall PARTITION METHOD [SIGNATURE ARGS...]
pcall() { local p=$1; shift; busctl call "$BUS" "$PART/$p" "$PIF" "$@"; }
mcall() { busctl call "$BUS" "$MGR" "$MIF" "$@"; }
svc() { systemctl show -p "$2" --value "$1"; } # svc UNIT PROPERTY

# Container facts through the podman CLI.
ctr() { podman inspect -f "{{$2}}" "$1" 2>/dev/null; } # ctr NAME GOTEMPLATE-FIELD
ctr_running() { [ "$(ctr "$1" .State.Status)" = running ]; }
# running with an init PID other than $2
ctr_running_new_pid() {
	local pid
	pid=$(ctr "$1" .State.Pid) || return 1
	[ "$(ctr "$1" .State.Status)" = running ] && [ -n "$pid" ] && [ "$pid" != 0 ] && [ "$pid" != "$2" ]
}
# systemd inside the container: running, degraded, starting, ... ("" when
# it cannot be asked yet, e.g. right after the container started).
inner_state() { podman exec "$1" systemctl is-system-running 2>/dev/null || true; }
# wait_inner_up NAME [SECONDS]: until systemd inside NAME is running|degraded.
wait_inner_up() {
	local end=$(( $(date +%s) + ${2:-240} )) st=
	while :; do
		st=$(inner_state "$1")
		case $st in running | degraded) return 0 ;; esac
		if [ "$(date +%s)" -ge "$end" ]; then
			fail "systemd inside $1 is '$st' after ${2:-240}s, want running or degraded ($(podman exec "$1" systemctl is-system-running 2>&1 | tail -n 1))"
		fi
		sleep 1
	done
}

# need_running: the partition qm must be running; say why not otherwise.
need_running() {
	ctr_running qm && return 0
	fail "partition qm is not running (D-Bus ActiveState/SubState/Result: $(prop qm ActiveState 2>&1)/$(prop qm SubState 2>&1)/$(prop qm Result 2>&1); podman: $(ctr qm .State.Status || echo no container), last qmd error: $(journalctl -q --no-pager -u qmd.service QMD_PARTITION=qm -o verbose -n 100 | sed -n 's/^ *QMD_ERROR=//p' | tail -n 1)"
}

# The partition's cgroup directory, from qmd's ControlGroup property.
part_cgroup() {
	local cg
	cg=$(prop "$1" ControlGroup)
	[ -n "$cg" ] || fail "ControlGroup property of partition $1 is empty"
	echo "/sys/fs/cgroup$cg"
}
# memory.high as a number ("max" -> UINT64_MAX)
mem_high() { local v; v=$(cat "$1/memory.high"); [ "$v" = max ] && v=$UINT64_MAX; echo "$v"; }
lt() { awk -v a="$1" -v b="$2" 'BEGIN { exit !(a + 0 < b + 0) }'; }
median() { sort -n | awk '{ v[NR] = $1 } END { if (NR == 0) { print "nan"; exit } if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

journal_since() { # journal_since EPOCH|boot [journalctl args...]
	local since=$1; shift
	if [ "$since" = boot ]; then
		journalctl --no-pager -q -b "$@"
	else
		journalctl --no-pager -q --since "@$since" "$@"
	fi
}

# ---- qmd.service itself must not be restarted ------------------------------------
# qmd_restarts SINCE NRESTARTS0 [MAINPID0]: one line saying how qmd.service has
# been restarted since SINCE (epoch seconds, or "boot"); nothing when it has
# not: systemd's "Watchdog timeout" for it, NRestarts other than NRESTARTS0,
# MainPID other than MAINPID0. For a watchdog kill, the line quotes qmd's last
# warning before it, and the journal of qmd.service around each kill is kept
# as evidence.
qmd_restarts() {
	local since=$1 nr0=$2 pid0=${3:-} wd nr pid res warn first i whys=()
	nr=$(svc qmd.service NRestarts)
	pid=$(svc qmd.service MainPID)
	res=$(svc qmd.service Result)
	# systemd's own messages about the unit (PID 1, UNIT=qmd.service); when
	# the unit's state shows a restart, give the journal a moment to have it.
	for i in 1 2 3 4 5; do
		wd=$(journal_since "$since" _PID=1 UNIT=qmd.service -o short-precise | grep 'Watchdog timeout' || true)
		if [ -n "$wd" ] || { [ "$nr" = "$nr0" ] && { [ -z "$pid0" ] || [ "$pid" = "$pid0" ]; } && [ "$res" != watchdog ]; }; then
			break
		fi
		[ "$i" = 5 ] || sleep 1
	done
	[ -n "$wd" ] || [ "$res" != watchdog ] ||
		whys+=("qmd.service was killed by its watchdog (Result=watchdog; no 'Watchdog timeout' in the journal yet)")
	# A kill that ends a freeze of the whole VM is not a wedged qmd: no
	# process ran (systemd and journald included), and when the VM ran again
	# systemd's clock had passed the watchdog deadline before qmd could be
	# scheduled to ping. Seen once under stress-ng: memhog's page faults on
	# a TCG VM, the journal silent for 38 s, the kernel reporting an RCU
	# stall ("rcu_preempt kthread starved") as it resumed. Excused only with
	# both signs, and only when those kills explain every restart.
	if [ -n "$wd" ]; then
		local frozen
		frozen=$(vm_frozen_kills "$since")
		if [ -n "$frozen" ] && [ "$(grep -c . <<<"$frozen")" = "$(grep -c . <<<"$wd")" ] &&
			[ "$(( $(num "$nr") - $(num "$nr0") ))" = "$(grep -c . <<<"$wd")" ] && [ "$res" = success ]; then
			printf 'INFO %s %s\n' "$N" "qmd.service killed by its watchdog during a freeze of the whole VM, not counted: $(paste -sd';' - <<<"$frozen")" >>"$RESULTS"
			say "INFO: qmd.service killed by its watchdog during a freeze of the whole VM: $frozen" >&2
			return 0
		fi
	fi
	if [ -n "$wd" ]; then
		first=$(head -n 1 <<<"$wd" | cut -d' ' -f3,6-)
		# qmd's last warning before the first kill (reads it all: no SIGPIPE)
		warn=$(qmd_log "$since" | awk '/Watchdog timeout/ { done = 1 } !done && /health check failed|withholding the watchdog/ { w = $0 } END { print w }')
		[ -z "$warn" ] || warn=" after qmd logged \"$warn\""
		whys+=("qmd.service was killed by its watchdog $(grep -c . <<<"$wd") time(s) since $(when "$since"): \"$first\"$warn")
		{ qmd_log "$since" | grep -B 20 -A 4 'Watchdog timeout' || true; } |
			evidence "journal of qmd.service (with QMD_ERROR) around its watchdog timeout(s) since $(when "$since")"
	fi
	[ "$nr" = "$nr0" ] || whys+=("NRestarts of qmd.service went from $nr0 to $nr")
	[ -z "$pid0" ] || [ "$pid" = "$pid0" ] ||
		whys+=("MainPID of qmd.service changed from $pid0 to $pid ($(svc qmd.service ActiveState)/$(svc qmd.service SubState), Result $(svc qmd.service Result))")
	[ ${#whys[@]} -eq 0 ] || printf '%s; ' "${whys[@]}" | sed 's/; $//'
}
# vm_frozen_kills SINCE: one line per watchdog kill of qmd.service since
# SINCE that ended a freeze of the whole VM: the journal silent for at least
# 15 s right before it (no unit, not even the kernel, logged anything), and
# the kernel reporting a stall (RCU, soft lockup) within 30 s after it.
vm_frozen_kills() {
	local t last gap
	journal_since "$1" _PID=1 UNIT=qmd.service -o short-unix | awk '/Watchdog timeout/ { print $1 }' |
		while read -r t; do
			last=$(journalctl --no-pager -q --since "@$(awk -v t="$t" 'BEGIN { printf "%.6f", t - 120 }')" \
				--until "@$(awk -v t="$t" 'BEGIN { printf "%.6f", t - 0.001 }')" -o short-unix | awk 'NF { l = $1 } END { print l }')
			[ -n "$last" ] || continue
			gap=$(awk -v t="$t" -v l="$last" 'BEGIN { printf "%.1f", t - l }')
			awk -v g="$gap" 'BEGIN { exit !(g >= 15) }' || continue
			journalctl --no-pager -q -k --since "@${t%.*}" --until "@$(( ${t%.*} + 30 ))" -o cat |
				grep -qE 'rcu: INFO: rcu_(preempt|sched) detected stalls|rcu_(preempt|sched) kthread starved|soft lockup' || continue
			echo "kill at $(date -d "@${t%.*}" +%T), journal silent ${gap}s before it, kernel stall report after it"
		done
}
# qmd_log SINCE: journalctl -u qmd.service (qmd's entries and systemd's about
# it), one line an entry: "TIME MESSAGE [partition P] [error: QMD_ERROR]" (the
# error of a warning is a field). Of a Go stack dump on qmd's stderr (after the
# watchdog's SIGABRT) only the first line is kept; the whole dump is in
# journal.txt.
qmd_log() {
	journal_since "$1" -u qmd.service -o verbose --output-fields=MESSAGE,QMD_ERROR,QMD_PARTITION,_TRANSPORT |
		awk '
			function flush() {
				if (t == "") return
				if (tr == "stdout" && dump) { skipped++; t = m = e = p = tr = ""; return }
				dump = tr == "stdout" && m ~ /^(SIGABRT|SIGQUIT|SIGSEGV|panic|fatal error)/
				if (skipped) print "    (" skipped " more lines of qmd stderr: a stack dump, see journal.txt)"
				skipped = 0
				print t, m (p != "" ? " [partition " p "]" : "") (e != "" ? " [error: " e "]" : "")
				t = m = e = p = tr = ""
			}
			/^[^ ]/ { flush(); t = $3; next }
			/^    MESSAGE=/ { m = substr($0, 13); next }
			/^    QMD_ERROR=/ { e = substr($0, 15); next }
			/^    QMD_PARTITION=/ { p = substr($0, 19); next }
			/^    _TRANSPORT=/ { tr = substr($0, 16); next }
			END { flush(); if (skipped) print "    (" skipped " more lines of qmd stderr: a stack dump, see journal.txt)" }'
}
# when EPOCH|boot: "boot" or the wall-clock time of EPOCH.
when() { if [ "$1" = boot ]; then echo boot; else date -d "@$1" +%T; fi; }
# guard_qmd SINCE NRESTARTS0 [MAINPID0]: from here on qmd.service must not be
# restarted; every FAIL of the scenario names such a restart first. End with
# guard_qmd_check.
GUARD=()
guard_qmd() { GUARD=("$@"); }
# guard_qmd_check: the guard's check as a failed check (put first: it is the
# likely cause of the others); ends the guard.
guard_qmd_check() {
	local r
	r=$(qmd_restarts "${GUARD[@]}")
	GUARD=()
	if [ -n "$r" ]; then
		say "FAILED CHECK: $r"
		LATER=("$r" "${LATER[@]}")
	fi
}
# watchdog_secs: qmd.service's WatchdogSec in whole seconds (0: none).
watchdog_secs() {
	local wd s
	wd=$(svc qmd.service WatchdogUSec) # like "20s" or "1min 30s"
	case $wd in "" | 0 | infinity) echo 0; return ;; esac
	s=$(systemd-analyze timespan "$wd" 2>/dev/null | awk '/s:/ && $1 ~ /^(μs|us):$/ { printf "%d", $2 / 1e6 }')
	echo "${s:-30}"
}

# ---- scenarios -------------------------------------------------------------------

# 0: the VM itself, without qmd: cgroup v2, podman, the QM rootfs booting its
# own systemd under the plain Restart=always unit, oom_score_adj, nested podman.
s0() {
	[ "$(stat -fc %T /sys/fs/cgroup)" = cgroup2fs ] || fail "/sys/fs/cgroup is not cgroup v2"
	systemctl is-active -q podman.socket || fail "podman.socket is not active"
	local t
	t=$(now_ns)
	podman run --rm --network none --rootfs "$BUSYBOX_ROOTFS" /bin/true ||
		fail "podman run of a busybox rootfs failed"
	info "podman run --rm busybox: $(secs $(( $(now_ns) - t )))s"
	t=$(now_ns)
	timeout 300 systemctl start qm-plain.service ||
		fail "qm-plain.service (podman run of the QM rootfs) did not start: $(svc qm-plain.service Result)"
	info "qm-plain.service start: $(secs $(( $(now_ns) - t )))s"
	wait_inner_up qm-plain
	info "QM container start to its systemd running: $(secs $(( $(now_ns) - t )))s"
	local pid adj
	pid=$(ctr qm-plain .State.Pid)
	adj=$(cat "/proc/$pid/oom_score_adj")
	[ "$adj" = 500 ] || fail "qm-plain init oom_score_adj is $adj, want 500 (--oom-score-adj=500)"
	t=$(now_ns)
	podman exec qm-plain podman run --rm --network none --rootfs "$NESTED_ROOTFS" /bin/true ||
		fail "nested podman run inside the QM container failed"
	info "nested podman run --rm busybox in QM: $(secs $(( $(now_ns) - t )))s"

	# Fixture of scenario 5: a hog in a unit of QM's own systemd with a low
	# MemoryMax is OOM-killed, and that shows in the container cgroup's
	# memory.events (hierarchical), where qmd watches.
	local cg k0 k1 out
	cg=/sys/fs/cgroup$(cut -d: -f3 "/proc/$pid/cgroup")
	cg=$(dirname "$cg") # systemd inside moved itself to init.scope
	k0=$(awk '$1 == "oom_kill" { print $2 }' "$cg/memory.events")
	if out=$(podman exec qm-plain systemd-run --wait --quiet --collect --unit=e2e-hog \
		-p MemoryMax=64M -p MemorySwapMax=0 /usr/local/bin/e2e-hog once 512 2>&1); then
		fail "memory hog in QM with MemoryMax=64M was not killed: $out"
	fi
	k1=$(awk '$1 == "oom_kill" { print $2 }' "$cg/memory.events")
	[ "$k1" -gt "$k0" ] || fail "oom_kill in $cg/memory.events did not grow ($k0 -> $k1): $out"
	info "QM hog OOM-killed; $cg/memory.events oom_kill $k0 -> $k1"

	# Fixture of scenario 3: one crash of the plain Restart=always unit.
	local r
	r=$(crash_once qm-plain) || exit 1
	info "plain Restart=always: crash->container started $(secs "${r% *}")s, crash->QM systemd running $(secs "${r#* }")s"
	systemctl stop qm-plain.service

	# Fixture of scenario 6: the host hog makes host memory pressure.
	systemd-run --unit=e2e-host-hog -p MemoryHigh=64M -p MemorySwapMax=0 \
		/usr/local/bin/e2e-hog churn 256 >/dev/null 2>&1 ||
		fail "could not start the host memory hog"
	sleep 10
	local psi
	psi=$(head -n 1 /proc/pressure/memory)
	systemctl stop e2e-host-hog.service
	info "host hog: /proc/pressure/memory $psi"
	awk '{ split($2, a, "="); exit !(a[2] + 0 > 5) }' <<<"$psi" || fail "the host hog made no memory pressure: $psi"
}

# check_boot: the checks of scenario 1 (scenario 10 runs them under load):
# qmd.service active, the container qm running, QM's systemd up, D-Bus
# ActiveState active, STATUS= shown by systemctl status.
check_boot() {
	need_qmd
	(wait_for 240 "container qm running (podman ps)" sh -c \
		"podman ps --filter 'name=^qm\$' --filter status=running --format '{{.Names}}' | grep -qx qm") ||
		need_running
	wait_inner_up qm
	info "QM systemd: $(inner_state qm); failed units: $(podman exec qm systemctl --failed --plain --no-legend | awk '{ print $1 }' | paste -sd, -)"
	wait_for 60 "busctl get-property ... ActiveState = active" \
		sh -c "busctl get-property $BUS $PART/qm $PIF ActiveState | grep -qx 's \"active\"'"
	local status
	status=$(systemctl status --no-pager qmd.service | grep -E '^ *Status: "' || true)
	[ -n "$status" ] || check_later "systemctl status qmd shows no Status: line (sd_notify STATUS=)"
	info "systemctl status qmd: ${status#*Status: }"
}

# 1: boot: check_boot, and qmd.service was never restarted since the VM
# booted: no "Watchdog timeout" for it in the journal, NRestarts 0, the
# MainPID that the harness saw when it installed qmd.
s1() {
	guard_qmd boot 0 "$(cat "$S/qmd-mainpid" 2>/dev/null || true)"
	check_boot
	guard_qmd_check
	info "qmd.service active after $(svc qmd.service ActiveEnterTimestampMonotonic | awk '{ printf "%.1f", $1 / 1e6 }')s of uptime; $(qmd_log boot | grep -c 'health check failed' || true) 'health check failed' warning(s) since boot"
}

# 2: oom_score_adj: partition init 500, nested container 750, ASIL keeps -800.
s2() {
	need_qmd
	need_running
	local pid adj
	pid=$(ctr qm .State.Pid)
	adj=$(cat "/proc/$pid/oom_score_adj")
	[ "$adj" = 500 ] || fail "partition init (pid $pid) oom_score_adj is $adj, want 500"

	# CPUWeight=idle that counts: the kernel weighs a cgroup against its
	# siblings only, so the partition lives in qm.slice (a sibling of
	# system.slice, where the ASIL units run). The slice is in the kernel's
	# idle class while memory is quiet, the scope has the lowest weight
	# (never idle), both through systemd (which rewrites cpu.weight and
	# cpu.idle on every change).
	local cg sl=/sys/fs/cgroup/qm.slice
	cg=$(part_cgroup qm)
	case $cg in
	"$sl/libpod"-*.scope) ;;
	*) fail "partition cgroup $cg is not in qm.slice" ;;
	esac
	# The scenarios before leave memory pressure behind (scenario 0's hogs):
	# the slice returns to the idle class restore_after (30 s) after the
	# last sign, once qmd's throttle has given memory.high back.
	local tq
	tq=$(date +%s)
	wait_for 150 "qm.slice in the idle class (cpu.idle 1) while memory is quiet" sh -c "[ \"\$(cat $sl/cpu.idle)\" = 1 ]"
	info "qm.slice in the idle class after $(( $(date +%s) - tq ))s"
	[ "$(svc qm.slice CPUWeight)" = idle ] || fail "systemd's CPUWeight of qm.slice is $(svc qm.slice CPUWeight), want idle (kept by systemd)"
	[ "$(awk '/^default/ { print $2 }' "$sl/io.weight")" = 50 ] || fail "qm.slice io.weight is '$(paste -sd' ' "$sl/io.weight")', want default 50"
	[ "$(cat "$cg/cpu.weight")" = 1 ] && [ "$(cat "$cg/cpu.idle")" = 0 ] ||
		fail "partition scope cpu.weight $(cat "$cg/cpu.weight") cpu.idle $(cat "$cg/cpu.idle"), want 1 and 0 (the lowest weight, never the idle class)"
	info "partition in qm.slice: slice cpu.idle 1, io.weight 50; scope cpu.weight 1, cpu.idle 0"

	# Memory tight for the partition: the slice leaves the idle class
	# (weight 1), so that reclaiming and killed processes are not starved,
	# and returns restore_after (30 s) after the last sign. The sign: a QM
	# unit that allocates far beyond its MemoryHigh reclaims all the time.
	local t0 t1
	t0=$(date +%s)
	podman exec qm systemd-run --unit=e2e-churn -p MemoryHigh=64M -p MemorySwapMax=0 \
		/usr/local/bin/e2e-hog churn 256 >/dev/null 2>&1 || fail "could not start the memory churn in QM"
	if ! (wait_for 60 x sh -c "[ \"\$(cat $sl/cpu.idle)\" = 0 ] && [ \"\$(cat $sl/cpu.weight)\" = 1 ]") 2>/dev/null; then
		podman exec qm systemctl stop e2e-churn.service >/dev/null 2>&1 || true
		fail "qm.slice cpu.idle $(cat "$sl/cpu.idle") cpu.weight $(cat "$sl/cpu.weight") 60s into a memory churn in QM, want 0 and 1; partition $(head -n 1 "$cg/memory.pressure")"
	fi
	t1=$(date +%s)
	podman exec qm systemctl stop e2e-churn.service >/dev/null 2>&1 || fail "could not stop the memory churn in QM"
	qmd_log "$t0" | grep -q 'leaves the idle CPU class' || check_later "qmd did not log why qm.slice left the idle class"
	info "memory churn in QM: qm.slice at weight 1 after $(( t1 - t0 ))s; partition $(head -n 1 "$cg/memory.pressure")"
	wait_for 150 "qm.slice back in the idle class after the churn" sh -c "[ \"\$(cat $sl/cpu.idle)\" = 1 ]"
	info "qm.slice back in the idle class $(( $(date +%s) - t1 ))s after the churn ended"
	[ "$(svc qm.slice CPUWeight)" = idle ] || fail "systemd's CPUWeight of qm.slice is $(svc qm.slice CPUWeight) after the return, want idle"

	trap 'podman exec qm podman rm -f -t 0 e2e-nested >/dev/null 2>&1 || true' EXIT
	podman exec qm podman run -d --rm --name e2e-nested --network none \
		--rootfs "$NESTED_ROOTFS" /bin/sleep 1000 >/dev/null ||
		fail "podman exec qm podman run -d ... (nested container) failed"
	local npid t
	t=$(now_ns)
	npid=$(podman exec qm podman inspect -f '{{.State.Pid}}' e2e-nested)
	local wait=${E2E_RESYNC_WAIT:-90}
	nested_adj() { podman exec qm cat "/proc/$npid/oom_score_adj"; }
	if ! (wait_for "$wait" x sh -c "[ \"\$(podman exec qm cat /proc/$npid/oom_score_adj)\" = 750 ]") 2>/dev/null; then
		fail "nested container (pid $npid in QM) oom_score_adj is $(nested_adj), want 750 within ${wait}s"
	fi
	info "nested container at 750 after $(secs $(( $(now_ns) - t )))s"

	local apid
	apid=$(svc asil-bystander.service MainPID)
	[ "$apid" != 0 ] || fail "asil-bystander.service is not running"
	adj=$(cat "/proc/$apid/oom_score_adj")
	[ "$adj" = -800 ] || fail "asil-bystander (pid $apid) oom_score_adj is $adj, want -800"
}

# crash_once NAME: kill -9 the container's init, wait until it runs again.
# Prints "<crash->StartedAt ns> <crash->QM systemd running ns>".
crash_once() {
	local name=$1 pid0 t_kill started
	pid0=$(ctr "$name" .State.Pid)
	if [ -z "$pid0" ] || [ "$pid0" = 0 ]; then fail "$name has no init PID"; fi
	t_kill=$(now_ns)
	kill -9 "$pid0"
	wait_for 300 "$name running again with a new init PID after kill -9 $pid0" ctr_running_new_pid "$name" "$pid0"
	started=$(ctr "$name" .State.StartedAt.UnixNano)
	wait_inner_up "$name"
	echo "$(( started - t_kill )) $(( $(now_ns) - t_kill ))"
}

# check_crashes REPS: the qmd half of scenario 3 (scenario 10 runs it under
# load): REPS times kill -9 of QM's init -> running again with a new PID and
# QM's systemd up; the partition's NRestarts grew by exactly REPS; at least
# REPS journal entries QMD_EVENT=restart. qmd.service must not have been
# restarted meanwhile (a new qmd process counts restarts afresh): checked here
# under its own guard_qmd unless the caller has one on. Timings in
# /tmp/crash-qmd.
check_crashes() {
	local reps=$1 since n0 n1 i r qnr0 qpid0 nent own_guard=0
	need_running
	wait_inner_up qm
	since=$(date +%s)
	qnr0=$(svc qmd.service NRestarts); qpid0=$(svc qmd.service MainPID)
	if [ ${#GUARD[@]} -eq 0 ]; then
		guard_qmd "$since" "$qnr0" "$qpid0"
		own_guard=1
	fi
	n0=$(prop qm NRestarts 2>&1) || fail "busctl get-property ... NRestarts before the crashes failed: $n0"
	: >/tmp/crash-qmd
	for i in $(seq "$reps"); do
		r=$(crash_once qm) || exit 1
		say "qmd rep $i: $r"
		echo "$r" >>/tmp/crash-qmd
	done
	n1=$(prop qm NRestarts 2>&1) || fail "busctl get-property ... NRestarts after the crashes failed: $n1"
	if [ "$own_guard" = 1 ]; then
		r=$(qmd_restarts "${GUARD[@]}")
		GUARD=()
		[ -z "$r" ] || check_later "during the crashes $r"
	fi
	[ "$n1" -eq $(( n0 + reps )) ] ||
		check_later "partition NRestarts went from $n0 to $n1 after $reps crashes, want exactly $(( n0 + reps ))"
	nent=$(journal_since "$since" -u qmd.service QMD_EVENT=restart QMD_PARTITION=qm -o verbose | grep -c '^    MESSAGE=' || true)
	[ "$nent" -ge "$reps" ] ||
		check_later "journalctl -u qmd QMD_EVENT=restart QMD_PARTITION=qm has $nent entries after $reps crashes"
	info "journal restart entries: $nent; NRestarts $n0 -> $n1"
}

# 3: crash: check_crashes; then the crash->running time vs plain systemd
# Restart=always, same VM run.
s3() {
	need_qmd
	local reps=${E2E_CRASH_REPS:-3} i r
	check_crashes "$reps"

	# The same container under plain systemd Restart=always.
	timeout 300 systemctl start qm-plain.service || fail "qm-plain.service did not start"
	wait_inner_up qm-plain
	: >/tmp/crash-plain
	for i in $(seq "$reps"); do
		r=$(crash_once qm-plain) || exit 1
		say "plain rep $i: $r"
		echo "$r" >>/tmp/crash-plain
	done
	systemctl stop qm-plain.service || true

	local q1 q2 p1 p2
	q1=$(awk '{ print $1 }' /tmp/crash-qmd | median); q2=$(awk '{ print $2 }' /tmp/crash-qmd | median)
	p1=$(awk '{ print $1 }' /tmp/crash-plain | median); p2=$(awk '{ print $2 }' /tmp/crash-plain | median)
	info "crash->container started (median of $reps): qmd $(secs "$q1")s, plain Restart=always $(secs "$p1")s, ratio qmd/plain $(awk -v a="$q1" -v b="$p1" 'BEGIN { printf "%.2f", a / b }')"
	info "crash->QM systemd running (median of $reps): qmd $(secs "$q2")s, plain Restart=always $(secs "$p2")s, ratio qmd/plain $(awk -v a="$q2" -v b="$p2" 'BEGIN { printf "%.2f", a / b }')"
}

# 4: crash loop: a partition whose init exits at once -> failed; ResetFailed
# -> it starts again.
s4() {
	need_qmd
	local drop=/etc/qmd/qmd.toml.d/50-crashloop.toml since t
	trap 'rm -f '"$drop"'; busctl call '"$BUS $MGR $MIF"' Reload >/dev/null 2>&1 || true' EXIT
	mkdir -p /etc/qmd/qmd.toml.d
	install -m 0644 "$S/50-crashloop.toml" "$drop"
	since=$(date +%s); t=$(now_ns)
	mcall Reload >/dev/null || fail "busctl call ... Manager Reload failed"
	wait_for 30 "partition crashloop on the bus after Reload" prop crashloop ActiveState
	wait_for 300 "crashloop ActiveState = failed" sh -c \
		"busctl get-property $BUS $PART/crashloop $PIF ActiveState | grep -qx 's \"failed\"'"
	info "crashloop failed after $(secs $(( $(now_ns) - t )))s; NRestarts $(prop crashloop NRestarts); Result $(prop crashloop Result)"
	journal_since "$since" -u qmd.service QMD_EVENT=start-limit QMD_PARTITION=crashloop | grep -q . ||
		info "no QMD_EVENT=start-limit journal entry for crashloop (not required)"

	local t_reset seen=
	sleep 1
	t_reset=$(date +%s)
	pcall crashloop ResetFailed >/dev/null || fail "busctl call ... ResetFailed failed"
	local end=$(( $(date +%s) + 120 )) st
	while [ "$(date +%s)" -lt "$end" ]; do
		st=$(prop crashloop ActiveState || true)
		case $st in activating | active | deactivating) seen="ActiveState $st"; break ;; esac
		if journal_since "$t_reset" -u qmd.service QMD_PARTITION=crashloop QMD_EVENT=start | grep -q . ||
			journal_since "$t_reset" -u qmd.service QMD_PARTITION=crashloop QMD_EVENT=restart | grep -q .; then
			seen="journal QMD_EVENT=start/restart"; break
		fi
		sleep 0.3
	done
	[ -n "$seen" ] || fail "no start of crashloop seen within 120s after ResetFailed (ActiveState $st)"
	info "after ResetFailed: $seen"
}

# 5: memory: SetMemoryHigh -> memory.high and the scope's MemoryHigh; an OOM
# kill inside QM is detected; the ASIL bystander is unharmed.
s5() {
	need_qmd
	need_running
	local cg scope v apid0 since
	cg=$(part_cgroup qm)
	[ -f "$cg/memory.high" ] || fail "no memory.high in $cg"
	# The scope unit: the nearest *.scope at or above ControlGroup (Podman puts
	# a systemd container in libpod-<id>.scope/container).
	scope=$cg
	while [ "$scope" != /sys/fs/cgroup ] && [ "${scope%.scope}" = "$scope" ]; do scope=$(dirname "$scope"); done
	scope=$(basename "$scope")
	info "ControlGroup ${cg#/sys/fs/cgroup}, scope unit $scope"
	apid0=$(svc asil-bystander.service MainPID)
	trap 'busctl call '"$BUS $PART/qm $PIF"' SetMemoryHigh tb '"$UINT64_MAX"' true >/dev/null 2>&1 || true' EXIT
	pcall qm SetMemoryHigh tb 314572800 true >/dev/null || fail "busctl call ... SetMemoryHigh tb 314572800 true failed"
	wait_for 10 "$cg/memory.high = 314572800" sh -c "[ \"\$(cat $cg/memory.high)\" = 314572800 ]"
	v=$(svc "$scope" MemoryHigh)
	[ "$v" = 314572800 ] || check_later "systemctl show -p MemoryHigh $scope is '$v', want 314572800"
	v=$(prop qm MemoryHigh)
	[ "$v" = 314572800 ] || check_later "partition MemoryHigh property is '$v', want 314572800"

	# A memory hog inside QM, in a unit of QM's own systemd with a low MemoryMax.
	since=$(date +%s)
	local out
	if out=$(podman exec qm systemd-run --wait --quiet --collect --unit=e2e-hog \
		-p MemoryMax=64M -p MemorySwapMax=0 /usr/local/bin/e2e-hog once 512 2>&1); then
		fail "the memory hog inside QM was not killed (MemoryMax=64M): $out"
	fi
	say "hog: $out"
	(wait_for 90 "ListIncidents stu qm 0 100 contains an oom-kill" sh -c \
		"busctl call $BUS $MGR $MIF ListIncidents stu qm 0 100 | grep -q '\"oom-kill\"'") ||
		check_later "no oom-kill in ListIncidents stu qm 0 100 within 90s"
	(wait_for 30 "journalctl -u qmd QMD_EVENT=oom-kill non-empty" sh -c \
		"journalctl -q --no-pager -u qmd.service QMD_EVENT=oom-kill --since @$since | grep -q .") ||
		check_later "journalctl -u qmd QMD_EVENT=oom-kill is empty"
	info "NOOMKills $(prop qm NOOMKills)"

	systemctl is-active -q asil-bystander.service || fail "asil-bystander.service is not active"
	[ "$(svc asil-bystander.service MainPID)" = "$apid0" ] || fail "asil-bystander was restarted (MainPID changed)"
	[ "$(svc asil-bystander.service NRestarts)" = 0 ] || fail "asil-bystander NRestarts is not 0"
	info "asil-bystander RSS $(awk '/VmRSS/ { print $2 / 1024 " MiB" }' "/proc/$apid0/status")"
}

# 6: pressure: a host memory hog -> qmd lowers memory.high; after the hog
# stops, memory.high is restored.
s6() {
	need_qmd
	need_running
	local cg mh0 t v
	cg=$(part_cgroup qm)
	mh0=$(mem_high "$cg")
	# Earlier pressure (e.g. scenario 0's hog) may still hold it below max:
	# then "restored" means back to at least this value.
	info "memory.high at start: $(cat "$cg/memory.high"), SubState $(prop qm SubState)"
	trap 'systemctl stop e2e-host-hog.service >/dev/null 2>&1 || true' EXIT
	# The hog allocates again and again far above its own MemoryHigh: with no
	# swap it is throttled continuously, i.e. sustained host memory pressure.
	t=$(now_ns)
	systemd-run --unit=e2e-host-hog -p MemoryHigh=64M -p MemorySwapMax=0 \
		/usr/local/bin/e2e-hog churn 256 ||
		fail "could not start the host memory hog"
	local end=$(( $(date +%s) + ${E2E_PRESSURE_WAIT:-180} ))
	until lt "$(mem_high "$cg")" "$mh0"; do
		if [ "$(date +%s)" -ge "$end" ]; then
			fail "memory.high of the partition stayed $(cat "$cg/memory.high") under host pressure ($(head -n 1 /proc/pressure/memory))"
		fi
		sleep 1
	done
	info "memory.high lowered to $(cat "$cg/memory.high") after $(secs $(( $(now_ns) - t )))s ($(head -n 1 /proc/pressure/memory))"
	systemctl stop e2e-host-hog.service
	t=$(now_ns)
	end=$(( $(date +%s) + ${E2E_RESTORE_WAIT:-300} ))
	until ! lt "$(mem_high "$cg")" "$mh0"; do
		if [ "$(date +%s)" -ge "$end" ]; then
			fail "memory.high not restored to $mh0 ($(cat "$cg/memory.high")) after the hog stopped"
		fi
		sleep 1
	done
	info "memory.high restored after $(secs $(( $(now_ns) - t )))s"
}

# 7: systemctl restart qmd leaves the partition alone.
s7() {
	need_qmd
	need_running
	local id0 st0 pid0 inc0 inc1 since
	id0=$(ctr qm .Id); st0=$(ctr qm .State.StartedAt); pid0=$(ctr qm .State.Pid)
	inc0=$(mcall ListIncidents stu qm 0 1000 | awk '{ print $2 }')
	since=$(date +%s)
	timeout 300 systemctl restart qmd.service || fail "systemctl restart qmd failed: $(svc qmd.service Result)"
	wait_for 60 "partition ActiveState active after the qmd restart" sh -c \
		"busctl get-property $BUS $PART/qm $PIF ActiveState | grep -qx 's \"active\"'"
	[ "$(ctr qm .Id)" = "$id0" ] || fail "container ID changed: $id0 -> $(ctr qm .Id)"
	[ "$(ctr qm .State.StartedAt)" = "$st0" ] || fail "container StartedAt changed: $st0 -> $(ctr qm .State.StartedAt)"
	[ "$(ctr qm .State.Pid)" = "$pid0" ] || fail "container init PID changed: $pid0 -> $(ctr qm .State.Pid)"
	[ "$(prop qm ContainerId)" = "$id0" ] || fail "ContainerId property $(prop qm ContainerId) != $id0"
	local ev
	ev=$(podman events --since "$since" --until "$(date +%s)" --filter "container=$id0" --format '{{.Status}}' 2>/dev/null |
		grep -E 'died|stop|kill|remove|restart' || true)
	[ -z "$ev" ] || fail "podman events for qm during the qmd restart: $(echo "$ev" | paste -sd, -)"
	inc1=$(mcall ListIncidents stu qm 0 1000 | awk '{ print $2 }')
	[ "$inc1" -ge "$inc0" ] || fail "ListIncidents lost entries across the restart: $inc0 -> $inc1"
	if [ "$inc0" -eq 0 ]; then
		info "no incidents recorded before the restart (run with 3 or 5 first to check persistence)"
	fi
	info "incidents for qm: $inc0 before, $inc1 after the qmd restart"
}

# 8: access: an unprivileged user cannot Restart, but can read.
s8() {
	need_qmd
	local id0 n0 want out
	id0=$(prop qm ContainerId); n0=$(prop qm NRestarts)
	nobody() { setpriv --reuid=nobody --regid=nogroup --clear-groups "$@"; }
	if out=$(nobody busctl call "$BUS" "$PART/qm" "$PIF" Restart 2>&1); then
		fail "Restart as user nobody succeeded"
	fi
	echo "$out" | grep -qiE 'access denied|AccessDenied|rejected send message' ||
		fail "Restart as nobody failed, but not with AccessDenied: $out"
	info "nobody's Restart: $out"
	want=$(busctl get-property "$BUS" "$PART/qm" "$PIF" Name)
	out=$(nobody busctl get-property "$BUS" "$PART/qm" "$PIF" Name 2>&1) ||
		fail "get-property Name as nobody failed: $out"
	[ "$out" = "$want" ] || fail "get-property Name as nobody: '$out', root reads '$want'"
	out=$(nobody busctl get-property "$BUS" "$PART/qm" "$PIF" ActiveState 2>&1) ||
		fail "get-property ActiveState as nobody failed: $out"
	out=$(nobody busctl call "$BUS" "$MGR" "$MIF" ListPartitions 2>&1) ||
		fail "ListPartitions as nobody failed: $out"
	sleep 2
	if [ "$(prop qm ContainerId)" != "$id0" ] || [ "$(prop qm NRestarts)" != "$n0" ]; then
		fail "partition qm changed after nobody's Restart (ContainerId/NRestarts)"
	fi
}

# 9: watchdog: a frozen qmd is restarted by systemd; the partition stays.
s9() {
	need_qmd
	need_running
	local wd_s pid0 n0 id0 limit t
	wd_s=$(watchdog_secs)
	[ "$wd_s" -gt 0 ] || fail "qmd.service has no WatchdogSec (WatchdogUSec=$(svc qmd.service WatchdogUSec))"
	pid0=$(svc qmd.service MainPID); n0=$(svc qmd.service NRestarts); id0=$(ctr qm .Id)
	trap 'kill -CONT '"$pid0"' 2>/dev/null || true' EXIT
	t=$(now_ns)
	kill -STOP "$pid0"
	limit=$(( 2 * wd_s + ${E2E_WATCHDOG_SLACK:-30} ))
	wait_for "$limit" "qmd.service NRestarts > $n0 after SIGSTOP (WatchdogSec=${wd_s}s)" \
		sh -c "[ \"\$(systemctl show -p NRestarts --value qmd.service)\" -gt $n0 ]"
	journal_since "$(( t / 1000000000 ))" -u qmd.service | grep -q 'Watchdog timeout' ||
		check_later "no 'Watchdog timeout' from systemd for qmd.service: restarted for another reason"
	info "watchdog restart scheduled after $(secs $(( $(now_ns) - t )))s (WatchdogSec ${wd_s}s)"
	wait_for 120 "qmd.service active again" systemctl is-active -q qmd.service
	[ "$(svc qmd.service MainPID)" != "$pid0" ] || fail "qmd MainPID unchanged"
	info "qmd active again after $(secs $(( $(now_ns) - t )))s; journal: $(journalctl -q --no-pager -u qmd.service --since "@$(( t / 1000000000 ))" | grep -m1 -i watchdog || echo none)"
	ctr_running qm || fail "partition qm not running after the watchdog restart"
	[ "$(ctr qm .Id)" = "$id0" ] || fail "partition container ID changed: $id0 -> $(ctr qm .Id)"
	wait_for 60 "ActiveState active after the watchdog restart" sh -c \
		"busctl get-property $BUS $PART/qm $PIF ActiveState | grep -qx 's \"active\"'"
}

# Host load for scenario 10: stress-ng in its own unit on the VM host (not in
# the partition): 2 CPU workers and 2 VM workers holding E2E_LOAD_VM_PCT %
# (default 25) of RAM each. OOMScoreAdjust=1000 for all of it
# (--no-oom-adjust: stress-ng as root would make its CPU workers unkillable):
# if memory runs out, the load goes first, not the partition (500).
LOAD_UNIT=e2e-load.service
LOAD_SLICE=e2eload.slice
LOAD_VM_KIB=0 # --vm-bytes of all VM workers together
start_load() { # start_load SECONDS (an upper bound of its life)
	local kib vm_kib
	kib=$(awk '/^MemTotal:/ { print $2 }' /proc/meminfo)
	# stress-ng splits --vm-bytes among the --vm workers (its source does,
	# whatever its man page says): give it the total.
	vm_kib=$(( kib * 2 * ${E2E_LOAD_VM_PCT:-25} / 100 ))
	LOAD_VM_KIB=$vm_kib
	systemctl stop "$LOAD_UNIT" >/dev/null 2>&1 || true
	systemctl reset-failed "$LOAD_UNIT" >/dev/null 2>&1 || true
	# Background load, in the partition's own CPU class (qm.slice: idle
	# while memory is quiet, weight 1 while it is tight) in a top-level
	# slice of its own: the kernel weighs qm.slice against the other
	# top-level slices, and a load in system.slice would leave QM next to
	# nothing, by design (as containers/qm's CPUWeight=idle does). This
	# scenario is about qmd and the partition's restarts under load, not
	# about that policy, which make ffi-bench measures.
	systemctl set-property --runtime "$LOAD_SLICE" CPUWeight=idle ||
		fail "could not give $LOAD_SLICE CPUWeight=idle"
	systemd-run --quiet --unit="$LOAD_UNIT" --collect --slice="$LOAD_SLICE" \
		-p OOMScoreAdjust=1000 -p TimeoutStopSec=20 -p RuntimeMaxSec="$1" \
		-p CPUAccounting=yes -p MemoryAccounting=yes -p TasksAccounting=yes \
		stress-ng --cpu 2 --vm 2 --vm-bytes "${vm_kib}k" --no-oom-adjust --timeout "$1" ||
		fail "could not start the host load: systemd-run ... stress-ng failed"
	info "host load: $LOAD_UNIT: stress-ng --cpu 2 --vm 2 --vm-bytes ${vm_kib}k ($(( vm_kib / 2048 )) MiB each of $(( kib / 1024 )) MiB; $(stress-ng --version 2>&1 | head -n 1))"
}
# load_alive: the unit is active with all its processes (main, 2 CPU workers,
# 2 VM workers and their children).
load_alive() {
	systemctl is-active -q "$LOAD_UNIT" && [ "$(num "$(svc "$LOAD_UNIT" TasksCurrent)")" -ge 5 ]
}
# load_cg FILE: a file of the load unit's cgroup ("" when there is none).
load_cg() { cat "/sys/fs/cgroup$(svc "$LOAD_UNIT" ControlGroup)/$1" 2>/dev/null || true; }
# load_up: alive, and the VM workers hold memory (they map, write and unmap
# in turns, so memory.current comes and goes: this polls for a high).
load_up() { load_alive && [ "$(num "$(load_cg memory.current)")" -ge $(( LOAD_VM_KIB * 1024 / 4 )) ]; }
load_state() {
	echo "$LOAD_UNIT $(svc "$LOAD_UNIT" ActiveState)/$(svc "$LOAD_UNIT" SubState) Result $(svc "$LOAD_UNIT" Result), tasks $(svc "$LOAD_UNIT" TasksCurrent), memory.current $(( $(num "$(load_cg memory.current)") >> 20 )) MiB, memory.peak $(( $(num "$(load_cg memory.peak)") >> 20 )) MiB, $(load_cg memory.events | awk '$1 == "oom_kill" { print "oom_kill " $2 }')"
}
# cpu_ticks: idle+iowait ticks and all ticks of the VM's CPUs so far.
cpu_ticks() { awk '$1 == "cpu" { t = 0; for (i = 2; i <= NF; i++) t += $i; print $5 + $6, t }' /proc/stat; }
stop_load() {
	systemctl stop "$LOAD_UNIT" >/dev/null 2>&1 || true
}

# 10: under load: the host runs stress-ng (start_load) and qmd "boots" under
# it as at a VM boot (qmd stopped, the container removed, qmd started), then
# scenario 1's checks (check_boot) and scenario 3's (check_crashes) run under
# the load, which then goes on for one more WatchdogSec. Across the whole
# scenario qmd.service must not be restarted (no "Watchdog timeout" in the
# journal, NRestarts and MainPID unchanged since it started) and the
# partition's NRestarts must count exactly the crashes. The load is stopped at
# the end whatever happens.
s10() {
	need_qmd
	local reps=${E2E_CRASH_REPS:-3} since t qpid0 qnr0 wd_s cpu0 cpu1 ticks0 t_load el r
	wd_s=$(watchdog_secs)
	[ "$wd_s" -gt 0 ] || fail "qmd.service has no WatchdogSec (WatchdogUSec=$(svc qmd.service WatchdogUSec))"
	since=$(date +%s)
	trap stop_load EXIT
	trap 'say "terminated (scenario time limit)"; exit 143' TERM

	# A fresh start of qmd and of the partition, as at boot.
	timeout 120 systemctl stop qmd.service || fail "systemctl stop qmd failed: $(svc qmd.service Result)"
	if ctr qm .Id >/dev/null; then
		podman rm -f -t 0 qm >/dev/null || fail "podman rm -f qm failed"
	fi

	start_load "${LIMITS[10]}"
	t_load=$(now_ns)
	(wait_for 60 "the host load up" load_up) || fail "the host load did not come up within 60s: $(load_state)"
	cpu0=$(num "$(svc "$LOAD_UNIT" CPUUsageNSec)")
	ticks0=$(cpu_ticks)
	local adj
	adj=$(for p in $(load_cg cgroup.procs); do cat "/proc/$p/oom_score_adj" 2>/dev/null || true; done | sort -u | paste -sd, -)
	info "host load up: $(load_state), oom_score_adj $adj; loadavg $(cut -d' ' -f1-3 /proc/loadavg)"
	[ "$adj" = 1000 ] || fail "the host load's processes have oom_score_adj '$adj', want all 1000 (the load, not the partition, must go first on OOM)"

	t=$(now_ns)
	timeout 300 systemctl start qmd.service ||
		fail "systemctl start qmd under load failed: $(svc qmd.service ActiveState)/$(svc qmd.service Result)"
	qpid0=$(svc qmd.service MainPID); qnr0=$(svc qmd.service NRestarts)
	info "qmd.service started under load in $(secs $(( $(now_ns) - t )))s (MainPID $qpid0, NRestarts $qnr0)"
	guard_qmd "$since" "$qnr0" "$qpid0"

	check_boot
	info "under load: qmd start to QM systemd running $(secs $(( $(now_ns) - t )))s"
	check_crashes "$reps"
	info "under load: crash->container started median $(secs "$(awk '{ print $1 }' /tmp/crash-qmd | median)")s, crash->QM systemd running median $(secs "$(awk '{ print $2 }' /tmp/crash-qmd | median)")s"

	# A watchdog kill comes up to WatchdogSec after the health check starts
	# failing: keep the load on that long after the last check.
	say "load on for $(( wd_s + 5 ))s more (WatchdogSec ${wd_s}s)"
	sleep $(( wd_s + 5 ))

	# The load was there all along, and real.
	cpu1=$(num "$(svc "$LOAD_UNIT" CPUUsageNSec)")
	el=$(( $(now_ns) - t_load ))
	r="host load: $(load_state); CPU $(awk -v c=$(( cpu1 - cpu0 )) -v e="$el" 'BEGIN { printf "%.2f", c / e }') of 2 vCPUs over $(secs "$el")s; VM CPUs idle $(echo "$ticks0 $(cpu_ticks)" | awk '{ printf "%.0f", 100 * ($3 - $1) / ($4 - $2) }') %; loadavg $(cut -d' ' -f1-3 /proc/loadavg)"
	info "$r"
	load_alive || check_later "the host load did not last the whole scenario: $r"
	[ "$(num "$(load_cg memory.peak)")" -ge $(( LOAD_VM_KIB * 1024 / 2 )) ] ||
		check_later "the host load's VM workers never held half of their $(( LOAD_VM_KIB >> 10 )) MiB: $r"
	awk -v c=$(( cpu1 - cpu0 )) -v e="$el" 'BEGIN { exit !(c / e >= 0.5) }' ||
		check_later "the host load used less than half a vCPU on average: $r"
	info "$(qmd_log "$since" | grep -c 'health check failed' || true) 'health check failed' warning(s) from qmd under load"

	guard_qmd_check
}

# ---- the Debian package -----------------------------------------------------------

# mprop PROPERTY: a property of the manager object.
mprop() { busctl get-property "$BUS" "$MGR" "$MIF" "$1" | unsig; }
# incidents_after ID: the incidents with an ID above ID (ListIncidents of all
# partitions), one line each: ID<TAB>PARTITION<TAB>TYPE<TAB>SUMMARY<TAB>DETAILS,
# DETAILS as "key=value key=value" (busctl's output, parsed with perl-base).
incidents_after() {
	local out
	out=$(mcall ListIncidents stu "" "$1" 1000) || return 1
	perl -e '
		my $in = join("", <STDIN>);
		my @t;
		push @t, $1 while $in =~ /\G\s*("(?:[^"\\]|\\.)*"|\S+)/gc;
		my $i = 0;
		sub tok { my $v = $t[$i++] // ""; if ($v =~ /^"(.*)"$/s) { $v = $1; $v =~ s/\\(.)/$1/g } $v }
		tok();    # the signature
		my $n = tok();
		for (1 .. $n) {
			my ($id, $usec, $part, $type, $summary) = (tok(), tok(), tok(), tok(), tok());
			my ($nd, @d) = (tok());
			for (1 .. $nd) { my ($k, $sig, $v) = (tok(), tok(), tok()); push @d, "$k=$v" }
			print join("\t", $id, $part, $type, $summary, join(" ", @d)), "\n";
		}' <<<"$out"
}
# detail LINE KEY: a detail of an incidents_after line.
detail() { cut -f5 <<<"$1" | tr ' ' '\n' | sed -n "s/^$2=//p"; }
# pkg_state: dpkg's "Status-Abbrev Version" of qmd, e.g. "ii 0.0~git98.g08f454e".
pkg_state() { dpkg-query -W -f '${db:Status-Abbrev}${Version}' qmd 2>/dev/null || echo "not known to dpkg"; }
# ctr_facts NAME: "ID INIT-PID STATUS" of a container, one podman call (each
# costs ~1 s of emulated CPU).
ctr_facts() { podman inspect -f '{{.Id}} {{.State.Pid}} {{.State.Status}}' "$1" 2>/dev/null || echo "none 0 missing"; }
# podman_events_bad SINCE ID: podman events of container ID since SINCE that
# stop or restart it (none expected when only qmd restarts).
podman_events_bad() {
	podman events --since "$1" --until "$(date +%s)" --filter "container=$2" --format '{{.Status}}' 2>/dev/null |
		grep -E 'died|stop|kill|remove|restart|cleanup' | paste -sd, - || true
}

# 11: upgrade: `apt-get install ./qmd_<higher>.deb` while the partition runs.
# The package's postinst try-restarts qmd.service; the new qmd adopts the
# partition: same container ID and init PID (podman and D-Bus MainPID), the
# partition's NRestarts unchanged, qmd.service restarted by the upgrade (new
# MainPID) and not by its watchdog, and the incidents since the upgrade are
# exactly "upgrade" (from/to = the old and the new qmd version) and the
# "adopt" of qm.
s11() {
	need_qmd
	need_running
	local deb v0 v1 want qv0 qv1 id0 pid0 st0 id1 pid1 st1 mpid0 nr0 nr1 qpid0 qpid1 qnr0 last0 since t incs n up ad r ev
	[ ! -f "$S/pkg-next.err" ] || fail "the upgrade package was not built: $(tail -n 1 "$S/pkg-next.err")"
	deb=$(cd "$S/pkg-next" 2>/dev/null && ls qmd_*.deb) || fail "no qmd_*.deb in the share's pkg-next/"
	[ "$(wc -w <<<"$deb")" = 1 ] || fail "want one qmd_*.deb in pkg-next/, found: $deb"
	v0=$(pkg_state)
	[ "${v0%% *}" = ii ] || fail "qmd is not installed as a package (dpkg: $v0)"
	v0=${v0#* }
	want=$(dpkg-deb -f "$S/pkg-next/$deb" Version)
	dpkg --compare-versions "$want" gt "$v0" || fail "the upgrade package's version $want is not above the installed $v0"
	qv0=$(mprop Version)

	# A partition that qmd already restarted, so that "NRestarts unchanged"
	# means something (a whole run has crashed it in scenarios 3 and 10).
	nr0=$(prop qm NRestarts)
	if [ "$nr0" = 0 ]; then
		say "NRestarts of qm is 0: one crash first"
		crash_once qm >/dev/null || exit 1
		wait_for 60 "partition NRestarts 1 after a crash" sh -c \
			"busctl get-property $BUS $PART/qm $PIF NRestarts | grep -qx 'u 1'"
		wait_for 60 "partition ActiveState active after a crash" sh -c \
			"busctl get-property $BUS $PART/qm $PIF ActiveState | grep -qx 's \"active\"'"
		nr0=$(prop qm NRestarts)
	fi
	read -r id0 pid0 st0 <<<"$(ctr_facts qm)"
	[ "$st0" = running ] || fail "partition qm is $st0 before the upgrade"
	mpid0=$(prop qm MainPID)
	[ "$mpid0" = "$pid0" ] || fail "D-Bus MainPID $mpid0 differs from podman's init PID $pid0 before the upgrade"
	qpid0=$(svc qmd.service MainPID); qnr0=$(svc qmd.service NRestarts)
	last0=$(mprop LastIncidentId)
	info "before: package $v0, qmd $qv0 (MainPID $qpid0), container ${id0:0:12} init PID $pid0, NRestarts $nr0, last incident $last0"

	since=$(date +%s); t=$(now_ns)
	if ! (cd "$S/pkg-next" && DEBIAN_FRONTEND=noninteractive timeout 300 apt-get install -y -q "./$deb") >/tmp/apt-upgrade.log 2>&1; then
		cat /tmp/apt-upgrade.log
		fail "apt-get install ./$deb failed: $(grep -E '^(E|W): ' /tmp/apt-upgrade.log | head -n 3 | paste -sd' ' -)"
	fi
	info "apt-get install ./$deb: $(secs $(( $(now_ns) - t )))s"
	sed 's/^/apt| /' /tmp/apt-upgrade.log

	v1=$(pkg_state)
	[ "$v1" = "ii $want" ] || check_later "dpkg-query after the upgrade: '$v1', want 'ii $want'"
	systemctl is-active -q qmd.service || fail "qmd.service is $(svc qmd.service ActiveState)/$(svc qmd.service SubState) after the upgrade"
	qpid1=$(svc qmd.service MainPID)
	[ "$qpid1" != "$qpid0" ] || check_later "qmd.service was not restarted by the upgrade (MainPID still $qpid0)"
	r=$(qmd_restarts "$since" "$qnr0")
	[ -z "$r" ] || check_later "$r"
	qv1=$(mprop Version)
	[ "$qv1" != "$qv0" ] || check_later "the running qmd's Version is still $qv0 after the upgrade"
	[ "$(qmd version 2>&1)" = "qmd $qv1" ] || check_later "qmd version prints '$(qmd version 2>&1)', the running qmd says $qv1"

	wait_for 60 "partition ActiveState active after the upgrade" sh -c \
		"busctl get-property $BUS $PART/qm $PIF ActiveState | grep -qx 's \"active\"'"
	read -r id1 pid1 st1 <<<"$(ctr_facts qm)"
	[ "$st1" = running ] || fail "partition qm is $st1 after the upgrade"
	[ "$id1" = "$id0" ] || check_later "container ID changed: $id0 -> $id1"
	[ "$pid1" = "$pid0" ] || check_later "init PID (podman) changed: $pid0 -> $pid1"
	[ "$(prop qm MainPID)" = "$pid0" ] || check_later "D-Bus MainPID changed: $pid0 -> $(prop qm MainPID)"
	[ "$(prop qm ContainerId)" = "$id0" ] || check_later "D-Bus ContainerId $(prop qm ContainerId), want $id0"
	nr1=$(prop qm NRestarts)
	[ "$nr1" = "$nr0" ] || check_later "partition NRestarts went from $nr0 to $nr1 across the upgrade"
	ev=$(podman_events_bad "$since" "$id0")
	[ -z "$ev" ] || check_later "podman events for qm during the upgrade: $ev"

	# The incidents since the upgrade: "upgrade" and "adopt", nothing else
	# (listed after the checks above: a few seconds for a late one).
	upgrade_and_adopt() {
		local x
		x=$(incidents_after "$last0") && grep -q $'\tupgrade\t' <<<"$x" && grep -q $'\tadopt\t' <<<"$x"
	}
	(wait_for 60 "upgrade and adopt incidents after $last0" upgrade_and_adopt) ||
		say "no upgrade and adopt incidents after $last0 within 60s"
	incs=$(incidents_after "$last0") || fail "ListIncidents after $last0 failed"
	say "incidents after $last0:"; printf '  %s\n' "$incs"
	info "incidents since the upgrade: $(cut -f2,3,5 <<<"$incs" | tr '\t' ' ' | paste -sd';' -)"
	n=$(grep -c . <<<"$incs" || true)
	up=$(awk -F'\t' '$3 == "upgrade"' <<<"$incs")
	ad=$(awk -F'\t' '$3 == "adopt"' <<<"$incs")
	if [ "$(grep -c . <<<"$up")" != 1 ]; then
		check_later "want one upgrade incident since the upgrade, got $(grep -c . <<<"$up")"
	elif [ "$(detail "$up" from)" != "$qv0" ] || [ "$(detail "$up" to)" != "$qv1" ]; then
		check_later "upgrade incident from=$(detail "$up" from) to=$(detail "$up" to), want from=$qv0 to=$qv1 ($(cut -f4 <<<"$up"))"
	fi
	if [ "$(grep -c . <<<"$ad")" != 1 ] || [ "$(cut -f2 <<<"$ad")" != qm ]; then
		check_later "want one adopt incident of qm since the upgrade, got: $(cut -f2,3 <<<"$ad" | tr '\t' ' ' | paste -sd, -)"
	elif [ "$(detail "$ad" pid)" != "$pid0" ]; then
		check_later "the adopt incident names init PID $(detail "$ad" pid), want $pid0"
	fi
	[ "$n" = 2 ] || check_later "want exactly the upgrade and the adopt incident since the upgrade, got $n: $(cut -f2,3 <<<"$incs" | tr '\t' ' ' | paste -sd, -)"
	info "after: package ${v1#* }, qmd $qv1 (MainPID $qpid1), container ${id1:0:12} init PID $pid1, NRestarts $nr1"
}

# 17: a hung systemd inside the partition (SIGSTOP of its PID 1: alive, not
# answering): qmd's liveness probe (over the partition's system bus) records
# systemd-unresponsive and kills and restarts the partition; its systemd comes
# up again. Before that, the healthy partition was never reported.
s17() {
	need_qmd
	need_running
	wait_inner_up qm
	local pid0 t0 took back
	pid0=$(ctr qm .State.Pid)
	wait_for 180 "qmd's liveness probe armed for the partition's init $pid0" sh -c \
		"journalctl --no-pager -q -b -u qmd.service QMD_INIT_PID=$pid0 -o cat | grep -q 'liveness probe armed'"
	if [ -n "$(journal_since boot -u qmd.service QMD_EVENT=systemd-unresponsive -o cat)" ]; then
		fail "systemd-unresponsive recorded before the scenario stopped anything: $(journal_since boot -u qmd.service QMD_EVENT=systemd-unresponsive -o cat | tail -n 1)"
	fi
	# Whatever happens, the stopped init must not stay stopped.
	trap 'kill -CONT '"$pid0"' 2>/dev/null || true' EXIT
	t0=$(now_ns)
	kill -STOP "$pid0"
	wait_for 180 "incident systemd-unresponsive for init $pid0" sh -c \
		"journalctl --no-pager -q -b -u qmd.service QMD_EVENT=systemd-unresponsive QMD_INIT_PID=$pid0 -o cat | grep -q ."
	took=$(secs $(( $(now_ns) - t0 )))
	wait_for 180 "partition qm running with a new init" ctr_running_new_pid qm "$pid0"
	wait_inner_up qm
	back=$(secs $(( $(now_ns) - t0 )))
	[ "$(journal_since boot -u qmd.service QMD_EVENT=systemd-unresponsive -o cat | wc -l)" = 1 ] ||
		fail "systemd-unresponsive recorded $(journal_since boot -u qmd.service QMD_EVENT=systemd-unresponsive -o cat | wc -l) times, want 1"
	info "systemd-unresponsive ${took}s after SIGSTOP of the partition's systemd; its systemd running again ${back}s after it"
}

# 12: remove: `apt-get remove qmd` (not purge) stops qmd and leaves the
# partition running, unsupervised (same container and init PID); the package
# is left in dpkg's "rc" state with /var/lib/qmd (the incident store) kept.
# Run it last: no qmd afterwards.
s12() {
	need_qmd
	need_running
	local v0 v1 id0 pid0 st0 id1 pid1 st1 inner since t ev
	v0=$(pkg_state)
	[ "${v0%% *}" = ii ] || fail "qmd is not installed as a package (dpkg: $v0)"
	read -r id0 pid0 st0 <<<"$(ctr_facts qm)"
	[ "$st0" = running ] || fail "partition qm is $st0 before the removal"
	since=$(date +%s); t=$(now_ns)
	if ! DEBIAN_FRONTEND=noninteractive timeout 300 apt-get remove -y -q qmd >/tmp/apt-remove.log 2>&1; then
		cat /tmp/apt-remove.log
		fail "apt-get remove qmd failed: $(grep -E '^(E|W): ' /tmp/apt-remove.log | head -n 3 | paste -sd' ' -)"
	fi
	info "apt-get remove qmd: $(secs $(( $(now_ns) - t )))s"
	sed 's/^/apt| /' /tmp/apt-remove.log
	v1=$(pkg_state)
	[ "${v1%% *}" = rc ] || check_later "dpkg-query after apt-get remove: '$v1', want rc (removed, not purged)"
	! systemctl is-active -q qmd.service || check_later "qmd.service is still active after apt-get remove"
	[ ! -e /usr/bin/qmd ] || check_later "/usr/bin/qmd is still there after apt-get remove"
	[ -d /var/lib/qmd ] || check_later "/var/lib/qmd (the incident store) is gone after apt-get remove (only purge deletes it)"
	# The partition after qmd's SIGTERM, and a moment later (QM's systemd
	# answering takes a few seconds of emulated CPU).
	ev=$(podman_events_bad "$since" "$id0")
	[ -z "$ev" ] || check_later "podman events for qm during the removal: $ev"
	inner=$(inner_state qm)
	case $inner in running | degraded) ;; *) check_later "systemd inside qm is '$inner' after the removal" ;; esac
	read -r id1 pid1 st1 <<<"$(ctr_facts qm)"
	[ "$st1" = running ] || fail "partition qm is $st1 after apt-get remove qmd"
	[ "$id1" = "$id0" ] || check_later "container ID changed: $id0 -> $id1"
	[ "$pid1" = "$pid0" ] || check_later "init PID changed: $pid0 -> $pid1"
	info "after: dpkg ${v1%% *}, qmd.service $(svc qmd.service ActiveState) ($(svc qmd.service LoadState)), container ${id1:0:12} $st1 init PID $pid1, QM systemd $inner"
}

# Scenarios 13-16 (issue #9, freedom from interference) and the benchmark.
# shellcheck source=/dev/null # ffi.sh is checked on its own
. "$(dirname "$0")/ffi.sh"

# ---- runner ---------------------------------------------------------------------

# err_reason RC LINE COMMAND: the reason of an unexpected error (ERR trap);
# under guard_qmd a restart of qmd.service comes first (a command that fails
# while qmd is down, e.g. busctl, is a symptom).
err_reason() {
	local why r
	why=$(printf 'unexpected failure (rc %s) at line %s: %s' "$1" "$2" "$3")
	if [ ${#GUARD[@]} -gt 0 ]; then
		r=$(qmd_restarts "${GUARD[@]}" || true)
		[ -z "$r" ] || why="$r; then: $why"
	fi
	printf '%s\n' "$why" >"$REASON"
}

run_one() { # in its own process: set -e ends it at the first unexpected error
	N=$1
	REASON=$S/.reason-$N
	: >"$REASON"
	rm -f "$S/.skip-$N"
	rm -rf "$S/.evidence-$N.d"
	set -E
	trap 'rc=$?; [ -s "$REASON" ] || err_reason "$rc" "$LINENO" "$BASH_COMMAND"' ERR
	say "scenario $N ${NAMES[$N]} starting"
	"s$N"
	if [ ${#LATER[@]} -gt 0 ]; then
		GUARD=() # the scenario ran its guard check: it is in LATER already
		fail "$(printf '%s; ' "${LATER[@]}" | sed 's/; $//')"
	fi
	say "scenario $N done"
}

if [ "${1:-}" = run ]; then
	run_one "$2"
	exit 0
fi

list=${E2E_SCENARIOS:-$ALL_SCENARIOS}
nfail=0
for n in $list; do
	name=${NAMES[$n]:-}
	if [ -z "$name" ]; then
		echo "FAIL $n unknown 0s: no scenario $n" >>"$RESULTS"; nfail=$(( nfail + 1 )); continue
	fi
	limit=${LIMITS[$n]:-$DEFAULT_LIMIT}
	start=$(date +%s); start_ns=$(now_ns)
	set +e
	timeout -k 10 "$limit" bash "$0" run "$n" >"$S/s$n.log" 2>&1
	rc=$?
	set -e
	# A scenario's host load never outlives it (scenario 10 stops it itself,
	# but not when the time limit SIGKILLs it).
	systemctl stop "$LOAD_UNIT" >/dev/null 2>&1 || true
	took=$(awk -v ns=$(( $(now_ns) - start_ns )) 'BEGIN { printf "%.1f", ns / 1e9 }')
	if [ "$rc" = 0 ] && [ -s "$S/.skip-$n" ]; then # a missing feature (ffi.sh's skip)
		echo "PASS $n $name ${took}s: SKIP: $(head -n 1 "$S/.skip-$n")" >>"$RESULTS"
	elif [ "$rc" = 0 ]; then
		echo "PASS $n $name ${took}s" >>"$RESULTS"
	else
		why=$(head -n 1 "$S/.reason-$n" 2>/dev/null || true)
		if [ "$rc" = 124 ] || [ "$rc" = 137 ]; then
			why="timed out after ${limit}s (last: $(tail -n 1 "$S/s$n.log"))"
		fi
		[ -n "$why" ] || why="exited $rc: $(tail -n 1 "$S/s$n.log")"
		echo "FAIL $n $name ${took}s: $why" >>"$RESULTS"
		nfail=$(( nfail + 1 ))
		{
			[ ! -d "$S/.evidence-$n.d" ] || cat "$S/.evidence-$n.d"/*
			echo "=== journalctl -u qmd.service since the start of scenario $n (qmd_log: with QMD_ERROR, stack dumps cut) ==="
			qmd_log "$start" | tail -n 40
			echo "=== qmd's structured fields (journalctl -u qmd -o verbose: MESSAGE, QMD_*) ==="
			journal_since "$start" -u qmd.service -o verbose |
				grep -E '^[A-Z][a-z]{2} [0-9]{4}-|^ +(MESSAGE|QMD_[A-Z_]+)=' | tail -n 60
			echo "=== state at the failure ==="
			systemctl status --no-pager qmd.service 2>&1 | head -n 12
			podman ps -a --format '{{.Names}} {{.State}} {{.Status}} {{.ID}}' 2>&1
			busctl call "$BUS" "$MGR" "$MIF" ListPartitions 2>&1
			echo "=== whole journal since the start of scenario $n (last 80 lines, mount noise dropped) ==="
			journal_since "$start" -o short-precise |
				grep -vE '(storage-overlay|tmp-crun|userdata-shm)[^ ]*\.mount: Deactivated successfully' | tail -n 80
		} >"$S/fail-$n.journal" 2>&1 || true
	fi
	tail -n 1 "$RESULTS"
done
exit $(( nfail > 0 ))
