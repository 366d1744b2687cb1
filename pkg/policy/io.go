package policy

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/containers/qmd/internal/config"
	"github.com/containers/qmd/internal/hostinfo"
	"github.com/containers/qmd/internal/incident"
	"github.com/containers/qmd/pkg/cgroups"
	"github.com/containers/qmd/pkg/supervisor"
)

// defaultIOStart is the bandwidth the IO reaction starts stepping down
// from on a device without a configured limit when the partition's own
// rate is unknown (no io.stat reading to compare with yet).
const defaultIOStart = 100 << 20 // bytes/s

// ioState is the IO reaction's state; the Controller's mu guards it.
type ioState struct {
	devs []cgroups.IOLimit // the [[partition.io.device]] limits, resolved on this host
	thr  *ioThrottle
	// The partition's io.stat at the previous reading (the start, each
	// resync tick, each IO pressure window): rates are taken against it.
	prev   map[cgroups.Device]cgroups.IOStat
	prevAt time.Time
}

// resolveIODevice turns a configured device into its number: "MAJ:MIN" as
// written, a path through stat(2) (symlinks such as /dev/disk/by-id
// followed). A partition is replaced by its disk: the kernel throttles
// whole disks only (io.max refuses a partition). sysRoot is /sys.
func resolveIODevice(sysRoot, p string) (cgroups.Device, error) {
	var d cgroups.Device
	if !strings.HasPrefix(p, "/") {
		var err error
		if d, err = cgroups.ParseDevice(p); err != nil {
			return d, err
		}
	} else {
		major, minor, err := hostinfo.BlockDevice(p)
		if err != nil {
			return d, err
		}
		d = cgroups.Device{Major: major, Minor: minor}
	}
	// No sysfs entry (tests, an odd host): the device as configured.
	if b, ok := hostinfo.LookupBlock(sysRoot, d.String()); ok && b.DiskDevno != "" {
		if whole, err := cgroups.ParseDevice(b.DiskDevno); err == nil {
			return whole, nil
		}
	}
	return d, nil
}

// ioLimitOf is a configured device's static limit (Max where unset).
func ioLimitOf(dev cgroups.Device, d config.IODevice) cgroups.IOLimit {
	l := cgroups.NoIOLimit(dev)
	if d.ReadBps.Set {
		l.RBps = d.ReadBps.Bytes
	}
	if d.WriteBps.Set {
		l.WBps = d.WriteBps.Bytes
	}
	if d.ReadIOPS > 0 {
		l.RIOPS = uint64(d.ReadIOPS)
	}
	if d.WriteIOPS > 0 {
		l.WIOPS = uint64(d.WriteIOPS)
	}
	return l
}

// initIO resolves the configured devices and builds the reaction's state.
// A device missing on this host is skipped with a warning (the same
// configuration serves several hosts).
func (c *Controller) initIO(sysRoot string) {
	cfg := c.cfg.IO
	pct, step := cfg.StepValue()
	c.io = ioState{thr: newIOThrottle(pct, step, cfg.Floor.Bytes, cfg.RestoreAfter.Duration)}
	c.io.thr.minInterval = c.cfg.Pressure.Window.Duration
	for i, d := range cfg.Devices {
		dev, err := resolveIODevice(sysRoot, d.Path)
		if err != nil {
			c.log.Warn("io device skipped", zap.String("key", fmt.Sprintf("partition[%s].io.device[%d].path", c.cfg.Name, i)),
				zap.String("device", d.Path), zap.Error(err))
			continue
		}
		c.io.devs = append(c.io.devs, ioLimitOf(dev, d))
	}
}

