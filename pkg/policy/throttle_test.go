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
	if v, ok := th.pressure(t0, 1000*mib); !ok || v != 900*mib {
		t.Fatalf("first step: %d %v", v/mib, ok)
	}
	steps := []uint64{800, 700, 600, 500, 400, 300, 300}
	for i, want := range steps {
		v, _ := th.pressure(t0.Add(time.Duration(i+1)*time.Second), 1000*mib)
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
	if v, _ := th.pressure(last.Add(40*time.Second), 1000*mib); v != 300*mib {
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
	if v, _ := th.pressure(t0, 1500*mib); v != 1024*mib {
		t.Fatalf("got %dM, want the floor 1024M", v/mib)
	}
	if v, ok := th.pressure(t0.Add(time.Second), 1500*mib); ok || v != 1024*mib {
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
