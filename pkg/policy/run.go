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
// resync tick and, while throttled, the restore timer.
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

	hostP := c.trigger(c.cfg.Pressure.HostMemory, c.h.HostPressure, cgroups.PSISome, c.cfg.Pressure.Threshold.Duration)
	defer hostP.close()
	var asilMem, asilCPU []*trig
	for _, pr := range c.h.Protected {
		if !pr.WatchPressure {
			continue
		}
		dir := c.h.Hier.Root + oom.Protected{Unit: pr.Unit, Cgroup: pr.Cgroup}.Path()
		asilMem = append(asilMem, c.trigger(true, filepath.Join(dir, "memory.pressure"), cgroups.PSISome, c.cfg.Pressure.Threshold.Duration))
		asilCPU = append(asilCPU, c.trigger(true, filepath.Join(dir, "cpu.pressure"), cgroups.PSISome, c.cfg.Pressure.CPUThreshold.Duration))
	}
	defer closeAll(asilMem)
	defer closeAll(asilCPU)
	var stall *trig
	if c.cg.Version() == cgroups.V2 && c.cfg.Pressure.StallAction != "none" {
		stall = c.trigger(true, filepath.Join(c.cg.Dir("memory"), "memory.pressure"), cgroups.PSIFull, c.cfg.Pressure.StallThreshold.Duration)
		defer stall.close()
	}
	memPressure := merge(ctx, append([]*trig{hostP}, asilMem...))
	cpuPressure := merge(ctx, asilCPU)

	restore := time.NewTimer(time.Hour)
	restore.Stop()
	defer restore.Stop()
	// cgroup v1 pids.events counts without notifying: re-read the
	// counters on the resync tick (the only periodic wakeup).
	every := c.h.Resync
	if every <= 0 {
		every = oom.DefaultResync
	}
	resync := time.NewTicker(every)
	defer resync.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-resync.C:
			w.Resync()
		case ev, ok := <-w.Events():
			if !ok {
				return w.Err()
			}
			c.handleCgroupEvent(ev, km)
		case now := <-memPressure:
			c.onMemoryPressure(now)
			restore.Reset(c.cfg.Pressure.RestoreAfter.Duration)
		case now := <-cpuPressure:
			c.onCPUPressure(now)
			restore.Reset(c.cfg.Pressure.RestoreAfter.Duration)
		case now := <-stall.c():
			c.onStall(ctx, now)
		case now := <-restore.C:
			if c.onQuiet(now) {
				restore.Reset(c.cfg.Pressure.RestoreAfter.Duration)
			}
		}
	}
}

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
