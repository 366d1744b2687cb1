package policy

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/containers/qmd/internal/config"
	"github.com/containers/qmd/internal/incident"
	"github.com/containers/qmd/internal/testutil"
	"github.com/containers/qmd/pkg/cgroups/psitest"
	"github.com/containers/qmd/pkg/protect"
)

// psiText is a pressure file with the given some and full totals (µs).
func psiText(some, full uint64) string {
	return fmt.Sprintf("some avg10=0.00 avg60=0.00 avg300=0.00 total=%d\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=%d\n", some, full)
}

// TestProtectorSignalsDriveTheReactions: the partition reacts to the
// protector's confirmed signals: ASIL memory -> memory.high, ASIL CPU ->
// cpu quota, host memory only when the partition asked for host_memory;
// IO is accepted (the IO policy branch gives it a reaction).
func TestProtectorSignalsDriveTheReactions(t *testing.T) {
	h, root := fakeHost(t)
	sigs := &fakeSignals{}
	h.Pressure = sigs
	r := newRecorder()
	p := partitionConfig()
	p.Pressure.HostMemory = false
	p.Pressure.CPUQuota = "50%" // off by default
	c := newController(t, h, p, r)
	runController(t, c)

	sigs.send(t, protect.Signal{Kind: protect.Memory, Source: protect.HostSource, At: time.Now(), Stall: 300 * time.Millisecond})
	sigs.send(t, protect.Signal{Kind: protect.IO, Source: "brakes.service", At: time.Now()})
	sigs.send(t, protect.Signal{Kind: protect.CPU, Source: "brakes.service", At: time.Now(), Stall: 200 * time.Millisecond})
	r.waitFor(t, "cpu quota", func() bool { return r.Count(incident.CPUQuota) == 1 })
	if got := read(t, filepath.Join(root, "libpod-0123abcd/memory.high")); got != "max" || r.Count(incident.Throttle) != 0 {
		t.Fatalf("host memory pressure throttled a partition without host_memory: memory.high %s", got)
	}
	sigs.send(t, protect.Signal{Kind: protect.Memory, Source: "brakes.service", At: time.Now().Add(3 * time.Second), Stall: 300 * time.Millisecond})
	r.waitFor(t, "throttle", func() bool { return r.Count(incident.Throttle) == 1 })
	if got := read(t, filepath.Join(root, "libpod-0123abcd/memory.high")); got == "max" {
		t.Error("ASIL memory pressure did not throttle")
	}
}

// TestSpuriousStallWindowsDoNotCount: the partition's own stall trigger is
// confirmed too; unconfirmed windows never add up to a stall reaction.
func TestSpuriousStallWindowsDoNotCount(t *testing.T) {
	h, root := fakeHost(t)
	pp := filepath.Join(root, "libpod-0123abcd/memory.pressure")
	write(t, root, map[string]string{"libpod-0123abcd/memory.pressure": psiText(0, 0)})
	r := newRecorder()
	c := newController(t, h, partitionConfig(), r)
	ft := psitest.NewTriggers()
	c.openTrigger = ft.Open
	runController(t, c)
	ft.WaitOpened(t, pp)
	src := ft.Latest(t, pp)
	t0 := time.Now()
	for i := 1; i <= 5; i++ {
		// full grows 1 ms a window: far below stall_threshold (800 ms).
		write(t, root, map[string]string{"libpod-0123abcd/memory.pressure": psiText(uint64(i)*2000, uint64(i)*1000)})
		src.Fire(t0.Add(time.Duration(i) * time.Second))
	}
	testutil.Eventually(t, "five spurious stall wake-ups", func() bool { return c.SpuriousWakeups() == 5 })
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.Count(incident.Stall) != 0 || len(r.restarts) != 0 {
		t.Errorf("acted on unconfirmed stall windows: %d stall incidents, restarts %v", r.Count(incident.Stall), r.restarts)
	}
}

