// Package protect is qmd's host-level protection of safety-relevant (ASIL)
// processes: one Protector for the whole host, independent of any
// partition's state. For every protected unit or cgroup it
//
//   - resolves the unit's cgroup through systemd (its ControlGroup
//     property: any slice), and follows the unit across restarts;
//   - keeps the unit's processes at their oom_score_adj (audit and repair);
//   - gives the unit memory protection (MemoryMin=/MemoryLow=; cgroup v2);
//   - watches its memory, cpu and io "some" pressure with PSI triggers and
//     publishes every confirmed firing as a Signal to subscribers (the
//     partitions' resource policies, which throttle their partition).
//
// Host memory pressure (/proc/pressure/memory) is watched the same way
// when asked for. Every trigger wake-up is confirmed against the pressure
// file's totals (cgroups.PSIConfirmer) before it becomes a Signal.
//
// One goroutine (Run) owns all state; a trigger whose cgroup went away
// (POLLERR: the unit restarted) ends, is reported once, and is re-armed on
// the unit's new cgroup with backoff: an ended trigger can never make the
// loop spin.
package protect

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/containers/qmd/pkg/cgroups"
)

// Kind is the resource a pressure signal is about.
type Kind int

// Pressure kinds.
const (
	Memory Kind = iota
	CPU
	IO
)

func (k Kind) String() string {
	switch k {
	case Memory:
		return "memory"
	case CPU:
		return "cpu"
	case IO:
		return "io"
	}
	return fmt.Sprintf("kind(%d)", int(k))
}

// file is the pressure file of the kind in a cgroup directory.
func (k Kind) file() string { return k.String() + ".pressure" }

// HostSource is the Source of host-wide pressure signals.
const HostSource = "host"

// Signal is one confirmed pressure window.
type Signal struct {
	Kind   Kind
	Source string        // the protected unit (or cgroup), or HostSource
	At     time.Time     // the firing
	Stall  time.Duration // stall growth over the window that confirmed it
	// Dir is the protected cgroup's directory in the cgroup2 mount (its
	// io.stat names the devices it uses); "" for the host.
	Dir string
}

// Entry is one protected unit or cgroup (exactly one of Unit and Cgroup).
type Entry struct {
	Unit          string // systemd unit, e.g. "brakes.service"
	Cgroup        string // or a cgroup path, e.g. "/asil.slice/brakes.service"
	OOMScoreAdj   int    // -1000..-1; 0 leaves the processes alone
	WatchPressure bool   // memory, cpu and io "some" pressure triggers
	// Memory protection in bytes (cgroup v2): MemoryMin=/MemoryLow= on
	// the unit, or memory.min/memory.low on a cgroup entry.
	MemoryMin, MemoryLow       uint64
	MemoryMinSet, MemoryLowSet bool
}

// Name is how the entry is called in logs, signals and the status.
func (e Entry) Name() string {
	if e.Unit != "" {
		return e.Unit
	}
	return e.Cgroup
}

// Config is what Reconfigure changes live.
type Config struct {
	Entries []Entry
	// HostMemory watches /proc/pressure/memory (Options.HostPressure).
	HostMemory bool
	// Window and the thresholds of the PSI triggers: a trigger fires when
	// the unit's tasks were stalled at least the threshold within the
	// window.
	Window                                     time.Duration
	MemoryThreshold, CPUThreshold, IOThreshold time.Duration
	// Resync is the slow tick: re-resolve units, audit oom_score_adj,
	// read the pressure totals (default 30 s).
	Resync time.Duration
	// DryRun reports what would be changed and changes nothing.
	DryRun bool
}

