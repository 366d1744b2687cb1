package oom

import (
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

	"github.com/containers/qmd/internal/incident/incidenttest"
	"github.com/containers/qmd/internal/testutil"
	"github.com/containers/qmd/pkg/cgroups"
	"golang.org/x/sys/unix"
)

// realMemCgroup makes /sys/fs/cgroup/memory/qmdtest-oom-<random> (v1).
func realMemCgroup(t *testing.T) (*cgroups.Hierarchy, string) {
	t.Helper()
	if testing.Short() {
		t.Skip("real cgroups: skipped with -short")
	}
	testutil.RequireRoot(t)
	if _, err := os.Stat("/sys/fs/cgroup/memory/memory.limit_in_bytes"); err != nil {
		t.Skip("no cgroup v1 memory controller (the v2 VM tests cover v2)")
	}
	h, err := cgroups.NewHierarchy("")
	if err != nil {
		t.Fatal(err)
	}
	if h.Version != cgroups.V1 {
		t.Skipf("hierarchy %v", h.Version)
	}
	var rnd [6]byte
	rand.Read(rnd[:])
	name := "/qmdtest-oom-" + hex.EncodeToString(rnd[:])
	dir := filepath.Join(h.Root, "memory", name)
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		for _, d := range []string{filepath.Join(dir, "libpod-nested"), dir} {
			removeWhenEmpty(d)
		}
	})
	return h, name
}

func sleeper(t *testing.T, h *cgroups.Hierarchy, cg string, score int) int {
	t.Helper()
	cmd := exec.Command("sleep", "30")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	pid := cmd.Process.Pid
	if err := os.WriteFile(filepath.Join(h.Root, "memory", cg, "cgroup.procs"), []byte(strconv.Itoa(pid)), 0); err != nil {
		t.Fatal(err)
	}
	// Children inherit the test's own value; start from a known one.
	if err := WriteScoreAdj("", pid, -1, score); err != nil {
		t.Skipf("cannot set the test child's oom_score_adj to %d: %v", score, err)
	}
	return pid
}

func TestRealAudit(t *testing.T) {
	h, cg := realMemCgroup(t)
	if err := os.Mkdir(filepath.Join(h.Root, "memory", cg, "libpod-nested"), 0o755); err != nil {
		t.Fatal(err)
	}
	initPID := sleeper(t, h, cg, 0)
	nested := sleeper(t, h, cg+"/libpod-nested", 0)
	volunteer := sleeper(t, h, cg, 900)
	rec := &incidenttest.Recorder{}
	a := &Auditor{
		Policy: DefaultPolicy(), Lister: h, Sink: rec,
		Partition: func() (Target, bool) { return Target{Name: "qm", Cgroup: cg, InitPID: initPID}, true },
	}
	repairs, err := a.Audit(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for pid, want := range map[int]int{initPID: 500, nested: 750, volunteer: 900} {
		got, err := ReadScoreAdj("", pid)
		if err != nil || got != want {
			t.Errorf("pid %d: %d %v, want %d", pid, got, err, want)
		}
	}
	if len(repairs) != 2 || len(rec.All()) != 2 {
		t.Fatalf("repairs %+v", repairs)
	}
	for _, r := range repairs {
		if r.Comm != "sleep" {
			t.Errorf("comm %q", r.Comm)
		}
		if r.PID == nested && r.Container != "nested" {
			t.Errorf("container %q", r.Container)
		}
	}

	// Lowering the init from 900 back to 500 works even without
	// CAP_SYS_RESOURCE: the kernel only refuses values below
	// oom_score_adj_min, which an unprivileged write never changes (it is
	// inherited: 0 here).
	if err := WriteScoreAdj("", initPID, 500, 900); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Audit(context.Background()); err != nil {
		t.Fatal(err)
	}
	if v, _ := ReadScoreAdj("", initPID); v != 500 {
		t.Errorf("init not set back: %d", v)
	}

	// An ASIL process (outside the partition) wants -900: below its
	// oom_score_adj_min, refused with EACCES without CAP_SYS_RESOURCE.
	asil := cg + "-asil"
	if err := os.Mkdir(filepath.Join(h.Root, "memory", asil), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { removeWhenEmpty(filepath.Join(h.Root, "memory", asil)) })
	asilPID := sleeper(t, h, asil, 0)
	a.Policy.Protected = []Protected{{Cgroup: asil, Score: -900}}
	repairs, err = a.Audit(context.Background())
	if testutil.HasCap(unix.CAP_SYS_RESOURCE) {
		if err != nil {
			t.Fatalf("with CAP_SYS_RESOURCE: %v", err)
		}
		if v, _ := ReadScoreAdj("", asilPID); v != -900 {
			t.Errorf("ASIL not lowered: %d", v)
		}
		return
	}
	var we *WriteError
	if !errors.As(err, &we) || !errors.Is(err, unix.EACCES) || !strings.Contains(err.Error(), "CAP_SYS_RESOURCE") {
		t.Fatalf("lowering without CAP_SYS_RESOURCE: %v", err)
	}
	t.Logf("refused as expected: %v", err)
	if len(repairs) != 1 || repairs[0].Err == nil || repairs[0].Role != RoleProtected {
		t.Errorf("repairs %+v", repairs)
	}
	if v, _ := ReadScoreAdj("", asilPID); v != 0 {
		t.Errorf("ASIL changed to %d", v)
	}
}

func removeWhenEmpty(d string) {
	if b, err := os.ReadFile(filepath.Join(d, "cgroup.procs")); err == nil {
		for _, f := range strings.Fields(string(b)) {
			if pid, err := strconv.Atoi(f); err == nil {
				syscall.Kill(pid, syscall.SIGKILL)
			}
		}
	}
	for i := 0; i < 100; i++ {
		if err := os.Remove(d); err == nil || errors.Is(err, os.ErrNotExist) {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestRealExitedProcess: a process that exits between listing and repair
// is skipped silently (the /proc directory handle fails with ESRCH).
func TestRealExitedProcess(t *testing.T) {
	testutil.RequireRoot(t)
	cmd := exec.Command("sleep", "30")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p, err := openProc("", cmd.Process.Pid)
	if err != nil {
		t.Fatal(err)
	}
	defer p.close()
	cmd.Process.Kill()
	cmd.Wait()
	if _, err := p.scoreAdj(); !errors.Is(err, ErrProcessGone) {
		t.Errorf("read after exit: %v", err)
	}
	if err := p.setScoreAdj(0, 500); !errors.Is(err, ErrProcessGone) {
		t.Errorf("write after exit: %v", err)
	}
}
