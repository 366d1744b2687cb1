package config

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/containers/qmd/internal/hostinfo"
	"github.com/containers/qmd/internal/mountinfo"
)

// Finding is one freedom-from-interference problem of a configuration: a
// setting that lets the partition reach the host's control plane or its
// safety-relevant (ASIL) processes. It is a warning, or an error with
// [policy] strict = true.
type Finding struct {
	Key    string // e.g. partition[qm].volumes
	Origin string // file:line where the key was set, file, or "" (built-in default)
	Risk   string // what the setting allows, in one sentence
}

func (f Finding) String() string {
	if f.Origin != "" {
		return fmt.Sprintf("%s: %s: %s", f.Origin, f.Key, f.Risk)
	}
	return fmt.Sprintf("%s: %s", f.Key, f.Risk)
}

// LintHost is what the lint needs to know about the machine. Tests fill it
// in by hand; OSLintHost reads the real one.
type LintHost struct {
	// MemTotal is the host's physical memory in bytes (0: unknown, the
	// memory rule is skipped).
	MemTotal uint64
	// HostBlockDevices maps "MAJ:MIN" of every block device that holds a
	// filesystem mounted on the host, and of the disks those partitions
	// are on, to the mount point it serves ("/" for the root filesystem).
	HostBlockDevices map[string]string
	// HostBlockNames maps the kernel names of those devices ("vda",
	// "vda1", "nvme0n1p2") to their mount points: a device path that does
	// not exist on this host is still recognised by its name.
	HostBlockNames map[string]string
	// DeviceNumber returns "MAJ:MIN" of a device node, or "" when the path
	// is not a block device here.
	DeviceNumber func(path string) string
	// Resolve returns the path with symlinks resolved ("/var/run" ->
	// "/run"), or the path itself when it cannot be resolved.
	Resolve func(path string) string
}

// OSLintHost reads the facts of this machine: physical memory from
// /proc/meminfo, the block devices of the mounted filesystems from
// /proc/self/mountinfo and /sys/dev/block.
func OSLintHost() LintHost {
	h := LintHost{
		MemTotal:         hostinfo.Read().MemTotal,
		HostBlockDevices: map[string]string{},
		HostBlockNames:   map[string]string{},
		DeviceNumber:     blockDeviceNumber,
		Resolve: func(p string) string {
			if r, err := filepath.EvalSymlinks(p); err == nil {
				return r
			}
			return p
		},
	}
	if b, err := os.ReadFile(mountinfo.Path); err == nil {
		for devno, mnt := range ParseMountinfoDevices(b) {
			addBlockDevice(h, devno, mnt)
		}
	}
	// statfs of / is what the root filesystem is, whatever mountinfo
	// says (a chroot, an overlay over a block device).
	var st unix.Stat_t
	if err := unix.Stat("/", &st); err == nil && unix.Major(st.Dev) != 0 {
		addBlockDevice(h, fmt.Sprintf("%d:%d", unix.Major(st.Dev), unix.Minor(st.Dev)), "/")
	}
	return h
}

// addBlockDevice records a block device and, when it is a partition, its
// disk.
func addBlockDevice(h LintHost, devno, mnt string) {
	b, ok := hostinfo.LookupBlock("/sys", devno)
	if !ok {
		return // not a block device (tmpfs, overlay, proc have major 0)
	}
	record := func(devno, name string) {
		if _, ok := h.HostBlockDevices[devno]; !ok || mnt == "/" {
			h.HostBlockDevices[devno] = mnt
			h.HostBlockNames[name] = mnt
		}
	}
	record(devno, b.Name)
	if b.DiskDevno != "" {
		record(b.DiskDevno, b.Disk)
	}
}

