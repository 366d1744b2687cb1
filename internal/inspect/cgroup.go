package inspect

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	"github.com/containers/qmd/pkg/cgroups"
)

// Resources are the cgroup's limits and usage.
type Resources struct {
	// Cgroup is the path inside the hierarchy (the partition's
	// ControlGroup); Version is "v1" or "v2".
	Cgroup  string `json:"cgroup"`
	Version string `json:"cgroup_version"`
	// Unavailable is set when the cgroup could not be read at all; every
	// reading then carries the same reason.
	Unavailable string           `json:"unavailable,omitempty"`
	Memory      MemoryResources  `json:"memory"`
	CPU         CPUResources     `json:"cpu"`
	Pids        PidsResources    `json:"pids"`
	IO          IOResources      `json:"io"`
	Freezer     FreezerResources `json:"freezer"`
}

// MemoryResources: bytes. v1 has no memory.high; its swap limit is
// memory.memsw.limit_in_bytes minus memory.limit_in_bytes.
type MemoryResources struct {
	Current Reading `json:"current"`
	High    Reading `json:"high"`
	Max     Reading `json:"max"`
	SwapMax Reading `json:"swap_max"`
}

// CPUResources: weight 1..10000 (v1: cpu.shares converted as systemd
// does), idle 0/1 (CPUWeight=idle), quota and period in microseconds
// (cpu.max; v1 cpu.cfs_quota_us and cpu.cfs_period_us).
type CPUResources struct {
	Weight     Reading `json:"weight"`
	Idle       Reading `json:"idle"`
	QuotaUSec  Reading `json:"max_quota_usec"`
	PeriodUSec Reading `json:"max_period_usec"`
}

// PidsResources: tasks (pids.current, pids.max).
type PidsResources struct {
	Current Reading `json:"current"`
	Max     Reading `json:"max"`
}

// FreezerResources: whether the cgroup is frozen (cgroup.freeze on v2,
// freezer.state on v1).
type FreezerResources struct {
	State       string `json:"state"` // thawed, frozen, freezing; "" when unavailable
	Unavailable string `json:"unavailable,omitempty"`
	Source      string `json:"source,omitempty"`
}

// IOResources: the IO weight, the per-device counters and limits.
type IOResources struct {
	Weight Reading  `json:"weight"`
	Stat   IOStat   `json:"stat"`
	Max    IOLimits `json:"max"`
}

// IOStat is io.stat (v1: blkio.throttle.io_service_bytes_recursive and
// io_serviced_recursive, or the bfq equivalents).
type IOStat struct {
	Devices     []IODevice `json:"devices"`
	Unavailable string     `json:"unavailable,omitempty"`
	Source      string     `json:"source,omitempty"`
}

// IODevice is one device's IO since the cgroup was created.
type IODevice struct {
	Device     string `json:"device"` // MAJ:MIN
	ReadBytes  uint64 `json:"read_bytes"`
	WriteBytes uint64 `json:"write_bytes"`
	ReadIOs    uint64 `json:"read_ios"`
	WriteIOs   uint64 `json:"write_ios"`
}

// IOLimits is io.max (v1: blkio.throttle.*_device).
type IOLimits struct {
	Devices     []IOLimit `json:"devices"`
	Unavailable string    `json:"unavailable,omitempty"`
	Source      string    `json:"source,omitempty"`
}

// IOLimit is one device's bandwidth limits; nil means no limit.
type IOLimit struct {
	Device    string  `json:"device"`
	ReadBPS   *uint64 `json:"read_bps"`
	WriteBPS  *uint64 `json:"write_bps"`
	ReadIOPS  *uint64 `json:"read_iops"`
	WriteIOPS *uint64 `json:"write_iops"`
}

// maxFile bounds what is read of one cgroup file (io.stat of a host with
// many disks is the largest).
const maxFile = 1 << 20