// TestThrottleNeverBelowWorkingSet: memory.high never goes below what the
// partition needs (memory.current minus inactive page cache).
func TestThrottleNeverBelowWorkingSet(t *testing.T) {
	h, root := fakeHost(t)
	write(t, root, map[string]string{
		"libpod-0123abcd/memory.current": strconv.Itoa(1000*mib) + "\n",
		// 900M anon (swap is off: not reclaimable), 100M page cache.
		"libpod-0123abcd/memory.stat": fmt.Sprintf("anon %d\nfile %d\nactive_file %d\ninactive_file %d\n", 900*mib, 100*mib, 20*mib, 80*mib),
	})
	r := newRecorder()
	p := partitionConfig()
	p.Pressure.Step, _ = config.ParseSize("50M")
	p.Pressure.Floor, _ = config.ParseSize("256M")
	c := newController(t, h, p, r)
	t0 := time.Unix(5000, 0)
	for i := 0; i < 10; i++ {
		c.onMemoryPressure(t0.Add(time.Duration(i) * 2 * time.Second))
	}
	if got := read(t, filepath.Join(root, "libpod-0123abcd/memory.high")); got != strconv.Itoa(920*mib) {
		t.Errorf("memory.high %s after ten pressure events, want the working set 920M (%d)", got, 920*mib)
	}
	if n := r.Count(incident.Throttle); n != 2 {
		t.Errorf("%d throttle steps, want 2 (1000M -> 950M -> 920M)", n)
	}
}

// TestThrottleHoldsWhileThePartitionStalls: no step down while the
// partition's own full memory pressure rises.
func TestThrottleHoldsWhileThePartitionStalls(t *testing.T) {
	h, root := fakeHost(t)
	write(t, root, map[string]string{"libpod-0123abcd/memory.pressure": psiText(0, 0)})
	r := newRecorder()
	p := partitionConfig()
	p.Pressure.Step, _ = config.ParseSize("100M")
	p.Pressure.Floor, _ = config.ParseSize("100M")
	c := newController(t, h, p, r)
	t0 := time.Unix(5000, 0)
	c.onMemoryPressure(t0) // 1024M usage -> 924M
	first := read(t, filepath.Join(root, "libpod-0123abcd/memory.high"))
	// 500 ms of full stall in the 2 s since: 25 %.
	write(t, root, map[string]string{"libpod-0123abcd/memory.pressure": psiText(600000, 500000)})
	c.onMemoryPressure(t0.Add(2 * time.Second))
	if got := read(t, filepath.Join(root, "libpod-0123abcd/memory.high")); got != first {
		t.Fatalf("stepped down to %s while the partition stalled (was %s)", got, first)
	}
	// The stall stopped (1 ms in 2 s): stepping goes on.
	write(t, root, map[string]string{"libpod-0123abcd/memory.pressure": psiText(601000, 501000)})
	c.onMemoryPressure(t0.Add(4 * time.Second))
	if got := read(t, filepath.Join(root, "libpod-0123abcd/memory.high")); got == first {
		t.Error("no step after the partition's stall ended")
	}
	if n := r.Count(incident.Throttle); n != 2 {
		t.Errorf("%d throttle incidents, want 2", n)
	}
}

// fakeProc is a process for the fake /proc and the partition's cgroup
// tree: its cgroup below the partition ("" = the partition's own),
// oom_score, oom_score_adj and comm.
type fakeProc struct {
	sub        string
	score, adj int
	comm       string
}

func addProcs(t *testing.T, h *Host, root string, procs map[int]fakeProc) {
	t.Helper()
	byCg := map[string]string{}
	for pid, p := range procs {
		cg := "/libpod-0123abcd" + p.sub
		write(t, h.ProcRoot, map[string]string{
			fmt.Sprintf("%d/cgroup", pid):        "0::" + cg + "\n",
			fmt.Sprintf("%d/oom_score", pid):     strconv.Itoa(p.score) + "\n",
			fmt.Sprintf("%d/oom_score_adj", pid): strconv.Itoa(p.adj) + "\n",
			fmt.Sprintf("%d/comm", pid):          p.comm + "\n",
		})
		byCg[cg] += strconv.Itoa(pid) + "\n"
	}
	for cg, pids := range byCg {
		write(t, root, map[string]string{cg[1:] + "/cgroup.procs": pids})
	}
}