// ParseMountinfoDevices maps the "MAJ:MIN" of each mounted filesystem of a
// /proc/self/mountinfo to its mount point, "/" winning over the others.
// Major 0 (tmpfs, proc, overlay, ...) is left out.
func ParseMountinfoDevices(b []byte) map[string]string {
	out := map[string]string{}
	ms, _ := mountinfo.Parse(bytes.NewReader(b)) // a cut table: the mounts before the cut
	for _, m := range ms {
		if strings.HasPrefix(m.Devno, "0:") {
			continue
		}
		if prev, ok := out[m.Devno]; ok && prev == "/" {
			continue
		}
		out[m.Devno] = m.MountPoint
	}
	return out
}

func blockDeviceNumber(p string) string {
	major, minor, err := hostinfo.BlockDevice(p)
	if err != nil {
		return ""
	}
	return fmt.Sprintf("%d:%d", major, minor)
}

// systemDirs are the host directories a rootfs must never be: the
// partition would run the host's own binaries and configuration, and with
// a writable rootfs change them.
var systemDirs = []string{
	"/", "/usr", "/etc", "/var", "/boot", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32",
	"/root", "/home", "/opt", "/srv", "/tmp", "/mnt", "/media", "/run",
	"/usr/bin", "/usr/sbin", "/usr/lib", "/usr/lib32", "/usr/lib64", "/usr/libexec", "/usr/local",
	"/usr/share", "/var/lib", "/var/log",
}

// kernelTrees are host trees whose every subpath is the host's kernel
// interface or another process's view of the host (/proc/1/root is the
// host's /).
var kernelTrees = []string{"/proc", "/sys", "/dev"}

// exposure is a host path that must not be visible in the partition.
type exposure struct {
	path string
	// subtree: a volume of any path below it is as bad (a socket inside
	// /run/systemd); otherwise only the path itself and its parents are
	// (a volume of /etc/qm is fine, one of /etc is not).
	subtree bool
	risk    string
}

// exposures: the host's control sockets and state. A volume whose host
// side is one of these, a parent of one (a volume of /run exposes
// /run/dbus) or, for subtrees, a path inside one, is flagged.
var exposures = []exposure{
	{"/", false, "exposes the host's whole filesystem to the partition"},
	{"/etc", false, "exposes the host's configuration (users, units, qmd's own policy) to the partition"},
	{"/usr", false, "exposes the host's programs and libraries to the partition"},
	{"/boot", true, "exposes the host's kernel and boot loader to the partition"},
	{"/root", true, "exposes root's home (keys, credentials) to the partition"},
	{"/proc", true, "exposes the host's processes and kernel settings (/proc/1/root is the host's /)"},
	{"/sys", true, "exposes the host's kernel objects and cgroups (the partition could lift its own limits)"},
	{"/dev", true, "exposes the host's device nodes (disks, memory) to the partition"},
	{"/run/podman", true, "exposes the host's Podman API socket: the partition can start privileged containers on the host"},
	{"/run/containers", true, "exposes the host's container runtime state and credentials"},
	{"/run/docker.sock", true, "exposes the host's Docker API socket: the partition can start privileged containers on the host"},
	{"/run/docker", true, "exposes the host's Docker runtime state"},
	{"/run/containerd", true, "exposes the host's containerd socket: the partition can start containers on the host"},
	{"/run/crun", true, "exposes the host's OCI runtime state"},
	{"/run/runc", true, "exposes the host's OCI runtime state"},
	{"/run/libpod", true, "exposes the host's Podman state"},
	{"/run/dbus", true, "exposes the host's system D-Bus socket: the partition can talk to systemd, logind and qmd itself"},
	{"/run/systemd", true, "exposes systemd's private socket and journald's sockets: the partition can stop host units (the ASIL ones too) or flood the host journal"},
	{"/run/udev/control", true, "exposes udev's control socket: the partition can reconfigure or stop the host's device management (mount /run/udev/data read-only instead)"},
	{"/run/qmd", true, "exposes qmd's own runtime state"},
	{"/run/user", true, "exposes the users' session buses and their systemd and Podman sockets"},
	{"/run/crio", true, "exposes the host's CRI-O socket: the partition can start containers on the host"},
	{"/run/log", true, "exposes the host's volatile journal"},
	{"/var/lib/containers", true, "exposes the host's container storage: the partition can change the images and containers the host runs"},
	{"/var/lib/docker", true, "exposes the host's Docker storage"},
	{"/var/lib/containerd", true, "exposes the host's containerd storage"},
	{"/var/lib/systemd", true, "exposes systemd's state (timers, credentials) to the partition"},
	{"/var/lib/qmd", true, "exposes qmd's incident store: the partition could rewrite its own history"},
	{"/var/log/journal", true, "exposes the host journal: the partition can read every host log and fill its disk"},
	{"/usr/share/qmd", true, "exposes qmd's vendor configuration and seccomp profile"},
	{"/etc/qmd", true, "exposes qmd's configuration: the partition could change its own policy"},
	{"/etc/containers", true, "exposes the host's container configuration (registries, policy, storage)"},
	{"/etc/systemd", true, "exposes the host's unit configuration: the partition could change the ASIL units"},
}

