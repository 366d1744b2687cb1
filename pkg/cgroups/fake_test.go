package cgroups

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/containers/qmd/internal/testutil"
)

func readFile(t testing.TB, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// fakeV2 builds a cgroup v2 tree with the partition at /qm.
func fakeV2(t testing.TB) (*Hierarchy, *Cgroup) {
	t.Helper()
	root := t.TempDir()
	testutil.WriteTree(t, root, map[string]string{
		"cgroup.controllers":     "cpu memory pids\n",
		"qm/cgroup.procs":        "100\n",
		"qm/cgroup.events":       "populated 1\nfrozen 0\n",
		"qm/cgroup.freeze":       "0\n",
		"qm/memory.current":      "1048576\n",
		"qm/memory.high":         "max\n",
		"qm/memory.max":          "max\n",
		"qm/memory.swap.max":     "0\n",
		"qm/memory.stat":         "anon 4096\nfile 8192\n",
		"qm/memory.events":       "low 0\nhigh 0\nmax 0\noom 0\noom_kill 0\noom_group_kill 0\n",
		"qm/memory.events.local": "low 0\nhigh 0\nmax 0\noom 0\noom_kill 0\noom_group_kill 0\n",
		"qm/memory.pressure":     "some avg10=0.00 avg60=0.00 avg300=0.00 total=0\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=0\n",
		"qm/cpu.max":             "max 100000\n",
		"qm/cpu.weight":          "100\n",
		"qm/cpu.stat":            "usage_usec 2500000\nuser_usec 2000000\nsystem_usec 500000\n",
		"qm/pids.max":            "max\n",
		"qm/pids.current":        "1\n",
		"qm/pids.events":         "max 0\n",
		"qm/machine.slice/libpod-abc.scope/cgroup.procs": "200\n201\n",
		"qm/init.scope/cgroup.procs":                     "101\n",
	})
	return openQM(t, root)
}

// openQM opens the hierarchy at root and its /qm cgroup.
func openQM(t testing.TB, root string) (*Hierarchy, *Cgroup) {
	t.Helper()
	h, err := NewHierarchy(root)
	if err != nil {
		t.Fatal(err)
	}
	cg, err := h.Open("/qm")
	if err != nil {
		t.Fatal(err)
	}
	return h, cg
}

// fakeV1 builds a cgroup v1 tree with the partition at /qm in every controller.
func fakeV1(t testing.TB) (*Hierarchy, *Cgroup) {
	t.Helper()
	root := t.TempDir()
	testutil.WriteTree(t, root, map[string]string{
		"memory/cgroup.event_control":           "",
		"memory/qm/cgroup.procs":                "100\n",
		"memory/qm/cgroup.event_control":        "",
		"memory/qm/memory.limit_in_bytes":       "9223372036854771712\n",
		"memory/qm/memory.soft_limit_in_bytes":  "9223372036854771712\n",
		"memory/qm/memory.usage_in_bytes":       "2097152\n",
		"memory/qm/memory.memsw.limit_in_bytes": "9223372036854771712\n",
		"memory/qm/memory.oom_control":          "oom_kill_disable 0\nunder_oom 0\noom_kill 0\n",
		"memory/qm/memory.stat":                 "cache 0\nrss 4096\n",
		"memory/qm/child/cgroup.procs":          "300\n",
		"pids/qm/cgroup.procs":                  "100\n",
		"pids/qm/pids.max":                      "max\n",
		"pids/qm/pids.events":                   "max 0\n",
		"freezer/qm/cgroup.procs":               "100\n",
		"freezer/qm/freezer.state":              "THAWED\n",
		"cpu/qm/cgroup.procs":                   "100\n",
		"cpu/qm/cpu.cfs_quota_us":               "-1\n",
		"cpu/qm/cpu.cfs_period_us":              "100000\n",
		"cpu/qm/cpu.shares":                     "1024\n",
		"cpu/qm/cpu.idle":                       "0\n",
		"cpuacct/qm/cpuacct.usage":              "3500000000\n",
	})
	return openQM(t, root)
}

func TestDetect(t *testing.T) {
	h2, _ := fakeV2(t)
	if h2.Version != V2 {
		t.Errorf("fake v2 detected as %v", h2.Version)
	}
	h1, _ := fakeV1(t)
	if h1.Version != V1 {
		t.Errorf("fake v1 detected as %v", h1.Version)
	}
	if _, err := Detect(t.TempDir()); !errors.Is(err, ErrUnsupported) {
		t.Errorf("empty dir: %v", err)
	}
	if _, err := Detect(filepath.Join(t.TempDir(), "missing")); err == nil {
		t.Error("missing root accepted")
	}
	if fileExists(DefaultRoot) {
		v, err := Detect(DefaultRoot)
		if err != nil {
			t.Fatalf("real %s: %v", DefaultRoot, err)
		}
		t.Logf("this host: cgroup %v", v)
	}
}

func TestOpenRejectsUncleanPath(t *testing.T) {
	h, _ := fakeV2(t)
	for _, p := range []string{"/qm/../etc", "/a//b", "/a/./b"} {
		if _, err := h.Open(p); err == nil {
			t.Errorf("Open(%q) accepted", p)
		}
	}
	cg, err := h.Open("qm")
	if err != nil || cg.Path() != "/qm" {
		t.Errorf("Open(qm) = %v, %v", cg, err)
	}
}

func TestForPID(t *testing.T) {
	proc := t.TempDir()
	testutil.WriteTree(t, proc, map[string]string{
		"10/cgroup": "0::/machine.slice/libpod-abc.scope\n",
		"11/cgroup": "12:pids:/qm\n6:freezer:/qm-f\n4:memory:/qm\n2:cpu,cpuacct:/qm-c\n1:name=systemd:/x\n0::/\n",
		"12/cgroup": "garbage\n",
		"13/cgroup": "1:name=systemd:/\n",
	})
	h2, _ := fakeV2(t)
	cg, err := h2.ForPID(proc, 10)
	if err != nil || cg.Path() != "/machine.slice/libpod-abc.scope" {
		t.Fatalf("v2: %v %v", cg, err)
	}
	h1, _ := fakeV1(t)
	cg, err = h1.ForPID(proc, 11)
	if err != nil {
		t.Fatal(err)
	}
	if cg.Path() != "/qm" || cg.ControllerPath("freezer") != "/qm-f" || cg.ControllerPath("cpu") != "/qm-c" {
		t.Errorf("v1 paths: %s %v", cg.Path(), cg.v1)
	}
	if got := cg.Dir("freezer"); got != filepath.Join(h1.Root, "freezer", "qm-f") {
		t.Errorf("freezer dir %s", got)
	}
	if _, err := h1.ForPID(proc, 12); !errors.Is(err, ErrMalformed) || !strings.Contains(err.Error(), "12/cgroup") {
		t.Errorf("garbage: %v", err)
	}
	if _, err := h1.ForPID(proc, 13); err == nil || !strings.Contains(err.Error(), "no v1 memory") {
		t.Errorf("no memory line: %v", err)
	}
	if _, err := h2.ForPID(proc, 13); err == nil || !strings.Contains(err.Error(), "no v2") {
		t.Errorf("no v2 line: %v", err)
	}
	if _, err := h2.ForPID(proc, 99); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("missing pid: %v", err)
	}
	// The real thing: our own process.
	if h, err := NewHierarchy(""); err == nil {
		if cg, err := h.ForPID("", os.Getpid()); err != nil {
			t.Errorf("own cgroup: %v", err)
		} else {
			t.Logf("own cgroup (%v): %s", h.Version, cg.Path())
		}
	}
}

