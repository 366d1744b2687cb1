package supervisor

import (
	"context"
	"errors"
	"fmt"
	"reflect"
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

// partition supervises one partition. Its loop (run) is the only writer of
// its state: Podman events, exits, operator commands, policy reactions and
// timers all arrive as messages, and the loop never blocks on Podman or the
// cgroup filesystem: that work runs as operations on other goroutines whose
// results come back as messages. So the loop always answers (the watchdog
// asks it), and each message ends with a reconcile step that converges what
// Podman shows with what is wanted.
type partition struct {
	s    *Supervisor
	name string
	log  *zap.Logger

	inbox chan func() // run on the loop, in order
	// kick wakes the loop for a resync when the inbox was full (events are
	// never allowed to block the supervisor's event reader).
	kick chan struct{}
	// heartbeat is when the loop last finished a message (unix nanos);
	// the watchdog's health check reads it.
	heartbeat atomic.Int64
	done      chan struct{}

	status  atomic.Pointer[Status]
	cfgView atomic.Pointer[config.Partition] // the loop's cfg, for readers
	res     atomic.Pointer[resHolder]        // the running policy, for usage reads
	usage   atomic.Pointer[usageSnap]

	// ready is closed after the first reconcile settled (adopted, started,
	// failed, or Podman known to be away).
	ready     chan struct{}
	readyOnce sync.Once

	// resq serialises resource work (freeze, limits) off the loop.
	resq chan func()

	// Owned by run().
	ctx         context.Context
	cfg         *config.Partition
	st          Status
	want        want
	removed     bool   // gone from the configuration: no longer supervised
	restartReq  string // a restart is wanted (stop, then start); its reason
	restartKill bool   // ... and the stop kills instead of SIGTERM

	obs      *runtime.Container // last observation (nil: no container)
	obsValid bool
	obsGen   uint64 // bumped on every invalidation
	deadPid  int    // init reported gone by the kernel; Podman may lag
	deadSeen int    // re-inspects spent on deadPid

	op      string // in-flight lifecycle operation ("" = none)
	opStart time.Time

	backoff   *backoff.Backoff // restart delays
	retry     *backoff.Backoff // Podman error retries
	starts    []time.Time      // start times inside the start-limit interval
	lastStart time.Time
	timer     clock.Timer // pending restart / retry
	timerWhy  string
	resync    clock.Timer

	waitID, waitPid int
	waitCtr         string
	waitCancel      context.CancelFunc
	waitFails       int

	resCancel context.CancelFunc
	resGen    uint64
	resPid    int
	resBusy   bool // a policy is being built
	resFails  int  // policy builds that failed since the last resync
	cur       Resources
	timedOut  bool // the last Podman operation timed out (PodmanDegraded)
	// policyReloaded: the next attached policy comes from a reload.
	policyReloaded bool
	// restarting: activating because the init died (SubState restarting).
	restarting bool
}

type want int

const (
	wantRun want = iota
	wantStop
)

type resHolder struct{ r Resources }

func newPartition(s *Supervisor, cfg *config.Partition) *partition {
	p := &partition{
		s:       s,
		name:    cfg.Name,
		log:     s.log.With(zap.String("partition", cfg.Name)),
		inbox:   make(chan func(), 256),
		kick:    make(chan struct{}, 1),
		done:    make(chan struct{}),
		ready:   make(chan struct{}),
		resq:    make(chan func(), 16),
		cfg:     cfg,
		backoff: backoff.New(cfg.Restart.BackoffInitial.Duration, cfg.Restart.BackoffMax.Duration),
		retry:   backoff.New(s.retryInitial, s.retryMax),
	}
	if s.rand != nil {
		p.backoff.Rand = s.rand
		p.retry.Rand = s.rand
	}
	p.st = Status{Name: cfg.Name, State: Inactive, SubState: SubDead, OOMScoreAdj: cfg.OOMScoreAdj, Changed: s.clock.Now()}
	if s.restore != nil {
		p.st.NRestarts = s.restore(cfg.Name)
	}
	snap := p.st
	p.status.Store(&snap)
	c := *cfg
	p.cfgView.Store(&c)
	p.res.Store(&resHolder{})
	p.heartbeat.Store(time.Now().UnixNano())
	return p
}

// Status returns the latest snapshot.
func (p *partition) Status() Status { return *p.status.Load() }

// Config returns the configuration the loop works with.
func (p *partition) Config() config.Partition { return *p.cfgView.Load() }

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
	r := p.res.Load().r
	if r == nil || !st.Running() {
		return st
	}
	snap := p.usage.Load()
	if snap == nil || time.Since(snap.at) > usageMaxAge {
		snap = &usageSnap{at: time.Now(), u: r.Usage()}
		p.usage.Store(snap)
	}
	st.MemoryCurrent, st.MemoryHigh, st.MemoryMax = snap.u.MemoryCurrent, snap.u.MemoryHigh, snap.u.MemoryMax
	if snap.u.CgroupPath != "" {
		st.CgroupPath = snap.u.CgroupPath
	}
	return st
}