// dangerousDevices are device nodes (or directories of them) that break
// the isolation whatever the host.
var dangerousDevices = []exposure{
	{"/dev/mem", false, "gives raw access to the host's physical memory (the ASIL processes' memory too)"},
	{"/dev/kmem", false, "gives raw access to the kernel's memory"},
	{"/dev/port", false, "gives raw access to the host's IO ports"},
	{"/dev/kmsg", false, "lets the partition read and flood the host's kernel log"},
	{"/dev/loop-control", false, "lets the partition allocate the host's loop devices"},
	{"/dev/mapper", true, "gives access to the device mapper (control node and the host's mapped disks)"},
	{"/dev/cpu", true, "gives access to the CPUs' model-specific registers"},
	{"/dev/watchdog", true, "gives the partition the host's hardware watchdog: closing or not feeding it resets the whole host"},
	{"/dev/nvram", false, "gives write access to the host's firmware settings"},
	{"/dev/disk", true, "gives access to the host's disks by id, label or path"},
	{"/dev/block", true, "gives access to the host's block devices"},
	{"/dev", false, "gives every host device to the partition"},
}

// blockDiskPrefixes are the kernel names of disks and their partitions.
var blockDiskPrefixes = []string{"sd", "vd", "hd", "xvd", "nvme", "mmcblk", "dm-", "md", "loop"}

// Lint checks the configuration for settings that break the partition's
// freedom from interference with the host. It runs after Prepare (the
// devices left are those the partition gets) and never fails: each
// problem is a Finding naming the key and the risk.
func Lint(c *Config, h LintHost) []Finding {
	l := &linter{origin: c.origin, h: h}
	if l.h.Resolve == nil {
		l.h.Resolve = func(p string) string { return p }
	}
	for i := range c.Partitions {
		p := &c.Partitions[i]
		l.partition(fmt.Sprintf("partition[%s]", p.Name), p, protectNeeds(c, h.MemTotal))
	}
	return l.out
}

// LintError is the error of a strict configuration with findings.
type LintError struct{ Findings []Finding }

func (e *LintError) Error() string {
	lines := make([]string, len(e.Findings))
	for i, f := range e.Findings {
		lines[i] = f.String()
	}
	return "freedom from interference ([policy] strict = true): the configuration breaks the partition's isolation:\n" + strings.Join(lines, "\n")
}

// StrictError returns the findings as an error when the configuration
// asks for strictness, nil otherwise.
func StrictError(c *Config, fs []Finding) error {
	if !c.Policy.Strict || len(fs) == 0 {
		return nil
	}
	return &LintError{Findings: fs}
}

// IsLintError reports whether err is (or wraps) a strict lint failure.
func IsLintError(err error) bool {
	var le *LintError
	return errors.As(err, &le)
}

type linter struct {
	origin map[string]string
	h      LintHost
	out    []Finding
}

func (l *linter) flag(key, format string, a ...any) {
	v := &validator{origin: l.origin}
	v.fail(key, format, a...)
	var ke *KeyError
	if errors.As(v.errs[0], &ke) {
		l.out = append(l.out, Finding{Key: ke.Key, Origin: ke.Origin, Risk: ke.Msg})
	}
}

