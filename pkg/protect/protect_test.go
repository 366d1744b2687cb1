package protect

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/containers/qmd/internal/testutil"
)

// TestUnitInNonDefaultSlice: a unit in asil.slice (not system.slice, the
// old guess) is resolved through systemd's ControlGroup; its three
// pressure files are watched; a confirmed firing becomes a signal naming
// the unit, a spurious one is counted and dropped.
func TestUnitInNonDefaultSlice(t *testing.T) {
	root := fakeV2(t)
	cg := "/asil.slice/brakes.service"
	testutil.WriteTree(t, root, pressureFiles(cg, 1000))
	sd := newFakeSystemd(map[string]string{"brakes.service": cg})
	h := start(t, root, sd, testConfig(Entry{Unit: "brakes.service", OOMScoreAdj: -900, WatchPressure: true}), nil)
	sigs, cancel := h.p.Subscribe()
	defer cancel()
	h.waitArmed(t, cg, 1)
	if h.ft.Count(filepath.Join(root, "system.slice/brakes.service", "memory.pressure")) != 0 {
		t.Error("guessed /system.slice")
	}
	testutil.Eventually(t, "status", func() bool {
		st := h.p.Status()
		return len(st) == 1 && st[0].Cgroup == cg && st[0].State == "watching"
	})

	// A wake-up with 1.4 ms behind it: spurious (threshold 100 ms).
	testutil.WriteTree(t, root, map[string]string{filepath.Join(cg, "cpu.pressure"): psiText(1000 + 1400)})
	h.ft.Latest(t, h.file(cg, CPU)).Fire(time.Now())
	testutil.Eventually(t, "spurious counted", func() bool { return h.p.Stats().Spurious == 1 })
	noSignal(t, sigs)
	if h.logs.FilterMessage("spurious pressure trigger wake-up: the stall total did not grow by the threshold").Len() != 1 {
		t.Error("spurious wake-up not logged at debug level")
	}

	// 300 ms of memory stall: confirmed.
	testutil.WriteTree(t, root, map[string]string{filepath.Join(cg, "memory.pressure"): psiText(1000 + 300000)})
	at := time.Now().Add(3 * time.Second)
	h.ft.Latest(t, h.file(cg, Memory)).Fire(at)
	s := recv(t, sigs)
	if s.Kind != Memory || s.Source != "brakes.service" || !s.At.Equal(at) || s.Stall != 300*time.Millisecond {
		t.Errorf("signal %+v", s)
	}
	// And IO.
	testutil.WriteTree(t, root, map[string]string{filepath.Join(cg, "io.pressure"): psiText(1000 + 120000)})
	h.ft.Latest(t, h.file(cg, IO)).Fire(time.Now().Add(3 * time.Second))
	if s := recv(t, sigs); s.Kind != IO || s.Source != "brakes.service" || s.Dir != filepath.Dir(h.file(cg, IO)) {
		t.Errorf("io signal %+v: want the unit's directory %s (the policy reads its io.stat)", s, filepath.Dir(h.file(cg, IO)))
	}
}

