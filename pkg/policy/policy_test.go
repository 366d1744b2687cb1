package policy

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/containers/qmd/internal/config"
	"github.com/containers/qmd/internal/incident"
	"github.com/containers/qmd/internal/incident/incidenttest"
	"github.com/containers/qmd/pkg/cgroups"
	"github.com/containers/qmd/pkg/supervisor"
)

// recorder collects what the policy reports: incidents (through the
// shared test sink) and the supervisor hooks.
type recorder struct {
	incidenttest.Recorder
	mu       sync.Mutex
	restarts []string
	conds    []string // "+throttled", "-throttled", ...
	ooms     int
	changed  chan struct{}
}

func newRecorder() *recorder {
	r := &recorder{changed: make(chan struct{}, 100)}
	r.OnRecord = func(incident.Incident) { r.poke() }
	return r
}

func (r *recorder) poke() {
	select {
	case r.changed <- struct{}{}:
	default:
	}
}

func (r *recorder) hooks() supervisor.Hooks {
	return supervisor.Hooks{
		Sink:    &r.Recorder,
		OOMKill: func(n int) { r.mu.Lock(); r.ooms += n; r.mu.Unlock(); r.poke() },
		Restart: func(why string) { r.mu.Lock(); r.restarts = append(r.restarts, why); r.mu.Unlock(); r.poke() },
		Condition: func(c supervisor.Condition, on bool, _ string) {
			r.mu.Lock()
			sign := "-"
			if on {
				sign = "+"
			}
			r.conds = append(r.conds, sign+string(c))
			r.mu.Unlock()
			r.poke()
		},
	}
}

