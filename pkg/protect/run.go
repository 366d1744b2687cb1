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
	trigs  []*cgroups.PSIWatch
	// memDone: MemoryMin=/MemoryLow= were set through systemd (they stay
	// on the unit across its restarts: runtime properties).
	memDone bool
	// unresolvedLogged: the current failure to resolve was logged.
	unresolvedLogged bool
}

// trig is what a PSI watch of the protector means: whose pressure of
// which kind (u nil: the host's memory pressure).
type trig struct {
	u    *unit
	kind Kind
}

func (t *trig) source() string {
	if t.u == nil {
		return HostSource
	}
	return t.u.e.Name()
}

func owner(w *cgroups.PSIWatch) *trig { return w.Owner.(*trig) }

// Run protects until ctx ends; it closes every trigger before it returns.
// It sleeps in the kernel between notifications: the only timers are the
// resync tick and, while a trigger is down, its re-arm timer.
func (p *Protector) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	p.set = &cgroups.PSISet{Window: p.cfg.Window, RearmMin: p.o.RearmMin, RearmMax: p.resyncEvery(), Read: p.o.ReadPSI,
		Open: func(spec cgroups.PSITriggerSpec) (cgroups.PSISource, error) {
			src, err := p.o.OpenTrigger(spec)
			if err == nil {
				p.arms.Add(1)
				p.log.Debug("pressure trigger armed", zap.String("file", spec.Path))
			}
			return src, err
		},
		Note: p.note}
	p.set.Start(ctx)
	defer func() {
		cancel()
		p.set.Close()
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
		if at, ok := p.set.NextRetry(); ok {
			rearm.Reset(max(at.Sub(now), 0))
		}
	}
	schedule(now)
	// A unit that came back (a new cgroup, or its triggers re-armed) is
	// audited at once and again a little later: systemd creates the cgroup
	// first and moves the unit's main process in after, so the first audit
	// can find it empty. Children inherit the repaired score.
	settle := time.NewTimer(time.Hour)
	settle.Stop()
	defer settle.Stop()
	var settleLeft int
	cameBack := func() {
		p.au.audit(ctx)
		settleLeft = len(settleDelays)
		settle.Reset(settleDelays[0])
	}
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
				cameBack()
			}
			schedule(now)
		case req := <-p.reconf:
			p.loops.Add(1)
			now := time.Now()
			p.reconfigure(ctx, req.cfg, now)
			p.publishStatus() // visible when Reconfigure returns
			close(req.done)
			resync.Reset(p.resyncEvery())
			p.set.RearmMax = p.resyncEvery()
			p.au.audit(ctx)
			schedule(now)
		case now := <-resync.C:
			p.loops.Add(1)
			p.resync(ctx, now)
			schedule(now)
		case ev := <-p.set.Events():
			p.loops.Add(1)
			if p.set.Stale(ev) {
				continue // an earlier arm of a re-armed trigger
			}
			now := time.Now()
			if ev.Gone {
				p.set.Handle(ev, now)
				schedule(now)
				continue
			}
			p.fired(ev, now)
		case now := <-rearm.C:
			p.loops.Add(1)
			if p.rearmDue(ctx, now) {
				// A unit's triggers are back: its processes may be new.
				cameBack()
			}
			schedule(now)
		case <-settle.C:
			p.loops.Add(1)
			p.au.audit(ctx)
			if settleLeft--; settleLeft > 0 {
				settle.Reset(settleDelays[len(settleDelays)-settleLeft])
			}
		}
	}
}

// settleDelays are the follow-up audits after a unit came back (from the
// previous one): its processes are moved into the new cgroup after the
// cgroup appears.
var settleDelays = []time.Duration{200 * time.Millisecond, time.Second, 4 * time.Second}

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
			for _, w := range u.trigs {
				// Down: retried with backoff while the unit is
				// stopped, at once below when it runs.
				p.set.Disarm(w, now.Add(p.o.RearmMin))
			}
		}
		if u.cgroup == "" {
			return false
		}
		for _, w := range u.trigs {
			p.set.Retry(w, now)
		}
		p.applyMemory(ctx, u)
		return true
	}
	return false
}

// build makes the units and triggers of p.cfg and arms what it can.
func (p *Protector) build(ctx context.Context, now time.Time) {
	if p.cfg.HostMemory {
		p.addHost(now)
	}
	for _, e := range p.cfg.Entries {
		p.addUnit(ctx, e, now)
	}
	p.coverAncestors(ctx)
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
		w := &cgroups.PSIWatch{Name: e.Name() + " " + k.String(), Kind: cgroups.PSISome, Threshold: p.threshold(k),
			Owner: &trig{u: u, kind: k}, Path: p.unitPath(u, k)}
		u.trigs = append(u.trigs, w)
		p.set.Add(w, now)
	}
}