// applyIO writes the IO weight and the configured device limits (part of
// applyLimits; try collects what the host cannot do).
func (c *Controller) applyIO(ctx context.Context, try func(what string, err error)) {
	if c.cfg.IO.Weight > 0 {
		try("io.weight", c.setter.SetIOWeight(ctx, c.cfg.IO.Weight))
	}
	want := map[cgroups.Device]bool{}
	for _, l := range c.io.devs {
		want[l.Dev] = true
		try("io.max "+l.Dev.String(), c.setter.SetIOMax(ctx, l))
	}
	// qmd owns the partition's device limits: one that is not configured
	// (any more) is left over from an earlier configuration (a reload
	// removed it) or from a reaction step of the previous controller, so
	// it is lifted.
	if cur, err := c.cg.IOMax(); err == nil {
		for _, l := range cur {
			if !want[l.Dev] && l != cgroups.NoIOLimit(l.Dev) {
				c.log.Info("lifting an io limit that is not configured", zap.String("io_max", l.String()))
				try("io.max "+l.Dev.String(), c.setter.SetIOMax(ctx, cgroups.NoIOLimit(l.Dev)))
			}
		}
	}
	c.sampleIO(time.Now())
}

// sampleIO reads the partition's io.stat and returns the read and write
// byte rates per device since the previous reading (nil without one).
func (c *Controller) sampleIO(now time.Time) map[cgroups.Device][2]uint64 {
	st, err := c.cg.IOStat()
	if err != nil {
		if !errors.Is(err, cgroups.ErrUnsupported) && !errors.Is(err, fs.ErrNotExist) {
			c.log.Debug("io.stat unreadable", zap.Error(err))
		}
		return nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	var rates map[cgroups.Device][2]uint64
	if el := now.Sub(c.io.prevAt); c.io.prev != nil && el >= 100*time.Millisecond {
		rates = map[cgroups.Device][2]uint64{}
		for _, s := range st {
			p, ok := c.io.prev[s.Dev]
			if !ok || s.RBytes < p.RBytes || s.WBytes < p.WBytes {
				p = cgroups.IOStat{}
			}
			rates[s.Dev] = [2]uint64{
				uint64(float64(s.RBytes-p.RBytes) / el.Seconds()),
				uint64(float64(s.WBytes-p.WBytes) / el.Seconds()),
			}
		}
	}
	c.io.prev = make(map[cgroups.Device]cgroups.IOStat, len(st))
	for _, s := range st {
		c.io.prev[s.Dev] = s
	}
	c.io.prevAt = now
	return rates
}

// ioTargets are the devices the reaction throttles: those the partition
// did IO on since the previous reading, and of those only the ones the
// pressured ASIL cgroup uses too when that is known (asil non-nil): a disk
// the ASIL work never touches cannot be where it waits, and throttling the
// partition there only hurts the partition (seen in e2e scenario 15: ASIL
// reads stalled behind a partition writer on a second disk, and the
// reaction lowered the configured main disk instead). A device's
// configured limits are where its steps start. Before the first reading
// (rates nil) the configured devices are the guess.
func (c *Controller) ioTargets(rates map[cgroups.Device][2]uint64, asil map[cgroups.Device]bool) []ioTarget {
	configured := make(map[cgroups.Device]cgroups.IOLimit, len(c.io.devs))
	for _, l := range c.io.devs {
		configured[l.Dev] = l
	}
	var out []ioTarget
	if rates == nil {
		for _, l := range c.io.devs {
			if asil == nil || asil[l.Dev] {
				out = append(out, ioTarget{configured: l, rate: [2]uint64{unknownRate, unknownRate}})
			}
		}
	}
	for dev, r := range rates {
		if (r[0] == 0 && r[1] == 0) || (asil != nil && !asil[dev]) {
			continue
		}
		l, ok := configured[dev]
		if !ok {
			l = cgroups.NoIOLimit(dev)
		}
		out = append(out, ioTarget{configured: l, rate: r})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].configured.Dev.String() < out[j].configured.Dev.String() })
	return out
}