// Validate checks the configuration; errors name the entry.
func (c Config) Validate() error {
	var errs []error
	seen := map[string]int{}
	for i, e := range c.Entries {
		switch {
		case e.Unit == "" && e.Cgroup == "":
			errs = append(errs, fmt.Errorf("protect[%d]: set unit or cgroup", i))
			continue
		case e.Unit != "" && e.Cgroup != "":
			errs = append(errs, fmt.Errorf("protect[%d]: set only one of unit and cgroup", i))
			continue
		case e.Cgroup != "" && (!strings.HasPrefix(e.Cgroup, "/") || strings.Contains(e.Cgroup, "..") || path.Clean(e.Cgroup) == "/"):
			errs = append(errs, fmt.Errorf("protect[%d].cgroup: %q must be an absolute cgroup path below the root, without \"..\" elements", i, e.Cgroup))
		case e.Unit != "" && strings.ContainsAny(e.Unit, "/ \x00"):
			errs = append(errs, fmt.Errorf("protect[%d].unit: %q is not a unit name", i, e.Unit))
		}
		if e.OOMScoreAdj < -1000 || e.OOMScoreAdj > 0 {
			errs = append(errs, fmt.Errorf("protect[%d].oom_score_adj: %d outside -1000..0 (0: not audited)", i, e.OOMScoreAdj))
		}
		if j, dup := seen[e.Name()]; dup {
			errs = append(errs, fmt.Errorf("protect[%d]: %s is already protect[%d]", i, e.Name(), j))
		}
		seen[e.Name()] = i
	}
	if c.Window < cgroups.MinPSIWindow || c.Window > cgroups.MaxPSIWindow {
		errs = append(errs, fmt.Errorf("pressure window %v outside %v..%v", c.Window, cgroups.MinPSIWindow, cgroups.MaxPSIWindow))
	}
	for _, th := range []struct {
		n string
		d time.Duration
	}{{"memory", c.MemoryThreshold}, {"cpu", c.CPUThreshold}, {"io", c.IOThreshold}} {
		if th.d <= 0 || th.d > c.Window {
			errs = append(errs, fmt.Errorf("%s pressure threshold %v must be in (0, window %v]", th.n, th.d, c.Window))
		}
	}
	return errors.Join(errs...)
}

// Source is a registered PSI trigger: *cgroups.PSITrigger, or a fake in
// tests. C is closed when the trigger ended (Err says why).
type Source = cgroups.PSISource

// Incident is something the operator must be able to find later (the
// daemon records it in the incident store).
type Incident struct {
	Type    string // "oom-score-repair" or "policy-limit"
	Summary string
	Details map[string]string
}

// Options are the protector's fixed surroundings.
type Options struct {
	// Systemd resolves units and sets their properties; nil without
	// systemd (units cannot be resolved; cgroup entries still work).
	Systemd Systemd
	// CgroupRoot is the host's cgroup mount (default /sys/fs/cgroup).
	CgroupRoot string
	// PSIRoot is the cgroup2 mount with the per-cgroup pressure files:
	// the root on a pure v2 host, its "unified" mount on a hybrid one, ""
	// on pure v1 (no per-cgroup PSI). Default: found below CgroupRoot.
	PSIRoot string
	// MemoryV2 says the memory controller is on cgroup v2 (memory.min and
	// memory.low exist). Default: CgroupRoot is a v2 hierarchy.
	MemoryV2 *bool
	// SelfCgroup is qmd's own cgroup on the cgroup2 mount ("" unknown):
	// its slices are raised with the protected units' so that its own
	// MemoryMin= takes effect (coverAncestors).
	SelfCgroup string
	// HostPressure is the host memory pressure file (default
	// /proc/pressure/memory).
	HostPressure string
	ProcRoot     string // default /proc
	Log          *zap.Logger
	// Incident receives incidents (optional).
	Incident func(Incident)

	// Seams for tests; defaults are the real ones.
	OpenTrigger func(cgroups.PSITriggerSpec) (Source, error)
	ReadPSI     func(path string) (cgroups.PSI, error)
	// RearmMin is the first re-arm delay of an ended trigger (default
	// 1 s), doubling up to Resync.
	RearmMin time.Duration
}

// Stats are counters for tests and diagnostics.
type Stats struct {
	Loops    uint64 // iterations of the Run loop (wake-ups of the protector)
	Wakeups  uint64 // trigger firings handled
	Spurious uint64 // of which the totals did not confirm
	Signals  uint64 // signals published
	Dropped  uint64 // signals a full subscriber did not get
	Arms     uint64 // trigger registrations
	Resolves uint64 // unit cgroup look-ups through systemd
}

// UnitStatus is one protected entry as the protector sees it.
type UnitStatus struct {
	Name   string
	Cgroup string // resolved cgroup path, "" when not running/unresolved
	State  string // "protected", "watching", "not-running", "unresolved: ...", ...
}

