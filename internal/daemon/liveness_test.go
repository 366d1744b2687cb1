//go:build remote

package daemon

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/containers/qmd/internal/config"
	"github.com/containers/qmd/internal/incident"
	"github.com/containers/qmd/internal/testutil"
	"github.com/containers/qmd/pkg/liveness"
	"github.com/containers/qmd/pkg/supervisor"
)

// fakeRes is a policy that runs until cancelled.
type fakeRes struct {
	frozen atomic.Bool
}

func (*fakeRes) Run(ctx context.Context) error  { <-ctx.Done(); return nil }
func (*fakeRes) Usage() supervisor.Usage        { return supervisor.Usage{} }
func (*fakeRes) SetMemoryHigh(uint64) error     { return nil }
func (*fakeRes) SetMemoryMax(uint64) error      { return nil }
func (*fakeRes) SetOOMScoreAdj(int) error       { return nil }
func (r *fakeRes) Freeze(context.Context) error { r.frozen.Store(true); return nil }
func (r *fakeRes) Thaw(context.Context) error   { r.frozen.Store(false); return nil }
func (*fakeRes) Kill(context.Context) error     { return nil }
func (r *fakeRes) isFrozen() bool               { return r.frozen.Load() }

// hungAfterFirst answers once, then never (or, while ok is set, always).
type hungAfterFirst struct {
	n  atomic.Int32
	ok atomic.Bool
}

func (h *hungAfterFirst) Probe(ctx context.Context) error {
	if h.n.Add(1) == 1 || h.ok.Load() {
		return nil
	}
	<-ctx.Done()
	return ctx.Err()
}

type recorded struct {
	mu        sync.Mutex
	restarts  []string
	incidents []incident.Incident
	hooks     supervisor.Hooks // as the policy got them
}

func (r *recorded) counts() (int, int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.restarts), len(r.incidents)
}

func setup(t *testing.T, lv config.Liveness, pr liveness.Prober) (*recorded, supervisor.Resources, *fakeRes) {
	t.Helper()
	rec := &recorded{}
	inner := &fakeRes{}
	factory := withLiveness(func(p *config.Partition, init supervisor.Init, h supervisor.Hooks) (supervisor.Resources, error) {
		rec.hooks = h
		return inner, nil
	}, zap.NewNop(), func(pid int) liveness.Prober {
		if pid != 4242 {
			t.Errorf("prober for pid %d, want the init's 4242", pid)
		}
		return pr
	})
	p := config.DefaultPartition("qm")
	p.Liveness = lv
	h := supervisor.Hooks{
		Restart: func(reason string) { rec.mu.Lock(); rec.restarts = append(rec.restarts, reason); rec.mu.Unlock() },
		Sink: incident.SinkFunc(func(i incident.Incident) incident.Incident {
			rec.mu.Lock()
			rec.incidents = append(rec.incidents, i)
			rec.mu.Unlock()
			return i
		}),
		Condition: func(supervisor.Condition, bool, string) {},
	}
	r, err := factory(&p, supervisor.Init{ContainerID: "c0ffee", PID: 4242}, h)
	if err != nil {
		t.Fatal(err)
	}
	return rec, r, inner
}

func fastLiveness() config.Liveness {
	return config.Liveness{Enable: true, Interval: config.Duration{Duration: 20 * time.Millisecond},
		Timeout: config.Duration{Duration: 20 * time.Millisecond}, Failures: 3, BootGrace: config.Duration{Duration: time.Hour}}
}

// TestLivenessRestartsOnce: systemd answers once, then hangs: one incident
// systemd-unresponsive and one restart request through the policy hooks.
func TestLivenessRestartsOnce(t *testing.T) {
	rec, r, _ := setup(t, fastLiveness(), &hungAfterFirst{})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	testutil.Eventually(t, "a restart", func() bool { n, _ := rec.counts(); return n > 0 })
	time.Sleep(300 * time.Millisecond) // no second report
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if len(rec.restarts) != 1 || len(rec.incidents) != 1 {
		t.Fatalf("restarts %v, incidents %v: want one each", rec.restarts, rec.incidents)
	}
	inc := rec.incidents[0]
	if inc.Type != incident.SystemdUnresponsive || inc.Partition != "qm" || inc.Details["init_pid"] != "4242" ||
		inc.Details["container_id"] != "c0ffee" || inc.Details["failures"] != "3" {
		t.Errorf("incident %+v", inc)
	}
}

// TestLivenessPausedWhileThrottledOrFrozen: a hung systemd is not reported
// while the policy says the partition is throttled, nor while it is
// frozen on request; it is once both are over.
func TestLivenessPausedWhileThrottledOrFrozen(t *testing.T) {
	pr := &hungAfterFirst{}
	rec, r, inner := setup(t, fastLiveness(), pr)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	testutil.Eventually(t, "the first answer", func() bool { return pr.n.Load() >= 1 })
	rec.hooks.Condition(supervisor.Throttled, true, "host memory pressure")
	if err := r.Freeze(ctx); err != nil || !inner.isFrozen() {
		t.Fatalf("freeze: %v", err)
	}
	rec.hooks.Condition(supervisor.Throttled, false, "pressure gone")
	before := pr.n.Load()
	testutil.Eventually(t, "probes while paused", func() bool { return pr.n.Load() >= before+10 })
	if n, _ := rec.counts(); n != 0 {
		t.Fatalf("restarted while frozen (throttle lifted)")
	}
	if err := r.Thaw(ctx); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, "a restart after thaw", func() bool { n, _ := rec.counts(); return n == 1 })
}

// TestLivenessDisabled: enable = false leaves the policy as it is.
func TestLivenessDisabled(t *testing.T) {
	lv := fastLiveness()
	lv.Enable = false
	_, r, inner := setup(t, lv, &hungAfterFirst{})
	if r != supervisor.Resources(inner) {
		t.Fatalf("disabled liveness wrapped the policy: %T", r)
	}
}

// TestLivenessNotSystemd: an init without a systemd socket is never
// reported, past any grace.
func TestLivenessNotSystemd(t *testing.T) {
	lv := fastLiveness()
	lv.BootGrace = config.Duration{}
	var n atomic.Int32
	rec, r, _ := setup(t, lv, proberFunc(func(context.Context) error {
		n.Add(1)
		return errors.Join(errors.New("/proc/4242/root/run/dbus/system_bus_socket"), liveness.ErrNoSocket)
	}))
	ctx, cancel := context.WithCancel(context.Background())
	go func() { _ = r.Run(ctx) }()
	testutil.Eventually(t, "probes", func() bool { return n.Load() >= 10 })
	cancel()
	if a, b := rec.counts(); a != 0 || b != 0 {
		t.Fatalf("restarts %d incidents %d for an init that is not systemd", a, b)
	}
}

type proberFunc func(context.Context) error

func (f proberFunc) Probe(ctx context.Context) error { return f(ctx) }