// ReadResources reads the cgroup at path (relative to the hierarchy, as
// in the partition's ControlGroup property).
func (h Host) ReadResources(path string) Resources {
	r := Resources{Cgroup: path}
	hier, err := cgroups.NewHierarchy(h.cgroupRoot())
	if err != nil {
		return r.unavailable(fmt.Sprintf("no cgroup hierarchy at %s: %s", h.cgroupRoot(), reason(err)))
	}
	r.Version = hier.Version.String()
	if path == "" {
		return r.unavailable("the partition has no cgroup (it is not running)")
	}
	cg, err := hier.Open(path)
	if err != nil {
		return r.unavailable(fmt.Sprintf("cgroup path %q: %s", path, reason(err)))
	}
	if !cg.Exists() {
		return r.unavailable(fmt.Sprintf("cgroup %s does not exist (the partition stopped?)", cg.Dir(memCtrl(cg))))
	}
	v1 := hier.Version == cgroups.V1
	src := func(ctrl, name string) string { return filepath.Join(cg.Dir(ctrl), name) }

	// Memory.
	if v1 {
		r.Memory.Current = read(src("memory", "memory.usage_in_bytes"))(cg.MemoryCurrent())
		r.Memory.High = NA("", "cgroup v1 has no memory.high")
		r.Memory.Max = read(src("memory", "memory.limit_in_bytes"))(cg.MemoryMax())
		r.Memory.SwapMax = read(src("memory", "memory.memsw.limit_in_bytes"))(cg.MemorySwapMax())
	} else {
		r.Memory.Current = read(src("memory", "memory.current"))(cg.MemoryCurrent())
		r.Memory.High = read(src("memory", "memory.high"))(cg.MemoryHigh())
		r.Memory.Max = read(src("memory", "memory.max"))(cg.MemoryMax())
		r.Memory.SwapMax = read(src("memory", "memory.swap.max"))(cg.MemorySwapMax())
	}

	// CPU.
	if v1 {
		r.CPU.Weight = read(src("cpu", "cpu.shares"))(cg.CPUWeight())
	} else {
		r.CPU.Weight = read(src("cpu", "cpu.weight"))(cg.CPUWeight())
	}
	r.CPU.Idle = readUintFile(src("cpu", "cpu.idle"), 1)
	cpuFile := src("cpu", "cpu.max")
	if v1 {
		cpuFile = src("cpu", "cpu.cfs_quota_us")
	}
	if m, err := cg.CPUMax(); err != nil {
		r.CPU.QuotaUSec = NA(cpuFile, "%s", reason(err))
		r.CPU.PeriodUSec = NA(cpuFile, "%s", reason(err))
	} else {
		r.CPU.QuotaUSec = Known(m.Quota, cpuFile)
		if v1 {
			cpuFile = src("cpu", "cpu.cfs_period_us")
		}
		r.CPU.PeriodUSec = Known(m.Period, cpuFile)
	}

	// Pids.
	r.Pids.Current = read(src("pids", "pids.current"))(cg.PidsCurrent())
	r.Pids.Max = read(src("pids", "pids.max"))(cg.PidsMax())

	// Freezer.
	r.Freezer = readFreezer(cg, v1)

	// IO.
	if v1 {
		r.IO = readIOv1(cg.Dir("blkio"))
	} else {
		r.IO = readIOv2(cg.Dir(""))
	}
	return r
}

// memCtrl is the controller whose directory stands for the cgroup in
// messages.
func memCtrl(cg *cgroups.Cgroup) string {
	if cg.Version() == cgroups.V1 {
		return "memory"
	}
	return ""
}

// read adapts a (value, error) pair to a Reading; used as
// read(source)(cg.X()).
func read(source string) func(uint64, error) Reading {
	return func(v uint64, err error) Reading {
		if err != nil {
			return NA(source, "%s", reason(err))
		}
		return Known(v, source)
	}
}

// readUintFile reads a file holding one unsigned integer no greater than
// limit (0 = any).
func readUintFile(path string, limit uint64) Reading {
	b, err := readSmall(path, maxFile)
	if err != nil {
		return NA(path, "%s", reason(err))
	}
	v, err := cgroups.ParseUint(path, b)
	if err != nil {
		return NA(path, "%s", reason(err))
	}
	if limit > 0 && v > limit {
		return NA(path, "value %d out of range 0..%d", v, limit)
	}
	return Known(v, path)
}

func (r Resources) unavailable(why string) Resources {
	r.Unavailable = why
	na := NA("", "%s", why)
	r.Memory = MemoryResources{na, na, na, na}
	r.CPU = CPUResources{na, na, na, na}
	r.Pids = PidsResources{na, na}
	r.Freezer = FreezerResources{Unavailable: why}
	r.IO = IOResources{Weight: na, Stat: IOStat{Devices: []IODevice{}, Unavailable: why}, Max: IOLimits{Devices: []IOLimit{}, Unavailable: why}}
	return r
}

