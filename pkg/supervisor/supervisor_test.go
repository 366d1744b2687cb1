package supervisor

import (
	"context"
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/containers/qmd/internal/apierr"
	"github.com/containers/qmd/internal/clock"
	"github.com/containers/qmd/internal/config"
	"github.com/containers/qmd/internal/incident"
	"github.com/containers/qmd/internal/incident/incidenttest"
	"github.com/containers/qmd/internal/runtime"
)

type harness struct {
	t    *testing.T
	rt   *fakeRuntime
	clk  *clock.Fake
	rec  *incidenttest.Recorder
	sup  *Supervisor
	cfg  *config.Config
	stop func()
	done chan error
}

func testConfig(names ...string) *config.Config {
	c := config.Default()
	for _, n := range names {
		c.Partitions = append(c.Partitions, config.DefaultPartition(n))
	}
	return c
}

func newHarness(t *testing.T, cfg *config.Config, rt *fakeRuntime) *harness {
	t.Helper()
	return newHarnessWith(t, cfg, rt, nil)
}

// newHarnessWith lets a test adjust the supervisor's options.
func newHarnessWith(t *testing.T, cfg *config.Config, rt *fakeRuntime, opt func(*Options)) *harness {
	t.Helper()
	if rt == nil {
		rt = newFakeRuntime()
	}
	h := &harness{t: t, rt: rt, clk: clock.NewFake(), rec: &incidenttest.Recorder{}, cfg: cfg, done: make(chan error, 1)}
	rt.clock = h.clk.Now
	log := zap.NewNop()
	if os.Getenv("QMD_TEST_LOG") != "" {
		log = zaptest.NewLogger(t)
	}
	o := Options{Runtime: rt, Sink: h.rec, Clock: h.clk, Rand: func() float64 { return 0.5 }, Log: log}
	if opt != nil {
		opt(&o)
	}
	h.sup = New(cfg, o)
	return h
}

func (h *harness) run() {
	ctx, cancel := context.WithCancel(context.Background())
	h.stop = cancel
	go func() { h.done <- h.sup.Run(ctx) }()
	h.t.Cleanup(func() {
		cancel()
		select {
		case err := <-h.done:
			if err != nil {
				h.t.Errorf("Run: %v", err)
			}
		case <-time.After(5 * time.Second):
			h.t.Error("Run did not return after cancel")
		}
	})
	select {
	case <-h.sup.Ready():
	case <-time.After(5 * time.Second):
		h.t.Fatal("not ready")
	}
}

// waitFor polls a condition on real time; the supervisor runs on its own
// goroutines, the fake clock only drives timers.
func (h *harness) waitFor(what string, cond func() bool) {
	h.t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			h.t.Fatalf("timed out waiting for %s; status %+v", what, h.sup.Statuses())
		}
		time.Sleep(time.Millisecond)
	}
}

func (h *harness) state(name string) Status {
	st, err := h.sup.Status(name)
	if err != nil {
		h.t.Fatal(err)
	}
	return st
}

func (h *harness) waitState(name string, s State) Status {
	h.t.Helper()
	h.waitFor(string(s), func() bool { return h.state(name).State == s })
	return h.state(name)
}

// waitRestartArmed waits until a crash was seen and its restart delay is
// armed (the loop arms the timer before it publishes the state).
func (h *harness) waitRestartArmed(name string) {
	h.t.Helper()
	h.waitFor("restart delay armed", func() bool {
		st := h.state(name)
		return st.State == Activating && st.SubState == SubRestarting
	})
}

// crashUntilFailed drives a partition whose init exits at once through its
// restart delays until the start limit fails it: each step waits for the
// restart to be armed, moves the clock past it, and waits for the start.
func (h *harness) crashUntilFailed(name string) {
	h.t.Helper()
	for i := 0; h.state(name).State != Failed; i++ {
		if i > 20 {
			h.t.Fatalf("%s not failed after %d restarts: %+v", name, i, h.state(name))
		}
		h.waitFor("restart armed or failed", func() bool {
			st := h.state(name)
			return st.SubState == SubRestarting || st.State == Failed
		})
		if h.state(name).State == Failed {
			return
		}
		n := h.state(name).NRestarts
		h.clk.Advance(time.Second)
		h.waitFor("next start", func() bool {
			st := h.state(name)
			return st.NRestarts > n || st.State == Failed
		})
	}
}

