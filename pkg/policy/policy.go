// Package policy is the resource policy of a running partition: it applies
// the memory, CPU and PIDs limits to the partition's cgroup, enforces the
// oom_score_adj policy (pkg/oom), and reacts to misbehaviour reported by
// the kernel (pkg/cgroups notifications and PSI triggers):
//
//	OOM kill inside the partition  -> incident naming the victim, NOOMKills
//	host / ASIL memory pressure    -> memory.high lowered stepwise, never below the
//	                                  partition's working set, restored with hysteresis
//	partition stalled (full PSI)   -> under qmd's throttle: memory.high one step up;
//	                                  else the offender (largest oom_score) killed;
//	                                  restart only when that does not help
//	ASIL CPU pressure              -> cpu.max quota on the partition, back to the
//	                                  configured cpu.quota later
//	pids.max reached (fork bomb)   -> incident; restart after N in a window
//
// Host and ASIL pressure come from the host-level protector (pkg/protect)
// as confirmed signals (Host.Pressure); the partition's own stall trigger
// is here. Every PSI trigger wake-up is confirmed against the pressure
// file's totals before anything is done; a trigger whose cgroup went away
// stops firing and is re-armed with backoff.
// The supervisor makes one Controller per start of the partition's init
// (supervisor.ResourceFactory) and cancels it when the init is gone.
package policy

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	sddbus "github.com/coreos/go-systemd/v22/dbus"
	"go.uber.org/zap"

	"github.com/containers/qmd/internal/apierr"
	"github.com/containers/qmd/internal/config"
	"github.com/containers/qmd/internal/hostinfo"
	"github.com/containers/qmd/internal/incident"
	"github.com/containers/qmd/pkg/cgroups"
	"github.com/containers/qmd/pkg/oom"
	"github.com/containers/qmd/pkg/protect"
	"github.com/containers/qmd/pkg/supervisor"
)

// Host is what every partition's controller shares: the cgroup hierarchy,
// the systemd connection (when systemd manages the host) and host facts.
type Host struct {
	Hier     *cgroups.Hierarchy
	ProcRoot string
	Systemd  cgroups.UnitPropertySetter // nil without systemd
	Booted   bool                       // systemd is PID 1
	MemTotal uint64
	PidMax   uint64
	// MemAvailable reads the host's available memory (hostinfo); nil:
	// unknown, the host-low rung stays off.
	MemAvailable func() (uint64, error)
	DryRun       bool
	Resync       time.Duration
	Log          *zap.Logger
	// Pressure delivers the host-level protector's confirmed host and
	// ASIL pressure signals (pkg/protect); nil: none (no [[protect]] and
	// no host_memory, or tests).
	Pressure PressureSignals

	// tight is, per slice, the partitions that hold it out of the idle
	// CPU class (cpuclass.go): partitions may share a slice.
	classMu sync.Mutex
	tight   map[string]map[string]bool
}

// PressureSignals is the part of the host-level protector
// (*protect.Protector) a partition's policy uses.
type PressureSignals interface {
	Subscribe() (<-chan protect.Signal, func())
}

// Factory builds the supervisor's ResourceFactory on the real host. When
// the host offers no usable cgroup hierarchy it logs why and returns nil
// (qmd then supervises without a resource policy).
// prot is the host-level protector whose signals the partitions react
// to (may be nil).
func Factory(cfg *config.Config, log *zap.Logger, prot *protect.Protector) supervisor.ResourceFactory {
	hier, err := cgroups.NewHierarchy(cgroups.DefaultRoot)
	if err != nil {
		log.Error("no cgroup hierarchy; running without resource policy", zap.Error(err))
		return nil
	}
	facts := hostinfo.Read()
	h := &Host{
		Hier: hier, ProcRoot: "/proc", Booted: cgroups.SystemdBooted("/run"),
		MemTotal: facts.MemTotal, PidMax: facts.PidMax, MemAvailable: hostinfo.MemAvailable,
		DryRun: cfg.Policy.DryRun, Resync: cfg.Policy.Resync.Duration,
		Log: log,
	}
	if prot != nil { // never a typed nil in the interface
		h.Pressure = prot
	}
	if h.Booted {
		conn, err := sddbus.NewSystemConnectionContext(context.Background())
		if err != nil {
			log.Warn("systemd's D-Bus API not reachable; limits are written to cgroupfs directly", zap.Error(err))
		} else {
			h.Systemd = conn
		}
	}
	log.Info("resource policy", zap.Int("cgroup_version", int(hier.Version)), zap.Bool("systemd", h.Systemd != nil),
		zap.Bool("dry_run", h.DryRun))
	return h.New
}

