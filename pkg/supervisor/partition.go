package supervisor

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/containers/qmd/internal/apierr"
	"github.com/containers/qmd/internal/backoff"
	"github.com/containers/qmd/internal/clock"
	"github.com/containers/qmd/internal/config"
	"github.com/containers/qmd/internal/incident"
	"github.com/containers/qmd/internal/runtime"
)

// command is an operator request handled inside the partition's loop.
type command int

const (
	cmdStart command = iota
	cmdStop
	cmdRestart
	cmdResetFailed
	cmdResync // re-inspect: after Podman came back, or on the slow tick
)

// exited reports that a Wait on container id returned, or that its init
// (pid) is gone.
type exited struct {
	id     string
	code   int32
	pid    int
	source string
}

// partition supervises one partition. All state is owned by run(); other
// goroutines talk to it through channels and read the published Status.
type partition struct {
	s   *Supervisor
	log *zap.Logger

	cmds    chan command
	events  chan runtime.Event
	exits   chan exited
	configs chan *config.Partition
	pings   chan chan struct{}
	// busy is when the loop started its current piece of work (unix
	// nanos), 0 while it waits for input.
	busy    atomic.Int64
	resMsgs chan resourceMsg
	edits   chan func(*config.Partition)

	// res is the resource policy of the running init (nil when none).
	res   atomic.Pointer[Resources]
	usage atomic.Pointer[usageSnap]

	status atomic.Pointer[Status]
	// ready is closed after the first reconcile (adopt, start or failure).
	ready     chan struct{}
	readyOnce sync.Once

	// Owned by run().
	cfg         *config.Partition
	st          Status
	wantRunning bool
	backoff     *backoff.Backoff
	starts      []time.Time // start times inside the start-limit interval
	lastStart   time.Time
	retry       clock.Timer // pending (re)start
	waitCancel  context.CancelFunc
	waitID      string
	resCancel   context.CancelFunc
	resGen      uint64
	resPid      int
}

func newPartition(s *Supervisor, cfg *config.Partition) *partition {
	p := &partition{
		s:       s,
		log:     s.log.With(zap.String("partition", cfg.Name)),
		cmds:    make(chan command, 16),
		events:  make(chan runtime.Event, 64),
		exits:   make(chan exited, 4),
		configs: make(chan *config.Partition, 1),
		pings:   make(chan chan struct{}),
		resMsgs: make(chan resourceMsg, 64),
		edits:   make(chan func(*config.Partition), 8),
		ready:   make(chan struct{}),
		cfg:     cfg,
		backoff: backoff.New(cfg.Restart.BackoffInitial.Duration, cfg.Restart.BackoffMax.Duration),
	}
	if s.rand != nil {
		p.backoff.Rand = s.rand
	}
	p.st = Status{Name: cfg.Name, State: Inactive, OOMScoreAdj: cfg.OOMScoreAdj, Changed: s.clock.Now()}
	p.wantRunning = cfg.Restart.Policy != "" // every configured partition is meant to run
	snap := p.st
	p.status.Store(&snap)
	return p
}

// Status returns the latest snapshot.
func (p *partition) Status() Status { return *p.status.Load() }

// usageSnap is a recent read of the partition's memory usage.
type usageSnap struct {
	at time.Time
	u  Usage
}

// usageMaxAge bounds how stale MemoryCurrent may be: D-Bus clients polling
// properties at a high rate must not turn into cgroupfs reads per call.
const usageMaxAge = 200 * time.Millisecond

// liveStatus is the snapshot with a recent memory usage (MemoryCurrent
// changes all the time and is never pushed).
func (p *partition) liveStatus() Status {
	st := p.Status()
	r := p.res.Load()
	if r == nil || *r == nil {
		return st
	}
	snap := p.usage.Load()
	if snap == nil || time.Since(snap.at) > usageMaxAge || snap.u.CgroupPath != st.CgroupPath && st.CgroupPath != "" {
		snap = &usageSnap{at: time.Now(), u: (*r).Usage()}
		p.usage.Store(snap)
	}
	st.MemoryCurrent, st.MemoryHigh, st.MemoryMax = snap.u.MemoryCurrent, snap.u.MemoryHigh, snap.u.MemoryMax
	return st
}

func (p *partition) markReady() { p.readyOnce.Do(func() { close(p.ready) }) }