// asilDevices are the devices the pressured ASIL cgroup (its directory in
// the cgroup2 mount) has done IO on, from its io.stat; nil when unknown
// (the host's pressure, no directory, or an unreadable file).
func asilDevices(dir string) map[cgroups.Device]bool {
	if dir == "" {
		return nil
	}
	name := filepath.Join(dir, "io.stat")
	b, err := os.ReadFile(name)
	if err != nil {
		return nil
	}
	st, err := cgroups.ParseIOStat(name, b)
	if err != nil {
		return nil
	}
	devs := make(map[cgroups.Device]bool, len(st))
	for _, s := range st {
		if s.RBytes > 0 || s.WBytes > 0 {
			devs[s.Dev] = true
		}
	}
	return devs
}

// onIOPressure handles one confirmed IO pressure window of the protected
// (ASIL) units: the partition's bandwidth limits go one step down (never
// below the floor, at most one step per window).
func (c *Controller) onIOPressure(at time.Time, asilDir string) {
	rates := c.sampleIO(at)
	asil := asilDevices(asilDir)
	c.mu.Lock()
	defer c.mu.Unlock()
	targets := c.ioTargets(rates, asil)
	if len(targets) == 0 {
		c.log.Debug("ASIL io pressure: the partition did no IO since the last reading on a device the ASIL cgroup uses; nothing to throttle",
			zap.String("asil_cgroup", asilDir))
		return
	}
	changed, held := c.io.thr.pressure(at, targets)
	if len(changed) == 0 {
		if held != "" {
			c.log.Debug("ASIL io pressure: io limits held", zap.String("reason", held))
		}
		return
	}
	var done []cgroups.IOLimit
	var texts []string
	for _, l := range changed {
		c.log.Info("ASIL io pressure: lowering the partition's io limits", zap.String("io_max", l.String()))
		if !c.applyIOStep(l, "io throttle failed") {
			// Not written: the throttle keeps what is really set, and
			// the next confirmed window tries again.
			c.io.thr.undo(l.Dev)
			continue
		}
		done = append(done, l)
		texts = append(texts, l.String())
	}
	if len(done) == 0 {
		return
	}
	if !c.h.DryRun {
		c.hooks.Condition(supervisor.IOLimited, true, "ASIL io pressure")
	}
	c.record(incident.IOThrottle, "ASIL io pressure: partition io limited to "+ioSummary(done),
		map[string]string{"io_max": strings.Join(texts, "; "), "action": "lower", "at": at.Format(time.RFC3339Nano)})
}

