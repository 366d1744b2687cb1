package policy

import (
	"context"
	"fmt"
	"path/filepath"
	"strconv"
	"time"

	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	"github.com/containers/qmd/internal/incident"
	"github.com/containers/qmd/pkg/cgroups"
	"github.com/containers/qmd/pkg/oom"
	"github.com/containers/qmd/pkg/supervisor"
)

// Run watches the partition until ctx ends or its cgroup goes away. It
// sleeps in the kernel between notifications: the only timers are the oom
// resync tick, while throttled the restore timer, and while a pressure
// trigger is down its re-arm timer.
func (c *Controller) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	km, err := openKmsg()
	if err != nil {
		c.log.Debug("kernel log not readable; OOM victims are reported without name", zap.Error(err))
	}
	defer km.close()

	w, err := c.cg.Watch(cgroups.WatchOptions{Children: true})
	if err != nil {
		return fmt.Errorf("watch cgroup %s: %w", c.cg.Path(), err)
	}
	defer func() { _ = w.Close() }()

	go func() {
		_ = c.audit.Run(ctx, oom.RunOptions{Resync: c.h.Resync, Report: c.reportAudit})
	}()

	trigs := c.startTriggers(ctx, time.Now())
	defer trigs.close()
	defer cancel() // before trigs.close: the forwarders end with ctx

	restore := time.NewTimer(time.Hour)
	restore.Stop()
	defer restore.Stop()
	rearm := time.NewTimer(time.Hour)
	rearm.Stop()
	defer rearm.Stop()
	scheduleRearm := func(now time.Time) {
		rearm.Stop()
		if at, ok := trigs.nextRetry(); ok {
			rearm.Reset(max(at.Sub(now), 0))
		}
	}
	scheduleRearm(time.Now())
	// cgroup v1 pids.events counts without notifying: re-read the
	// counters on the resync tick (the only periodic wakeup).
	resync := time.NewTicker(c.resyncEvery())
	defer resync.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case now := <-resync.C:
			w.Resync()
			trigs.sampleAll(now)
		case ev, ok := <-w.Events():
			if !ok {
				return w.Err()
			}
			c.handleCgroupEvent(ev, km)
		case ev := <-trigs.ev:
			if ev.gen != ev.t.gen || ev.t.src == nil {
				continue // an earlier arm of a re-armed trigger
			}
			if ev.gone {
				trigs.gone(ev.t, time.Now())
				scheduleRearm(time.Now())
				continue
			}
			if !c.confirmed(trigs, ev) {
				continue
			}
			switch ev.t.kind {
			case trigHostMemory, trigASILMemory:
				c.onMemoryPressure(ev.at)
				restore.Reset(c.cfg.Pressure.RestoreAfter.Duration)
			case trigASILCPU:
				c.onCPUPressure(ev.at)
				restore.Reset(c.cfg.Pressure.RestoreAfter.Duration)
			case trigStall:
				c.onStall(ctx, ev.at)
			}
		case now := <-rearm.C:
			trigs.rearm(now)
			scheduleRearm(now)
		case now := <-restore.C:
			if c.onQuiet(now) {
				restore.Reset(c.cfg.Pressure.RestoreAfter.Duration)
			}
		}
	}
}

func (c *Controller) resyncEvery() time.Duration {
	if c.h.Resync > 0 {
		return c.h.Resync
	}
	return oom.DefaultResync
}

// startTriggers registers the PSI triggers the configuration asks for.
func (c *Controller) startTriggers(ctx context.Context, now time.Time) *trigSet {
	s := newTrigSet(ctx, c)
	pr := c.cfg.Pressure
	if pr.HostMemory && c.h.HostPressure != "" {
		s.add(now, "host memory", trigHostMemory, c.h.HostPressure, cgroups.PSISome, pr.Threshold.Duration)
	}
	for _, p := range c.h.Protected {
		if !p.WatchPressure {
			continue
		}
		prot := oom.Protected{Unit: p.Unit, Cgroup: p.Cgroup}
		dir := c.h.Hier.Root + prot.Path()
		s.add(now, "ASIL memory "+prot.Path(), trigASILMemory, filepath.Join(dir, "memory.pressure"), cgroups.PSISome, pr.Threshold.Duration)
		s.add(now, "ASIL cpu "+prot.Path(), trigASILCPU, filepath.Join(dir, "cpu.pressure"), cgroups.PSISome, pr.CPUThreshold.Duration)
	}
	if c.cg.Version() == cgroups.V2 && pr.StallAction != "none" {
		s.add(now, "partition stall", trigStall, filepath.Join(c.cg.Dir("memory"), "memory.pressure"), cgroups.PSIFull, pr.StallThreshold.Duration)
	}
	return s
}

