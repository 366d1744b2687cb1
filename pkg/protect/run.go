package protect

import (
	"context"
	"errors"
	"fmt"
	"path"
	"path/filepath"
	"time"

	"go.uber.org/zap"

	"github.com/containers/qmd/pkg/cgroups"
)

// unit is one protected entry; owned by the Run loop.
type unit struct {
	e      Entry
	cgroup string // resolved cgroup path; "" when not running or unresolved
	why    string // why cgroup is "" (status)
	trigs  []*trigger
	// memDone: MemoryMin=/MemoryLow= were set through systemd (they stay
	// on the unit across its restarts: runtime properties).
	memDone bool
	// unresolvedLogged: the current failure to resolve was logged.
	unresolvedLogged bool
}

// trigger is one wanted PSI trigger; owned by the Run loop. It is armed
// (src != nil) or down: ended by the kernel (POLLERR: the watched cgroup
// was removed, e.g. a unit restarted) or never registered; a down trigger
// is re-armed with backoff.
type trigger struct {
	u         *unit // nil: the host's trigger
	kind      Kind
	threshold time.Duration
	path      string // as armed

	src  Source
	reg  cgroups.PSITriggerSpec
	gen  int
	stop chan struct{}
	conf cgroups.PSIConfirmer

	down     bool
	retryAt  time.Time
	backoff  time.Duration
	reported bool // the outage was logged (once per outage)
	warned   bool // a window fallback was logged (once)

	fired, spurious uint64
}

func (t *trigger) source() string {
	if t.u == nil {
		return HostSource
	}
	return t.u.e.Name()
}

func (t *trigger) name() string { return t.source() + " " + t.kind.String() }

// trigEvent is a firing (or the end, gone) of one arm of a trigger.
type trigEvent struct {
	t    *trigger
	gen  int
	at   time.Time
	gone bool
}

// Run protects until ctx ends; it closes every trigger before it returns.
// It sleeps in the kernel between notifications: the only timers are the
// resync tick and, while a trigger is down, its re-arm timer.
func (p *Protector) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	p.ctx = ctx
	defer func() {
		cancel()
		p.closeAll()
		p.wg.Wait()
	}()
	now := time.Now()
	p.build(ctx, now)
	p.au.audit(ctx)

	resync := time.NewTicker(p.resyncEvery())
	defer resync.Stop()
	rearm := time.NewTimer(time.Hour)
	rearm.Stop()
	defer rearm.Stop()
	schedule := func(now time.Time) {
		rearm.Stop()
		if at, ok := p.nextRetry(); ok {
			rearm.Reset(max(at.Sub(now), 0))
		}
	}
	schedule(now)
	units := p.watchUnits(ctx)
	for {
		p.publishStatus()
		select {
		case <-ctx.Done():
			return nil
		case name := <-units:
			p.loops.Add(1)
			now := time.Now()
			if p.unitChanged(ctx, name, now) {
				p.au.audit(ctx)
			}
			schedule(now)
		case req := <-p.reconf:
			p.loops.Add(1)
			now := time.Now()
			p.reconfigure(ctx, req.cfg, now)
			p.publishStatus() // visible when Reconfigure returns
			close(req.done)
			resync.Reset(p.resyncEvery())
			p.au.audit(ctx)
			schedule(now)
		case now := <-resync.C:
			p.loops.Add(1)
			p.resync(ctx, now)
			schedule(now)
		case ev := <-p.ev:
			p.loops.Add(1)
			if ev.gen != ev.t.gen || ev.t.src == nil {
				continue // an earlier arm of a re-armed trigger
			}
			now := time.Now()
			if ev.gone {
				p.gone(ev.t, now)
				schedule(now)
				continue
			}
			p.fired(ev)
		case now := <-rearm.C:
			p.loops.Add(1)
			if p.rearmDue(ctx, now) {
				// A unit's triggers are back: its processes may be new.
				p.au.audit(ctx)
			}
			schedule(now)
		}
	}
}

