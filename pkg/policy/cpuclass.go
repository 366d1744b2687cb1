package policy

import (
	"context"
	"os"
	"path/filepath"
	"time"

	"go.uber.org/zap"

	"github.com/containers/qmd/pkg/cgroups"
)

// The partition's CPU class under cpu.weight = "idle" (the default, as
// containers/qm's CPUWeight=idle).
//
// The kernel's idle class (cpu.idle 1) is the best the ASIL tasks can get
// against a busy partition: any of them that wakes preempts the partition
// at once. With the lowest weight (1) instead, a waking task may wait up
// to a scheduler tick; in make ffi-bench under a CPU hog in the partition
// the ASIL 1 ms tick's p99 was 1.47 times, the touch and fsync probes'
// 1.41-1.43 times the plain setup's (731eb96), which runs idle.
//
// But an idle-class task gets next to no CPU while anything else runs, and
// under memory pressure that is a hazard: a partition process that
// reclaims memory, or that was killed and must exit to give its memory
// back, waits behind every host task, and the ASIL tasks that need the
// memory wait for it. The plain setup's memory hog (always idle) cost the
// ASIL probes 9-25 s gaps in the same benchmark, qmd's weight 1 53-130 ms.
//
// So qmd keeps the partition's slice in the idle class while memory is
// quiet and moves it to weight 1 the moment memory gets tight for the
// partition: its own memory "some" pressure (a partition task waits on
// reclaim; its trigger, trigMemTight), a confirmed host or ASIL memory
// pressure window, a stall, an OOM kill. It goes back to the idle class
// restore_after after the last such sign, and not while qmd's memory.high
// throttle is in force. The partition thus never has less CPU than under
// the plain setup, and more exactly while it must give memory back.
//
// The class is set on the slice through systemd, which keeps it when it
// re-applies the slice's settings; the scope keeps weight 1 (its only
// sibling is conmon's scope). Where the slice has no cpu.idle (cgroup v1,
// Linux before 5.15) or qmd does not manage the slice, "idle" is weight 1
// throughout, as before.

// memTightPercent is the partition's memory "some" stall, in percent of
// the pressure window, that counts as memory getting tight: a few percent
// is already direct reclaim, which is where an idle-class task would hold
// up others; page-cache reclaim by kswapd does not show up here.
const memTightPercent = 5

// classSetter sets the slice's CPU class (cgroups.SystemdSetter).
type classSetter interface {
	SetCPUIdle(ctx context.Context) error
	SetCPUWeight(ctx context.Context, w uint64) error
}

// cpuClass is the slice's class while cpu.weight is "idle".
type cpuClass struct {
	slice   string
	set     classSetter // nil: the idle class is not used (weight 1 throughout)
	idle    bool        // this partition does not hold the slice out of the idle class
	tightAt time.Time   // the last sign of memory getting tight
}

// startIdleClass puts the slice in the idle class and arms the class
// switch. It reports false where the slice has no cpu.idle (cgroup v1,
// Linux before 5.15) or systemd refused: the caller then gives the slice
// weight 1.
func (c *Controller) startIdleClass(ctx context.Context, slice string, s classSetter) bool {
	if c.cg.Version() != cgroups.V2 {
		return false
	}
	if _, err := os.Stat(filepath.Join(filepath.Dir(c.cg.Dir("cpu")), "cpu.idle")); err != nil {
		c.log.Debug("the slice has no cpu.idle: the lowest weight instead of the idle class", zap.String("slice", slice))
		return false
	}
	if c.h.classHeld(slice) {
		// Another partition of the slice holds it out of the idle
		// class: this one goes along until that one lets go.
		c.log.Info("the slice stays out of the idle CPU class for now: memory is tight for another partition in it", zap.String("slice", slice))
	} else if err := s.SetCPUIdle(ctx); err != nil {
		c.log.Warn("idle CPU class not set on the slice; the lowest weight instead", zap.String("slice", slice), zap.Error(err))
		return false
	}
	c.mu.Lock()
	c.cls = cpuClass{slice: slice, set: s, idle: true}
	c.mu.Unlock()
	return true
}

// holdClass records whether this partition holds its slice out of the
// idle class, and reports whether any partition of the slice does.
func (h *Host) holdClass(slice, partition string, hold bool) (held bool) {
	h.classMu.Lock()
	defer h.classMu.Unlock()
	if h.tight == nil {
		h.tight = map[string]map[string]bool{}
	}
	if h.tight[slice] == nil {
		h.tight[slice] = map[string]bool{}
	}
	if hold {
		h.tight[slice][partition] = true
	} else {
		delete(h.tight[slice], partition)
	}
	return len(h.tight[slice]) > 0
}

