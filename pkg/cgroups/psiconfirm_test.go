package cgroups

import (
	"testing"
	"time"
)

// TestConfirmAgainstTotals: the confirmation rule on its own.
func TestConfirmAgainstTotals(t *testing.T) {
	const ms = 1000 // µs
	t0 := time.Unix(1000, 0)
	tr := &PSIConfirmer{Threshold: 150 * time.Millisecond, Window: 2 * time.Second}
	tr.Add(t0, 579510) // at registration
	// The idle build host: a wake-up 1.2 s after registration while the
	// total grew 1.4 ms.
	if g, ok := tr.Confirm(t0.Add(1200*time.Millisecond), 579510+1400); ok || g != 1400 {
		t.Errorf("idle wake-up confirmed: growth %d", g)
	}
	// Real pressure: 200 ms within the window.
	if g, ok := tr.Confirm(t0.Add(3*time.Second), 579510+1400+200*ms); !ok || g != 200*ms+1400 {
		t.Errorf("real stall not confirmed: growth %d", g)
	}
	// A reading taken in the middle of a stall (the resync tick) must
	// not hide it: the baseline is the newest reading a window old.
	tr.Add(t0.Add(30*time.Second), 800*ms)
	tr.Add(t0.Add(31*time.Second), 920*ms) // 120 ms of a stall already counted here
	if g, ok := tr.Confirm(t0.Add(32*time.Second), 1000*ms); !ok || g != 200*ms {
		t.Errorf("stall straddling a reading: growth %d ok %v, want 200ms from the reading at 30 s", g, ok)
	}
	// Noise does not add up beyond the readings kept: an hour later,
	// 1.4 ms more is spurious.
	if _, ok := tr.Confirm(t0.Add(time.Hour), 1000*ms+1400); ok {
		t.Error("an hour of noise confirmed")
	}
	// A total that went backwards is another file.
	if _, ok := tr.Confirm(t0.Add(time.Hour+3*time.Second), 10); ok {
		t.Error("a reset total confirmed")
	}
	if len(tr.samples) != 1 || tr.samples[0].Total != 10 {
		t.Errorf("readings after a reset: %+v", tr.samples)
	}
	if len(tr.samples) > maxPSISamples {
		t.Errorf("%d readings kept", len(tr.samples))
	}
}
