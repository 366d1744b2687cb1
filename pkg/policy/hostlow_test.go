package policy

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/containers/qmd/internal/config"
	"github.com/containers/qmd/internal/incident"
)

// hostLowHost is the fake host with a partition holding an init (this
// test's pid), a small journald and a 3 GiB hog in a nested container;
// the host's MemAvailable is what avail holds. MemTotal is 8 GiB, so the
// default reserve (10 %) is 819 MiB.
func hostLowHost(t *testing.T, avail *atomic.Uint64) (*Host, string) {
	t.Helper()
	h, root := fakeHost(t)
	nested := "/libpod-feedfacecafe0123456789.scope"
	procs := map[int]fakeProc{
		os.Getpid(): {score: 1500, adj: 1000, comm: "init"},
		101:         {score: 700, adj: 500, comm: "journald"},
		200:         {sub: nested, score: 1400, adj: 750, comm: "hog"},
	}
	addProcs(t, h, root, procs)
	for pid, kb := range map[int]int{os.Getpid(): 500 << 10, 101: 10 << 10, 200: 3 << 20} {
		write(t, h.ProcRoot, map[string]string{fmt.Sprintf("%d/status", pid): fmt.Sprintf("VmRSS:\t%d kB\nVmSwap:\t0 kB\n", kb)})
	}
	h.MemAvailable = func() (uint64, error) { return avail.Load(), nil }
	return h, root
}

// partitionUses sets the partition's memory.current (fakeHost: 1 GiB; no
// memory.stat, so that is its working set).
func partitionUses(t *testing.T, root string, bytes uint64) {
	t.Helper()
	write(t, root, map[string]string{"libpod-0123abcd/memory.current": strconv.FormatUint(bytes, 10) + "\n"})
}

// TestHostLowKillsTheOffenderInsteadOfThrottling: a confirmed memory
// pressure window while the host is below its reserve kills the process
// the kernel would pick (not the init, not the small one), names it with
// the host's numbers, and does not touch memory.high; one kill per
// window; a partition with nothing worth killing is left to the kernel;
// once the host has memory again, pressure throttles as before.
func TestHostLowKillsTheOffenderInsteadOfThrottling(t *testing.T) {
	var avail atomic.Uint64
	avail.Store(300 << 20)
	h, root := hostLowHost(t, &avail)
	r := newRecorder()
	c := newController(t, h, partitionConfig(), r)
	kills := recordKills(t, c)
	partitionUses(t, root, 4<<30) // the hog grew
	t0 := time.Unix(5000, 0)
	c.onMemoryPressure(t0)
	if killed := *kills; len(killed) != 1 || killed[0] != 200 {
		t.Fatalf("killed %v, want the hog 200", killed)
	}
	if got := read(t, filepath.Join(root, "libpod-0123abcd/memory.high")); got != "max" {
		t.Errorf("memory.high %s: throttled although the host was below its reserve", got)
	}
	inc := r.All()[len(r.All())-1]
	if inc.Type != incident.HostMemoryLow || inc.Details["pid"] != "200" || inc.Details["comm"] != "hog" ||
		inc.Details["nested_container"] != "feedfacecafe" || inc.Details["footprint"] != strconv.Itoa(3<<30) ||
		inc.Details["mem_available"] != strconv.Itoa(300<<20) || inc.Details["host_reserve"] != strconv.FormatUint((8<<30)/10, 10) {
		t.Errorf("incident %+v", inc)
	}
	// The same window again (another trigger for the same shortage).
	c.onMemoryPressure(t0.Add(300 * time.Millisecond))
	if len(*kills) != 1 {
		t.Fatalf("killed %v: more than one kill per window", *kills)
	}
	// The hog is gone; the host is still short, but journald's 10 MiB
	// would give it nothing: no kill; the throttle reclaims instead.
	if err := os.RemoveAll(filepath.Join(h.ProcRoot, "200")); err != nil {
		t.Fatal(err)
	}
	c.onMemoryPressure(t0.Add(2 * time.Second))
	if len(*kills) != 1 || r.Count(incident.Throttle) != 1 {
		t.Fatalf("killed %v, %d throttles: journald is not worth killing, want the throttle", *kills, r.Count(incident.Throttle))
	}
	if r.restartCount() != 0 || r.Count(incident.HostMemoryLow) != 1 {
		t.Errorf("restarts %d, host-memory-low %d", r.restartCount(), r.Count(incident.HostMemoryLow))
	}
}

// TestHostLowLeavesAHostHogToTheKernel: when a process outside the
// partition outweighs the partition's largest (a leak on the host), the
// kernel would kill that one: qmd kills nothing in the partition, throttles
// it, and a stall under that throttle still raises memory.high.
func TestHostLowLeavesAHostHogToTheKernel(t *testing.T) {
	var avail atomic.Uint64
	avail.Store(300 << 20)
	h, root := hostLowHost(t, &avail)
	write(t, h.ProcRoot, map[string]string{
		"300/cgroup": "0::/system.slice/leak.service\n", "300/oom_score": "1500\n",
		"300/oom_score_adj": "0\n", "300/comm": "leak\n",
	})
	r := newRecorder()
	c := newController(t, h, steppedConfig("256M"), r)
	c.pid = os.Getpid()
	c.kill = func(pid int, _ string) error {
		t.Errorf("killed %d: the kernel would kill the host's leak", pid)
		return nil
	}
	t0 := time.Unix(5000, 0)
	c.onMemoryPressure(t0)
	if got := read(t, filepath.Join(root, "libpod-0123abcd/memory.high")); got != strconv.Itoa(768*mib) || r.Count(incident.Throttle) != 1 {
		t.Fatalf("memory.high %s, %d throttles: want one step down", got, r.Count(incident.Throttle))
	}
	stallWindowsAt(c, t0.Add(3*time.Second), 0, 3)
	if got := read(t, filepath.Join(root, "libpod-0123abcd/memory.high")); got != "max" {
		t.Errorf("memory.high %s after a self-made stall, want it raised", got)
	}
}

