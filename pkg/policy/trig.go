package policy

import (
	"context"
	"errors"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/containers/qmd/pkg/cgroups"
)

// trigKind says what a confirmed firing of a trigger means.
type trigKind int

const (
	trigHostMemory trigKind = iota // host memory pressure: throttle
	trigASILMemory                 // a protected unit's memory pressure: throttle
	trigASILCPU                    // a protected unit's CPU pressure: cpu quota
	trigStall                      // the partition's own full memory pressure
	trigASILIO                     // a protected unit's io pressure: io limits (io.go)
)

// psiSource is a registered PSI trigger: *cgroups.PSITrigger, or a fake
// in tests. C is closed when the trigger ended (Err says why).
type psiSource interface {
	C() <-chan time.Time
	Registration() cgroups.PSIRegistration
	Err() error
	Close() error
}

func openPSITrigger(spec cgroups.PSITriggerSpec) (psiSource, error) {
	t, err := cgroups.NewPSITrigger(spec)
	if err != nil {
		return nil, err
	}
	return t, nil
}

// Re-arm backoff of a trigger that ended (its cgroup went away) or could
// not be registered: from rearmMin, doubling, up to the resync period.
const defaultRearmMin = time.Second

// maxSamples bounds the readings kept per trigger.
const maxSamples = 16

// sample is one reading of a pressure file's total.
type sample struct {
	at    time.Time
	total uint64 // microseconds
}

// trig is one wanted PSI trigger. It is armed (src != nil) or down: ended
// by the kernel (POLLERR/POLLHUP: the watched cgroup was removed, e.g. a
// protected unit restarted) or never registered; a down trigger is re-armed
// with backoff. All fields are owned by the Run loop.
type trig struct {
	name string
	kind trigKind
	spec cgroups.PSITriggerSpec // as wanted
	reg  cgroups.PSITriggerSpec // as registered: its window and threshold confirm firings

	src  psiSource
	gen  int           // arm generation: events of an earlier arm are stale
	stop chan struct{} // ends the current arm's forwarder

	samples []sample // readings of the total, oldest first

	down     bool // not armed; retried at retryAt
	reported bool // the outage was logged (once per outage)
	warned   bool // a window fallback was logged (once)
	retryAt  time.Time
	backoff  time.Duration

	fired, spurious uint64
}

// trigEvent is a firing (or the end, gone) of one arm of a trigger.
type trigEvent struct {
	t    *trig
	gen  int
	at   time.Time
	gone bool
}

// trigSet is a controller's triggers, fanned into one channel.
type trigSet struct {
	c   *Controller
	ctx context.Context
	all []*trig
	ev  chan trigEvent
	wg  sync.WaitGroup
}

func newTrigSet(ctx context.Context, c *Controller) *trigSet {
	return &trigSet{c: c, ctx: ctx, ev: make(chan trigEvent)}
}

// add wants a trigger and tries to arm it at once.
func (s *trigSet) add(now time.Time, name string, kind trigKind, path string, pk cgroups.PSIKind, threshold time.Duration) {
	t := &trig{name: name, kind: kind, down: true,
		spec: cgroups.PSITriggerSpec{Path: path, Kind: pk, Threshold: threshold, Window: s.c.cfg.Pressure.Window.Duration}}
	s.all = append(s.all, t)
	if err := s.arm(t, now); err != nil {
		s.c.log.Info("pressure trigger not available; retrying with backoff", zap.String("trigger", name),
			zap.String("file", path), zap.Error(err))
		t.reported = true
		s.retryLater(t, now)
	}
}

func (s *trigSet) arm(t *trig, now time.Time) error {
	src, err := s.c.openTrigger(t.spec)
	if err != nil {
		return err
	}
	reg := src.Registration()
	t.reg = reg.Spec
	if t.reg.Path == "" {
		t.reg = t.spec
	}
	if reg.Fallback && !t.warned {
		t.warned = true
		s.c.log.Warn("pressure trigger window adjusted", zap.String("file", t.spec.Path), zap.String("reason", reg.Warning))
	}
	t.src, t.down, t.backoff = src, false, 0
	t.gen++
	t.stop = make(chan struct{})
	// The kernel counts a new trigger's stall from its registration: so
	// does the confirmation.
	t.samples = t.samples[:0]
	s.sample(t, now)
	s.wg.Add(1)
	go s.forward(t, t.gen, src.C(), t.stop)
	return nil
}

// forward passes one arm's firings to the loop; its end (a closed
// channel) is passed once, then the forwarder returns: an ended trigger
// can never make the loop spin.
func (s *trigSet) forward(t *trig, gen int, ch <-chan time.Time, stop <-chan struct{}) {
	defer s.wg.Done()
	for {
		var ev trigEvent
		select {
		case <-s.ctx.Done():
			return
		case <-stop:
			return
		case at, ok := <-ch:
			ev = trigEvent{t: t, gen: gen, at: at, gone: !ok}
		}
		select {
		case s.ev <- ev:
		case <-s.ctx.Done():
			return
		case <-stop:
			return
		}
		if ev.gone {
			return
		}
	}
}