// classHeld reports whether a partition holds slice out of the idle class.
func (h *Host) classHeld(slice string) bool {
	h.classMu.Lock()
	defer h.classMu.Unlock()
	return len(h.tight[slice]) > 0
}

// memoryTight notes a sign of memory getting tight for the partition and
// moves the slice out of the idle class (to weight 1) if it is in it.
func (c *Controller) memoryTight(now time.Time, why string) {
	c.mu.Lock()
	if c.cls.set == nil {
		c.mu.Unlock()
		return
	}
	if now.After(c.cls.tightAt) {
		c.cls.tightAt = now
	}
	leave := c.cls.idle
	c.cls.idle = false
	s, slice := c.cls.set, c.cls.slice
	c.mu.Unlock()
	if !leave {
		return
	}
	c.h.holdClass(slice, c.cfg.Name, true)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := s.SetCPUWeight(ctx, 1); err != nil {
		c.mu.Lock()
		c.cls.idle = true // still idle: the next sign tries again
		c.mu.Unlock()
		c.h.holdClass(slice, c.cfg.Name, false)
		c.log.Warn("leaving the idle CPU class failed", zap.String("slice", slice), zap.Error(err))
		return
	}
	c.log.Info("memory is getting tight for the partition: its slice leaves the idle CPU class for the lowest weight, so that reclaiming and killed processes are not starved",
		zap.String("slice", slice), zap.String("sign", why))
}

// classDue is when the slice may go back to the idle class: restore_after
// after the last sign, and only once memory.high is back (c.mu held).
func (c *Controller) classDue() (time.Time, bool) {
	if c.cls.set == nil || c.cls.idle || c.thr.throttled() {
		return time.Time{}, false
	}
	return c.cls.tightAt.Add(c.cfg.Pressure.RestoreAfter.Duration), true
}

// classQuiet lets go of the slice when that is due (c.mu held): back to
// the idle class unless another partition of the slice still holds it.
// It reports whether this partition still holds it.
func (c *Controller) classQuiet(now time.Time) bool {
	at, ok := c.classDue()
	if !ok || now.Before(at) {
		return c.cls.set != nil && !c.cls.idle
	}
	c.cls.idle = true
	others, err := c.letGoOfClass(c.cls.set, c.cls.slice)
	switch {
	case others:
		c.log.Info("memory quiet for the partition; its slice stays out of the idle CPU class for another partition in it", zap.String("slice", c.cls.slice))
	case err != nil:
		c.log.Warn("returning to the idle CPU class failed; retried after restore_after", zap.String("slice", c.cls.slice), zap.Error(err))
		c.cls.idle = false
		c.cls.tightAt = now
		c.h.holdClass(c.cls.slice, c.cfg.Name, true)
		return true
	default:
		c.log.Info("memory quiet for the partition: its slice is back in the idle CPU class", zap.String("slice", c.cls.slice),
			zap.Duration("quiet_for", now.Sub(c.cls.tightAt)))
	}
	return false
}

// releaseClass lets go of the slice when the controller ends (the
// partition's init is gone), as classQuiet does: the next start would set
// the idle class anyway.
func (c *Controller) releaseClass() {
	c.mu.Lock()
	held := c.cls.set != nil && !c.cls.idle
	if held {
		c.cls.idle = true
	}
	s, slice := c.cls.set, c.cls.slice
	c.mu.Unlock()
	if !held {
		return
	}
	if _, err := c.letGoOfClass(s, slice); err != nil {
		c.log.Warn("returning to the idle CPU class failed", zap.String("slice", slice), zap.Error(err))
	}
}

// letGoOfClass drops this partition's hold on the slice and puts the slice
// back in the idle class unless another partition still holds it (others).
func (c *Controller) letGoOfClass(s classSetter, slice string) (others bool, err error) {
	if c.h.holdClass(slice, c.cfg.Name, false) {
		return true, nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return false, s.SetCPUIdle(ctx)
}

// CPUStarved is the partition's cumulative time in which all its runnable
// tasks waited for a CPU (cpu.pressure "full", cgroup v2): what its CPU
// class costs it against a busy host. The liveness probe does not count a
// failure while this grows (internal/daemon).
func (c *Controller) CPUStarved() (time.Duration, bool) {
	if c.cg.Version() != cgroups.V2 {
		return 0, false
	}
	p, err := c.readPSI(filepath.Join(c.cg.Dir("cpu"), "cpu.pressure"))
	if err != nil {
		return 0, false
	}
	total, ok := p.Total(cgroups.PSIFull)
	return time.Duration(total) * time.Microsecond, ok
}
