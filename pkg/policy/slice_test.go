package policy

import (
	"context"
	"fmt"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	sddbus "github.com/coreos/go-systemd/v22/dbus"

	"github.com/containers/qmd/internal/config"
	"github.com/containers/qmd/internal/testutil"
	"github.com/containers/qmd/pkg/cgroups"
	"github.com/containers/qmd/pkg/cgroups/psitest"
	"github.com/containers/qmd/pkg/protect"
	"github.com/containers/qmd/pkg/supervisor"
)

// unitProps records the properties set per unit, as systemd would get them.
type unitProps struct {
	mu  sync.Mutex
	set []string // "unit Name=value"
}

func (u *unitProps) SetUnitPropertiesContext(_ context.Context, name string, _ bool, props ...sddbus.Property) error {
	u.mu.Lock()
	defer u.mu.Unlock()
	for _, p := range props {
		u.set = append(u.set, fmt.Sprintf("%s %s=%v", name, p.Name, p.Value.Value()))
	}
	return nil
}

// seq is what was set for one property of unit, in order ("0" ...).
func (u *unitProps) seq(unit, prop string) string {
	u.mu.Lock()
	defer u.mu.Unlock()
	var out []string
	for _, s := range u.set {
		if v, ok := strings.CutPrefix(s, unit+" "+prop+"="); ok {
			out = append(out, v)
		}
	}
	return strings.Join(out, " ")
}

// lastIndex is the position of the last setting of prop on unit (-1: none).
func (u *unitProps) lastIndex(unit, prop string) int {
	u.mu.Lock()
	defer u.mu.Unlock()
	for i := len(u.set) - 1; i >= 0; i-- {
		if strings.HasPrefix(u.set[i], unit+" "+prop+"=") {
			return i
		}
	}
	return -1
}

func (u *unitProps) of(unit string) []string {
	u.mu.Lock()
	defer u.mu.Unlock()
	var out []string
	for _, s := range u.set {
		if strings.HasPrefix(s, unit+" ") {
			out = append(out, strings.TrimPrefix(s, unit+" "))
		}
	}
	sort.Strings(out)
	return out
}

// slicedHost is fakeHost with the partition's scope in the slice parent
// (systemd's cgroup manager) and a systemd that records properties.
func slicedHost(t *testing.T, parent string) (*Host, *unitProps, string) {
	t.Helper()
	h, root := fakeHost(t)
	scope := parent + "/libpod-0123abcd.scope/"
	files := map[string]string{"cgroup.controllers": "cpu memory pids io\n"}
	for _, f := range []string{"cgroup.procs", "cgroup.events", "cgroup.freeze", "memory.current", "memory.high", "memory.max",
		"memory.swap.max", "memory.events", "cpu.max", "cpu.weight", "cpu.idle", "pids.max", "pids.events"} {
		files[scope+f] = read(t, root+"/libpod-0123abcd/"+f) + "\n"
	}
	write(t, root, files)
	write(t, h.ProcRoot, map[string]string{"100/cgroup": "0::/" + scope + "container\n"})
	u := &unitProps{}
	h.Systemd, h.Booted = u, true
	var err error
	if h.Hier, err = cgroups.NewHierarchy(root); err != nil {
		t.Fatal(err)
	}
	return h, u, root
}

