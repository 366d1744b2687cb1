package policy

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/containers/qmd/internal/config"
	"github.com/containers/qmd/internal/incident"
	"github.com/containers/qmd/pkg/cgroups"
	"github.com/containers/qmd/pkg/supervisor"
)

// psiText is a pressure file with the given some and full totals (µs).
func psiText(some, full uint64) string {
	return fmt.Sprintf("some avg10=0.00 avg60=0.00 avg300=0.00 total=%d\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=%d\n", some, full)
}

// fakeSource is a PSI trigger driven by the test: fire delivers a
// firing, end closes it as the kernel's POLLERR would.
type fakeSource struct {
	spec cgroups.PSITriggerSpec
	ch   chan time.Time
	once sync.Once
}

func (f *fakeSource) C() <-chan time.Time { return f.ch }
func (f *fakeSource) Registration() cgroups.PSIRegistration {
	return cgroups.PSIRegistration{Spec: f.spec}
}
func (f *fakeSource) Err() error   { return cgroups.ErrGone }
func (f *fakeSource) Close() error { return nil }
func (f *fakeSource) end()         { f.once.Do(func() { close(f.ch) }) }

// fakeTriggers opens fakeSources for pressure files that exist.
type fakeTriggers struct {
	mu      sync.Mutex
	sources map[string][]*fakeSource
	opened  chan string
}

func newFakeTriggers() *fakeTriggers {
	return &fakeTriggers{sources: map[string][]*fakeSource{}, opened: make(chan string, 100)}
}

func (f *fakeTriggers) open(spec cgroups.PSITriggerSpec) (psiSource, error) {
	if _, err := os.Stat(spec.Path); err != nil {
		return nil, fmt.Errorf("open %s: %w", spec.Path, cgroups.ErrUnsupported)
	}
	s := &fakeSource{spec: spec, ch: make(chan time.Time)}
	f.mu.Lock()
	f.sources[spec.Path] = append(f.sources[spec.Path], s)
	f.mu.Unlock()
	f.opened <- spec.Path
	return s, nil
}

// latest is the newest source opened on path.
func (f *fakeTriggers) latest(t *testing.T, path string) *fakeSource {
	t.Helper()
	f.mu.Lock()
	defer f.mu.Unlock()
	ss := f.sources[path]
	if len(ss) == 0 {
		t.Fatalf("no trigger on %s", path)
	}
	return ss[len(ss)-1]
}

func (f *fakeTriggers) waitOpened(t *testing.T, path string) {
	t.Helper()
	deadline := time.After(5 * time.Second)
	for {
		select {
		case p := <-f.opened:
			if p == path {
				return
			}
		case <-deadline:
			t.Fatalf("no trigger registered on %s", path)
		}
	}
}

// eventually polls cond (for effects of the Run loop, which runs on its
// own goroutine) without depending on how fast the machine is.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// runController starts Run and stops it at the end of the test.
func runController(t *testing.T, c *Controller) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
}

func newController(t *testing.T, h *Host, p *config.Partition, r *recorder) *Controller {
	t.Helper()
	res, err := h.New(p, supervisor.Init{ContainerID: "0123abcd", PID: 100}, r.hooks())
	if err != nil {
		t.Fatal(err)
	}
	c := res.(*Controller)
	c.kill = func(pid int, cg string) error { return fmt.Errorf("test: no kill seam set (pid %d)", pid) }
	return c
}

