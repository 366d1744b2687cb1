package protect

import (
	"crypto/rand"
	"encoding/hex"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
	"golang.org/x/sys/unix"

	"github.com/containers/qmd/internal/testutil"
	"github.com/containers/qmd/pkg/cgroups"
)

// TestRealProtectedCgroupRecreated: on the host's real cgroup2 mount (the
// hybrid build host's /sys/fs/cgroup/unified, or a pure v2 root), a
// protected cgroup with real PSI triggers and a process whose
// oom_score_adj drifted. The protector repairs the score, and when the
// cgroup is removed and created again (a restarted unit) its triggers end
// on POLLERR without waking the loop and are re-armed on the new cgroup,
// whose new process is repaired too.
func TestRealProtectedCgroupRecreated(t *testing.T) {
	if testing.Short() {
		t.Skip("real cgroups: skipped with -short")
	}
	testutil.RequireRoot(t)
	psiRoot := FindPSIRoot(cgroups.DefaultRoot)
	if psiRoot == "" {
		t.Skip("no cgroup2 mount")
	}
	var rnd [6]byte
	_, _ = rand.Read(rnd[:])
	rel := "/qmdtest-protect-" + hex.EncodeToString(rnd[:])
	dir := filepath.Join(psiRoot, rel)
	mk := func() *exec.Cmd {
		t.Helper()
		if err := os.Mkdir(dir, 0o755); err != nil {
			t.Skipf("cannot create a v2 cgroup: %v", err)
		}
		if _, err := os.Stat(filepath.Join(dir, "memory.pressure")); err != nil {
			t.Skip("no per-cgroup PSI")
		}
		cmd := exec.Command("sleep", "60")
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "cgroup.procs"), []byte(strconv.Itoa(cmd.Process.Pid)), 0); err != nil {
			t.Fatal(err)
		}
		// A drifted score: the unit's process came up at 0.
		if err := os.WriteFile("/proc/"+strconv.Itoa(cmd.Process.Pid)+"/oom_score_adj", []byte("0"), 0); err != nil {
			t.Fatal(err)
		}
		return cmd
	}
	stop := func(cmd *exec.Cmd) {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		testutil.RemoveCgroup(t, dir)
	}
	cmd := mk()
	t.Cleanup(func() { stop(cmd) })
	score := func(c *exec.Cmd) string {
		b, _ := os.ReadFile("/proc/" + strconv.Itoa(c.Process.Pid) + "/oom_score_adj")
		return strings.TrimSpace(string(b))
	}

	core, logs := observer.New(zapcore.DebugLevel)
	cfg := Config{Entries: []Entry{{Cgroup: rel, OOMScoreAdj: -900, WatchPressure: true}}, Window: 2 * time.Second,
		MemoryThreshold: 150 * time.Millisecond, CPUThreshold: 100 * time.Millisecond, IOThreshold: 100 * time.Millisecond,
		Resync: time.Hour}
	var incs []Incident
	incCh := make(chan Incident, 10)
	p, err := New(Options{Log: zap.New(core), RearmMin: 20 * time.Millisecond, Incident: func(i Incident) { incCh <- i }}, cfg)
	if err != nil {
		t.Fatal(err)
	}
	testutil.RunInBackground(t, p.Run)
	// Lowering a score below the process's minimum needs
	// CAP_SYS_RESOURCE (the build container has none): then the repair
	// must fail loudly once (warn), not silently.
	canLower := testutil.HasCap(unix.CAP_SYS_RESOURCE)
	waitInc := func() {
		t.Helper()
		if !canLower {
			// Each process whose repair is refused: one warning (then
			// debug on every later audit).
			incs = append(incs, Incident{})
			n := len(incs)
			warned := func() int {
				return logs.FilterMessage("protected units' oom_score_adj audit").FilterLevelExact(zapcore.WarnLevel).Len()
			}
			testutil.Eventually(t, "the refused repair reported", func() bool { return warned() >= n })
			time.Sleep(100 * time.Millisecond)
			if w := warned(); w != n {
				t.Errorf("%d warnings for %d refused processes", w, n)
			}
			return
		}
		select {
		case i := <-incCh:
			incs = append(incs, i)
			t.Logf("incident %s: %s", i.Type, i.Summary)
		case <-time.After(10 * time.Second):
			for _, e := range logs.All() {
				t.Logf("log: %s %v", e.Message, e.ContextMap())
			}
			t.Fatal("no oom-score-repair incident")
		}
	}
	waitInc()
	if canLower {
		if got := score(cmd); got != "-900" || incs[0].Type != "oom-score-repair" {
			t.Fatalf("oom_score_adj %s after the start audit (incident %+v)", got, incs[0])
		}
	} else {
		t.Log("no CAP_SYS_RESOURCE: the repair to -900 is refused by the kernel; checked that it is reported (warn, once)")
	}
	testutil.Eventually(t, "triggers armed", func() bool { return p.Stats().Arms == 3 })

	for round := 1; round <= 3; round++ {
		var before, after syscall.Rusage
		_ = syscall.Getrusage(syscall.RUSAGE_SELF, &before)
		loops := p.Stats().Loops
		stop(cmd) // the unit stopped: the cgroup is removed
		testutil.Eventually(t, "triggers ended", func() bool {
			return logs.FilterMessage("pressure trigger ended (the watched cgroup went away: unit stopped or restarting); re-arming when it is back").Len() == 3*round
		})
		time.Sleep(300 * time.Millisecond) // re-arm attempts back off while the cgroup is gone
		_ = syscall.Getrusage(syscall.RUSAGE_SELF, &after)
		cpu := time.Duration(after.Utime.Nano() + after.Stime.Nano() - before.Utime.Nano() - before.Stime.Nano())
		st := p.Stats()
		t.Logf("round %d: cgroup gone 300 ms: process CPU %v, protector loop iterations %d, wake-ups %d", round, cpu, st.Loops-loops, st.Wakeups)
		if st.Wakeups > uint64(round) {
			// A fresh trigger may wake up once with nothing behind it
			// (confirmed away); an ended one that spun would wake up
			// thousands of times.
			t.Fatalf("%d wake-ups after %d rounds", st.Wakeups, round)
		}
		if st.Loops-loops > 30 {
			t.Errorf("%d loop iterations while the cgroup was gone: spinning", st.Loops-loops)
		}
		cmd = mk() // the unit started again, same path, new cgroup
		testutil.Eventually(t, "re-armed", func() bool { return p.Stats().Arms == uint64(3*(round+1)) })
		waitInc()
		if got := score(cmd); canLower && got != "-900" {
			t.Errorf("round %d: new process's oom_score_adj %s, want -900", round, got)
		}
	}
	if st := p.Stats(); st.Signals != 0 {
		t.Errorf("%d pressure signals from restarts alone", st.Signals)
	}
}
