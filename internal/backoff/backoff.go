// Package backoff computes restart delays: the first restart after clean
// running is immediate, repeated failures double from an initial delay up
// to a cap, jittered so that several partitions do not restart in step.
package backoff

import (
	"math/rand/v2"
	"time"
)

// Backoff is not safe for concurrent use; each partition owns one.
type Backoff struct {
	Initial, Max time.Duration
	// Jitter is the relative spread, 0.2 = ±20 %.
	Jitter float64
	// Rand returns a float in [0,1); tests fix it.
	Rand func() float64

	attempt int
}

// New returns a backoff with ±20 % jitter.
func New(initial, max time.Duration) *Backoff {
	return &Backoff{Initial: initial, Max: max, Jitter: 0.2, Rand: rand.Float64}
}

// Next returns the delay before the next attempt and counts it. The first
// call after Reset returns 0.
func (b *Backoff) Next() time.Duration {
	n := b.attempt
	b.attempt++
	if n == 0 {
		return 0
	}
	d := b.Initial
	for i := 1; i < n && d < b.Max; i++ {
		d *= 2
	}
	d = min(d, b.Max)
	if b.Jitter > 0 && b.Rand != nil {
		f := 1 + b.Jitter*(2*b.Rand()-1)
		d = time.Duration(float64(d) * f)
	}
	return min(d, b.Max)
}

// Attempts returns how many delays were handed out since the last Reset.
func (b *Backoff) Attempts() int { return b.attempt }

// Reset starts over: the next delay is 0.
func (b *Backoff) Reset() { b.attempt = 0 }