func readFreezer(cg *cgroups.Cgroup, v1 bool) FreezerResources {
	if v1 {
		f := filepath.Join(cg.Dir("freezer"), "freezer.state")
		b, err := readSmall(f, maxFile)
		if err != nil {
			return FreezerResources{Unavailable: reason(err), Source: f}
		}
		s, err := cgroups.ParseFreezerState(f, b)
		if err != nil {
			return FreezerResources{Unavailable: reason(err), Source: f}
		}
		return FreezerResources{State: strings.ToLower(s), Source: f}
	}
	f := filepath.Join(cg.Dir(""), "cgroup.freeze")
	b, err := readSmall(f, maxFile)
	if err != nil {
		return FreezerResources{Unavailable: reason(err), Source: f}
	}
	frozen, err := cgroups.ParseBool01(f, b)
	if err != nil {
		return FreezerResources{Unavailable: reason(err), Source: f}
	}
	if frozen {
		return FreezerResources{State: "frozen", Source: f}
	}
	return FreezerResources{State: "thawed", Source: f}
}

// ---- IO, cgroup v2

func readIOv2(dir string) IOResources {
	var io IOResources
	wf := filepath.Join(dir, "io.weight")
	if b, err := readSmall(wf, maxFile); err != nil {
		// io.bfq.weight is what the BFQ scheduler reads; io.weight exists
		// with the io controller enabled.
		io.Weight = NA(wf, "%s", reason(err))
	} else if w, err := parseDefaultWeight(wf, b); err != nil {
		io.Weight = NA(wf, "%s", reason(err))
	} else {
		io.Weight = Known(w, wf)
	}
	sf := filepath.Join(dir, "io.stat")
	io.Stat = IOStat{Devices: []IODevice{}, Source: sf}
	if b, err := readSmall(sf, maxFile); err != nil {
		io.Stat.Unavailable = reason(err)
	} else if devs, err := ParseIOStat(sf, b); err != nil {
		io.Stat.Unavailable = reason(err)
	} else {
		io.Stat.Devices = devs
	}
	mf := filepath.Join(dir, "io.max")
	io.Max = IOLimits{Devices: []IOLimit{}, Source: mf}
	if b, err := readSmall(mf, maxFile); err != nil {
		io.Max.Unavailable = reason(err)
	} else if lims, err := ParseIOMax(mf, b); err != nil {
		io.Max.Unavailable = reason(err)
	} else {
		io.Max.Devices = lims
	}
	return io
}

// parseDefaultWeight reads io.weight / blkio.bfq.weight: "default N"
// followed by per-device "MAJ:MIN N" lines, or (older v1 files) just N.
func parseDefaultWeight(file string, data []byte) (uint64, error) {
	ls := splitLines(data)
	if len(ls) == 0 {
		return 0, perr(file, 0, "empty")
	}
	for i, l := range ls {
		f := strings.Fields(l)
		switch {
		case len(f) == 1 && i == 0 && len(ls) == 1:
			return parseWeight(file, i+1, f[0])
		case len(f) == 2 && f[0] == "default":
			return parseWeight(file, i+1, f[1])
		case len(f) == 2 && isDevice(f[0]):
			if _, err := parseWeight(file, i+1, f[1]); err != nil {
				return 0, err
			}
		default:
			return 0, perr(file, i+1, "want \"default N\" or \"MAJ:MIN N\", got %q", l)
		}
	}
	return 0, perr(file, 0, "no \"default\" line")
}

func parseWeight(file string, line int, s string) (uint64, error) {
	v, err := strconv.ParseUint(s, 10, 64)
	if err != nil || v < 1 || v > 10000 {
		return 0, perr(file, line, "weight %q: want 1..10000", s)
	}
	return v, nil
}

// ParseIOStat parses cgroup v2 io.stat: "MAJ:MIN key=value..." lines.
// Unknown keys are allowed (kernels add them); rbytes, wbytes, rios and
// wios are required.
func ParseIOStat(file string, data []byte) ([]IODevice, error) {
	out := []IODevice{}
	for i, l := range splitLines(data) {
		f := strings.Fields(l)
		if len(f) < 2 || !isDevice(f[0]) {
			return nil, perr(file, i+1, "want \"MAJ:MIN key=value...\", got %q", l)
		}
		d := IODevice{Device: f[0]}
		seen := map[string]bool{}
		for _, kv := range f[1:] {
			k, v, ok := strings.Cut(kv, "=")
			if !ok || k == "" {
				return nil, perr(file, i+1, "field %q is not key=value", kv)
			}
			if seen[k] {
				return nil, perr(file, i+1, "duplicate key %q", k)
			}
			seen[k] = true
			n, err := strconv.ParseUint(v, 10, 64)
			if err != nil {
				return nil, perr(file, i+1, "key %q: value %q is not an unsigned integer", k, v)
			}
			switch k {
			case "rbytes":
				d.ReadBytes = n
			case "wbytes":
				d.WriteBytes = n
			case "rios":
				d.ReadIOs = n
			case "wios":
				d.WriteIOs = n
			}
		}
		for _, k := range []string{"rbytes", "wbytes", "rios", "wios"} {
			if !seen[k] {
				return nil, perr(file, i+1, "device %s: missing %s", d.Device, k)
			}
		}
		out = append(out, d)
	}
	return out, nil
}

