package policy

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	"github.com/containers/qmd/internal/incident"
	"github.com/containers/qmd/pkg/cgroups"
	"github.com/containers/qmd/pkg/oom"
	"github.com/containers/qmd/pkg/protect"
	"github.com/containers/qmd/pkg/supervisor"
)

// Run watches the partition until ctx ends or its cgroup goes away. It
// sleeps in the kernel between notifications: the only timers are the oom
// resync tick, while throttled the restore timer, and while a pressure
// trigger is down its re-arm timer.
func (c *Controller) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	defer c.releaseClass()
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

	var signals <-chan protect.Signal
	if c.h.Pressure != nil {
		ch, unsubscribe := c.h.Pressure.Subscribe()
		defer unsubscribe()
		signals = ch
	}
	trigs := c.startTriggers(ctx, time.Now())
	defer trigs.Close()
	defer cancel() // before trigs.Close: the forwarders end with ctx

	restore := time.NewTimer(time.Hour)
	restore.Stop()
	defer restore.Stop()
	resetRestore := func(now time.Time) {
		restore.Stop()
		if at, ok := c.nextRestore(); ok {
			// Not sooner than 10 ms: a due time in the past that no
			// step follows must not spin the loop.
			restore.Reset(max(at.Sub(now), 10*time.Millisecond))
		}
	}
	rearm := time.NewTimer(time.Hour)
	rearm.Stop()
	defer rearm.Stop()
	scheduleRearm := func(now time.Time) {
		rearm.Stop()
		if at, ok := trigs.NextRetry(); ok {
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
			trigs.SampleAll(now)
			c.sampleIO(now)
			c.sampleMem(now)
			c.sampleCPU(now)
		case ev, ok := <-w.Events():
			if !ok {
				return w.Err()
			}
			c.handleCgroupEvent(ev, km)
		case ev := <-trigs.Events():
			if trigs.Stale(ev) {
				continue // an earlier arm of a re-armed trigger
			}
			if ev.Gone {
				trigs.Handle(ev, time.Now())
				scheduleRearm(time.Now())
				continue
			}
			if !c.confirmed(trigs, ev) {
				continue
			}
			switch ev.Watch.Owner {
			case trigStall:
				c.onStall(ctx, ev.At)
			case trigMemTight:
				c.memoryTight(ev.At, "partition memory pressure")
			}
			resetRestore(time.Now())
		case sig, ok := <-signals:
			if !ok {
				signals = nil // the protector ended: no more host/ASIL signals
				continue
			}
			if c.onSignal(sig) {
				resetRestore(time.Now())
			}
		case now := <-rearm.C:
			trigs.Rearm(now)
			scheduleRearm(now)
		case now := <-restore.C:
			c.onQuiet(now)
			resetRestore(now)
		}
	}
}

func (c *Controller) resyncEvery() time.Duration {
	if c.h.Resync > 0 {
		return c.h.Resync
	}
	return oom.DefaultResync
}

// onSignal handles a confirmed host or ASIL pressure window from the
// host-level protector. Host memory pressure counts only for a partition
// that asked for it (pressure.host_memory): the protector watches the host
// when any partition does. It reports whether the signal was this
// partition's (and so resets its restore timer).
func (c *Controller) onSignal(sig protect.Signal) bool {
	switch sig.Kind {
	case protect.Memory:
		if sig.Source == protect.HostSource && !c.cfg.Pressure.HostMemory {
			return false
		}
		c.onMemoryPressure(sig.At)
	case protect.CPU:
		c.onCPUPressure(sig.At)
	case protect.IO:
		c.onIOPressure(sig.At, sig.Dir)
	default:
		return false
	}
	return true
}

