//go:build remote

package podman

import (
	"fmt"
	"sort"
	"strconv"
	"strings"

	"github.com/containers/podman/v5/pkg/specgen"
	spec "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/containers/qmd/internal/config"
	"github.com/containers/qmd/internal/hostinfo"
	"github.com/containers/qmd/internal/runtime"
)

// Label names, re-exported for the tests of this package.
const (
	LabelPartition  = runtime.LabelPartition
	LabelConfigHash = runtime.LabelConfigHash
)

// Annotations that podman run's command line adds next to the security
// options: the server reads them back (a systemd-mode container whose
// label annotation names no "type:" gets container_init_t instead of the
// configured type), and podman inspect shows them.
const (
	annotationLabel        = "io.podman.annotations.label"    // define.InspectAnnotationLabel
	annotationApparmor     = "io.podman.annotations.apparmor" // define.InspectAnnotationApparmor
	annotationMountContext = "run.oci.mount_context_type"     // define.RunOCIMountContextType
)

// Spec builds the create request of a partition: what containers/qm's
// qm.container asks of Podman, from the (prepared) configuration.
func Spec(p *config.Partition, h hostinfo.Facts, cgroupParent string) (*specgen.SpecGenerator, error) {
	s := specgen.NewSpecGenerator("", true)
	s.CgroupParent = cgroupParent
	s.Name = p.ContainerNameOrDefault()
	s.Rootfs = p.Rootfs
	s.Command = append([]string(nil), p.Exec...)
	s.Labels = map[string]string{
		LabelPartition:  p.Name,
		LabelConfigHash: p.CreateHash(),
	}
	s.ReadOnlyFilesystem = &p.ReadOnly
	rwTmpfs := p.ReadOnly && p.ReadOnlyTmpfs
	s.ReadWriteTmpfs = &rwTmpfs
	s.Terminal = new(bool)
	s.Systemd = "true" // systemd mode when the init is systemd (/sbin/init)
	s.Hostname = p.Hostname
	s.Env = p.Env
	if len(p.Annotations) > 0 {
		s.Annotations = make(map[string]string, len(p.Annotations))
		for k, v := range p.Annotations {
			s.Annotations[k] = v
		}
	}
	switch p.Network {
	case "none":
		s.NetNS = specgen.Namespace{NSMode: specgen.NoNetwork}
	case "host":
		s.NetNS = specgen.Namespace{NSMode: specgen.Host}
	default:
		s.NetNS = specgen.Namespace{NSMode: specgen.Private}
	}
	for _, v := range p.Volumes {
		parts := strings.Split(v, ":")
		m := spec.Mount{Type: "bind", Source: parts[0], Destination: parts[1], Options: []string{"rbind"}}
		if len(parts) == 3 {
			m.Options = append(m.Options, strings.Split(parts[2], ",")...)
		}
		s.Mounts = append(s.Mounts, m)
	}
	s.CapAdd = []string{"all"}
	for _, c := range p.CapDrop {
		c = strings.ToUpper(c)
		if !strings.HasPrefix(c, "CAP_") {
			c = "CAP_" + c
		}
		s.CapDrop = append(s.CapDrop, c)
	}
	for _, d := range p.Devices {
		s.Devices = append(s.Devices, spec.LinuxDevice{Path: strings.TrimPrefix(d, "-")})
	}
	if len(p.Sysctl) > 0 {
		s.Sysctl = p.Sysctl
	}
	switch p.Seccomp {
	case "":
	case "unconfined":
		s.SeccompPolicy = "empty"
		s.SeccompProfilePath = "unconfined"
	default:
		s.SeccompProfilePath = p.Seccomp
	}
	security(s, p.Security)
	names := make([]string, 0, len(p.Rlimits))
	for k := range p.Rlimits {
		names = append(names, k)
	}
	sort.Strings(names)
	for _, k := range names {
		r, err := config.ParseRlimit(p.Rlimits[k])
		if err != nil {
			return nil, fmt.Errorf("partition %s rlimit %s: %w", p.Name, k, err)
		}
		// Lowercase names: the 4.3 server adds the RLIMIT_ prefix itself.
		s.Rlimits = append(s.Rlimits, spec.POSIXRlimit{Type: k, Soft: r.Soft, Hard: r.Hard})
	}
	oom := p.OOMScoreAdj
	s.OOMScoreAdj = &oom
	stop := uint(p.StopTimeout.Seconds())
	s.StopTimeout = &stop
	res := &spec.LinuxResources{}
	mem := h.MemTotal
	if m := p.Memory.Max; m.Set && !m.IsInfinity() {
		limit := int64(min(m.Resolve(mem), 1<<62))
		res.Memory = &spec.LinuxMemory{Limit: &limit}
		if sw := p.Memory.SwapMax; sw.Set && !sw.IsInfinity() {
			total := limit + int64(min(sw.Resolve(mem), 1<<61))
			res.Memory.Swap = &total
		}
	}
	if w := p.CPU.Weight; w != "" {
		shares := weightToShares(w)
		res.CPU = &spec.LinuxCPU{Shares: &shares}
	}
	if p.CPU.Quota != "" {
		f, err := config.ParseCPUQuota(p.CPU.Quota)
		if err != nil {
			return nil, fmt.Errorf("partition %s cpu.quota: %w", p.Name, err)
		}
		if res.CPU == nil {
			res.CPU = &spec.LinuxCPU{}
		}
		period := uint64(100000)
		quota := int64(f * float64(period))
		res.CPU.Period, res.CPU.Quota = &period, &quota
	}
	count, err := p.Pids.Limit(h.PidMax)
	if err != nil {
		return nil, fmt.Errorf("partition %s pids.max: %w", p.Name, err)
	}
	if count > 0 {
		n := int64(min(count, 1<<31))
		res.Pids = &spec.LinuxPids{Limit: n}
	}
	if res.Memory != nil || res.CPU != nil || res.Pids != nil {
		s.ResourceLimits = res
	}
	return s, nil
}

