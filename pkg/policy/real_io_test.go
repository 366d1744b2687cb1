package policy

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/containers/qmd/internal/incident"
	"github.com/containers/qmd/internal/testutil"
	"github.com/containers/qmd/pkg/cgroups"
	"github.com/containers/qmd/pkg/protect"
	"github.com/containers/qmd/pkg/supervisor"
)

// ioRealPartition is a fake partition on this host's real cgroup v1
// hierarchy (memory, pids, cpu, freezer and blkio: libpod-<id> with a
// sleeping init) and a loop device (direct IO to its backing file). It
// skips where blkio throttling is missing, unless QMD_INTEGRATION is set
// on a v1 host.
type ioRealPartition struct {
	hier      *cgroups.Hierarchy
	id, blkio string // container ID; the partition's blkio directory
	node, dev string // loop device node and MAJ:MIN
	initPID   int
}

func newIORealPartition(t *testing.T) *ioRealPartition {
	t.Helper()
	requireReal(t)
	testutil.RequireBinaries(t, "losetup", "dd")
	if _, err := os.Stat("/sys/fs/cgroup/blkio/blkio.throttle.write_bps_device"); err != nil {
		if testutil.Integration() && !ioFileExists("/sys/fs/cgroup/cgroup.controllers") {
			t.Fatalf("no v1 blkio throttling on this host: %v", err)
		}
		t.Skip("no cgroup v1 blkio throttling (cgroup v2 hosts: the fake-tree tests and the e2e VM)")
	}
	hier, err := cgroups.NewHierarchy("")
	if err != nil || hier.Version != cgroups.V1 {
		t.Skipf("hierarchy %v %v", hier, err)
	}
	node, ma, mi := testutil.LoopDevice(t, 64<<20, true)
	dev := fmt.Sprintf("%d:%d", ma, mi)

	id := randomID(t)
	name := "/libpod-" + id
	var dirs []string
	for _, ctrl := range []string{"memory", "pids", "cpu", "freezer", "blkio"} {
		d := filepath.Join(hier.Root, ctrl, name)
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
		dirs = append(dirs, d)
		t.Cleanup(func() { testutil.RemoveCgroup(t, d) })
	}
	init := exec.Command("sleep", "60")
	startCmd(t, init)
	for _, d := range dirs {
		if err := os.WriteFile(filepath.Join(d, "cgroup.procs"), []byte(strconv.Itoa(init.Process.Pid)), 0); err != nil {
			t.Fatal(err)
		}
	}
	blkio := filepath.Join(hier.Root, "blkio", name)

	return &ioRealPartition{hier: hier, id: id, blkio: blkio, node: node, dev: dev, initPID: init.Process.Pid}
}