// startTriggers registers the partition's own PSI triggers (its stall
// trigger); host and ASIL pressure come from the protector.
func (c *Controller) startTriggers(ctx context.Context, now time.Time) *cgroups.PSISet {
	s := c.newTrigSet(ctx)
	pr := c.cfg.Pressure
	if c.cg.Version() == cgroups.V2 && pr.StallAction != "none" {
		path := filepath.Join(c.cg.Dir("memory"), "memory.pressure")
		s.Add(&cgroups.PSIWatch{Name: "partition stall", Kind: cgroups.PSIFull, Threshold: pr.StallThreshold.Duration,
			Owner: trigStall, Path: func() (string, error) { return path, nil }}, now)
	}
	c.mu.Lock()
	idleClass := c.cls.set != nil
	c.mu.Unlock()
	if idleClass {
		path := filepath.Join(c.cg.Dir("memory"), "memory.pressure")
		s.Add(&cgroups.PSIWatch{Name: "partition memory tight", Kind: cgroups.PSISome,
			Threshold: pr.Window.Duration * memTightPercent / 100,
			Owner:     trigMemTight, Path: func() (string, error) { return path, nil }}, now)
	}
	return s
}

// confirmed checks a trigger's firing against its pressure file's total.
// An unconfirmed (spurious) wake-up is counted and logged at debug level:
// nothing else happens, not even a reset of the restore timer.
func (c *Controller) confirmed(s *cgroups.PSISet, ev cgroups.PSIEvent) bool {
	c.wakeups.Add(1)
	ok, _ := s.Handle(ev, time.Now())
	if !ok {
		c.spurious.Add(1)
	}
	return ok
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
	c.memoryTight(time.Now(), "OOM kill")
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
	c.memoryTight(now, "host or ASIL memory pressure")
	m := c.readMem()
	if c.preemptHostLow(now, m) {
		return
	}
	need, usage, err := m.ws, m.usage, m.err
	if err != nil {
		// No memory.stat: the throttle falls back to half the usage at
		// the start of the episode.
		need = 0
		if usage == 0 {
			usage, _ = c.cg.MemoryCurrent()
		}
	}
	self := c.selfStalling(now)
	// The lock is held across the write: an operator's SetMemoryHigh in
	// between must not be followed by a value computed from the old ceiling.
	c.mu.Lock()
	defer c.mu.Unlock()
	old, before := c.thr.current, *c.thr
	next, changed, held := c.thr.pressure(now, usage, need, self)
	if !changed {
		if held != "" {
			c.log.Debug("memory pressure: memory.high held", zap.String("reason", held), zap.Uint64("memory_high", old),
				zap.Uint64("working_set", need), zap.Uint64("usage", usage))
		}
		return
	}
	c.log.Info("memory pressure: lowering memory.high", zap.Uint64("from", old), zap.Uint64("to", next),
		zap.Uint64("working_set", need), zap.Uint64("usage", usage))
	if !c.h.DryRun {
		if err := c.writeHigh(next); err != nil {
			// Not written: the throttle keeps what is really set, and
			// the next confirmed window tries again.
			*c.thr = before
			c.log.Warn("throttle failed", zap.Uint64("memory_high", next), zap.Error(err))
			return
		}
		c.hooks.Condition(supervisor.Throttled, true, "host memory pressure")
	}
	c.record(incident.Throttle, fmt.Sprintf("memory pressure on the host: memory.high lowered to %s", human(next)),
		map[string]string{"memory_high": strconv.FormatUint(next, 10), "memory_current": strconv.FormatUint(usage, 10),
			"working_set": strconv.FormatUint(need, 10)})
}

// selfStallPercent: the partition's own "full" memory stall, as a share
// of the wall time since the previous throttle decision, from which it is
// taken to be made by the throttle. "full" means every task of the
// partition waits for memory at once. A reclaim pass over page cache costs
// milliseconds per second, far below 10 %; the stall reaction looks for
// 80 % (stall_threshold 800ms per 1s window): the throttle stops stepping
// down long before it could produce what that reaction acts on.
const selfStallPercent = 10

