package supervisor

import (
	"context"
	"errors"
	"fmt"
	"time"

	"go.uber.org/zap"

	"github.com/containers/qmd/internal/apierr"
	"github.com/containers/qmd/internal/config"
	"github.com/containers/qmd/internal/incident"
)

// ErrNoResourcePolicy is returned by resource methods when qmd runs
// without a resource policy (no cgroup access).
var ErrNoResourcePolicy = errors.New("no resource policy on this host")

// ErrBusy: the partition's resource work queue is full.
var ErrBusy = errors.New("partition busy: too many resource requests queued")

// Resources is the resource policy of one running partition: its cgroup
// limits, oom_score_adj enforcement and misbehaviour reactions. The
// supervisor makes one each time the partition's init starts (and again
// when a reload changes the partition's configuration) and cancels its Run
// when the init is gone. Implementations are safe for concurrent use; the
// supervisor calls the methods from its resource worker, never from the
// partition loop, each bounded by its own timeout.
type Resources interface {
	// Run watches the partition until ctx ends or its cgroup is gone.
	Run(ctx context.Context) error
	Usage() Usage
	// SetMemoryHigh sets the operator's memory.high: the ceiling the
	// pressure throttle works under, never overwritten by it.
	SetMemoryHigh(bytes uint64) error
	SetMemoryMax(bytes uint64) error
	SetOOMScoreAdj(v int) error
	Freeze(ctx context.Context) error
	Thaw(ctx context.Context) error
	// Kill kills every process of the partition at once (cgroup.kill),
	// frozen or not.
	Kill(ctx context.Context) error
}

// Usage is what the policy reports for Status.
type Usage struct {
	MemoryCurrent, MemoryHigh, MemoryMax uint64 // 0 = unknown
	CgroupPath                           string
}

// Hooks is how a Resources reports back. Each call is a message to the
// partition loop: it waits until the loop took it (the loop never blocks,
// so this is short) and is never dropped.
type Hooks struct {
	// OOMKill counts kills inside the partition.
	OOMKill func(n int)
	// Restart asks for a restart of the whole partition (fork bomb, a
	// stall with the init alive). The partition is killed, not stopped.
	Restart func(reason string)
	// Condition sets or clears a condition (throttled, cpu-limited, frozen).
	Condition func(c Condition, on bool, reason string)
	// Sink records incidents.
	Sink incident.Sink
}

// Init names the running partition a policy is made for: its container and
// the host pid of its init.
type Init struct {
	ContainerID string
	PID         int
}

// ResourceFactory builds the policy for a partition whose init runs as
// init.PID. It must refuse a pid that is not in the container's cgroup (a
// pid reused by a host process after the init died): the policy writes to
// every process of that cgroup.
type ResourceFactory func(p *config.Partition, init Init, h Hooks) (Resources, error)

// resourceTimeout bounds one piece of resource work (a freeze waits for
// the kernel, a limit may go through systemd's D-Bus API).
const resourceTimeout = 20 * time.Second

// resourceWorker runs resource work in order, off the loop.
func (p *partition) resourceWorker(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case job := <-p.resq:
			job()
		}
	}
}

// enqueueRes queues work for the resource worker; then (returned by work)
// runs on the loop. A full queue answers ErrBusy through fail.
func (p *partition) enqueueRes(work func(ctx context.Context) func(), fail func(error)) {
	job := func() {
		ctx, cancel := context.WithTimeout(p.ctx, resourceTimeout)
		then := work(ctx)
		cancel()
		_ = p.post(p.ctx, then)
	}
	select {
	case p.resq <- job:
	default:
		if fail != nil {
			fail(fmt.Errorf("partition %s: %w", p.name, ErrBusy))
		}
	}
}

// attachResources builds the policy for the running init, off the loop.
func (p *partition) attachResources(id string, pid int) {
	if p.s.newResources == nil || pid <= 0 {
		return
	}
	if p.resPid == pid && (p.cur != nil || p.resBusy || p.resFails >= 3) {
		return
	}
	p.detachResources()
	p.resPid, p.resBusy = pid, true
	gen := p.resGen
	hook := func(f func()) {
		_ = p.post(p.ctx, func() {
			if gen == p.resGen {
				f()
			}
		})
	}
	hooks := Hooks{
		OOMKill: func(n int) { hook(func() { p.st.NOOMKills += uint32(max(n, 0)); p.publish("oom kill") }) },
		Restart: func(reason string) {
			hook(func() {
				if p.st.Running() && p.restartReq == "" {
					p.log.Warn("policy restarts the partition", zap.String("reason", reason))
					_ = p.requestRestart(reason, true)
				}
			})
		},
		Condition: func(c Condition, on bool, reason string) {
			hook(func() {
				if p.st.Running() {
					p.setCond(c, on, reason)
				}
			})
		},
		Sink: p.s.sink,
	}
	cfg := *p.cfg
	reloaded := p.policyReloaded
	p.policyReloaded = false
	init := Init{ContainerID: id, PID: pid}
	go func() {
		r, err := p.s.newResources(&cfg, init, hooks)
		var u Usage
		if err == nil {
			u = r.Usage()
		}
		_ = p.post(p.ctx, func() {
			if gen != p.resGen || p.resPid != pid {
				return // superseded (the init changed, or a reload)
			}
			p.resBusy = false
			if err != nil {
				p.resFails++
				p.log.Warn("resource policy not applied", zap.Error(err), zap.Int("attempt", p.resFails))
				return
			}
			p.resFails = 0
			p.cur = r
			p.res.Store(&resHolder{r: r})
			p.setUsage(u)
			rctx, cancel := context.WithCancel(p.ctx)
			p.resCancel = cancel
			go func() {
				if err := r.Run(rctx); err != nil && rctx.Err() == nil {
					p.log.Warn("resource policy stopped", zap.Error(err))
				}
			}()
			if reloaded {
				p.record(incident.PolicyReload, "reloaded policy applied to the running partition", nil)
			}
			p.publish("resource policy attached")
		})
	}()
}

