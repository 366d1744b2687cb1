//go:build remote

package daemon

import (
	"context"
	"strconv"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/containers/qmd/internal/config"
	"github.com/containers/qmd/internal/incident"
	"github.com/containers/qmd/pkg/liveness"
	"github.com/containers/qmd/pkg/supervisor"
)

// withLiveness adds the probe of the partition's systemd to a resource
// policy. The supervisor builds a policy each time the partition's init
// starts (and at a reload), runs it while that init lives and cancels it
// when the init is gone: exactly the life of a probe of that init, so the
// probe rides on the policy and needs no loop of its own. It reports
// through the policy's hooks: an incident, and Hooks.Restart, which kills
// and restarts the partition (the supervisor ignores it when the partition
// is no longer running or a restart is already under way).
//
// newProber makes the prober for an init's host pid (nil: systemd's
// partition's system bus under /proc/<pid>/root).
func withLiveness(next supervisor.ResourceFactory, log *zap.Logger, newProber func(pid int) liveness.Prober) supervisor.ResourceFactory {
	if next == nil {
		return nil
	}
	if newProber == nil {
		newProber = func(pid int) liveness.Prober {
			return liveness.DBusProber{Path: liveness.SocketPath("", pid)}
		}
	}
	return func(p *config.Partition, init supervisor.Init, h supervisor.Hooks) (supervisor.Resources, error) {
		lv := p.Liveness
		if !lv.Enable || init.PID <= 0 {
			return next(p, init, h)
		}
		name := p.Name
		plog := log.With(zap.String("partition", name), zap.Int("init_pid", init.PID))
		pr := &probed{}
		pr.m = liveness.NewMonitor(liveness.Options{
			Config: liveness.Config{Interval: lv.Interval.Duration, Timeout: lv.Timeout.Duration,
				Failures: lv.Failures, Grace: lv.BootGrace.Duration},
			Prober: newProber(init.PID),
			Log:    plog,
			// Set before Run: the policy is made below.
			Starved: func() (time.Duration, bool) {
				if s, ok := pr.Resources.(cpuStarved); ok {
					return s.CPUStarved()
				}
				return 0, false
			},
			OnUnresponsive: func(reason string, details map[string]string) {
				plog.Warn("partition's systemd does not answer; restarting the partition", zap.String("reason", reason))
				if details == nil {
					details = map[string]string{}
				}
				details["init_pid"] = strconv.Itoa(init.PID)
				if init.ContainerID != "" {
					details["container_id"] = init.ContainerID
				}
				if h.Sink != nil {
					h.Sink.Record(incident.Incident{Partition: name, Type: incident.SystemdUnresponsive,
						Summary: reason + "; killing and restarting the partition", Details: details})
				}
				if h.Restart != nil {
					h.Restart("systemd unresponsive: " + reason)
				}
			},
		})
		inner := h
		inner.Condition = func(c supervisor.Condition, on bool, reason string) {
			pr.set(c, on)
			if h.Condition != nil {
				h.Condition(c, on, reason)
			}
		}
		r, err := next(p, init, inner)
		if err != nil {
			return nil, err
		}
		pr.Resources = r
		return pr, nil
	}
}

// cpuStarved is the resource policy's reading of the partition's CPU
// starvation (pkg/policy's Controller).
type cpuStarved interface {
	CPUStarved() (time.Duration, bool)
}

// probed is a resource policy with the liveness probe running beside it.
// Failures do not count while the partition is throttled or frozen (by
// the policy's reactions or an operator's Freeze): a stall qmd caused is
// no reason to restart.
type probed struct {
	supervisor.Resources
	m *liveness.Monitor

	mu     sync.Mutex
	paused map[supervisor.Condition]bool
}

func (p *probed) set(c supervisor.Condition, on bool) {
	if c != supervisor.Throttled && c != supervisor.Frozen {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.paused == nil {
		p.paused = map[supervisor.Condition]bool{}
	}
	p.paused[c] = on
	p.m.Pause(p.paused[supervisor.Throttled] || p.paused[supervisor.Frozen])
}

// Run runs the policy and the probe; the probe ends with the policy.
func (p *probed) Run(ctx context.Context) error {
	mctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = p.m.Run(mctx)
	}()
	err := p.Resources.Run(ctx)
	cancel()
	<-done
	return err
}

// Freeze pauses the probe before the partition is frozen (a frozen
// systemd cannot answer) and resumes it when the freeze failed.
func (p *probed) Freeze(ctx context.Context) error {
	p.set(supervisor.Frozen, true)
	err := p.Resources.Freeze(ctx)
	if err != nil {
		p.set(supervisor.Frozen, false)
	}
	return err
}

// Thaw resumes the probe once the partition is thawed.
func (p *probed) Thaw(ctx context.Context) error {
	err := p.Resources.Thaw(ctx)
	if err == nil {
		p.set(supervisor.Frozen, false)
	}
	return err
}