func stallWindowsAt(c *Controller, t0 time.Time, from, n int) {
	for i := from; i < from+n; i++ {
		c.onStall(context.Background(), t0.Add(time.Duration(i)*time.Second))
	}
}

// TestStallKillsTheOffenderNotThePartition: a sustained stall without
// qmd's throttle kills the process the kernel would pick (largest
// oom_score), never the partition's init, and names it; the partition is
// restarted only after offenderKills kills that did not end the stall.
func TestStallKillsTheOffenderNotThePartition(t *testing.T) {
	h, root := fakeHost(t)
	nested := "/machine.slice/libpod-feedfacecafe0123456789.scope"
	// The test's own pid stands for the init (alive): the largest
	// oom_score, but never to be picked.
	addProcs(t, h, root, map[int]fakeProc{
		os.Getpid(): {score: 1500, adj: 1000, comm: "init"},
		101:         {score: 520, adj: 500, comm: "journald"},
		200:         {sub: nested, score: 900, adj: 750, comm: "hog"},
		201:         {sub: nested, score: 0, adj: -1000, comm: "unkillable"},
	})
	r := newRecorder()
	c := newController(t, h, partitionConfig(), r)
	kills := recordKills(t, c)
	t0 := time.Unix(5000, 0)
	stallWindowsAt(c, t0, 0, 2)
	if len(*kills) != 0 || r.Count(incident.Stall) != 0 {
		t.Fatal("acted on two windows")
	}
	stallWindowsAt(c, t0, 2, 1)
	if len(*kills) != 1 || (*kills)[0] != 200 {
		t.Fatalf("killed %v, want the hog 200", *kills)
	}
	inc := r.All()[len(r.All())-1]
	if inc.Type != incident.Stall || inc.Details["pid"] != "200" || inc.Details["comm"] != "hog" ||
		inc.Details["oom_score"] != "900" || inc.Details["nested_container"] != "feedfacecafe" || inc.Details["action"] != "kill-offender" {
		t.Errorf("incident %+v", inc)
	}
	if r.restartCount() != 0 {
		t.Fatal("restarted after killing the offender")
	}
	// The stall goes on: the next offender (the hog is gone), then the
	// next; after three kills the partition is restarted.
	if err := os.RemoveAll(filepath.Join(h.ProcRoot, "200")); err != nil {
		t.Fatal(err)
	}
	stallWindowsAt(c, t0, 3, 3)
	stallWindowsAt(c, t0, 6, 3)
	if len(*kills) != 3 || (*kills)[1] != 101 || (*kills)[2] != 101 {
		t.Fatalf("killed %v", *kills)
	}
	if r.restartCount() != 0 {
		t.Fatal("restarted before the third kill had a chance")
	}
	stallWindowsAt(c, t0, 9, 3)
	if r.restartCount() != 1 || len(*kills) != 3 {
		t.Fatalf("restarts %d, kills %v: want a restart after three kills", r.restartCount(), *kills)
	}
	for _, pid := range *kills {
		if pid == os.Getpid() {
			t.Fatal("killed the init")
		}
	}
}

// TestStallEndedResetsTheKillCount: kills count only while one stall
// lasts.
func TestStallEndedResetsTheKillCount(t *testing.T) {
	h, root := fakeHost(t)
	addProcs(t, h, root, map[int]fakeProc{101: {score: 520, adj: 500, comm: "app"}})
	r := newRecorder()
	c := newController(t, h, partitionConfig(), r)
	c.pid = os.Getpid()
	kills := 0
	c.kill = func(int, string) error { kills++; return nil }
	t0 := time.Unix(5000, 0)
	for round := 0; round < 5; round++ {
		// Three windows of stall, then a gap of a few seconds: a new
		// stall each time, all within offenderWindow.
		stallWindowsAt(c, t0.Add(time.Duration(round)*8*time.Second), 0, 3)
	}
	if kills != 5 || r.restartCount() != 0 {
		t.Errorf("kills %d restarts %d, want 5 kills and no restart", kills, r.restartCount())
	}
}

