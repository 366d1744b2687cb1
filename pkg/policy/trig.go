package policy

import (
	"context"
	"time"

	"go.uber.org/zap"

	"github.com/containers/qmd/pkg/cgroups"
)

// trig is an optional PSI trigger: nil when disabled or unavailable (no
// PSI on this kernel/cgroup), so the select loop can treat all alike.
type trig struct{ t *cgroups.PSITrigger }

func (c *Controller) trigger(enabled bool, path string, kind cgroups.PSIKind, threshold time.Duration) *trig {
	if !enabled {
		return nil
	}
	t, err := cgroups.NewPSITrigger(cgroups.PSITriggerSpec{Path: path, Kind: kind, Threshold: threshold, Window: c.cfg.Pressure.Window.Duration})
	if err != nil {
		c.log.Info("pressure trigger not available", zap.String("file", path), zap.Error(err))
		return nil
	}
	if reg := t.Registration(); reg.Fallback {
		c.log.Warn("pressure trigger window adjusted", zap.String("file", path), zap.String("reason", reg.Warning))
	}
	return &trig{t: t}
}

// c returns the firing channel; nil (blocks forever) when disabled.
func (t *trig) c() <-chan time.Time {
	if t == nil {
		return nil
	}
	return t.t.C()
}

func (t *trig) close() {
	if t != nil {
		_ = t.t.Close()
	}
}

func closeAll(ts []*trig) {
	for _, t := range ts {
		t.close()
	}
}

// merge fans several triggers into one channel.
func merge(ctx context.Context, ts []*trig) <-chan time.Time {
	var live []*trig
	for _, t := range ts {
		if t != nil {
			live = append(live, t)
		}
	}
	switch len(live) {
	case 0:
		return nil
	case 1:
		return live[0].c()
	}
	out := make(chan time.Time, 1)
	for _, t := range live {
		go func(ch <-chan time.Time) {
			for {
				select {
				case <-ctx.Done():
					return
				case v, ok := <-ch:
					if !ok {
						return
					}
					select {
					case out <- v:
					default: // coalesce
					}
				}
			}
		}(t.c())
	}
	return out
}
