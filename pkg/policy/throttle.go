package policy

import (
	"time"
)

// throttle decides memory.high under host (or ASIL) memory pressure: each
// pressure event lowers the limit one step towards a floor; once pressure
// has been absent for restoreAfter, each further quiet period raises it one
// step until the configured value is back. Hysteresis: a restore step needs
// a full quiet period since the last pressure event AND since the last
// step, so the limit cannot flap faster than restoreAfter.
//
// It is pure: the caller supplies time and the current usage.
type throttle struct {
	configured   uint64 // memory.high from the configuration (Infinity = none)
	step, floor  uint64
	restoreAfter time.Duration

	current      uint64 // what qmd last set; == configured when not throttled
	origin       uint64 // where this throttling episode started (usage when configured is infinity)
	lastPressure time.Time
	lastStep     time.Time
}

const infinity = ^uint64(0)

func newThrottle(configured, step, floor uint64, restoreAfter time.Duration) *throttle {
	if step == 0 {
		step = 1 << 20
	}
	return &throttle{configured: configured, step: step, floor: floor, restoreAfter: restoreAfter, current: configured}
}

// throttled reports whether the limit is below the configured value.
func (t *throttle) throttled() bool { return t.current < t.configured }

// pressure handles one pressure event. usage is memory.current: when the
// limit is still infinity, the first step is taken from the usage (a limit
// above usage would not throttle anything). It returns the new limit and
// whether it changed.
func (t *throttle) pressure(now time.Time, usage uint64) (uint64, bool) {
	t.lastPressure = now
	base := t.current
	if base == infinity || base > usage+t.step {
		base = usage
	}
	if !t.throttled() {
		t.origin = min(base, t.configured)
	}
	next := t.floor
	if base > t.floor+t.step {
		next = base - t.step
	}
	if next >= t.current {
		return t.current, false
	}
	t.current = next
	t.lastStep = now
	return next, true
}

// tick is called periodically (and on each quiet period); it returns the
// restored limit when a restore step is due.
func (t *throttle) tick(now time.Time) (uint64, bool) {
	if !t.throttled() {
		return t.current, false
	}
	if now.Sub(t.lastPressure) < t.restoreAfter || now.Sub(t.lastStep) < t.restoreAfter {
		return t.current, false
	}
	next := t.current + t.step
	if next < t.current || next >= t.configured || next >= t.origin {
		// Back where the episode started: give the configured value
		// back (infinity included).
		next = t.configured
	}
	t.current = next
	t.lastStep = now
	return next, true
}

// reconfigure takes a new configured value (SetMemoryHigh, reload).
func (t *throttle) reconfigure(configured uint64) {
	was := t.throttled()
	t.configured = configured
	if !was || t.current > configured {
		t.current = configured
	}
}
