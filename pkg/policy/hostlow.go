package policy

import (
	"fmt"
	"strconv"
	"time"

	"go.uber.org/zap"

	"github.com/containers/qmd/internal/incident"
	"github.com/containers/qmd/pkg/oom"
)

// The host-low rung of the memory ladder (pressure.host_reserve).
//
// Throttling the partition (memory.high) gives the host memory back only
// where the partition's memory can be reclaimed: page cache, or anonymous
// memory when there is swap. A partition whose growth is one process's
// anonymous memory on a host without swap cannot be reclaimed; memory.high
// then only slows that process down (the kernel's penalty sleeps), and it
// keeps creeping towards the host's limit. Measured in the e2e VM
// (make ffi-bench, memhog at 90 % of RAM): the plain setup lost the hog to
// the kernel's OOM killer with at most 0.5 s of ASIL wake-up latency; under
// the throttle the host spent seconds at the edge of OOM, where the kernel
// reclaims the ASIL processes' own code and file pages, and an unprotected
// 1 ms ASIL task waited 3.4 s.
//
// So when a confirmed host or ASIL memory pressure window finds the host's
// MemAvailable below the reserve, qmd does at once what the kernel would do
// a little later: it kills the partition process the OOM killer would
// pick (largest oom_score; the nested containers' 750 makes them go
// first; never the partition's init), and only when that process is also
// the kernel's pick on the whole host. The victim is the same; the time
// spent thrashing before it is not. A host process that outweighs it
// (its own leak) is left to the kernel, and the partition is throttled
// as before. Nothing is killed when the host is not
// short (MemAvailable above the reserve) or not stalling (no confirmed
// window): a partition that merely uses its memory is never touched. The
// partition is never restarted from here: it is the host that is short,
// not the partition that hangs.

// hostLowMinGrowth: the partition must have grown by at least this share
// of the host's memory (percent) within growthWindow for the host's
// shortage to be the partition's doing now.
const hostLowMinGrowth = 1

// growthWindow is how far back the partition's growth is judged: a
// minute, and at least two resync ticks so that a sample of the period
// before the pressure is always kept.
func (c *Controller) growthWindow() time.Duration { return max(time.Minute, 2*c.resyncEvery()) }

// memSample is the partition's working set at one moment.
type memSample struct {
	at time.Time
	ws uint64
}

// maxMemSamples bounds the history (triggers may fire several times a
// window).
const maxMemSamples = 256

// sampleMem records the partition's working set (memory.current minus
// inactive file pages; memory.current where memory.stat lacks them) and
// returns how much it grew since the smallest sample within
// growthWindow. ok is false when the working set cannot be read or there
// is nothing to compare with: qmd never kills on a guess. Samples are
// taken when the controller starts, on each resync tick and in each
// memory pressure window.
func (c *Controller) sampleMem(now time.Time) (grew uint64, ok bool) {
	return c.recordMem(now, c.readMem())
}

// memReading is one reading of the partition's working set and usage
// (cgroups.MemoryWorkingSet), shared by the host-low rung and the throttle
// within a pressure window.
type memReading struct {
	ws, usage uint64
	err       error
}

func (c *Controller) readMem() memReading {
	ws, usage, err := c.cg.MemoryWorkingSet()
	return memReading{ws: ws, usage: usage, err: err}
}