func (p *partition) markReady() { p.readyOnce.Do(func() { close(p.ready) }) }

// post queues f for the loop, waiting while the inbox is full (the loop
// never blocks, so it drains quickly). It fails only when the loop is gone
// or ctx ends.
func (p *partition) post(ctx context.Context, f func()) error {
	select {
	case p.inbox <- f:
		return nil
	case <-p.done:
		return fmt.Errorf("partition %s: no longer supervised", p.name)
	case <-ctx.Done():
		return fmt.Errorf("partition %s: loop did not take the request: %w", p.name, ctx.Err())
	}
}

// tryPost queues f without waiting; a full inbox turns into a resync.
func (p *partition) tryPost(f func()) {
	select {
	case p.inbox <- f:
	default:
		select {
		case p.kick <- struct{}{}:
		default:
		}
	}
}

// call runs f on the loop and returns its result. f may answer later (it
// gets the reply function): long work answers when its operation is done.
func (p *partition) call(ctx context.Context, f func(reply func(error))) error {
	ch := make(chan error, 1)
	reply := func(err error) {
		select {
		case ch <- err:
		default:
		}
	}
	if err := p.post(ctx, func() { f(reply) }); err != nil {
		return err
	}
	select {
	case err := <-ch:
		return err
	case <-p.done:
		return fmt.Errorf("partition %s: no longer supervised", p.name)
	case <-ctx.Done():
		return fmt.Errorf("partition %s: no answer: %w", p.name, ctx.Err())
	}
}

// run is the partition loop.
func (p *partition) run(ctx context.Context) {
	p.ctx = ctx
	defer close(p.done)
	defer p.teardown()
	go p.resourceWorker(ctx)
	p.armResync()
	p.reconcile("qmd started")
	for {
		var timerC, resyncC <-chan time.Time
		if p.timer != nil {
			timerC = p.timer.C()
		}
		if p.resync != nil {
			resyncC = p.resync.C()
		}
		select {
		case <-ctx.Done():
			return
		case f := <-p.inbox:
			f()
		case <-p.kick:
			p.invalidate()
		case <-timerC:
			p.timer = nil
			p.log.Debug("timer", zap.String("why", p.timerWhy))
			if p.timerWhy == "restart" {
				p.invalidate() // one observation path: invalidate also bumps obsGen
			}
		case <-resyncC:
			p.resync = nil
			p.armResync()
			p.waitFails, p.resFails = 0, 0
			p.invalidate()
		}
		p.reconcile("")
		p.heartbeat.Store(time.Now().UnixNano())
		if p.removed && p.op == "" {
			p.log.Info("partition removed from the configuration: no longer supervised")
			return
		}
	}
}

// armResync schedules the next jittered resync (the `resync` key): a
// reconcile that needs no event, so that no lost event or failed watch can
// strand the partition.
func (p *partition) armResync() {
	every := p.s.resyncEvery()
	j := 0.5
	if p.s.rand != nil {
		j = p.s.rand()
	}
	d := time.Duration(float64(every) * (0.75 + 0.5*j))
	p.resync = p.s.clock.NewTimer(d)
}

func (p *partition) teardown() {
	if p.timer != nil {
		p.timer.Stop()
	}
	if p.resync != nil {
		p.resync.Stop()
	}
	p.stopWatch()
	p.detachResources()
}

// invalidate marks the observation stale: the next reconcile inspects.
func (p *partition) invalidate() {
	p.obsValid = false
	p.obsGen++
}

// setTimer schedules one wake-up (a restart delay or a retry).
func (p *partition) setTimer(d time.Duration, why string) {
	if p.timer != nil {
		p.timer.Stop()
	}
	p.timer, p.timerWhy = p.s.clock.NewTimer(d), why
}

func (p *partition) clearTimer() {
	if p.timer != nil {
		p.timer.Stop()
		p.timer = nil
	}
}