// send queues a command without blocking the caller (D-Bus handlers must
// answer promptly). A full queue means the loop is wedged: say so.
func (p *partition) send(c command) error {
	select {
	case p.cmds <- c:
		return nil
	default:
		return fmt.Errorf("partition %s: command queue full", p.cfg.Name)
	}
}

func (p *partition) run(ctx context.Context) {
	defer p.stopWait()
	p.busy.Store(time.Now().UnixNano())
	p.reconcile(ctx, "qmd started")
	p.busy.Store(0)
	p.markReady()
	for {
		var retry <-chan time.Time
		if p.retry != nil {
			retry = p.retry.C()
		}
		var job func()
		select {
		case <-ctx.Done():
			if p.retry != nil {
				p.retry.Stop()
			}
			return
		case reply := <-p.pings:
			close(reply)
		case c := <-p.cmds:
			job = func() { p.handleCommand(ctx, c) }
		case ev := <-p.events:
			job = func() { p.handleEvent(ctx, ev) }
		case ex := <-p.exits:
			job = func() { p.handleExit(ctx, ex) }
		case <-retry:
			p.retry = nil
			job = func() { p.start(ctx, "restart after backoff") }
		case cfg := <-p.configs:
			p.applyConfig(cfg)
		case m := <-p.resMsgs:
			job = func() { p.handleResource(ctx, m) }
		case edit := <-p.edits:
			c := *p.cfg
			edit(&c)
			p.applyConfig(&c)
		}
		if job != nil {
			// Work may wait on Podman (bounded by its timeouts); the
			// watchdog's health check reads how long.
			p.busy.Store(time.Now().UnixNano())
			job()
			p.busy.Store(0)
		}
	}
}

func (p *partition) handleExit(ctx context.Context, ex exited) {
	if ex.id != p.st.ContainerID || (ex.pid != 0 && ex.pid != p.st.MainPID) {
		return
	}
	reason := fmt.Sprintf("wait returned exit code %d", ex.code)
	if ex.source != "" {
		reason = ex.source
	}
	p.containerGone(ctx, reason, ex.pid)
}

// maxBusy is how long one piece of work may legitimately take: a stop
// (stop timeout) and a start (a few bounded Podman calls).
func (p *partition) maxBusy() time.Duration {
	return p.cfg.StopTimeout.Duration + 4*p.s.podmanTimeout + 10*time.Second
}

// setState records a transition and publishes it.
func (p *partition) setState(s State, reason string) {
	changed := p.st.State != s
	p.st.State = s
	if changed {
		p.st.Changed = p.s.clock.Now()
	}
	p.publish(reason, changed)
}

func (p *partition) publish(reason string, transition bool) {
	p.st.PodmanUp = p.s.podmanUp.Load()
	snap := p.st
	p.status.Store(&snap)
	if transition {
		p.log.Info("partition "+string(snap.State),
			zap.String("state", string(snap.State)),
			zap.String("container_id", snap.ContainerID),
			zap.String("reason", reason))
	}
	p.s.publish(Change{Status: snap, Reason: reason})
}

func (p *partition) record(t incident.Type, summary string, details map[string]string) {
	if details == nil {
		details = map[string]string{}
	}
	if p.st.ContainerID != "" {
		details["container_id"] = p.st.ContainerID
	}
	p.s.sink.Record(incident.Incident{Partition: p.cfg.Name, Type: t, Summary: summary, Details: details})
}