// TestUnitRestarted100Times: the protected unit restarts 100 times, each
// time in a new cgroup (systemd reports the new ControlGroup); the old
// triggers end (POLLERR). The protector re-arms on the new cgroup every
// time, never wakes up for a closed trigger, publishes nothing, and is
// idle afterwards (bounded loop iterations; none while nothing happens).
func TestUnitRestarted100Times(t *testing.T) {
	const restarts = 100
	root := fakeV2(t)
	cgOf := func(i int) string { return "/asil.slice/brakes.service/run-" + strconv.Itoa(i) }
	testutil.WriteTree(t, root, pressureFiles(cgOf(0), 0))
	sd := newFakeSystemd(map[string]string{"brakes.service": cgOf(0)})
	h := start(t, root, sd, testConfig(Entry{Unit: "brakes.service", OOMScoreAdj: -900, WatchPressure: true}), nil)
	sigs, cancel := h.p.Subscribe()
	defer cancel()
	h.waitArmed(t, cgOf(0), 1)

	var before, after syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &before)
	t0 := time.Now()
	for i := 1; i <= restarts; i++ {
		old := cgOf(i - 1)
		// The unit stops: its cgroup goes, the triggers end; it comes
		// back in a new cgroup.
		if err := os.RemoveAll(filepath.Join(root, old)); err != nil {
			t.Fatal(err)
		}
		for _, k := range []Kind{Memory, CPU, IO} {
			h.ft.Latest(t, h.file(old, k)).End()
		}
		testutil.WriteTree(t, root, pressureFiles(cgOf(i), uint64(i)))
		sd.set("brakes.service", cgOf(i))
		h.waitArmed(t, cgOf(i), 1)
	}
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &after)
	cpu := time.Duration(after.Utime.Nano() + after.Stime.Nano() - before.Utime.Nano() - before.Stime.Nano())
	st := h.p.Stats()
	t.Logf("%d restarts in %v: process CPU %v; protector loop iterations %d, arms %d, systemd look-ups %d, wake-ups %d",
		restarts, time.Since(t0).Round(time.Millisecond), cpu, st.Loops, st.Arms, st.Resolves, st.Wakeups)
	if st.Wakeups != 0 || st.Signals != 0 {
		t.Errorf("%d wake-ups, %d signals from restarts alone", st.Wakeups, st.Signals)
	}
	noSignal(t, sigs)
	// Each restart: 3 ends and a few re-arm timers (a re-arm that finds
	// the new cgroup not yet there backs off, doubling: at most ~7 tries
	// in the 100 ms a loaded machine may take to create it). Spinning
	// would be thousands.
	if st.Loops > 20*restarts {
		t.Errorf("%d loop iterations for %d restarts: spinning", st.Loops, restarts)
	}
	if st.Arms < 3*(restarts+1) || st.Arms > 3*(restarts+1)+3 {
		t.Errorf("%d arms, want %d", st.Arms, 3*(restarts+1))
	}
	// Idle: nothing happens, the loop sleeps (after the follow-up
	// audits of the last come-back: settleDelays, at most 3 wake-ups).
	var settled time.Duration
	for _, d := range settleDelays {
		settled += d
	}
	time.Sleep(settled + 100*time.Millisecond)
	idle := h.p.Stats().Loops
	time.Sleep(300 * time.Millisecond)
	if n := h.p.Stats().Loops - idle; n != 0 {
		t.Errorf("%d loop iterations while idle", n)
	}
	if n := h.logs.FilterMessage("pressure trigger ended (the watched cgroup went away: unit stopped or restarting); re-arming when it is back").Len(); n != 3*restarts {
		t.Errorf("end reported %d times, want once per trigger and restart (%d)", n, 3*restarts)
	}
	// The last arm works: a confirmed firing is a signal.
	last := cgOf(restarts)
	testutil.WriteTree(t, root, map[string]string{filepath.Join(last, "cpu.pressure"): psiText(restarts + 200000)})
	h.ft.Latest(t, h.file(last, CPU)).Fire(time.Now().Add(3 * time.Second))
	if s := recv(t, sigs); s.Kind != CPU {
		t.Errorf("signal %+v", s)
	}
}

// TestUnitDownBacksOff: a unit that stays stopped is retried with
// doubling backoff up to the resync period, not in a loop.
func TestUnitDownBacksOff(t *testing.T) {
	root := fakeV2(t)
	sd := newFakeSystemd(map[string]string{}) // not running: ControlGroup ""
	cfg := testConfig(Entry{Unit: "brakes.service", OOMScoreAdj: -900, WatchPressure: true})
	cfg.Resync = 50 * time.Millisecond
	h := start(t, root, sd, cfg, nil)
	time.Sleep(500 * time.Millisecond)
	st := h.p.Stats()
	// 1 ms doubling to 50 ms, then every 50 ms (re-arm timer plus the
	// resync tick): about 20 wake-ups in 500 ms.
	t.Logf("stopped unit, 500 ms: %d loop iterations, %d look-ups", st.Loops, st.Resolves)
	if st.Loops > 40 {
		t.Errorf("%d loop iterations in 500 ms for a stopped unit", st.Loops)
	}
	if s := h.p.Status(); len(s) != 1 || s[0].State != "not-running" {
		t.Errorf("status %+v", s)
	}
	// It starts: armed within the backoff.
	testutil.WriteTree(t, root, pressureFiles("/asil.slice/brakes.service", 0))
	sd.set("brakes.service", "/asil.slice/brakes.service")
	h.waitArmed(t, "/asil.slice/brakes.service", 1)
}

