package policy

import (
	"testing"
	"time"
)

const mib = 1 << 20

func TestThrottleStepsDownToFloorAndRestoresWithHysteresis(t *testing.T) {
	t0 := time.Unix(1000, 0)
	th := newThrottle(infinity, 100*mib, 300*mib, 30*time.Second)
	// First pressure: from usage (1000M) one step down.
	if v, ok, _ := th.pressure(t0, 1000*mib, 1, false); !ok || v != 900*mib {
		t.Fatalf("first step: %d %v", v/mib, ok)
	}
	steps := []uint64{800, 700, 600, 500, 400, 300, 300}
	for i, want := range steps {
		v, _, _ := th.pressure(t0.Add(time.Duration(i+1)*time.Second), 1000*mib, 1, false)
		if v != want*mib {
			t.Fatalf("step %d: %dM, want %dM", i, v/mib, want)
		}
	}
	last := t0.Add(7 * time.Second)
	// No restore while pressure is recent.
	if _, ok := th.tick(last.Add(29 * time.Second)); ok {
		t.Fatal("restored within restore_after")
	}
	v, ok := th.tick(last.Add(30 * time.Second))
	if !ok || v != 400*mib {
		t.Fatalf("first restore step: %dM %v", v/mib, ok)
	}
	// Hysteresis: the next step needs another quiet period.
	if _, ok := th.tick(last.Add(31 * time.Second)); ok {
		t.Fatal("restored twice within one period")
	}
	// Pressure again: down again, and the quiet period starts over.
	if v, _, _ := th.pressure(last.Add(40*time.Second), 1000*mib, 1, false); v != 300*mib {
		t.Fatalf("pressure after restore: %dM", v/mib)
	}
	if _, ok := th.tick(last.Add(60 * time.Second)); ok {
		t.Fatal("restored 20s after pressure")
	}
	now := last.Add(70 * time.Second)
	for i := 0; th.throttled() && i < 20; i++ {
		th.tick(now)
		now = now.Add(30 * time.Second)
	}
	if th.throttled() || th.current != infinity {
		t.Fatalf("not restored to infinity: %d", th.current)
	}
}

func TestThrottleFiniteConfigured(t *testing.T) {
	t0 := time.Unix(0, 0)
	th := newThrottle(2048*mib, 512*mib, 1024*mib, 10*time.Second)
	// Usage below the limit: the step is taken from usage, not from the
	// configured limit (a limit above usage throttles nothing).
	if v, _, _ := th.pressure(t0, 1500*mib, 1, false); v != 1024*mib {
		t.Fatalf("got %dM, want the floor 1024M", v/mib)
	}
	if v, ok, why := th.pressure(t0.Add(time.Second), 1500*mib, 1, false); ok || v != 1024*mib || why != heldFloor {
		t.Fatalf("below floor: %dM %v", v/mib, ok)
	}
	// One step up passes the usage the episode started from (1500M): the
	// configured limit comes back.
	v, _ := th.tick(t0.Add(20 * time.Second))
	if v != 2048*mib || th.throttled() {
		t.Fatalf("restore to configured: %dM", v/mib)
	}
	th.reconfigure(4096 * mib)
	if th.current != 4096*mib {
		t.Fatal("reconfigure while not throttled")
	}
}

// TestThrottleLimits: never below max(floor, need); no step while the
// partition's own stall rises; one step per window however many triggers
// fire; relax goes one step up and back to the configured value.
func TestThrottleLimits(t *testing.T) {
	t0 := time.Unix(0, 0)
	th := newThrottle(infinity, 100*mib, 200*mib, 30*time.Second)
	th.minInterval = 2 * time.Second
	if v, ok, _ := th.pressure(t0, 1000*mib, 750*mib, false); !ok || v != 900*mib {
		t.Fatalf("first step %dM", v/mib)
	}
	if v, ok, why := th.pressure(t0.Add(time.Second), 1000*mib, 750*mib, false); ok || why != heldRate || v != 900*mib {
		t.Fatalf("second trigger in the same window: %dM %v %q", v/mib, ok, why)
	}
	if v, ok, why := th.pressure(t0.Add(2*time.Second), 1000*mib, 750*mib, true); ok || why != heldSelfStall || v != 900*mib {
		t.Fatalf("self stall: %dM %v %q", v/mib, ok, why)
	}
	if v, ok, _ := th.pressure(t0.Add(4*time.Second), 900*mib, 750*mib, false); !ok || v != 800*mib {
		t.Fatalf("third: %dM %v", v/mib, ok)
	}
	if v, ok, _ := th.pressure(t0.Add(6*time.Second), 800*mib, 750*mib, false); !ok || v != 750*mib {
		t.Fatalf("to the need: %dM %v", v/mib, ok)
	}
	if v, ok, why := th.pressure(t0.Add(8*time.Second), 750*mib, 750*mib, false); ok || why != heldNeed || v != 750*mib {
		t.Fatalf("below the need: %dM %v %q", v/mib, ok, why)
	}
	// Unknown need: half the usage when the episode started (1000M).
	th2 := newThrottle(infinity, 400*mib, 100*mib, time.Second)
	th2.pressure(t0, 1000*mib, 0, false)
	if v, _, why := th2.pressure(t0.Add(time.Second), 600*mib, 0, false); v != 500*mib || why != "" {
		t.Fatalf("fallback need: %dM %q", v/mib, why)
	}
	// relax: one step up, then the configured value.
	if v, ok := th.relax(t0.Add(10 * time.Second)); !ok || v != 850*mib {
		t.Fatalf("relax: %dM", v/mib)
	}
	if v, ok := th.relax(t0.Add(12 * time.Second)); !ok || v != 950*mib {
		t.Fatalf("relax again: %dM", v/mib)
	}
	// One more step passes where the episode started (1000M usage):
	// the configured value.
	if v, ok := th.relax(t0.Add(13 * time.Second)); !ok || v != infinity || th.throttled() {
		t.Fatalf("relax back: %d", v)
	}
	if _, ok := th.relax(t0.Add(14 * time.Second)); ok {
		t.Fatal("relaxed an unthrottled limit")
	}
}