// confirmed checks a trigger's firing against its pressure file's total.
// An unconfirmed (spurious) wake-up is counted and logged at debug level:
// nothing else happens, not even a reset of the restore timer.
func (c *Controller) confirmed(s *trigSet, ev trigEvent) bool {
	t := ev.t
	t.fired++
	c.wakeups.Add(1)
	total, err := s.read(t)
	var growth uint64
	ok := false
	if err == nil {
		growth, ok = t.confirm(ev.at, total)
	}
	if ok {
		return true
	}
	t.spurious++
	c.spurious.Add(1)
	c.log.Debug("spurious pressure trigger wake-up: the stall total did not grow by the threshold",
		zap.String("trigger", t.name), zap.Uint64("growth_us", growth),
		zap.Duration("threshold", t.reg.Threshold), zap.Duration("window", t.reg.Window),
		zap.Uint64("spurious", t.spurious), zap.Uint64("fired", t.fired), zap.Error(err))
	return false
}

// SpuriousWakeups is how many PSI trigger wake-ups the pressure totals did
// not confirm (and qmd therefore ignored) since the controller started.
func (c *Controller) SpuriousWakeups() uint64 { return c.spurious.Load() }

func (c *Controller) reportAudit(rs []oom.Repair, err error) {
	if err != nil {
		c.log.Warn("oom_score_adj audit", zap.Error(err))
	}
}

func (c *Controller) handleCgroupEvent(ev cgroups.Event, km *kmsg) {
	switch ev.Kind {
	case cgroups.EventOOMKill:
		c.onOOMKill(int(ev.Count), km)
	case cgroups.EventPidsMax:
		c.onForkBomb(ev)
	case cgroups.EventError:
		c.log.Warn("cgroup notification unreadable", zap.Error(ev.Err))
	case cgroups.EventOOM:
		c.log.Debug("memory cgroup under OOM", zap.String("cgroup", ev.Path))
	}
	if oom.TriggersAudit(ev) {
		c.audit.Notify()
	}
}

func (c *Controller) onOOMKill(n int, km *kmsg) {
	if n <= 0 {
		n = 1
	}
	c.hooks.OOMKill(n)
	// The counter can move a moment before the kernel has logged the kill
	// line: give the log a few milliseconds.
	vs := km.victims(c.cg.Path())
	for i := 0; km != nil && len(vs) < n && i < 20; i++ {
		time.Sleep(5 * time.Millisecond)
		vs = append(vs, km.victims(c.cg.Path())...)
	}
	if len(vs) == 0 {
		c.record(incident.OOMKill, fmt.Sprintf("%d process(es) OOM-killed inside the partition", n),
			map[string]string{"killed": strconv.Itoa(n), "cgroup": c.cg.Path()})
		return
	}
	for _, v := range vs {
		d := map[string]string{"pid": strconv.Itoa(v.PID), "comm": v.Comm, "cgroup": v.TaskMemcg, "limit_cgroup": v.OOMMemcg}
		what := fmt.Sprintf("OOM kill inside the partition: %s (pid %d)", v.Comm, v.PID)
		if id := nestedContainer(v.TaskMemcg, c.cg.Path()); id != "" {
			d["nested_container"] = id
			what += " in nested container " + id
		}
		if v.PID == c.pid {
			what += "; it was the partition's init"
		}
		c.record(incident.OOMKill, what, d)
	}
}

func (c *Controller) onForkBomb(ev cgroups.Event) {
	now := ev.Time
	win := c.cfg.Pids.ForkBombWindow.Duration
	c.mu.Lock()
	keep := c.forks[:0]
	for _, t := range c.forks {
		if now.Sub(t) < win {
			keep = append(keep, t)
		}
	}
	c.forks = append(keep, now)
	n := len(c.forks)
	c.mu.Unlock()
	limit := c.cfg.Pids.ForkBombRestarts
	d := map[string]string{"events_in_window": strconv.Itoa(n), "window": win.String(), "pids_max_events": strconv.FormatUint(ev.Count, 10)}
	if limit > 0 && n >= limit {
		c.record(incident.ForkBomb, fmt.Sprintf("pids.max reached %d times within %s: restarting the partition", n, win), d)
		if !c.h.DryRun {
			c.mu.Lock()
			c.forks = nil
			c.mu.Unlock()
			c.hooks.Restart("fork bomb: pids.max reached repeatedly")
		}
		return
	}
	c.record(incident.ForkBomb, "pids.max reached: a fork inside the partition was refused", d)
}

func (c *Controller) onMemoryPressure(now time.Time) {
	usage, _ := c.cg.MemoryCurrent()
	// The lock is held across the write: an operator's SetMemoryHigh in
	// between must not be followed by a value computed from the old ceiling.
	c.mu.Lock()
	defer c.mu.Unlock()
	old := c.thr.current
	next, changed := c.thr.pressure(now, usage)
	if !changed {
		return
	}
	c.log.Info("memory pressure: lowering memory.high", zap.Uint64("from", old), zap.Uint64("to", next))
	if !c.h.DryRun {
		if err := c.writeHigh(next); err != nil {
			c.log.Warn("throttle failed", zap.Error(err))
			return
		}
		c.hooks.Condition(supervisor.Throttled, true, "host memory pressure")
	}
	c.record(incident.Throttle, fmt.Sprintf("memory pressure on the host: memory.high lowered to %s", human(next)),
		map[string]string{"memory_high": strconv.FormatUint(next, 10), "memory_current": strconv.FormatUint(usage, 10)})
}