// reconcile brings the partition in line with what is wanted, starting from
// what Podman says. It is how qmd starts (adoption) and how it recovers
// after losing Podman.
func (p *partition) reconcile(ctx context.Context, reason string) {
	if p.st.State == Failed || p.st.State == Stopping {
		return
	}
	name := p.cfg.ContainerNameOrDefault()
	c, err := p.s.rt.Inspect(ctx, name)
	switch {
	case errors.Is(err, runtime.ErrNotFound):
		p.st.ContainerID, p.st.MainPID = "", 0
		if p.wantRunning && p.retry == nil {
			p.start(ctx, reason+": no container yet")
		} else if !p.wantRunning {
			p.setState(Inactive, reason)
		}
		return
	case errors.Is(err, runtime.ErrUnavailable):
		p.log.Warn("podman unavailable, will retry when it is back", zap.Error(err))
		p.publish(reason, false)
		return
	case err != nil:
		p.log.Error("inspect failed", zap.Error(err))
		return
	}
	if c.Labels[runtime.LabelPartition] != p.cfg.Name {
		p.st.Result = "name-conflict"
		p.setState(Failed, fmt.Sprintf("container %q exists but is not managed by qmd for this partition (label %s=%q)",
			name, runtime.LabelPartition, c.Labels[runtime.LabelPartition]))
		return
	}
	adopting := p.st.ContainerID != c.ID
	p.st.ContainerID = c.ID
	p.st.Drift = c.Labels[runtime.LabelConfigHash] != p.cfg.CreateHash()
	if c.Running {
		p.st.MainPID, p.st.CgroupPath = c.Pid, c.CgroupPath
		if adopting {
			if p.lastStart.IsZero() {
				p.lastStart = c.StartedAt
			}
			p.record(incident.Adopt, "adopted running partition", map[string]string{
				"pid": strconv.Itoa(c.Pid), "started_at": c.StartedAt.Format(time.RFC3339)})
			if p.st.Drift {
				p.record(incident.ConfigDrift, "running container was created from another configuration; it will be recreated at its next restart",
					map[string]string{"label": c.Labels[runtime.LabelConfigHash], "config": p.cfg.CreateHash()})
			}
		}
		p.watch(ctx, c.ID)
		p.attachResources(ctx)
		if p.st.State != Running && p.st.State != Throttled && p.st.State != Frozen {
			p.setState(Running, reason+": container running")
		} else {
			p.publish(reason, false)
		}
		return
	}
	// The container exists but is not running.
	p.st.MainPID = 0
	p.st.LastExit = c.ExitCode
	if p.st.State == Restarting && p.retry != nil {
		return // a restart is already scheduled
	}
	if !p.wantRunning {
		p.setState(Inactive, reason)
		return
	}
	if p.st.State == Running || p.st.State == Throttled || p.st.State == Frozen {
		p.died(ctx, c.ExitCode, reason+": container no longer running")
		return
	}
	p.start(ctx, reason+": container "+c.Status)
}

// watch starts a Wait on the container: a second source of exit besides
// the events stream (events can be lost while Podman restarts).
func (p *partition) watch(ctx context.Context, id string) {
	if p.waitID == id && p.waitCancel != nil {
		return
	}
	p.stopWait()
	wctx, cancel := context.WithCancel(ctx)
	p.waitCancel, p.waitID = cancel, id
	go func() {
		code, err := p.s.rt.Wait(wctx, id)
		if err != nil || wctx.Err() != nil {
			return // unavailable or cancelled: the events/resync path covers it
		}
		select {
		case p.exits <- exited{id: id, code: code}:
		case <-wctx.Done():
		}
	}()
	if p.s.procWatch == nil || p.st.MainPID <= 0 {
		return
	}
	pid := p.st.MainPID
	done, err := p.s.procWatch(wctx, pid)
	if err != nil {
		p.log.Debug("init exit watch unavailable; relying on podman", zap.Int("pid", pid), zap.Error(err))
		return
	}
	go func() {
		<-done
		if wctx.Err() != nil {
			return
		}
		select {
		case p.exits <- exited{id: id, code: -1, pid: pid, source: fmt.Sprintf("init (pid %d) exited", pid)}:
		case <-wctx.Done():
		}
	}()
}

func (p *partition) stopWait() {
	if p.waitCancel != nil {
		p.waitCancel()
		p.waitCancel, p.waitID = nil, ""
	}
	p.detachResources()
}

// attachResources starts the resource policy for the running init.
func (p *partition) attachResources(ctx context.Context) {
	if p.s.newResources == nil || p.st.MainPID <= 0 || (p.resCancel != nil && p.resPid == p.st.MainPID) {
		return
	}
	p.detachResources()
	p.resPid = p.st.MainPID
	p.resGen++
	gen := p.resGen
	hooks := Hooks{
		OOMKill:  func(n int) { p.resMsg(resourceMsg{gen: gen, oomKills: n}) },
		Restart:  func(reason string) { p.resMsg(resourceMsg{gen: gen, restart: reason}) },
		SetState: func(s State, reason string) { p.resMsg(resourceMsg{gen: gen, state: s, reason: reason}) },
		Sink:     p.s.sink,
	}
	r, err := p.s.newResources(p.cfg, Init{ContainerID: p.st.ContainerID, PID: p.st.MainPID}, hooks)
	if err != nil {
		p.log.Warn("resource policy not applied", zap.Error(err))
		return
	}
	p.res.Store(&r)
	rctx, cancel := context.WithCancel(ctx)
	p.resCancel = cancel
	go func() {
		if err := r.Run(rctx); err != nil && rctx.Err() == nil {
			p.log.Warn("resource policy stopped", zap.Error(err))
		}
	}()
	p.refreshUsage()
}

