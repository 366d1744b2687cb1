package policy

import (
	"context"
	"path"
	"strconv"

	"go.uber.org/zap"

	"github.com/containers/qmd/pkg/cgroups"
)

// The partition's slice. The kernel weighs a cgroup against its siblings
// only (cpu.weight, cpu.idle, io.weight): CPUWeight=idle on the
// container's own scope, alone in Podman's machine.slice, made it idle
// against nothing, and machine.slice competed with system.slice (the ASIL
// units) at the default weight. Under a CPU hog in the partition the ASIL
// 1 ms tick's p99 was 1.71 times the plain containers/qm setup's in the
// e2e VM (make ffi-bench at 45f73ed), and 1.04 times with the partition in
// its own slice (at 0bf31e5). qmd creates the partition in a slice of its
// own (partition.slice, a sibling of system.slice) and gives that slice
// the partition's weights through systemd, which keeps them ("idle" is
// the kernel's idle class there while memory is quiet, see cpuclass.go).

// applySlice puts the partition's CPU and IO weights on its slice. Only on
// the configured slice, and only when the partition really is in it: a
// container created in machine.slice (before partition slices; recreated
// at its next restart) leaves machine.slice, shared with other
// containers, untouched.
func (c *Controller) applySlice(ctx context.Context, try func(what string, err error)) {
	slice := c.cfg.Slice
	if slice == "" || c.h.Systemd == nil || !c.h.Booted {
		return
	}
	if parent := path.Base(path.Dir(c.cg.Path())); parent != slice {
		c.log.Warn("the partition is not in its slice: its CPU and IO weights count only against its siblings there, not against the ASIL units (a container created before; recreated in the slice at its next restart)",
			zap.String("slice", slice), zap.String("cgroup", c.cg.Path()))
		return
	}
	s := &cgroups.SystemdSetter{Conn: c.h.Systemd, Unit: slice}
	switch w := c.cfg.CPU.Weight; {
	case w == "idle" && c.startIdleClass(ctx, slice, s):
		// The idle class while memory is quiet, the lowest weight
		// while it is tight (cpuclass.go).
	case w == "idle":
		// Weight 1 against system.slice's 100 leaves the ASIL units
		// 99 % of a busy CPU.
		try(slice+" CPUWeight=1", s.SetCPUWeight(ctx, 1))
	default:
		if n, err := strconv.ParseUint(w, 10, 64); err == nil {
			try(slice+" CPUWeight", s.SetCPUWeight(ctx, n))
		}
	}
	if w := c.cfg.IO.Weight; w > 0 {
		try(slice+" IOWeight", s.SetIOWeight(ctx, w))
	}
}
