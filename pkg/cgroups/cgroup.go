// Package cgroups is qmd's narrow edge to the kernel's control groups: it
// finds the QM partition's cgroup, reads and writes its limits, freezes
// and thaws it, lists its processes, and turns kernel notifications
// (inotify on cgroupfs files, the v1 memory.oom_control eventfd, PSI
// triggers) into typed events carrying deltas.
//
// Both hierarchies are supported and detected at run time: cgroup v2
// (production, systemd hosts) and cgroup v1 (the build machines, older
// kernels). Every path is relative to a configurable root so tests run
// against fake trees in a temporary directory; inotify fires on ordinary
// files too, so the fakes behave like cgroupfs.
package cgroups

import (
	"errors"
	"fmt"
	"io/fs"
	"math"
	"os"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// Version is the cgroup hierarchy version.
type Version int

// Hierarchy versions.
const (
	V1 Version = 1
	V2 Version = 2
)

func (v Version) String() string {
	switch v {
	case V1:
		return "v1"
	case V2:
		return "v2"
	}
	return "v" + strconv.Itoa(int(v))
}

// Default roots.
const (
	DefaultRoot     = "/sys/fs/cgroup"
	DefaultProcRoot = "/proc"
)

// ErrUnsupported is returned (wrapped with the file or feature) for a
// setting the hierarchy or kernel does not have, e.g. memory.high on v1.
var ErrUnsupported = errors.New("not supported")

// ErrGone is returned when the cgroup disappeared (the container stopped
// and its cgroup was removed).
var ErrGone = errors.New("cgroup is gone")

// Detect reports which hierarchy is mounted at root. A cgroup2 mount is v2;
// otherwise the layout decides (cgroup.controllers at the root: v2; a
// memory/ or other controller directory: v1, including hybrid mounts where
// an empty cgroup2 sits at root/unified). Fake trees are detected by layout.
func Detect(root string) (Version, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(root, &st); err != nil {
		return 0, fmt.Errorf("detect cgroup version: statfs %s: %w", root, err)
	}
	switch int64(st.Type) {
	case unix.CGROUP2_SUPER_MAGIC:
		return V2, nil
	case unix.CGROUP_SUPER_MAGIC:
		return V1, nil
	}
	if fileExists(filepath.Join(root, "cgroup.controllers")) {
		return V2, nil
	}
	for _, c := range []string{"memory", "pids", "cpu", "freezer"} {
		if fi, err := os.Stat(filepath.Join(root, c)); err == nil && fi.IsDir() {
			return V1, nil
		}
	}
	return 0, fmt.Errorf("detect cgroup version: %s is neither a cgroup2 mount nor a v1 controller tree: %w", root, ErrUnsupported)
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

// Hierarchy is a mounted cgroup hierarchy: the root directory and its
// version. On v1 the controllers are directories below Root
// (Root/memory, Root/pids, Root/freezer, Root/cpu).
type Hierarchy struct {
	Root    string
	Version Version
}

// NewHierarchy detects the version of the hierarchy at root ("" means
// DefaultRoot).
func NewHierarchy(root string) (*Hierarchy, error) {
	if root == "" {
		root = DefaultRoot
	}
	v, err := Detect(root)
	if err != nil {
		return nil, err
	}
	return &Hierarchy{Root: root, Version: v}, nil
}

// v1Controllers are the v1 controllers qmd uses.
var v1Controllers = []string{"memory", "pids", "freezer", "cpu"}

func cleanPath(p string) (string, error) {
	if !strings.HasPrefix(p, "/") {
		p = "/" + p
	}
	c := path.Clean(p)
	if c != p && c+"/" != p {
		return "", fmt.Errorf("cgroup path %q is not clean", p)
	}
	return c, nil
}

// Open returns the cgroup at path (relative to the hierarchy, e.g.
// "/machine.slice/libpod-<id>.scope"). On v1 the same path is used for
// every controller. Open does not check that the cgroup exists; see Exists.
func (h *Hierarchy) Open(p string) (*Cgroup, error) {
	c, err := cleanPath(p)
	if err != nil {
		return nil, err
	}
	cg := &Cgroup{h: h, path: c}
	if h.Version == V1 {
		cg.v1 = make(map[string]string, len(v1Controllers))
		for _, ctrl := range v1Controllers {
			cg.v1[ctrl] = c
		}
	}
	cg.pickPrimary()
	return cg, nil
}

// Processes lists the processes of the cgroup at path and its
// descendants. It lets *Hierarchy serve as the process source of pkg/oom.
func (h *Hierarchy) Processes(p string) ([]Process, error) {
	cg, err := h.Open(p)
	if err != nil {
		return nil, err
	}
	return cg.Processes()
}

// ForPID returns the cgroup of process pid, from procRoot/<pid>/cgroup
// (procRoot "" means /proc). On v1 each controller keeps its own path.
func (h *Hierarchy) ForPID(procRoot string, pid int) (*Cgroup, error) {
	if procRoot == "" {
		procRoot = DefaultProcRoot
	}
	file := filepath.Join(procRoot, strconv.Itoa(pid), "cgroup")
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("cgroup of pid %d: %w", pid, err)
	}
	entries, err := ParseProcCgroup(file, data)
	if err != nil {
		return nil, err
	}
	return h.fromEntries(file, entries)
}

func (h *Hierarchy) fromEntries(file string, entries []ProcCgroup) (*Cgroup, error) {
	if h.Version == V2 {
		for _, e := range entries {
			if e.ID == 0 {
				return h.Open(e.Path)
			}
		}
		return nil, perr(file, 0, "no v2 (0::) line")
	}
	cg := &Cgroup{h: h, v1: map[string]string{}}
	for _, e := range entries {
		for _, c := range e.Controllers {
			cg.v1[c] = e.Path
		}
	}
	for _, primary := range []string{"memory", "pids", "freezer", "cpu"} {
		if p, ok := cg.v1[primary]; ok {
			cg.path = p
			cg.pickPrimary()
			return cg, nil
		}
	}
	return nil, perr(file, 0, "no v1 memory, pids, freezer or cpu line")
}

// Cgroup is one cgroup (on v1: one path per controller). It is safe for
// concurrent use; it holds no open files.
type Cgroup struct {
	h    *Hierarchy
	path string            // v2 path; v1 path of the primary controller (memory)
	v1   map[string]string // v1: controller -> path
	prim string            // v1: the controller whose directory stands for the cgroup
}

// Version is the hierarchy version.
func (c *Cgroup) Version() Version { return c.h.Version }

// Path is the cgroup path relative to the hierarchy root (on v1, the
// memory controller's path).
func (c *Cgroup) Path() string { return c.path }

// ControllerPath is the v1 path of controller ctrl (v2: Path).
func (c *Cgroup) ControllerPath(ctrl string) string {
	if c.h.Version == V1 {
		if p, ok := c.v1[ctrl]; ok {
			return p
		}
	}
	return c.path
}

// Dir is the directory of the cgroup for controller ctrl (ignored on v2).
func (c *Cgroup) Dir(ctrl string) string {
	if c.h.Version == V2 {
		return filepath.Join(c.h.Root, filepath.FromSlash(c.path))
	}
	p, ok := c.v1[ctrl]
	if !ok {
		p = c.path
	}
	return filepath.Join(c.h.Root, ctrl, filepath.FromSlash(p))
}

// Exists reports whether the cgroup directory (v1: memory controller) exists.
func (c *Cgroup) Exists() bool {
	fi, err := os.Stat(c.Dir(c.primary()))
	return err == nil && fi.IsDir()
}

func (c *Cgroup) file(ctrl, name string) string { return filepath.Join(c.Dir(ctrl), name) }

func (c *Cgroup) read(ctrl, name string) (string, []byte, error) {
	f := c.file(ctrl, name)
	b, err := os.ReadFile(f)
	return f, b, err
}

// write writes value to an existing cgroup file. It never creates files:
// a missing file means the controller is not enabled.
func writeFile(file, value string) error {
	f, err := os.OpenFile(file, os.O_WRONLY|os.O_TRUNC, 0)
	if err != nil {
		return fmt.Errorf("write %s: %w", file, err)
	}
	_, werr := f.WriteString(value)
	cerr := f.Close()
	if werr != nil {
		return fmt.Errorf("write %q to %s: %w", value, file, werr)
	}
	if cerr != nil {
		return fmt.Errorf("write %q to %s: %w", value, file, cerr)
	}
	return nil
}

func (c *Cgroup) readUint(ctrl, name string) (uint64, error) {
	f, b, err := c.read(ctrl, name)
	if err != nil {
		return 0, err
	}
	return ParseUint(f, b)
}

func (c *Cgroup) readKeyed(ctrl, name string) (map[string]uint64, error) {
	f, b, err := c.read(ctrl, name)
	if err != nil {
		return nil, err
	}
	return ParseFlatKeyed(f, b)
}

func formatMax(v uint64) string {
	if v == Max {
		return "max"
	}
	return strconv.FormatUint(v, 10)
}

func unsupportedV1(what string) error {
	return fmt.Errorf("%s on cgroup v1: %w", what, ErrUnsupported)
}

func unsupportedV2(what string) error {
	return fmt.Errorf("%s on cgroup v2: %w", what, ErrUnsupported)
}

// MemoryCurrent is the memory usage in bytes (memory.current,
// v1 memory.usage_in_bytes).
func (c *Cgroup) MemoryCurrent() (uint64, error) {
	if c.h.Version == V1 {
		return c.readUint("memory", "memory.usage_in_bytes")
	}
	return c.readUint("memory", "memory.current")
}

// MemoryMax is the hard limit (memory.max, v1 memory.limit_in_bytes);
// Max means unlimited.
func (c *Cgroup) MemoryMax() (uint64, error) {
	if c.h.Version == V1 {
		f, b, err := c.read("memory", "memory.limit_in_bytes")
		if err != nil {
			return 0, err
		}
		return parseV1Limit(f, b)
	}
	return c.readUint("memory", "memory.max")
}

// SetMemoryMax sets the hard limit; Max removes it.
func (c *Cgroup) SetMemoryMax(v uint64) error {
	if c.h.Version == V1 {
		return writeFile(c.file("memory", "memory.limit_in_bytes"), v1Value(v))
	}
	return writeFile(c.file("memory", "memory.max"), formatMax(v))
}

func v1Value(v uint64) string {
	if v == Max {
		return "-1"
	}
	return strconv.FormatUint(v, 10)
}

// MemoryHigh is the throttling limit (memory.high). cgroup v1 has no
// equivalent: the error wraps ErrUnsupported.
func (c *Cgroup) MemoryHigh() (uint64, error) {
	if c.h.Version == V1 {
		return 0, unsupportedV1("memory.high")
	}
	return c.readUint("memory", "memory.high")
}

// SetMemoryHigh sets memory.high; Max removes it. On v1 the error wraps
// ErrUnsupported.
func (c *Cgroup) SetMemoryHigh(v uint64) error {
	if c.h.Version == V1 {
		return unsupportedV1("memory.high")
	}
	return writeFile(c.file("memory", "memory.high"), formatMax(v))
}

// MemorySoftLimit is v1 memory.soft_limit_in_bytes. v2 has no such file
// (memory.low protects instead of targeting reclaim): ErrUnsupported.
func (c *Cgroup) MemorySoftLimit() (uint64, error) {
	if c.h.Version == V2 {
		return 0, unsupportedV2("memory.soft_limit_in_bytes")
	}
	f, b, err := c.read("memory", "memory.soft_limit_in_bytes")
	if err != nil {
		return 0, err
	}
	return parseV1Limit(f, b)
}

// SetMemorySoftLimit sets v1 memory.soft_limit_in_bytes.
func (c *Cgroup) SetMemorySoftLimit(v uint64) error {
	if c.h.Version == V2 {
		return unsupportedV2("memory.soft_limit_in_bytes")
	}
	return writeFile(c.file("memory", "memory.soft_limit_in_bytes"), v1Value(v))
}

// MemorySwapMax is the swap limit (memory.swap.max). On v1 it is derived
// from memory.memsw.limit_in_bytes - memory.limit_in_bytes when the kernel
// has swap accounting, ErrUnsupported otherwise.
func (c *Cgroup) MemorySwapMax() (uint64, error) {
	if c.h.Version == V2 {
		return c.readUint("memory", "memory.swap.max")
	}
	f, b, err := c.read("memory", "memory.memsw.limit_in_bytes")
	if errors.Is(err, fs.ErrNotExist) {
		return 0, unsupportedV1("memory.memsw (swap accounting disabled)")
	}
	if err != nil {
		return 0, err
	}
	memsw, err := parseV1Limit(f, b)
	if err != nil {
		return 0, err
	}
	mem, err := c.MemoryMax()
	if err != nil {
		return 0, err
	}
	if memsw == Max {
		return Max, nil
	}
	if memsw < mem {
		return 0, perr(f, 0, "memsw limit %d below memory limit %d", memsw, mem)
	}
	return memsw - mem, nil
}

// SetMemorySwapMax sets the swap limit. On v1 it writes
// memory.memsw.limit_in_bytes = memory.limit_in_bytes + v (Max when either
// is unlimited); call it after SetMemoryMax.
func (c *Cgroup) SetMemorySwapMax(v uint64) error {
	if c.h.Version == V2 {
		return writeFile(c.file("memory", "memory.swap.max"), formatMax(v))
	}
	f := c.file("memory", "memory.memsw.limit_in_bytes")
	if !fileExists(f) {
		return unsupportedV1("memory.memsw (swap accounting disabled)")
	}
	mem, err := c.MemoryMax()
	if err != nil {
		return err
	}
	total := Max
	if mem != Max && v != Max && mem+v >= mem {
		total = mem + v
	}
	return writeFile(f, v1Value(total))
}

// MemoryStat is memory.stat as a map.
func (c *Cgroup) MemoryStat() (map[string]uint64, error) {
	return c.readKeyed("memory", "memory.stat")
}

// MemoryWorkingSet estimates what the cgroup needs to make progress: its
// usage minus the inactive page cache (inactive_file on v2,
// total_inactive_file on v1), the part reclaim takes first and cheaply.
// It is the figure the kubelet evicts on. It also returns the usage.
func (c *Cgroup) MemoryWorkingSet() (ws, usage uint64, err error) {
	usage, err = c.MemoryCurrent()
	if err != nil {
		return 0, 0, err
	}
	st, err := c.MemoryStat()
	if err != nil {
		return 0, usage, err
	}
	key := "inactive_file"
	if c.h.Version == V1 {
		key = "total_inactive_file"
	}
	inactive, ok := st[key]
	if !ok {
		return 0, usage, perr(c.file("memory", "memory.stat"), 0, "no %s", key)
	}
	if inactive > usage {
		return 0, usage, nil
	}
	return usage - inactive, usage, nil
}

// Pressure reads the cgroup's PSI file of resource ("memory", "cpu",
// "io"): <resource>.pressure, cgroup v2 only. A missing file (v1, or a
// kernel without PSI) wraps ErrUnsupported.
func (c *Cgroup) Pressure(resource string) (PSI, error) {
	if c.h.Version == V1 {
		return PSI{}, unsupportedV1(resource + ".pressure")
	}
	p, err := ReadPSI(c.file(resource, resource+".pressure"))
	if errors.Is(err, fs.ErrNotExist) && c.Exists() {
		return PSI{}, fmt.Errorf("%s.pressure: %w", resource, ErrUnsupported)
	}
	return p, err
}

// MemoryEvents are the memory event counters. On v1 only OOMKill (from
// memory.oom_control, where the kernel has it) is filled.
type MemoryEvents struct {
	Low, High, Max, OOM, OOMKill, OOMGroupKill uint64
}

func memoryEventsFrom(m map[string]uint64) MemoryEvents {
	return MemoryEvents{
		Low: m["low"], High: m["high"], Max: m["max"], OOM: m["oom"],
		OOMKill: m["oom_kill"], OOMGroupKill: m["oom_group_kill"],
	}
}

// MemoryEvents reads memory.events (local: memory.events.local). On v1 it
// reads the oom_kill counter of memory.oom_control (local is unsupported).
func (c *Cgroup) MemoryEvents(local bool) (MemoryEvents, error) {
	if c.h.Version == V1 {
		if local {
			return MemoryEvents{}, unsupportedV1("memory.events.local")
		}
		oc, err := c.OOMControl()
		if err != nil {
			return MemoryEvents{}, err
		}
		return MemoryEvents{OOMKill: oc.OOMKill}, nil
	}
	name := "memory.events"
	if local {
		name = "memory.events.local"
	}
	m, err := c.readKeyed("memory", name)
	if err != nil {
		return MemoryEvents{}, err
	}
	return memoryEventsFrom(m), nil
}

// OOMControl is v1 memory.oom_control.
type OOMControl struct {
	OOMKillDisable bool
	UnderOOM       bool
	OOMKill        uint64 // kills so far; only when HasOOMKill
	HasOOMKill     bool   // the kernel reports oom_kill (4.13+)
}

// ParseOOMControl parses v1 memory.oom_control.
func ParseOOMControl(file string, data []byte) (OOMControl, error) {
	m, err := ParseFlatKeyed(file, data)
	if err != nil {
		return OOMControl{}, err
	}
	var oc OOMControl
	for _, k := range []string{"oom_kill_disable", "under_oom"} {
		v, ok := m[k]
		if !ok {
			return OOMControl{}, perr(file, 0, "missing key %q", k)
		}
		if v > 1 {
			return OOMControl{}, perr(file, 0, "key %q: want 0 or 1, got %d", k, v)
		}
	}
	oc.OOMKillDisable = m["oom_kill_disable"] == 1
	oc.UnderOOM = m["under_oom"] == 1
	oc.OOMKill, oc.HasOOMKill = m["oom_kill"]
	return oc, nil
}

// OOMControl reads v1 memory.oom_control.
func (c *Cgroup) OOMControl() (OOMControl, error) {
	if c.h.Version == V2 {
		return OOMControl{}, unsupportedV2("memory.oom_control")
	}
	f, b, err := c.read("memory", "memory.oom_control")
	if err != nil {
		return OOMControl{}, err
	}
	return ParseOOMControl(f, b)
}

// PidsMax is pids.max (Max: unlimited).
func (c *Cgroup) PidsMax() (uint64, error) { return c.readUint("pids", "pids.max") }

// SetPidsMax sets pids.max.
func (c *Cgroup) SetPidsMax(v uint64) error {
	return writeFile(c.file("pids", "pids.max"), formatMax(v))
}

// PidsCurrent is pids.current.
func (c *Cgroup) PidsCurrent() (uint64, error) { return c.readUint("pids", "pids.current") }

// PidsEvents is the "max" counter of pids.events: how often a fork failed
// because pids.max was reached.
func (c *Cgroup) PidsEvents() (uint64, error) {
	m, err := c.readKeyed("pids", "pids.events")
	if err != nil {
		return 0, err
	}
	return m["max"], nil
}

// CPUUsage is the CPU time the cgroup's tasks have used (cpu.stat
// usage_usec; v1 cpuacct.usage, in nanoseconds).
func (c *Cgroup) CPUUsage() (time.Duration, error) {
	if c.h.Version == V2 {
		m, err := c.readKeyed("cpu", "cpu.stat")
		if err != nil {
			return 0, err
		}
		u, ok := m["usage_usec"]
		if !ok {
			return 0, perr(c.file("cpu", "cpu.stat"), 0, "no usage_usec")
		}
		if u > math.MaxInt64/uint64(time.Microsecond) {
			return 0, perr(c.file("cpu", "cpu.stat"), 0, "usage_usec %d out of range", u)
		}
		return time.Duration(u) * time.Microsecond, nil
	}
	ns, err := c.readUint("cpuacct", "cpuacct.usage")
	if err != nil {
		return 0, err
	}
	if ns > math.MaxInt64 {
		return 0, perr(c.file("cpuacct", "cpuacct.usage"), 0, "%d out of range", ns)
	}
	return time.Duration(ns), nil
}

// CPUMax is the bandwidth limit (cpu.max; v1 cpu.cfs_quota_us and
// cpu.cfs_period_us, quota -1 = Max).
func (c *Cgroup) CPUMax() (CPUMax, error) {
	if c.h.Version == V2 {
		f, b, err := c.read("cpu", "cpu.max")
		if err != nil {
			return CPUMax{}, err
		}
		return ParseCPUMax(f, b)
	}
	qf, qb, err := c.read("cpu", "cpu.cfs_quota_us")
	if err != nil {
		return CPUMax{}, err
	}
	q, err := ParseInt(qf, qb)
	if err != nil {
		return CPUMax{}, err
	}
	if q < -1 || q == 0 {
		return CPUMax{}, perr(qf, 0, "quota %d: want -1 or a positive value", q)
	}
	period, err := c.readUint("cpu", "cpu.cfs_period_us")
	if err != nil {
		return CPUMax{}, err
	}
	if period == 0 || period == Max {
		return CPUMax{}, perr(c.file("cpu", "cpu.cfs_period_us"), 0, "period %d is invalid", period)
	}
	out := CPUMax{Quota: Max, Period: period}
	if q > 0 {
		out.Quota = uint64(q)
	}
	return out, nil
}

// SetCPUMax sets the bandwidth limit. Period 0 keeps the current period.
func (c *Cgroup) SetCPUMax(m CPUMax) error {
	if c.h.Version == V2 {
		v := formatMax(m.Quota)
		if m.Period != 0 {
			v += " " + strconv.FormatUint(m.Period, 10)
		}
		return writeFile(c.file("cpu", "cpu.max"), v)
	}
	if m.Period != 0 {
		if err := writeFile(c.file("cpu", "cpu.cfs_period_us"), strconv.FormatUint(m.Period, 10)); err != nil {
			return err
		}
	}
	q := "-1"
	if m.Quota != Max {
		q = strconv.FormatUint(m.Quota, 10)
	}
	return writeFile(c.file("cpu", "cpu.cfs_quota_us"), q)
}

// SharesToWeight converts v1 cpu.shares (2..262144) to v2 cpu.weight
// (1..10000), the mapping runc and systemd use.
func SharesToWeight(shares uint64) uint64 {
	if shares < 2 {
		shares = 2
	}
	if shares > 262144 {
		shares = 262144
	}
	return 1 + (shares-2)*9999/262142
}

// WeightToShares converts v2 cpu.weight to v1 cpu.shares.
func WeightToShares(weight uint64) uint64 {
	if weight < 1 {
		weight = 1
	}
	if weight > 10000 {
		weight = 10000
	}
	return 2 + (weight-1)*262142/9999
}

// CPUWeight is cpu.weight (v1: cpu.shares converted).
func (c *Cgroup) CPUWeight() (uint64, error) {
	if c.h.Version == V1 {
		s, err := c.readUint("cpu", "cpu.shares")
		if err != nil {
			return 0, err
		}
		return SharesToWeight(s), nil
	}
	return c.readUint("cpu", "cpu.weight")
}

// SetCPUWeight sets cpu.weight (1..10000; v1: cpu.shares converted).
func (c *Cgroup) SetCPUWeight(w uint64) error {
	if w < 1 || w > 10000 {
		return fmt.Errorf("cpu weight %d out of range 1..10000", w)
	}
	if c.h.Version == V1 {
		return writeFile(c.file("cpu", "cpu.shares"), strconv.FormatUint(WeightToShares(w), 10))
	}
	return writeFile(c.file("cpu", "cpu.weight"), strconv.FormatUint(w, 10))
}

// SetCPUIdle sets cpu.idle (systemd's CPUWeight=idle), where the kernel has it.
func (c *Cgroup) SetCPUIdle(idle bool) error {
	f := c.file("cpu", "cpu.idle")
	if !fileExists(f) {
		return fmt.Errorf("cpu.idle: %w", ErrUnsupported)
	}
	v := "0"
	if idle {
		v = "1"
	}
	return writeFile(f, v)
}

// State is the cgroup's populated and frozen state.
type State struct {
	Populated bool
	Frozen    bool
}

// ParseCgroupEvents parses v2 cgroup.events.
func ParseCgroupEvents(file string, data []byte) (State, error) {
	m, err := ParseFlatKeyed(file, data)
	if err != nil {
		return State{}, err
	}
	for k, v := range m {
		if v > 1 {
			return State{}, perr(file, 0, "key %q: want 0 or 1, got %d", k, v)
		}
	}
	p, ok := m["populated"]
	if !ok {
		return State{}, perr(file, 0, "missing key \"populated\"")
	}
	return State{Populated: p == 1, Frozen: m["frozen"] == 1}, nil
}

// State reads cgroup.events (v1: freezer.state and the process list).
func (c *Cgroup) State() (State, error) {
	if c.h.Version == V2 {
		f, b, err := c.read("", "cgroup.events")
		if err != nil {
			return State{}, err
		}
		return ParseCgroupEvents(f, b)
	}
	var s State
	fs, err := c.freezerState()
	if err != nil && !errors.Is(err, ErrUnsupported) {
		return State{}, err
	}
	s.Frozen = fs == "FROZEN"
	procs, err := c.Processes()
	if err != nil {
		return State{}, err
	}
	s.Populated = len(procs) > 0
	return s, nil
}

func (c *Cgroup) freezerState() (string, error) {
	f, b, err := c.read("freezer", "freezer.state")
	if errors.Is(err, fs.ErrNotExist) && !fileExists(c.Dir("freezer")) {
		return "", unsupportedV1("freezer (controller not mounted or cgroup missing)")
	}
	if err != nil {
		return "", err
	}
	return ParseFreezerState(f, b)
}

// Process is one process and the cgroup it is in.
type Process struct {
	PID  int
	Path string // cgroup path relative to the hierarchy root, e.g. "/qm/machine.slice/libpod-x.scope"
}

// PIDs lists the processes directly in the cgroup (cgroup.procs).
func (c *Cgroup) PIDs() ([]int, error) {
	f, b, err := c.read(c.primary(), "cgroup.procs")
	if err != nil {
		return nil, err
	}
	return ParsePIDs(f, b)
}

// primary is the v1 controller whose directory stands for the cgroup
// (existence, process listing, watching): the first of memory, pids,
// freezer, cpu that existed when the Cgroup was made; "" on v2.
func (c *Cgroup) primary() string { return c.prim }

func (c *Cgroup) pickPrimary() {
	if c.h.Version == V2 {
		return
	}
	c.prim = "memory"
	for _, ctrl := range []string{"memory", "pids", "freezer", "cpu"} {
		if fileExists(c.Dir(ctrl)) {
			c.prim = ctrl
			return
		}
	}
}

// Processes lists the processes of the cgroup and all its descendants
// (nested containers live in child cgroups), with the cgroup each is in.
// Child cgroups that vanish during the walk are skipped; the cgroup itself
// missing is an error wrapping ErrGone.
func (c *Cgroup) Processes() ([]Process, error) {
	ctrl := c.primary()
	root := c.Dir(ctrl)
	base := c.ControllerPath(ctrl)
	var out []Process
	var walk func(dir, rel string, top bool) error
	walk = func(dir, rel string, top bool) error {
		file := filepath.Join(dir, "cgroup.procs")
		b, err := os.ReadFile(file)
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) || errors.Is(err, unix.ENODEV) {
				if top && !fileExists(dir) {
					return fmt.Errorf("list processes of %s: %w", dir, ErrGone)
				}
				// A child that vanished, or (fake trees) a directory
				// without cgroup.procs: go on with its children.
				b = nil
			} else {
				return fmt.Errorf("list processes: %w", err)
			}
		}
		pids, err := ParsePIDs(file, b)
		if err != nil {
			return err
		}
		for _, p := range pids {
			out = append(out, Process{PID: p, Path: rel})
		}
		ents, err := os.ReadDir(dir)
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) && !top {
				return nil
			}
			return fmt.Errorf("list child cgroups: %w", err)
		}
		for _, e := range ents {
			if !e.IsDir() {
				continue
			}
			if err := walk(filepath.Join(dir, e.Name()), path.Join(rel, e.Name()), false); err != nil {
				return err
			}
		}
		return nil
	}
	if err := walk(root, base, true); err != nil {
		return nil, err
	}
	return out, nil
}