// watchUnits subscribes to systemd's unit changes when it can (nil
// channel otherwise: units are followed on their triggers' ends and on the
// resync tick).
func (p *Protector) watchUnits(ctx context.Context) <-chan string {
	w, ok := p.o.Systemd.(UnitWatcher)
	if !ok {
		return nil
	}
	ch, err := w.WatchUnits(ctx)
	if err != nil {
		p.log.Warn("systemd unit changes not watched; protected units are followed on the resync tick", zap.Error(err))
		return nil
	}
	return ch
}

// unitChanged follows a protected unit whose state changed (systemd's
// signal): its cgroup is looked up again. Triggers on a cgroup that
// changed move to the new one at once; triggers that are down (their
// cgroup went away: a restart at the same path) are retried at once
// instead of after their backoff. It reports whether the unit runs (its
// processes, possibly new ones, want an audit).
func (p *Protector) unitChanged(ctx context.Context, name string, now time.Time) bool {
	for _, u := range p.units {
		if u.e.Unit != name {
			continue
		}
		old := u.cgroup
		p.resolve(ctx, u)
		if u.cgroup != old {
			p.log.Debug("protected unit changed", zap.String("unit", name), zap.String("cgroup", u.cgroup), zap.String("previous_cgroup", old))
			for _, t := range u.trigs {
				p.disarm(t)
				// Down: retried with backoff while the unit is
				// stopped, at once below when it runs.
				t.down, t.retryAt, t.backoff = true, now.Add(p.o.RearmMin), 0
			}
		}
		if u.cgroup == "" {
			return false
		}
		for _, t := range u.trigs {
			if t.src == nil {
				t.down, t.retryAt, t.backoff = true, now, 0
			}
		}
		p.applyMemory(ctx, u)
		return true
	}
	return false
}

// build makes the units and triggers of p.cfg and arms what it can.
func (p *Protector) build(ctx context.Context, now time.Time) {
	if p.cfg.HostMemory {
		p.host = &trigger{kind: Memory, threshold: p.cfg.MemoryThreshold, down: true}
		p.tryArm(p.host, now)
	}
	for _, e := range p.cfg.Entries {
		p.addUnit(ctx, e, now)
	}
}

func (p *Protector) addUnit(ctx context.Context, e Entry, now time.Time) {
	u := &unit{e: e}
	p.units = append(p.units, u)
	p.resolve(ctx, u)
	if u.cgroup != "" {
		p.log.Info("protecting", zap.String("unit", e.Name()), zap.String("cgroup", u.cgroup),
			zap.Int("oom_score_adj", e.OOMScoreAdj), zap.Bool("watch_pressure", e.WatchPressure))
	} else {
		p.log.Info("protecting (not running now)", zap.String("unit", e.Name()), zap.String("reason", u.why))
	}
	p.applyMemory(ctx, u)
	if !e.WatchPressure {
		return
	}
	if p.o.PSIRoot == "" {
		if !p.noPSIReported {
			p.noPSIReported = true
			p.log.Warn("no cgroup2 mount with per-cgroup pressure files (pure cgroup v1): protected units' pressure is not watched",
				zap.String("cgroup_root", p.o.CgroupRoot))
			p.incident(Incident{Type: "policy-limit", Summary: "cgroup v1 has no per-cgroup pressure: watch_pressure of protected units is unsupported here",
				Details: map[string]string{"unsupported": "watch_pressure", "unit": e.Name()}})
		}
		return
	}
	for _, k := range []Kind{Memory, CPU, IO} {
		t := &trigger{u: u, kind: k, threshold: p.threshold(k), down: true}
		u.trigs = append(u.trigs, t)
		p.tryArm(t, now)
	}
}

func (p *Protector) threshold(k Kind) time.Duration {
	switch k {
	case CPU:
		return p.cfg.CPUThreshold
	case IO:
		return p.cfg.IOThreshold
	}
	return p.cfg.MemoryThreshold
}

// tryArm arms a trigger now or schedules its retry, logging the first
// failure of an outage at info level and the rest at debug level.
func (p *Protector) tryArm(t *trigger, now time.Time) bool {
	err := p.arm(t, now)
	if err == nil {
		if t.reported {
			p.log.Info("pressure trigger re-armed", zap.String("trigger", t.name()), zap.String("file", t.path))
		}
		t.reported = false
		return true
	}
	if !t.reported {
		t.reported = true
		p.log.Info("pressure trigger not available; retrying with backoff", zap.String("trigger", t.name()), zap.Error(err))
	} else {
		p.log.Debug("pressure trigger still not available", zap.String("trigger", t.name()), zap.Error(err))
	}
	p.retryLater(t, now)
	return false
}

