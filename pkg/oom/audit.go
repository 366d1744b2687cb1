package oom

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"sort"
	"strconv"
	"sync"
	"time"

	"github.com/containers/qmd/internal/incident"
	"github.com/containers/qmd/pkg/cgroups"
)

// Lister lists the processes of a cgroup and its descendants.
// *cgroups.Hierarchy implements it.
type Lister interface {
	Processes(path string) ([]cgroups.Process, error)
}

var _ Lister = (*cgroups.Hierarchy)(nil)

// Target is the running partition as the supervisor knows it.
type Target struct {
	Name    string // partition name for incidents
	Cgroup  string // its cgroup path (v1: the memory controller's)
	InitPID int    // its init; 0 if unknown
}

// Repair is one oom_score_adj change (or a failed attempt: Err set).
type Repair struct {
	PID       int
	Comm      string
	Cgroup    string
	Role      Role
	Container string // nested container, when known
	Old, New  int
	Err       error
}

// Auditor checks and repairs oom_score_adj values. It is safe for
// concurrent use; audits are serialised.
type Auditor struct {
	Policy   Policy
	ProcRoot string // "" means /proc
	Lister   Lister
	// Partition returns the running partition; ok false when it is not
	// running (then only protected processes are audited).
	Partition func() (t Target, ok bool)
	Sink      incident.Sink // may be nil
	// DryRun reports what would be repaired and writes nothing.
	DryRun bool
	// Self is qmd's PID (default os.Getpid()): a partition cgroup that
	// holds it is refused (ErrUnsafeTarget).
	Self int

	mu   sync.Mutex
	kick chan struct{}
	once sync.Once
}

func (a *Auditor) kickCh() chan struct{} {
	a.once.Do(func() { a.kick = make(chan struct{}, 1) })
	return a.kick
}

// Notify asks a running Run loop for an audit (after its settle delay).
// It never blocks; notifications coalesce.
func (a *Auditor) Notify() {
	select {
	case a.kickCh() <- struct{}{}:
	default:
	}
}

// TriggersAudit says whether a cgroup event may bring processes whose
// oom_score_adj needs checking: a new child cgroup (a nested container or
// a unit of the partition's systemd), or the partition becoming populated
// or thawed.
func TriggersAudit(ev cgroups.Event) bool {
	switch ev.Kind {
	case cgroups.EventChildCreated, cgroups.EventPopulated, cgroups.EventThawed:
		return true
	}
	return false
}

// Audit walks the protected cgroups and the partition, repairs every
// value that drifted from the policy and records each repair as an
// incident.OOMScoreRepair. It returns all repairs, failed ones with Err
// set; the error joins the failures (writes refused, e.g. lowering without
// CAP_SYS_RESOURCE; listing errors). Processes that exit during the audit
// are skipped silently.
func (a *Auditor) Audit(ctx context.Context) ([]Repair, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if err := a.Policy.Validate(); err != nil {
		return nil, fmt.Errorf("oom policy: %w", err)
	}
	var (
		repairs []Repair
		errs    []error
	)
	target, running := Target{}, false
	if a.Partition != nil {
		target, running = a.Partition()
		if running {
			target.Cgroup = cleanCgroup(target.Cgroup)
		}
	}
	protectedPIDs := map[int]bool{}
	for _, pr := range a.Policy.Protected {
		if err := ctx.Err(); err != nil {
			return repairs, err
		}
		p := pr.Path()
		if running {
			if _, inside := under(p, target.Cgroup); inside {
				errs = append(errs, fmt.Errorf("protected %s (%s) is inside partition %s: ignored", pr.label(), p, target.Cgroup))
				continue
			}
			if _, contains := under(target.Cgroup, p); contains {
				errs = append(errs, fmt.Errorf("protected %s (%s) contains partition %s: ignored", pr.label(), p, target.Cgroup))
				continue
			}
		}
		procs, err := a.Lister.Processes(p)
		if err != nil {
			if errors.Is(err, cgroups.ErrGone) || errors.Is(err, fs.ErrNotExist) {
				continue // the unit is not running
			}
			errs = append(errs, fmt.Errorf("list protected %s: %w", pr.label(), err))
			continue
		}
		for _, pc := range procs {
			protectedPIDs[pc.PID] = true
			r, ok := a.check(pc, RoleProtected, "", pr.Score)
			if ok {
				repairs = append(repairs, r)
			}
		}
	}
	if running {
		procs, err := a.Lister.Processes(target.Cgroup)
		if err != nil && !errors.Is(err, cgroups.ErrGone) {
			errs = append(errs, fmt.Errorf("list partition %s: %w", target.Cgroup, err))
		}
		if err := a.sane(target, procs); err != nil {
			errs = append(errs, err)
			procs = nil
		}
		for _, pc := range procs {
			if err := ctx.Err(); err != nil {
				return repairs, err
			}
			if protectedPIDs[pc.PID] {
				continue
			}
			role, container := a.Policy.Classify(target.Cgroup, pc.PID, target.InitPID, pc.Path)
			if role == RoleOther {
				continue
			}
			r, ok := a.check(pc, role, container, 0)
			if ok {
				repairs = append(repairs, r)
			}
		}
	}
	sortRepairs(repairs)
	for _, r := range repairs {
		if r.Err != nil {
			errs = append(errs, r.Err)
			continue
		}
		a.record(target.Name, r)
	}
	return repairs, errors.Join(errs...)
}