func TestV2ReadWrite(t *testing.T) {
	_, cg := fakeV2(t)
	dir := cg.Dir("")
	if v, err := cg.MemoryCurrent(); err != nil || v != 1<<20 {
		t.Errorf("MemoryCurrent = %d %v", v, err)
	}
	for _, tt := range []struct {
		name string
		set  func(uint64) error
		get  func() (uint64, error)
		file string
	}{
		{"high", cg.SetMemoryHigh, cg.MemoryHigh, "memory.high"},
		{"max", cg.SetMemoryMax, cg.MemoryMax, "memory.max"},
		{"swap", cg.SetMemorySwapMax, cg.MemorySwapMax, "memory.swap.max"},
		{"pids", cg.SetPidsMax, cg.PidsMax, "pids.max"},
	} {
		if v, err := tt.get(); err != nil || (v != Max && v != 0) {
			t.Errorf("%s initial = %d %v", tt.name, v, err)
		}
		if err := tt.set(300 << 20); err != nil {
			t.Fatal(err)
		}
		if got := readFile(t, filepath.Join(dir, tt.file)); got != "314572800" {
			t.Errorf("%s file = %q", tt.name, got)
		}
		if v, _ := tt.get(); v != 300<<20 {
			t.Errorf("%s read back %d", tt.name, v)
		}
		if err := tt.set(Max); err != nil {
			t.Fatal(err)
		}
		if got := readFile(t, filepath.Join(dir, tt.file)); got != "max" {
			t.Errorf("%s file = %q, want max", tt.name, got)
		}
	}
	if err := cg.SetCPUMax(CPUMax{Quota: 50000, Period: 100000}); err != nil {
		t.Fatal(err)
	}
	if m, err := cg.CPUMax(); err != nil || m != (CPUMax{50000, 100000}) {
		t.Errorf("CPUMax = %v %v", m, err)
	}
	if err := cg.SetCPUMax(CPUMax{Quota: Max}); err != nil || readFile(t, filepath.Join(dir, "cpu.max")) != "max" {
		t.Errorf("SetCPUMax(Max): %v", err)
	}
	if err := cg.SetCPUWeight(1); err != nil {
		t.Fatal(err)
	}
	if w, err := cg.CPUWeight(); err != nil || w != 1 {
		t.Errorf("CPUWeight = %d %v", w, err)
	}
	if err := cg.SetCPUWeight(0); err == nil {
		t.Error("weight 0 accepted")
	}
	if err := cg.SetCPUIdle(true); !errors.Is(err, ErrUnsupported) {
		t.Errorf("cpu.idle missing: %v", err)
	}
	st, err := cg.MemoryStat()
	if err != nil || st["anon"] != 4096 {
		t.Errorf("MemoryStat = %v %v", st, err)
	}
	if ev, err := cg.MemoryEvents(true); err != nil || ev != (MemoryEvents{}) {
		t.Errorf("MemoryEvents(local) = %+v %v", ev, err)
	}
	if _, err := cg.MemorySoftLimit(); !errors.Is(err, ErrUnsupported) {
		t.Errorf("soft limit on v2: %v", err)
	}
	if _, err := cg.OOMControl(); !errors.Is(err, ErrUnsupported) {
		t.Errorf("oom_control on v2: %v", err)
	}
	if s, err := cg.State(); err != nil || s != (State{Populated: true}) {
		t.Errorf("State = %+v %v", s, err)
	}
	if n, err := cg.PidsEvents(); err != nil || n != 0 {
		t.Errorf("PidsEvents = %d %v", n, err)
	}
}