// selfStalling reports whether the partition's own full memory pressure is
// rising (cgroup v2; v1 has no per-cgroup PSI, and its soft limit, which
// stands in for memory.high there, only targets reclaim and never stalls
// by itself). The growth since the previous decision is used when that is
// at most three PSI windows old, else the file's avg10.
func (c *Controller) selfStalling(now time.Time) bool {
	if c.cg.Version() != cgroups.V2 {
		return false
	}
	p, err := c.readPSI(filepath.Join(c.cg.Dir("memory"), "memory.pressure"))
	if err != nil {
		return false
	}
	total, ok := p.Total(cgroups.PSIFull)
	if !ok {
		return false
	}
	c.mu.Lock()
	prev := c.selfFull
	c.selfFull = sample{at: now, total: total}
	c.mu.Unlock()
	el := now.Sub(prev.at)
	win := max(c.cfg.Pressure.Window.Duration, cgroups.UnprivilegedPSIWindow)
	if prev.at.IsZero() || el <= 0 || el > 3*win || total < prev.total {
		return p.Full.Avg10 >= selfStallPercent
	}
	return (total-prev.total)*100 >= uint64(el.Microseconds())*selfStallPercent
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

// stallWindows is how many consecutive PSI windows the partition must be
// stalled before qmd acts: "sustained", and not the few hundred
// milliseconds of a partition tearing itself down (seen when its init is
// killed: the exiting tasks stall on memory while their pages are freed).
const stallWindows = 3

// The last rung of the stall ladder: after offenderKills offenders were
// killed within offenderWindow while the stall went on, the partition is
// restarted. Three kills are what the kernel's OOM killer would also have
// done by then; a minute holds three rounds of stallWindows windows even
// with the unprivileged 2 s window plus the kernel's time to reap.
const (
	offenderKills  = 3
	offenderWindow = time.Minute
)

// onStall handles one confirmed full-pressure window of the partition. The
// reaction ladder, smallest blast radius first:
//  1. not sustained (fewer than stallWindows consecutive windows): nothing;
//  2. qmd's throttle is active: the stall is (at least partly) self-made,
//     memory.high goes one step back up; never a restart;
//  3. otherwise the offender is killed: the partition process the kernel's
//     OOM killer would pick (largest oom_score, never the partition's
//     init), with a stall incident naming it;
//  4. the partition is restarted only when its init is gone, when there is
//     no offender to kill, or after offenderKills kills within
//     offenderWindow without the stall ending.
func (c *Controller) onStall(ctx context.Context, now time.Time) {
	c.memoryTight(now, "partition memory stall")
	win := c.cfg.Pressure.Window.Duration
	c.mu.Lock()
	if !c.lastStall.IsZero() && now.Sub(c.lastStall) > 3*win { // 3: the kernel may have widened the window to 2 s
		c.stalls = c.stalls[:0] // not consecutive: the stall ended, start over
		c.kills = c.kills[:0]
	}
	c.lastStall = now
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
	if err := unix.Kill(c.pid, 0); errors.Is(err, unix.ESRCH) {
		// The init is gone: the partition is exiting (the supervisor's
		// exit path restarts it); asking makes sure a stalled rest is
		// killed, and the supervisor ignores it when it already knows.
		c.log.Warn("partition stalled on memory and its init is gone: asking for a restart", zap.Int("init_pid", c.pid))
		if !c.h.DryRun {
			c.hooks.Restart("partition stalled on memory and its init is gone")
		}
		return
	}
	// Raising memory.high while the host is below its reserve because of
	// the partition would hand it the host's last memory: then the
	// offender goes.
	if _, _, short := c.hostLowPick(now, c.readMem()); !short && c.relaxForStall(now) {
		return
	}
	c.killOffender(now)
}

// relaxForStall answers a stall while qmd's throttle is active: the stall
// is the throttle's own doing, so memory.high goes one step back up.
func (c *Controller) relaxForStall(now time.Time) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.thr.throttled() {
		return false
	}
	old := c.thr.current
	next, _ := c.thr.relax(now)
	still := c.thr.throttled()
	c.log.Warn("partition stalled under qmd's own throttle: raising memory.high one step", zap.Uint64("from", old), zap.Uint64("to", next))
	if !c.h.DryRun {
		if err := c.writeHigh(next); err != nil {
			c.log.Warn("raising memory.high failed", zap.Error(err))
		}
		if !still {
			c.hooks.Condition(supervisor.Throttled, false, "partition stalled under the throttle")
		}
	}
	c.record(incident.Stall, fmt.Sprintf("partition stalled on memory under qmd's throttle: memory.high raised to %s (no restart: the stall is self-made)", human(next)),
		map[string]string{"cause": "throttle", "action": "raise-memory-high", "memory_high": strconv.FormatUint(next, 10),
			"previous_memory_high": strconv.FormatUint(old, 10), "at": now.Format(time.RFC3339Nano)})
	return true
}