// TestStallUnderThrottleIsSelfMade: when qmd's throttle is active, a
// stall raises memory.high one step instead of killing or restarting.
func TestStallUnderThrottleIsSelfMade(t *testing.T) {
	h, root := fakeHost(t)
	addProcs(t, h, root, map[int]fakeProc{101: {score: 520, adj: 500, comm: "app"}})
	r := newRecorder()
	p := partitionConfig()
	p.Pressure.Step, _ = config.ParseSize("256M")
	p.Pressure.Floor, _ = config.ParseSize("256M")
	c := newController(t, h, p, r)
	c.pid = os.Getpid()
	c.kill = func(pid int, _ string) error { t.Errorf("killed %d under qmd's own throttle", pid); return nil }
	t0 := time.Unix(5000, 0)
	c.onMemoryPressure(t0)
	c.onMemoryPressure(t0.Add(2 * time.Second)) // 1024M -> 768M -> 512M (the fallback need)
	if got := read(t, filepath.Join(root, "libpod-0123abcd/memory.high")); got != strconv.Itoa(512*mib) {
		t.Fatalf("memory.high %s", got)
	}
	stallWindowsAt(c, t0.Add(3*time.Second), 0, 3)
	if got := read(t, filepath.Join(root, "libpod-0123abcd/memory.high")); got != strconv.Itoa(768*mib) {
		t.Errorf("memory.high %s after a self-made stall, want one step up (768M)", got)
	}
	stallWindowsAt(c, t0.Add(3*time.Second), 3, 3)
	if got := read(t, filepath.Join(root, "libpod-0123abcd/memory.high")); got != "max" {
		t.Errorf("memory.high %s after the second, want the configured max", got)
	}
	if r.restartCount() != 0 {
		t.Error("restarted for a self-made stall")
	}
	inc := r.All()[len(r.All())-1]
	if inc.Type != incident.Stall || inc.Details["cause"] != "throttle" {
		t.Errorf("incident %+v", inc)
	}
	r.mu.Lock()
	if last := r.conds[len(r.conds)-1]; last != "-throttled" {
		t.Errorf("conditions %v: throttled not cleared", r.conds)
	}
	r.mu.Unlock()
	// Not throttled any more: the next stall is the partition's own.
	kills := 0
	c.kill = func(int, string) error { kills++; return nil }
	stallWindowsAt(c, t0.Add(3*time.Second), 6, 3)
	if kills != 1 {
		t.Errorf("%d kills once the throttle was lifted", kills)
	}
}

// TestStallWithInitGoneAsksRestart: the last rung without an offender hunt.
func TestStallWithInitGoneAsksRestart(t *testing.T) {
	h, root := fakeHost(t)
	addProcs(t, h, root, map[int]fakeProc{101: {score: 520, adj: 500, comm: "app"}})
	r := newRecorder()
	c := newController(t, h, partitionConfig(), r)
	c.pid = 1 << 30 // gone
	c.kill = func(pid int, _ string) error { t.Errorf("killed %d", pid); return nil }
	stallWindowsAt(c, time.Unix(5000, 0), 0, 3)
	if r.restartCount() != 1 {
		t.Errorf("%d restarts, want 1", r.restartCount())
	}
}

// TestKillRefusesFakeProc: the real kill never signals a pid read from a
// fake /proc.
func TestKillRefusesFakeProc(t *testing.T) {
	h, _ := fakeHost(t)
	c := newController(t, h, partitionConfig(), newRecorder())
	if err := c.killProcess(os.Getpid(), "/libpod-0123abcd"); err == nil {
		t.Fatal("killed through a fake /proc")
	}
}

