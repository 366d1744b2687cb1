package supervisor

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/containers/qmd/internal/apierr"
	"github.com/containers/qmd/internal/config"
	"github.com/containers/qmd/internal/incident"
	"github.com/containers/qmd/internal/runtime"
)

// Regression tests for issue 8 ("What was seen"), one per item.

// 1. A slow Podman is not a wedged qmd: while a start hangs in Podman and
// while Podman is gone, every loop still answers the health check.
func TestHealthIgnoresPodmanLatency(t *testing.T) {
	h := newHarness(t, testConfig("qm", "ivi"), nil)
	h.run()
	h.waitState("qm", Active)
	h.waitState("ivi", Active)
	gate := make(chan struct{})
	h.rt.mu.Lock()
	h.rt.startGate = gate
	h.rt.mu.Unlock()
	h.rt.kill("qm", 137)
	h.waitFor("start hanging in podman", func() bool { return h.state("qm").State == Activating })
	for i := 0; i < 20; i++ {
		ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
		err := h.sup.Health(ctx)
		cancel()
		if err != nil {
			t.Fatalf("health check %d failed while podman is slow: %v", i, err)
		}
	}
	// Commands are still answered, too.
	if err := h.sup.ResetFailed("ivi"); err != nil {
		t.Errorf("command while another partition waits on podman: %v", err)
	}
	close(gate)
	h.waitState("qm", Active)
}

// 2. A timed-out start is retried with backoff while the events stream is
// healthy; it does not burn the start limit, and it is reported.
func TestTimedOutStartIsRetried(t *testing.T) {
	rt := newFakeRuntime()
	timeout := fmt.Errorf("start: %w: context deadline exceeded", runtime.ErrTimeout)
	rt.startErrs = []error{timeout, timeout, timeout, timeout, timeout, timeout}
	cfg := testConfig("qm")
	h := newHarness(t, cfg, rt)
	h.run()
	h.waitFor("first timeout seen", func() bool { return h.state("qm").Conditions.Has(PodmanDegraded) })
	deadline := time.Now().Add(5 * time.Second)
	for h.state("qm").State != Active && time.Now().Before(deadline) {
		h.clk.Advance(15 * time.Second) // past any retry delay (max 10 s)
		time.Sleep(5 * time.Millisecond)
	}
	st := h.waitState("qm", Active)
	if st.Conditions.Has(PodmanDegraded) {
		t.Errorf("podman-degraded still set after a successful start: %v", st.Conditions)
	}
	if st.State == Failed || st.NRestarts != 0 {
		t.Errorf("timeouts counted against the partition: %+v", st)
	}
	if n := h.rec.Count(incident.PodmanSlow); n != 2 {
		t.Errorf("podman-slow incidents = %d, want 2 (timed out, answers again)", n)
	}
	if !h.sup.PodmanUp() {
		t.Error("a timeout was taken for podman being gone")
	}
}

// 3a. A Wait that fails is re-armed: an exit that only Wait reports (the
// event was lost) is still seen.
func TestFailedWaitIsRearmed(t *testing.T) {
	rt := newFakeRuntime()
	rt.waitErrs = []error{errors.New("wait: connection reset")}
	h := newHarness(t, testConfig("qm"), rt)
	h.run()
	first := h.waitState("qm", Active)
	h.waitFor("wait re-armed", func() bool { rt.mu.Lock(); defer rt.mu.Unlock(); return rt.waits >= 2 })
	rt.killQuietly("qm", 137)
	h.waitFor("restarted", func() bool {
		st := h.state("qm")
		return st.State == Active && st.MainPID != first.MainPID && st.NRestarts == 1
	})
}

// 3b. A remove event while running does not make qmd forget the container
// it runs: the next death is seen.
func TestRemoveEventDoesNotLoseTheContainer(t *testing.T) {
	h := newHarness(t, testConfig("qm"), nil)
	h.run()
	first := h.waitState("qm", Active)
	h.rt.emit("qm", "remove") // stale/replayed: the container still runs
	h.rt.emit("qm", "cleanup")
	time.Sleep(20 * time.Millisecond)
	if st := h.state("qm"); st.State != Active || st.ContainerID != first.ContainerID {
		t.Fatalf("spurious events changed the partition: %+v", st)
	}
	h.rt.kill("qm", 137)
	h.waitFor("death seen and restarted", func() bool {
		st := h.state("qm")
		return st.State == Active && st.MainPID != first.MainPID
	})
	if !h.rt.running("qm") {
		t.Error("qmd says running, podman says exited")
	}
}