// TestSliceGetsThePartitionsWeights: through systemd, the partition's
// slice and scope get the lowest CPUWeight for "idle" where the slice has
// no cpu.idle (cgroup v2 before Linux 5.15), and the slice its IOWeight; a
// partition found in machine.slice (created before) leaves that shared
// slice alone.
func TestSliceGetsThePartitionsWeights(t *testing.T) {
	h, u, _ := slicedHost(t, "qm.slice")
	p := partitionConfig()
	p.Slice = "qm.slice"
	if _, err := h.New(p, supervisor.Init{ContainerID: "0123abcd", PID: 100}, newRecorder().hooks()); err != nil {
		t.Fatal(err)
	}
	if got, want := u.of("qm.slice"), []string{"CPUWeight=1", "IOWeight=50"}; strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("qm.slice got %v, want %v", got, want)
	}
	// The scope too, through systemd (which rewrites cpu.idle and
	// cpu.weight from its own view each time it applies the scope's
	// settings), and never the idle class (0 on the bus).
	if got := strings.Join(u.of("libpod-0123abcd.scope"), " "); !strings.Contains(got, "CPUWeight=1") || strings.Contains(got, "CPUWeight=0") {
		t.Errorf("scope got %v, want CPUWeight=1 through systemd", got)
	}

	p.CPU.Weight, p.IO.Weight = "20", 30
	h, u, _ = slicedHost(t, "qm.slice")
	if _, err := h.New(p, supervisor.Init{ContainerID: "0123abcd", PID: 100}, newRecorder().hooks()); err != nil {
		t.Fatal(err)
	}
	if got, want := u.of("qm.slice"), []string{"CPUWeight=20", "IOWeight=30"}; strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("numeric weights: qm.slice got %v, want %v", got, want)
	}

	h, u, _ = slicedHost(t, "machine.slice")
	if _, err := h.New(p, supervisor.Init{ContainerID: "0123abcd", PID: 100}, newRecorder().hooks()); err != nil {
		t.Fatal(err)
	}
	if got := u.of("machine.slice"); len(got) != 0 {
		t.Errorf("a partition left in machine.slice changed it: %v", got)
	}
	if got := u.of("qm.slice"); len(got) != 0 {
		t.Errorf("a slice the partition is not in was changed: %v", got)
	}
}

// TestSliceLeavesTheIdleClassWhileMemoryIsTight: with cpu.idle on the
// slice, cpu.weight "idle" is the kernel's idle class (CPUWeight=idle, 0 on
// the bus), as containers/qm's. A confirmed "some" memory pressure window
// of the partition, or the protector's memory signal, moves the slice to
// weight 1 (a reclaiming or killed process must not wait behind every host
// task); restore_after after the last sign, and not before memory.high is
// back, it is idle again. A spurious wake-up changes nothing.
func TestSliceLeavesTheIdleClassWhileMemoryIsTight(t *testing.T) {
	h, u, root := slicedHost(t, "qm.slice")
	scope := "qm.slice/libpod-0123abcd.scope/"
	write(t, root, map[string]string{"qm.slice/cpu.idle": "0\n", scope + "memory.pressure": psiText(0, 0)})
	sigs := &fakeSignals{}
	h.Pressure = sigs
	p := partitionConfig()
	p.Slice = "qm.slice"
	p.Pressure.RestoreAfter.Duration = 300 * time.Millisecond
	p.Pressure.Step, _ = config.ParseSize("100M") // from the 1G usage: two steps down
	p.Pressure.Floor, _ = config.ParseSize("100M")
	c := newController(t, h, p, newRecorder())
	if got := u.seq("qm.slice", "CPUWeight"); got != "0" {
		t.Fatalf("qm.slice CPUWeight settings %q, want the idle class (0)", got)
	}
	if got := u.seq("libpod-0123abcd.scope", "CPUWeight"); got != "1" {
		t.Errorf("scope CPUWeight settings %q, want the lowest weight 1 (never idle)", got)
	}
	ft := psitest.NewTriggers()
	c.openTrigger = ft.Open
	runController(t, c)
	pp := filepath.Join(root, scope+"memory.pressure")
	ft.WaitOpened(t, pp) // the stall trigger (full)
	ft.WaitOpened(t, pp)
	src := ft.Latest(t, pp)
	if src.Spec.Kind != cgroups.PSISome || src.Spec.Threshold != 50*time.Millisecond {
		t.Fatalf("memory trigger %+v, want some 50ms (5 %% of the 1s window)", src.Spec)
	}

	src.Fire(time.Now()) // the totals did not move: spurious
	testutil.Eventually(t, "a spurious wake-up", func() bool { return c.SpuriousWakeups() == 1 })
	if got := u.seq("qm.slice", "CPUWeight"); got != "0" {
		t.Fatalf("a spurious wake-up changed the class: %q", got)
	}

	write(t, root, map[string]string{scope + "memory.pressure": psiText(100000, 0)}) // 100 ms of some
	src.Fire(time.Now())
	testutil.Eventually(t, "weight 1 while memory is tight", func() bool { return u.seq("qm.slice", "CPUWeight") == "0 1" })
	testutil.Eventually(t, "idle again after restore_after", func() bool { return u.seq("qm.slice", "CPUWeight") == "0 1 0" })

	// ASIL memory pressure, two windows: the throttle steps memory.high
	// down twice, and the class returns only after both steps back up.
	highs := len(strings.Fields(u.seq("libpod-0123abcd.scope", "MemoryHigh")))
	now := time.Now()
	sigs.send(t, protect.Signal{Kind: protect.Memory, Source: "brakes.service", At: now.Add(-3 * time.Second), Stall: 300 * time.Millisecond})
	sigs.send(t, protect.Signal{Kind: protect.Memory, Source: "brakes.service", At: now, Stall: 300 * time.Millisecond})
	testutil.Eventually(t, "weight 1 under ASIL memory pressure", func() bool { return u.seq("qm.slice", "CPUWeight") == "0 1 0 1" })
	testutil.Eventually(t, "two throttle steps", func() bool {
		return len(strings.Fields(u.seq("libpod-0123abcd.scope", "MemoryHigh"))) >= highs+2
	})
	testutil.Eventually(t, "idle again", func() bool { return u.seq("qm.slice", "CPUWeight") == "0 1 0 1 0" })
	if got := strings.Fields(u.seq("libpod-0123abcd.scope", "MemoryHigh")); got[len(got)-1] != got[highs-1] {
		t.Errorf("memory.high settings %v: not restored to the configured %s", got, got[highs-1])
	}
	if u.lastIndex("qm.slice", "CPUWeight") < u.lastIndex("libpod-0123abcd.scope", "MemoryHigh") {
		t.Error("the slice went back to the idle class while memory.high was still lowered")
	}
}