// protectNeeds is the memory the protected (ASIL) units must keep: the sum
// of their memory_min (or memory_low when only that is set); percentages
// are of memTotal.
func protectNeeds(c *Config, memTotal uint64) uint64 {
	var sum uint64
	for _, pr := range c.Protect {
		switch {
		case pr.MemoryMin.Set && !pr.MemoryMin.IsInfinity():
			sum += pr.MemoryMin.Resolve(memTotal)
		case pr.MemoryLow.Set && !pr.MemoryLow.IsInfinity():
			sum += pr.MemoryLow.Resolve(memTotal)
		}
	}
	return sum
}

func (l *linter) partition(pre string, p *Partition, needs uint64) {
	// rootfs
	root := path.Clean(p.Rootfs)
	resolved := path.Clean(l.h.Resolve(p.Rootfs))
	for _, r := range []string{root, resolved} {
		if isSystemDir(r) {
			l.flag(pre+".rootfs", "%q is the host's %s: the partition would run the host's own programs and configuration (use a separate tree like /usr/lib/qm/rootfs)", p.Rootfs, r)
			break
		}
		if under(r, kernelTrees) {
			l.flag(pre+".rootfs", "%q is inside the host's kernel interface (%s): a rootfs there reaches the host's processes and devices", p.Rootfs, r)
			break
		}
	}
	// volumes
	for _, vol := range p.Volumes {
		host := strings.SplitN(vol, ":", 2)[0]
		if host == "" || !strings.HasPrefix(host, "/") {
			continue // Validate reported it
		}
		cands := []string{path.Clean(host)}
		if r := path.Clean(l.h.Resolve(host)); r != cands[0] {
			cands = append(cands, r)
		}
		// /var/run is /run on every current distribution, whether or
		// not the link can be resolved here.
		if c := cands[0]; c == "/var/run" || strings.HasPrefix(c, "/var/run/") {
			cands = append(cands, strings.TrimPrefix(c, "/var"))
		}
		if e, ok := exposed(cands); ok {
			l.flag(pre+".volumes", "%q %s", vol, e.risk)
		}
	}
	// devices
	for _, d := range p.Devices {
		dev := path.Clean(strings.TrimPrefix(d, "-"))
		if e, ok := matchDevice(dev); ok {
			l.flag(pre+".devices", "%s %s", dev, e.risk)
			continue
		}
		if mnt, ok := l.hostDisk(dev); ok {
			l.flag(pre+".devices", "%s holds the host filesystem mounted at %s: the partition can read and rewrite it below every permission", dev, mnt)
		}
	}
	// capabilities
	drops := map[string]bool{}
	for _, c := range p.CapDrop {
		drops[strings.TrimPrefix(strings.ToLower(c), "cap_")] = true
	}
	if !drops["all"] {
		var missing []string
		for _, c := range []string{"sys_boot", "sys_resource"} {
			if !drops[c] {
				missing = append(missing, c)
			}
		}
		if len(missing) > 0 {
			l.flag(pre+".cap_drop", "does not drop %s: with sys_boot the partition can reboot the host, with sys_resource it can lift its own limits and take the ASIL processes' resources", strings.Join(missing, " and "))
		}
	}
	// seccomp
	switch p.Seccomp {
	case "":
		l.flag(pre+".seccomp_profile", "is empty (Podman's default profile), which allows real-time scheduling: a SCHED_FIFO loop in the partition can starve the ASIL processes (use /usr/share/qmd/seccomp-no-rt.json)")
	case "unconfined":
		l.flag(pre+".seccomp_profile", "\"unconfined\" filters no system call: real-time scheduling and every kernel interface are open to the partition")
	}
	// network
	if p.Network == "host" {
		l.flag(pre+".network", "\"host\" shares the host's network namespace: with the partition's capabilities it can reconfigure the host's interfaces and firewall and reach its local services")
	}
	// slice: the kernel weighs a cgroup against its siblings only
	switch {
	case p.Slice == "":
		l.flag(pre+".slice", "is empty: Podman puts the partition in machine.slice, where its CPUWeight and IOWeight count only against other containers, not against the ASIL units in system.slice (set slice = \"qm.slice\")")
	case strings.Contains(p.Slice, "-"):
		l.flag(pre+".slice", "%q is nested: qmd gives it the partition's weights, but the kernel weighs its top-level slice against system.slice (use a top-level slice such as \"qm.slice\")", p.Slice)
	}
	// memory: a finite memory.max above what the host can give is no
	// bound at all. "infinity" is the kernel OOM killer's business (as in
	// containers/qm, oom_score_adj 500 makes the partition go first).
	if l.h.MemTotal > 0 && p.Memory.Max.Set && !p.Memory.Max.IsInfinity() {
		avail := uint64(0)
		if l.h.MemTotal > needs {
			avail = l.h.MemTotal - needs
		}
		if max := p.Memory.Max.Resolve(l.h.MemTotal); max > avail {
			val := p.Memory.Max.String()
			if p.Memory.Max.Percent > 0 {
				val += " (" + human(max) + ")"
			}
			host := "the host's memory " + human(l.h.MemTotal)
			if needs > 0 {
				host += " minus the protected units' " + human(needs)
			}
			l.flag(pre+".memory.max", "%s is above %s: the limit never stops the partition before the ASIL processes run short", val, host)
		}
	}
}