// 3c. Nothing at all reports the exit (no event, Wait broken): the
// resync tick finds it.
func TestResyncFindsSilentExit(t *testing.T) {
	rt := newFakeRuntime()
	rt.waitErrs = []error{errors.New("x"), errors.New("x"), errors.New("x"), errors.New("x")}
	h := newHarness(t, testConfig("qm"), rt)
	h.run()
	h.waitState("qm", Active)
	h.waitFor("wait given up", func() bool { rt.mu.Lock(); defer rt.mu.Unlock(); return rt.waits >= 3 })
	rt.killQuietly("qm", 1)
	time.Sleep(20 * time.Millisecond)
	if h.state("qm").NRestarts != 0 {
		t.Fatal("exit seen without any source: the test does not test the resync")
	}
	h.clk.Advance(40 * time.Second) // past the jittered 30 s resync
	h.waitFor("restarted by the resync", func() bool { return h.state("qm").NRestarts == 1 && h.state("qm").State == Active })
}

// 4a. A partition removed by a reload is no longer supervised: its
// container is left running and not restarted when it dies.
func TestReloadRemovedPartitionIsNotSupervised(t *testing.T) {
	h := newHarness(t, testConfig("qm", "ivi"), nil)
	h.run()
	h.waitState("qm", Active)
	h.waitState("ivi", Active)
	if err := h.sup.Reload(testConfig("qm")); err != nil {
		t.Fatal(err)
	}
	if _, err := h.sup.Status("ivi"); !errors.Is(err, apierr.ErrNoSuchPartition) {
		t.Fatalf("removed partition still listed: %v", err)
	}
	if !h.rt.running("ivi") {
		t.Fatal("removed partition's container was stopped (stop_on_exit is off)")
	}
	_, startsBefore, _ := h.rt.count()
	h.rt.kill("ivi", 137)
	h.clk.Advance(time.Minute)
	time.Sleep(50 * time.Millisecond)
	if _, starts, _ := h.rt.count(); starts != startsBefore || h.rt.running("ivi") {
		t.Errorf("removed partition restarted (starts %d -> %d)", startsBefore, starts)
	}
	if st := h.state("qm"); st.State != Active {
		t.Errorf("remaining partition disturbed: %+v", st)
	}
}

// 4b. Changed policy reaches the running partition: a new resource
// controller is built from the reloaded configuration, without a restart.
func TestReloadAppliesPolicyLive(t *testing.T) {
	ff := &fakeFactory{}
	cfg := testConfig("qm")
	h := newHarnessWith(t, cfg, nil, func(o *Options) { o.Resources = ff.New })
	h.run()
	first := h.waitState("qm", Active)
	h.waitFor("policy attached", func() bool { return ff.count() == 1 })
	next := testConfig("qm")
	next.Partitions[0].OOMScoreAdj = 600
	next.Partitions[0].Memory.High = config.Size{Bytes: 1 << 30, Set: true}
	if err := h.sup.Reload(next); err != nil {
		t.Fatal(err)
	}
	h.waitFor("policy rebuilt", func() bool { return ff.count() == 2 })
	r := ff.last()
	if r.cfg.OOMScoreAdj != 600 || r.cfg.Memory.High.Bytes != 1<<30 || r.init.PID != first.MainPID {
		t.Errorf("new controller: oom %d high %d pid %d", r.cfg.OOMScoreAdj, r.cfg.Memory.High.Bytes, r.init.PID)
	}
	h.waitFor("reported", func() bool { return h.rec.Count(incident.PolicyReload) == 1 })
	if st := h.state("qm"); st.MainPID != first.MainPID || st.NRestarts != 0 || st.OOMScoreAdj != 600 {
		t.Errorf("partition restarted or not updated: %+v", st)
	}
	// The same configuration again changes nothing.
	if err := h.sup.Reload(next); err != nil {
		t.Fatal(err)
	}
	time.Sleep(20 * time.Millisecond)
	if ff.count() != 2 {
		t.Errorf("an unchanged reload rebuilt the policy (%d builds)", ff.count())
	}
}

