package chaos

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestChaosProtectedUnitRestarted: a protected (ASIL) cgroup watched for
// pressure is removed and re-created 100 times with a process in it, as a
// restarting systemd unit does. qmd must not spin on the closed pressure
// triggers (its CPU time stays a small share of the wall time), must not
// react without pressure (no throttle, no stall, no restart of the
// partition), and keeps supervising (the finish checks: same container and
// init, watchdog fed, no goroutine growth, incidents intact).
func TestChaosProtectedUnitRestarted(t *testing.T) {
	const restarts = 100
	root := "/sys/fs/cgroup/unified" // cgroup2 of this hybrid host: where the pressure files are
	if _, err := os.Stat(filepath.Join(root, "cgroup.procs")); err != nil {
		root = "/sys/fs/cgroup" // a pure cgroup2 host
	}
	rel := fmt.Sprintf("qmd-chaos-asil-%d", os.Getpid())
	dir := filepath.Join(root, rel)
	t.Cleanup(func() { _ = os.Remove(dir) })
	s := newScenario(t, opts{extra: fmt.Sprintf(
		"[policy]\nresync = \"2s\"\n\n[[protect]]\ncgroup = %q\noom_score_adj = -800\nwatch_pressure = true\n", "/"+rel)})
	ids, ref := s.baseline()
	base := readProcStats(s.q.PID())
	cpu0, t0 := cpuTicks(t, s.q.PID()), time.Now()
	before := s.listIncidents()

	for i := 0; i < restarts; i++ {
		if err := os.Mkdir(dir, 0o755); err != nil {
			t.Fatalf("restart %d: create the protected cgroup: %v", i, err)
		}
		cmd := exec.Command("sleep", "60")
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "cgroup.procs"), []byte(strconv.Itoa(cmd.Process.Pid)), 0o644); err != nil {
			t.Fatalf("restart %d: move the unit's process in: %v", i, err)
		}
		time.Sleep(40 * time.Millisecond) // the "unit" runs a moment
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		if err := rmdirRetry(dir); err != nil {
			t.Fatalf("restart %d: remove the protected cgroup: %v", i, err)
		}
	}
	// A couple of resync ticks with the cgroup gone: re-arming must not spin.
	time.Sleep(5 * time.Second)
	wall := time.Since(t0)
	used := time.Duration(cpuTicks(t, s.q.PID())-cpu0) * 10 * time.Millisecond // USER_HZ 100
	t.Logf("%d restarts of the protected cgroup in %s: qmd used %s of CPU (%.1f %% of one core)",
		restarts, wall.Round(time.Millisecond), used, 100*used.Seconds()/wall.Seconds())
	if used > wall/5 {
		t.Errorf("qmd used %s of CPU in %s while the protected cgroup came and went: spinning", used, wall.Round(time.Millisecond))
	}
	for _, inc := range s.listIncidents()[len(before):] {
		switch inc.Type {
		case "throttle", "stall", "cpu-quota", "restart", "stop", "start":
			t.Errorf("reaction without pressure while the protected cgroup restarted: incident %d %s", inc.ID, inc.Type)
		}
	}
	s.finish(ref, base, map[string]string{"qm": ids["qm"].ID}, false)
}

// rmdirRetry removes a cgroup whose last process may still be exiting.
func rmdirRetry(dir string) error {
	var err error
	for i := 0; i < 100; i++ {
		if err = os.Remove(dir); err == nil || os.IsNotExist(err) {
			return nil
		}
		time.Sleep(10 * time.Millisecond)
	}
	return err
}

func cpuTicks(t *testing.T, pid int) int64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		t.Fatal(err)
	}
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+2:]))
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return ut + st
}