// recordMem is sampleMem with a reading taken already.
func (c *Controller) recordMem(now time.Time, m memReading) (grew uint64, ok bool) {
	ws := m.ws
	if m.err != nil {
		if m.usage == 0 {
			c.log.Debug("partition memory unreadable", zap.Error(m.err))
			return 0, false
		}
		ws = m.usage
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	from := now.Add(-c.growthWindow())
	keep := c.memSamples[:0]
	low, seen := uint64(0), false
	for _, s := range c.memSamples {
		if s.at.Before(from) {
			continue
		}
		keep = append(keep, s)
		if !seen || s.ws < low {
			low, seen = s.ws, true
		}
	}
	if len(keep) >= maxMemSamples {
		keep = append(keep[:0], keep[len(keep)-maxMemSamples+1:]...)
	}
	c.memSamples = append(keep, memSample{at: now, ws: ws})
	if !seen || ws <= low {
		return 0, seen
	}
	return ws - low, true
}

// hostLowMinFootprint: a victim must hold at least this share of the
// host's memory (percent) for killing it to give the host anything; a
// partition of small processes is left to the kernel.
const hostLowMinFootprint = 1

// hostReserve is pressure.host_reserve in bytes (0: off).
func (c *Controller) hostReserve() uint64 {
	return c.cfg.Pressure.HostReserve.Resolve(c.h.MemTotal)
}

// hostLow reports whether the host's available memory is below the
// reserve, with what is available. An unreadable /proc/meminfo is not low:
// qmd never kills on a guess.
func (c *Controller) hostLow() (bool, uint64) {
	reserve := c.hostReserve()
	if reserve == 0 || c.h.MemAvailable == nil {
		return false, 0
	}
	avail, err := c.h.MemAvailable()
	if err != nil {
		c.log.Debug("host available memory unknown", zap.Error(err))
		return false, 0
	}
	return avail < reserve, avail
}

// hostLowPick is the partition process to kill because the host is below
// its reserve: ok only when the host is low, the partition grew by at
// least hostLowMinGrowth of the host's memory within growthWindow, its
// largest process (the kernel OOM killer's pick inside it) holds at least
// hostLowMinFootprint, and no process outside the partition weighs more.
// Only what the kernel would do: if a host process (ASIL ones score far
// below) outweighs it, the kernel would kill that one, and the
// partition's part is the throttle, giving back what can be reclaimed.
// And only when the partition is taking the memory now: a partition that
// merely holds what it has while the host's own demand rises is the
// kernel's business, if the shortage ever becomes an OOM at all (the
// plain setup would keep that process while it does not).
func (c *Controller) hostLowPick(now time.Time, m memReading) (b oom.Badness, avail uint64, ok bool) {
	grew, known := c.recordMem(now, m)
	low, avail := c.hostLow()
	if !low {
		return oom.Badness{}, avail, false
	}
	log := c.log.With(zap.Uint64("available", avail), zap.Uint64("reserve", c.hostReserve()))
	if minGrowth := c.h.MemTotal * hostLowMinGrowth / 100; !known || grew < minGrowth {
		log.Info("host memory low, but the partition is not growing: left to the kernel",
			zap.Uint64("partition_growth", grew), zap.Duration("within", c.growthWindow()), zap.Bool("known", known))
		return oom.Badness{}, avail, false
	}
	b, procs, ok := c.largest()
	if minFoot := c.h.MemTotal * hostLowMinFootprint / 100; !ok || b.Footprint < minFoot {
		log.Info("host memory low, but no partition process holds enough to be worth killing",
			zap.Bool("candidate", ok), zap.Uint64("largest_footprint", b.Footprint))
		return oom.Badness{}, avail, false
	}
	inside := make(map[int]bool, len(procs))
	for _, p := range procs {
		inside[p.PID] = true
	}
	other, found, err := oom.HighestElsewhere(c.h.ProcRoot, inside)
	if err != nil || (found && other.Score > b.Score) {
		log.Info("host memory low, but the kernel's OOM killer would pick a process outside the partition",
			zap.Int("pid", other.PID), zap.String("comm", other.Comm), zap.Int("oom_score", other.Score),
			zap.Int("partition_oom_score", b.Score), zap.Error(err))
		return oom.Badness{}, avail, false
	}
	return b, avail, true
}

// preemptHostLow handles a confirmed memory pressure window (host or ASIL):
// when the host is below its reserve because of the partition, it kills
// the partition's largest process and reports true (the throttle is then
// not stepped: it cannot help, see above).
func (c *Controller) preemptHostLow(now time.Time, m memReading) bool {
	c.mu.Lock()
	// One kill per pressure window: the kernel needs a moment to reap
	// the victim (process_mrelease speeds that up), and the next window
	// shows whether the host is still short.
	recent := !c.lastPreempt.IsZero() && now.Sub(c.lastPreempt) < c.cfg.Pressure.Window.Duration
	c.mu.Unlock()
	if recent {
		return true
	}
	b, avail, ok := c.hostLowPick(now, m)
	if !ok {
		return false
	}
	c.mu.Lock()
	c.lastPreempt = now
	c.mu.Unlock()
	reserve := c.hostReserve()
	d, victim := c.killVictim(b, "kill-offender", now.Format(time.RFC3339Nano))
	d["mem_available"] = strconv.FormatUint(avail, 10)
	d["host_reserve"] = strconv.FormatUint(reserve, 10)
	c.record(incident.HostMemoryLow, fmt.Sprintf("host memory low under pressure (%s available, reserve %s): %s",
		human(avail), human(reserve), victim), d)
	return true
}