func isSystemDir(p string) bool {
	for _, s := range systemDirs {
		if p == s {
			return true
		}
	}
	return false
}

// under reports whether p is one of roots or below one.
func under(p string, roots []string) bool {
	for _, r := range roots {
		if p == r || strings.HasPrefix(p, r+"/") {
			return true
		}
	}
	return false
}

// exposed finds the first exposure a host path reveals: the path itself,
// a parent of it, or (for subtrees) a path below it.
func exposed(cands []string) (exposure, bool) {
	for _, c := range cands {
		for _, e := range exposures {
			switch {
			case c == e.path:
				return e, true
			case c == "/" || strings.HasPrefix(e.path, c+"/"):
				return exposure{e.path, e.subtree, fmt.Sprintf("contains %s, so it %s", e.path, e.risk)}, true
			case e.subtree && strings.HasPrefix(c, e.path+"/"):
				return e, true
			}
		}
	}
	return exposure{}, false
}

func matchDevice(dev string) (exposure, bool) {
	for _, e := range dangerousDevices {
		if dev == e.path || (e.subtree && strings.HasPrefix(dev, e.path+"/")) ||
			// /dev/watchdog0, /dev/watchdog1: every watchdog of the host.
			(e.path == "/dev/watchdog" && strings.HasPrefix(dev, e.path)) {
			return e, true
		}
	}
	return exposure{}, false
}

// hostDisk reports whether a device node holds (or is the disk of) a
// filesystem mounted on the host: by its device number when the node
// exists here, else by its kernel name (/dev/vda1 -> vda1).
func (l *linter) hostDisk(dev string) (string, bool) {
	if l.h.DeviceNumber != nil {
		if n := l.h.DeviceNumber(dev); n != "" {
			mnt, ok := l.h.HostBlockDevices[n]
			return mnt, ok
		}
	}
	name := strings.TrimPrefix(dev, "/dev/")
	if strings.Contains(name, "/") {
		return "", false
	}
	for _, pfx := range blockDiskPrefixes {
		if strings.HasPrefix(name, pfx) {
			mnt, ok := l.h.HostBlockNames[name]
			return mnt, ok
		}
	}
	return "", false
}

func human(b uint64) string {
	const unit = 1024
	switch {
	case b >= unit*unit*unit:
		return strconv.FormatFloat(float64(b)/(unit*unit*unit), 'f', 1, 64) + "G"
	case b >= unit*unit:
		return strconv.FormatFloat(float64(b)/(unit*unit), 'f', 1, 64) + "M"
	}
	return strconv.FormatUint(b, 10)
}