// ErrUnsafeTarget is wrapped when the partition's cgroup cannot be the
// partition: the root cgroup, or a cgroup that holds qmd itself. Auditing
// it would raise every process on the host (qmd and ASIL included) to the
// partition's value, so the partition part of the audit is refused.
var ErrUnsafeTarget = errors.New("unsafe partition cgroup")

func (a *Auditor) sane(t Target, procs []cgroups.Process) error {
	if t.Cgroup == "/" {
		return fmt.Errorf("partition %s: cgroup is the root cgroup: %w", t.Name, ErrUnsafeTarget)
	}
	self := a.Self
	if self == 0 {
		self = os.Getpid()
	}
	for _, pc := range procs {
		if pc.PID == self {
			return fmt.Errorf("partition %s: cgroup %s holds qmd itself (pid %d, in %s): %w", t.Name, t.Cgroup, self, pc.Path, ErrUnsafeTarget)
		}
	}
	return nil
}

// check reads one process's value through its /proc directory and repairs
// it. ok is false when nothing was to be done or the process is gone.
func (a *Auditor) check(pc cgroups.Process, role Role, container string, protectedScore int) (Repair, bool) {
	p, err := openProc(a.ProcRoot, pc.PID)
	if err != nil {
		if errors.Is(err, ErrProcessGone) {
			return Repair{}, false
		}
		return Repair{PID: pc.PID, Cgroup: pc.Path, Role: role, Err: err}, true
	}
	defer p.close()
	cur, err := p.scoreAdj()
	if err != nil {
		if errors.Is(err, ErrProcessGone) {
			return Repair{}, false
		}
		return Repair{PID: pc.PID, Cgroup: pc.Path, Role: role, Err: err}, true
	}
	want, repair := a.Policy.Target(role, cur, protectedScore)
	if !repair {
		return Repair{}, false
	}
	// The PID may have been reused since the listing: only touch the
	// process if it is still in the cgroup it was listed in.
	if in, err := p.inCgroup(pc.Path); err != nil || !in {
		return Repair{}, false
	}
	r := Repair{PID: pc.PID, Comm: p.comm(), Cgroup: pc.Path, Role: role, Container: container, Old: cur, New: want}
	if a.DryRun {
		return r, true
	}
	if err := p.setScoreAdj(cur, want); err != nil {
		if errors.Is(err, ErrProcessGone) {
			return Repair{}, false
		}
		r.Err = err
	}
	return r, true
}