// 5. Reloads race with readers (run under -race).
func TestReloadWhileReading(t *testing.T) {
	h := newHarness(t, testConfig("qm", "ivi"), nil)
	h.run()
	h.waitState("qm", Active)
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for i := 0; i < 3; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				_ = h.sup.Statuses()
				_, _ = h.sup.Config("qm")
				ctx, cancel := context.WithTimeout(context.Background(), time.Second)
				if err := h.sup.Health(ctx); err != nil {
					t.Errorf("health: %v", err)
				}
				cancel()
			}
		}()
	}
	for i := 0; i < 100; i++ {
		c := testConfig("qm", "ivi")
		c.Partitions[0].StopTimeout.Duration = time.Duration(i+1) * time.Second
		if err := h.sup.Reload(c); err != nil {
			t.Fatal(err)
		}
	}
	close(stop)
	wg.Wait()
	h.waitFor("last reload applied", func() bool {
		c, err := h.sup.Config("qm")
		return err == nil && c.StopTimeout.Duration == 100*time.Second
	})
}

// 6. Conditions are independent: a frozen partition stays frozen when the
// operator sets memory.high, and throttled + frozen show together.
func TestConditionsAreIndependent(t *testing.T) {
	ff := &fakeFactory{}
	h := newHarnessWith(t, testConfig("qm"), nil, func(o *Options) { o.Resources = ff.New })
	h.run()
	h.waitState("qm", Active)
	h.waitFor("policy attached", func() bool { return ff.count() == 1 })
	// The factory has made the policy, but the loop may not have attached
	// it yet: the API then answers busy, try again (as a client would).
	var err error
	h.waitFor("policy attached to the loop", func() bool {
		err = h.sup.Freeze("qm")
		return !errors.Is(err, ErrBusy)
	})
	if err != nil {
		t.Fatal(err)
	}
	st := h.state("qm")
	if !st.Conditions.Has(Frozen) || st.SubState != SubFrozen {
		t.Fatalf("Freeze returned before the state says frozen: %+v", st)
	}
	if err := h.sup.SetMemoryHigh("qm", 1<<30, true); err != nil {
		t.Fatal(err)
	}
	ff.last().hooks.Condition(Throttled, true, "test pressure")
	h.waitFor("throttled", func() bool { return h.state("qm").Conditions.Has(Throttled) })
	st = h.state("qm")
	if !st.Conditions.Has(Frozen) || st.SubState != SubFrozen || st.State != Active {
		t.Errorf("frozen lost: %+v", st)
	}
	if err := h.sup.Thaw("qm"); err != nil {
		t.Fatal(err)
	}
	if st := h.state("qm"); st.Conditions.Has(Frozen) || st.SubState != SubThrottled {
		t.Errorf("after thaw: %+v", st)
	}
	if got := ff.last().high; got != 1<<30 {
		t.Errorf("memory.high %d", got)
	}
	// A failing freeze is reported to the caller, and changes nothing.
	ff.last().freezeFn = func() error { return errors.New("freezer: device busy") }
	if err := h.sup.Freeze("qm"); err == nil || h.state("qm").Conditions.Has(Frozen) {
		t.Errorf("failed freeze: err %v, conditions %v", err, h.state("qm").Conditions)
	}
}

// 7a. A failed stop is not a success: failed, Result stop-failed.
func TestStopErrorFails(t *testing.T) {
	rt := newFakeRuntime()
	h := newHarness(t, testConfig("qm"), rt)
	h.run()
	h.waitState("qm", Active)
	rt.mu.Lock()
	rt.stopErr = errors.New("stop: runc: permission denied")
	rt.mu.Unlock()
	if err := h.sup.Stop("qm"); err != nil {
		t.Fatal(err)
	}
	st := h.waitState("qm", Failed)
	if st.Result != "stop-failed" {
		t.Errorf("result %q", st.Result)
	}
	all := h.rec.All()
	if last := all[len(all)-1]; last.Type != incident.Stop || last.Summary == "partition stopped" {
		t.Errorf("stop incident: %+v", last)
	}
}