// errNotRunning: the unit has no cgroup now (stopped, restarting, or not
// resolvable): its triggers wait.
var errNotRunning = errors.New("not running")

func (p *Protector) triggerPath(t *trigger) (string, error) {
	if t.u == nil {
		return p.o.HostPressure, nil
	}
	if t.u.cgroup == "" {
		return "", fmt.Errorf("%s: %w (%s)", t.u.e.Name(), errNotRunning, t.u.why)
	}
	return filepath.Join(p.o.PSIRoot, filepath.FromSlash(t.u.cgroup), t.kind.file()), nil
}

func (p *Protector) arm(t *trigger, now time.Time) error {
	file, err := p.triggerPath(t)
	if err != nil {
		return err
	}
	spec := cgroups.PSITriggerSpec{Path: file, Kind: cgroups.PSISome, Threshold: t.threshold, Window: p.cfg.Window}
	src, err := p.o.OpenTrigger(spec)
	if err != nil {
		return err
	}
	p.arms.Add(1)
	reg := src.Registration()
	t.reg = reg.Spec
	if t.reg.Path == "" {
		t.reg = spec
	}
	if reg.Fallback && !t.warned {
		// Every trigger falls back alike (no CAP_SYS_RESOURCE): one
		// warning for the protector, the rest at debug level.
		t.warned = true
		log := p.log.Debug
		if !p.fallbackWarned {
			p.fallbackWarned, log = true, p.log.Warn
		}
		log("pressure trigger window adjusted", zap.String("file", file), zap.String("reason", reg.Warning))
	}
	t.path, t.src, t.down, t.backoff = file, src, false, 0
	t.gen++
	t.stop = make(chan struct{})
	// The kernel counts a new trigger's stall from its registration: so
	// does the confirmation.
	t.conf = cgroups.PSIConfirmer{Window: t.reg.Window, Threshold: t.reg.Threshold}
	p.sample(t, now)
	p.wg.Add(1)
	go p.forward(t, t.gen, src.C(), t.stop)
	return nil
}

// forward passes one arm's firings to the loop; its end (a closed
// channel) is passed once, then the forwarder returns: an ended trigger
// can never make the loop spin.
func (p *Protector) forward(t *trigger, gen int, ch <-chan time.Time, stop <-chan struct{}) {
	defer p.wg.Done()
	for {
		var ev trigEvent
		select {
		case <-p.ctx.Done():
			return
		case <-stop:
			return
		case at, ok := <-ch:
			ev = trigEvent{t: t, gen: gen, at: at, gone: !ok}
		}
		select {
		case p.ev <- ev:
		case <-p.ctx.Done():
			return
		case <-stop:
			return
		}
		if ev.gone {
			return
		}
	}
}

func (p *Protector) disarm(t *trigger) {
	if t.stop != nil {
		close(t.stop)
		t.stop = nil
	}
	if t.src != nil {
		_ = t.src.Close()
		t.src = nil
	}
}

func (p *Protector) closeAll() {
	if p.host != nil {
		p.disarm(p.host)
	}
	for _, u := range p.units {
		for _, t := range u.trigs {
			p.disarm(t)
		}
	}
}

func (p *Protector) retryLater(t *trigger, now time.Time) {
	lo, hi := p.o.RearmMin, p.resyncEvery()
	if t.backoff <= 0 {
		t.backoff = lo
	} else {
		t.backoff *= 2
	}
	t.backoff = min(t.backoff, max(hi, lo))
	t.down = true
	t.retryAt = now.Add(t.backoff)
}

