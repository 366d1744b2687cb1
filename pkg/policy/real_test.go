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