func (p *partition) detachResources() {
	if p.resCancel != nil {
		p.resCancel()
		p.resCancel = nil
	}
	var none Resources
	p.res.Store(&none)
}

// refreshUsage copies the policy's view into the status.
func (p *partition) refreshUsage() {
	r := p.res.Load()
	if r == nil || *r == nil {
		return
	}
	u := (*r).Usage()
	p.usage.Store(&usageSnap{at: time.Now(), u: u})
	p.st.MemoryCurrent, p.st.MemoryHigh, p.st.MemoryMax = u.MemoryCurrent, u.MemoryHigh, u.MemoryMax
	if u.CgroupPath != "" {
		p.st.CgroupPath = u.CgroupPath
	}
}

func (p *partition) resMsg(m resourceMsg) {
	select {
	case p.resMsgs <- m:
	default:
		p.log.Warn("resource report dropped: partition loop busy")
	}
}

func (p *partition) handleResource(ctx context.Context, m resourceMsg) {
	if m.gen != 0 && m.gen != p.resGen {
		return // from the policy of an earlier init
	}
	if m.oomKills > 0 {
		p.st.NOOMKills += uint32(m.oomKills)
	}
	p.refreshUsage()
	switch {
	case m.restart != "":
		if p.st.State == Running || p.st.State == Throttled || p.st.State == Frozen {
			p.stop(ctx, m.restart)
			p.wantRunning = true
			p.start(ctx, m.restart)
		}
		return
	case m.state != "" && (p.st.State == Running || p.st.State == Throttled || p.st.State == Frozen):
		p.setState(m.state, m.reason)
		return
	}
	p.publish("resource usage", false)
}

// persist changes the partition's configuration in place (non-runtime
// D-Bus settings); it lasts until the next reload.
func (p *partition) persist(f func(*config.Partition)) {
	select {
	case p.edits <- f:
	default:
		p.log.Warn("configuration edit dropped: partition loop busy")
	}
}

func (p *partition) handleEvent(ctx context.Context, ev runtime.Event) {
	if ev.ID != p.st.ContainerID {
		return // an old container, or one we do not know yet (replayed)
	}
	switch ev.Action {
	case "died", "exited", "stop", "kill", "remove", "cleanup":
		if p.st.State == Running || p.st.State == Throttled || p.st.State == Frozen {
			p.containerGone(ctx, "podman event "+ev.Action, 0)
		}
		if ev.Action == "remove" && p.st.State != Stopping {
			p.st.ContainerID = ""
		}
	}
}

// containerGone confirms an exit with an inspect (events may be replayed
// or stale) and then reacts. deadPid is the init known to be gone (pidfd),
// 0 when the source was Podman: Podman may not have noticed a death the
// kernel reported, so its "running" is re-checked briefly.
func (p *partition) containerGone(ctx context.Context, reason string, deadPid int) {
	if p.st.State != Running && p.st.State != Throttled && p.st.State != Frozen {
		return
	}
	id := p.st.ContainerID
	c, err := p.s.rt.Inspect(ctx, id)
	for i := 0; deadPid > 0 && err == nil && c.Running && c.Pid == deadPid && i < 50; i++ {
		t := p.s.clock.NewTimer(10 * time.Millisecond)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C():
		}
		c, err = p.s.rt.Inspect(ctx, id)
	}
	switch {
	case err == nil && c.Running:
		if c.Pid != p.st.MainPID {
			p.st.MainPID = c.Pid
			p.publish("container restarted outside qmd", false)
		}
		return
	case errors.Is(err, runtime.ErrUnavailable):
		return // resync after reconnection decides
	case errors.Is(err, runtime.ErrNotFound):
		p.st.ContainerID = ""
		p.died(ctx, -1, reason+" (container removed)")
	case err != nil:
		p.log.Warn("inspect after exit failed", zap.Error(err))
		p.died(ctx, -1, reason)
	default:
		p.died(ctx, c.ExitCode, reason)
	}
}