// 7b. A frozen partition that must restart is killed, not stopped, and a
// policy restart kills too.
func TestFrozenRestartKills(t *testing.T) {
	ff := &fakeFactory{}
	rt := newFakeRuntime()
	h := newHarnessWith(t, testConfig("qm"), rt, func(o *Options) { o.Resources = ff.New })
	h.run()
	first := h.waitState("qm", Active)
	h.waitFor("policy attached", func() bool { return ff.count() == 1 })
	r := ff.last()
	r.killFn = func() { rt.killQuietly("qm", 137) }
	if err := h.sup.Freeze("qm"); err != nil {
		t.Fatal(err)
	}
	if err := h.sup.Restart("qm"); err != nil {
		t.Fatal(err)
	}
	h.waitFor("restarted", func() bool { st := h.state("qm"); return st.State == Active && st.MainPID != first.MainPID })
	if r.kills != 1 {
		t.Errorf("frozen partition: %d cgroup kills, want 1", r.kills)
	}
	if st := h.state("qm"); st.Conditions.Has(Frozen) || st.NRestarts != 0 {
		t.Errorf("after restart: %+v (a requested restart is not a crash)", st)
	}
	// A policy restart (fork bomb, stall) kills as well.
	h.waitFor("new policy", func() bool { return ff.count() == 2 })
	r2 := ff.last()
	r2.killFn = func() { rt.killQuietly("qm", 137) }
	pid := h.state("qm").MainPID
	r2.hooks.Restart("fork bomb")
	h.waitFor("policy restart", func() bool { st := h.state("qm"); return st.State == Active && st.MainPID != pid })
	if r2.kills != 1 {
		t.Errorf("policy restart: %d kills", r2.kills)
	}
}

// Podman lost during a start: the start is retried once it is back, and
// there is exactly one container.
func TestPodmanLostMidStart(t *testing.T) {
	rt := newFakeRuntime()
	h := newHarness(t, testConfig("qm"), rt)
	h.run()
	h.waitState("qm", Active)
	rt.mu.Lock()
	rt.startErrs = []error{fmt.Errorf("start: %w: connection refused", runtime.ErrUnavailable)}
	rt.mu.Unlock()
	rt.kill("qm", 137)
	h.waitFor("degraded", func() bool { return h.state("qm").Conditions.Has(PodmanDegraded) })
	h.clk.Advance(time.Second)
	h.waitFor("running again", func() bool { st := h.state("qm"); return st.State == Active && !st.Conditions.Has(PodmanDegraded) })
	if _, _, n := rt.count(); n != 1 {
		t.Errorf("%d containers", n)
	}
	if st := h.state("qm"); st.NRestarts != 1 {
		t.Errorf("NRestarts %d, want 1", st.NRestarts)
	}
}

// The kernel reports the init gone (pidfd) while Podman, slow, still says
// running: the state shows it at once (not "running" with a dead MainPID),
// and the restart waits until Podman agrees (no start of a container
// Podman thinks runs).
func TestInitDeathShowsBeforePodmanNotices(t *testing.T) {
	var mu sync.Mutex
	watches := map[int]chan struct{}{}
	procWatch := func(_ context.Context, pid int) (<-chan struct{}, error) {
		mu.Lock()
		defer mu.Unlock()
		if watches[pid] == nil {
			watches[pid] = make(chan struct{})
		}
		return watches[pid], nil
	}
	rt := newFakeRuntime()
	h := newHarnessWith(t, testConfig("qm"), rt, func(o *Options) { o.ProcWatch = procWatch })
	h.run()
	first := h.waitState("qm", Active)
	h.waitFor("pidfd armed", func() bool { mu.Lock(); defer mu.Unlock(); return watches[first.MainPID] != nil })
	mu.Lock()
	close(watches[first.MainPID])
	mu.Unlock()
	h.waitFor("death shown", func() bool {
		st := h.state("qm")
		return st.State == Activating && st.MainPID == 0 && st.NRestarts == 1
	})
	_, starts, _ := rt.count()
	for i := 0; i < 60; i++ { // podman still says running: re-inspects, no start
		h.clk.Advance(10 * time.Millisecond)
		time.Sleep(time.Millisecond)
	}
	if _, s, _ := rt.count(); s != starts {
		t.Fatalf("started while podman still reported the dead init running (%d -> %d starts)", starts, s)
	}
	rt.killQuietly("qm", 137) // podman catches up
	h.waitFor("restarted", func() bool {
		h.clk.Advance(600 * time.Millisecond) // the re-inspect timer runs on the fake clock
		st := h.state("qm")
		return st.State == Active && st.MainPID != first.MainPID
	})
	if st := h.state("qm"); st.NRestarts != 1 || st.LastExit != 137 {
		t.Errorf("NRestarts %d LastExit %d, want 1 and 137", st.NRestarts, st.LastExit)
	}
}