// security sets the SELinux label and the AppArmor profile as podman run
// --security-opt label=.../apparmor=... does: the same spec fields and the
// same annotations.
func security(s *specgen.SpecGenerator, sec config.Security) {
	annotate := func(k, v string) {
		if s.Annotations == nil {
			s.Annotations = map[string]string{}
		}
		s.Annotations[k] = v
	}
	if opts := sec.SELinuxOpts(); len(opts) > 0 {
		s.SelinuxOpts = opts
		annotate(annotationLabel, strings.Join(opts, ",label="))
	}
	if sec.SELinuxNested {
		nested := true
		s.LabelNested = &nested
		// What the podman CLI adds for label=nested (the server does
		// not): the partition's Podman needs selinuxfs and an unmasked
		// /proc to label its own containers.
		s.Unmask = append(s.Unmask, "/sys/fs/selinux", "/proc")
		s.Mounts = append(s.Mounts, spec.Mount{Type: "bind", Source: config.SELinuxFS, Destination: config.SELinuxFS})
		annotate(annotationMountContext, "rootcontext")
	}
	if sec.AppArmorProfile != "" {
		s.ApparmorProfile = sec.AppArmorProfile
		annotate(annotationApparmor, sec.AppArmorProfile)
	}
}

// weightToShares maps CPUWeight ("idle", 1..10000) to cgroup v1 cpu.shares
// (2..262144) as systemd does; Podman converts shares back on cgroup v2.
func weightToShares(w string) uint64 {
	if w == "idle" {
		return 2
	}
	n, err := strconv.ParseUint(w, 10, 64)
	if err != nil || n < 1 || n > 10000 {
		return 1024
	}
	return 2 + (n-1)*(262144-2)/9999
}