// TestReloadAddsAndRemoves: a reload adds a protected unit (armed), keeps
// an unchanged one (not re-armed), and removes one (its triggers closed,
// nothing else touched).
func TestReloadAddsAndRemoves(t *testing.T) {
	root := fakeV2(t)
	a, b := "/asil.slice/a.service", "/asil.slice/b.service"
	testutil.WriteTree(t, root, pressureFiles(a, 0))
	testutil.WriteTree(t, root, pressureFiles(b, 0))
	sd := newFakeSystemd(map[string]string{"a.service": a, "b.service": b})
	ea := Entry{Unit: "a.service", OOMScoreAdj: -900, WatchPressure: true}
	eb := Entry{Unit: "b.service", OOMScoreAdj: -800, WatchPressure: true}
	h := start(t, root, sd, testConfig(ea), nil)
	h.waitArmed(t, a, 1)
	ctx := context.Background()
	if err := h.p.Reconfigure(ctx, testConfig(ea, eb)); err != nil {
		t.Fatal(err)
	}
	h.waitArmed(t, b, 1)
	if n := h.ft.Count(h.file(a, Memory)); n != 1 {
		t.Errorf("unchanged unit re-armed: %d arms", n)
	}
	if err := h.p.Reconfigure(ctx, testConfig(eb)); err != nil {
		t.Fatal(err)
	}
	for _, k := range []Kind{Memory, CPU, IO} {
		if !h.ft.Latest(t, h.file(a, k)).Closed() {
			t.Errorf("removed unit's %s trigger still open", k)
		}
		if h.ft.Latest(t, h.file(b, k)).Closed() || h.ft.Count(h.file(b, k)) != 1 {
			t.Errorf("kept unit's %s trigger closed or re-armed", k)
		}
	}
	if st := h.p.Status(); len(st) != 1 || st[0].Name != "b.service" {
		t.Errorf("status after removal: %+v", st)
	}
	// A changed entry (no longer watched) is re-done: its triggers close.
	eb.WatchPressure = false
	if err := h.p.Reconfigure(ctx, testConfig(eb)); err != nil {
		t.Fatal(err)
	}
	if !h.ft.Latest(t, h.file(b, Memory)).Closed() {
		t.Error("unwatched unit's trigger still open")
	}
	// An invalid configuration is refused and changes nothing.
	if err := h.p.Reconfigure(ctx, testConfig(Entry{Unit: "a.service", Cgroup: a})); err == nil {
		t.Error("unit and cgroup both set: accepted")
	}
}

// TestMemoryProtectionThroughSystemd: memory_min/memory_low become
// MemoryMin=/MemoryLow= runtime properties on the unit, set once.
func TestMemoryProtectionThroughSystemd(t *testing.T) {
	root := fakeV2(t)
	sd := newFakeSystemd(map[string]string{"brakes.service": "/asil.slice/brakes.service"})
	e := Entry{Unit: "brakes.service", OOMScoreAdj: -900, MemoryMin: 256 << 20, MemoryMinSet: true, MemoryLow: 512 << 20, MemoryLowSet: true}
	cfg := testConfig(e)
	cfg.Resync = 20 * time.Millisecond
	h := start(t, root, sd, cfg, nil)
	testutil.Eventually(t, "properties set", func() bool { sd.mu.Lock(); defer sd.mu.Unlock(); return len(sd.props["brakes.service"]) >= 2 })
	time.Sleep(100 * time.Millisecond) // several resync ticks
	sd.mu.Lock()
	defer sd.mu.Unlock()
	ps := sd.props["brakes.service"]
	if len(ps) != 2 || !sd.runtime {
		t.Fatalf("properties %+v runtime %v: want MemoryMin and MemoryLow once, runtime", ps, sd.runtime)
	}
	if ps[0].Name != "MemoryMin" || ps[0].Value.Value() != uint64(256<<20) || ps[1].Name != "MemoryLow" || ps[1].Value.Value() != uint64(512<<20) {
		t.Errorf("properties %+v", ps)
	}
	if h.incidents("policy-limit") != 0 {
		t.Error("reported unsupported on v2")
	}
}