// TestCPUQuotaComposesWithTheStaticQuota: the ASIL CPU reaction lowers
// from the configured cpu.quota and restores to it, never to "max".
func TestCPUQuotaComposesWithTheStaticQuota(t *testing.T) {
	for _, tt := range []struct {
		static, pressure    string
		start, under, after string
	}{
		{"", "50%", "max 100000", "50000 100000", "max 100000"},
		{"200%", "50%", "200000 100000", "50000 100000", "200000 100000"},
		{"30%", "50%", "30000 100000", "30000 100000", "30000 100000"}, // never raised by the reaction
	} {
		t.Run(tt.static+"/"+tt.pressure, func(t *testing.T) {
			h, root := fakeHost(t)
			r := newRecorder()
			p := partitionConfig()
			p.CPU.Quota, p.Pressure.CPUQuota = tt.static, tt.pressure
			c := newController(t, h, p, r)
			cpuMax := filepath.Join(root, "libpod-0123abcd/cpu.max")
			check := func(when, want string) {
				t.Helper()
				if got := read(t, cpuMax); got != want {
					t.Errorf("%s: cpu.max %q, want %q", when, got, want)
				}
			}
			check("at start", tt.start)
			t0 := time.Unix(5000, 0)
			c.onCPUPressure(t0)
			check("under ASIL CPU pressure", tt.under)
			// Pressure goes on: a quiet period of another reaction
			// (memory, IO) is not this one's.
			c.onCPUPressure(t0.Add(50 * time.Second))
			c.onQuiet(t0.Add(time.Minute))
			check("10 s after the last CPU pressure window", tt.under)
			c.onQuiet(t0.Add(81 * time.Second))
			check("after", tt.after)
		})
	}
}

// TestThrottleWriteFailureKeepsState: a memory.high write that fails
// (systemd or cgroupfs refused it, a timeout under pressure) leaves the
// throttle where it really is, so the next confirmed window steps from
// the real limit instead of believing the failed value was set.
func TestThrottleWriteFailureKeepsState(t *testing.T) {
	h, root := fakeHost(t)
	sigs := &fakeSignals{}
	h.Pressure = sigs
	logs := observe(h)
	r := newRecorder()
	c := newController(t, h, partitionConfig(), r)
	high := filepath.Join(root, "libpod-0123abcd/memory.high")
	// A directory in its place: every write fails.
	if err := os.Remove(high); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(high, 0o755); err != nil {
		t.Fatal(err)
	}
	runController(t, c)
	sigs.send(t, protect.Signal{Kind: protect.Memory, Source: protect.HostSource, At: time.Now(), Stall: 300 * time.Millisecond})
	testutil.Eventually(t, "the failed write handled", func() bool { return logs.FilterMessage("throttle failed").Len() == 1 })
	c.mu.Lock()
	cur := c.thr.current
	c.mu.Unlock()
	if cur != infinity || r.Count(incident.Throttle) != 0 {
		t.Fatalf("after a failed write the throttle believes memory.high is %d (%d throttle incidents)", cur, r.Count(incident.Throttle))
	}
	if err := os.Remove(high); err != nil {
		t.Fatal(err)
	}
	write(t, root, map[string]string{"libpod-0123abcd/memory.high": "max\n"})
	sigs.send(t, protect.Signal{Kind: protect.Memory, Source: protect.HostSource, At: time.Now().Add(3 * time.Second), Stall: 300 * time.Millisecond})
	r.waitFor(t, "throttle", func() bool { return r.Count(incident.Throttle) == 1 })
	if got := read(t, high); got == "max" {
		t.Error("the next window did not throttle")
	}
}