func (p *Protector) addHost(now time.Time) {
	p.host = &cgroups.PSIWatch{Name: HostSource + " memory", Kind: cgroups.PSISome, Threshold: p.cfg.MemoryThreshold,
		Owner: &trig{kind: Memory}, Path: func() (string, error) { return p.o.HostPressure, nil }}
	p.set.Add(p.host, now)
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

// note logs what the trigger set did: the first failure of an outage at
// info level and the rest at debug level; an end once per outage; the
// unprivileged window fallback once for the protector (every trigger
// falls back alike); spurious wake-ups at debug level.
func (p *Protector) note(n cgroups.PSINote) {
	if cgroups.LogPSINote(p.log, n) {
		return
	}
	switch n.Kind {
	case cgroups.PSIEnded:
		p.log.Info("pressure trigger ended (the watched cgroup went away: unit stopped or restarting); re-arming when it is back",
			zap.String("trigger", n.Watch.Name), zap.String("file", n.Path), zap.Error(n.Err))
	case cgroups.PSIFallback:
		log := p.log.Debug
		if !p.fallbackWarned {
			p.fallbackWarned, log = true, p.log.Warn
		}
		log("pressure trigger window adjusted", zap.String("file", n.Path), zap.String("reason", n.Reason))
	}
}

// errNotRunning: the unit has no cgroup now (stopped, restarting, or not
// resolvable): its triggers wait.
var errNotRunning = errors.New("not running")

// unitPath is where a unit's pressure file of kind k is now.
func (p *Protector) unitPath(u *unit, k Kind) func() (string, error) {
	return func() (string, error) {
		if u.cgroup == "" {
			return "", fmt.Errorf("%s: %w (%s)", u.e.Name(), errNotRunning, u.why)
		}
		return filepath.Join(p.o.PSIRoot, filepath.FromSlash(u.cgroup), k.file()), nil
	}
}

// rearmDue retries every down trigger that is due; a unit's cgroup is
// looked up again first (a restarted unit may be in another cgroup). It
// reports whether a unit trigger was armed.
func (p *Protector) rearmDue(ctx context.Context, now time.Time) bool {
	for _, u := range p.units {
		for _, w := range u.trigs {
			if w.Due(now) {
				p.resolve(ctx, u)
				break
			}
		}
	}
	armed := false
	for _, w := range p.set.Rearm(now) {
		if u := owner(w).u; u != nil {
			armed = true
			p.applyMemory(ctx, u)
		}
	}
	return armed
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
	p.set.SampleAll(now)
	for _, u := range p.units {
		old := u.cgroup
		p.resolve(ctx, u)
		if u.cgroup != old {
			if u.cgroup != "" {
				p.log.Info("protecting", zap.String("unit", u.e.Name()), zap.String("cgroup", u.cgroup),
					zap.String("previous_cgroup", old))
			}
			for _, w := range u.trigs {
				p.set.Disarm(w, now)
			}
		}
		p.applyMemory(ctx, u)
	}
	p.coverAncestors(ctx)
	p.au.audit(ctx)
}

// fired confirms a firing against the file's total and publishes it.
// An unconfirmed (spurious) wake-up is counted and logged at debug level.
func (p *Protector) fired(ev cgroups.PSIEvent, now time.Time) {
	p.wakeups.Add(1)
	ok, growth := p.set.Handle(ev, now)
	t := owner(ev.Watch)
	if !ok {
		p.spurious.Add(1)
		return
	}
	p.log.Debug("pressure confirmed", zap.String("trigger", ev.Watch.Name), zap.Uint64("growth_us", growth))
	sig := Signal{Kind: t.kind, Source: t.source(), At: ev.At, Stall: time.Duration(growth) * time.Microsecond}
	if t.u != nil && t.u.cgroup != "" && p.o.PSIRoot != "" {
		sig.Dir = filepath.Join(p.o.PSIRoot, filepath.FromSlash(t.u.cgroup))
	}
	p.publish(sig)
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
	p.set.Window = cfg.Window
	if p.host != nil && (!cfg.HostMemory || global) {
		p.set.Remove(p.host)
		p.host = nil
	}
	if cfg.HostMemory && p.host == nil {
		p.addHost(now)
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
		for _, w := range u.trigs {
			p.set.Remove(w)
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
	p.coverAncestors(ctx)
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
			for _, w := range u.trigs {
				if w.Armed() {
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