// TestMemoryProtectionCgroupEntry: a cgroup entry (no systemd) gets
// memory.min/memory.low written into its cgroup, again after the cgroup
// was re-created.
func TestMemoryProtectionCgroupEntry(t *testing.T) {
	root := fakeV2(t)
	cg := "/asil.slice/brakes.service"
	testutil.WriteTree(t, root, map[string]string{filepath.Join(cg, "memory.min"): "0\n", filepath.Join(cg, "memory.low"): "0\n"})
	cfg := testConfig(Entry{Cgroup: cg, OOMScoreAdj: -900, MemoryMin: 1 << 20, MemoryMinSet: true, MemoryLow: 2 << 20, MemoryLowSet: true})
	cfg.Resync = 20 * time.Millisecond
	start(t, root, nil, cfg, nil)
	readF := func(n string) string {
		b, _ := os.ReadFile(filepath.Join(root, cg, n))
		return strings.TrimSpace(string(b))
	}
	testutil.Eventually(t, "memory.min and memory.low written", func() bool { return readF("memory.min") == "1048576" && readF("memory.low") == "2097152" })
	testutil.WriteTree(t, root, map[string]string{filepath.Join(cg, "memory.min"): "0\n"}) // re-created
	testutil.Eventually(t, "memory.min re-written", func() bool { return readF("memory.min") == "1048576" })
}

// TestV1ReportsUnsupported: on a pure cgroup v1 host, memory protection
// and pressure watching are reported unsupported once each (log and
// policy-limit incident), whatever the number of entries; nothing is set.
func TestV1ReportsUnsupported(t *testing.T) {
	root := t.TempDir()
	testutil.WriteTree(t, root, map[string]string{"memory/cgroup.procs": ""})
	sd := newFakeSystemd(map[string]string{"a.service": "/asil.slice/a.service", "b.service": "/asil.slice/b.service"})
	mk := func(u string) Entry {
		return Entry{Unit: u, OOMScoreAdj: -900, WatchPressure: true, MemoryMin: 1 << 20, MemoryMinSet: true}
	}
	h := start(t, root, sd, testConfig(mk("a.service"), mk("b.service")), nil)
	testutil.Eventually(t, "two policy-limit incidents", func() bool { return h.incidents("policy-limit") == 2 })
	time.Sleep(50 * time.Millisecond)
	if n := h.incidents("policy-limit"); n != 2 {
		t.Errorf("%d policy-limit incidents, want one for memory protection and one for pressure", n)
	}
	sd.mu.Lock()
	n := len(sd.props)
	sd.mu.Unlock()
	if n != 0 {
		t.Error("MemoryMin set on a v1 host")
	}
	if opens := h.ft.Opens(); opens != 0 {
		t.Errorf("%d trigger registrations on v1", opens)
	}
	if h.logs.FilterMessage("memory_min/memory_low of protected units are unsupported: the memory controller is on cgroup v1 here").Len() != 1 {
		t.Error("memory protection unsupported not logged once")
	}
}

// TestNoSystemd: without systemd a unit cannot be resolved: said once, in
// the log and the status; a cgroup entry still works.
func TestNoSystemd(t *testing.T) {
	root := fakeV2(t)
	cg := "/asil.slice/brakes.service"
	testutil.WriteTree(t, root, pressureFiles(cg, 0))
	cfg := testConfig(Entry{Unit: "a.service", OOMScoreAdj: -900, WatchPressure: true},
		Entry{Unit: "b.service", OOMScoreAdj: -900, WatchPressure: true},
		Entry{Cgroup: cg, OOMScoreAdj: -900, WatchPressure: true})
	cfg.Resync = 20 * time.Millisecond
	h := start(t, root, nil, cfg, nil)
	h.waitArmed(t, cg, 1)
	time.Sleep(100 * time.Millisecond)
	if n := h.logs.FilterMessage("systemd is not available: protected units cannot be resolved to their cgroups (cgroup entries still work)").Len(); n != 1 {
		t.Errorf("no-systemd reported %d times, want once", n)
	}
	st := h.p.Status()
	if len(st) != 3 || !strings.HasPrefix(st[0].State, "unresolved: systemd is not PID 1") || st[2].State != "watching" {
		t.Errorf("status %+v", st)
	}
}

