package protect

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	sddbus "github.com/coreos/go-systemd/v22/dbus"
	"go.uber.org/zap"

	"github.com/containers/qmd/pkg/cgroups"
	"github.com/containers/qmd/pkg/oom"
)

// auditor keeps the protected units' processes at their oom_score_adj,
// through pkg/oom's Auditor with only protected entries (no partition):
// the partitions' own auditors no longer look at ASIL processes, so each
// process is audited once however many partitions run, and also while no
// partition runs at all.
type auditor struct {
	p      *Protector
	lister oom.Lister
	failed map[string]bool // audit failures already warned about
}

func newAuditor(p *Protector) auditor {
	// List processes where systemd keeps every unit's cgroup: the cgroup2
	// mount (on a hybrid host the unified one; v1 controllers hold a unit
	// only when its accounting is on).
	root := p.o.PSIRoot
	v := cgroups.V2
	if root == "" {
		root, v = p.o.CgroupRoot, cgroups.V1
	}
	return auditor{p: p, lister: &cgroups.Hierarchy{Root: root, Version: v}, failed: map[string]bool{}}
}

func (a *auditor) audit(ctx context.Context) {
	p := a.p
	pol := oom.DefaultPolicy()
	seen := map[string]bool{}
	for _, u := range p.units {
		if u.e.OOMScoreAdj == 0 || u.cgroup == "" {
			continue
		}
		// A unit entry and a cgroup entry may name the same cgroup: the
		// first one's score counts (pkg/oom refuses a policy that lists a
		// cgroup twice, which would stop the audit of every unit).
		if seen[u.cgroup] {
			p.log.Debug("protected cgroup listed twice; the first entry's oom_score_adj counts",
				zap.String("unit", u.e.Name()), zap.String("cgroup", u.cgroup))
			continue
		}
		seen[u.cgroup] = true
		pol.Protected = append(pol.Protected, oom.Protected{Cgroup: u.cgroup, Score: u.e.OOMScoreAdj})
	}
	if len(pol.Protected) == 0 {
		return
	}
	au := &oom.Auditor{Policy: pol, ProcRoot: p.o.ProcRoot, Lister: a.lister, DryRun: p.cfg.DryRun}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	repairs, err := au.Audit(ctx)
	for _, r := range repairs {
		if r.Err != nil {
			continue
		}
		summary := fmt.Sprintf("oom_score_adj of protected pid %d (%s) set from %d to %d", r.PID, r.Comm, r.Old, r.New)
		d := map[string]string{"pid": strconv.Itoa(r.PID), "comm": r.Comm, "old": strconv.Itoa(r.Old),
			"new": strconv.Itoa(r.New), "role": string(r.Role), "cgroup": r.Cgroup, "protect": a.owner(r.Cgroup)}
		if p.cfg.DryRun {
			summary = fmt.Sprintf("oom_score_adj of protected pid %d (%s) is %d, policy %d (dry run)", r.PID, r.Comm, r.Old, r.New)
			d["dry_run"] = "true"
		}
		p.log.Info("protected process oom_score_adj repaired", zap.Int("pid", r.PID), zap.String("comm", r.Comm),
			zap.Int("from", r.Old), zap.Int("to", r.New), zap.String("cgroup", r.Cgroup))
		p.incident(Incident{Type: "oom-score-repair", Summary: summary, Details: d})
	}
	if err != nil {
		// A write refused (no CAP_SYS_RESOURCE) repeats on every audit:
		// each distinct failure (it names the pid) is a warning once,
		// then debug.
		msg := err.Error()
		if a.failed[msg] {
			p.log.Debug("protected units' oom_score_adj audit", zap.Error(err))
			return
		}
		if len(a.failed) >= 256 {
			clear(a.failed)
		}
		a.failed[msg] = true
		p.log.Warn("protected units' oom_score_adj audit", zap.Error(err))
	}
}