// died handles an unexpected exit of the partition's init.
func (p *partition) died(ctx context.Context, code int32, reason string) {
	p.stopWait()
	now := p.s.clock.Now()
	p.st.MainPID = 0
	p.st.LastExit = code
	p.st.Result = "exit-code"
	if !p.wantRunning {
		p.setState(Inactive, reason)
		return
	}
	pol := p.cfg.Restart.Policy
	if pol == "no" || (pol == "on-failure" && code == 0) {
		p.st.Result = "success"
		if code != 0 {
			p.st.Result = "exit-code"
		}
		p.setState(Inactive, fmt.Sprintf("%s, exit code %d, restart policy %s", reason, code, pol))
		return
	}
	if !p.lastStart.IsZero() && now.Sub(p.lastStart) >= p.cfg.Restart.BackoffReset.Duration {
		p.backoff.Reset()
	}
	delay := p.backoff.Next()
	p.st.NRestarts++
	p.record(incident.Restart, fmt.Sprintf("partition init exited (code %d); restarting in %s", code, delay),
		map[string]string{"exit_code": strconv.Itoa(int(code)), "delay": delay.String(), "reason": reason,
			"restarts": strconv.Itoa(int(p.st.NRestarts))})
	p.setState(Restarting, fmt.Sprintf("%s (exit code %d); restart in %s", reason, code, delay))
	if delay == 0 {
		p.start(ctx, "restart")
		return
	}
	p.retry = p.s.clock.NewTimer(delay)
}

// startLimitHit counts this start against the start limit.
func (p *partition) startLimitHit(now time.Time) bool {
	burst, interval := p.cfg.Restart.StartLimitBurst, p.cfg.Restart.StartLimitInterval.Duration
	if burst == 0 {
		return false
	}
	keep := p.starts[:0]
	for _, t := range p.starts {
		if now.Sub(t) < interval {
			keep = append(keep, t)
		}
	}
	p.starts = keep
	if len(p.starts) >= burst {
		return true
	}
	p.starts = append(p.starts, now)
	return false
}

// start creates (if needed) and starts the container.
func (p *partition) start(ctx context.Context, reason string) {
	if p.retry != nil {
		p.retry.Stop()
		p.retry = nil
	}
	now := p.s.clock.Now()
	if p.startLimitHit(now) {
		p.st.Result = "start-limit-hit"
		p.stopWait()
		p.record(incident.StartLimit, fmt.Sprintf("more than %d starts within %s; partition failed until reset",
			p.cfg.Restart.StartLimitBurst, p.cfg.Restart.StartLimitInterval.Duration), nil)
		p.setState(Failed, "start limit hit")
		return
	}
	if p.st.State != Restarting {
		p.setState(Starting, reason)
	}
	t0 := time.Now()
	id, err := p.ensureContainer(ctx)
	if err == nil {
		err = p.s.rt.Start(ctx, id)
		if errors.Is(err, runtime.ErrNotFound) {
			p.st.ContainerID = ""
		}
	}
	if err != nil {
		p.startFailed(ctx, err)
		return
	}
	p.log.Debug("container started", zap.Duration("took", time.Since(t0)))
	p.lastStart = now
	c, err := p.s.rt.Inspect(ctx, id)
	if err != nil {
		p.startFailed(ctx, err)
		return
	}
	p.st.Result = "success"
	if !c.Running {
		// It exited already (an init that fails at once): a crash.
		p.st.State = Running
		p.died(ctx, c.ExitCode, "init exited right after start")
		return
	}
	p.st.MainPID, p.st.CgroupPath = c.Pid, c.CgroupPath
	p.record(incident.Start, "partition started", map[string]string{"pid": strconv.Itoa(c.Pid), "reason": reason})
	p.watch(ctx, id)
	p.attachResources(ctx)
	p.setState(Running, reason)
}

func (p *partition) startFailed(ctx context.Context, err error) {
	if errors.Is(err, runtime.ErrUnavailable) {
		// Not the partition's fault: do not burn the start limit. The
		// resync after reconnection starts it.
		p.starts = p.starts[:max(len(p.starts)-1, 0)]
		p.log.Warn("podman unavailable; start deferred until it is back", zap.Error(err))
		p.setState(Restarting, "waiting for podman")
		return
	}
	p.st.Result = "start-failed"
	p.log.Error("start failed", zap.Error(err))
	delay := p.backoff.Next()
	if delay == 0 {
		delay = p.backoff.Next()
	}
	p.setState(Restarting, fmt.Sprintf("start failed: %v; retry in %s", err, delay))
	p.retry = p.s.clock.NewTimer(delay)
}