// setState records a lifecycle transition.
func (p *partition) setState(s State, reason string) {
	if s != Activating {
		p.restarting = false
	}
	if p.st.State != s {
		p.st.State = s
		p.st.Changed = p.s.clock.Now()
		p.st.Reason = reason
		p.log.Info("partition "+word(s, p.restarting), zap.String("state", string(s)),
			zap.String("container_id", p.st.ContainerID), zap.String("reason", reason))
	}
	p.publish(reason)
}

// word is the one-word log message of a transition ("partition running"),
// stable for operators' journal filters since the first release.
func word(s State, restarting bool) string {
	switch s {
	case Active:
		return "running"
	case Activating:
		if restarting {
			return "restarting"
		}
		return "starting"
	case Deactivating:
		return "stopping"
	}
	return string(s)
}

// setCond sets or clears a condition.
func (p *partition) setCond(c Condition, on bool, reason string) {
	if p.st.Conditions.Has(c) == on {
		return
	}
	cs := p.st.Conditions.clone()
	if on {
		if cs == nil {
			cs = Conditions{}
		}
		cs[c] = reason
	} else {
		delete(cs, c)
	}
	p.st.Conditions = cs
	p.st.Reason = reason
	p.log.Info("partition condition", zap.String("condition", string(c)), zap.Bool("set", on), zap.String("reason", reason))
	p.publish(reason)
}

// publish stores a fresh snapshot and tells subscribers when it changed.
func (p *partition) publish(reason string) {
	p.st.PodmanUp = p.s.podmanUp.Load()
	p.st.SubState = deriveSub(p.st.State, p.st.Conditions, p.restarting)
	snap := p.st
	snap.Conditions = p.st.Conditions.clone()
	old := p.status.Swap(&snap)
	if reason == "" && sameStatus(*old, snap) {
		return
	}
	if reason == "" {
		reason = p.st.Reason
	}
	p.s.publish(Change{Status: snap, Reason: reason})
}

func sameStatus(a, b Status) bool {
	if len(a.Conditions) == 0 && len(b.Conditions) == 0 {
		a.Conditions, b.Conditions = nil, nil
	}
	// PodmanLatency changes with every operation: not a change to publish.
	a.PodmanLatency, b.PodmanLatency = 0, 0
	return reflect.DeepEqual(a, b)
}

func (p *partition) record(t incident.Type, summary string, details map[string]string) {
	if details == nil {
		details = map[string]string{}
	}
	if p.st.ContainerID != "" {
		details["container_id"] = p.st.ContainerID
	}
	p.s.sink.Record(incident.Incident{Partition: p.name, Type: t, Summary: summary, Details: details})
}

// reconcile converges what Podman shows with what is wanted. It only ever
// starts one operation and returns; the operation's result calls it again.
func (p *partition) reconcile(reason string) {
	defer p.publish("")
	if p.op != "" || p.ctx.Err() != nil || p.removed {
		return
	}
	if p.timer != nil {
		if p.timerWhy != "re-inspect" {
			p.markReady() // settled until the timer fires
		}
		return // waiting: a restart delay or a retry after a Podman error
	}
	if !p.obsValid {
		p.launchInspect()
		return
	}
	c := p.obs
	if c != nil && c.Labels[runtime.LabelPartition] != p.name {
		p.stopWatch()
		p.detachResources()
		if p.st.State != Failed {
			p.st.Result = "name-conflict"
			p.setState(Failed, fmt.Sprintf("container %q exists but is not managed by qmd for this partition (label %s=%q)",
				c.Name, runtime.LabelPartition, c.Labels[runtime.LabelPartition]))
		}
		p.markReady()
		return
	}
	running := c != nil && c.Running
	if running && p.deadPid != 0 && c.Pid == p.deadPid {
		// The kernel said the init is gone and Podman has not noticed
		// yet: look again shortly, briefly.
		// Never trust a "running" for a pid the kernel reported dead:
		// 10 ms apart for half a second, then every 100 ms.
		p.deadSeen++
		p.invalidate()
		d := 10 * time.Millisecond
		if p.deadSeen > 50 {
			d = 100 * time.Millisecond
		}
		p.setTimer(d, "re-inspect")
		return
	}
	if p.deadPid != 0 {
		p.deadPid = 0 // Podman agrees (or shows another init)
	}
	if c != nil {
		p.st.ContainerID = c.ID
		p.st.Drift = recreateReason(p.cfg, c) != ""
	} else {
		p.st.ContainerID, p.st.Drift = "", false
	}
	if p.st.State == Failed {
		// Only ResetFailed (or a reload) leaves failed. A container that
		// still runs (a stop that failed) stays watched.
		if running {
			p.observeRunning(c)
		} else {
			p.stopWatch()
			p.detachResources()
			p.st.MainPID = 0
		}
		p.markReady()
		return
	}
	switch {
	case running && p.want == wantRun && p.restartReq == "":
		p.observeRunning(c)
		if p.st.State != Active {
			p.adopted(c, reason)
		}
		p.podmanOK()
		p.markReady()
	case running:
		// Stop wanted, or a restart: stop (or kill) first.
		why := "stop requested"
		if p.restartReq != "" {
			why = p.restartReq
		}
		p.launchStop(c, why, p.restartKill || p.st.Conditions.Has(Frozen))
	case p.want == wantRun:
		if c != nil && p.restarting && p.st.LastExit == -1 {
			p.st.LastExit = c.ExitCode // the code Podman learnt after the kernel's report
		}
		if p.st.State == Active {
			p.died(c, "container no longer running")
			if p.timer != nil || p.st.State != Activating {
				return
			}
		}
		p.restartReq, p.restartKill = "", false
		p.launchStart(reason)
	default:
		p.stopWatch()
		p.detachResources()
		p.st.MainPID = 0
		if c != nil {
			p.st.LastExit = c.ExitCode
		}
		if p.st.State != Inactive {
			p.setState(Inactive, firstOf(reason, "not running"))
		}
		p.podmanOK()
		p.markReady()
	}
}