func (p *partition) detachResources() {
	if p.resCancel != nil {
		p.resCancel()
		p.resCancel = nil
	}
	p.resGen++
	p.resPid, p.resBusy = 0, false
	p.cur = nil
	p.res.Store(&resHolder{})
}

// resourceCmd runs f against the running partition's policy and answers
// with its result once done; after (on the loop) records the outcome.
func (s *Supervisor) resourceCmd(name string, f func(ctx context.Context, r Resources) error, after func(p *partition, err error)) error {
	p, err := s.get(name)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), resourceTimeout+5*time.Second)
	defer cancel()
	return p.call(ctx, func(reply func(error)) {
		if !p.st.Running() {
			reply(fmt.Errorf("partition %q is %s: %w", name, p.st.State, apierr.ErrNotRunning))
			return
		}
		r := p.cur
		if r == nil {
			if p.s.newResources != nil && p.resBusy {
				reply(fmt.Errorf("partition %q: resource policy is still being applied, try again: %w", name, ErrBusy))
				return
			}
			reply(fmt.Errorf("partition %q: %w", name, ErrNoResourcePolicy))
			return
		}
		gen := p.resGen
		p.enqueueRes(func(ctx context.Context) func() {
			err := f(ctx, r)
			return func() {
				if gen == p.resGen && after != nil {
					after(p, err)
				}
				reply(err)
			}
		}, reply)
	})
}

// SetMemoryHigh sets the memory.high ceiling of a running partition (the
// pressure throttle works under it); unless runtime, the value also
// replaces the configured one (until the next reload).
func (s *Supervisor) SetMemoryHigh(name string, bytes uint64, runtime bool) error {
	return s.resourceCmd(name, func(_ context.Context, r Resources) error { return r.SetMemoryHigh(bytes) },
		func(p *partition, err error) {
			if err == nil && !runtime {
				p.persist(func(c *config.Partition) { c.Memory.High = config.Size{Bytes: bytes, Set: true} })
			}
			p.refreshUsage()
		})
}

// SetMemoryMax sets memory.max of a running partition.
func (s *Supervisor) SetMemoryMax(name string, bytes uint64, runtime bool) error {
	return s.resourceCmd(name, func(_ context.Context, r Resources) error { return r.SetMemoryMax(bytes) },
		func(p *partition, err error) {
			if err == nil && !runtime {
				p.persist(func(c *config.Partition) { c.Memory.Max = config.Size{Bytes: bytes, Set: true} })
			}
			p.refreshUsage()
		})
}

// SetOOMScoreAdjust changes the partition's oom_score_adj floor.
func (s *Supervisor) SetOOMScoreAdjust(name string, v int, runtime bool) error {
	if v < 0 || v > 1000 {
		return apierr.InvalidArgs("oom_score_adj %d: a partition takes 0..1000", v)
	}
	return s.resourceCmd(name, func(_ context.Context, r Resources) error { return r.SetOOMScoreAdj(v) },
		func(p *partition, err error) {
			if err != nil {
				return
			}
			p.st.OOMScoreAdj = v
			if !runtime {
				p.persist(func(c *config.Partition) { c.OOMScoreAdj = v })
			}
		})
}

// Freeze freezes the partition's cgroup and answers once the kernel
// confirmed it.
func (s *Supervisor) Freeze(name string) error {
	return s.resourceCmd(name, func(ctx context.Context, r Resources) error { return r.Freeze(ctx) },
		func(p *partition, err error) {
			if err != nil {
				p.log.Error("partition not frozen", zap.Error(err))
				return
			}
			p.setCond(Frozen, true, "freeze requested")
			p.record(incident.Freeze, "partition frozen on request", nil)
		})
}

// Thaw thaws a frozen partition.
func (s *Supervisor) Thaw(name string) error {
	return s.resourceCmd(name, func(ctx context.Context, r Resources) error { return r.Thaw(ctx) },
		func(p *partition, err error) {
			if err != nil {
				p.log.Error("partition not thawed", zap.Error(err))
				return
			}
			p.setCond(Frozen, false, "thaw requested")
			p.record(incident.Thaw, "partition thawed on request", nil)
		})
}

// persist changes the partition's configuration in place (non-runtime
// D-Bus settings); it lasts until the next reload. Runs on the loop.
func (p *partition) persist(f func(*config.Partition)) {
	c := *p.cfg
	f(&c)
	p.cfg = &c
	view := c
	p.cfgView.Store(&view)
}

// refreshUsage copies the policy's view into the status (on the loop: a
// few small cgroupfs reads).
func (p *partition) refreshUsage() {
	r := p.cur
	if r == nil {
		return
	}
	p.setUsage(r.Usage())
	p.publish("")
}

// setUsage takes a read of the policy's usage into the status and the
// readers' snapshot (on the loop).
func (p *partition) setUsage(u Usage) {
	p.usage.Store(&usageSnap{at: time.Now(), u: u})
	p.st.MemoryCurrent, p.st.MemoryHigh, p.st.MemoryMax = u.MemoryCurrent, u.MemoryHigh, u.MemoryMax
	if u.CgroupPath != "" {
		p.st.CgroupPath = u.CgroupPath
	}
}