// ensureContainer returns the ID of a container built from the current
// configuration, recreating a drifted one.
func (p *partition) ensureContainer(ctx context.Context) (string, error) {
	if p.st.ContainerID != "" && !p.st.Drift && p.st.State == Restarting {
		// A restart of the container we know, built from the current
		// configuration: no lookup needed (Start fails with ErrNotFound if
		// it vanished, and the next attempt looks it up).
		return p.st.ContainerID, nil
	}
	name := p.cfg.ContainerNameOrDefault()
	c, err := p.s.rt.Inspect(ctx, name)
	switch {
	case errors.Is(err, runtime.ErrNotFound):
	case err != nil:
		return "", err
	case c.Labels[runtime.LabelPartition] != p.cfg.Name:
		return "", fmt.Errorf("container %q exists but is not managed by qmd", name)
	case c.Labels[runtime.LabelConfigHash] == p.cfg.CreateHash():
		// Ours and current (Start of one that someone started meanwhile
		// is a no-op: adopted, never duplicated).
		p.st.ContainerID, p.st.Drift = c.ID, false
		return c.ID, nil
	default:
		p.log.Info("recreating container from the current configuration",
			zap.String("container_id", c.ID), zap.String("reason", "config changed"))
		if err := p.s.rt.Remove(ctx, c.ID); err != nil && !errors.Is(err, runtime.ErrNotFound) {
			return "", err
		}
	}
	id, err := p.s.rt.Create(ctx, p.cfg)
	if err != nil {
		return "", err
	}
	p.st.ContainerID, p.st.Drift = id, false
	return id, nil
}

func (p *partition) stop(ctx context.Context, reason string) {
	p.wantRunning = false
	if p.retry != nil {
		p.retry.Stop()
		p.retry = nil
	}
	if p.st.ContainerID == "" {
		p.setState(Inactive, reason)
		return
	}
	p.stopWait()
	p.setState(Stopping, reason)
	if err := p.s.rt.Stop(ctx, p.st.ContainerID, p.cfg.StopTimeout.Duration); err != nil && !errors.Is(err, runtime.ErrNotFound) {
		p.log.Error("stop failed", zap.Error(err))
	}
	p.st.MainPID = 0
	p.st.Result = "success"
	p.record(incident.Stop, "partition stopped", map[string]string{"reason": reason})
	p.setState(Inactive, reason)
}

func (p *partition) handleCommand(ctx context.Context, c command) {
	switch c {
	case cmdStart:
		p.wantRunning = true
		if p.st.State == Inactive {
			p.start(ctx, "start requested")
		}
	case cmdStop:
		p.stop(ctx, "stop requested")
	case cmdRestart:
		if p.st.State == Failed {
			return
		}
		p.stop(ctx, "restart requested")
		p.wantRunning = true
		p.start(ctx, "restart requested")
	case cmdResetFailed:
		if p.st.State != Failed {
			return
		}
		p.starts = nil
		p.backoff.Reset()
		p.st.Result = "success"
		p.wantRunning = true
		p.setState(Inactive, "failed state reset")
		p.reconcile(ctx, "reset")
	case cmdResync:
		p.reconcile(ctx, "resync")
	}
}

// applyConfig takes a reloaded configuration. Restart policy changes apply
// at once; create-time changes mark the running container as drifted.
func (p *partition) applyConfig(cfg *config.Partition) {
	old := p.cfg
	p.cfg = cfg
	p.backoff.Initial, p.backoff.Max = cfg.Restart.BackoffInitial.Duration, cfg.Restart.BackoffMax.Duration
	p.st.OOMScoreAdj = cfg.OOMScoreAdj
	if old.CreateHash() != cfg.CreateHash() && p.st.ContainerID != "" {
		p.st.Drift = true
		p.record(incident.ConfigDrift, "configuration changed; the container is recreated at its next restart", nil)
	}
	p.publish("configuration reloaded", false)
}

// ops used by the Supervisor's public methods.

func (p *partition) request(c command) error {
	st := p.Status()
	switch c {
	case cmdStart, cmdRestart:
		if st.State == Failed {
			return fmt.Errorf("partition %s: %w", st.Name, apierr.ErrStartLimitHit)
		}
	}
	return p.send(c)
}
