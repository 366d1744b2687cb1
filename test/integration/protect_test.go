package integration

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/containers/qmd/internal/testutil"
	"github.com/containers/qmd/pkg/protect"
	"github.com/containers/qmd/test/harness"
)

// TestProtectionBeforePodman: the host-level protection runs before Podman
// answers and whatever the partition does. With the Podman service down,
// qmd protects a [[protect]] cgroup on the host's real cgroup2 mount (the
// hybrid host's unified one): it logs it, arms its pressure triggers,
// follows a re-creation of the cgroup (a restarted unit), and keeps doing
// so once Podman is back and the partition runs.
func TestProtectionBeforePodman(t *testing.T) {
	psiRoot := protect.FindPSIRoot("/sys/fs/cgroup")
	if psiRoot == "" {
		t.Skip("no cgroup2 mount")
	}
	var rnd [6]byte
	_, _ = rand.Read(rnd[:])
	rel := "/qmdtest-protect-" + hex.EncodeToString(rnd[:])
	dir := filepath.Join(psiRoot, rel)
	var proc *exec.Cmd
	up := func() {
		t.Helper()
		if err := os.Mkdir(dir, 0o755); err != nil {
			t.Fatalf("create the protected cgroup: %v", err)
		}
		proc = exec.Command("sleep", "600")
		if err := proc.Start(); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "cgroup.procs"), []byte(strconv.Itoa(proc.Process.Pid)), 0); err != nil {
			t.Fatal(err)
		}
	}
	down := func() {
		_ = proc.Process.Kill()
		_ = proc.Wait()
		testutil.RemoveCgroup(t, dir)
	}
	up()
	t.Cleanup(down)

	pm := harness.StartPodman(t)
	pm.Kill() // Podman is not there when qmd starts
	extra := fmt.Sprintf("[policy]\nresync = \"2s\"\n\n[[protect]]\ncgroup = %q\noom_score_adj = -900\nwatch_pressure = true\n", rel)
	cfg := harness.Config(t, pm, t.TempDir(), extra, harness.Partition{Name: "qm", Rootfs: harness.Rootfs(t, "loop")})
	q := harness.StartQMD(t, cfg)

	q.WaitLog(10*time.Second, 1, "msg", "protecting", "cgroup", rel)
	q.WaitLog(10*time.Second, 1, "msg", "podman not reachable, retrying")
	// memory, cpu and io pressure of the protected cgroup armed before
	// the "restart" below (the host's memory pressure is a fourth trigger).
	q.WaitLogFunc(10*time.Second, 3, "the protected cgroup's 3 pressure triggers armed", func(m map[string]any) bool {
		f, _ := m["file"].(string)
		return m["msg"] == "pressure trigger armed" && strings.HasPrefix(f, dir+"/")
	})
	if n := q.Count("msg", "partition running"); n != 0 {
		t.Fatalf("partition running without Podman?")
	}
	// No trigger outage at start: all three pressure files armed.
	if n := q.Count("msg", "pressure trigger not available; retrying with backoff"); n != 0 {
		t.Errorf("%d pressure triggers not armed at start", n)
	}

	// The unit restarts while Podman is still away.
	down()
	q.WaitLog(10*time.Second, 3, "msg", "pressure trigger ended (the watched cgroup went away: unit stopped or restarting); re-arming when it is back")
	up()
	q.WaitLog(20*time.Second, 3, "msg", "pressure trigger re-armed")

	// Podman comes back: the partition starts; the protection goes on
	// (one protector, not one per partition).
	pm.Start()
	q.WaitLog(60*time.Second, 1, "msg", "partition running", "partition", "qm")
	down()
	q.WaitLog(10*time.Second, 6, "msg", "pressure trigger ended (the watched cgroup went away: unit stopped or restarting); re-arming when it is back")
	up()
	q.WaitLog(20*time.Second, 6, "msg", "pressure trigger re-armed")
	for _, ev := range []string{"throttle", "cpu-quota", "stall", "restart"} {
		if n := q.Count("event", ev); n != 0 {
			t.Errorf("%d %s incidents from a protected unit's restarts alone", n, ev)
		}
	}
	if n := q.Count("msg", "protecting", "cgroup", rel); n != 1 {
		t.Errorf("protecting logged %d times, want once (one host-level protector)", n)
	}
}
