package cgroups

import "time"

// maxPSISamples bounds the readings a PSIConfirmer keeps.
const maxPSISamples = 16

// PSISample is one reading of a pressure file's stall total.
type PSISample struct {
	At    time.Time
	Total uint64 // microseconds
}

// PSIConfirmer checks PSI trigger wake-ups against the pressure file's
// totals. The kernel wakes a trigger's poller when the stall within the
// window passed the threshold, but a poller can also wake for other
// reasons (a trigger registered a moment ago, a re-created cgroup's file,
// a wake-up that arrives late); acting on such a wake-up throttles a
// partition without cause. Window and Threshold are the values the kernel
// registered (a fallback window included). The zero value keeps no
// readings; it is not safe for concurrent use.
type PSIConfirmer struct {
	Window    time.Duration
	Threshold time.Duration
	samples   []PSISample
}

// Reset drops every reading (a new registration: the kernel counts its
// stall from there, and so does the confirmation).
func (c *PSIConfirmer) Reset() { c.samples = c.samples[:0] }

// Len is the number of readings kept.
func (c *PSIConfirmer) Len() int { return len(c.samples) }

// Confirm checks a firing at `at` against the file's total: it must have
// grown by at least Threshold over the window. The baseline is the newest
// reading at least one window older than the firing: the growth since then
// covers the whole window, so a real firing (Threshold stalled within the
// last window) always confirms. Without such a reading the oldest one is
// used, normally the one taken at registration, from which the kernel
// counts too. A total that went backwards is another file (a re-created
// cgroup): no confirmation, and the readings start over. The reading is
// kept either way.
func (c *PSIConfirmer) Confirm(at time.Time, total uint64) (growth uint64, ok bool) {
	if len(c.samples) == 0 {
		c.Add(at, total)
		return 0, false
	}
	base := c.samples[0]
	for _, s := range c.samples[1:] {
		if !s.At.After(at.Add(-c.Window)) {
			base = s
		}
	}
	if total < base.Total {
		c.samples = c.samples[:0]
		c.Add(at, total)
		return 0, false
	}
	growth = total - base.Total
	c.Add(at, total)
	return growth, growth >= uint64(c.Threshold.Microseconds())
}

// Add keeps a reading: the newest one that is at least a window old (the
// next baseline) and everything newer, at most maxPSISamples.
func (c *PSIConfirmer) Add(at time.Time, total uint64) {
	if n := len(c.samples); n > 0 && at.Before(c.samples[n-1].At) {
		at = c.samples[n-1].At
	}
	c.samples = append(c.samples, PSISample{At: at, Total: total})
	keep := 0
	for i, s := range c.samples {
		if !s.At.After(at.Add(-c.Window)) {
			keep = i
		}
	}
	if n := len(c.samples) - keep; n > maxPSISamples {
		keep = len(c.samples) - maxPSISamples
	}
	if keep > 0 {
		c.samples = append(c.samples[:0], c.samples[keep:]...)
	}
}