// TestHostMemoryPressure: /proc/pressure/memory is watched when asked
// for; its signals come from "host"; spurious wake-ups are dropped.
func TestHostMemoryPressure(t *testing.T) {
	root := fakeV2(t)
	host := filepath.Join(root, "proc-pressure-memory")
	testutil.WriteTree(t, root, map[string]string{"proc-pressure-memory": psiText(579510)})
	cfg := testConfig()
	cfg.HostMemory = true
	h := start(t, root, nil, cfg, func(o *Options) { o.HostPressure = host })
	sigs, cancel := h.p.Subscribe()
	defer cancel()
	testutil.Eventually(t, "host trigger", func() bool { return h.ft.Count(host) == 1 })
	testutil.WriteTree(t, root, map[string]string{"proc-pressure-memory": psiText(579510 + 1400)})
	h.ft.Latest(t, host).Fire(time.Now())
	testutil.Eventually(t, "spurious", func() bool { return h.p.Stats().Spurious == 1 })
	noSignal(t, sigs)
	testutil.WriteTree(t, root, map[string]string{"proc-pressure-memory": psiText(579510 + 1400 + 300000)})
	h.ft.Latest(t, host).Fire(time.Now().Add(2 * time.Second))
	if s := recv(t, sigs); s.Kind != Memory || s.Source != HostSource {
		t.Errorf("signal %+v", s)
	}
}

// TestSlowSubscriberNeverBlocks: a subscriber that never reads loses
// signals (counted); the protector and other subscribers go on.
func TestSlowSubscriberNeverBlocks(t *testing.T) {
	root := fakeV2(t)
	cg := "/asil.slice/brakes.service"
	testutil.WriteTree(t, root, pressureFiles(cg, 0))
	h := start(t, root, nil, testConfig(Entry{Cgroup: cg, OOMScoreAdj: -900, WatchPressure: true}), nil)
	_, cancelSlow := h.p.Subscribe() // never read
	defer cancelSlow()
	fast, cancelFast := h.p.Subscribe()
	defer cancelFast()
	h.waitArmed(t, cg, 1)
	const n = 40
	t0 := time.Now()
	src := h.ft.Latest(t, h.file(cg, Memory))
	for i := 1; i <= n; i++ {
		testutil.WriteTree(t, root, map[string]string{filepath.Join(cg, "memory.pressure"): psiText(uint64(i) * 200000)})
		src.Fire(t0.Add(time.Duration(i) * 3 * time.Second))
		recv(t, fast)
	}
	st := h.p.Stats()
	if st.Signals != n || st.Dropped != n-subBuffer {
		t.Errorf("signals %d dropped %d; want %d, %d", st.Signals, st.Dropped, n, n-subBuffer)
	}
}

// TestOOMScoreKeptAcrossRestart: a protected unit's processes are kept at
// its oom_score_adj (fake /proc): repaired at start with an incident, and
// the process of the restarted unit (new cgroup, re-armed triggers) too,
// without any partition.
func TestOOMScoreKeptAcrossRestart(t *testing.T) {
	root := fakeV2(t)
	proc := filepath.Join(root, "proc")
	cg1, cg2 := "/asil.slice/brakes.service/run-1", "/asil.slice/brakes.service/run-2"
	testutil.WriteTree(t, root, pressureFiles(cg1, 0))
	testutil.WriteTree(t, root, map[string]string{filepath.Join(cg1, "cgroup.procs"): "100\n",
		"proc/100/cgroup": "0::" + cg1 + "\n", "proc/100/oom_score_adj": "0\n", "proc/100/comm": "brakes\n"})
	sd := newFakeSystemd(map[string]string{"brakes.service": cg1})
	h := start(t, root, sd, testConfig(Entry{Unit: "brakes.service", OOMScoreAdj: -900, WatchPressure: true}),
		func(o *Options) { o.ProcRoot = proc })
	readScore := func(pid string) string {
		b, _ := os.ReadFile(filepath.Join(proc, pid, "oom_score_adj"))
		return strings.TrimSpace(string(b))
	}
	testutil.Eventually(t, "repair at start", func() bool { return readScore("100") == "-900" && h.incidents("oom-score-repair") == 1 })
	h.mu.Lock()
	inc := h.incs[0]
	h.mu.Unlock()
	if inc.Details["protect"] != "brakes.service" || inc.Details["old"] != "0" || inc.Details["new"] != "-900" {
		t.Errorf("incident %+v", inc)
	}
	h.waitArmed(t, cg1, 1)
	// The unit restarts into a new cgroup with a new process at 0.
	testutil.WriteTree(t, root, pressureFiles(cg2, 0))
	testutil.WriteTree(t, root, map[string]string{filepath.Join(cg2, "cgroup.procs"): "200\n",
		"proc/200/cgroup": "0::" + cg2 + "\n", "proc/200/oom_score_adj": "0\n", "proc/200/comm": "brakes\n"})
	sd.set("brakes.service", cg2)
	for _, k := range []Kind{Memory, CPU, IO} {
		h.ft.Latest(t, h.file(cg1, k)).End()
	}
	h.waitArmed(t, cg2, 1)
	testutil.Eventually(t, "the restarted unit's process repaired", func() bool { return readScore("200") == "-900" && h.incidents("oom-score-repair") == 2 })
}