// writeHigh sets memory.high; cgroup v1 has none, so the soft limit (the
// reclaim target under pressure) stands in for it there.
func (c *Controller) writeHigh(v uint64) error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if c.cg.Version() == cgroups.V1 {
		return c.cg.SetMemorySoftLimit(v)
	}
	return c.setter.SetMemoryHigh(ctx, v)
}

func (c *Controller) onCPUPressure(now time.Time) {
	c.mu.Lock()
	already := c.cpuLimit
	c.cpuLimit = true
	c.mu.Unlock()
	if already {
		return
	}
	frac := 0.5
	if q := c.cfg.Pressure.CPUQuota; q != "" {
		if f, err := parsePercent(q); err == nil {
			frac = f
		}
	}
	m := cgroups.CPUMax{Period: 100000, Quota: uint64(frac * 100000)}
	if !c.h.DryRun {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := c.setter.SetCPUMax(ctx, m); err != nil {
			c.log.Warn("cpu quota failed", zap.Error(err))
			return
		}
	}
	if !c.h.DryRun {
		c.hooks.Condition(supervisor.CPULimited, true, "ASIL CPU pressure")
	}
	c.record(incident.CPUQuota, fmt.Sprintf("ASIL CPU pressure: partition limited to %s of a CPU", c.cfg.Pressure.CPUQuota),
		map[string]string{"cpu_max": m.String(), "at": now.Format(time.RFC3339Nano)})
}

// stallWindows is how many consecutive PSI windows the partition must be
// stalled before qmd acts: "sustained", and not the few hundred
// milliseconds of a partition tearing itself down (seen when its init is
// killed: the exiting tasks stall on memory while their pages are freed).
const stallWindows = 3

func (c *Controller) onStall(ctx context.Context, now time.Time) {
	win := c.cfg.Pressure.Window.Duration
	c.mu.Lock()
	if len(c.stalls) > 0 && now.Sub(c.stalls[len(c.stalls)-1]) > 3*win { // 3: the kernel may have widened the window to 2 s
		c.stalls = c.stalls[:0] // not consecutive: start over
	}
	c.stalls = append(c.stalls, now)
	n := len(c.stalls)
	if n >= stallWindows {
		c.stalls = c.stalls[:0]
	}
	c.mu.Unlock()
	if n < stallWindows {
		c.log.Debug("partition memory stall window", zap.Int("consecutive", n))
		return
	}
	// The init gone means the partition is exiting, not stalled: the
	// supervisor's exit path handles that.
	if err := unix.Kill(c.pid, 0); err != nil {
		return
	}
	action := c.cfg.Pressure.StallAction
	c.record(incident.Stall, "partition stalled on memory (full pressure): "+action,
		map[string]string{"action": action, "at": now.Format(time.RFC3339Nano)})
	if c.h.DryRun {
		return
	}
	// freeze-restart used to freeze and then stop: SIGTERM cannot reach
	// frozen tasks, so every such restart waited the whole stop timeout
	// while holding the memory. The supervisor kills the partition's cgroup
	// (cgroup.kill) for a policy restart instead, which is what freezing
	// first was meant to make safe.
	c.hooks.Restart("partition stalled on memory")
}

// onQuiet restores one step; it reports whether more steps remain.
func (c *Controller) onQuiet(now time.Time) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	next, changed := c.thr.tick(now)
	still := c.thr.throttled()
	cpu := c.cpuLimit
	c.cpuLimit = false
	if cpu && !c.h.DryRun {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		if err := c.setter.SetCPUMax(ctx, cgroups.CPUMax{Quota: cgroups.Max, Period: 100000}); err != nil {
			c.log.Warn("lifting cpu quota failed", zap.Error(err))
		}
		cancel()
		c.hooks.Condition(supervisor.CPULimited, false, "ASIL CPU pressure gone")
		c.record(incident.CPUQuota, "ASIL CPU pressure gone: partition CPU quota lifted", nil)
	}
	if changed {
		if !c.h.DryRun {
			if err := c.writeHigh(next); err != nil {
				c.log.Warn("restore failed", zap.Error(err))
			}
		}
		if !still {
			c.hooks.Condition(supervisor.Throttled, false, "memory pressure gone")
		}
		c.record(incident.Unthrottle, fmt.Sprintf("memory pressure gone: memory.high raised to %s", human(next)),
			map[string]string{"memory_high": strconv.FormatUint(next, 10), "restored": strconv.FormatBool(!still)})
	}
	return still
}

func human(v uint64) string {
	if v == infinity {
		return "infinity"
	}
	return strconv.FormatUint(v>>20, 10) + "M"
}

func parsePercent(s string) (float64, error) {
	var f float64
	if _, err := fmt.Sscanf(s, "%g%%", &f); err != nil || f <= 0 {
		return 0, fmt.Errorf("%q: not a percentage", s)
	}
	return f / 100, nil
}