func (s *trigSet) disarm(t *trig) {
	if t.stop != nil {
		close(t.stop)
		t.stop = nil
	}
	if t.src != nil {
		_ = t.src.Close()
		t.src = nil
	}
}

// close ends every trigger and waits for the forwarders.
func (s *trigSet) close() {
	for _, t := range s.all {
		s.disarm(t)
	}
	s.wg.Wait()
}

func (s *trigSet) retryLater(t *trig, now time.Time) {
	lo, hi := s.c.rearmMin, s.c.resyncEvery()
	if lo <= 0 {
		lo = defaultRearmMin
	}
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
// once, and waits to be re-armed.
func (s *trigSet) gone(t *trig, now time.Time) {
	err := t.src.Err()
	s.disarm(t)
	if !t.reported {
		t.reported = true
		s.c.log.Warn("pressure trigger ended (the watched cgroup or file went away); re-arming when it is back",
			zap.String("trigger", t.name), zap.String("file", t.spec.Path), zap.Error(err))
	}
	t.backoff = 0
	s.retryLater(t, now)
}

// rearm retries every down trigger that is due.
func (s *trigSet) rearm(now time.Time) {
	for _, t := range s.all {
		if !t.down || now.Before(t.retryAt) {
			continue
		}
		if err := s.arm(t, now); err != nil {
			s.c.log.Debug("pressure trigger still not available", zap.String("trigger", t.name), zap.Error(err))
			s.retryLater(t, now)
			continue
		}
		if t.reported {
			s.c.log.Info("pressure trigger re-armed", zap.String("trigger", t.name), zap.String("file", t.spec.Path))
		}
		t.reported = false
	}
}

// nextRetry is when the earliest down trigger is due.
func (s *trigSet) nextRetry() (time.Time, bool) {
	var next time.Time
	for _, t := range s.all {
		if t.down && (next.IsZero() || t.retryAt.Before(next)) {
			next = t.retryAt
		}
	}
	return next, !next.IsZero()
}

// sampleAll reads every armed trigger's total (resync tick): it bounds how
// much idle noise a later confirmation can add up.
func (s *trigSet) sampleAll(now time.Time) {
	for _, t := range s.all {
		if t.src != nil {
			s.sample(t, now)
		}
	}
}

func (s *trigSet) read(t *trig) (uint64, error) {
	p, err := s.c.readPSI(t.reg.Path)
	if err != nil {
		return 0, err
	}
	v, ok := p.Total(t.reg.Kind)
	if !ok {
		return 0, errors.New("no " + string(t.reg.Kind) + " line")
	}
	return v, nil
}

func (s *trigSet) sample(t *trig, now time.Time) {
	if v, err := s.read(t); err == nil {
		t.add(now, v)
	}
}

// confirm checks a firing at `at` against the pressure file: the total of
// the trigger's line must have grown by at least the registered threshold
// over the window. The baseline is the newest reading at least one window
// older than the firing: the growth since then covers the whole window, so
// a real firing (threshold stalled within the last window) always
// confirms. Without such a reading the oldest one is used, normally the
// one taken at registration, from which the kernel counts too. A total
// that went backwards is another file (a re-created cgroup): no
// confirmation, and the readings start over.
func (t *trig) confirm(at time.Time, total uint64) (growth uint64, ok bool) {
	if len(t.samples) == 0 {
		t.add(at, total)
		return 0, false
	}
	base := t.samples[0]
	for _, s := range t.samples[1:] {
		if !s.at.After(at.Add(-t.reg.Window)) {
			base = s
		}
	}
	if total < base.total {
		t.samples = t.samples[:0]
		t.add(at, total)
		return 0, false
	}
	growth = total - base.total
	t.add(at, total)
	return growth, growth >= uint64(t.reg.Threshold.Microseconds())
}

// add keeps a reading: the newest one that is at least a window old (the
// next baseline) and everything newer.
func (t *trig) add(at time.Time, total uint64) {
	if n := len(t.samples); n > 0 && at.Before(t.samples[n-1].at) {
		at = t.samples[n-1].at
	}
	t.samples = append(t.samples, sample{at: at, total: total})
	keep := 0
	for i, s := range t.samples {
		if !s.at.After(at.Add(-t.reg.Window)) {
			keep = i
		}
	}
	if n := len(t.samples) - keep; n > maxSamples {
		keep = len(t.samples) - maxSamples
	}
	if keep > 0 {
		t.samples = append(t.samples[:0], t.samples[keep:]...)
	}
}
