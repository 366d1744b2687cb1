package cgroups

import (
	"context"
	"fmt"
	"os"
	"path"
	"strings"

	sddbus "github.com/coreos/go-systemd/v22/dbus"
	godbus "github.com/godbus/dbus/v5"
)

// LimitSetter applies the partition's resource limits, either through
// systemd (so systemd does not undo them) or directly through cgroupfs.
// Values use the package's conventions: bytes, Max for "infinity".
type LimitSetter interface {
	SetMemoryHigh(ctx context.Context, v uint64) error
	SetMemoryMax(ctx context.Context, v uint64) error
	SetMemorySwapMax(ctx context.Context, v uint64) error
	SetCPUWeight(ctx context.Context, w uint64) error
	SetCPUMax(ctx context.Context, m CPUMax) error
	SetPidsMax(ctx context.Context, v uint64) error
	// SetIOWeight sets the default IO weight (1..10000); SetIOMax one
	// device's bandwidth and IOPS limits (Max: none). See io.go.
	SetIOWeight(ctx context.Context, w uint64) error
	SetIOMax(ctx context.Context, l IOLimit) error
	// Via says how limits are applied: "systemd <unit>" or "cgroupfs <path>".
	Via() string
}

// UnitPropertySetter is the part of go-systemd's *dbus.Conn qmd uses; tests
// pass a fake.
type UnitPropertySetter interface {
	SetUnitPropertiesContext(ctx context.Context, name string, runtime bool, properties ...sddbus.Property) error
}

var _ UnitPropertySetter = (*sddbus.Conn)(nil)

// UnitName is the host systemd unit whose own cgroup is cgroupPath: the
// last element when it is a scope or service (Podman's libpod-<id>.scope)
// and every element before it is a slice. "" otherwise, e.g. for cgroups
// below a unit (delegated to the container: the partition's own systemd
// manages them, not the host's).
func UnitName(cgroupPath string) string {
	unit, p := OwningUnit(cgroupPath)
	if p != path.Clean("/"+cgroupPath) {
		return ""
	}
	return unit
}

// OwningUnit finds the host systemd unit a cgroup belongs to: the first
// scope or service element whose ancestors are all slices. It returns the
// unit and its cgroup path, or "" and "" when there is none (cgroupfs
// manager paths such as /libpod_parent/libpod-<id>).
func OwningUnit(cgroupPath string) (unit, unitPath string) {
	p := path.Clean("/" + cgroupPath)
	if p == "/" {
		return "", ""
	}
	cur := ""
	for _, el := range strings.Split(p[1:], "/") {
		cur += "/" + el
		switch {
		case strings.HasSuffix(el, ".slice") && len(el) > len(".slice"):
			continue
		case (strings.HasSuffix(el, ".scope") && len(el) > len(".scope")) ||
			(strings.HasSuffix(el, ".service") && len(el) > len(".service")):
			return el, cur
		}
		return "", ""
	}
	return "", ""
}

// SystemdBooted reports whether the host runs systemd as init (sd_booted:
// runDir/systemd/system exists; runDir "" means /run).
func SystemdBooted(runDir string) bool {
	if runDir == "" {
		runDir = "/run"
	}
	fi, err := os.Stat(path.Join(runDir, "systemd", "system"))
	return err == nil && fi.IsDir()
}

// ChooseSetter picks how to apply limits to cg: through systemd when the
// host is systemd-managed, a unit setter is given and cg is a host unit's
// own cgroup (see UnitName: Podman's machine.slice/libpod-<id>.scope), so
// systemd keeps the values; direct cgroupfs otherwise (no systemd, the
// cgroupfs cgroup manager, or a cgroup below a unit, which is delegated
// and never rewritten by the host's systemd).
func ChooseSetter(cg *Cgroup, sd UnitPropertySetter, systemdBooted bool) LimitSetter {
	if unit := UnitName(cg.Path()); sd != nil && systemdBooted && unit != "" {
		return &SystemdSetter{Conn: sd, Unit: unit}
	}
	return CgroupfsSetter{Cgroup: cg}
}

// CgroupfsSetter writes limits straight to the cgroup's files.
type CgroupfsSetter struct{ Cgroup *Cgroup }

// SetMemoryHigh writes memory.high (ErrUnsupported on v1).
func (s CgroupfsSetter) SetMemoryHigh(_ context.Context, v uint64) error {
	return s.Cgroup.SetMemoryHigh(v)
}

