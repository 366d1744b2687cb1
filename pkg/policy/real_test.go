package policy

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/containers/qmd/internal/config"
	"github.com/containers/qmd/internal/incident"
	"github.com/containers/qmd/internal/testutil"
	"github.com/containers/qmd/pkg/cgroups"
	"github.com/containers/qmd/pkg/supervisor"
)

func randomID(t *testing.T) string {
	t.Helper()
	var rnd [8]byte
	if _, err := rand.Read(rnd[:]); err != nil {
		t.Fatal(err)
	}
	return "qmdtest" + hex.EncodeToString(rnd[:])
}

func requireReal(t *testing.T) {
	t.Helper()
	if testing.Short() {
		t.Skip("real cgroups: skipped with -short")
	}
	testutil.RequireRoot(t)
}

// removeCgroup kills what is left in dir and removes it.
func removeCgroup(t *testing.T, dir string) {
	deadline := time.Now().Add(5 * time.Second)
	for {
		if b, err := os.ReadFile(filepath.Join(dir, "cgroup.procs")); err == nil {
			for _, f := range strings.Fields(string(b)) {
				if pid, err := strconv.Atoi(f); err == nil {
					_ = syscall.Kill(pid, syscall.SIGKILL)
				}
			}
		}
		err := os.Remove(dir)
		if err == nil || errors.Is(err, os.ErrNotExist) {
			return
		}
		if time.Now().After(deadline) {
			t.Errorf("remove cgroup %s: %v", dir, err)
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func startCmd(t *testing.T, cmd *exec.Cmd) {
	t.Helper()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
}

func writeProcFile(t *testing.T, pid int, name, v string) {
	t.Helper()
	if err := os.WriteFile(filepath.Join("/proc", strconv.Itoa(pid), name), []byte(v), 0); err != nil {
		t.Fatalf("pid %d %s=%s: %v", pid, name, v, err)
	}
}

// TestRealTriggerRearmedOnRecreatedCgroup: a protected cgroup with PSI
// triggers on a real cgroup2 hierarchy (the hybrid host's unified mount)
// is removed and created again at the same path, as a restarted unit's
// cgroup is. The triggers end on POLLERR, do not fire, and are re-armed
// on the new cgroup.
func TestRealTriggerRearmedOnRecreatedCgroup(t *testing.T) {
	requireReal(t)
	var hier *cgroups.Hierarchy
	for _, root := range []string{"/sys/fs/cgroup/unified", "/sys/fs/cgroup"} {
		if h, err := cgroups.NewHierarchy(root); err == nil && h.Version == cgroups.V2 {
			hier = h
			break
		}
	}
	if hier == nil {
		t.Skip("no cgroup2 mount")
	}
	id := randomID(t)
	part := filepath.Join(hier.Root, "libpod-"+id)
	asil := filepath.Join(hier.Root, id+"-asil")
	for _, d := range []string{part, asil} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Skipf("cannot create a v2 cgroup: %v", err)
		}
		t.Cleanup(func() { removeCgroup(t, d) })
	}
	if _, err := os.Stat(filepath.Join(asil, "memory.pressure")); err != nil {
		t.Skip("no per-cgroup PSI")
	}
	init := exec.Command("sleep", "60")
	startCmd(t, init)
	writeProcFile(t, init.Process.Pid, "oom_score_adj", "500")
	if err := os.WriteFile(filepath.Join(part, "cgroup.procs"), []byte(strconv.Itoa(init.Process.Pid)), 0); err != nil {
		t.Fatal(err)
	}

	h := &Host{Hier: hier, ProcRoot: "/proc", MemTotal: 8 << 30, PidMax: 4194304, Resync: time.Hour,
		Protected: []config.Protect{{Cgroup: "/" + id + "-asil", OOMScoreAdj: -900, WatchPressure: true}}}
	logs := observe(h)
	p := partitionConfig()
	p.Pressure.HostMemory = false   // the host's own pressure is not this test's business
	p.Pressure.StallAction = "none" // nor the partition's
	r := newRecorder()
	res, err := h.New(p, supervisor.Init{ContainerID: id, PID: init.Process.Pid}, r.hooks())
	if err != nil {
		t.Fatal(err)
	}
	c := res.(*Controller)
	c.rearmMin = 20 * time.Millisecond
	armed := make(chan cgroups.PSIRegistration, 10)
	c.openTrigger = func(spec cgroups.PSITriggerSpec) (psiSource, error) {
		src, err := openPSITrigger(spec)
		if err == nil {
			armed <- src.Registration()
		}
		return src, err
	}
	waitArmed := func(what string) {
		t.Helper()
		for i := 0; i < 2; i++ {
			select {
			case reg := <-armed:
				t.Logf("%s: %s %s %v/%v", what, reg.Spec.Path, reg.Spec.Kind, reg.Spec.Threshold, reg.Spec.Window)
			case <-time.After(10 * time.Second):
				t.Fatalf("%s: the ASIL triggers were not armed", what)
			}
		}
	}
	runController(t, c)
	waitArmed("armed")

	for round := 1; round <= 3; round++ {
		var before, after syscall.Rusage
		_ = syscall.Getrusage(syscall.RUSAGE_SELF, &before)
		if err := os.Remove(asil); err != nil { // the unit stopped
			t.Fatal(err)
		}
		eventually(t, "triggers ended", func() bool { return countLogs(logs, msgTriggerEnded) == 2 })
		time.Sleep(200 * time.Millisecond)
		_ = syscall.Getrusage(syscall.RUSAGE_SELF, &after)
		cpu := time.Duration(after.Utime.Nano() + after.Stime.Nano() - before.Utime.Nano() - before.Stime.Nano())
		t.Logf("round %d: process CPU time from the cgroup's removal to 200 ms after the triggers ended: %v", round, cpu)
		// A fresh trigger may wake up once with nothing behind it (then
		// it is confirmed away); an ended one that spun would wake up
		// thousands of times.
		if n := c.wakeups.Load(); n > uint64(2*round) {
			t.Fatalf("%d wake-ups after %d rounds", n, round)
		}
		if err := os.Mkdir(asil, 0o755); err != nil { // the unit started again
			t.Fatal(err)
		}
		waitArmed("re-armed")
		eventually(t, "re-arm reported", func() bool { return countLogs(logs, msgTriggerRearmed) == 2 })
		logs.TakeAll()
	}
	if r.Count(incident.Throttle) != 0 || r.Count(incident.CPUQuota) != 0 {
		t.Error("reacted to an ASIL unit's restart")
	}
}