// TestSharedSliceStaysOutOfTheIdleClassWhileAnyPartitionIsTight: two
// partitions in one slice; the slice returns to the idle class only when
// neither holds it out, and a partition started meanwhile does not put it
// back.
func TestSharedSliceStaysOutOfTheIdleClassWhileAnyPartitionIsTight(t *testing.T) {
	h, u, root := slicedHost(t, "qm.slice")
	write(t, root, map[string]string{"qm.slice/cpu.idle": "0\n"})
	start := func(name string) *Controller {
		p := partitionConfig()
		p.Name, p.Slice = name, "qm.slice"
		p.Pressure.RestoreAfter.Duration = 10 * time.Second
		return newController(t, h, p, newRecorder())
	}
	a, b := start("qa"), start("qb")
	if got := u.seq("qm.slice", "CPUWeight"); got != "0 0" {
		t.Fatalf("qm.slice CPUWeight settings %q, want the idle class from both", got)
	}
	t0 := time.Now()
	a.memoryTight(t0, "test")
	b.memoryTight(t0.Add(5*time.Second), "test")
	if got := u.seq("qm.slice", "CPUWeight"); got != "0 0 1 1" {
		t.Fatalf("qm.slice CPUWeight settings %q, want weight 1 from each", got)
	}
	start("qc") // started while the slice is held out: must not make it idle
	a.onQuiet(t0.Add(11 * time.Second))
	if got := u.seq("qm.slice", "CPUWeight"); got != "0 0 1 1" {
		t.Fatalf("qm.slice CPUWeight settings %q: idle again while qb still holds it", got)
	}
	b.onQuiet(t0.Add(16 * time.Second))
	if got := u.seq("qm.slice", "CPUWeight"); got != "0 0 1 1 0" {
		t.Fatalf("qm.slice CPUWeight settings %q, want idle once neither holds it", got)
	}
}

// TestCPUStarved reads the partition's cpu.pressure "full" total, which
// the liveness probe uses to tell a starved partition from a hung one.
func TestCPUStarved(t *testing.T) {
	h, root := fakeHost(t)
	c := newController(t, h, partitionConfig(), newRecorder())
	if _, ok := c.CPUStarved(); ok {
		t.Error("CPUStarved ok without a cpu.pressure file")
	}
	write(t, root, map[string]string{"libpod-0123abcd/cpu.pressure": psiText(9000000, 2500000)})
	if d, ok := c.CPUStarved(); !ok || d != 2500*time.Millisecond {
		t.Errorf("CPUStarved = %v, %v; want 2.5s (the full total), true", d, ok)
	}
	write(t, root, map[string]string{"libpod-0123abcd/cpu.pressure": "some avg10=0.00 avg60=0.00 avg300=0.00 total=9000000\n"})
	if _, ok := c.CPUStarved(); ok {
		t.Error("CPUStarved ok without a full line (Linux before 5.13)")
	}
}
