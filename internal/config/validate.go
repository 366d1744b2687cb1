package config

import (
	"errors"
	"fmt"
	"net/url"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"
)

// KeyError is a configuration error that names the key and where it was set.
type KeyError struct {
	Key    string // e.g. partition[qm].oom_score_adj
	Origin string // file:line, file, or "" for a built-in default
	Msg    string
}

func (e *KeyError) Error() string {
	if e.Origin != "" {
		return fmt.Sprintf("%s: %s: %s", e.Origin, e.Key, e.Msg)
	}
	return fmt.Sprintf("%s: %s", e.Key, e.Msg)
}

var (
	// Partition names become container names and D-Bus object path
	// elements: keep them to a safe, short alphabet.
	nameRE = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,62}$`)
	// A slice unit name: systemd's unit characters, each "-" a level of
	// the hierarchy (qm-a.slice lies in qm.slice), so none empty.
	sliceRE   = regexp.MustCompile(`^[a-zA-Z0-9:_.]+(-[a-zA-Z0-9:_.]+)*\.slice$`)
	capRE     = regexp.MustCompile(`^[a-z_]+$`)
	unitRE    = regexp.MustCompile(`^[a-zA-Z0-9:_.@\\-]+\.(service|scope|slice)$`)
	sysctlRE  = regexp.MustCompile(`^[a-z0-9_]+(\.[a-z0-9_]+)+$`)
	rlimitSet = map[string]bool{
		"as": true, "core": true, "cpu": true, "data": true, "fsize": true, "locks": true,
		"memlock": true, "msgqueue": true, "nice": true, "nofile": true, "nproc": true,
		"rss": true, "rtprio": true, "rttime": true, "sigpending": true, "stack": true,
	}
)

// Syntax of the migration keys (env, annotations, [partition.security]).
var (
	// envRE: what a shell and systemd's Environment= accept as a name.
	envRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)
	// annotationRE: reverse-domain keys as the OCI spec recommends
	// ("org.containers.qm.device.ttys"), no '=' (podman --annotation
	// K=V) and no spaces.
	annotationRE = regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9._/-]{0,251}[A-Za-z0-9])?$`)
	// selinuxTypeRE: an SELinux type identifier; ':' and ',' would break
	// Podman's label option syntax.
	selinuxTypeRE = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9_.-]{0,254}$`)
	// selinuxLevelRE: an MLS/MCS level or range: "s0", "s0:c1,c2",
	// "s0-s0:c0.c1023".
	selinuxLevelRE = regexp.MustCompile(`^s[0-9]+(:c[0-9]+([.,]c[0-9]+)*)?(-s[0-9]+(:c[0-9]+([.,]c[0-9]+)*)?)?$`)
	// apparmorRE: a profile name as apparmor_parser loads it (names may be
	// paths); no spaces, quotes or control characters.
	apparmorRE = regexp.MustCompile(`^[A-Za-z0-9_/][A-Za-z0-9_./+:@-]{0,254}$`)
)

type validator struct {
	origin map[string]string
	errs   []error
}

func (v *validator) fail(key, format string, a ...any) {
	o := v.origin[key]
	if o == "" {
		// A key inside a table set as a whole: use the table's origin.
		for k := key; o == "" && strings.Contains(k, "."); {
			k = k[:strings.LastIndex(k, ".")]
			o = v.origin[k]
		}
	}
	v.errs = append(v.errs, &KeyError{Key: key, Origin: o, Msg: fmt.Sprintf(format, a...)})
}

// Validate checks the configuration without touching the host. origin maps
// key paths to where they were set (may be nil). All problems are reported,
// joined, each naming its key.
func Validate(c *Config, origin map[string]string) error {
	v := &validator{origin: origin}
	u, err := url.Parse(c.Podman.Socket)
	switch {
	case err != nil || c.Podman.Socket == "":
		v.fail("podman.socket", "%q is not a URL (use unix:///run/podman/podman.sock)", c.Podman.Socket)
	case u.Scheme != "unix" && u.Scheme != "tcp":
		v.fail("podman.socket", "%q: scheme must be unix:// or tcp://", c.Podman.Socket)
	case u.Scheme == "unix" && u.Path == "":
		v.fail("podman.socket", "%q: no socket path", c.Podman.Socket)
	}
	if c.Podman.Timeout.Duration <= 0 {
		v.fail("podman.timeout", "must be positive")
	}
	switch c.Log.Level {
	case "debug", "info", "warn", "error":
	default:
		v.fail("log.level", "%q: use debug, info, warn or error", c.Log.Level)
	}
	switch c.Log.Format {
	case "auto", "journal", "console", "json":
	default:
		v.fail("log.format", "%q: use auto, journal, console or json", c.Log.Format)
	}
	if c.DBus.AdminGroup == "" {
		v.fail("dbus.admin_group", "must not be empty")
	}
	if c.Incidents.Max < 1 || c.Incidents.Max > 1_000_000 {
		v.fail("incidents.max", "%d: must be in 1..1000000", c.Incidents.Max)
	}
	if c.Incidents.Path != "" && !strings.HasPrefix(c.Incidents.Path, "/") {
		v.fail("incidents.path", "%q: must be an absolute path", c.Incidents.Path)
	}
	if c.Policy.Resync.Duration < 100_000_000 {
		v.fail("policy.resync", "%s: must be at least 100ms", c.Policy.Resync.Duration)
	}
	names := map[string]bool{}
	containers := map[string]string{}
	for i := range c.Partitions {
		p := &c.Partitions[i]
		pre := fmt.Sprintf("partition[%s]", p.Name)
		if names[p.Name] {
			v.fail(pre+".name", "duplicate partition name")
		}
		names[p.Name] = true
		v.partition(pre, p)
		cn := p.ContainerNameOrDefault()
		if other, dup := containers[cn]; dup {
			v.fail(pre+".container_name", "%q is already used by partition %q", cn, other)
		}
		containers[cn] = p.Name
	}
	v.sharedSlices(c.Partitions)
	protected := map[string]int{}
	for i, pr := range c.Protect {
		pre := fmt.Sprintf("protect[%d]", i)
		if k := pr.Unit + pr.Cgroup; k != "" {
			// One process group, one policy: two entries would fight
			// over its oom_score_adj and memory protection.
			if j, dup := protected[k]; dup {
				v.fail(pre, "%s is already protect[%d]", k, j)
			}
			protected[k] = i
		}
		switch {
		case pr.Unit == "" && pr.Cgroup == "":
			v.fail(pre, "set unit or cgroup")
		case pr.Unit != "" && pr.Cgroup != "":
			v.fail(pre, "set only one of unit and cgroup")
		case pr.Unit != "" && !unitRE.MatchString(pr.Unit):
			v.fail(pre+".unit", "%q is not a systemd unit name (.service, .scope or .slice)", pr.Unit)
		case pr.Cgroup != "" && (!strings.HasPrefix(pr.Cgroup, "/") || strings.Contains(pr.Cgroup, "..")):
			v.fail(pre+".cgroup", "%q: must be an absolute cgroup path without ..", pr.Cgroup)
		case pr.Cgroup != "" && strings.Trim(pr.Cgroup, "/") == "":
			v.fail(pre+".cgroup", "%q is the root cgroup: it holds every process of the host (the partition too); name the ASIL unit's cgroup", pr.Cgroup)
		}
		if pr.OOMScoreAdj < -1000 || pr.OOMScoreAdj > 1000 {
			v.fail(pre+".oom_score_adj", "%d is out of range -1000..1000", pr.OOMScoreAdj)
		} else if pr.OOMScoreAdj >= 0 {
			v.fail(pre+".oom_score_adj", "%d: a protected (ASIL) process gets a negative value, -1000..-1", pr.OOMScoreAdj)
		}
		v.protectMemory(pre, pr)
	}
	return errors.Join(v.errs...)
}

// hostSlices hold the host's services and users (the ASIL units among
// them): never a partition's slice. Matched on the top level of the name.
var hostSlices = map[string]bool{"system.slice": true, "system": true, "user.slice": true, "user": true, "init.scope": true}

// sharedSlices: partitions may share a slice only with the same CPU and IO
// weights, which qmd puts on the slice.
func (v *validator) sharedSlices(ps []Partition) {
	first := map[string]*Partition{}
	for i := range ps {
		p := &ps[i]
		if p.Slice == "" {
			continue
		}
		o, ok := first[p.Slice]
		if !ok {
			first[p.Slice] = p
			continue
		}
		if o.CPU.Weight != p.CPU.Weight || o.IO.Weight != p.IO.Weight {
			v.fail(fmt.Sprintf("partition[%s].slice", p.Name), "%q is also partition %s's, with other weights (cpu.weight %q/%q, io.weight %d/%d): qmd puts them on the slice; give each partition its own slice or the same weights",
				p.Slice, o.Name, o.CPU.Weight, p.CPU.Weight, o.IO.Weight, p.IO.Weight)
		}
	}
}

func (v *validator) partition(pre string, p *Partition) {
	if !nameRE.MatchString(p.Name) {
		v.fail(pre+".name", "%q: use 1-63 letters, digits, '_', '.', '-', starting with a letter or digit", p.Name)
	}
	if p.ContainerName != "" && !nameRE.MatchString(p.ContainerName) {
		v.fail(pre+".container_name", "%q is not a valid container name", p.ContainerName)
	}
	switch {
	case p.Slice == "":
	case !sliceRE.MatchString(p.Slice) || len(p.Slice) > 255:
		v.fail(pre+".slice", "%q is not a systemd slice name (e.g. \"qm.slice\"; each \"-\" is a level: \"qm-a.slice\" lies in qm.slice)", p.Slice)
	case hostSlices[strings.SplitN(p.Slice, "-", 2)[0]]:
		v.fail(pre+".slice", "%q is (in) a slice of the host's own services or users: qmd gives the slice the partition's CPU and IO weights, which would hold back the ASIL units there; use a slice of its own (e.g. %q)", p.Slice, "qm.slice")
	}
	if !strings.HasPrefix(p.Rootfs, "/") {
		v.fail(pre+".rootfs", "%q: must be an absolute path", p.Rootfs)
	}
	if len(p.Exec) == 0 || p.Exec[0] == "" {
		v.fail(pre+".exec", "must name the partition's init, e.g. [\"/sbin/init\"]")
	}
	switch p.Network {
	case "private", "none", "host":
	default:
		v.fail(pre+".network", "%q: use private, none or host", p.Network)
	}
	for _, vol := range p.Volumes {
		parts := strings.Split(vol, ":")
		if len(parts) < 2 || len(parts) > 3 || !strings.HasPrefix(parts[0], "/") || !strings.HasPrefix(parts[1], "/") {
			v.fail(pre+".volumes", "%q: use HOST:CONTAINER[:OPTIONS] with absolute paths", vol)
		}
	}
	for _, c := range p.CapDrop {
		if !capRE.MatchString(strings.ToLower(strings.TrimPrefix(strings.ToLower(c), "cap_"))) {
			v.fail(pre+".cap_drop", "%q is not a capability name", c)
		}
	}
	for _, d := range p.Devices {
		if !strings.HasPrefix(strings.TrimPrefix(d, "-"), "/dev/") {
			v.fail(pre+".devices", "%q: a device is /dev/NAME, optional with a leading '-'", d)
		}
	}
	for k := range p.Sysctl {
		if !sysctlRE.MatchString(k) {
			v.fail(pre+".sysctl", "%q is not a sysctl name", k)
		}
	}
	if p.Seccomp != "" && p.Seccomp != "unconfined" && !strings.HasPrefix(p.Seccomp, "/") {
		v.fail(pre+".seccomp_profile", "%q: an absolute path, \"unconfined\" or empty (Podman's default)", p.Seccomp)
	}
	for k, val := range p.Rlimits {
		if !rlimitSet[k] {
			v.fail(pre+".rlimits."+k, "unknown rlimit (use lowercase names like nofile, nproc)")
			continue
		}
		if _, err := ParseRlimit(val); err != nil {
			v.fail(pre+".rlimits."+k, "%v", err)
		}
	}
	for _, k := range mapKeys(p.Env) {
		switch {
		case !envRE.MatchString(k):
			v.fail(pre+".env."+k, "%q is not a variable name (letters, digits and '_', not starting with a digit)", k)
		case strings.ContainsRune(p.Env[k], 0):
			v.fail(pre+".env."+k, "the value contains a NUL byte")
		}
	}
	for _, k := range mapKeys(p.Annotations) {
		switch {
		case !annotationRE.MatchString(k):
			v.fail(pre+".annotations."+k, "%q is not an annotation key (use reverse-domain names like \"org.containers.qm.device.ttys\": letters, digits, '.', '_', '/', '-', at most 253)", k)
		case strings.HasPrefix(k, "io.podman.annotations."):
			v.fail(pre+".annotations."+k, "%q is Podman's own bookkeeping; use the matching partition key ([partition.security], seccomp_profile, ...)", k)
		case strings.ContainsRune(p.Annotations[k], 0):
			v.fail(pre+".annotations."+k, "the value contains a NUL byte")
		}
	}
	v.security(pre+".security", p.Security)
	v.disk(pre, p)
	if p.OOMScoreAdj < -1000 || p.OOMScoreAdj > 1000 {
		v.fail(pre+".oom_score_adj", "%d is out of range -1000..1000", p.OOMScoreAdj)
	} else if p.OOMScoreAdj < 0 {
		v.fail(pre+".oom_score_adj", "%d: a partition must not be more protected than the host (use 0..1000)", p.OOMScoreAdj)
	}
	if p.NestedOOMScoreAdj < -1000 || p.NestedOOMScoreAdj > 1000 {
		v.fail(pre+".nested_oom_score_adj", "%d is out of range -1000..1000", p.NestedOOMScoreAdj)
	} else if p.NestedOOMScoreAdj < p.OOMScoreAdj {
		v.fail(pre+".nested_oom_score_adj", "%d is below the partition's oom_score_adj %d", p.NestedOOMScoreAdj, p.OOMScoreAdj)
	}
	if p.StopTimeout.Duration < 0 {
		v.fail(pre+".stop_timeout", "must not be negative")
	}
	r := p.Restart
	switch r.Policy {
	case "always", "on-failure", "no":
	default:
		v.fail(pre+".restart.policy", "%q: use always, on-failure or no", r.Policy)
	}
	if r.BackoffInitial.Duration <= 0 {
		v.fail(pre+".restart.backoff_initial", "must be positive")
	}
	if r.BackoffMax.Duration < r.BackoffInitial.Duration {
		v.fail(pre+".restart.backoff_max", "%s is below backoff_initial %s", r.BackoffMax.Duration, r.BackoffInitial.Duration)
	}
	if r.BackoffReset.Duration <= 0 {
		v.fail(pre+".restart.backoff_reset", "must be positive")
	}
	if r.StartLimitBurst < 0 {
		v.fail(pre+".restart.start_limit_burst", "must not be negative (0 disables the limit)")
	}
	if r.StartLimitBurst > 0 && r.StartLimitInterval.Duration <= 0 {
		v.fail(pre+".restart.start_limit_interval", "must be positive")
	}
	m := p.Memory
	if m.High.Set && !m.High.IsInfinity() && m.High.Percent == 0 && m.High.Bytes < 4096 {
		v.fail(pre+".memory.high", "%s is below one page", m.High)
	}
	if m.Max.Set && !m.Max.IsInfinity() && m.Max.Percent == 0 && m.Max.Bytes < 4<<20 {
		v.fail(pre+".memory.max", "%s: below 4M no partition can start", m.Max)
	}
	if m.High.Set && m.Max.Set && !m.High.IsInfinity() && m.High.Percent == 0 && m.Max.Percent == 0 && m.High.Bytes > m.Max.Bytes {
		v.fail(pre+".memory.high", "%s is above memory.max %s", m.High, m.Max)
	}
	if w := p.CPU.Weight; w != "" && w != "idle" {
		n, err := strconv.Atoi(w)
		if err != nil || n < 1 || n > 10000 {
			v.fail(pre+".cpu.weight", "%q: use \"idle\" or 1..10000", w)
		}
	}
	if q := p.CPU.Quota; q != "" {
		if _, err := ParseCPUQuota(q); err != nil {
			v.fail(pre+".cpu.quota", "%v", err)
		}
	}
	if _, _, err := ParsePidsMax(p.Pids.Max); err != nil {
		v.fail(pre+".pids.max", "%v", err)
	}
	if p.Pids.ForkBombRestarts < 0 {
		v.fail(pre+".pids.fork_bomb_restarts", "must not be negative")
	}
	pr := p.Pressure
	if pr.Window.Duration <= 0 || pr.Window.Duration > 10_000_000_000 {
		v.fail(pre+".pressure.window", "%s: PSI windows are 500ms..10s", pr.Window.Duration)
	}
	if pr.Threshold.Duration <= 0 || pr.Threshold.Duration > pr.Window.Duration {
		v.fail(pre+".pressure.threshold", "%s: must be positive and within the window %s", pr.Threshold.Duration, pr.Window.Duration)
	}
	if pr.StallThreshold.Duration <= 0 || pr.StallThreshold.Duration > pr.Window.Duration {
		v.fail(pre+".pressure.stall_threshold", "%s: must be positive and within the window %s", pr.StallThreshold.Duration, pr.Window.Duration)
	}
	if pr.CPUThreshold.Duration <= 0 || pr.CPUThreshold.Duration > pr.Window.Duration {
		v.fail(pre+".pressure.cpu_threshold", "%s: must be positive and within the window %s", pr.CPUThreshold.Duration, pr.Window.Duration)
	}
	switch pr.StallAction {
	case "kill-offender", "none":
	case "freeze-restart", "restart":
		// Earlier releases' words; both now mean kill-offender (the
		// partition is restarted only when that does not end the stall).
	default:
		v.fail(pre+".pressure.stall_action", "%q: use kill-offender or none", pr.StallAction)
	}
	if pr.CPUQuota != "" {
		if _, err := ParseCPUQuota(pr.CPUQuota); err != nil {
			v.fail(pre+".pressure.cpu_quota", "%v", err)
		}
	}
	if pr.RestoreAfter.Duration <= 0 {
		v.fail(pre+".pressure.restore_after", "must be positive")
	}
	if !pr.Step.Set || (pr.Step.Percent == 0 && (pr.Step.Bytes == 0 || pr.Step.Bytes == Infinity)) {
		v.fail(pre+".pressure.step", "must be a positive size or percentage")
	}
	if !pr.Floor.Set || pr.Floor.IsInfinity() {
		v.fail(pre+".pressure.floor", "must be a finite size or percentage")
	}
	if pr.HostReserve.IsInfinity() || pr.HostReserve.Percent > maxHostReservePercent {
		v.fail(pre+".pressure.host_reserve", "%s: use a size or at most %d%% of the host's memory (0 leaves it to the kernel's OOM killer); more would kill partition processes under ordinary use",
			pr.HostReserve, maxHostReservePercent)
	}
	v.validateIO(pre, p.IO, pr.Window.Duration)
	v.liveness(pre+".liveness", p.Liveness)
}

// maxHostReservePercent bounds pressure.host_reserve: a host with half its
// memory available is not short of memory.
const maxHostReservePercent = 50

func (v *validator) liveness(pre string, l Liveness) {
	if l.Interval.Duration < time.Second {
		v.fail(pre+".interval", "%s: at least 1s (each probe connects to the partition's systemd)", l.Interval.Duration)
	}
	if l.Timeout.Duration <= 0 || l.Timeout.Duration > l.Interval.Duration {
		v.fail(pre+".timeout", "%s: must be positive and at most the interval %s", l.Timeout.Duration, l.Interval.Duration)
	}
	if l.Failures < 1 || l.Failures > 100 {
		v.fail(pre+".failures", "%d: use 1..100 consecutive failures", l.Failures)
	}
	if l.BootGrace.Duration < 0 {
		v.fail(pre+".boot_grace", "must not be negative")
	}
}

func (v *validator) security(pre string, s Security) {
	for _, f := range []struct{ key, val string }{
		{"selinux_type", s.SELinuxType}, {"selinux_file_type", s.SELinuxFileType},
	} {
		if f.val != "" && !selinuxTypeRE.MatchString(f.val) {
			v.fail(pre+"."+f.key, "%q is not an SELinux type (e.g. \"qm_t\"; letters, digits, '_', '.', '-')", f.val)
		}
	}
	if s.SELinuxLevel != "" && !selinuxLevelRE.MatchString(s.SELinuxLevel) {
		v.fail(pre+".selinux_level", "%q is not an SELinux level (e.g. \"s0\", \"s0:c1,c2\", \"s0-s0:c0.c1023\")", s.SELinuxLevel)
	}
	if s.SELinuxDisable {
		for _, f := range []struct {
			key string
			set bool
		}{
			{"selinux_type", s.SELinuxType != ""}, {"selinux_file_type", s.SELinuxFileType != ""},
			{"selinux_level", s.SELinuxLevel != ""}, {"selinux_nested", s.SELinuxNested},
		} {
			if f.set {
				v.fail(pre+".selinux_disable", "conflicts with %s: a partition without a label has no type, level or nesting", f.key)
			}
		}
	}
	if a := s.AppArmorProfile; a != "" && a != "unconfined" && !apparmorRE.MatchString(a) {
		v.fail(pre+".apparmor_profile", "%q is not an AppArmor profile name (\"\" = Podman's default, \"unconfined\", or a loaded profile)", a)
	}
}

func mapKeys(m map[string]string) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// ParseCPUQuota parses "200%" (two CPUs) into a fraction of one CPU (2.0).
func ParseCPUQuota(s string) (float64, error) {
	p, ok := strings.CutSuffix(strings.TrimSpace(s), "%")
	if !ok {
		return 0, fmt.Errorf("%q: a CPU quota is a percentage of one CPU, e.g. \"50%%\" or \"200%%\"", s)
	}
	f, err := strconv.ParseFloat(p, 64)
	if err != nil || f < 1 || f > 100000 {
		return 0, fmt.Errorf("%q: a CPU quota is 1%%..100000%%", s)
	}
	return f / 100, nil
}

// ParsePidsMax parses "max", a count or a percentage. It returns the count,
// or the percentage (one of them zero); "max" is (0, 0).
func ParsePidsMax(s string) (count uint64, percent float64, err error) {
	s = strings.TrimSpace(s)
	switch {
	case s == "" || s == "max" || s == "infinity":
		return 0, 0, nil
	case strings.HasSuffix(s, "%"):
		f, err := strconv.ParseFloat(strings.TrimSuffix(s, "%"), 64)
		if err != nil || f <= 0 || f > 100 {
			return 0, 0, fmt.Errorf("%q: a percentage must be in (0, 100]", s)
		}
		return 0, f, nil
	}
	n, err := strconv.ParseUint(s, 10, 64)
	if err != nil || n == 0 {
		return 0, 0, fmt.Errorf("%q: use \"max\", a positive count or a percentage", s)
	}
	return n, 0, nil
}

// Limit resolves pids.max against the kernel's pid_max: 0 means "max" (no
// limit).
func (p Pids) Limit(pidMax uint64) (uint64, error) {
	count, pct, err := ParsePidsMax(p.Max)
	if err != nil {
		return 0, err
	}
	if pct > 0 {
		count = uint64(float64(pidMax) * pct / 100)
	}
	return count, nil
}

// protectMemory checks memory_min and memory_low of a [[protect]] entry:
// "infinity" would let the unit pin every page of the host (nothing of
// qmd's or the kernel's could be reclaimed from it), so a size or a
// percentage is required; memory_min above memory_low is what systemd
// accepts but never means what was wanted (low protects less than min).
func (v *validator) protectMemory(pre string, pr Protect) {
	if pr.MemoryMin.IsInfinity() {
		v.fail(pre+".memory_min", "infinity would protect every page of the host for this unit: give a size such as \"256M\" or \"10%%\"")
	}
	if pr.MemoryLow.IsInfinity() {
		v.fail(pre+".memory_low", "infinity would protect every page of the host for this unit: give a size such as \"512M\" or \"20%%\"")
	}
	mn, lo := pr.MemoryMin, pr.MemoryLow
	if mn.Set && lo.Set && !mn.IsInfinity() && !lo.IsInfinity() && mn.Percent == 0 && lo.Percent == 0 && mn.Bytes > lo.Bytes {
		v.fail(pre+".memory_low", "%s is below memory_min %s: memory_low is the wider, best-effort protection and must be at least memory_min", lo, mn)
	}
}