// Controller is one running partition's resource policy.
type Controller struct {
	h      *Host
	cfg    config.Partition
	pid    int
	cg     *cgroups.Cgroup
	setter cgroups.LimitSetter
	hooks  supervisor.Hooks
	log    *zap.Logger
	audit  *oom.Auditor

	mu          sync.Mutex
	thr         *throttle
	cpuLimit    bool
	cpuAt       time.Time // the last ASIL CPU pressure window the partition was a cause of (cpu.go)
	cpuPrev     cpuSample // the partition's CPU time at the last reading (cpu.go)
	forks       []time.Time
	stalls      []time.Time // consecutive full-pressure windows
	lastStall   time.Time   // the last full-pressure window
	kills       []time.Time // offenders killed during the current stall
	lastPreempt time.Time   // the last host-low kill (hostlow.go)
	memSamples  []memSample // the partition's working set over growthWindow (hostlow.go)
	selfFull    sample      // the partition's own full memory stall total at the last throttle step
	io          ioState     // the IO policy and its reaction to ASIL IO pressure (io.go)
	cls         cpuClass    // the slice's idle CPU class and when it is left (cpuclass.go)

	wakeups  atomic.Uint64 // PSI trigger wake-ups (firings) handled
	spurious atomic.Uint64 // of which the pressure totals did not confirm

	// Seams for tests; New sets the real ones.
	openTrigger func(cgroups.PSITriggerSpec) (psiSource, error)
	readPSI     func(path string) (cgroups.PSI, error)
	kill        func(pid int, cgroup string) error // SIGKILL a partition process
	rearmMin    time.Duration
}

var _ supervisor.Resources = (*Controller)(nil)

// New finds the partition's cgroup from its init and applies the limits.
func (h *Host) New(p *config.Partition, init supervisor.Init, hooks supervisor.Hooks) (supervisor.Resources, error) {
	pid := init.PID
	cg, err := h.Hier.ForPID(h.ProcRoot, pid)
	if err != nil {
		return nil, fmt.Errorf("cgroup of partition %s (pid %d): %w", p.Name, pid, err)
	}
	// The partition is the container's own cgroup, named by Podman after
	// its full ID: libpod-<id> (cgroupfs manager) or libpod-<id>.scope
	// (systemd). The init may sit deeper: with systemd mode on cgroup v2
	// Podman runs it in <scope>/container, and the partition's own systemd
	// then moves itself to <scope>/container/init.scope. Limits, watches
	// and the oom_score_adj policy apply to the whole container cgroup.
	// Anything else (a pid reused by a host process after the init died) is
	// refused: the policy writes to every process of the cgroup.
	root, ok := containerCgroup(cg.Path(), init.ContainerID)
	if !ok {
		return nil, fmt.Errorf("partition %s: pid %d is in cgroup %q, not in container %.12s's: refusing to apply the policy there",
			p.Name, pid, cg.Path(), init.ContainerID)
	}
	if root != cg.Path() {
		if cg, err = h.Hier.Open(root); err != nil {
			return nil, fmt.Errorf("cgroup of partition %s: %w", p.Name, err)
		}
	}
	c := &Controller{
		h: h, cfg: *p, pid: pid, cg: cg, hooks: hooks,
		setter:      cgroups.ChooseSetter(cg, h.Systemd, h.Booted),
		log:         h.Log.With(zap.String("partition", p.Name)),
		openTrigger: openPSITrigger, readPSI: cgroups.ReadPSI, rearmMin: defaultRearmMin,
	}
	c.kill = c.killProcess
	step, floor := p.Pressure.Step.Resolve(h.MemTotal), p.Pressure.Floor.Resolve(h.MemTotal)
	c.thr = newThrottle(c.configuredHigh(), step, floor, p.Pressure.RestoreAfter.Duration)
	c.thr.minInterval = p.Pressure.Window.Duration
	pol := oom.DefaultPolicy()
	// The protected (ASIL) processes are audited by the host-level
	// protector (pkg/protect), once for the host and also while no
	// partition runs: this auditor keeps only the partition's scores.
	pol.PartitionScore, pol.NestedScore = p.OOMScoreAdj, p.NestedOOMScoreAdj
	c.audit = &oom.Auditor{
		Policy: pol, ProcRoot: h.ProcRoot, Lister: h.Hier, Sink: hooks.Sink, DryRun: h.DryRun,
		Partition: func() (oom.Target, bool) {
			return oom.Target{Name: p.Name, Cgroup: cg.Path(), InitPID: pid}, true
		},
	}
	c.initIO("/sys")
	c.applyLimits()
	c.sampleMem(time.Now())
	c.sampleCPU(time.Now())
	return c, nil
}

