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
// The throttle must never stall the partition by itself (issue 9: four
// steps in 4 s pushed a partition whose memory was one process's anonymous
// memory into a full stall, which was then read as a hung partition). So
// a step never goes below what the partition needs to make progress (need,
// its working set), and no step is taken while the partition's own full
// pressure rises.
//
// It is pure: the caller supplies time, usage and need.
type throttle struct {
	configured   uint64 // memory.high from the configuration (Infinity = none)
	step, floor  uint64
	restoreAfter time.Duration
	// minInterval is the least time between two steps down: one PSI
	// window. Each trigger fires at most once a window, but the host's
	// and every protected unit's triggers may fire in the same window
	// for the same shortage: that is one step, not one per trigger.
	minInterval time.Duration

	current      uint64 // what qmd last set; == configured when not throttled
	origin       uint64 // where this throttling episode started (usage when configured is infinity)
	startUsage   uint64 // memory.current when the episode started
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

// Why a pressure event did not lower the limit.
const (
	heldFloor     = "floor"      // at the configured floor
	heldNeed      = "need"       // at the partition's working set
	heldSelfStall = "self-stall" // the partition's own full pressure rises
	heldRate      = "rate"       // a step was taken within the last window
)

// pressure handles one pressure event. usage is memory.current: when the
// limit is still infinity, the first step is taken from the usage (a limit
// above usage would not throttle anything). need is what the partition
// needs to make progress (0: unknown; then half the usage at the start of
// the episode stands in); the limit never goes below max(floor, need).
// selfStall says the partition's own full memory pressure is rising: its
// stall would then be made by this throttle, so no step is taken. It
// returns the new limit, whether it changed, and if not, why (one of the
// held* constants, or "" when already lower).
func (t *throttle) pressure(now time.Time, usage, need uint64, selfStall bool) (uint64, bool, string) {
	t.lastPressure = now
	if !t.throttled() {
		t.startUsage = usage
	}
	if selfStall {
		return t.current, false, heldSelfStall
	}
	if t.throttled() && now.Sub(t.lastStep) < t.minInterval {
		return t.current, false, heldRate
	}
	base := t.current
	if base == infinity || base > usage+t.step {
		base = usage
	}
	if need == 0 {
		need = t.startUsage / 2
	}
	lowest, why := t.floor, heldFloor
	if need > lowest {
		lowest, why = need, heldNeed
	}
	next := lowest
	if base > lowest+t.step {
		next = base - t.step
	}
	if next >= t.current {
		if next > lowest {
			why = "" // the limit is already below what a step would set
		}
		return t.current, false, why
	}
	if !t.throttled() {
		t.origin = min(base, t.configured)
	}
	t.current = next
	t.lastStep = now
	return next, true, ""
}

// up is the limit one step above the current one (the configured value
// once that passes where the episode started).
func (t *throttle) up() uint64 {
	next := t.current + t.step
	if next < t.current || next >= t.configured || next >= t.origin {
		// Back where the episode started: give the configured value
		// back (infinity included).
		next = t.configured
	}
	return next
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
	t.current = t.up()
	t.lastStep = now
	return t.current, true
}

// due is when tick may take the next restore step, false when not
// throttled.
func (t *throttle) due() (time.Time, bool) {
	if !t.throttled() {
		return time.Time{}, false
	}
	return later(t.lastPressure, t.lastStep).Add(t.restoreAfter), true
}

// later is the later of two times.
func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

// relax raises the limit one step at once: the partition stalls under
// it, so the throttle itself is (part of) the cause.
func (t *throttle) relax(now time.Time) (uint64, bool) {
	if !t.throttled() {
		return t.current, false
	}
	t.current = t.up()
	t.lastStep = now
	return t.current, true
}

// reconfigure takes a new configured value (SetMemoryHigh, reload).
func (t *throttle) reconfigure(configured uint64) {
	was := t.throttled()
	t.configured = configured
	if !was || t.current > configured {
		t.current = configured
	}
}