// gone handles the end of an armed trigger: it stops firing, is reported
// once, and waits to be re-armed (on the unit's cgroup as resolved then).
func (p *Protector) gone(t *trigger, now time.Time) {
	err := t.src.Err()
	p.disarm(t)
	if !t.reported {
		t.reported = true
		p.log.Info("pressure trigger ended (the watched cgroup went away: unit stopped or restarting); re-arming when it is back",
			zap.String("trigger", t.name()), zap.String("file", t.path), zap.Error(err))
	}
	t.backoff = 0
	p.retryLater(t, now)
}

// rearmDue retries every down trigger that is due; a unit's cgroup is
// looked up again first (a restarted unit may be in another cgroup). It
// reports whether a unit trigger was armed.
func (p *Protector) rearmDue(ctx context.Context, now time.Time) bool {
	armed := false
	if t := p.host; t != nil && t.down && !now.Before(t.retryAt) {
		p.tryArm(t, now)
	}
	for _, u := range p.units {
		due := false
		for _, t := range u.trigs {
			if t.down && !now.Before(t.retryAt) {
				due = true
			}
		}
		if !due {
			continue
		}
		p.resolve(ctx, u)
		unitArmed := false
		for _, t := range u.trigs {
			if t.down && !now.Before(t.retryAt) && p.tryArm(t, now) {
				unitArmed = true
			}
		}
		if unitArmed {
			armed = true
			p.applyMemory(ctx, u)
		}
	}
	return armed
}

func (p *Protector) nextRetry() (time.Time, bool) {
	var next time.Time
	consider := func(t *trigger) {
		if t.down && (next.IsZero() || t.retryAt.Before(next)) {
			next = t.retryAt
		}
	}
	if p.host != nil {
		consider(p.host)
	}
	for _, u := range p.units {
		for _, t := range u.trigs {
			consider(t)
		}
	}
	return next, !next.IsZero()
}

// resolve finds the unit's cgroup now.
func (p *Protector) resolve(ctx context.Context, u *unit) {
	if u.e.Cgroup != "" {
		u.cgroup, u.why = path.Clean(u.e.Cgroup), ""
		return
	}
	if p.o.Systemd == nil {
		u.cgroup, u.why = "", "unresolved: systemd is not PID 1 here; give the cgroup instead of the unit"
		if !p.noSystemdReported {
			p.noSystemdReported = true
			p.log.Warn("systemd is not available: protected units cannot be resolved to their cgroups (cgroup entries still work)",
				zap.String("unit", u.e.Unit))
		}
		return
	}
	p.resolves.Add(1)
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	cg, err := p.o.Systemd.ControlGroup(ctx, u.e.Unit)
	switch {
	case err != nil:
		u.cgroup, u.why = "", "unresolved: "+err.Error()
		if !u.unresolvedLogged {
			u.unresolvedLogged = true
			p.log.Warn("protected unit's cgroup not resolved; retrying", zap.String("unit", u.e.Unit), zap.Error(err))
		}
		return
	case cg == "" || cg == "/":
		u.cgroup, u.why = "", "not-running"
	default:
		u.cgroup, u.why = path.Clean(cg), ""
	}
	u.unresolvedLogged = false
}

// resync is the slow tick: a unit whose cgroup changed (restarted into
// another slice, or started without a trigger event) gets its triggers
// moved; every armed trigger's total is read (it bounds how much idle
// noise a later confirmation can add up); processes are audited.
func (p *Protector) resync(ctx context.Context, now time.Time) {
	if p.host != nil && p.host.src != nil {
		p.sample(p.host, now)
	}
	for _, u := range p.units {
		old := u.cgroup
		p.resolve(ctx, u)
		if u.cgroup != old {
			if u.cgroup != "" {
				p.log.Info("protecting", zap.String("unit", u.e.Name()), zap.String("cgroup", u.cgroup),
					zap.String("previous_cgroup", old))
			}
			for _, t := range u.trigs {
				p.disarm(t)
				t.down, t.retryAt, t.backoff = true, now, 0
			}
			p.applyMemory(ctx, u)
			continue
		}
		for _, t := range u.trigs {
			if t.src != nil {
				p.sample(t, now)
			}
		}
		p.applyMemory(ctx, u)
	}
	p.au.audit(ctx)
}

