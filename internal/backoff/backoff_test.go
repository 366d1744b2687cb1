package backoff

import (
	"testing"
	"time"
)

func TestSequence(t *testing.T) {
	b := New(100*time.Millisecond, 30*time.Second)
	b.Rand = func() float64 { return 0.5 } // no jitter
	want := []time.Duration{0, 100 * time.Millisecond, 200 * time.Millisecond, 400 * time.Millisecond, 800 * time.Millisecond}
	for i, w := range want {
		if got := b.Next(); got != w {
			t.Errorf("attempt %d: %v, want %v", i, got, w)
		}
	}
	for range 20 {
		b.Next()
	}
	if got := b.Next(); got != 30*time.Second {
		t.Errorf("cap: %v", got)
	}
	b.Reset()
	if got := b.Next(); got != 0 {
		t.Errorf("after reset: %v", got)
	}
}

func TestJitterStaysInBounds(t *testing.T) {
	for _, r := range []float64{0, 0.25, 0.999} {
		b := New(time.Second, 10*time.Second)
		b.Rand = func() float64 { return r }
		b.Next()
		d := b.Next()
		if d < 800*time.Millisecond || d > 1200*time.Millisecond {
			t.Errorf("rand %v: %v outside ±20%%", r, d)
		}
		for range 10 {
			d = b.Next()
		}
		if d > 10*time.Second {
			t.Errorf("jitter above cap: %v", d)
		}
	}
}