func TestV2Errors(t *testing.T) {
	_, cg := fakeV2(t)
	dir := cg.Dir("")
	testutil.WriteTree(t, dir, map[string]string{"memory.max": "lots\n", "memory.events": "oom\n"})
	if _, err := cg.MemoryMax(); !errors.Is(err, ErrMalformed) || !strings.Contains(err.Error(), filepath.Join(dir, "memory.max")) {
		t.Errorf("malformed memory.max: %v", err)
	}
	if _, err := cg.MemoryEvents(false); !errors.Is(err, ErrMalformed) || !strings.Contains(err.Error(), "memory.events") {
		t.Errorf("malformed memory.events: %v", err)
	}
	os.Remove(filepath.Join(dir, "memory.high"))
	if _, err := cg.MemoryHigh(); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("missing memory.high: %v", err)
	}
	if err := cg.SetMemoryHigh(1); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("write to missing memory.high: %v", err)
	}
	if fileExists(filepath.Join(dir, "memory.high")) {
		t.Error("SetMemoryHigh created a file")
	}
}

func TestV1ReadWrite(t *testing.T) {
	h, cg := fakeV1(t)
	mem := cg.Dir("memory")
	if v, err := cg.MemoryMax(); err != nil || v != Max {
		t.Errorf("MemoryMax = %d %v", v, err)
	}
	if err := cg.SetMemoryMax(64 << 20); err != nil {
		t.Fatal(err)
	}
	if got := readFile(t, filepath.Join(mem, "memory.limit_in_bytes")); got != "67108864" {
		t.Errorf("limit file %q", got)
	}
	if err := cg.SetMemorySwapMax(0); err != nil {
		t.Fatal(err)
	}
	if got := readFile(t, filepath.Join(mem, "memory.memsw.limit_in_bytes")); got != "67108864" {
		t.Errorf("memsw file %q", got)
	}
	if v, err := cg.MemorySwapMax(); err != nil || v != 0 {
		t.Errorf("MemorySwapMax = %d %v", v, err)
	}
	if err := cg.SetMemoryMax(Max); err != nil || readFile(t, filepath.Join(mem, "memory.limit_in_bytes")) != "-1" {
		t.Errorf("SetMemoryMax(Max): %v", err)
	}
	_, err := cg.MemoryHigh()
	if !errors.Is(err, ErrUnsupported) || !strings.Contains(err.Error(), "memory.high on cgroup v1") {
		t.Errorf("MemoryHigh on v1: %v", err)
	}
	if err := cg.SetMemoryHigh(1); !errors.Is(err, ErrUnsupported) {
		t.Errorf("SetMemoryHigh on v1: %v", err)
	}
	if _, err := cg.MemoryEvents(true); !errors.Is(err, ErrUnsupported) {
		t.Errorf("events.local on v1: %v", err)
	}
	if err := cg.SetMemorySoftLimit(32 << 20); err != nil {
		t.Fatal(err)
	}
	if v, err := cg.MemorySoftLimit(); err != nil || v != 32<<20 {
		t.Errorf("soft = %d %v", v, err)
	}
	if v, err := cg.MemoryCurrent(); err != nil || v != 2<<20 {
		t.Errorf("usage = %d %v", v, err)
	}
	testutil.WriteTree(t, mem, map[string]string{"memory.oom_control": "oom_kill_disable 0\nunder_oom 0\noom_kill 3\n"})
	if ev, err := cg.MemoryEvents(false); err != nil || ev.OOMKill != 3 {
		t.Errorf("MemoryEvents v1 = %+v %v", ev, err)
	}
	// CPU.
	if m, err := cg.CPUMax(); err != nil || m != (CPUMax{Max, 100000}) {
		t.Errorf("CPUMax = %v %v", m, err)
	}
	if err := cg.SetCPUMax(CPUMax{Quota: 20000, Period: 50000}); err != nil {
		t.Fatal(err)
	}
	if m, err := cg.CPUMax(); err != nil || m != (CPUMax{20000, 50000}) {
		t.Errorf("CPUMax = %v %v", m, err)
	}
	if err := cg.SetCPUMax(CPUMax{Quota: Max}); err != nil || readFile(t, filepath.Join(cg.Dir("cpu"), "cpu.cfs_quota_us")) != "-1" {
		t.Errorf("SetCPUMax(Max): %v", err)
	}
	if w, err := cg.CPUWeight(); err != nil || w != 39 {
		t.Errorf("weight from 1024 shares = %d %v", w, err)
	}
	if err := cg.SetCPUWeight(100); err != nil || readFile(t, filepath.Join(cg.Dir("cpu"), "cpu.shares")) != "2597" {
		t.Errorf("SetCPUWeight: %v", err)
	}
	if err := cg.SetCPUIdle(true); err != nil || readFile(t, filepath.Join(cg.Dir("cpu"), "cpu.idle")) != "1" {
		t.Errorf("SetCPUIdle: %v", err)
	}
	testutil.WriteTree(t, cg.Dir("cpu"), map[string]string{"cpu.cfs_quota_us": "0\n"})
	if _, err := cg.CPUMax(); !errors.Is(err, ErrMalformed) {
		t.Errorf("quota 0: %v", err)
	}
	// Pids.
	if err := cg.SetPidsMax(512); err != nil || readFile(t, filepath.Join(cg.Dir("pids"), "pids.max")) != "512" {
		t.Errorf("SetPidsMax: %v", err)
	}
	// State and processes.
	st, err := cg.State()
	if err != nil || st != (State{Populated: true}) {
		t.Errorf("State = %+v %v", st, err)
	}
	procs, err := cg.Processes()
	if err != nil {
		t.Fatal(err)
	}
	want := []Process{{100, "/qm"}, {300, "/qm/child"}}
	if len(procs) != 2 || procs[0] != want[0] || procs[1] != want[1] {
		t.Errorf("Processes = %v", procs)
	}
	if p, err := h.Processes("/qm/child"); err != nil || len(p) != 1 {
		t.Errorf("h.Processes = %v %v", p, err)
	}
	// No swap accounting.
	os.Remove(filepath.Join(mem, "memory.memsw.limit_in_bytes"))
	if _, err := cg.MemorySwapMax(); !errors.Is(err, ErrUnsupported) {
		t.Errorf("no memsw: %v", err)
	}
	if err := cg.SetMemorySwapMax(0); !errors.Is(err, ErrUnsupported) {
		t.Errorf("no memsw set: %v", err)
	}
}

