package integration

import (
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/containers/qmd/test/harness"
)

// systemdRootfs is a partition rootfs whose init is systemd, e.g.
//
//	debootstrap --variant=minbase --include=systemd,systemd-sysv,dbus bookworm DIR
//
// named by QMD_SYSTEMD_ROOTFS (the busybox partitions of the other tests
// have no systemd to ask).
func systemdRootfs(t *testing.T) string {
	t.Helper()
	dir := os.Getenv("QMD_SYSTEMD_ROOTFS")
	if dir == "" {
		t.Skip("QMD_SYSTEMD_ROOTFS not set (a debootstrapped Debian with systemd)")
	}
	if _, err := os.Stat(filepath.Join(dir, "lib/systemd/systemd")); err != nil {
		t.Fatalf("QMD_SYSTEMD_ROOTFS=%s: no systemd: %v", dir, err)
	}
	return dir
}

// TestSystemdHungRestarts: the partition runs a real systemd. qmd's probe
// reaches it through the partition's system bus
// (/proc/<init>/root/run/dbus/system_bus_socket) and leaves the
// healthy partition alone; once its systemd is stopped (SIGSTOP: alive,
// not answering) qmd records systemd-unresponsive and kills and restarts
// the partition (new init, same container).
func TestSystemdHungRestarts(t *testing.T) {
	root := systemdRootfs(t)
	pm := harness.StartPodman(t)
	extra := "read_only = false\nexec = [\"/sbin/init\"]\n" +
		"[partition.liveness]\ninterval = \"1s\"\ntimeout = \"1s\"\nfailures = 3\nboot_grace = \"2m\"\n"
	cfg := harness.Config(t, pm, t.TempDir(), "", harness.Partition{Name: "qm", Rootfs: root, Extra: extra})
	q := harness.StartQMD(t, cfg)
	q.WaitLog(settle, 1, "msg", "partition running", "partition", "qm")
	for deadline := time.Now().Add(2 * time.Minute); q.Count("msg", "liveness probe armed: the partition's systemd answers") == 0; {
		if time.Now().After(deadline) {
			logs, _ := pm.CLI("logs", "qm")
			state, _ := pm.CLI("exec", "qm", "systemctl", "is-system-running")
			journal, _ := pm.CLI("exec", "qm", "journalctl", "-b", "--no-pager", "-n", "40")
			t.Fatalf("the probe never reached the partition's systemd (is-system-running: %s); partition console:\n%s\njournal:\n%s", state, logs, journal)
		}
		time.Sleep(500 * time.Millisecond)
	}
	armed := q.WaitLog(settle, 1, "msg", "liveness probe armed: the partition's systemd answers")
	t.Logf("probe armed: %v after the partition started", armed["after"])
	id := pm.Inspect("qm", "{{.Id}}")
	pid, err := strconv.Atoi(pm.Inspect("qm", "{{.State.Pid}}"))
	if err != nil || pid <= 0 {
		t.Fatalf("partition pid: %v", err)
	}
	if comm, _ := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/comm"); string(comm) != "systemd\n" {
		t.Fatalf("partition init is %q, want systemd", comm)
	}
	// Healthy: a few probe rounds, no reaction.
	time.Sleep(6 * time.Second)
	if n := q.Count("event", "systemd-unresponsive"); n != 0 {
		t.Fatalf("healthy systemd reported unresponsive %d times", n)
	}
	stopped := time.Now()
	if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	inc := q.WaitLog(settle, 1, "event", "systemd-unresponsive", "partition", "qm")
	t.Logf("systemd-unresponsive %s after SIGSTOP: %v", time.Since(stopped).Round(100*time.Millisecond), inc["msg"])
	if inc["init_pid"] != strconv.Itoa(pid) {
		t.Errorf("incident init_pid %v, want %d", inc["init_pid"], pid)
	}
	// A requested restart: the partition is killed (never frozen), then
	// started again.
	stop := q.WaitLog(settle, 1, "event", "stop", "partition", "qm")
	if stop["killed"] != "true" {
		t.Errorf("stop incident %v: want killed", stop)
	}
	q.WaitLog(settle, 2, "msg", "partition running", "partition", "qm")
	t.Logf("running again %s after SIGSTOP", time.Since(stopped).Round(100*time.Millisecond))
	npid, _ := strconv.Atoi(pm.Inspect("qm", "{{.State.Pid}}"))
	if npid <= 0 || npid == pid {
		t.Errorf("init pid %d after the restart (was %d)", npid, pid)
	}
	if nid := pm.Inspect("qm", "{{.Id}}"); nid != id {
		t.Errorf("container %s after the restart, want the same %s", nid, id)
	}
	// The new systemd answers again; exactly one report.
	q.WaitLog(2*time.Minute, 2, "msg", "liveness probe armed: the partition's systemd answers")
	if n := q.Count("event", "systemd-unresponsive"); n != 1 {
		t.Errorf("%d systemd-unresponsive incidents, want 1", n)
	}
}

// TestLivenessOffForBusybox: a partition whose init is not systemd has no
// socket to ask: the probe says so once and never restarts it.
func TestLivenessOffForBusybox(t *testing.T) {
	e := start(t, "loop", "[partition.liveness]\ninterval = \"1s\"\ntimeout = \"1s\"\nfailures = 1\nboot_grace = \"0s\"\n")
	e.qmd.WaitLog(settle, 1, "msg", "partition running", "partition", "qm")
	e.qmd.WaitLog(settle, 1, "msg", "liveness probe idle: no systemd to ask in the partition (not systemd, or not up yet)")
	time.Sleep(4 * time.Second)
	if n := e.qmd.Count("msg", "liveness probe idle: no systemd to ask in the partition (not systemd, or not up yet)"); n != 1 {
		t.Errorf("logged %d times, want once", n)
	}
	if n := e.qmd.Count("event", "systemd-unresponsive"); n != 0 {
		t.Errorf("busybox partition reported unresponsive %d times", n)
	}
	if n := e.qmd.Count("event", "restart"); n != 0 {
		t.Errorf("busybox partition restarted %d times", n)
	}
}