func (r *recorder) waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.After(5 * time.Second)
	for !cond() {
		select {
		case <-r.changed:
		case <-deadline:
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

func write(t testing.TB, root string, files map[string]string) {
	t.Helper()
	for name, content := range files {
		p := filepath.Join(root, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// fakeHost builds a cgroup v2 tree with the partition at /qm (init pid
// 100) and a /proc with that process.
func fakeHost(t testing.TB) (*Host, string) {
	t.Helper()
	root, proc := t.TempDir(), t.TempDir()
	write(t, root, map[string]string{
		"cgroup.controllers":              "cpu memory pids\n",
		"libpod-0123abcd/cgroup.procs":    "100\n",
		"libpod-0123abcd/cgroup.events":   "populated 1\nfrozen 0\n",
		"libpod-0123abcd/cgroup.freeze":   "0\n",
		"libpod-0123abcd/memory.current":  "1073741824\n",
		"libpod-0123abcd/memory.high":     "max\n",
		"libpod-0123abcd/memory.max":      "max\n",
		"libpod-0123abcd/memory.swap.max": "max\n",
		"libpod-0123abcd/memory.events":   "low 0\nhigh 0\nmax 0\noom 0\noom_kill 0\noom_group_kill 0\n",
		"libpod-0123abcd/cpu.max":         "max 100000\n",
		"libpod-0123abcd/cpu.weight":      "100\n",
		"libpod-0123abcd/cpu.idle":        "0\n",
		"libpod-0123abcd/pids.max":        "max\n",
		"libpod-0123abcd/pids.events":     "max 0\n",
	})
	write(t, proc, map[string]string{
		"100/cgroup":        "0::/libpod-0123abcd\n",
		"100/oom_score_adj": "500\n",
		"100/comm":          "init\n",
	})
	hier, err := cgroups.NewHierarchy(root)
	if err != nil {
		t.Fatal(err)
	}
	return &Host{Hier: hier, ProcRoot: proc, MemTotal: 8 << 30, PidMax: 4194304, Resync: time.Hour,
		Log: zap.NewNop()}, root
}

func partitionConfig() *config.Partition {
	p := config.DefaultPartition("qm")
	p.Memory.Max, _ = config.ParseSize("4G")
	return &p
}

func read(t testing.TB, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

func TestLimitsAppliedAtStart(t *testing.T) {
	h, root := fakeHost(t)
	r := newRecorder()
	if _, err := h.New(partitionConfig(), supervisor.Init{ContainerID: "0123abcd", PID: 100}, r.hooks()); err != nil {
		t.Fatal(err)
	}
	if got := read(t, filepath.Join(root, "libpod-0123abcd/memory.max")); got != "4294967296" {
		t.Errorf("memory.max = %s", got)
	}
	if got := read(t, filepath.Join(root, "libpod-0123abcd/memory.swap.max")); got != "0" {
		t.Errorf("memory.swap.max = %s", got)
	}
	if got := read(t, filepath.Join(root, "libpod-0123abcd/cpu.weight")); got != "1" {
		t.Errorf("cpu.weight = %s, want the lowest weight for cpu.weight \"idle\"", got)
	}
	if got := read(t, filepath.Join(root, "libpod-0123abcd/cpu.idle")); got != "0" {
		t.Errorf("cpu.idle = %s, want 0: never the kernel's idle class", got)
	}
	if got := read(t, filepath.Join(root, "libpod-0123abcd/pids.max")); got != "2097152" {
		t.Errorf("pids.max = %s, want 50%% of pid_max", got)
	}
}

func TestDryRunAppliesNothing(t *testing.T) {
	h, root := fakeHost(t)
	h.DryRun = true
	r := newRecorder()
	c, err := h.New(partitionConfig(), supervisor.Init{ContainerID: "0123abcd", PID: 100}, r.hooks())
	if err != nil {
		t.Fatal(err)
	}
	if got := read(t, filepath.Join(root, "libpod-0123abcd/memory.max")); got != "max" {
		t.Errorf("dry run wrote memory.max = %s", got)
	}
	c.(*Controller).onMemoryPressure(time.Now())
	if got := read(t, filepath.Join(root, "libpod-0123abcd/memory.high")); got != "max" {
		t.Errorf("dry run throttled: memory.high = %s", got)
	}
	if r.Count(incident.Throttle) != 1 {
		t.Error("dry run must still report what it would do")
	}
}

func TestOOMKillAndForkBombReactions(t *testing.T) {
	h, root := fakeHost(t)
	r := newRecorder()
	p := partitionConfig()
	p.Pids.ForkBombRestarts = 2
	res, err := h.New(p, supervisor.Init{ContainerID: "0123abcd", PID: 100}, r.hooks())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- res.Run(ctx) }()
	defer func() { cancel(); <-done }()
	time.Sleep(100 * time.Millisecond) // watcher baseline read

	write(t, root, map[string]string{"libpod-0123abcd/memory.events": "low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\noom_group_kill 0\n"})
	r.waitFor(t, "oom-kill incident", func() bool { return r.Count(incident.OOMKill) == 1 })
	r.mu.Lock()
	if r.ooms != 1 {
		t.Errorf("OOMKill hook count %d", r.ooms)
	}
	r.mu.Unlock()

	write(t, root, map[string]string{"libpod-0123abcd/pids.events": "max 1\n"})
	r.waitFor(t, "first fork-bomb incident", func() bool { return r.Count(incident.ForkBomb) == 1 })
	r.mu.Lock()
	if len(r.restarts) != 0 {
		t.Error("restarted after one pids.max event")
	}
	r.mu.Unlock()
	write(t, root, map[string]string{"libpod-0123abcd/pids.events": "max 2\n"})
	r.waitFor(t, "restart after the second", func() bool { r.mu.Lock(); defer r.mu.Unlock(); return len(r.restarts) == 1 })
}

func TestPressureThrottlesAndRestores(t *testing.T) {
	h, root := fakeHost(t)
	r := newRecorder()
	p := partitionConfig()
	p.Pressure.Step, _ = config.ParseSize("256M")
	p.Pressure.Floor, _ = config.ParseSize("512M")
	res, err := h.New(p, supervisor.Init{ContainerID: "0123abcd", PID: 100}, r.hooks())
	if err != nil {
		t.Fatal(err)
	}
	c := res.(*Controller)
	t0 := time.Now()
	c.onMemoryPressure(t0)
	if got := read(t, filepath.Join(root, "libpod-0123abcd/memory.high")); got != "805306368" { // 1G usage - 256M
		t.Fatalf("memory.high after pressure = %s", got)
	}
	r.mu.Lock()
	if len(r.conds) != 1 || r.conds[0] != "+throttled" {
		t.Errorf("conditions %v, want +throttled", r.conds)
	}
	r.mu.Unlock()
	c.onMemoryPressure(t0.Add(time.Second))
	c.onMemoryPressure(t0.Add(2 * time.Second))
	if got := read(t, filepath.Join(root, "libpod-0123abcd/memory.high")); got != "536870912" {
		t.Fatalf("memory.high must stop at the floor 512M, got %s", got)
	}
	if more := c.onQuiet(t0.Add(10 * time.Second)); !more {
		t.Fatal("restored before restore_after")
	}
	for now := t0.Add(40 * time.Second); ; now = now.Add(40 * time.Second) {
		if !c.onQuiet(now) {
			break
		}
	}
	if got := read(t, filepath.Join(root, "libpod-0123abcd/memory.high")); got != "max" {
		t.Errorf("memory.high after restore = %s, want max", got)
	}
	if r.Count(incident.Unthrottle) == 0 {
		t.Error("no unthrottle incident")
	}
}

func TestSetMemoryHighRejectsAboveMax(t *testing.T) {
	h, root := fakeHost(t)
	res, err := h.New(partitionConfig(), supervisor.Init{ContainerID: "0123abcd", PID: 100}, newRecorder().hooks())
	if err != nil {
		t.Fatal(err)
	}
	if err := res.SetMemoryHigh(8 << 30); err == nil {
		t.Error("memory.high above memory.max accepted")
	}
	if err := res.SetMemoryHigh(1 << 30); err != nil {
		t.Fatal(err)
	}
	if got := read(t, filepath.Join(root, "libpod-0123abcd/memory.high")); got != "1073741824" {
		t.Errorf("memory.high = %s", got)
	}
	if err := res.SetMemoryHigh(infinity); err != nil {
		t.Errorf("infinity refused: %v", err)
	}
}

func TestParseOOMLine(t *testing.T) {
	v, ok := parseOOMLine("6,1234,974624178,-;oom-kill:constraint=CONSTRAINT_MEMCG,nodemask=(null),cpuset=/,mems_allowed=0,oom_memcg=/qm,task_memcg=/qm/machine.slice/libpod-0123456789abcdef.scope,task=hog,pid=28290,uid=0")
	if !ok || v.PID != 28290 || v.Comm != "hog" || v.OOMMemcg != "/qm" {
		t.Fatalf("%+v %v", v, ok)
	}
	if id := nestedContainer(v.TaskMemcg, "/qm"); id != "0123456789ab" {
		t.Errorf("nested container = %q", id)
	}
	for _, bad := range []string{"", "oom-kill:", "oom-kill:pid=x", "hello", "oom-kill:pid=-1,task=a"} {
		if _, ok := parseOOMLine(bad); ok {
			t.Errorf("parsed %q", bad)
		}
	}
}

func FuzzParseOOMLine(f *testing.F) {
	f.Add("6,1,2,-;oom-kill:constraint=CONSTRAINT_MEMCG,oom_memcg=/a,task_memcg=/a/b,task=x,pid=3,uid=0")
	f.Fuzz(func(t *testing.T, s string) {
		v, ok := parseOOMLine(s)
		if ok && v.PID <= 0 {
			t.Fatalf("accepted pid %d", v.PID)
		}
		_ = nestedContainer(v.TaskMemcg, "/a")
	})
}

// BenchmarkPressureToMemoryHigh: from a pressure notification to memory.high
// written (fake cgroup v2 file; the kernel's own trigger latency is not in it).
func BenchmarkPressureToMemoryHigh(b *testing.B) {
	h, _ := fakeHost(b)
	p := partitionConfig()
	p.Pressure.Step, _ = config.ParseSize("1M")
	p.Pressure.Floor, _ = config.ParseSize("1M")
	res, err := h.New(p, supervisor.Init{ContainerID: "0123abcd", PID: 100}, newRecorder().hooks())
	if err != nil {
		b.Fatal(err)
	}
	c := res.(*Controller)
	var worst time.Duration
	now := time.Now()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if i%900 == 0 {
			c.thr.reconfigure(infinity)
			c.thr.current = infinity
		}
		start := time.Now()
		c.onMemoryPressure(now.Add(time.Duration(i) * time.Second))
		if d := time.Since(start); d > worst {
			worst = d
		}
	}
	b.ReportMetric(float64(worst.Microseconds())/1000, "max-ms")
}

// A pid that is not in the container's cgroup (reused by a host process
// after the init died) must never get the policy: it would raise every
// host process's oom_score_adj and limit the host's memory.
func TestRefusesForeignCgroup(t *testing.T) {
	h, _ := fakeHost(t)
	write(t, h.ProcRoot, map[string]string{"200/cgroup": "0::/\n", "300/cgroup": "0::/system.slice/brakes.service\n",
		"500/cgroup": "0::/machine.slice/libpod-0123abcdef.scope\n"})
	for _, pid := range []int{200, 300, 500} {
		if _, err := h.New(partitionConfig(), supervisor.Init{ContainerID: "0123abcd", PID: pid}, newRecorder().hooks()); err == nil {
			t.Errorf("pid %d outside the container accepted", pid)
		}
	}
	if _, err := h.New(partitionConfig(), supervisor.Init{PID: 100}, newRecorder().hooks()); err == nil {
		t.Error("no container ID accepted")
	}
}

// Systemd mode on cgroup v2: the init runs in libpod-<id>.scope/container;
// the policy applies to the scope.
func TestSystemdModeUsesTheScope(t *testing.T) {
	h, root := fakeHost(t)
	write(t, root, map[string]string{
		"libpod-0123abcd/container/init.scope/cgroup.procs": "400\n",
		"libpod-0123abcd/container/memory.max":              "max\n",
	})
	// The partition's systemd moved itself into container/init.scope.
	write(t, h.ProcRoot, map[string]string{"400/cgroup": "0::/libpod-0123abcd/container/init.scope\n"})
	res, err := h.New(partitionConfig(), supervisor.Init{ContainerID: "0123abcd", PID: 400}, newRecorder().hooks())
	if err != nil {
		t.Fatal(err)
	}
	if got := res.Usage().CgroupPath; got != "/libpod-0123abcd" {
		t.Errorf("policy cgroup %s, want the scope", got)
	}
	if got := read(t, filepath.Join(root, "libpod-0123abcd/memory.max")); got != "4294967296" {
		t.Errorf("scope memory.max = %s", got)
	}
	if got := read(t, filepath.Join(root, "libpod-0123abcd/container/memory.max")); got != "max" {
		t.Errorf("limit written to the init's child cgroup: %s", got)
	}
}

// A single full-pressure window is no stall: qmd acts only when it lasts
// stallWindows consecutive windows. Here the partition has no process but
// its init (fake /proc without oom_score), so the ladder ends in a restart;
// with the init gone, a restart is asked without a stall incident (the
// supervisor's exit path knows better).
func TestStallNeedsSustainedPressure(t *testing.T) {
	h, _ := fakeHost(t)
	r := newRecorder()
	p := partitionConfig()
	p.Pressure.StallAction = "restart"
	res, err := h.New(p, supervisor.Init{ContainerID: "0123abcd", PID: 100}, r.hooks())
	if err != nil {
		t.Fatal(err)
	}
	c := res.(*Controller)
	c.pid = os.Getpid() // an init that is alive
	t0 := time.Now()
	c.onStall(context.Background(), t0)
	c.onStall(context.Background(), t0.Add(5*time.Second)) // not consecutive
	c.onStall(context.Background(), t0.Add(6*time.Second))
	if r.Count(incident.Stall) != 0 {
		t.Fatal("acted on a short stall")
	}
	c.onStall(context.Background(), t0.Add(7*time.Second))
	if r.Count(incident.Stall) != 1 {
		t.Fatal("no stall incident after three consecutive windows")
	}
	r.mu.Lock()
	if len(r.restarts) != 1 {
		t.Errorf("restarts %v", r.restarts)
	}
	r.mu.Unlock()
	if inc := r.All()[len(r.All())-1]; inc.Details["action"] != "restart" {
		t.Errorf("incident %+v, want the restart rung (no offender)", inc)
	}
	c.pid = 1 << 30 // gone
	for i := 0; i < 3; i++ {
		c.onStall(context.Background(), t0.Add(time.Duration(10+i)*time.Second))
	}
	if r.Count(incident.Stall) != 1 {
		t.Error("a partition whose init is gone was reported stalled")
	}
	r.mu.Lock()
	if len(r.restarts) != 2 {
		t.Errorf("restarts %v, want one more for the init gone", r.restarts)
	}
	r.mu.Unlock()
}