func TestFreshStartCreatesAndRuns(t *testing.T) {
	h := newHarness(t, testConfig("qm"), nil)
	h.run()
	st := h.waitState("qm", Active)
	if st.ContainerID == "" || st.MainPID == 0 {
		t.Fatalf("running without container or pid: %+v", st)
	}
	if c, s, n := h.rt.count(); c != 1 || s != 1 || n != 1 {
		t.Errorf("creates=%d starts=%d containers=%d, want 1 1 1", c, s, n)
	}
	if a, sub := st.ActiveSub(); a != "active" || sub != "running" {
		t.Errorf("ActiveSub = %s/%s", a, sub)
	}
}

func TestCrashRestartsImmediatelyThenBacksOff(t *testing.T) {
	h := newHarness(t, testConfig("qm"), nil)
	h.run()
	first := h.waitState("qm", Active)

	h.rt.kill("qm", 137)
	h.waitFor("first restart (immediate)", func() bool {
		st := h.state("qm")
		return st.State == Active && st.MainPID != first.MainPID
	})
	if st := h.state("qm"); st.NRestarts != 1 || st.ContainerID != first.ContainerID {
		t.Fatalf("after first crash: %+v (want same container, 1 restart)", st)
	}

	// A second crash soon after backs off 100 ms: nothing happens until the
	// clock moves.
	pid := h.state("qm").MainPID
	h.rt.kill("qm", 137)
	h.waitRestartArmed("qm")
	h.clk.Advance(99 * time.Millisecond)
	if h.state("qm").SubState != SubRestarting {
		t.Fatal("restarted before the backoff delay")
	}
	h.clk.Advance(time.Millisecond)
	h.waitFor("second restart", func() bool { st := h.state("qm"); return st.State == Active && st.MainPID != pid })

	// Third crash: 200 ms.
	h.rt.kill("qm", 137)
	h.waitRestartArmed("qm")
	h.clk.Advance(199 * time.Millisecond)
	if h.state("qm").SubState != SubRestarting {
		t.Fatal("restarted before 200ms")
	}
	h.clk.Advance(time.Millisecond)
	h.waitState("qm", Active)
	if got := h.rec.Count(incident.Restart); got != 3 {
		t.Errorf("restart incidents = %d, want 3", got)
	}
	if st := h.state("qm"); st.NRestarts != 3 {
		t.Errorf("NRestarts = %d", st.NRestarts)
	}
}

func TestBackoffResetsAfterCleanRunning(t *testing.T) {
	h := newHarness(t, testConfig("qm"), nil)
	h.run()
	h.waitState("qm", Active)
	h.rt.kill("qm", 1)
	h.waitFor("restart 1", func() bool { return h.state("qm").NRestarts == 1 && h.state("qm").State == Active })
	// Running cleanly for 10 minutes resets the backoff: the next crash
	// restarts at once again.
	h.clk.Advance(10 * time.Minute)
	h.rt.kill("qm", 1)
	h.waitFor("immediate restart 2", func() bool { return h.state("qm").NRestarts == 2 && h.state("qm").State == Active })
	if st := h.state("qm"); st.State != Active {
		t.Errorf("not restarted at once after clean running: %+v", st)
	}
}

func TestStartLimitFailsAndResetFailedStartsAgain(t *testing.T) {
	rt := newFakeRuntime()
	rt.exitAtOnce["qm"] = true
	h := newHarness(t, testConfig("qm"), rt)
	h.run()
	// Starts 1..5 are allowed within 10 s; the backoff delays (0, 100, 200,
	// 400 ms) keep them inside the interval; the 6th is refused.
	h.crashUntilFailed("qm")
	st := h.state("qm")
	if st.Result != "start-limit-hit" {
		t.Errorf("result %q", st.Result)
	}
	_, starts, _ := rt.count()
	if starts != 5 {
		t.Errorf("starts = %d, want 5 (the start limit)", starts)
	}
	if h.rec.Count(incident.StartLimit) != 1 {
		t.Error("no start-limit incident")
	}
	// Stays down.
	h.clk.Advance(time.Minute)
	if _, s, _ := rt.count(); s != 5 {
		t.Errorf("started again while failed: %d", s)
	}
	if err := h.sup.Start("qm"); !errors.Is(err, apierr.ErrStartLimitHit) {
		t.Errorf("Start on failed = %v, want ErrStartLimitHit", err)
	}
	rt.mu.Lock()
	rt.exitAtOnce["qm"] = false
	rt.mu.Unlock()
	if err := h.sup.ResetFailed("qm"); err != nil {
		t.Fatal(err)
	}
	h.waitState("qm", Active)
}

