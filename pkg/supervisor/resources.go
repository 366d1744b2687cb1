package supervisor

import (
	"context"
	"errors"
	"fmt"

	"go.uber.org/zap"

	"github.com/containers/qmd/internal/apierr"
	"github.com/containers/qmd/internal/config"
	"github.com/containers/qmd/internal/incident"
)

// ErrNoResourcePolicy is returned by resource methods when qmd runs
// without a resource policy (no cgroup access).
var ErrNoResourcePolicy = errors.New("no resource policy on this host")

// Resources is the resource policy of one running partition: its cgroup
// limits, oom_score_adj enforcement and misbehaviour reactions. The
// supervisor makes one each time the partition's init starts and cancels
// its Run when the init is gone. Implementations are safe for concurrent
// use; every method returns promptly.
type Resources interface {
	// Run watches the partition until ctx ends or its cgroup is gone.
	Run(ctx context.Context) error
	Usage() Usage
	SetMemoryHigh(bytes uint64) error
	SetMemoryMax(bytes uint64) error
	SetOOMScoreAdj(v int) error
	Freeze(ctx context.Context) error
	Thaw(ctx context.Context) error
}

// Usage is what the policy reports for Status.
type Usage struct {
	MemoryCurrent, MemoryHigh, MemoryMax uint64 // 0 = unknown
	CgroupPath                           string
}

// Hooks is how a Resources reports back. Calls are queued to the
// partition's loop and never block.
type Hooks struct {
	// OOMKill counts kills inside the partition.
	OOMKill func(n int)
	// Restart asks for a restart (fork bomb, stall).
	Restart func(reason string)
	// SetState reports throttled/frozen/running.
	SetState func(s State, reason string)
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

// resourceMsg is a report from the policy, handled in the partition loop.
type resourceMsg struct {
	gen      uint64
	oomKills int
	restart  string
	state    State
	reason   string
}

func (s *Supervisor) resources(name string) (Resources, *partition, error) {
	p, err := s.get(name)
	if err != nil {
		return nil, nil, err
	}
	st := p.Status()
	if st.State != Running && st.State != Throttled && st.State != Frozen {
		return nil, p, fmt.Errorf("partition %q is %s: %w", name, st.State, apierr.ErrNotRunning)
	}
	r := p.res.Load()
	if r == nil || *r == nil {
		return nil, p, fmt.Errorf("partition %q: %w", name, ErrNoResourcePolicy)
	}
	return *r, p, nil
}

// SetMemoryHigh sets memory.high of a running partition; unless runtime,
// the value also replaces the configured one (until the next reload).
func (s *Supervisor) SetMemoryHigh(name string, bytes uint64, runtime bool) error {
	r, p, err := s.resources(name)
	if err != nil {
		return err
	}
	if err := r.SetMemoryHigh(bytes); err != nil {
		return err
	}
	if !runtime {
		p.persist(func(c *config.Partition) { c.Memory.High = config.Size{Bytes: bytes, Set: true} })
	}
	return nil
}

// SetMemoryMax sets memory.max of a running partition.
func (s *Supervisor) SetMemoryMax(name string, bytes uint64, runtime bool) error {
	r, p, err := s.resources(name)
	if err != nil {
		return err
	}
	if err := r.SetMemoryMax(bytes); err != nil {
		return err
	}
	if !runtime {
		p.persist(func(c *config.Partition) { c.Memory.Max = config.Size{Bytes: bytes, Set: true} })
	}
	return nil
}

// SetOOMScoreAdjust changes the partition's oom_score_adj floor.
func (s *Supervisor) SetOOMScoreAdjust(name string, v int, runtime bool) error {
	if v < 0 || v > 1000 {
		return apierr.InvalidArgs("oom_score_adj %d: a partition takes 0..1000", v)
	}
	r, p, err := s.resources(name)
	if err != nil {
		return err
	}
	if err := r.SetOOMScoreAdj(v); err != nil {
		return err
	}
	if !runtime {
		p.persist(func(c *config.Partition) { c.OOMScoreAdj = v })
	}
	return nil
}

// Freeze freezes the partition's cgroup. The work runs in the background;
// the state turns "frozen" when the kernel confirms.
func (s *Supervisor) Freeze(name string) error {
	return s.freezer(name, Resources.Freeze, Frozen, incident.Freeze, "frozen")
}

// Thaw thaws a frozen partition.
func (s *Supervisor) Thaw(name string) error {
	return s.freezer(name, Resources.Thaw, Running, incident.Thaw, "thawed")
}

func (s *Supervisor) freezer(name string, op func(Resources, context.Context) error, to State, t incident.Type, done string) error {
	r, p, err := s.resources(name)
	if err != nil {
		return err
	}
	go func() {
		if err := op(r, context.Background()); err != nil {
			p.log.Error("partition not "+done, zap.Error(err))
			return
		}
		p.resMsg(resourceMsg{state: to, reason: string(t) + " requested"})
		s.sink.Record(incident.Incident{Partition: name, Type: t, Summary: "partition " + done + " on request"})
	}()
	return nil
}