// killOffender kills the process the kernel's OOM killer would pick inside
// the partition, or restarts the partition when that is not enough.
func (c *Controller) killOffender(now time.Time) {
	c.mu.Lock()
	keep := c.kills[:0]
	for _, t := range c.kills {
		if now.Sub(t) < offenderWindow {
			keep = append(keep, t)
		}
	}
	c.kills = keep
	killed := len(c.kills)
	c.mu.Unlock()
	at := now.Format(time.RFC3339Nano)
	if killed >= offenderKills {
		c.record(incident.Stall, fmt.Sprintf("partition still stalled on memory after %d offender kills within %s: restarting the partition", killed, offenderWindow),
			map[string]string{"action": "restart", "offenders_killed": strconv.Itoa(killed), "at": at})
		if !c.h.DryRun {
			c.mu.Lock()
			c.kills = c.kills[:0]
			c.mu.Unlock()
			c.hooks.Restart("partition stalled on memory; killing the offenders did not end it")
		}
		return
	}
	b, _, ok := c.largest()
	if !ok {
		c.record(incident.Stall, "partition stalled on memory and no process but its init can be killed: restarting the partition",
			map[string]string{"action": "restart", "at": at})
		if !c.h.DryRun {
			c.hooks.Restart("partition stalled on memory; no offender to kill")
		}
		return
	}
	d, victim := c.killVictim(b, "kill-offender", at)
	c.mu.Lock()
	c.kills = append(c.kills, now)
	c.mu.Unlock()
	c.record(incident.Stall, "partition stalled on memory: "+victim, d)
}

// largest is the partition process the kernel's OOM killer would pick
// (never the partition's init), with the processes it was chosen from.
func (c *Controller) largest() (oom.Badness, []cgroups.Process, bool) {
	procs, err := c.cg.Processes()
	if err != nil {
		c.log.Warn("listing the partition's processes", zap.Error(err))
	}
	b, ok := oom.Largest(c.h.ProcRoot, procs, c.pid)
	return b, procs, ok
}

// killVictim kills b (unless dry-run) and returns an incident's details
// and the words that name what was done ("killed the offender hog (pid 7,
// oom_score 1100) in nested container 0123456789ab", or why killing it
// failed).
func (c *Controller) killVictim(b oom.Badness, action, at string) (map[string]string, string) {
	d := map[string]string{"action": action, "pid": strconv.Itoa(b.PID), "comm": b.Comm,
		"oom_score": strconv.Itoa(b.Score), "oom_score_adj": strconv.Itoa(b.ScoreAdj), "cgroup": b.Cgroup,
		"footprint": strconv.FormatUint(b.Footprint, 10), "at": at}
	who := fmt.Sprintf("the offender %s (pid %d, oom_score %d, %s)", b.Comm, b.PID, b.Score, human(b.Footprint))
	if id := nestedContainer(b.Cgroup, c.cg.Path()); id != "" {
		d["nested_container"] = id
		who += " in nested container " + id
	}
	c.log.Warn("killing a partition process", zap.String("action", action), zap.Int("pid", b.PID), zap.String("comm", b.Comm),
		zap.Int("oom_score", b.Score), zap.Uint64("footprint", b.Footprint), zap.String("cgroup", b.Cgroup))
	if !c.h.DryRun {
		if err := c.kill(b.PID, c.cg.Path()); err != nil {
			c.log.Warn("killing the offender failed", zap.Int("pid", b.PID), zap.String("comm", b.Comm), zap.Error(err))
			d["error"] = err.Error()
			return d, fmt.Sprintf("killing %s failed: %v", who, err)
		}
	}
	return d, "killed " + who
}