// TestRealV1IOReaction: the whole IO policy of a controller on this
// host's real cgroup v1 hierarchy (blkio with throttling) and a real loop
// device: the weight and the configured write_bps are applied at start,
// one IO pressure step halves the limit and an O_DIRECT writer in the
// partition gets the lowered rate, and the quiet period restores the
// configured limit exactly.
func TestRealV1IOReaction(t *testing.T) {
	x := newIORealPartition(t)
	h := &Host{Hier: x.hier, ProcRoot: "/proc", MemTotal: 8 << 30, PidMax: 4194304, Resync: time.Hour, Log: zap.NewNop()}
	r := newRecorder()
	// The node path, as an operator writes it (resolved through stat).
	p := ioPartition(t, fmt.Sprintf("[partition.io]\nweight = 50\nstep = \"50%%\"\nfloor = \"1M\"\nrestore_after = \"30s\"\n"+
		"[[partition.io.device]]\npath = %q\nwrite_bps = \"8M\"\n", x.node))
	res, err := h.New(p, supervisor.Init{ContainerID: x.id, PID: x.initPID}, r.hooks())
	if err != nil {
		t.Fatal(err)
	}
	c := res.(*Controller)
	if all := r.All(); len(all) != 0 {
		t.Logf("incidents at start: %+v", all)
	}
	if got := read(t, filepath.Join(x.blkio, "blkio.throttle.write_bps_device")); got != x.dev+" 8388608" {
		t.Fatalf("write_bps at start: %q, want %s 8388608", got, x.dev)
	}
	if got := read(t, filepath.Join(x.blkio, "blkio.bfq.weight")); got != "50" {
		t.Errorf("blkio.bfq.weight %q, want 50", got)
	}

	t0 := time.Now()
	c.onIOPressure(t0, "")
	if got := read(t, filepath.Join(x.blkio, "blkio.throttle.write_bps_device")); got != x.dev+" 4194304" {
		t.Fatalf("write_bps after one IO pressure step: %q, want %s 4194304", got, x.dev)
	}
	// 8 MiB at 4 MiB/s: about 2 s (the throttle lets a short burst through).
	script := fmt.Sprintf("echo $$ > %s && exec dd if=/dev/zero of=%s bs=256k count=32 oflag=direct status=none",
		filepath.Join(x.blkio, "cgroup.procs"), x.node)
	start := time.Now()
	if out, err := exec.Command("sh", "-c", script).CombinedOutput(); err != nil {
		t.Fatalf("dd: %v: %s", err, out)
	}
	rate := float64(8<<20) / time.Since(start).Seconds()
	t.Logf("write_bps lowered 8M -> 4M by IO pressure: O_DIRECT writer got %.2f MiB/s", rate/(1<<20))
	if rate > 1.5*(4<<20) {
		t.Errorf("the lowered limit is not enforced: %.0f B/s", rate)
	}
	if r.Count(incident.IOThrottle) != 1 {
		t.Errorf("io-throttle incidents: %v", r.All())
	}

	for now := t0.Add(31 * time.Second); c.onQuiet(now); now = now.Add(31 * time.Second) {
	}
	if got := read(t, filepath.Join(x.blkio, "blkio.throttle.write_bps_device")); got != x.dev+" 8388608" {
		t.Errorf("write_bps after the quiet period: %q, want the configured %s 8388608", got, x.dev)
	}
}

func ioFileExists(p string) bool { _, err := os.Stat(p); return err == nil }

