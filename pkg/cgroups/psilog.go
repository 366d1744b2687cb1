package cgroups

import "go.uber.org/zap"

// LogPSINote logs a note of a PSISet the way its users (the partition's
// stall trigger, the host-level protector) agree on: the first failure of
// an outage at info level and the retries at debug level, a re-arm at
// info level, a spurious wake-up at debug level with the trigger's
// counts. An end and a window fallback mean different things to each
// user (a protected unit's cgroup goes away at every restart), so those
// are left to the caller: LogPSINote reports false for them.
func LogPSINote(log *zap.Logger, n PSINote) bool {
	name := n.Watch.Name
	switch n.Kind {
	case PSIUnavailable:
		log.Info("pressure trigger not available; retrying with backoff", zap.String("trigger", name), zap.Error(n.Err))
	case PSIStillUnavailable:
		log.Debug("pressure trigger still not available", zap.String("trigger", name), zap.Error(n.Err))
	case PSIRearmed:
		log.Info("pressure trigger re-armed", zap.String("trigger", name), zap.String("file", n.Path))
	case PSISpurious:
		reg := n.Watch.Registered()
		fired, spurious := n.Watch.Counts()
		log.Debug("spurious pressure trigger wake-up: the stall total did not grow by the threshold",
			zap.String("trigger", name), zap.Uint64("growth_us", n.Growth),
			zap.Duration("threshold", reg.Threshold), zap.Duration("window", reg.Window),
			zap.Uint64("spurious", spurious), zap.Uint64("fired", fired), zap.Error(n.Err))
	default:
		return false
	}
	return true
}