// containerCgroup cuts path after the element that names the container
// (libpod-<id> or libpod-<id>.scope).
func containerCgroup(path, id string) (string, bool) {
	if id == "" {
		return "", false
	}
	els := strings.Split(path, "/")
	for i, el := range els {
		if el == "libpod-"+id || el == "libpod-"+id+".scope" {
			return strings.Join(els[:i+1], "/"), true
		}
	}
	return "", false
}

func (c *Controller) configuredHigh() uint64 {
	if !c.cfg.Memory.High.Set {
		return infinity
	}
	return c.cfg.Memory.High.Resolve(c.h.MemTotal)
}

func (c *Controller) record(t incident.Type, summary string, details map[string]string) {
	if c.h.DryRun {
		if details == nil {
			details = map[string]string{}
		}
		details["dry_run"] = "true"
		summary = "dry run: " + summary
	}
	if c.hooks.Sink != nil {
		c.hooks.Sink.Record(incident.Incident{Partition: c.cfg.Name, Type: t, Summary: summary, Details: details})
	}
}

// applyLimits writes the configured limits. What the host cannot do is
// reported once (incident policy-limit) and the rest is applied.
func (c *Controller) applyLimits() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var unsupported []string
	try := func(what string, err error) {
		switch {
		case err == nil:
		case errors.Is(err, cgroups.ErrUnsupported):
			unsupported = append(unsupported, what)
		default:
			c.log.Warn("limit not applied", zap.String("limit", what), zap.Error(err))
		}
	}
	if c.h.DryRun {
		c.log.Info("dry run: limits not applied")
		return
	}
	m := c.cfg.Memory
	if m.Max.Set {
		try("memory.max", c.setter.SetMemoryMax(ctx, m.Max.Resolve(c.h.MemTotal)))
	}
	if m.High.Set && (!m.High.IsInfinity() || c.cg.Version() == cgroups.V2) {
		try("memory.high", c.setter.SetMemoryHigh(ctx, m.High.Resolve(c.h.MemTotal)))
	}
	if m.SwapMax.Set && !(m.Max.IsInfinity() && c.cg.Version() == cgroups.V1) {
		try("memory.swap.max", c.setter.SetMemorySwapMax(ctx, m.SwapMax.Resolve(c.h.MemTotal)))
	}
	if w := c.cfg.CPU.Weight; w == "idle" {
		// The scope: the lowest weight, never the kernel's idle class
		// (its only sibling is conmon's scope; the class that counts
		// against the ASIL units is the slice's, see cpuclass.go). Once
		// a killed 512 MiB hog in an idle cgroup was not gone after 10 s
		// on the build host under stress-ng and the parallel test suite
		// (TestRealStallKillsTheHogNotTheInit; not reproduced alone).
		try("cpu.weight", c.setter.SetCPUWeight(ctx, 1))
	} else if n, err := strconv.ParseUint(w, 10, 64); err == nil {
		try("cpu.weight", c.setter.SetCPUWeight(ctx, n))
	}
	if c.cfg.CPU.Quota != "" {
		try("cpu.max", c.setter.SetCPUMax(ctx, c.staticCPUMax()))
	}
	c.applySlice(ctx, try)
	if count, err := c.cfg.Pids.Limit(c.h.PidMax); err == nil && count > 0 {
		try("pids.max", c.setter.SetPidsMax(ctx, count))
	}
	c.applyIO(ctx, try)
	if len(unsupported) > 0 {
		c.log.Warn("limits without an equivalent on this cgroup version", zap.Strings("limits", unsupported),
			zap.Int("cgroup_version", int(c.cg.Version())))
		c.record(incident.PolicyLimit, fmt.Sprintf("cgroup v%d has no %v; applied what exists", c.cg.Version(), unsupported),
			map[string]string{"unsupported": fmt.Sprint(unsupported), "via": c.setter.Via()})
	}
}