// killProcess sends SIGKILL to pid through a pidfd, after checking that
// the process is (still) in the partition's cgroup: a pid reused by a host
// process after the listing is never signalled. process_mrelease then
// frees the victim's memory at once instead of when it finishes exiting
// (Linux 5.15+; ignored where missing).
func (c *Controller) killProcess(pid int, cgroup string) error {
	if c.h.ProcRoot != cgroups.DefaultProcRoot {
		// A fake /proc (tests) says nothing about the real process
		// with that pid: never signal it.
		return fmt.Errorf("pid %d: not killed: %s is not the host's /proc", pid, c.h.ProcRoot)
	}
	fd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		return fmt.Errorf("pidfd_open %d: %w", pid, err)
	}
	defer unix.Close(fd)
	b, err := os.ReadFile(filepath.Join(c.h.ProcRoot, strconv.Itoa(pid), "cgroup"))
	if err != nil {
		return fmt.Errorf("cgroup of pid %d: %w", pid, err)
	}
	in := false
	for _, l := range strings.Split(string(b), "\n") {
		if parts := strings.SplitN(l, ":", 3); len(parts) == 3 && underCgroup(parts[2], cgroup) {
			in = true
			break
		}
	}
	if !in {
		return fmt.Errorf("pid %d is no longer in cgroup %s: not killed", pid, cgroup)
	}
	if err := unix.PidfdSendSignal(fd, unix.SIGKILL, nil, 0); err != nil {
		return fmt.Errorf("kill pid %d: %w", pid, err)
	}
	_, _, _ = unix.Syscall(unix.SYS_PROCESS_MRELEASE, uintptr(fd), 0, 0)
	return nil
}

// nextRestore is when the next restore step may be due. Each reaction
// keeps its own hysteresis, and pressure of one kind holds back only its
// own restore: with one restore timer reset by every confirmed window, a
// loaded host's steady ASIL CPU pressure kept a disk whose contention had
// ended at its lowered IO limit for good (CI, e2e scenario 15).
func (c *Controller) nextRestore() (time.Time, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	var at time.Time
	ok := false
	take := func(t time.Time, due bool) {
		if due && (!ok || t.Before(at)) {
			at, ok = t, true
		}
	}
	take(c.thr.due())
	if c.io.thr != nil {
		take(c.io.thr.due())
	}
	take(c.cpuAt.Add(c.cfg.Pressure.RestoreAfter.Duration), c.cpuLimit)
	take(c.classDue())
	return at, ok
}

// onQuiet takes the restore steps that are due (each reaction's own
// hysteresis decides); it reports whether any reaction is still in force.
func (c *Controller) onQuiet(now time.Time) bool {
	ioStill := c.ioQuiet(now) // takes c.mu itself
	c.mu.Lock()
	defer c.mu.Unlock()
	next, changed := c.thr.tick(now)
	still := c.thr.throttled()
	cpu := c.cpuLimit && now.Sub(c.cpuAt) >= c.cfg.Pressure.RestoreAfter.Duration
	if cpu {
		c.cpuLimit = false
	}
	if cpu && !c.h.DryRun {
		// Back to the configured cpu.quota, not to "max": the reaction
		// composes with a static quota.
		st := c.staticCPUMax()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		if err := c.setter.SetCPUMax(ctx, st); err != nil {
			c.log.Warn("restoring the cpu quota failed", zap.Error(err))
		}
		cancel()
		c.hooks.Condition(supervisor.CPULimited, false, "ASIL CPU pressure gone")
		c.record(incident.CPUQuota, "ASIL CPU pressure gone: partition CPU quota restored to "+cpuPercent(st),
			map[string]string{"cpu_max": st.String()})
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
	classStill := c.classQuiet(now) // after the throttle's step: idle again only once memory.high is back
	return still || ioStill || c.cpuLimit || classStill
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
