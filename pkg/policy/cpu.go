package policy

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"go.uber.org/zap"

	"github.com/containers/qmd/internal/config"
	"github.com/containers/qmd/internal/incident"
	"github.com/containers/qmd/pkg/cgroups"
	"github.com/containers/qmd/pkg/supervisor"
)

// The reaction to ASIL CPU pressure: a cpu.max quota on the partition while
// the ASIL units stall on CPU and the partition is a cause of it. Off by
// default (pressure.cpu_quota ""): the partition's slice has the lowest
// CPU weight (slice.go), which gives the ASIL units the CPU whenever they
// want it, and a bandwidth quota on top of it made the ASIL tails worse,
// not better. Measured in the e2e VM (make ffi-bench): with the quota held
// from the CPU hog into the IO hog's window, the probes' fsync p99 was 2.2
// times and the touch p99 1.55 times the plain setup's, and the CPU hog's
// window had 164-168 ms maxima against 26-35 ms. The likely mechanism:
// cpu.max throttles a task wherever it is, and a throttled writer can hold
// an ext4 journal handle or an inode lock that the ASIL fsync then waits
// for, up to the 100 ms period.

const cpuPeriod = 100000 // µs, cpu.max's default period

// staticCPUMax is the configured cpu.quota as cpu.max ("max" without one):
// what the partition has when no ASIL CPU pressure is being answered.
func (c *Controller) staticCPUMax() cgroups.CPUMax {
	m := cgroups.CPUMax{Quota: cgroups.Max, Period: cpuPeriod}
	if q := c.cfg.CPU.Quota; q != "" {
		if f, err := config.ParseCPUQuota(q); err == nil {
			m.Quota = uint64(f * cpuPeriod)
		}
	}
	return m
}

// pressureCPUMax is the quota under ASIL CPU pressure: pressure.cpu_quota
// (set: onCPUPressure returns before when the reaction is off), never
// above the configured static quota.
func (c *Controller) pressureCPUMax() cgroups.CPUMax {
	frac, err := parsePercent(c.cfg.Pressure.CPUQuota)
	if err != nil {
		return c.staticCPUMax() // validated at load: not reached
	}
	m := cgroups.CPUMax{Period: cpuPeriod, Quota: uint64(frac * cpuPeriod)}
	if st := c.staticCPUMax(); st.Quota < m.Quota {
		m.Quota = st.Quota
	}
	return m
}

// cpuSample is one reading of the partition's CPU time.
type cpuSample struct {
	at   time.Time
	used time.Duration
}

// sampleCPU reads the partition's CPU time and returns its use, in CPUs,
// since the previous reading (known false without one, or when the
// counter cannot be read or went backwards: a new cgroup). Readings are
// taken when the controller starts, on each resync tick and in each ASIL
// CPU pressure window.
func (c *Controller) sampleCPU(now time.Time) (cpus float64, known bool) {
	if c.cfg.Pressure.CPUQuota == "" {
		return 0, false // the reaction is off (the default): nothing to read for
	}
	used, err := c.cg.CPUUsage()
	c.mu.Lock()
	defer c.mu.Unlock()
	prev := c.cpuPrev
	if err != nil {
		c.log.Debug("partition CPU time unreadable", zap.Error(err))
		c.cpuPrev = cpuSample{}
		return 0, false
	}
	c.cpuPrev = cpuSample{at: now, used: used}
	el := now.Sub(prev.at)
	if prev.at.IsZero() || el <= 0 || used < prev.used {
		return 0, false
	}
	return float64(used-prev.used) / float64(el), true
}

// cpuPushing reports whether a partition using cpus CPUs is a cause of
// ASIL CPU pressure that the quota m can answer. Not when it uses less
// than m allows: the quota would not slow it at all and would only cap its
// next burst. In the e2e VM (software CPU) the ASIL probes stall on CPU
// among themselves even with the partition idle, and the old rule put the
// idle partition at 50 % of a CPU one second after its start and kept it
// there for the whole run. Once limited, a partition using at least half
// of its quota keeps the quota held; one that stopped lets the restore
// begin. An unknown use (no reading to compare with) counts as pushing.
func cpuPushing(cpus float64, known, limited bool, m cgroups.CPUMax) bool {
	if !known || m.Quota == cgroups.Max || m.Period == 0 {
		return true
	}
	q := float64(m.Quota) / float64(m.Period)
	if limited {
		return cpus >= q/2
	}
	return cpus >= q
}

func (c *Controller) onCPUPressure(now time.Time) {
	if c.cfg.Pressure.CPUQuota == "" {
		return // the reaction is off (the default)
	}
	cpus, known := c.sampleCPU(now)
	m, st := c.pressureCPUMax(), c.staticCPUMax()
	if m.Quota >= st.Quota {
		c.log.Debug("ASIL CPU pressure: the configured cpu.quota is already as low as the pressure quota",
			zap.String("cpu_max", st.String()))
		return
	}
	c.mu.Lock()
	already := c.cpuLimit
	if !cpuPushing(cpus, known, already, m) {
		c.mu.Unlock()
		c.log.Debug("ASIL CPU pressure: the partition uses less than the pressure quota, not a cause",
			zap.Float64("partition_cpus", cpus), zap.String("cpu_max", m.String()), zap.Bool("limited", already))
		return
	}
	c.cpuLimit = true
	c.cpuAt = now
	c.mu.Unlock()
	if already {
		return
	}
	if !c.h.DryRun {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := c.setter.SetCPUMax(ctx, m); err != nil {
			c.log.Warn("cpu quota failed", zap.Error(err))
			c.mu.Lock()
			c.cpuLimit = false
			c.mu.Unlock()
			return
		}
		c.hooks.Condition(supervisor.CPULimited, true, "ASIL CPU pressure")
	}
	attrs := map[string]string{"cpu_max": m.String(), "configured_cpu_max": st.String(), "at": now.Format(time.RFC3339Nano)}
	msg := fmt.Sprintf("ASIL CPU pressure: partition limited to %s of a CPU", cpuPercent(m))
	if known {
		attrs["partition_cpus"] = strconv.FormatFloat(cpus, 'f', 2, 64)
		msg += fmt.Sprintf(" (it used %.2f CPUs)", cpus)
	}
	c.record(incident.CPUQuota, msg, attrs)
}

func cpuPercent(m cgroups.CPUMax) string {
	if m.Quota == cgroups.Max || m.Period == 0 {
		return "100% per CPU (no quota)"
	}
	return strconv.FormatUint(m.Quota*100/m.Period, 10) + "%"
}