// Usage reads memory.current/high/max.
func (c *Controller) Usage() supervisor.Usage {
	u := supervisor.Usage{CgroupPath: c.cg.Path()}
	u.MemoryCurrent, _ = c.cg.MemoryCurrent()
	u.MemoryMax, _ = c.cg.MemoryMax()
	if v, err := c.cg.MemoryHigh(); err == nil {
		u.MemoryHigh = v
	} else {
		u.MemoryHigh = infinity
	}
	return u
}

// SetMemoryHigh sets the operator's memory.high: the new configured value
// and the ceiling the pressure throttle works under. While throttled below
// it, the throttle keeps its lower limit and restores up to v, never above;
// an operator value below the throttle's limit takes effect at once.
func (c *Controller) SetMemoryHigh(v uint64) error {
	if max, err := c.cg.MemoryMax(); err == nil && v != infinity && v > max {
		return apierr.InvalidArgs("memory.high %d is above memory.max %d", v, max)
	}
	if c.cg.Version() == cgroups.V1 {
		return fmt.Errorf("memory.high is not available on cgroup v1 (this host): %w", cgroups.ErrUnsupported)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	// Hold the lock across the write: a throttle step in between must not
	// write a value computed from the old ceiling after ours.
	c.mu.Lock()
	defer c.mu.Unlock()
	prev := c.thr.configured
	c.thr.reconfigure(v)
	eff := c.thr.current
	if err := c.setter.SetMemoryHigh(ctx, eff); err != nil {
		c.thr.reconfigure(prev)
		return err
	}
	c.cfg.Memory.High = config.Size{Bytes: v, Set: true}
	c.hooks.Condition(supervisor.Throttled, c.thr.throttled(), "memory.high set by the operator")
	return nil
}

// SetMemoryMax sets memory.max.
func (c *Controller) SetMemoryMax(v uint64) error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := c.setter.SetMemoryMax(ctx, v); err != nil {
		return err
	}
	c.mu.Lock()
	c.cfg.Memory.Max = config.Size{Bytes: v, Set: true}
	c.mu.Unlock()
	return nil
}

// SetOOMScoreAdj changes the partition's score and audits at once.
func (c *Controller) SetOOMScoreAdj(v int) error {
	if err := oom.ValidateScore(v); err != nil {
		return apierr.InvalidArgs("%v", err)
	}
	if err := c.audit.SetScores(v, c.cfg.NestedOOMScoreAdj); err != nil {
		return apierr.InvalidArgs("%v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err := c.audit.Audit(ctx)
	return err
}

// Freeze freezes the cgroup and waits until the kernel confirms.
func (c *Controller) Freeze(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	return c.cg.Freeze(ctx)
}

// Kill kills every process of the partition (cgroup.kill on v2; SIGKILL to
// each on v1) and thaws it: on cgroup v1 a frozen task only dies once
// thawed, and a thawed cgroup is what Podman expects to clean up.
func (c *Controller) Kill(ctx context.Context) error {
	kerr := c.cg.Kill()
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := c.cg.Thaw(ctx); err != nil && !errors.Is(err, cgroups.ErrGone) {
		return errors.Join(kerr, fmt.Errorf("thaw after kill: %w", err))
	}
	return kerr
}

// Thaw thaws the cgroup.
func (c *Controller) Thaw(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	return c.cg.Thaw(ctx)
}
