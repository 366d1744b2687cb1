package integration

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/containers/qmd/internal/testutil"
	"github.com/containers/qmd/test/harness"
)

// opEnv is a partition supervised by qmd with its D-Bus interface on a
// private system bus that uses the project's policy file.
type opEnv struct {
	env
	bus *testutil.SystemBus
}

func startWithBus(t *testing.T, extra string) *opEnv {
	t.Helper()
	pm := harness.StartPodman(t)
	bus := testutil.StartSystemBus(t, filepath.Join(harness.Repo(t), "systemd", "org.containers.qmd1.conf"))
	cfg := harness.Config(t, pm, t.TempDir(), "[dbus]\nenable = true\n\n[policy]\nresync = \"1s\"\n",
		harness.Partition{Name: "qm", Rootfs: harness.Rootfs(t, "loop"), Extra: extra})
	q := harness.StartQMD(t, cfg, "DBUS_SYSTEM_BUS_ADDRESS="+bus.Addr)
	q.WaitLog(settle, 1, "msg", "qmd ready")
	return &opEnv{env: env{pm: pm, cfg: cfg, qmd: q}, bus: bus}
}

// qmdctl runs the qmd client against the private bus.
func (e *opEnv) qmdctl(t *testing.T, args ...string) (string, int) {
	t.Helper()
	cmd := exec.Command(harness.QMDBinary(t), args...)
	cmd.Env = append(os.Environ(), "DBUS_SYSTEM_BUS_ADDRESS="+e.bus.Addr)
	out, err := cmd.CombinedOutput()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return string(out), code
}

func (e *opEnv) statusJSON(t *testing.T) map[string]any {
	t.Helper()
	out, code := e.qmdctl(t, "status", "qm", "--json")
	var m map[string]any
	if err := json.Unmarshal([]byte(out), &m); err != nil {
		t.Fatalf("status --json (exit %d): %v\n%s", code, err, out)
	}
	return m
}

// memoryCgroup returns the v1 memory cgroup directory of a pid.
func memoryCgroup(t *testing.T, pid int) string {
	t.Helper()
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cgroup")
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		f := strings.SplitN(l, ":", 3)
		if len(f) == 3 && strings.Contains(","+f[1]+",", ",memory,") {
			return "/sys/fs/cgroup/memory" + f[2]
		}
	}
	t.Skip("no cgroup v1 memory controller (run on a cgroup v1 host; v2 is covered by make e2e)")
	return ""
}

func TestMemoryMaxAndOOMKillIncident(t *testing.T) {
	e := startWithBus(t, "[partition.memory]\nmax = \"64M\"\n")
	cg := memoryCgroup(t, e.pid(t))
	b, _ := os.ReadFile(filepath.Join(cg, "memory.limit_in_bytes"))
	if strings.TrimSpace(string(b)) != "67108864" {
		t.Fatalf("memory.limit_in_bytes = %q, want 67108864 (64M)", b)
	}
	// A memory hog inside the partition: the kernel kills it; Podman 4.3
	// reports nothing; qmd must.
	_, _ = e.pm.CLI("exec", "qm", "sh", "-c", `x=$(head -c 300000000 /dev/zero | tr '\0' a); echo survived`)
	hogDone := time.Now()
	inc := e.qmd.WaitLog(5*time.Second, 1, "event", "oom-kill", "partition", "qm")
	logged, err := time.Parse(time.RFC3339Nano, inc["time"].(string))
	if err == nil && logged.Sub(hogDone) > time.Second {
		t.Errorf("oom-kill incident logged %s after the hog died, want within 1s", logged.Sub(hogDone))
	}
	if inc["comm"] == nil || inc["pid"] == nil {
		t.Errorf("incident does not name the victim: %v", inc)
	}
	// The operator sees it: NOOMKills and ListIncidents through the real
	// D-Bus interface.
	st := e.statusJSON(t)
	if n, _ := st["n_oom_kills"].(float64); n < 1 {
		t.Errorf("NOOMKills = %v, want >= 1: %v", st["n_oom_kills"], st)
	}
	out, code := e.qmdctl(t, "incidents", "qm", "--json")
	if code != 0 || !strings.Contains(out, `"oom-kill"`) {
		t.Errorf("qmd incidents (exit %d) lacks the oom-kill:\n%s", code, out)
	}
	// The partition's init was not the victim: it keeps running.
	if e.pm.Inspect("qm", "{{.State.Running}}") != "true" {
		t.Error("partition stopped by an OOM kill of another process")
	}
}