// owner names the protected entry a cgroup path belongs to.
func (a *auditor) owner(cg string) string {
	for _, u := range a.p.units {
		if u.cgroup != "" && (cg == u.cgroup || strings.HasPrefix(cg, strings.TrimSuffix(u.cgroup, "/")+"/")) {
			return u.e.Name()
		}
	}
	return ""
}

// applyMemory gives the unit its memory protection: MemoryMin=/MemoryLow=
// through systemd for a unit (runtime properties: systemd keeps them
// across the unit's restarts and writes memory.min/low itself), or
// memory.min/memory.low in the cgroup for a cgroup entry (re-written when
// the cgroup was re-created). cgroup v1 has neither: reported once.
func (p *Protector) applyMemory(ctx context.Context, u *unit) {
	e := u.e
	if !e.MemoryMinSet && !e.MemoryLowSet {
		return
	}
	if !*p.o.MemoryV2 {
		if !p.noMemReported {
			p.noMemReported = true
			p.log.Warn("memory_min/memory_low of protected units are unsupported: the memory controller is on cgroup v1 here",
				zap.String("unit", e.Name()))
			p.incident(Incident{Type: "policy-limit",
				Summary: "cgroup v1 memory controller: memory_min/memory_low of protected units are unsupported here",
				Details: map[string]string{"unsupported": "memory_min,memory_low", "unit": e.Name()}})
		}
		return
	}
	if e.Unit != "" {
		if u.memDone || p.o.Systemd == nil {
			return // without systemd the unit has no known cgroup either
		}
		var props []sddbus.Property
		if e.MemoryMinSet {
			props = append(props, sddbus.Property{Name: "MemoryMin", Value: godbusVariant(e.MemoryMin)})
		}
		if e.MemoryLowSet {
			props = append(props, sddbus.Property{Name: "MemoryLow", Value: godbusVariant(e.MemoryLow)})
		}
		if p.cfg.DryRun {
			p.log.Info("dry run: memory protection not set", zap.String("unit", e.Unit))
			u.memDone = true
			return
		}
		ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		if err := p.o.Systemd.SetUnitProperties(ctx, e.Unit, true, props...); err != nil {
			p.log.Warn("setting the protected unit's memory protection failed; retrying on the resync tick",
				zap.String("unit", e.Unit), zap.Error(err))
			return
		}
		u.memDone = true
		p.log.Info("memory protection set", zap.String("unit", e.Unit), zap.String("memory_min", sizeField(e.MemoryMinSet, e.MemoryMin)),
			zap.String("memory_low", sizeField(e.MemoryLowSet, e.MemoryLow)))
		return
	}
	if u.cgroup == "" || p.o.PSIRoot == "" {
		return
	}
	dir := filepath.Join(p.o.PSIRoot, filepath.FromSlash(u.cgroup))
	for _, f := range []struct {
		name string
		set  bool
		v    uint64
	}{{"memory.min", e.MemoryMinSet, e.MemoryMin}, {"memory.low", e.MemoryLowSet, e.MemoryLow}} {
		if !f.set {
			continue
		}
		want := strconv.FormatUint(f.v, 10)
		file := filepath.Join(dir, f.name)
		if b, err := os.ReadFile(file); err == nil && strings.TrimSpace(string(b)) == want {
			continue
		}
		if p.cfg.DryRun {
			p.log.Info("dry run: memory protection not written", zap.String("file", file), zap.String("value", want))
			continue
		}
		if err := os.WriteFile(file, []byte(want), 0); err != nil {
			p.log.Debug("memory protection not written (cgroup gone or memory controller not enabled for it)",
				zap.String("file", file), zap.Error(err))
			continue
		}
		p.log.Info("memory protection written", zap.String("file", file), zap.String("value", want))
	}
}

func sizeField(set bool, v uint64) string {
	if !set {
		return ""
	}
	return strconv.FormatUint(v, 10)
}
