// Integration tests of qmd's core against a real Podman API service: the
// qmd binary runs as a subprocess, as systemd would run it.
package integration

import (
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/containers/qmd/test/harness"
)

const settle = 30 * time.Second

type env struct {
	pm  *harness.Podman
	cfg string
	qmd *harness.QMD
}

func start(t *testing.T, mode string, extra string) *env {
	t.Helper()
	pm := harness.StartPodman(t)
	cfg := harness.Config(t, pm, t.TempDir(), "", harness.Partition{Name: "qm", Rootfs: harness.Rootfs(t, mode), Extra: extra})
	q := harness.StartQMD(t, cfg)
	return &env{pm: pm, cfg: cfg, qmd: q}
}

func (e *env) pid(t *testing.T) int {
	t.Helper()
	n, err := strconv.Atoi(e.pm.Inspect("qm", "{{.State.Pid}}"))
	if err != nil || n <= 0 {
		t.Fatalf("partition pid: %q %v", e.pm.Inspect("qm", "{{.State.Pid}}"), err)
	}
	return n
}

func TestPartitionRunsWithPolicy(t *testing.T) {
	e := start(t, "loop", "")
	e.qmd.WaitLog(settle, 1, "msg", "partition running", "partition", "qm")
	pid := e.pid(t)
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/oom_score_adj")
	if err != nil || strings.TrimSpace(string(b)) != "500" {
		t.Errorf("partition init oom_score_adj = %q (%v), want 500", b, err)
	}
	if got := e.pm.Inspect("qm", `{{index .Config.Labels "io.containers.qmd.partition"}}`); got != "qm" {
		t.Errorf("partition label = %q", got)
	}
	// The seccomp profile forbids real-time scheduling; normal policies work.
	if out, err := e.pm.CLI("exec", "qm", "/bin/schedcheck", "fifo"); err == nil || !strings.Contains(out, "operation not permitted") {
		t.Errorf("SCHED_FIFO inside the partition: %v %s (want EPERM)", err, out)
	}
	if out, err := e.pm.CLI("exec", "qm", "/bin/schedcheck", "rr"); err == nil {
		t.Errorf("SCHED_RR allowed inside the partition: %s", out)
	}
	if out, err := e.pm.CLI("exec", "qm", "/bin/schedcheck", "other"); err != nil {
		t.Errorf("SCHED_OTHER refused: %v %s", err, out)
	}
	if out, _ := e.pm.CLI("exec", "qm", "cat", "/proc/sys/fs/mqueue/queues_max"); out != "4" {
		t.Errorf("fs.mqueue.queues_max = %q, want 4", out)
	}
	if _, err := e.pm.CLI("exec", "qm", "touch", "/rootfs-is-writable"); err == nil {
		t.Error("rootfs is writable; want read-only")
	}
	if _, err := e.pm.CLI("exec", "qm", "touch", "/tmp/ok"); err != nil {
		t.Error("read-only tmpfs /tmp not writable")
	}
}

func TestKill9RestartsSameContainer(t *testing.T) {
	e := start(t, "loop", "")
	e.qmd.WaitLog(settle, 1, "msg", "partition running", "partition", "qm")
	id, pid := e.pm.Inspect("qm", "{{.Id}}"), e.pid(t)
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	inc := e.qmd.WaitLog(settle, 1, "event", "restart", "partition", "qm")
	if inc["restarts"] != "1" || inc["delay"] != "0s" {
		t.Errorf("first crash: want an immediate restart counted as 1, got %v", inc)
	}
	e.qmd.WaitLog(settle, 2, "msg", "partition running", "partition", "qm")
	if got := e.pm.Inspect("qm", "{{.Id}}"); got != id {
		t.Errorf("container replaced: %s -> %s", id, got)
	}
	if npid := e.pid(t); npid == pid {
		t.Error("same pid after restart")
	}
}

