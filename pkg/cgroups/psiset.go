package cgroups

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"
)

// PSISource is a registered PSI trigger: *PSITrigger, or a fake in tests.
// C is closed when the trigger ended (Err says why).
type PSISource interface {
	C() <-chan time.Time
	Registration() PSIRegistration
	Err() error
	Close() error
}

var _ PSISource = (*PSITrigger)(nil)

// OpenPSISource registers a real PSI trigger.
func OpenPSISource(spec PSITriggerSpec) (PSISource, error) {
	t, err := NewPSITrigger(spec)
	if err != nil {
		return nil, err
	}
	return t, nil
}

// PSINoteKind says what a PSINote reports.
type PSINoteKind int

// Notes of a PSISet, for its user's log.
const (
	PSIUnavailable      PSINoteKind = iota // a trigger could not be armed (first failure of an outage)
	PSIStillUnavailable                    // a retry failed too
	PSIRearmed                             // armed again after an outage
	PSIEnded                               // an armed trigger ended (its cgroup went away); once per outage
	PSIFallback                            // the kernel refused the window; Reason says what was registered
	PSISpurious                            // a wake-up the pressure totals did not confirm
)

// PSINote is something a PSISet did that its user may want to log.
type PSINote struct {
	Kind   PSINoteKind
	Watch  *PSIWatch
	Path   string
	Err    error
	Reason string
	Growth uint64 // PSISpurious: the stall growth (µs) that was found
}

// PSIWatch is one wanted PSI trigger of a PSISet. It is armed or down:
// ended by the kernel (POLLERR/POLLHUP: the watched cgroup was removed,
// e.g. a restarted unit) or not registered yet; a down watch is re-armed
// with backoff. Its state is owned by the goroutine that uses the set.
type PSIWatch struct {
	Name      string
	Kind      PSIKind
	Threshold time.Duration
	// Path says where to register the trigger now; it is asked at every
	// (re-)arm, so a watched unit may move. An error means "not now":
	// retried with backoff.
	Path func() (string, error)
	// Owner is the user's: e.g. what a firing means.
	Owner any

	src     PSISource
	reg     PSITriggerSpec // as registered; its Path is the file
	gen     int
	stop    chan struct{}
	conf    PSIConfirmer
	retryAt time.Time
	backoff time.Duration
	// reported: the current outage was noted; warned: a window fallback
	// was noted.
	reported, warned bool
	fired, spurious  uint64
}

// Armed reports whether the trigger is registered.
func (w *PSIWatch) Armed() bool { return w.src != nil }

// File is the pressure file the trigger was last registered on.
func (w *PSIWatch) File() string { return w.reg.Path }

// Registered is the trigger as the kernel accepted it (window and
// threshold after a fallback).
func (w *PSIWatch) Registered() PSITriggerSpec { return w.reg }

// Counts are the firings handled and how many of them were spurious.
func (w *PSIWatch) Counts() (fired, spurious uint64) { return w.fired, w.spurious }

// Due reports whether the watch is down (not armed) and its retry is due
// at now.
func (w *PSIWatch) Due(now time.Time) bool { return w.src == nil && !now.Before(w.retryAt) }

// PSIEvent is a firing (or the end, Gone) of one arm of a watch.
type PSIEvent struct {
	Watch *PSIWatch
	At    time.Time
	Gone  bool
	gen   int
}

// PSISet keeps a group of PSI triggers armed and fans their firings into
// one channel. Every firing is confirmed against the pressure file's
// totals (PSIConfirmer) before the user sees it; a trigger that ended
// passes its end once and never fires again (an ended trigger can never
// make the user's loop spin); it is re-armed with backoff from RearmMin,
// doubling up to RearmMax. Set the fields, then Start; every other method
// is for the one goroutine that reads Events.
type PSISet struct {
	Window   time.Duration
	Open     func(PSITriggerSpec) (PSISource, error) // default OpenPSISource
	Read     func(path string) (PSI, error)          // default ReadPSI
	RearmMin time.Duration                           // default 1 s
	RearmMax time.Duration                           // default 30 s
	Note     func(PSINote)                           // optional

	ctx     context.Context
	watches []*PSIWatch
	ev      chan PSIEvent
	wg      sync.WaitGroup
}