func TestProcessesRecursiveV2(t *testing.T) {
	_, cg := fakeV2(t)
	procs, err := cg.Processes()
	if err != nil {
		t.Fatal(err)
	}
	got := map[int]string{}
	for _, p := range procs {
		got[p.PID] = p.Path
	}
	want := map[int]string{100: "/qm", 101: "/qm/init.scope", 200: "/qm/machine.slice/libpod-abc.scope", 201: "/qm/machine.slice/libpod-abc.scope"}
	if len(got) != len(want) {
		t.Fatalf("got %v", got)
	}
	for pid, p := range want {
		if got[pid] != p {
			t.Errorf("pid %d in %q, want %q", pid, got[pid], p)
		}
	}
	pids, err := cg.PIDs()
	if err != nil || len(pids) != 1 || pids[0] != 100 {
		t.Errorf("PIDs = %v %v", pids, err)
	}
	// Malformed cgroup.procs names the file.
	testutil.WriteTree(t, cg.Dir(""), map[string]string{"init.scope/cgroup.procs": "x\n"})
	if _, err := cg.Processes(); !errors.Is(err, ErrMalformed) || !strings.Contains(err.Error(), "init.scope/cgroup.procs") {
		t.Errorf("malformed: %v", err)
	}
	// The cgroup itself gone.
	os.RemoveAll(cg.Dir(""))
	if _, err := cg.Processes(); !errors.Is(err, ErrGone) {
		t.Errorf("gone: %v", err)
	}
	if cg.Exists() {
		t.Error("Exists after removal")
	}
}