func TestQMDRestartAdoptsWithoutStopping(t *testing.T) {
	e := start(t, "loop", "")
	e.qmd.WaitLog(settle, 1, "msg", "partition running", "partition", "qm")
	id, started, pid := e.pm.Inspect("qm", "{{.Id}}"), e.pm.Inspect("qm", "{{.State.StartedAt}}"), e.pid(t)
	e.qmd.Stop()
	if got := e.pm.Inspect("qm", "{{.State.Running}}"); got != "true" {
		t.Fatalf("stopping qmd stopped the partition (running=%q)", got)
	}
	q2 := harness.StartQMD(t, e.cfg)
	q2.WaitLog(settle, 1, "event", "adopt", "partition", "qm")
	q2.WaitLog(settle, 1, "msg", "qmd ready")
	if got := e.pm.Inspect("qm", "{{.Id}}"); got != id {
		t.Errorf("container ID changed across a qmd restart: %s -> %s", id, got)
	}
	if got := e.pm.Inspect("qm", "{{.State.StartedAt}}"); got != started {
		t.Errorf("partition restarted across a qmd restart: %s -> %s", started, got)
	}
	if e.pid(t) != pid {
		t.Error("partition init changed")
	}
	if n := q2.Count("event", "start"); n != 0 {
		t.Errorf("second qmd started the partition %d times", n)
	}
}

func TestPodmanServiceRestart(t *testing.T) {
	e := start(t, "loop", "")
	e.qmd.WaitLog(settle, 1, "msg", "partition running", "partition", "qm")
	pid := e.pid(t)
	e.pm.Kill()
	e.qmd.WaitLog(settle, 1, "event", "podman-lost")
	// The partition keeps running without the service; its init dies while
	// the service is away, so no event can tell qmd.
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond)
	e.pm.Start()
	e.qmd.WaitLog(settle, 1, "msg", "podman reachable")
	e.qmd.WaitLog(settle, 1, "event", "restart", "partition", "qm")
	deadline := time.Now().Add(settle)
	for e.pm.Inspect("qm", "{{.State.Running}}") != "true" {
		if time.Now().After(deadline) {
			t.Fatal("partition not running after podman came back")
		}
		time.Sleep(50 * time.Millisecond)
	}
	out, err := e.pm.CLI("ps", "-a", "-q", "--filter", "label=io.containers.qmd.partition=qm")
	if err != nil || len(strings.Fields(out)) != 1 {
		t.Errorf("want exactly one partition container, got %q (%v)", out, err)
	}
}

func TestCrashLoopHitsStartLimit(t *testing.T) {
	e := start(t, "exit", "")
	e.qmd.WaitLog(settle, 1, "event", "start-limit", "partition", "qm")
	e.qmd.WaitLog(settle, 1, "msg", "partition failed", "partition", "qm")
	started := e.pm.Inspect("qm", "{{.State.StartedAt}}")
	restarts := e.qmd.Count("event", "restart", "partition", "qm")
	if restarts != 5 {
		t.Errorf("restart incidents = %d, want 5 (5 starts allowed, the 6th refused)", restarts)
	}
	time.Sleep(3 * time.Second)
	if got := e.pm.Inspect("qm", "{{.State.StartedAt}}"); got != started {
		t.Errorf("failed partition was started again: %s -> %s", started, got)
	}
	if n := e.qmd.Count("event", "restart", "partition", "qm"); n != restarts {
		t.Errorf("restarts continued after failure: %d -> %d", restarts, n)
	}
	// SIGHUP (reload) resets a failed partition: it is tried again.
	e.qmd.Signal(syscall.SIGHUP)
	e.qmd.WaitLog(settle, 1, "msg", "configuration reloaded")
	e.qmd.WaitLog(settle, restarts+1, "event", "restart", "partition", "qm")
}

func TestMissingRootfsFailsClearly(t *testing.T) {
	pm := harness.StartPodman(t)
	cfg := harness.Config(t, pm, t.TempDir(), "", harness.Partition{Name: "qm", Rootfs: "/nonexistent/qm/rootfs"})
	q := harness.StartQMD(t, cfg)
	err, done := q.Exited(20 * time.Second)
	if !done {
		t.Fatal("qmd keeps running with a missing rootfs")
	}
	if err == nil {
		t.Fatal("qmd exited 0 with a missing rootfs")
	}
	log := q.Log()
	if !strings.Contains(log, "partition[qm].rootfs") || !strings.Contains(log, "/nonexistent/qm/rootfs: does not exist") {
		t.Errorf("error does not name the key and path:\n%s", log)
	}
}

func appendFile(path, s string) error {
	f, err := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	_, err = f.WriteString(s)
	return err
}