// applyIOStep writes one device's limits of a reaction step (nothing in
// dry-run mode); a failure is logged with failMsg and reported false.
func (c *Controller) applyIOStep(l cgroups.IOLimit, failMsg string) bool {
	if c.h.DryRun {
		return true
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	err := c.setter.SetIOMax(ctx, l)
	cancel()
	if err != nil {
		c.log.Warn(failMsg, zap.String("device", l.Dev.String()), zap.Error(err))
		return false
	}
	return true
}

// ioQuiet restores one step once IO pressure has been absent for
// restore_after; it reports whether the partition is still below its
// configured IO limits. Called on every quiet period (onQuiet).
func (c *Controller) ioQuiet(now time.Time) (stillThrottled bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	changed := c.io.thr.tick(now)
	still := c.io.thr.throttled()
	if len(changed) == 0 {
		return still
	}
	var done []string
	for _, l := range changed {
		if c.applyIOStep(l, "restoring io limits failed") {
			done = append(done, l.String())
		}
	}
	if !still && !c.h.DryRun {
		c.hooks.Condition(supervisor.IOLimited, false, "ASIL io pressure gone")
	}
	what := "ASIL io pressure gone: partition io limits raised to "
	if !still {
		what = "ASIL io pressure gone: partition io limits restored to "
	}
	c.record(incident.IOThrottle, what+ioSummary(changed),
		map[string]string{"io_max": strings.Join(done, "; "), "action": "raise", "restored": strconv.FormatBool(!still)})
	return still
}

func ioSummary(ls []cgroups.IOLimit) string {
	parts := make([]string, len(ls))
	for i, l := range ls {
		parts[i] = fmt.Sprintf("%s read %s/s write %s/s", l.Dev, humanRate(l.RBps), humanRate(l.WBps))
	}
	return strings.Join(parts, ", ")
}

func humanRate(v uint64) string {
	switch {
	case v == cgroups.Max:
		return "max"
	case v >= 1<<20:
		return strconv.FormatFloat(float64(v)/(1<<20), 'f', 1, 64) + "M"
	case v >= 1<<10:
		return strconv.FormatUint(v>>10, 10) + "K"
	}
	return strconv.FormatUint(v, 10)
}

// unknownRate marks a direction whose current rate is not known.
const unknownRate = ^uint64(0)

// ioTarget is one device the reaction may throttle: its configured limit
// and the partition's current read/write rate on it (unknownRate).
type ioTarget struct {
	configured cgroups.IOLimit
	rate       [2]uint64
}

// ioThrottle decides the partition's bandwidth limits under ASIL IO
// pressure, the IO twin of throttle: each pressure window lowers each
// target device's read and write limit one step (a share of the current
// limit, or a fixed rate) towards the floor; after restoreAfter without
// pressure and since the last step, one step is undone, until the
// configured limits are back exactly (each step's previous limits are
// kept, so restoring retraces the way down). IOPS limits are left as
// configured. It is pure: the caller supplies time and rates.
type ioThrottle struct {
	pct          float64 // step as a share of the current limit; or
	step         uint64  // step in bytes/s
	floor        uint64
	restoreAfter time.Duration
	minInterval  time.Duration // one step per PSI window at most

	devs map[cgroups.Device]*ioDevState
}

// ioDevState is one device's throttle: the limits now and the way back to
// the configured ones (history[0] while throttled, current otherwise).
// Rate limit and hysteresis are per device: pressure on a disk the
// partition is not throttled on (another ASIL unit, another disk) must
// not hold back the restore of this one (seen in e2e scenario 15 on a
// loaded host: the fsync probes' steady pressure on the main disk kept a
// second disk throttled long after its contention had ended).
type ioDevState struct {
	current      cgroups.IOLimit
	history      []cgroups.IOLimit // the limits before each step down
	lastPressure time.Time         // the last pressure window that targeted it
	lastStep     time.Time         // its last step, down or up
}

func newIOThrottle(pct float64, step, floor uint64, restoreAfter time.Duration) *ioThrottle {
	if pct <= 0 && step == 0 {
		pct = 0.25
	}
	return &ioThrottle{pct: pct, step: step, floor: max(floor, 1), restoreAfter: restoreAfter,
		devs: map[cgroups.Device]*ioDevState{}}
}

func (t *ioThrottle) throttled() bool {
	for _, d := range t.devs {
		if len(d.history) > 0 {
			return true
		}
	}
	return false
}

// Why a pressure window did not lower anything.
const (
	ioHeldRate  = "rate"  // a step was taken within the last window
	ioHeldFloor = "floor" // every target it pushes on is at the floor
	ioHeldIdle  = "idle"  // it pushes on no target device (pushing)
)

// pushing reports whether the partition, doing rate bytes/s in one
// direction under the limit cur, is a cause worth a step there. Not when
// it does less than the floor and less than half its current limit: a
// limit at the floor could not slow it at all, so a step would relieve
// the ASIL work of nothing and only cap the partition's next burst. On a
// loaded host the ASIL units stall for reasons that are not the
// partition's IO (CPU starvation), and every device with a trickle of
// partition IO (journald) was lowered to the floor and held there for
// minutes (e2e scenario 15 under stress-ng). Once throttled, a partition
// pushing against its limit (at least half of it) keeps the throttle
// held; one that stopped lets the restore begin.
func (t *ioThrottle) pushing(cur, rate uint64) bool {
	switch {
	case rate == 0:
		return false
	case rate == unknownRate, rate > t.floor:
		return true
	}
	return cur != cgroups.Max && rate >= cur/2
}

// lower is one step below cur for a direction doing rate bytes/s: from
// the current limit, or from the rate when that is lower (a limit above
// what the partition does relieves nothing), or from defaultIOStart when
// neither is known; never below the floor. cur means "leave it": the
// partition does not push in that direction (pushing).
func (t *ioThrottle) lower(cur, rate uint64) uint64 {
	base := cur
	switch {
	case !t.pushing(cur, rate):
		return cur
	case rate != unknownRate && rate < base:
		base = rate
	case base == cgroups.Max:
		base = defaultIOStart
	}
	var next uint64
	if t.pct > 0 {
		next = base - uint64(float64(base)*t.pct)
	} else if base > t.step {
		next = base - t.step
	}
	next = max(next, t.floor)
	return min(next, cur)
}

// pressure handles one confirmed IO pressure window and returns the
// limits that changed.
func (t *ioThrottle) pressure(now time.Time, targets []ioTarget) ([]cgroups.IOLimit, string) {
	var out []cgroups.IOLimit
	rated, pushed := false, false
	for _, tg := range targets {
		dev := tg.configured.Dev
		d, ok := t.devs[dev]
		cur := tg.configured // not throttled: (re)start from the configured limits
		if ok && len(d.history) > 0 {
			cur = d.current
		}
		if !t.pushing(cur.RBps, tg.rate[0]) && !t.pushing(cur.WBps, tg.rate[1]) {
			// Not a cause here: no step, and the restore clock of a
			// throttled device keeps running.
			continue
		}
		pushed = true
		if !ok || len(d.history) == 0 {
			d = &ioDevState{current: tg.configured}
			t.devs[dev] = d
		}
		d.lastPressure = now
		if len(d.history) > 0 && now.Sub(d.lastStep) < t.minInterval {
			rated = true
			continue
		}
		next := d.current
		next.RBps = t.lower(d.current.RBps, tg.rate[0])
		next.WBps = t.lower(d.current.WBps, tg.rate[1])
		if next == d.current {
			continue
		}
		d.history = append(d.history, d.current)
		d.current = next
		d.lastStep = now
		out = append(out, next)
	}
	switch {
	case len(out) > 0:
		return out, ""
	case rated:
		return nil, ioHeldRate
	case !pushed:
		return nil, ioHeldIdle
	}
	return nil, ioHeldFloor
}

// due is when the next restore step of a throttled device may be taken
// (tick's condition), false when none is throttled.
func (t *ioThrottle) due() (time.Time, bool) {
	var at time.Time
	ok := false
	for _, d := range t.devs {
		if len(d.history) == 0 {
			continue
		}
		if next := later(d.lastPressure, d.lastStep).Add(t.restoreAfter); !ok || next.Before(at) {
			at, ok = next, true
		}
	}
	return at, ok
}

// undo takes back the last step of dev: writing it failed, so what is
// really set is still the limit before it.
func (t *ioThrottle) undo(dev cgroups.Device) {
	d, ok := t.devs[dev]
	if !ok || len(d.history) == 0 {
		return
	}
	d.current = d.history[len(d.history)-1]
	d.history = d.history[:len(d.history)-1]
}

// tick undoes one step on every throttled device when restoreAfter has
// passed since the last pressure window that targeted it and its last
// step.
func (t *ioThrottle) tick(now time.Time) []cgroups.IOLimit {
	var out []cgroups.IOLimit
	devs := make([]cgroups.Device, 0, len(t.devs))
	for dev := range t.devs {
		devs = append(devs, dev)
	}
	sort.Slice(devs, func(i, j int) bool { return devs[i].String() < devs[j].String() })
	for _, dev := range devs {
		d := t.devs[dev]
		if len(d.history) == 0 || now.Sub(d.lastPressure) < t.restoreAfter || now.Sub(d.lastStep) < t.restoreAfter {
			continue
		}
		d.current = d.history[len(d.history)-1]
		d.history = d.history[:len(d.history)-1]
		d.lastStep = now
		out = append(out, d.current)
	}
	return out
}
