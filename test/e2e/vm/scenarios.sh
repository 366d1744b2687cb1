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
# the scenario started goes to /mnt/harness/fail-<n>.journal.
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
)
# Per-scenario time limits (seconds, inside the VM; the CPU is emulated).
declare -A LIMITS=([0]=600 [3]=1200 [6]=600)
DEFAULT_LIMIT=420

# ---- helpers -------------------------------------------------------------------
T0=$(date +%s)
say() { printf '%s [s%s +%ss] %s\n' "$(date +%H:%M:%S)" "${N:-?}" "$(( $(date +%s) - T0 ))" "$*"; }
# fail WHY: end the scenario with this reason.
fail() { say "FAIL: $*"; printf '%s\n' "$*" >"$REASON"; exit 1; }
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

journal_since() { # journal_since EPOCH [journalctl args...]
	local since=$1; shift
	journalctl --no-pager -q --since "@$since" "$@"
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

# 1: boot: qmd.service active, partition running, QM's systemd up, D-Bus
# ActiveState active, STATUS= shown by systemctl status.
s1() {
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
	info "systemctl status qmd:$(echo "$status" | sed 's/^ *Status://')"
	local nr
	nr=$(svc qmd.service NRestarts)
	[ "$nr" = 0 ] || check_later "qmd.service was restarted $nr time(s) since boot ($(journalctl -q --no-pager -u qmd.service | grep -m1 -E 'Watchdog timeout|Main process exited' || echo 'see journal'))"
	info "qmd.service active after $(svc qmd.service ActiveEnterTimestampMonotonic | awk '{ printf "%.1f", $1 / 1e6 }')s of uptime"
}

# 2: oom_score_adj: partition init 500, nested container 750, ASIL keeps -800.
s2() {
	need_qmd
	need_running
	local pid adj
	pid=$(ctr qm .State.Pid)
	adj=$(cat "/proc/$pid/oom_score_adj")
	[ "$adj" = 500 ] || fail "partition init (pid $pid) oom_score_adj is $adj, want 500"

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
	[ -n "$pid0" ] && [ "$pid0" != 0 ] || fail "$name has no init PID"
	t_kill=$(now_ns)
	kill -9 "$pid0"
	wait_for 300 "$name running again with a new init PID after kill -9 $pid0" ctr_running_new_pid "$name" "$pid0"
	started=$(ctr "$name" .State.StartedAt.UnixNano)
	wait_inner_up "$name"
	echo "$(( started - t_kill )) $(( $(now_ns) - t_kill ))"
}

# 3: crash: kill -9 of QM's init -> restarted; journal and NRestarts; the
# crash->running time vs plain systemd Restart=always, same VM run.
s3() {
	need_qmd
	local reps=${E2E_CRASH_REPS:-3} since n0 n1 i r
	need_running
	wait_inner_up qm
	since=$(date +%s)
	n0=$(prop qm NRestarts)
	: >/tmp/crash-qmd
	for i in $(seq "$reps"); do
		r=$(crash_once qm) || exit 1
		say "qmd rep $i: $r"
		echo "$r" >>/tmp/crash-qmd
	done
	n1=$(prop qm NRestarts)
	[ "$n1" -ge $(( n0 + reps )) ] || check_later "NRestarts went from $n0 to $n1 after $reps crashes"
	local entries
	entries=$(journal_since "$since" -u qmd.service QMD_EVENT=restart QMD_PARTITION=qm -o verbose)
	[ -n "$entries" ] || check_later "journalctl -u qmd QMD_EVENT=restart QMD_PARTITION=qm has no entry"
	info "journal restart entries: $(echo "$entries" | grep -c '^    MESSAGE=' || true); NRestarts $n0 -> $n1"

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
	[ "$(prop qm ContainerId)" = "$id0" ] && [ "$(prop qm NRestarts)" = "$n0" ] ||
		fail "partition qm changed after nobody's Restart (ContainerId/NRestarts)"
}

# 9: watchdog: a frozen qmd is restarted by systemd; the partition stays.
s9() {
	need_qmd
	need_running
	local wd pid0 n0 id0 limit t
	local wd_s
	wd=$(svc qmd.service WatchdogUSec) # like "30s" or "1min 30s"
	case $wd in "" | 0 | infinity) fail "qmd.service has no WatchdogSec (WatchdogUSec=$wd)" ;; esac
	wd_s=$(systemd-analyze timespan "$wd" 2>/dev/null | awk '/s:/ && $1 ~ /^(μs|us):$/ { printf "%d", $2 / 1e6 }')
	[ -n "$wd_s" ] && [ "$wd_s" -gt 0 ] || wd_s=30
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

# ---- runner ---------------------------------------------------------------------

run_one() { # in its own process: set -e ends it at the first unexpected error
	N=$1
	REASON=$S/.reason-$N
	: >"$REASON"
	set -E
	trap 'rc=$?; [ -s "$REASON" ] || printf "unexpected failure (rc %s) at line %s: %s\n" "$rc" "$LINENO" "$BASH_COMMAND" >"$REASON"' ERR
	say "scenario $N ${NAMES[$N]} starting"
	"s$N"
	if [ ${#LATER[@]} -gt 0 ]; then
		fail "$(printf '%s; ' "${LATER[@]}" | sed 's/; $//')"
	fi
	say "scenario $N done"
}

if [ "${1:-}" = run ]; then
	run_one "$2"
	exit 0
fi

list=${E2E_SCENARIOS:-0 1 2 3 4 5 6 7 8 9}
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
	took=$(awk -v ns=$(( $(now_ns) - start_ns )) 'BEGIN { printf "%.1f", ns / 1e9 }')
	if [ "$rc" = 0 ]; then
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
			echo "=== journalctl -u qmd.service since the start of scenario $n ==="
			journal_since "$start" -u qmd.service -o short-precise | tail -n 40
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