func (a *Auditor) record(partition string, r Repair) {
	if a.Sink == nil {
		return
	}
	summary := fmt.Sprintf("oom_score_adj of pid %d (%s) set from %d to %d", r.PID, r.Comm, r.Old, r.New)
	if a.DryRun {
		summary = fmt.Sprintf("oom_score_adj of pid %d (%s) is %d, policy %d (dry run)", r.PID, r.Comm, r.Old, r.New)
	}
	d := map[string]string{
		"pid":    strconv.Itoa(r.PID),
		"comm":   r.Comm,
		"old":    strconv.Itoa(r.Old),
		"new":    strconv.Itoa(r.New),
		"role":   string(r.Role),
		"cgroup": r.Cgroup,
	}
	if r.Container != "" {
		d["nested_container"] = r.Container
		summary += " (nested container " + r.Container + ")"
	}
	if a.DryRun {
		d["dry_run"] = "true"
	}
	a.Sink.Record(incident.Incident{Partition: partition, Type: incident.OOMScoreRepair, Summary: summary, Details: d})
}

// Clock is the time source of Run; tests pass a fake.
type Clock interface {
	NewTicker(d time.Duration) Ticker
	After(d time.Duration) <-chan time.Time
}

// Ticker is the part of *time.Ticker Run uses.
type Ticker interface {
	C() <-chan time.Time
	Stop()
}

type realClock struct{}

type realTicker struct{ t *time.Ticker }

func (r realTicker) C() <-chan time.Time { return r.t.C }
func (r realTicker) Stop()               { r.t.Stop() }

func (realClock) NewTicker(d time.Duration) Ticker       { return realTicker{time.NewTicker(d)} }
func (realClock) After(d time.Duration) <-chan time.Time { return time.After(d) }

// RealClock is the wall clock.
var RealClock Clock = realClock{}

// Defaults of RunOptions.
const (
	DefaultResync = 30 * time.Second
	DefaultSettle = 500 * time.Millisecond
)

// RunOptions tune Run.
type RunOptions struct {
	Resync time.Duration // slow resync tick (default 30 s)
	// Settle delays an audit after Notify: a new nested container's cgroup
	// appears before its processes are moved in (default 500 ms).
	Settle time.Duration
	Clock  Clock // default RealClock
	// Report receives every audit's result (optional).
	Report func([]Repair, error)
}

// Run audits once, then on every Notify (after Settle, coalescing
// notifications) and on every Resync tick, until ctx is done. It never
// wakes more often than the tick when nothing is notified. Cancellation
// is a clean exit (nil).
//
// Notifications: feed it from the partition's cgroups.Watcher with
// WatchOptions.Children (TriggersAudit). inotify on cgroup.procs does not
// fire on cgroup v1, and a fork inherits its parent's oom_score_adj, so
// new cgroups (nested containers, units of the partition's systemd) are
// the events that matter; drift by explicit writes is caught by the tick.
func (a *Auditor) Run(ctx context.Context, opts RunOptions) error {
	if opts.Resync <= 0 {
		opts.Resync = DefaultResync
	}
	if opts.Settle <= 0 {
		opts.Settle = DefaultSettle
	}
	if opts.Clock == nil {
		opts.Clock = RealClock
	}
	audit := func() {
		r, err := a.Audit(ctx)
		if ctx.Err() != nil {
			return
		}
		if opts.Report != nil {
			opts.Report(r, err)
		}
	}
	kick := a.kickCh()
	tick := opts.Clock.NewTicker(opts.Resync)
	defer tick.Stop()
	audit()
	var settle <-chan time.Time
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C():
			audit()
		case <-kick:
			if settle == nil {
				settle = opts.Clock.After(opts.Settle)
			}
		case <-settle:
			settle = nil
			// Notifications that came during the settle delay are covered
			// by this audit.
			select {
			case <-kick:
			default:
			}
			audit()
		}
	}
}

// sortRepairs orders repairs by PID (stable output for logs and tests).
func sortRepairs(r []Repair) {
	sort.Slice(r, func(i, j int) bool { return r[i].PID < r[j].PID })
}