func TestAdoptionKeepsRunningContainer(t *testing.T) {
	cfg := testConfig("qm")
	rt := newFakeRuntime()
	id := rt.add("qm", map[string]string{runtime.LabelPartition: "qm", runtime.LabelConfigHash: cfg.Partitions[0].CreateHash()}, true)
	h := newHarness(t, cfg, rt)
	h.run()
	st := h.waitState("qm", Active)
	if st.ContainerID != id || st.Drift {
		t.Fatalf("not adopted: %+v", st)
	}
	if c, s, _ := rt.count(); c != 0 || s != 0 {
		t.Errorf("adoption created %d / started %d containers", c, s)
	}
	if h.rec.Count(incident.Adopt) != 1 {
		t.Error("no adopt incident")
	}
}

// recreatedAfterCrash kills the kept container old and checks that the
// restart created exactly one new container, no longer drifted.
func recreatedAfterCrash(t *testing.T, h *harness, rt *fakeRuntime, old string) {
	t.Helper()
	h.rt.kill("qm", 137)
	h.waitFor("recreated", func() bool { st := h.state("qm"); return st.State == Active && st.ContainerID != old })
	if st := h.state("qm"); st.Drift {
		t.Error("still drifted after recreate")
	}
	if c, _, n := rt.count(); c != 1 || n != 1 {
		t.Errorf("creates=%d containers=%d, want 1 and 1", c, n)
	}
}

func TestDriftKeepsRunningThenRecreatesOnRestart(t *testing.T) {
	cfg := testConfig("qm")
	rt := newFakeRuntime()
	old := rt.add("qm", map[string]string{runtime.LabelPartition: "qm", runtime.LabelConfigHash: "0123456789abcdef"}, true)
	h := newHarness(t, cfg, rt)
	h.run()
	st := h.waitState("qm", Active)
	if st.ContainerID != old || !st.Drift {
		t.Fatalf("drifted container must be kept and flagged: %+v", st)
	}
	if h.rec.Count(incident.ConfigDrift) != 1 {
		t.Error("no config-drift incident")
	}
	recreatedAfterCrash(t, h, rt, old)
}

// TestMisplacedContainerRecreatedOnRestart: a container created in
// machine.slice (by a qmd before partition slices) has the current hash
// but not the configured slice: it is kept running, flagged, and created
// anew in the slice at its next restart.
func TestMisplacedContainerRecreatedOnRestart(t *testing.T) {
	cfg := testConfig("qm")
	cfg.Partitions[0].Slice = "qm.slice"
	rt := newFakeRuntime()
	old := rt.add("qm", map[string]string{runtime.LabelPartition: "qm", runtime.LabelConfigHash: cfg.Partitions[0].CreateHash()}, true)
	rt.setParent(old, "machine.slice")
	h := newHarness(t, cfg, rt)
	h.run()
	st := h.waitState("qm", Active)
	if st.ContainerID != old || !st.Drift {
		t.Fatalf("misplaced container must be kept and flagged: %+v", st)
	}
	var drift []incident.Incident
	for _, i := range h.rec.All() {
		if i.Type == incident.ConfigDrift {
			drift = append(drift, i)
		}
	}
	if len(drift) != 1 || !strings.Contains(drift[0].Summary, "machine.slice") || drift[0].Details["slice"] != "qm.slice" {
		t.Fatalf("config-drift incidents %+v: want one naming machine.slice and the slice", drift)
	}
	recreatedAfterCrash(t, h, rt, old)
}

func TestNameConflictIsNotTouched(t *testing.T) {
	rt := newFakeRuntime()
	rt.add("qm", map[string]string{}, true)
	h := newHarness(t, testConfig("qm"), rt)
	h.run()
	st := h.waitState("qm", Failed)
	if st.Result != "name-conflict" {
		t.Errorf("result %q", st.Result)
	}
	if c, s, _ := rt.count(); c != 0 || s != 0 {
		t.Error("touched a container qmd does not own")
	}
}