// TestConfirmAgainstTotals: the confirmation rule on its own.
func TestConfirmAgainstTotals(t *testing.T) {
	const ms = 1000 // µs
	t0 := time.Unix(1000, 0)
	tr := &trig{reg: cgroups.PSITriggerSpec{Kind: cgroups.PSISome, Threshold: 150 * time.Millisecond, Window: 2 * time.Second}}
	tr.add(t0, 579510) // at registration
	// The idle build host: a wake-up 1.2 s after registration while the
	// total grew 1.4 ms.
	if g, ok := tr.confirm(t0.Add(1200*time.Millisecond), 579510+1400); ok || g != 1400 {
		t.Errorf("idle wake-up confirmed: growth %d", g)
	}
	// Real pressure: 200 ms within the window.
	if g, ok := tr.confirm(t0.Add(3*time.Second), 579510+1400+200*ms); !ok || g != 200*ms+1400 {
		t.Errorf("real stall not confirmed: growth %d", g)
	}
	// A reading taken in the middle of a stall (the resync tick) must
	// not hide it: the baseline is the newest reading a window old.
	tr.add(t0.Add(30*time.Second), 800*ms)
	tr.add(t0.Add(31*time.Second), 920*ms) // 120 ms of a stall already counted here
	if g, ok := tr.confirm(t0.Add(32*time.Second), 1000*ms); !ok || g != 200*ms {
		t.Errorf("stall straddling a reading: growth %d ok %v, want 200ms from the reading at 30 s", g, ok)
	}
	// Noise does not add up beyond the readings kept: an hour later,
	// 1.4 ms more is spurious.
	if _, ok := tr.confirm(t0.Add(time.Hour), 1000*ms+1400); ok {
		t.Error("an hour of noise confirmed")
	}
	// A total that went backwards is another file.
	if _, ok := tr.confirm(t0.Add(time.Hour+3*time.Second), 10); ok {
		t.Error("a reset total confirmed")
	}
	if len(tr.samples) != 1 || tr.samples[0].total != 10 {
		t.Errorf("readings after a reset: %+v", tr.samples)
	}
	if len(tr.samples) > maxSamples {
		t.Errorf("%d readings kept", len(tr.samples))
	}
}