// TestUnitFollowedOnSystemdEvents: with systemd's unit change events, a
// restarted unit is followed at once: a unit without pressure triggers
// gets its new process's oom_score_adj repaired without waiting for the
// resync tick, and a watched unit that moved to another cgroup has its
// triggers moved at once (no backoff); events of other units cost nothing.
func TestUnitFollowedOnSystemdEvents(t *testing.T) {
	root := fakeV2(t)
	proc := filepath.Join(root, "proc")
	a1, a2 := "/asil.slice/a.service", "/other.slice/a.service"
	b := "/asil.slice/b.service"
	testutil.WriteTree(t, root, pressureFiles(a1, 0))
	testutil.WriteTree(t, root, map[string]string{filepath.Join(b, "cgroup.procs"): "100\n",
		"proc/100/cgroup": "0::" + b + "\n", "proc/100/oom_score_adj": "-800\n", "proc/100/comm": "b\n"})
	sd := newFakeSystemd(map[string]string{"a.service": a1, "b.service": b})
	events := make(chan string, 10)
	h := startWith(t, root, sd, events, testConfig(Entry{Unit: "a.service", OOMScoreAdj: -900, WatchPressure: true},
		Entry{Unit: "b.service", OOMScoreAdj: -800}), func(o *Options) { o.ProcRoot = proc; o.RearmMin = time.Hour })
	h.waitArmed(t, a1, 1)
	readScore := func(pid string) string {
		b, _ := os.ReadFile(filepath.Join(proc, pid, "oom_score_adj"))
		return strings.TrimSpace(string(b))
	}
	// b restarts (same cgroup, new process at 0).
	testutil.WriteTree(t, root, map[string]string{filepath.Join(b, "cgroup.procs"): "200\n",
		"proc/200/cgroup": "0::" + b + "\n", "proc/200/oom_score_adj": "0\n", "proc/200/comm": "b\n"})
	events <- "b.service"
	testutil.Eventually(t, "b's new process repaired on the event", func() bool { return readScore("200") == "-800" })
	// a restarts into another slice: its triggers end; the event moves them
	// at once (RearmMin is an hour: only the event can do it).
	testutil.WriteTree(t, root, pressureFiles(a2, 0))
	sd.set("a.service", a2)
	for _, k := range []Kind{Memory, CPU, IO} {
		h.ft.Latest(t, h.file(a1, k)).End()
	}
	events <- "a.service"
	h.waitArmed(t, a2, 1)
	testutil.Eventually(t, "status: watching in the new cgroup", func() bool {
		st := h.p.Status()
		return st[0].Cgroup == a2 && st[0].State == "watching"
	})
	// Events of unrelated units: no look-up.
	sd.mu.Lock()
	before := sd.lookups
	sd.mu.Unlock()
	for i := 0; i < 5; i++ {
		events <- "cron.service"
	}
	testutil.Eventually(t, "events drained", func() bool { return len(events) == 0 })
	time.Sleep(20 * time.Millisecond)
	sd.mu.Lock()
	after := sd.lookups
	sd.mu.Unlock()
	if after != before {
		t.Errorf("%d look-ups for unrelated units", after-before)
	}
}