func firstOf(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// observeRunning keeps the watches and the policy on the running init.
func (p *partition) observeRunning(c *runtime.Container) {
	if c.Pid != p.st.MainPID && p.st.MainPID != 0 && p.st.State == Active {
		p.log.Info("partition init changed outside qmd", zap.Int("old_pid", p.st.MainPID), zap.Int("pid", c.Pid))
	}
	p.st.MainPID = c.Pid
	if c.CgroupPath != "" && p.st.CgroupPath == "" {
		p.st.CgroupPath = c.CgroupPath
	}
	p.watch(c.ID, c.Pid)
	p.attachResources(c.ID, c.Pid)
}

// adopted is a running container the loop did not start itself: qmd
// started with the partition running, or Podman came back with it.
func (p *partition) adopted(c *runtime.Container, reason string) {
	if p.lastStart.IsZero() {
		p.lastStart = c.StartedAt
	}
	p.st.Result = "success"
	p.record(incident.Adopt, "adopted running partition", map[string]string{
		"pid": strconv.Itoa(c.Pid), "started_at": c.StartedAt.Format(time.RFC3339)})
	if why := recreateReason(p.cfg, c); why != "" {
		p.record(incident.ConfigDrift, "running container was created from another configuration ("+why+"); it will be recreated at its next restart",
			map[string]string{"label": c.Labels[runtime.LabelConfigHash], "config": p.cfg.CreateHash(),
				"cgroup_parent": c.CgroupParent, "slice": p.cfg.Slice})
	}
	p.setState(Active, firstOf(reason, "container running"))
}

// died handles an unexpected end of the partition's init: restart with
// backoff (a timer), or stay down as the restart policy says.
func (p *partition) died(c *runtime.Container, reason string) {
	code := int32(-1)
	if c != nil {
		code = c.ExitCode
	} else {
		reason += " (container removed)"
	}
	p.diedCode(code, reason)
}

// diedCode is died with the exit code known (-1: not known yet, e.g. the
// kernel reported the init gone before Podman did).
func (p *partition) diedCode(code int32, reason string) {
	p.stopWatch()
	p.detachResources()
	now := p.s.clock.Now()
	p.st.MainPID, p.st.LastExit, p.st.Result = 0, code, "exit-code"
	p.clearConds()
	pol := p.cfg.Restart.Policy
	if pol == "no" || (pol == "on-failure" && code == 0) {
		if code == 0 {
			p.st.Result = "success"
		}
		p.want = wantStop
		p.setState(Inactive, fmt.Sprintf("%s, exit code %d, restart policy %s", reason, code, pol))
		return
	}
	if !p.lastStart.IsZero() && now.Sub(p.lastStart) >= p.cfg.Restart.BackoffReset.Duration {
		p.backoff.Reset()
	}
	delay := p.backoff.Next()
	p.st.NRestarts++
	what := fmt.Sprintf("partition init exited (code %d)", code)
	if code == -1 {
		what = "partition init exited"
	}
	// The counter in the summary keeps every restart its own record (never
	// coalesced: each one is in the journal, and the next qmd restores
	// NRestarts from the highest).
	p.record(incident.Restart, fmt.Sprintf("%s; restart %d in %s", what, p.st.NRestarts, delay),
		map[string]string{"exit_code": strconv.Itoa(int(code)), "delay": delay.String(), "reason": reason,
			"restarts": strconv.Itoa(int(p.st.NRestarts))})
	// The timer first: whoever sees the published state may advance a
	// (fake) clock at once.
	if delay > 0 {
		p.setTimer(delay, "restart")
	}
	p.restarting = true
	if code != -1 {
		reason = fmt.Sprintf("%s (exit code %d)", reason, code)
	}
	p.setState(Activating, fmt.Sprintf("%s; restart in %s", reason, delay))
	p.markReady()
}

// clearConds drops the conditions that only exist while the init runs.
func (p *partition) clearConds() {
	for _, c := range []Condition{Throttled, Frozen, CPULimited, IOLimited} {
		p.setCond(c, false, "partition init gone")
	}
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

// fail enters failed; Result says why.
func (p *partition) fail(result, reason string, t incident.Type, summary string, details map[string]string) {
	p.st.Result = result
	p.clearTimer()
	if t != "" {
		p.record(t, summary, details)
	}
	p.setState(Failed, reason)
	p.markReady()
}

// opDone closes an operation: podman health bookkeeping shared by all.
// It reports whether the operation's result may be used (false: a Podman
// error, already handled by scheduling a retry).
func (p *partition) opDone(what string, gen uint64, c *runtime.Container, found bool, err error) bool {
	p.op = ""
	p.st.PodmanLatency = p.s.clock.Now().Sub(p.opStart)
	switch {
	case err == nil:
		if what != "inspect" {
			// An inspect answering says little (a start may still time
			// out); the reconcile's steady state clears it too.
			p.podmanOK()
		}
		if gen == p.obsGen {
			p.obs, p.obsValid = nil, true
			if found {
				p.obs = c
			}
		}
		return true
	case errors.Is(err, runtime.ErrTimeout):
		d := p.retryDelay()
		if !p.timedOut {
			p.timedOut = true
			p.record(incident.PodmanSlow, fmt.Sprintf("podman did not answer %s in time; retrying", what),
				map[string]string{"operation": what, "error": err.Error(), "retry_in": d.String()})
		}
		p.setCond(PodmanDegraded, true, "podman "+what+" timed out")
		p.log.Warn("podman call timed out; retrying", zap.String("operation", what), zap.Duration("retry_in", d), zap.Error(err))
		p.invalidate()
		p.setTimer(d, "retry")
		return false
	case errors.Is(err, runtime.ErrUnavailable):
		d := p.retryDelay()
		p.setCond(PodmanDegraded, true, "podman unavailable")
		p.log.Warn("podman unavailable; retrying", zap.String("operation", what), zap.Duration("retry_in", d), zap.Error(err))
		p.invalidate()
		p.setTimer(d, "retry")
		p.markReady() // nothing more to learn until Podman is back
		return false
	case errors.Is(err, context.Canceled) && p.ctx.Err() != nil:
		return false
	}
	return true
}

// podmanOK: Podman did the partition's work again. Clears the
// podman-degraded condition and reports the end of a slow episode.
func (p *partition) podmanOK() {
	p.retry.Reset()
	if p.timedOut {
		p.timedOut = false
		p.record(incident.PodmanSlow, "podman answers again", map[string]string{"latency": p.st.PodmanLatency.String()})
	}
	if p.s.podmanUp.Load() {
		p.setCond(PodmanDegraded, false, "podman answers again")
	}
}

// retryDelay is the next delay before retrying work Podman did not do.
func (p *partition) retryDelay() time.Duration {
	return max(p.retry.Next(), p.s.retryInitial)
}

// launchInspect observes the container by name.
func (p *partition) launchInspect() {
	gen := p.obsGen
	name := p.cfg.ContainerNameOrDefault()
	p.launch("inspect", p.s.podmanTimeout+time.Second, func(ctx context.Context) func() {
		c, err := p.s.rt.Inspect(ctx, name)
		return func() {
			found := err == nil
			if errors.Is(err, runtime.ErrNotFound) {
				err = nil
			}
			if !p.opDone("inspect", gen, c, found, err) {
				return
			}
			if err != nil {
				d := p.retryDelay()
				p.log.Error("inspect failed; retrying", zap.Error(err), zap.Duration("retry_in", d))
				p.setTimer(d, "retry")
			}
		}
	})
}

// launch runs op on its own goroutine with a deadline; the function it
// returns is run on the loop.
func (p *partition) launch(name string, deadline time.Duration, op func(ctx context.Context) func()) {
	p.op, p.opStart = name, p.s.clock.Now()
	ctx, cancel := context.WithTimeout(p.ctx, deadline)
	go func() {
		defer cancel()
		then := op(ctx)
		// The loop may have ended meanwhile: never block on it.
		_ = p.post(context.Background(), then)
	}()
}

// launchStart creates (if needed) and starts the container.
func (p *partition) launchStart(reason string) {
	now := p.s.clock.Now()
	if p.startLimitHit(now) {
		p.stopWatch()
		p.detachResources()
		p.fail("start-limit-hit", "start limit hit", incident.StartLimit,
			fmt.Sprintf("more than %d starts within %s; partition failed until reset",
				p.cfg.Restart.StartLimitBurst, p.cfg.Restart.StartLimitInterval.Duration), nil)
		return
	}
	if p.st.State != Activating {
		p.setState(Activating, firstOf(reason, "start"))
	}
	cfg := p.cfg
	obs := p.obs
	gen := p.obsGen
	t0 := time.Now()
	p.launch("start", 4*p.s.podmanTimeout+time.Second, func(ctx context.Context) func() {
		c, err := p.startContainer(ctx, cfg, obs)
		return func() {
			p.log.Debug("start operation", zap.Duration("took", time.Since(t0)), zap.Error(err))
			if !p.opDone("start", gen, c, c != nil, err) {
				// Not the partition's fault: do not burn the start limit.
				p.starts = p.starts[:max(len(p.starts)-1, 0)]
				return
			}
			if errors.Is(err, runtime.ErrNotFound) {
				// The container vanished between look-up and start:
				// look again, without counting a start.
				p.starts = p.starts[:max(len(p.starts)-1, 0)]
				p.invalidate()
				p.setTimer(p.retryDelay(), "retry")
				return
			}
			if err != nil {
				d := p.backoff.Next()
				if d == 0 {
					d = p.backoff.Next()
				}
				p.st.Result = "start-failed"
				p.log.Error("start failed", zap.Error(err), zap.Duration("retry_in", d))
				p.record(incident.StartFailed, "partition start failed: "+err.Error(), map[string]string{"retry_in": d.String()})
				p.invalidate()
				p.st.Reason = fmt.Sprintf("start failed: %v; retry in %s", err, d)
				p.setTimer(d, "retry")
				return
			}
			p.lastStart = now
			p.st.ContainerID = c.ID
			p.st.Drift = false
			if !c.Running {
				// It exited already (an init that fails at once): a crash.
				p.st.State = Active
				p.died(c, "init exited right after start")
				return
			}
			p.st.Result = "success"
			p.st.MainPID, p.st.CgroupPath = c.Pid, c.CgroupPath
			p.record(incident.Start, "partition started", map[string]string{"pid": strconv.Itoa(c.Pid), "reason": firstOf(reason, "start")})
			p.observeRunning(c)
			p.setState(Active, firstOf(reason, "started"))
			p.markReady()
		}
	})
}

// recreateReason says why the container c cannot serve as the partition
// cfg describes ("" when it can): it was created from other create-time
// settings (its hash label), or in another slice than cfg's (one created
// before qmd placed partitions in their own slice sits in machine.slice,
// where its CPU and IO weights hold back no ASIL unit).
func recreateReason(cfg *config.Partition, c *runtime.Container) string {
	switch {
	case c.Labels[runtime.LabelConfigHash] != cfg.CreateHash():
		return "config changed"
	case !cfg.PlacedIn(c.CgroupParent):
		return "created in " + c.CgroupParent + ", configured slice " + cfg.Slice
	}
	return ""
}

// startContainer runs on an operation goroutine: it must not touch the
// loop's state (cfg and obs are the loop's values, passed in).
func (p *partition) startContainer(ctx context.Context, cfg *config.Partition, obs *runtime.Container) (*runtime.Container, error) {
	id := ""
	if obs != nil && obs.Labels[runtime.LabelPartition] == cfg.Name {
		id = obs.ID
		if why := recreateReason(cfg, obs); why != "" {
			p.log.Info("recreating container from the current configuration",
				zap.String("container_id", obs.ID), zap.String("reason", why))
			if err := p.s.rt.Remove(ctx, obs.ID); err != nil && !errors.Is(err, runtime.ErrNotFound) {
				return nil, err
			}
			id = ""
		}
	}
	if id == "" {
		var err error
		if id, err = p.s.rt.Create(ctx, cfg); err != nil {
			return nil, err
		}
	}
	if err := p.s.rt.Start(ctx, id); err != nil {
		return nil, err
	}
	return p.s.rt.Inspect(ctx, id)
}

// launchStop stops the running container; kill (a frozen partition, or a
// policy restart) kills every process of it at once instead: SIGTERM
// cannot reach frozen tasks, and waiting for stop_timeout while holding
// the memory helps nobody.
func (p *partition) launchStop(c *runtime.Container, reason string, kill bool) {
	p.stopWatch() // the exit we cause is not a crash
	res := p.cur
	p.detachResources()
	p.setState(Deactivating, reason)
	id := c.ID
	timeout := p.cfg.StopTimeout.Duration
	gen := p.obsGen
	p.launch("stop", timeout+2*p.s.podmanTimeout+5*time.Second, func(ctx context.Context) func() {
		var kerr error
		if kill {
			if res != nil {
				kerr = res.Kill(ctx)
			}
			if res == nil || kerr != nil {
				kerr = errors.Join(kerr, p.s.rt.Kill(ctx, id, "SIGKILL"))
			}
		}
		err := p.s.rt.Stop(ctx, id, timeout)
		var after *runtime.Container
		if err == nil || errors.Is(err, runtime.ErrNotFound) {
			var ierr error
			after, ierr = p.s.rt.Inspect(ctx, id)
			if errors.Is(ierr, runtime.ErrNotFound) {
				after, err = nil, nil
			} else if ierr != nil {
				err = ierr
			}
		}
		return func() { p.stopDone(gen, id, reason, kill, after, kerr, err) }
	})
}

func (p *partition) stopDone(gen uint64, id, reason string, kill bool, c *runtime.Container, kerr, err error) {
	if !p.opDone("stop", gen, c, c != nil, err) {
		return // retried; the reconcile stops it again
	}
	if err == nil && c != nil && c.Running {
		err = fmt.Errorf("container %.12s still running after stop", id)
	}
	if err != nil {
		p.record(incident.Stop, "partition stop failed: "+err.Error(), map[string]string{"reason": reason})
		p.fail("stop-failed", "stop failed: "+err.Error(), "", "", nil)
		p.invalidate()
		return
	}
	p.clearConds()
	p.st.MainPID = 0
	if c != nil {
		p.st.LastExit = c.ExitCode
	}
	details := map[string]string{"reason": reason}
	if kill {
		details["killed"] = "true"
		if kerr != nil {
			details["kill_error"] = kerr.Error()
		}
	}
	if p.restartReq != "" {
		p.record(incident.Stop, "partition stopped for a restart", details)
		p.restartReq, p.restartKill = "", false
		p.want = wantRun
		p.restarting = true
		p.setState(Activating, reason)
		return
	}
	p.st.Result = "success"
	p.record(incident.Stop, "partition stopped", details)
	p.setState(Inactive, reason)
}

// watch arms the exit sources for the running init: Podman's Wait (a
// second source besides the events stream, which can lose events while
// Podman restarts) and a pidfd (faster than Podman). A Wait that fails is
// re-armed by the next reconcile; after repeated failures, at the resync.
func (p *partition) watch(id string, pid int) {
	if p.waitCtr == id && p.waitPid == pid && p.waitCancel != nil {
		return
	}
	p.stopWatch()
	if p.waitFails >= 3 {
		return // Wait keeps failing: events, pidfd and the resync cover it
	}
	wctx, cancel := context.WithCancel(p.ctx)
	p.waitCancel, p.waitCtr, p.waitPid = cancel, id, pid
	p.waitID++
	gen := p.waitID
	go func() {
		code, err := p.s.rt.Wait(wctx, id)
		if wctx.Err() != nil {
			return
		}
		_ = p.post(wctx, func() {
			if p.waitID != gen {
				return
			}
			p.waitCancel, p.waitCtr = nil, ""
			cancel()
			if err != nil {
				p.waitFails++
				p.log.Debug("wait on the partition failed; re-armed by the next reconcile", zap.Error(err))
			} else {
				p.log.Debug("wait returned", zap.Int32("code", code))
			}
			p.invalidate()
		})
	}()
	if p.s.procWatch == nil || pid <= 0 {
		return
	}
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
		_ = p.post(wctx, func() {
			if p.waitID != gen {
				return
			}
			p.deadPid, p.deadSeen = pid, 0
			p.invalidate()
			// The kernel is authoritative: the init is gone, whatever
			// Podman says and however slowly it says it. The state shows
			// it at once; the restart waits until Podman agrees (the
			// reconcile re-inspects while it still reports this pid).
			if p.st.State == Active && p.st.MainPID == pid && p.want == wantRun && p.restartReq == "" {
				p.diedCode(-1, fmt.Sprintf("init (pid %d) exited", pid))
			}
		})
	}()
}

func (p *partition) stopWatch() {
	if p.waitCancel != nil {
		p.waitCancel()
	}
	p.waitCancel, p.waitCtr, p.waitPid = nil, "", 0
	p.waitID++
}

// handleEvent: any lifecycle event of the partition's container makes the
// observation stale; the reconcile that follows inspects and decides.
func (p *partition) handleEvent(ev runtime.Event) {
	switch ev.Action {
	case "exec", "exec_died", "attach", "health_status", "exec_start":
		return
	}
	p.log.Debug("podman event", zap.String("action", ev.Action), zap.String("container_id", ev.ID))
	p.invalidate()
}

// clearRetry drops a pending retry (not a restart delay: that one is the
// restart policy's).
func (p *partition) clearRetry() {
	if p.timer != nil && p.timerWhy != "restart" {
		p.clearTimer()
	}
}

// remove ends supervision (the partition left the configuration). The
// container is left as it is, or stopped when the partition had
// stop_on_exit; the loop ends once that is done.
func (p *partition) remove() {
	p.removed = true
	p.clearTimer()
	p.stopWatch()
	p.detachResources()
	if p.cfg.StopOnExit && p.st.ContainerID != "" && p.st.MainPID != 0 && p.op == "" {
		p.log.Info("partition removed from the configuration; stopping it (stop_on_exit)")
		p.launchStop(&runtime.Container{ID: p.st.ContainerID}, "removed from the configuration", false)
		return
	}
	p.log.Info("partition removed from the configuration; container left as it is")
}

// ops used by the Supervisor's public methods (run on the loop).

func (p *partition) cmdStart() error {
	if p.st.State == Failed {
		return fmt.Errorf("partition %s: %w", p.name, apierr.ErrStartLimitHit)
	}
	p.want = wantRun
	if p.st.State == Inactive {
		p.backoff.Reset()
		p.st.Reason = "start requested"
		p.clearTimer()
		p.invalidate()
	}
	return nil
}

func (p *partition) cmdStop() error {
	p.want = wantStop
	p.restartReq, p.restartKill = "", false
	p.clearTimer()
	p.invalidate()
	p.st.Reason = "stop requested"
	return nil
}

func (p *partition) requestRestart(reason string, kill bool) error {
	if p.st.State == Failed {
		return fmt.Errorf("partition %s: %w", p.name, apierr.ErrStartLimitHit)
	}
	p.want = wantRun
	if p.st.State == Active || p.st.State == Deactivating {
		p.restartReq, p.restartKill = reason, kill
	}
	p.clearTimer()
	p.invalidate()
	return nil
}

func (p *partition) resetFailed(reason string) {
	if p.st.State != Failed {
		return
	}
	p.starts = nil
	p.backoff.Reset()
	p.st.Result = "success"
	p.want = wantRun
	p.setState(Inactive, reason)
	p.invalidate()
}

// applyConfig takes a reloaded configuration: restart policy at once,
// policy settings to the running resource controller, create-time changes
// mark the running container as drifted.
func (p *partition) applyConfig(cfg *config.Partition) {
	old := p.cfg
	p.cfg = cfg
	c := *cfg
	p.cfgView.Store(&c)
	p.backoff.Initial, p.backoff.Max = cfg.Restart.BackoffInitial.Duration, cfg.Restart.BackoffMax.Duration
	p.st.OOMScoreAdj = cfg.OOMScoreAdj
	if (old.CreateHash() != cfg.CreateHash() || old.Slice != cfg.Slice) && p.st.ContainerID != "" {
		p.st.Drift = true
		p.record(incident.ConfigDrift, "configuration changed; the container is recreated at its next restart", nil)
	}
	if p.cur != nil && !reflect.DeepEqual(*old, *cfg) {
		// The policy (limits, pressure, oom_score_adj) is applied live:
		// a new controller for the running init applies the new limits
		// and arms its watches; the next reconcile attaches it.
		p.log.Info("configuration changed: applying the policy to the running partition")
		p.detachResources()
		p.policyReloaded = true
	}
	p.resetFailed("configuration reloaded")
	p.invalidate()
	p.publish("configuration reloaded")
}
