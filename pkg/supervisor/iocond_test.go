package supervisor

import "testing"

// io-limited shows as the throttled substate, like throttled and
// cpu-limited; frozen still wins.
func TestIOLimitedSubState(t *testing.T) {
	if got := deriveSub(Active, Conditions{IOLimited: "ASIL io pressure"}, false); got != SubThrottled {
		t.Errorf("io-limited: SubState %q, want %q", got, SubThrottled)
	}
	if got := deriveSub(Active, Conditions{IOLimited: "x", Frozen: "y"}, false); got != SubFrozen {
		t.Errorf("io-limited and frozen: SubState %q, want %q", got, SubFrozen)
	}
	if got := deriveSub(Active, nil, false); got != SubRunning {
		t.Errorf("no condition: %q", got)
	}
}