// ParseIOMax parses cgroup v2 io.max: "MAJ:MIN rbps=N|max wbps=... riops=...
// wiops=..." lines.
func ParseIOMax(file string, data []byte) ([]IOLimit, error) {
	out := []IOLimit{}
	for i, l := range splitLines(data) {
		f := strings.Fields(l)
		if len(f) < 2 || !isDevice(f[0]) {
			return nil, perr(file, i+1, "want \"MAJ:MIN key=value...\", got %q", l)
		}
		lim := IOLimit{Device: f[0]}
		for _, kv := range f[1:] {
			k, v, ok := strings.Cut(kv, "=")
			if !ok {
				return nil, perr(file, i+1, "field %q is not key=value", kv)
			}
			var dst **uint64
			switch k {
			case "rbps":
				dst = &lim.ReadBPS
			case "wbps":
				dst = &lim.WriteBPS
			case "riops":
				dst = &lim.ReadIOPS
			case "wiops":
				dst = &lim.WriteIOPS
			default:
				return nil, perr(file, i+1, "unknown key %q", k)
			}
			if v == "max" {
				continue
			}
			n, err := strconv.ParseUint(v, 10, 64)
			if err != nil {
				return nil, perr(file, i+1, "key %q: value %q is not an unsigned integer or max", k, v)
			}
			*dst = &n
		}
		out = append(out, lim)
	}
	return out, nil
}

// ---- IO, cgroup v1 (blkio)

func readIOv1(dir string) IOResources {
	var io IOResources
	io.Weight = NA(filepath.Join(dir, "blkio.weight"), "no blkio.weight or blkio.bfq.weight (no proportional IO scheduler)")
	for _, name := range []string{"blkio.weight", "blkio.bfq.weight"} {
		f := filepath.Join(dir, name)
		b, err := readSmall(f, maxFile)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			io.Weight = NA(f, "%s", reason(err))
			break
		}
		if w, err := parseDefaultWeight(f, b); err != nil {
			io.Weight = NA(f, "%s", reason(err))
		} else {
			io.Weight = Known(w, f)
		}
		break
	}

	// Counters: the throttle files count every IO; the bfq ones only IO
	// that went through BFQ. Take the first pair that exists and names
	// any device.
	io.Stat = IOStat{Devices: []IODevice{}, Unavailable: "no blkio.throttle.io_service_bytes or blkio.bfq.io_service_bytes",
		Source: filepath.Join(dir, "blkio.throttle.io_service_bytes_recursive")}
	for _, pair := range [][2]string{
		{"blkio.throttle.io_service_bytes_recursive", "blkio.throttle.io_serviced_recursive"},
		{"blkio.throttle.io_service_bytes", "blkio.throttle.io_serviced"},
		{"blkio.bfq.io_service_bytes_recursive", "blkio.bfq.io_serviced_recursive"},
		{"blkio.bfq.io_service_bytes", "blkio.bfq.io_serviced"},
	} {
		bf, sf := filepath.Join(dir, pair[0]), filepath.Join(dir, pair[1])
		bb, err := readSmall(bf, maxFile)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		st := IOStat{Devices: []IODevice{}, Source: bf}
		if err != nil {
			st.Unavailable = reason(err)
			io.Stat = st
			break
		}
		bytesByDev, err := ParseBlkioStat(bf, bb)
		if err != nil {
			st.Unavailable = reason(err)
			io.Stat = st
			break
		}
		iosByDev := map[string]map[string]uint64{}
		if sb, err := readSmall(sf, maxFile); err == nil {
			if m, err := ParseBlkioStat(sf, sb); err == nil {
				iosByDev = m
			}
		}
		for _, dev := range sortedKeys(bytesByDev) {
			st.Devices = append(st.Devices, IODevice{Device: dev,
				ReadBytes: bytesByDev[dev]["Read"], WriteBytes: bytesByDev[dev]["Write"],
				ReadIOs: iosByDev[dev]["Read"], WriteIOs: iosByDev[dev]["Write"]})
		}
		io.Stat = st
		if len(st.Devices) > 0 {
			break
		}
	}

	// Limits.
	io.Max = IOLimits{Devices: []IOLimit{}, Source: filepath.Join(dir, "blkio.throttle.read_bps_device")}
	byDev := map[string]*IOLimit{}
	for _, lf := range []struct {
		name string
		set  func(*IOLimit, *uint64)
	}{
		{"blkio.throttle.read_bps_device", func(l *IOLimit, v *uint64) { l.ReadBPS = v }},
		{"blkio.throttle.write_bps_device", func(l *IOLimit, v *uint64) { l.WriteBPS = v }},
		{"blkio.throttle.read_iops_device", func(l *IOLimit, v *uint64) { l.ReadIOPS = v }},
		{"blkio.throttle.write_iops_device", func(l *IOLimit, v *uint64) { l.WriteIOPS = v }},
	} {
		f := filepath.Join(dir, lf.name)
		b, err := readSmall(f, maxFile)
		if err != nil {
			io.Max.Unavailable = reason(err)
			io.Max.Source = f
			return io
		}
		m, err := ParseDeviceValues(f, b)
		if err != nil {
			io.Max.Unavailable = reason(err)
			io.Max.Source = f
			return io
		}
		for dev, v := range m {
			l := byDev[dev]
			if l == nil {
				l = &IOLimit{Device: dev}
				byDev[dev] = l
			}
			v := v
			lf.set(l, &v)
		}
	}
	for _, dev := range sortedKeys(byDev) {
		io.Max.Devices = append(io.Max.Devices, *byDev[dev])
	}
	return io
}