// Protector protects the host's ASIL units. Make it with New, run it with
// Run; Subscribe, Reconfigure, Status and Stats may be called from any
// goroutine.
type Protector struct {
	o   Options
	log *zap.Logger

	cfg    Config // owned by Run after start
	reconf chan reconfReq
	set    *cgroups.PSISet // the PSI triggers; made by Run

	units []*unit
	host  *cgroups.PSIWatch
	au    auditor

	noSystemdReported bool
	noPSIReported     bool
	noMemReported     bool
	fallbackWarned    bool

	subMu sync.Mutex
	subs  map[int]chan Signal // by subscription
	next  int

	stMu   sync.Mutex
	status []UnitStatus

	loops, wakeups, spurious, signals, dropped, arms, resolves atomic.Uint64
}

type reconfReq struct {
	cfg  Config
	done chan struct{}
}

// New checks the configuration and fills the defaults of the options.
func New(o Options, cfg Config) (*Protector, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("protect: %w", err)
	}
	if o.CgroupRoot == "" {
		o.CgroupRoot = cgroups.DefaultRoot
	}
	if o.PSIRoot == "" || o.MemoryV2 == nil {
		// One look at the hierarchy for both defaults.
		v2 := isV2(o.CgroupRoot)
		if o.PSIRoot == "" {
			o.PSIRoot = psiRoot(o.CgroupRoot, v2)
		}
		if o.MemoryV2 == nil {
			o.MemoryV2 = &v2
		}
	}
	if o.HostPressure == "" {
		o.HostPressure = "/proc/pressure/memory"
	}
	if o.ProcRoot == "" {
		o.ProcRoot = cgroups.DefaultProcRoot
	}
	if o.Log == nil {
		o.Log = zap.NewNop()
	}
	if o.OpenTrigger == nil {
		o.OpenTrigger = cgroups.OpenPSISource
	}
	if o.ReadPSI == nil {
		o.ReadPSI = cgroups.ReadPSI
	}
	if o.RearmMin <= 0 {
		o.RearmMin = time.Second
	}
	p := &Protector{o: o, log: o.Log, cfg: cfg, reconf: make(chan reconfReq), subs: map[int]chan Signal{}}
	p.au = newAuditor(p)
	return p, nil
}

// FindPSIRoot is the cgroup2 mount holding per-cgroup pressure files:
// root itself on a pure v2 host, root/unified on a hybrid one, "" when
// there is none (pure v1).
func FindPSIRoot(root string) string { return psiRoot(root, isV2(root)) }

// isV2 reports whether the hierarchy mounted at root is cgroup v2.
func isV2(root string) bool {
	v, err := cgroups.Detect(root)
	return err == nil && v == cgroups.V2
}

// psiRoot is FindPSIRoot for a root whose version (v2) is known.
func psiRoot(root string, v2 bool) string {
	if v2 {
		return root
	}
	u := filepath.Join(root, "unified")
	if _, err := os.Stat(filepath.Join(u, "cgroup.procs")); err == nil {
		return u
	}
	return ""
}

func (p *Protector) resyncEvery() time.Duration {
	if p.cfg.Resync > 0 {
		return p.cfg.Resync
	}
	return 30 * time.Second
}

// Stats returns the counters.
func (p *Protector) Stats() Stats {
	return Stats{Loops: p.loops.Load(), Wakeups: p.wakeups.Load(), Spurious: p.spurious.Load(),
		Signals: p.signals.Load(), Dropped: p.dropped.Load(), Arms: p.arms.Load(), Resolves: p.resolves.Load()}
}

// Status is every protected entry's state (as of the last change).
func (p *Protector) Status() []UnitStatus {
	p.stMu.Lock()
	defer p.stMu.Unlock()
	return append([]UnitStatus(nil), p.status...)
}

// Reconfigure applies a new configuration to the running protector:
// entries added are protected, removed ones are left (their triggers
// closed, nothing else touched), changed ones re-done. It returns when the
// loop applied it, or ctx ended.
func (p *Protector) Reconfigure(ctx context.Context, cfg Config) error {
	if err := cfg.Validate(); err != nil {
		return fmt.Errorf("protect: %w", err)
	}
	req := reconfReq{cfg: cfg, done: make(chan struct{})}
	select {
	case p.reconf <- req:
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case <-req.done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