// TestCPUQuotaOnlyWhereThePartitionIsACause: ASIL CPU pressure puts the
// quota on a partition that uses at least the quota, not on one that idles
// (in the e2e VM the probes stall among themselves: the old rule limited an
// idle partition one second after its start and for the whole run); a
// limited partition that keeps using half its quota holds it, one that
// stopped gets it lifted restore_after later although the pressure goes on.
func TestCPUQuotaOnlyWhereThePartitionIsACause(t *testing.T) {
	h, root := fakeHost(t)
	r := newRecorder()
	p := partitionConfig()
	p.Pressure.CPUQuota = "50%"
	c := newController(t, h, p, r)
	cpuMax := filepath.Join(root, "libpod-0123abcd/cpu.max")
	var used time.Duration
	t0 := time.Unix(5000, 0)
	at := t0
	// window: one second of ASIL CPU pressure while the partition used cpus.
	window := func(cpus float64) {
		t.Helper()
		at = at.Add(time.Second)
		used += time.Duration(cpus * float64(time.Second))
		write(t, root, map[string]string{"libpod-0123abcd/cpu.stat": fmt.Sprintf("usage_usec %d\nuser_usec 0\nsystem_usec 0\n", used.Microseconds())})
		c.onCPUPressure(at)
	}
	write(t, root, map[string]string{"libpod-0123abcd/cpu.stat": "usage_usec 0\n"})
	c.sampleCPU(t0)

	for range 5 {
		window(0.05)
	}
	if got := read(t, cpuMax); got != "max 100000" || r.Count(incident.CPUQuota) != 0 {
		t.Fatalf("idle partition under ASIL CPU pressure: cpu.max %q, %d quota incidents; want no quota", got, r.Count(incident.CPUQuota))
	}
	window(1.8)
	if got := read(t, cpuMax); got != "50000 100000" {
		t.Fatalf("partition using 1.8 CPUs under ASIL CPU pressure: cpu.max %q, want the 50%% quota", got)
	}
	for _, e := range r.All() {
		if e.Type == incident.CPUQuota && e.Details["partition_cpus"] != "1.80" {
			t.Errorf("incident details %v: want partition_cpus 1.80", e.Details)
		}
	}
	for range 40 { // pushing against the quota: held
		window(0.45)
	}
	c.onQuiet(at.Add(time.Second))
	if got := read(t, cpuMax); got != "50000 100000" {
		t.Fatalf("partition using 0.45 of its 0.5 quota: cpu.max %q, want the quota held", got)
	}
	last := at
	for range 40 { // it stopped; the ASIL pressure goes on
		window(0.01)
	}
	c.onQuiet(last.Add(29 * time.Second))
	if got := read(t, cpuMax); got != "50000 100000" {
		t.Errorf("29 s after the partition stopped: cpu.max %q, want still the quota", got)
	}
	c.onQuiet(last.Add(31 * time.Second))
	if got := read(t, cpuMax); got != "max 100000" {
		t.Errorf("31 s after the partition stopped, pressure going on: cpu.max %q, want restored", got)
	}
}

// TestCPUQuotaOffByDefault: with the default pressure.cpu_quota ("") ASIL
// CPU pressure puts no quota on a busy partition (the slice's weight is
// the answer to CPU contention).
func TestCPUQuotaOffByDefault(t *testing.T) {
	h, root := fakeHost(t)
	r := newRecorder()
	c := newController(t, h, partitionConfig(), r)
	write(t, root, map[string]string{"libpod-0123abcd/cpu.stat": "usage_usec 0\n"})
	t0 := time.Unix(5000, 0)
	c.sampleCPU(t0)
	write(t, root, map[string]string{"libpod-0123abcd/cpu.stat": "usage_usec 1900000\n"})
	c.onCPUPressure(t0.Add(time.Second))
	if got := read(t, filepath.Join(root, "libpod-0123abcd/cpu.max")); got != "max 100000" || r.Count(incident.CPUQuota) != 0 {
		t.Errorf("default config, partition at 1.9 CPUs under ASIL CPU pressure: cpu.max %q, %d quota incidents; want none", got, r.Count(incident.CPUQuota))
	}
}