// Start makes the set ready; its forwarders end with ctx.
func (s *PSISet) Start(ctx context.Context) {
	s.ctx = ctx
	s.ev = make(chan PSIEvent)
	if s.Open == nil {
		s.Open = OpenPSISource
	}
	if s.Read == nil {
		s.Read = ReadPSI
	}
	if s.RearmMin <= 0 {
		s.RearmMin = time.Second
	}
	if s.RearmMax <= 0 {
		s.RearmMax = 30 * time.Second
	}
}

// Events delivers the firings and ends of the watches: pass each to Handle.
func (s *PSISet) Events() <-chan PSIEvent { return s.ev }

// Watches are the set's watches.
func (s *PSISet) Watches() []*PSIWatch { return s.watches }

func (s *PSISet) note(n PSINote) {
	if s.Note != nil {
		s.Note(n)
	}
}

// Add wants a watch and tries to arm it at once; it reports whether it
// was armed.
func (s *PSISet) Add(w *PSIWatch, now time.Time) bool {
	s.watches = append(s.watches, w)
	return s.try(w, now)
}

// Remove closes the watch's trigger and forgets it.
func (s *PSISet) Remove(w *PSIWatch) {
	s.disarm(w)
	for i, x := range s.watches {
		if x == w {
			s.watches = append(s.watches[:i], s.watches[i+1:]...)
			break
		}
	}
}

// Disarm closes the watch's trigger and retries it at retryAt (the user
// knows its path changed).
func (s *PSISet) Disarm(w *PSIWatch, retryAt time.Time) {
	s.disarm(w)
	w.retryAt, w.backoff = retryAt, 0
}

// Retry makes a down watch due at now (the user knows its cgroup is back).
func (s *PSISet) Retry(w *PSIWatch, now time.Time) {
	if w.src == nil {
		w.retryAt, w.backoff = now, 0
	}
}

// Close ends every trigger and waits for the forwarders.
func (s *PSISet) Close() {
	for _, w := range s.watches {
		s.disarm(w)
	}
	s.wg.Wait()
}

func (s *PSISet) try(w *PSIWatch, now time.Time) bool {
	err := s.arm(w, now)
	if err == nil {
		if w.reported {
			s.note(PSINote{Kind: PSIRearmed, Watch: w, Path: w.reg.Path})
		}
		w.reported = false
		return true
	}
	kind := PSIStillUnavailable
	if !w.reported {
		w.reported, kind = true, PSIUnavailable
	}
	s.note(PSINote{Kind: kind, Watch: w, Err: err})
	s.retryLater(w, now)
	return false
}

func (s *PSISet) arm(w *PSIWatch, now time.Time) error {
	if w.Path == nil {
		return errors.New("no path")
	}
	file, err := w.Path()
	if err != nil {
		return err
	}
	spec := PSITriggerSpec{Path: file, Kind: w.Kind, Threshold: w.Threshold, Window: s.Window}
	src, err := s.Open(spec)
	if err != nil {
		return err
	}
	reg := src.Registration()
	w.reg = reg.Spec
	if w.reg.Path == "" {
		w.reg = spec
	}
	if reg.Fallback && !w.warned {
		w.warned = true
		s.note(PSINote{Kind: PSIFallback, Watch: w, Path: file, Reason: reg.Warning})
	}
	w.src, w.backoff = src, 0
	w.gen++
	w.stop = make(chan struct{})
	// The kernel counts a new trigger's stall from its registration: so
	// does the confirmation.
	w.conf = PSIConfirmer{Window: w.reg.Window, Threshold: w.reg.Threshold}
	s.sample(w, now)
	s.wg.Add(1)
	go s.forward(w, w.gen, src.C(), w.stop)
	return nil
}