// TestSameCgroupTwice: a unit entry and a cgroup entry that turn out to
// be the same cgroup do not stop the audit (the first entry's score
// counts, other units are still audited).
func TestSameCgroupTwice(t *testing.T) {
	root := fakeV2(t)
	proc := filepath.Join(root, "proc")
	a, b := "/asil.slice/a.service", "/asil.slice/b.service"
	testutil.WriteTree(t, root, map[string]string{filepath.Join(a, "cgroup.procs"): "100\n", filepath.Join(b, "cgroup.procs"): "200\n",
		"proc/100/cgroup": "0::" + a + "\n", "proc/100/oom_score_adj": "0\n", "proc/100/comm": "a\n",
		"proc/200/cgroup": "0::" + b + "\n", "proc/200/oom_score_adj": "0\n", "proc/200/comm": "b\n"})
	sd := newFakeSystemd(map[string]string{"a.service": a})
	start(t, root, sd, testConfig(Entry{Unit: "a.service", OOMScoreAdj: -900}, Entry{Cgroup: a, OOMScoreAdj: -500},
		Entry{Cgroup: b, OOMScoreAdj: -700}), func(o *Options) { o.ProcRoot = proc })
	readScore := func(pid string) string {
		b, _ := os.ReadFile(filepath.Join(proc, pid, "oom_score_adj"))
		return strings.TrimSpace(string(b))
	}
	testutil.Eventually(t, "both audited", func() bool { return readScore("100") == "-900" && readScore("200") == "-700" })
}

// TestSliceProtectionCoversItsChildren: the kernel limits a cgroup's
// memory.min by its parent's, so MemoryMin= on a unit in system.slice
// (memory.min 0) protects nothing. Each slice above a protected unit, and
// above qmd's own cgroup, is raised to the sum of what its children claim,
// deepest first; a slice that affords it already is left alone.
func TestSliceProtectionCoversItsChildren(t *testing.T) {
	root := fakeV2(t)
	testutil.WriteTree(t, root, map[string]string{
		"system.slice/memory.min":                             "0\n",
		"system.slice/memory.low":                             "0\n",
		"system.slice/qmd.service/memory.min":                 "67108864\n", // qmd's own MemoryMin=64M
		"system.slice/qmd.service/memory.low":                 "0\n",
		"system.slice/brakes.service/memory.min":              "0\n", // systemd has not written it yet
		"system.slice/brakes.service/memory.low":              "0\n",
		"system.slice/journald.service/memory.min":            "0\n",
		"asil.slice/memory.min":                               "0\n",
		"asil.slice/memory.low":                               "1073741824\n", // an operator's larger value
		"asil.slice/asil-cam.slice/memory.min":                "0\n",
		"asil.slice/asil-cam.slice/memory.low":                "0\n",
		"asil.slice/asil-cam.slice/cam.service/memory.min":    "0\n",
		"asil.slice/asil-cam.slice/cam.service/memory.low":    "0\n",
		"asil.slice/asil-cam.slice/cam-ro.service/memory.min": "16777216\n",
		"asil.slice/asil-cam.slice/cam-ro.service/memory.low": "0\n",
	})
	sd := newFakeSystemd(map[string]string{
		"brakes.service": "/system.slice/brakes.service",
		"cam.service":    "/asil.slice/asil-cam.slice/cam.service",
	})
	cfg := testConfig(
		Entry{Unit: "brakes.service", OOMScoreAdj: -900, MemoryMin: 256 << 20, MemoryMinSet: true},
		Entry{Unit: "cam.service", OOMScoreAdj: -900, MemoryMin: 32 << 20, MemoryMinSet: true, MemoryLow: 64 << 20, MemoryLowSet: true},
	)
	start(t, root, sd, cfg, func(o *Options) { o.SelfCgroup = "/system.slice/qmd.service" })
	testutil.Eventually(t, "slices raised", func() bool {
		sd.mu.Lock()
		defer sd.mu.Unlock()
		return len(sd.props["system.slice"]) > 0 && len(sd.props["asil.slice"]) > 0
	})
	sd.mu.Lock()
	defer sd.mu.Unlock()
	want := map[string]string{
		"system.slice":   "MemoryMin=" + strconv.Itoa(64<<20+256<<20),
		"asil-cam.slice": "MemoryMin=" + strconv.Itoa(16<<20+32<<20) + " MemoryLow=" + strconv.Itoa(64<<20),
		"asil.slice":     "MemoryMin=" + strconv.Itoa(48<<20),
	}
	for unit, w := range want {
		var got []string
		for _, p := range sd.props[unit] {
			got = append(got, fmt.Sprintf("%s=%v", p.Name, p.Value.Value()))
		}
		if strings.Join(got, " ") != w {
			t.Errorf("%s: properties %q, want %q", unit, got, w)
		}
	}
}