// TestRealASILIOPressureChain: the whole chain with real kernel parts. A
// protected cgroup on this host's cgroup2 mount (/sys/fs/cgroup/unified,
// which has per-cgroup PSI) runs a writer doing small O_DIRECT+O_DSYNC
// writes to the loop device: its tasks wait on IO, so its io.pressure
// grows. A real PSI trigger (unprivileged: 2 s window) on it wakes the
// controller, the wake-up is confirmed against the io.pressure totals, and
// the partition (v1 blkio, an O_DIRECT writer doing IO on the same loop
// device) gets its configured write_bps lowered one step.
func TestRealASILIOPressureChain(t *testing.T) {
	x := newIORealPartition(t)
	unified := "/sys/fs/cgroup/unified"
	if _, err := os.Stat(filepath.Join(unified, "cgroup.procs")); err != nil {
		t.Skip("no cgroup2 mount at /sys/fs/cgroup/unified")
	}
	asilName := x.id + "-asil"
	asil := filepath.Join(unified, asilName)
	if err := os.Mkdir(asil, 0o755); err != nil {
		t.Skipf("cannot create a cgroup2 cgroup: %v", err)
	}
	t.Cleanup(func() { testutil.RemoveCgroup(t, asil) })
	if _, err := os.Stat(filepath.Join(asil, "io.pressure")); err != nil {
		t.Skip("no per-cgroup io.pressure")
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	// The partition's hog: writes (at most its configured 64M/s) to the
	// first half of the loop device until the test ends.
	hog := exec.CommandContext(ctx, "sh", "-c", fmt.Sprintf(
		"echo $$ > %s && while :; do dd if=/dev/zero of=%s bs=1M count=32 oflag=direct status=none; done",
		filepath.Join(x.blkio, "cgroup.procs"), x.node))
	startCmd(t, hog)
	// The ASIL stand-in: 4 KiB synchronous writes, each waited for.
	probe := exec.CommandContext(ctx, "sh", "-c", fmt.Sprintf(
		"echo $$ > %s && while :; do dd if=/dev/zero of=%s bs=4k count=200 seek=12000 oflag=direct,dsync status=none; done",
		filepath.Join(asil, "cgroup.procs"), x.node))
	startCmd(t, probe)

	// Protect.Cgroup is relative to the hierarchy root qmd watches (the
	// v1 root here): the unified mount is below it.
	h := &Host{Hier: x.hier, ProcRoot: "/proc", MemTotal: 8 << 30, PidMax: 4194304, Resync: time.Hour}
	logs := observe(h)
	prot := ioRealProtector(t, unified, "/"+asilName)
	h.Pressure = prot
	r := newRecorder()
	p := ioPartition(t, fmt.Sprintf("[partition.pressure]\nhost_memory = false\nstall_action = \"none\"\n"+
		"[partition.io]\nthreshold = \"100ms\"\nstep = \"50%%\"\nfloor = \"1M\"\n"+
		"[[partition.io.device]]\npath = %q\nwrite_bps = \"64M\"\n", x.dev))
	res, err := h.New(p, supervisor.Init{ContainerID: x.id, PID: x.initPID}, r.hooks())
	if err != nil {
		t.Fatal(err)
	}
	c := res.(*Controller)
	start := time.Now()
	runController(t, c)
	waitIOThrottle(t, r, prot, asil, logs)
	took := time.Since(start)
	got := read(t, filepath.Join(x.blkio, "blkio.throttle.write_bps_device"))
	t.Logf("io-throttle %.1f s after start (wake-ups %d, spurious %d): write_bps %q; ASIL io.pressure %s",
		took.Seconds(), prot.Stats().Wakeups, prot.Stats().Spurious, got, firstLine(asil, "io.pressure"))
	f := strings.Fields(got)
	if len(f) != 2 || f[0] != x.dev {
		t.Fatalf("write_bps %q", got)
	}
	if v, err := strconv.ParseUint(f[1], 10, 64); err != nil || v >= 64<<20 || v < 1<<20 {
		t.Errorf("write_bps %q: want one step below the configured 64M, not below the 1M floor", got)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	// The probe's CPU pressure may put a CPU quota on the partition too
	// (2 cores, both writers busy): only io-limited is this test's.
	if !slices.Contains(r.conds, "+io-limited") {
		t.Errorf("conditions %v", r.conds)
	}
}

// TestRealV2ASILIOPressureChain is the chain on a cgroup v2 host with the
// io controller (production, a VM; skipped on the hybrid build host): the
// partition and a protected cgroup are siblings under the root, the
// protected writer's io.pressure fires a real PSI trigger, and the
// partition's io.max wbps is lowered one step from the configured 64M.
// QMD_IO_TEST_DEV names the disk both write to (else a loop device).
func TestRealV2ASILIOPressureChain(t *testing.T) {
	requireReal(t)
	hier, err := cgroups.NewHierarchy("")
	if err != nil || hier.Version != cgroups.V2 {
		t.Skip("the root hierarchy is not cgroup v2 (v1 hosts: TestRealASILIOPressureChain)")
	}
	if b, err := os.ReadFile(filepath.Join(hier.Root, "cgroup.controllers")); err != nil || !strings.Contains(" "+string(b)+" ", " io ") {
		t.Skip("no io controller")
	}
	if err := os.WriteFile(filepath.Join(hier.Root, "cgroup.subtree_control"), []byte("+io"), 0); err != nil {
		t.Fatal(err)
	}
	node, ma, mi := testutil.IOTestDevice(t, 64<<20, true)
	dev := fmt.Sprintf("%d:%d", ma, mi)
	id := randomID(t)
	part := filepath.Join(hier.Root, "libpod-"+id)
	asil := filepath.Join(hier.Root, id+"-asil")
	for _, d := range []string{part, asil} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { testutil.RemoveCgroup(t, d) })
	}
	init := exec.Command("sleep", "60")
	startCmd(t, init)
	if err := os.WriteFile(filepath.Join(part, "cgroup.procs"), []byte(strconv.Itoa(init.Process.Pid)), 0); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	startCmd(t, exec.CommandContext(ctx, "sh", "-c", fmt.Sprintf(
		"echo $$ > %s && while :; do dd if=/dev/zero of=%s bs=1M count=32 oflag=direct 2>/dev/null; done",
		filepath.Join(part, "cgroup.procs"), node)))
	startCmd(t, exec.CommandContext(ctx, "sh", "-c", fmt.Sprintf(
		"echo $$ > %s && while :; do dd if=/dev/zero of=%s bs=4k count=200 seek=12000 oflag=direct conv=fsync 2>/dev/null; done",
		filepath.Join(asil, "cgroup.procs"), node)))

	h := &Host{Hier: hier, ProcRoot: "/proc", MemTotal: 8 << 30, PidMax: 4194304, Resync: time.Hour}
	logs := observe(h)
	prot := ioRealProtector(t, hier.Root, "/"+id+"-asil")
	h.Pressure = prot
	r := newRecorder()
	p := ioPartition(t, fmt.Sprintf("[partition.pressure]\nhost_memory = false\nstall_action = \"none\"\n"+
		"[partition.io]\nthreshold = \"100ms\"\nstep = \"50%%\"\nfloor = \"1M\"\n"+
		"[[partition.io.device]]\npath = %q\nwrite_bps = \"64M\"\n", node))
	res, err := h.New(p, supervisor.Init{ContainerID: id, PID: init.Process.Pid}, r.hooks())
	if err != nil {
		t.Fatal(err)
	}
	c := res.(*Controller)
	if got := read(t, filepath.Join(part, "io.max")); got != dev+" rbps=max wbps=67108864 riops=max wiops=max" {
		t.Errorf("io.max at start: %q", got)
	}
	if got := read(t, filepath.Join(part, "io.weight")); got != "default 50" {
		t.Errorf("io.weight at start: %q", got)
	}
	start := time.Now()
	runController(t, c)
	waitIOThrottle(t, r, prot, asil, logs)
	got := read(t, filepath.Join(part, "io.max"))
	t.Logf("io-throttle %.1f s after start (wake-ups %d, spurious %d): io.max %q; ASIL io.pressure %s",
		time.Since(start).Seconds(), prot.Stats().Wakeups, prot.Stats().Spurious, got, firstLine(asil, "io.pressure"))
	var wbps uint64
	if _, err := fmt.Sscanf(got, dev+" rbps=max wbps=%d riops=max wiops=max", &wbps); err != nil || wbps >= 64<<20 || wbps < 1<<20 {
		t.Errorf("io.max %q: want wbps one step below the configured 64M, not below the 1M floor", got)
	}
}