// SetMemoryMax writes memory.max / memory.limit_in_bytes.
func (s CgroupfsSetter) SetMemoryMax(_ context.Context, v uint64) error {
	return s.Cgroup.SetMemoryMax(v)
}

// SetMemorySwapMax writes memory.swap.max (v1: memsw).
func (s CgroupfsSetter) SetMemorySwapMax(_ context.Context, v uint64) error {
	return s.Cgroup.SetMemorySwapMax(v)
}

// SetCPUWeight writes cpu.weight (v1: cpu.shares).
func (s CgroupfsSetter) SetCPUWeight(_ context.Context, w uint64) error {
	return s.Cgroup.SetCPUWeight(w)
}

// SetCPUMax writes cpu.max (v1: cfs quota/period).
func (s CgroupfsSetter) SetCPUMax(_ context.Context, m CPUMax) error { return s.Cgroup.SetCPUMax(m) }

// SetPidsMax writes pids.max.
func (s CgroupfsSetter) SetPidsMax(_ context.Context, v uint64) error { return s.Cgroup.SetPidsMax(v) }

// Via names the cgroup.
func (s CgroupfsSetter) Via() string { return "cgroupfs " + s.Cgroup.Path() }

// SystemdSetter sets unit properties at runtime (like `systemctl
// set-property --runtime`), so they vanish with the unit and systemd
// writes the cgroup files itself.
type SystemdSetter struct {
	Conn UnitPropertySetter
	Unit string
}

func (s *SystemdSetter) set(ctx context.Context, props ...sddbus.Property) error {
	if err := s.Conn.SetUnitPropertiesContext(ctx, s.Unit, true, props...); err != nil {
		names := make([]string, len(props))
		for i, p := range props {
			names[i] = p.Name
		}
		return fmt.Errorf("set %s of unit %s: %w", strings.Join(names, ","), s.Unit, err)
	}
	return nil
}

func u64(name string, v uint64) sddbus.Property {
	return sddbus.Property{Name: name, Value: godbus.MakeVariant(v)}
}

// SetMemoryHigh sets MemoryHigh (Max = infinity).
func (s *SystemdSetter) SetMemoryHigh(ctx context.Context, v uint64) error {
	return s.set(ctx, u64("MemoryHigh", v))
}

// SetMemoryMax sets MemoryMax.
func (s *SystemdSetter) SetMemoryMax(ctx context.Context, v uint64) error {
	return s.set(ctx, u64("MemoryMax", v))
}

// SetMemorySwapMax sets MemorySwapMax.
func (s *SystemdSetter) SetMemorySwapMax(ctx context.Context, v uint64) error {
	return s.set(ctx, u64("MemorySwapMax", v))
}

// SetCPUWeight sets CPUWeight (1..10000).
func (s *SystemdSetter) SetCPUWeight(ctx context.Context, w uint64) error {
	if w < 1 || w > 10000 {
		return fmt.Errorf("cpu weight %d out of range 1..10000", w)
	}
	return s.set(ctx, u64("CPUWeight", w))
}

// SetCPUIdle sets CPUWeight=idle: systemd (251 and later) writes cpu.idle
// 1 and keeps it when it re-applies the unit's settings, which a direct
// write to cpu.idle would not survive. On the bus "idle" is the weight 0.
// SetCPUWeight leaves the idle class again (systemd writes cpu.idle 0).
func (s *SystemdSetter) SetCPUIdle(ctx context.Context) error {
	return s.set(ctx, u64("CPUWeight", 0))
}

// SetCPUMax sets CPUQuotaPerSecUSec (and CPUQuotaPeriodUSec when a period
// is given); Quota Max removes the quota.
func (s *SystemdSetter) SetCPUMax(ctx context.Context, m CPUMax) error {
	perSec := Max
	if m.Quota != Max {
		period := m.Period
		if period == 0 {
			period = 100000
		}
		perSec = m.Quota * 1000000 / period
	}
	props := []sddbus.Property{u64("CPUQuotaPerSecUSec", perSec)}
	if m.Period != 0 {
		props = append(props, u64("CPUQuotaPeriodUSec", m.Period))
	}
	return s.set(ctx, props...)
}

// SetPidsMax sets TasksMax.
func (s *SystemdSetter) SetPidsMax(ctx context.Context, v uint64) error {
	return s.set(ctx, u64("TasksMax", v))
}

// Via names the unit.
func (s *SystemdSetter) Via() string { return "systemd " + s.Unit }