func TestOOMScoreAdjDriftRepaired(t *testing.T) {
	e := startWithBus(t, "")
	if _, err := e.pm.CLI("exec", "-d", "qm", "sleep", "4242"); err != nil {
		t.Fatal(err)
	}
	var pid int
	deadline := time.Now().Add(10 * time.Second)
	for pid == 0 && time.Now().Before(deadline) {
		out, _ := exec.Command("pgrep", "-f", "^sleep 4242").Output()
		pid, _ = strconv.Atoi(strings.TrimSpace(string(out)))
		time.Sleep(50 * time.Millisecond)
	}
	if pid == 0 {
		t.Fatal("partition process not found")
	}
	path := "/proc/" + strconv.Itoa(pid) + "/oom_score_adj"
	// Lowered from the host: the partition process would now be killed
	// after ASIL-adjacent work. qmd must set it back within one resync (1s).
	if err := os.WriteFile(path, []byte("100"), 0o644); err != nil {
		t.Fatal(err)
	}
	inc := e.qmd.WaitLog(5*time.Second, 1, "event", "oom-score-repair", "partition", "qm")
	b, _ := os.ReadFile(path)
	if strings.TrimSpace(string(b)) != "500" {
		t.Errorf("oom_score_adj = %q after repair, want 500 (incident %v)", b, inc)
	}
}

func TestFreezeThawAndStatus(t *testing.T) {
	e := startWithBus(t, "")
	if out, code := e.qmdctl(t, "freeze", "qm"); code != 0 {
		t.Fatalf("qmd freeze: exit %d %s", code, out)
	}
	e.qmd.WaitLog(10*time.Second, 1, "event", "freeze", "partition", "qm")
	if st := e.statusJSON(t); st["sub_state"] != "frozen" {
		t.Errorf("SubState = %v, want frozen", st["sub_state"])
	}
	if out, code := e.qmdctl(t, "thaw", "qm"); code != 0 {
		t.Fatalf("qmd thaw: exit %d %s", code, out)
	}
	e.qmd.WaitLog(10*time.Second, 1, "event", "thaw", "partition", "qm")
	if st := e.statusJSON(t); st["sub_state"] != "running" || st["active_state"] != "active" {
		t.Errorf("after thaw: %v/%v", st["active_state"], st["sub_state"])
	}
	// Thawed for real: the partition answers an exec.
	if out, err := e.pm.CLI("exec", "qm", "true"); err != nil {
		t.Errorf("exec after thaw: %v %s", err, out)
	}
}

func TestBusctlSeesRestart(t *testing.T) {
	testutil.RequireBinaries(t, "busctl")
	e := startWithBus(t, "")
	busctl := func(args ...string) string {
		t.Helper()
		out, err := exec.Command("busctl", append([]string{"--address=" + e.bus.Addr}, args...)...).CombinedOutput()
		if err != nil {
			t.Fatalf("busctl %v: %v\n%s", args, err, out)
		}
		return strings.TrimSpace(string(out))
	}
	obj := []string{"org.containers.qmd1", "/org/containers/qmd1/partition/qm", "org.containers.qmd1.Partition"}
	if got := busctl(append([]string{"get-property"}, append(obj, "ActiveState")...)...); got != `s "active"` {
		t.Errorf("ActiveState = %s", got)
	}
	if err := syscall.Kill(e.pid(t), syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	e.qmd.WaitLog(settle, 2, "msg", "partition running", "partition", "qm")
	if got := busctl(append([]string{"get-property"}, append(obj, "NRestarts")...)...); got != "u 1" {
		t.Errorf("NRestarts = %s, want u 1", got)
	}
	if got := busctl(append([]string{"get-property"}, append(obj, "MainPID")...)...); got != "u "+strconv.Itoa(e.pid(t)) {
		t.Errorf("MainPID = %s, want the new init %d", got, e.pid(t))
	}
}

func TestForkBombIncident(t *testing.T) {
	e := startWithBus(t, "[partition.pids]\nmax = \"40\"\nfork_bomb_restarts = 0\n")
	_, _ = e.pm.CLI("exec", "qm", "sh", "-c", "for i in $(seq 80); do sleep 3 & done; wait")
	inc := e.qmd.WaitLog(10*time.Second, 1, "event", "fork-bomb", "partition", "qm")
	if inc["pids_max_events"] == nil {
		t.Errorf("fork-bomb incident without the kernel's pids.max event count: %v", inc)
	}
	if e.pm.Inspect("qm", "{{.State.Running}}") != "true" {
		t.Error("partition restarted although fork_bomb_restarts = 0")
	}
}