func TestFreezeV2(t *testing.T) {
	_, cg := fakeV2(t)
	dir := cg.Dir("")
	done := make(chan error, 1)
	go func() { done <- cg.Freeze(context.Background()) }()
	// The kernel would flip frozen in cgroup.events; the fake does it here.
	testutil.WriteTree(t, dir, map[string]string{"cgroup.events": "populated 1\nfrozen 1\n"})
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Freeze did not return after frozen 1")
	}
	if got := readFile(t, filepath.Join(dir, "cgroup.freeze")); got != "1" {
		t.Errorf("cgroup.freeze = %q", got)
	}
	// Thaw that never completes: bounded by the context.
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	err := cg.Thaw(ctx)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Thaw without kernel = %v", err)
	}
	if !strings.Contains(err.Error(), "frozen=0") {
		t.Errorf("error does not say what it waited for: %v", err)
	}
	testutil.WriteTree(t, dir, map[string]string{"cgroup.events": "populated 1\nfrozen 0\n"})
	if err := cg.Thaw(context.Background()); err != nil {
		t.Fatal(err)
	}
	os.RemoveAll(dir)
	if err := cg.Freeze(context.Background()); !errors.Is(err, ErrGone) {
		t.Errorf("freeze gone cgroup: %v", err)
	}
}

