package policy

import (
	"bufio"
	"context"
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

	"go.uber.org/zap"

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
		t.Cleanup(func() { testutil.RemoveCgroup(t, d) })
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
	// memory, cpu and io pressure of the protected cgroup.
	const asilTriggers = 3
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
		for i := 0; i < asilTriggers; i++ {
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
		eventually(t, "triggers ended", func() bool { return countLogs(logs, msgTriggerEnded) == asilTriggers })
		time.Sleep(200 * time.Millisecond)
		_ = syscall.Getrusage(syscall.RUSAGE_SELF, &after)
		cpu := time.Duration(after.Utime.Nano() + after.Stime.Nano() - before.Utime.Nano() - before.Stime.Nano())
		t.Logf("round %d: process CPU time from the cgroup's removal to 200 ms after the triggers ended: %v", round, cpu)
		// A fresh trigger may wake up once with nothing behind it (then
		// it is confirmed away); an ended one that spun would wake up
		// thousands of times.
		if n := c.wakeups.Load(); n > uint64(asilTriggers*round) {
			t.Fatalf("%d wake-ups after %d rounds", n, round)
		}
		if err := os.Mkdir(asil, 0o755); err != nil { // the unit started again
			t.Fatal(err)
		}
		waitArmed("re-armed")
		eventually(t, "re-arm reported", func() bool { return countLogs(logs, msgTriggerRearmed) == asilTriggers })
		logs.TakeAll()
	}
	if r.Count(incident.Throttle) != 0 || r.Count(incident.CPUQuota) != 0 {
		t.Error("reacted to an ASIL unit's restart")
	}
}

// TestHelperHog is not a test: run as a child (QMD_POLICY_HOG=<MiB>) it
// waits for a line on stdin, allocates and touches that much memory,
// says "ready" and sleeps until killed.
func TestHelperHog(t *testing.T) {
	mb, err := strconv.Atoi(os.Getenv("QMD_POLICY_HOG"))
	if err != nil {
		t.Skip("helper process only")
	}
	_, _ = bufio.NewReader(os.Stdin).ReadString('\n')
	buf := make([]byte, mb<<20)
	for i := 0; i < len(buf); i += 4096 {
		buf[i] = 1
	}
	os.Stdout.WriteString("ready\n")
	time.Sleep(time.Minute)
	buf[0]++
}

// TestRealStallKillsTheHogNotTheInit: a partition cgroup (cgroup v1, as
// on this host) with an init, a bystander and a memory hog. A sustained
// stall kills the hog (largest oom_score), not the init although its
// oom_score_adj is the largest, and not the bystander.
func TestRealStallKillsTheHogNotTheInit(t *testing.T) {
	requireReal(t)
	if _, err := os.Stat("/sys/fs/cgroup/memory/memory.limit_in_bytes"); err != nil {
		t.Skip("no cgroup v1 memory controller (cgroup v2 hosts: the fake-tree tests)")
	}
	hier, err := cgroups.NewHierarchy("")
	if err != nil || hier.Version != cgroups.V1 {
		t.Skipf("hierarchy %v %v", hier, err)
	}
	id := randomID(t)
	name := "/libpod-" + id
	var ctrls []string
	for _, ctrl := range []string{"memory", "pids", "cpu", "freezer"} {
		d := filepath.Join(hier.Root, ctrl, name)
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
		ctrls = append(ctrls, d)
		t.Cleanup(func() { testutil.RemoveCgroup(t, d) })
	}
	moveIn := func(pid int) {
		for _, d := range ctrls {
			if err := os.WriteFile(filepath.Join(d, "cgroup.procs"), []byte(strconv.Itoa(pid)), 0); err != nil {
				t.Fatal(err)
			}
		}
	}
	init := exec.Command("sleep", "60")
	startCmd(t, init)
	moveIn(init.Process.Pid)
	writeProcFile(t, init.Process.Pid, "oom_score_adj", "1000")
	bystander := exec.Command("sleep", "60")
	startCmd(t, bystander)
	moveIn(bystander.Process.Pid)
	writeProcFile(t, bystander.Process.Pid, "oom_score_adj", "500")

	hog := exec.Command(os.Args[0], "-test.run=^TestHelperHog$")
	hog.Env = append(os.Environ(), "QMD_POLICY_HOG=512")
	stdin, _ := hog.StdinPipe()
	stdout, _ := hog.StdoutPipe()
	if err := hog.Start(); err != nil {
		t.Fatal(err)
	}
	hogDone := make(chan error, 1)
	t.Cleanup(func() { _ = hog.Process.Kill(); <-hogDone })
	moveIn(hog.Process.Pid)
	writeProcFile(t, hog.Process.Pid, "oom_score_adj", "500")
	_, _ = stdin.Write([]byte("go\n"))
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil || line != "ready\n" {
		t.Fatalf("hog: %q %v", line, err)
	}
	go func() { hogDone <- hog.Wait() }()

	h := &Host{Hier: hier, ProcRoot: "/proc", MemTotal: 8 << 30, PidMax: 4194304, Resync: time.Hour, Log: zap.NewNop()}
	r := newRecorder()
	res, err := h.New(partitionConfig(), supervisor.Init{ContainerID: id, PID: init.Process.Pid}, r.hooks())
	if err != nil {
		t.Fatal(err)
	}
	c := res.(*Controller)
	for _, pid := range []int{init.Process.Pid, bystander.Process.Pid, hog.Process.Pid} {
		b, _ := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "oom_score"))
		t.Logf("pid %d oom_score %s", pid, strings.TrimSpace(string(b)))
	}
	t0 := time.Now()
	for i := 0; i < stallWindows; i++ {
		c.onStall(context.Background(), t0.Add(time.Duration(i)*time.Second))
	}
	decided := time.Now()
	select {
	case err := <-hogDone:
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
			t.Errorf("hog ended with %v, want SIGKILL", err)
		}
		t.Logf("hog (512 MiB) reaped %v after the kill decision", time.Since(decided))
	case <-time.After(10 * time.Second):
		t.Fatal("the hog was not killed")
	}
	hogDone <- nil // for the cleanup
	for _, p := range []*exec.Cmd{init, bystander} {
		if err := syscall.Kill(p.Process.Pid, 0); err != nil {
			t.Errorf("pid %d (init or bystander) was killed: %v", p.Process.Pid, err)
		}
	}
	all := r.All()
	if len(all) == 0 {
		t.Fatal("no incident")
	}
	inc := all[len(all)-1]
	if inc.Type != incident.Stall || inc.Details["pid"] != strconv.Itoa(hog.Process.Pid) || inc.Details["action"] != "kill-offender" {
		t.Errorf("incident %+v", inc)
	}
	t.Logf("incident: %s %v", inc.Summary, inc.Details)
	if r.restartCount() != 0 {
		t.Error("partition restarted")
	}
}
