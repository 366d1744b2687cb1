package policy

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"sync"
	"testing"

	sddbus "github.com/coreos/go-systemd/v22/dbus"

	"github.com/containers/qmd/pkg/cgroups"
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
func slicedHost(t *testing.T, parent string) (*Host, *unitProps) {
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
	return h, u
}

// TestSliceGetsThePartitionsWeights: through systemd, the partition's
// slice and scope get the lowest CPUWeight for "idle" (not the idle
// class) and the slice its IOWeight; a
// partition found in machine.slice (created before) leaves that shared
// slice alone.
func TestSliceGetsThePartitionsWeights(t *testing.T) {
	h, u := slicedHost(t, "qm.slice")
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
	h, u = slicedHost(t, "qm.slice")
	if _, err := h.New(p, supervisor.Init{ContainerID: "0123abcd", PID: 100}, newRecorder().hooks()); err != nil {
		t.Fatal(err)
	}
	if got, want := u.of("qm.slice"), []string{"CPUWeight=20", "IOWeight=30"}; strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("numeric weights: qm.slice got %v, want %v", got, want)
	}

	h, u = slicedHost(t, "machine.slice")
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