func (p *Protector) read(t *trigger) (uint64, error) {
	ps, err := p.o.ReadPSI(t.reg.Path)
	if err != nil {
		return 0, err
	}
	v, ok := ps.Total(t.reg.Kind)
	if !ok {
		return 0, fmt.Errorf("%s: no %s line", t.reg.Path, t.reg.Kind)
	}
	return v, nil
}

func (p *Protector) sample(t *trigger, now time.Time) {
	if v, err := p.read(t); err == nil {
		t.conf.Add(now, v)
	}
}

// fired confirms a firing against the file's total and publishes it.
// An unconfirmed (spurious) wake-up is counted and logged at debug level.
func (p *Protector) fired(ev trigEvent) {
	t := ev.t
	t.fired++
	p.wakeups.Add(1)
	total, err := p.read(t)
	var growth uint64
	ok := false
	if err == nil {
		growth, ok = t.conf.Confirm(ev.at, total)
	}
	if !ok {
		t.spurious++
		p.spurious.Add(1)
		p.log.Debug("spurious pressure trigger wake-up: the stall total did not grow by the threshold",
			zap.String("trigger", t.name()), zap.Uint64("growth_us", growth),
			zap.Duration("threshold", t.reg.Threshold), zap.Duration("window", t.reg.Window),
			zap.Uint64("spurious", t.spurious), zap.Uint64("fired", t.fired), zap.Error(err))
		return
	}
	p.log.Debug("pressure confirmed", zap.String("trigger", t.name()), zap.Uint64("growth_us", growth))
	p.publish(Signal{Kind: t.kind, Source: t.source(), At: ev.at, Stall: time.Duration(growth) * time.Microsecond})
}

// reconfigure applies a new configuration: unchanged entries keep their
// triggers; removed ones are closed (nothing else touched: the unit keeps
// its oom_score_adj and memory protection); added and changed ones are
// made new. A change of the window or a threshold re-arms every trigger.
func (p *Protector) reconfigure(ctx context.Context, cfg Config, now time.Time) {
	old := p.cfg
	p.cfg = cfg
	global := old.Window != cfg.Window || old.MemoryThreshold != cfg.MemoryThreshold ||
		old.CPUThreshold != cfg.CPUThreshold || old.IOThreshold != cfg.IOThreshold
	if p.host != nil && (!cfg.HostMemory || global) {
		p.disarm(p.host)
		p.host = nil
	}
	if cfg.HostMemory && p.host == nil {
		p.host = &trigger{kind: Memory, threshold: cfg.MemoryThreshold, down: true}
		p.tryArm(p.host, now)
	}
	want := map[string]Entry{}
	for _, e := range cfg.Entries {
		want[e.Name()] = e
	}
	keep := p.units[:0]
	have := map[string]bool{}
	for _, u := range p.units {
		e, ok := want[u.e.Name()]
		if ok && e == u.e && !global {
			keep = append(keep, u)
			have[u.e.Name()] = true
			continue
		}
		for _, t := range u.trigs {
			p.disarm(t)
		}
		if !ok {
			p.log.Info("no longer protecting", zap.String("unit", u.e.Name()))
		}
	}
	p.units = keep
	for _, e := range cfg.Entries {
		if !have[e.Name()] {
			p.addUnit(ctx, e, now)
		}
	}
}

// publishStatus makes the entries' state visible to Status.
func (p *Protector) publishStatus() {
	st := make([]UnitStatus, 0, len(p.units))
	for _, u := range p.units {
		s := UnitStatus{Name: u.e.Name(), Cgroup: u.cgroup, State: "protected"}
		switch {
		case u.cgroup == "":
			s.State = u.why
		case len(u.trigs) > 0:
			armed := 0
			for _, t := range u.trigs {
				if t.src != nil {
					armed++
				}
			}
			if armed == len(u.trigs) {
				s.State = "watching"
			} else {
				s.State = fmt.Sprintf("watching %d of %d pressure files", armed, len(u.trigs))
			}
		}
		st = append(st, s)
	}
	p.stMu.Lock()
	p.status = st
	p.stMu.Unlock()
}

func (p *Protector) incident(inc Incident) {
	if p.o.Incident != nil {
		p.o.Incident(inc)
	}
}