// forward passes one arm's firings to the user; its end (a closed
// channel) is passed once, then the forwarder returns.
func (s *PSISet) forward(w *PSIWatch, gen int, ch <-chan time.Time, stop <-chan struct{}) {
	defer s.wg.Done()
	for {
		var ev PSIEvent
		select {
		case <-s.ctx.Done():
			return
		case <-stop:
			return
		case at, ok := <-ch:
			ev = PSIEvent{Watch: w, gen: gen, At: at, Gone: !ok}
		}
		select {
		case s.ev <- ev:
		case <-s.ctx.Done():
			return
		case <-stop:
			return
		}
		if ev.Gone {
			return
		}
	}
}

func (s *PSISet) disarm(w *PSIWatch) {
	if w.stop != nil {
		close(w.stop)
		w.stop = nil
	}
	if w.src != nil {
		_ = w.src.Close()
		w.src = nil
	}
}

func (s *PSISet) retryLater(w *PSIWatch, now time.Time) {
	lo, hi := s.RearmMin, s.RearmMax
	if w.backoff <= 0 {
		w.backoff = lo
	} else {
		w.backoff *= 2
	}
	w.backoff = min(w.backoff, max(hi, lo))
	w.retryAt = now.Add(w.backoff)
}

// Handle takes an event from Events. A firing is confirmed against the
// pressure file's total: confirmed says it was real, growth is the stall
// (µs) over the window. An unconfirmed firing is counted and noted
// (PSISpurious). An end is noted once per outage and the watch waits for
// its re-arm. Events of an earlier arm are ignored.
func (s *PSISet) Handle(ev PSIEvent, now time.Time) (confirmed bool, growth uint64) {
	w := ev.Watch
	if s.Stale(ev) {
		return false, 0
	}
	if ev.Gone {
		err := w.src.Err()
		s.disarm(w)
		if !w.reported {
			w.reported = true
			s.note(PSINote{Kind: PSIEnded, Watch: w, Path: w.reg.Path, Err: err})
		}
		w.backoff = 0
		s.retryLater(w, now)
		return false, 0
	}
	w.fired++
	total, err := s.read(w)
	if err == nil {
		growth, confirmed = w.conf.Confirm(ev.At, total)
	}
	if !confirmed {
		w.spurious++
		s.note(PSINote{Kind: PSISpurious, Watch: w, Path: w.reg.Path, Growth: growth, Err: err})
	}
	return confirmed, growth
}

// Rearm retries every due watch; it returns those armed now.
func (s *PSISet) Rearm(now time.Time) []*PSIWatch {
	var armed []*PSIWatch
	for _, w := range s.watches {
		if w.Due(now) && s.try(w, now) {
			armed = append(armed, w)
		}
	}
	return armed
}

// NextRetry is when the earliest down watch is due.
func (s *PSISet) NextRetry() (time.Time, bool) {
	var next time.Time
	for _, w := range s.watches {
		if w.src == nil && (next.IsZero() || w.retryAt.Before(next)) {
			next = w.retryAt
		}
	}
	return next, !next.IsZero()
}

// SampleAll reads every armed watch's total (a slow tick): it bounds how
// much idle noise a later confirmation can add up.
func (s *PSISet) SampleAll(now time.Time) {
	for _, w := range s.watches {
		if w.src != nil {
			s.sample(w, now)
		}
	}
}

func (s *PSISet) read(w *PSIWatch) (uint64, error) {
	p, err := s.Read(w.reg.Path)
	if err != nil {
		return 0, err
	}
	v, ok := p.Total(w.reg.Kind)
	if !ok {
		return 0, fmt.Errorf("%s: no %s line", w.reg.Path, w.reg.Kind)
	}
	return v, nil
}

func (s *PSISet) sample(w *PSIWatch, now time.Time) {
	if v, err := s.read(w); err == nil {
		w.conf.Add(now, v)
	}
}

// Stale reports whether an event belongs to an earlier arm of its watch
// (or to a watch closed since): Handle ignores it.
func (s *PSISet) Stale(ev PSIEvent) bool { return ev.gen != ev.Watch.gen || ev.Watch.src == nil }