// ParseBlkioStat parses a v1 blkio stat file: "MAJ:MIN Op N" lines and a
// final "Total N" line; it returns device -> op -> N.
func ParseBlkioStat(file string, data []byte) (map[string]map[string]uint64, error) {
	out := map[string]map[string]uint64{}
	for i, l := range splitLines(data) {
		f := strings.Fields(l)
		if len(f) == 2 && f[0] == "Total" {
			if _, err := strconv.ParseUint(f[1], 10, 64); err != nil {
				return nil, perr(file, i+1, "total %q is not an unsigned integer", f[1])
			}
			continue
		}
		if len(f) != 3 || !isDevice(f[0]) {
			return nil, perr(file, i+1, "want \"MAJ:MIN Op N\" or \"Total N\", got %q", l)
		}
		n, err := strconv.ParseUint(f[2], 10, 64)
		if err != nil {
			return nil, perr(file, i+1, "value %q is not an unsigned integer", f[2])
		}
		m := out[f[0]]
		if m == nil {
			m = map[string]uint64{}
			out[f[0]] = m
		}
		if _, dup := m[f[1]]; dup {
			return nil, perr(file, i+1, "duplicate %s %s", f[0], f[1])
		}
		m[f[1]] = n
	}
	return out, nil
}

// ParseDeviceValues parses "MAJ:MIN N" lines (v1 throttle limits).
func ParseDeviceValues(file string, data []byte) (map[string]uint64, error) {
	out := map[string]uint64{}
	for i, l := range splitLines(data) {
		f := strings.Fields(l)
		if len(f) != 2 || !isDevice(f[0]) {
			return nil, perr(file, i+1, "want \"MAJ:MIN N\", got %q", l)
		}
		n, err := strconv.ParseUint(f[1], 10, 64)
		if err != nil {
			return nil, perr(file, i+1, "value %q is not an unsigned integer", f[1])
		}
		if _, dup := out[f[0]]; dup {
			return nil, perr(file, i+1, "duplicate device %s", f[0])
		}
		out[f[0]] = n
	}
	return out, nil
}

// isDevice reports whether s is "MAJ:MIN" with decimal numbers.
func isDevice(s string) bool {
	maj, min, ok := strings.Cut(s, ":")
	if !ok {
		return false
	}
	_, err1 := strconv.ParseUint(maj, 10, 32)
	_, err2 := strconv.ParseUint(min, 10, 32)
	return err1 == nil && err2 == nil
}

func splitLines(data []byte) []string {
	data = bytes.TrimRight(data, "\n")
	if len(data) == 0 {
		return nil
	}
	return strings.Split(string(data), "\n")
}

func perr(file string, line int, format string, a ...any) error {
	return &cgroups.ParseError{File: file, Line: line, Problem: fmt.Sprintf(format, a...)}
}

// sortedKeys returns the MAJ:MIN keys of m in numeric order.
func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	num := func(k string) (uint64, uint64) {
		maj, min, _ := strings.Cut(k, ":")
		a, _ := strconv.ParseUint(maj, 10, 32)
		b, _ := strconv.ParseUint(min, 10, 32)
		return a, b
	}
	sort.Slice(out, func(i, j int) bool {
		ai, bi := num(out[i])
		aj, bj := num(out[j])
		if ai != aj {
			return ai < aj
		}
		return bi < bj
	})
	return out
}