// TestSpuriousWakeupIsIgnored: a host memory trigger wakes up with no
// stall behind it (the pressure total did not grow by the threshold): no
// throttle, the wake-up is counted. A wake-up the totals confirm throttles.
func TestSpuriousWakeupIsIgnored(t *testing.T) {
	h, root := fakeHost(t)
	hostPSI := filepath.Join(root, "host-memory.pressure")
	write(t, root, map[string]string{"host-memory.pressure": psiText(579510, 183917)})
	h.HostPressure = hostPSI
	r := newRecorder()
	c := newController(t, h, partitionConfig(), r)
	ft := newFakeTriggers()
	c.openTrigger = ft.open
	runController(t, c)
	ft.waitOpened(t, hostPSI)
	src := ft.latest(t, hostPSI)

	write(t, root, map[string]string{"host-memory.pressure": psiText(579510+1400, 183917)})
	src.ch <- time.Now()
	eventually(t, "the spurious wake-up counted", func() bool { return c.SpuriousWakeups() == 1 })
	if got := read(t, filepath.Join(root, "libpod-0123abcd/memory.high")); got != "max" || r.Count(incident.Throttle) != 0 {
		t.Fatalf("spurious wake-up throttled: memory.high %s, %d throttle incidents", got, r.Count(incident.Throttle))
	}

	// 300 ms of stall: confirmed (threshold 150 ms).
	write(t, root, map[string]string{"host-memory.pressure": psiText(579510+1400+300000, 183917)})
	src.ch <- time.Now().Add(2 * time.Second)
	r.waitFor(t, "throttle", func() bool { return r.Count(incident.Throttle) == 1 })
	if c.SpuriousWakeups() != 1 || c.wakeups.Load() != 2 {
		t.Errorf("wake-ups %d, spurious %d; want 2, 1", c.wakeups.Load(), c.SpuriousWakeups())
	}
	if got := read(t, filepath.Join(root, "libpod-0123abcd/memory.high")); got == "max" {
		t.Error("confirmed pressure did not throttle")
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
	ft := newFakeTriggers()
	c.openTrigger = ft.open
	runController(t, c)
	ft.waitOpened(t, pp)
	src := ft.latest(t, pp)
	t0 := time.Now()
	for i := 1; i <= 5; i++ {
		// full grows 1 ms a window: far below stall_threshold (800 ms).
		write(t, root, map[string]string{"libpod-0123abcd/memory.pressure": psiText(uint64(i)*2000, uint64(i)*1000)})
		src.ch <- t0.Add(time.Duration(i) * time.Second)
	}
	eventually(t, "five spurious stall wake-ups", func() bool { return c.SpuriousWakeups() == 5 })
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.Count(incident.Stall) != 0 || len(r.restarts) != 0 {
		t.Errorf("acted on unconfirmed stall windows: %d stall incidents, restarts %v", r.Count(incident.Stall), r.restarts)
	}
}

func observe(h *Host) *observer.ObservedLogs {
	core, logs := observer.New(zapcore.DebugLevel)
	h.Log = zap.New(core)
	return logs
}

func countLogs(logs *observer.ObservedLogs, msg string) int {
	return logs.FilterMessage(msg).Len()
}

const (
	msgTriggerEnded   = "pressure trigger ended (the watched cgroup or file went away); re-arming when it is back"
	msgTriggerRearmed = "pressure trigger re-armed"
)

// TestClosedTriggerDoesNotSpin: a protected unit restarts, its cgroup
// goes away and its PSI triggers end (real cgroups.PSITrigger on fake
// files, removed). The policy must not see firings from the closed
// triggers (issue 9: the loop spun at ~90 % CPU and throttled without
// cause), must report the end once, and must re-arm the triggers when
// the unit's cgroup is back at the same path.
func TestClosedTriggerDoesNotSpin(t *testing.T) {
	h, root := fakeHost(t)
	logs := observe(h)
	unit := filepath.Join(root, "asil.slice/brakes.service")
	files := map[string]string{"asil.slice/brakes.service/memory.pressure": psiText(0, 0),
		"asil.slice/brakes.service/cpu.pressure": psiText(0, 0)}
	write(t, root, files)
	h.Protected = []config.Protect{{Cgroup: "/asil.slice/brakes.service", WatchPressure: true}}
	r := newRecorder()
	c := newController(t, h, partitionConfig(), r)
	c.rearmMin = 10 * time.Millisecond
	armed := make(chan string, 100)
	c.openTrigger = func(spec cgroups.PSITriggerSpec) (psiSource, error) {
		src, err := openPSITrigger(spec) // the real one, on the fake files
		if err == nil {
			armed <- spec.Path
		}
		return src, err
	}
	runController(t, c)
	for i := 0; i < 2; i++ {
		select {
		case <-armed:
		case <-time.After(5 * time.Second):
			t.Fatal("the ASIL triggers were not armed")
		}
	}

	var before syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &before)
	if err := os.RemoveAll(unit); err != nil {
		t.Fatal(err)
	}
	eventually(t, "both triggers reported ended", func() bool { return countLogs(logs, msgTriggerEnded) == 2 })
	time.Sleep(200 * time.Millisecond)
	var after syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &after)
	cpu := time.Duration(after.Utime.Nano()+after.Stime.Nano()-before.Utime.Nano()-before.Stime.Nano()) * time.Nanosecond
	t.Logf("process CPU time in the 200 ms after the unit's cgroup went away: %v", cpu)
	if n := c.wakeups.Load(); n != 0 {
		t.Errorf("%d trigger wake-ups after the triggers ended, want 0", n)
	}
	if n := countLogs(logs, msgTriggerEnded); n != 2 {
		t.Errorf("end reported %d times, want once per trigger", n)
	}
	if r.Count(incident.Throttle) != 0 || r.Count(incident.CPUQuota) != 0 {
		t.Error("reacted to a closed trigger")
	}
	// Retries while the cgroup is missing stay quiet (debug only) and
	// back off.
	if n := countLogs(logs, msgTriggerRearmed); n != 0 {
		t.Fatalf("re-armed on a missing file")
	}
	write(t, root, files) // the unit is back, same cgroup path
	eventually(t, "both triggers re-armed", func() bool { return countLogs(logs, msgTriggerRearmed) == 2 })
	// And the re-armed triggers end again when the unit goes again.
	if err := os.RemoveAll(unit); err != nil {
		t.Fatal(err)
	}
	eventually(t, "ended again", func() bool { return countLogs(logs, msgTriggerEnded) == 4 })
	if n := c.wakeups.Load(); n != 0 {
		t.Errorf("%d wake-ups", n)
	}
}