// waitIOThrottle waits up to 30 s for the controller's io-throttle
// incident; without it the test fails with the ASIL cgroup's io.pressure,
// the protector's wake-up counts and the logs.
func waitIOThrottle(t *testing.T, r *recorder, prot *protect.Protector, asil string, logs *observer.ObservedLogs) {
	t.Helper()
	deadline := time.After(30 * time.Second)
	for r.Count(incident.IOThrottle) == 0 {
		select {
		case <-r.changed:
		case <-time.After(100 * time.Millisecond):
		case <-deadline:
			b, _ := os.ReadFile(filepath.Join(asil, "io.pressure"))
			t.Fatalf("no io-throttle within 30 s; ASIL io.pressure:\n%s\nwake-ups %d, spurious %d; logs: %v",
				b, prot.Stats().Wakeups, prot.Stats().Spurious, logs.All())
		}
	}
}

// firstLine is the first line of dir/name ("" when unreadable), for logs.
func firstLine(dir, name string) string {
	b, _ := os.ReadFile(filepath.Join(dir, name))
	return strings.SplitN(string(b), "\n", 2)[0]
}

// ioRealProtector runs the real host-level protector (pkg/protect) on the
// cgroup2 mount psiRoot, watching the protected cgroup rel (relative to
// psiRoot) with the 2 s window unprivileged triggers need: the ASIL io
// pressure reaches the controller the way it does in qmd.
func ioRealProtector(t *testing.T, psiRoot, rel string) *protect.Protector {
	t.Helper()
	cfg := protect.Config{Entries: []protect.Entry{{Cgroup: rel, OOMScoreAdj: -900, WatchPressure: true}},
		Window: 2 * time.Second, MemoryThreshold: 150 * time.Millisecond, CPUThreshold: 200 * time.Millisecond,
		IOThreshold: 100 * time.Millisecond, Resync: time.Hour}
	p, err := protect.New(protect.Options{PSIRoot: psiRoot}, cfg)
	if err != nil {
		t.Fatal(err)
	}
	testutil.RunInBackground(t, p.Run)
	return p
}