// TestHostLowOff: host_reserve = "0", or a MemAvailable that cannot be
// read, never kills: the throttle answers as before.
func TestHostLowOff(t *testing.T) {
	for name, setup := range map[string]func(*Host, *config.Partition){
		"reserve 0": func(_ *Host, p *config.Partition) { p.Pressure.HostReserve, _ = config.ParseSize("0") },
		"unreadable": func(h *Host, _ *config.Partition) {
			h.MemAvailable = func() (uint64, error) { return 0, errors.New("no /proc/meminfo") }
		},
		"unknown": func(h *Host, _ *config.Partition) { h.MemAvailable = nil },
	} {
		t.Run(name, func(t *testing.T) {
			var avail atomic.Uint64
			avail.Store(10 << 20)
			h, _ := hostLowHost(t, &avail)
			p := partitionConfig()
			setup(h, p)
			r := newRecorder()
			c := newController(t, h, p, r)
			c.pid = os.Getpid()
			c.kill = func(pid int, _ string) error { t.Errorf("killed %d", pid); return nil }
			c.onMemoryPressure(time.Unix(5000, 0))
			if r.Count(incident.Throttle) != 1 || r.Count(incident.HostMemoryLow) != 0 {
				t.Errorf("%d throttles, %d host-memory-low: want the throttle", r.Count(incident.Throttle), r.Count(incident.HostMemoryLow))
			}
		})
	}
}

// TestStallUnderThrottleWhileHostLow: a stall under qmd's own throttle
// normally raises memory.high; with the host below its reserve that would
// hand the partition the host's last memory, so the offender is killed and
// memory.high stays.
func TestStallUnderThrottleWhileHostLow(t *testing.T) {
	var avail atomic.Uint64
	avail.Store(4 << 30)
	h, root := hostLowHost(t, &avail)
	r := newRecorder()
	c := newController(t, h, steppedConfig("256M"), r)
	kills := recordKills(t, c)
	t0 := time.Unix(5000, 0)
	c.onMemoryPressure(t0)        // the host has memory: throttled, 1024M -> 768M
	partitionUses(t, root, 2<<30) // the hog grows on under the throttle
	high := read(t, filepath.Join(root, "libpod-0123abcd/memory.high"))
	if high != strconv.Itoa(768*mib) {
		t.Fatalf("memory.high %s", high)
	}
	avail.Store(100 << 20)
	stallWindowsAt(c, t0.Add(3*time.Second), 0, 3)
	if got := read(t, filepath.Join(root, "libpod-0123abcd/memory.high")); got != high {
		t.Errorf("memory.high raised to %s while the host was below its reserve", got)
	}
	if killed := *kills; len(killed) != 1 || killed[0] != 200 || r.restartCount() != 0 {
		t.Errorf("killed %v, restarts %d: want the hog killed, no restart", killed, r.restartCount())
	}
}

// TestHostLowLeavesAStaticPartitionToTheKernel: the host is below its
// reserve under pressure, but the partition only holds what it had (the
// host's own demand rose): no kill, the throttle answers; the plain setup
// keeps that process too unless the shortage becomes an OOM. Once the
// partition grows again (by 1 % of the host's memory), it is the cause.
func TestHostLowLeavesAStaticPartitionToTheKernel(t *testing.T) {
	var avail atomic.Uint64
	avail.Store(300 << 20)
	h, root := hostLowHost(t, &avail)
	partitionUses(t, root, 4<<30)
	r := newRecorder()
	c := newController(t, h, steppedConfig("256M"), r)
	kills := recordKills(t, c)
	t0 := time.Now()
	for i := 0; i < 5; i++ {
		c.onMemoryPressure(t0.Add(time.Duration(i) * 2 * time.Second))
	}
	if len(*kills) != 0 || r.Count(incident.Throttle) == 0 {
		t.Fatalf("killed %v, %d throttles: a partition that does not grow is left to the kernel, want the throttle", *kills, r.Count(incident.Throttle))
	}
	// 60 MiB more (below 1 % of 8 GiB): still not the cause.
	partitionUses(t, root, 4<<30+60<<20)
	c.onMemoryPressure(t0.Add(12 * time.Second))
	if len(*kills) != 0 {
		t.Fatalf("killed %v after 60 MiB of growth", *kills)
	}
	partitionUses(t, root, 4<<30+200<<20)
	c.onMemoryPressure(t0.Add(14 * time.Second))
	if killed := *kills; len(killed) != 1 || killed[0] != 200 {
		t.Fatalf("killed %v after the partition grew by 200 MiB, want the hog 200", killed)
	}
	// Growth is judged within a window: the samples of long ago do not
	// count (a partition that grew an hour ago and holds is static now).
	c.mu.Lock()
	n := len(c.memSamples)
	c.mu.Unlock()
	c.sampleMem(t0.Add(3 * time.Hour))
	c.mu.Lock()
	defer c.mu.Unlock()
	if n == 0 || len(c.memSamples) != 1 {
		t.Errorf("%d samples before, %d after 3 h: want the old ones dropped", n, len(c.memSamples))
	}
}