// TestRearmedTriggerFires: with fake triggers, an ended ASIL trigger is
// re-armed with backoff and the new arm's firings work; late events of the
// old arm are ignored.
func TestRearmedTriggerFires(t *testing.T) {
	h, root := fakeHost(t)
	memP := filepath.Join(root, "asil.slice/brakes.service/memory.pressure")
	write(t, root, map[string]string{"asil.slice/brakes.service/memory.pressure": psiText(0, 0),
		"asil.slice/brakes.service/cpu.pressure": psiText(0, 0)})
	h.Protected = []config.Protect{{Cgroup: "/asil.slice/brakes.service", WatchPressure: true}}
	r := newRecorder()
	c := newController(t, h, partitionConfig(), r)
	c.rearmMin = 10 * time.Millisecond
	ft := newFakeTriggers()
	c.openTrigger = ft.open
	runController(t, c)
	ft.waitOpened(t, memP)
	old := ft.latest(t, memP)
	old.end() // POLLERR: the unit restarted
	ft.waitOpened(t, memP)
	nw := ft.latest(t, memP)
	if nw == old {
		t.Fatal("not re-armed")
	}
	if c.wakeups.Load() != 0 {
		t.Errorf("the end of a trigger counted as %d wake-ups", c.wakeups.Load())
	}
	// A wake-up with nothing behind it first: once it is counted, the
	// new arm's baseline reading is certainly taken.
	nw.ch <- time.Now()
	eventually(t, "the first wake-up of the new arm", func() bool { return c.SpuriousWakeups() == 1 })
	write(t, root, map[string]string{"asil.slice/brakes.service/memory.pressure": psiText(400000, 0)})
	nw.ch <- time.Now().Add(3 * time.Second)
	r.waitFor(t, "throttle from the re-armed trigger", func() bool { return r.Count(incident.Throttle) == 1 })
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

func (r *recorder) restartCount() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.restarts)
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
	c.pid = os.Getpid()
	var killed []int
	c.kill = func(pid int, cg string) error {
		if cg != "/libpod-0123abcd" {
			t.Errorf("kill scoped to %s", cg)
		}
		killed = append(killed, pid)
		return nil
	}
	t0 := time.Unix(5000, 0)
	stallWindowsAt(c, t0, 0, 2)
	if len(killed) != 0 || r.Count(incident.Stall) != 0 {
		t.Fatal("acted on two windows")
	}
	stallWindowsAt(c, t0, 2, 1)
	if len(killed) != 1 || killed[0] != 200 {
		t.Fatalf("killed %v, want the hog 200", killed)
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
	if len(killed) != 3 || killed[1] != 101 || killed[2] != 101 {
		t.Fatalf("killed %v", killed)
	}
	if r.restartCount() != 0 {
		t.Fatal("restarted before the third kill had a chance")
	}
	stallWindowsAt(c, t0, 9, 3)
	if r.restartCount() != 1 || len(killed) != 3 {
		t.Fatalf("restarts %d, kills %v: want a restart after three kills", r.restartCount(), killed)
	}
	for _, pid := range killed {
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
			c.onQuiet(t0.Add(time.Minute))
			check("after", tt.after)
		})
	}
}
