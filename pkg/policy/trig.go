package policy

import (
	"context"
	"time"

	"go.uber.org/zap"

	"github.com/containers/qmd/pkg/cgroups"
)

// trigKind says what a confirmed firing of a trigger means (a PSIWatch's
// Owner).
type trigKind int

// The host and ASIL triggers moved to the host-level protector
// (pkg/protect, Host.Pressure); a partition keeps its own stall trigger.
const (
	trigStall    trigKind = iota // the partition's own full memory pressure
	trigMemTight                 // its "some" memory pressure: leave the idle CPU class (cpuclass.go)
)

// psiSource is a registered PSI trigger: *cgroups.PSITrigger, or a fake
// in tests.
type psiSource = cgroups.PSISource

// openPSITrigger registers a real PSI trigger (the controller's default).
var openPSITrigger = cgroups.OpenPSISource

// Re-arm backoff of a trigger that ended (its cgroup went away) or could
// not be registered: from rearmMin, doubling, up to the resync period.
const defaultRearmMin = time.Second

// sample is one reading of a pressure file's total.
type sample struct {
	at    time.Time
	total uint64 // microseconds
}

// newTrigSet is the controller's PSI triggers (cgroups.PSISet: armed,
// confirmed against the totals, re-armed with backoff when they end). The
// set fills in an unset RearmMin and never waits less than it.
func (c *Controller) newTrigSet(ctx context.Context) *cgroups.PSISet {
	s := &cgroups.PSISet{Window: c.cfg.Pressure.Window.Duration, Open: c.openTrigger, Read: c.readPSI,
		RearmMin: c.rearmMin, RearmMax: c.resyncEvery(), Note: c.notePSI}
	s.Start(ctx)
	return s
}

// notePSI logs what the trigger set did; an end is a warning (the
// partition's own cgroup went away).
func (c *Controller) notePSI(n cgroups.PSINote) {
	if cgroups.LogPSINote(c.log, n) {
		return
	}
	switch n.Kind {
	case cgroups.PSIEnded:
		c.log.Warn("pressure trigger ended (the watched cgroup or file went away); re-arming when it is back",
			zap.String("trigger", n.Watch.Name), zap.String("file", n.Path), zap.Error(n.Err))
	case cgroups.PSIFallback:
		c.log.Warn("pressure trigger window adjusted", zap.String("file", n.Path), zap.String("reason", n.Reason))
	}
}