func TestPodmanLostAndRegained(t *testing.T) {
	h := newHarness(t, testConfig("qm"), nil)
	h.run()
	first := h.waitState("qm", Active)
	h.rt.setDown(true)
	h.waitFor("podman down seen", func() bool { return !h.sup.PodmanUp() })
	if err := h.sup.Restart("qm"); !errors.Is(err, apierr.ErrPodmanUnavailable) {
		t.Errorf("Restart while podman is down = %v", err)
	}
	// The partition dies while Podman is away: no event reaches qmd.
	h.rt.mu.Lock()
	c := h.rt.find("qm")
	c.c.Running, c.c.Pid, c.c.Status = false, 0, "exited"
	h.rt.mu.Unlock()
	h.rt.setDown(false)
	// Reconnection runs on the fake clock's backoff.
	h.waitFor("reconnected", func() bool {
		if h.clk.Pending() > 0 {
			h.clk.Advance(time.Second)
		}
		return h.sup.PodmanUp()
	})
	h.waitFor("restarted after resync", func() bool { st := h.state("qm"); return st.State == Active && st.MainPID != first.MainPID })
	if _, _, n := h.rt.count(); n != 1 {
		t.Errorf("%d containers after reconnect, want 1", n)
	}
	if h.rec.Count(incident.PodmanLost) != 1 {
		t.Error("no podman-lost incident")
	}
}

func TestStopAndStart(t *testing.T) {
	h := newHarness(t, testConfig("qm"), nil)
	h.run()
	h.waitState("qm", Active)
	if err := h.sup.Stop("qm"); err != nil {
		t.Fatal(err)
	}
	h.waitState("qm", Inactive)
	if h.state("qm").NRestarts != 0 {
		t.Error("a requested stop counted as a crash")
	}
	if err := h.sup.Start("qm"); err != nil {
		t.Fatal(err)
	}
	h.waitState("qm", Active)
	if _, err := h.sup.Status("nope"); !errors.Is(err, apierr.ErrNoSuchPartition) {
		t.Errorf("unknown partition: %v", err)
	}
}

func TestRestartPolicyOnFailure(t *testing.T) {
	cfg := testConfig("qm")
	cfg.Partitions[0].Restart.Policy = "on-failure"
	h := newHarness(t, cfg, nil)
	h.run()
	h.waitState("qm", Active)
	h.rt.kill("qm", 0)
	st := h.waitState("qm", Inactive)
	if st.Result != "success" || st.NRestarts != 0 {
		t.Errorf("clean exit under on-failure: %+v", st)
	}
}

func TestTwoPartitionsIndependent(t *testing.T) {
	rt := newFakeRuntime()
	rt.exitAtOnce["crash"] = true
	cfg := testConfig("qm", "crash")
	cfg.Partitions[1].Exec = []string{"/bin/false"}
	h := newHarness(t, cfg, rt)
	h.run()
	h.waitState("qm", Active)
	h.crashUntilFailed("crash")
	if st := h.state("qm"); st.State != Active || st.NRestarts != 0 {
		t.Errorf("qm affected by the other partition: %+v", st)
	}
}

func TestReloadAddsPartitionAndResetsFailed(t *testing.T) {
	rt := newFakeRuntime()
	rt.exitAtOnce["qm"] = true
	cfg := testConfig("qm")
	cfg.Partitions[0].Restart.StartLimitBurst = 1
	h := newHarness(t, cfg, rt)
	h.run()
	h.waitState("qm", Failed)
	rt.mu.Lock()
	rt.exitAtOnce["qm"] = false
	rt.mu.Unlock()
	next := testConfig("qm", "ivi")
	if err := h.sup.Reload(next); err != nil {
		t.Fatal(err)
	}
	h.waitState("qm", Active)
	h.waitState("ivi", Active)
}

func TestHealth(t *testing.T) {
	h := newHarness(t, testConfig("qm"), nil)
	h.run()
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if err := h.sup.Health(ctx); err != nil {
		t.Fatalf("healthy supervisor: %v", err)
	}
	// Podman down is not qmd wedged: the watchdog keeps being fed.
	h.rt.setDown(true)
	h.waitFor("podman down seen", func() bool { return !h.sup.PodmanUp() })
	if err := h.sup.Health(ctx); err != nil {
		t.Fatalf("health failed because podman is down: %v", err)
	}
}

// A partition loop waiting on a slow Podman call is busy, not wedged: the
// watchdog keeps being fed (a stop can take stop_timeout).
func TestHealthWhileBusy(t *testing.T) {
	h := newHarness(t, testConfig("qm"), nil)
	h.run()
	h.waitState("qm", Active)
	gate := make(chan struct{})
	h.rt.mu.Lock()
	h.rt.startGate = gate
	h.rt.mu.Unlock()
	h.rt.kill("qm", 137)
	h.waitFor("restart in progress", func() bool { return h.state("qm").State == Activating })
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if err := h.sup.Health(ctx); err != nil {
		t.Errorf("busy loop reported unhealthy: %v", err)
	}
	close(gate)
	h.waitState("qm", Active)
}