func TestFreezeV1(t *testing.T) {
	_, cg := fakeV1(t)
	if err := cg.Freeze(context.Background()); err != nil {
		t.Fatal(err)
	}
	if st, _ := cg.State(); !st.Frozen {
		t.Error("not frozen")
	}
	if err := cg.Thaw(context.Background()); err != nil {
		t.Fatal(err)
	}
	os.RemoveAll(cg.Dir("freezer"))
	if err := cg.Freeze(context.Background()); !errors.Is(err, ErrGone) {
		t.Errorf("freeze gone: %v", err)
	}
}

func TestUnitName(t *testing.T) {
	for in, want := range map[string]string{
		"/machine.slice/libpod-abc.scope":      "libpod-abc.scope",
		"/system.slice/qm.service":             "qm.service",
		"qm.service":                           "qm.service",
		"/machine.slice/libpod-abc.scope/init": "",
		"/libpod_parent/libpod-abc":            "",
		"/":                                    "",
		"/.scope":                              "",
		"/machine.slice":                       "",
	} {
		if got := UnitName(in); got != want {
			t.Errorf("UnitName(%q) = %q, want %q", in, got, want)
		}
	}
	for in, want := range map[string][2]string{
		"/machine.slice/libpod-qm.scope/container/machine.slice/libpod-n.scope": {"libpod-qm.scope", "/machine.slice/libpod-qm.scope"},
		"/a.slice/a-b.slice/x.service/y":                                        {"x.service", "/a.slice/a-b.slice/x.service"},
		"/libpod_parent/libpod-abc":                                             {"", ""},
		"/user.slice/weird/x.scope":                                             {"", ""},
	} {
		u, p := OwningUnit(in)
		if u != want[0] || p != want[1] {
			t.Errorf("OwningUnit(%q) = %q %q, want %q", in, u, p, want)
		}
	}
	if SystemdBooted(t.TempDir()) {
		t.Error("SystemdBooted on empty dir")
	}
	run := t.TempDir()
	os.MkdirAll(filepath.Join(run, "systemd", "system"), 0o755)
	if !SystemdBooted(run) {
		t.Error("SystemdBooted false")
	}
}

// TestCPUUsage: the partition's CPU time, from cpu.stat on v2 and
// cpuacct.usage on v1; a file without the counter is an error naming it.
func TestCPUUsage(t *testing.T) {
	_, cg2 := fakeV2(t)
	if d, err := cg2.CPUUsage(); err != nil || d != 2500*time.Millisecond {
		t.Errorf("v2 CPUUsage = %v %v, want 2.5s", d, err)
	}
	_, cg1 := fakeV1(t)
	if d, err := cg1.CPUUsage(); err != nil || d != 3500*time.Millisecond {
		t.Errorf("v1 CPUUsage = %v %v, want 3.5s", d, err)
	}
	testutil.WriteTree(t, cg2.Dir("cpu"), map[string]string{"cpu.stat": "user_usec 1\n"})
	if _, err := cg2.CPUUsage(); err == nil || !strings.Contains(err.Error(), "usage_usec") {
		t.Errorf("cpu.stat without usage_usec: %v, want an error naming it", err)
	}
}
