package config

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"golang.org/x/sys/unix"
)

// Where the kernel shows an active SELinux and AppArmor.
const (
	SELinuxFS  = "/sys/fs/selinux"
	AppArmorFS = "/sys/kernel/security/apparmor"
)

// Host is what Prepare needs to know about the machine. Tests use a fake.
type Host interface {
	// Lstat reports whether a path exists (symlinks are not followed:
	// an init inside a rootfs may be an absolute link into that rootfs).
	Lstat(path string) (fs.FileInfo, error)
	// RlimitHard returns the hard limit of the named resource ("nofile").
	RlimitHard(name string) (uint64, bool)
}

// Prepare checks the configuration against the host and adapts what the
// host cannot honour, as a person would expect: a missing optional device
// is skipped, an rlimit above the host's hard limit is clamped, SELinux
// nesting on a host without SELinux is dropped (all with a warning in
// c.Warnings); a missing rootfs, init, volume source, seccomp
// profile or required device, or an AppArmor profile on a host without
// AppArmor, is an error naming the key.
func Prepare(c *Config, h Host) error {
	v := &validator{origin: c.origin}
	fail := v.fail
	for i := range c.Partitions {
		p := &c.Partitions[i]
		pre := fmt.Sprintf("partition[%s]", p.Name)
		if fi, err := h.Lstat(p.Rootfs); err != nil {
			fail(pre+".rootfs", "%s: %v", p.Rootfs, unwrapPathErr(err))
		} else if !fi.IsDir() {
			fail(pre+".rootfs", "%s is not a directory", p.Rootfs)
		} else if len(p.Exec) > 0 && strings.HasPrefix(p.Exec[0], "/") {
			if _, err := h.Lstat(filepath.Join(p.Rootfs, p.Exec[0])); err != nil {
				fail(pre+".exec", "%s not found in rootfs %s", p.Exec[0], p.Rootfs)
			}
		}
		for _, vol := range p.Volumes {
			src := strings.SplitN(vol, ":", 2)[0]
			if _, err := h.Lstat(src); err != nil {
				fail(pre+".volumes", "%q: host path %s: %v", vol, src, unwrapPathErr(err))
			}
		}
		if p.Seccomp != "" && p.Seccomp != "unconfined" {
			if _, err := h.Lstat(p.Seccomp); err != nil {
				fail(pre+".seccomp_profile", "%s: %v", p.Seccomp, unwrapPathErr(err))
			}
		}
		// Without SELinux Podman ignores the label options, but nesting
		// bind-mounts /sys/fs/selinux, which is then missing: skip it.
		if p.Security.SELinuxNested {
			if _, err := h.Lstat(SELinuxFS); err != nil {
				c.Warnings = append(c.Warnings, fmt.Sprintf("%s.security.selinux_nested: SELinux is not enabled on this host (%s %v), ignored", pre, SELinuxFS, unwrapPathErr(err)))
				p.Security.SELinuxNested = false
			}
		}
		// Podman refuses a named AppArmor profile when AppArmor is off.
		if a := p.Security.AppArmorProfile; a != "" && a != "unconfined" {
			if _, err := h.Lstat(AppArmorFS); err != nil {
				fail(pre+".security.apparmor_profile", "%q: AppArmor is not enabled on this host (%s %v)", a, AppArmorFS, unwrapPathErr(err))
			}
		}
		devs := p.Devices[:0:0]
		for _, d := range p.Devices {
			optional := strings.HasPrefix(d, "-")
			path := strings.TrimPrefix(d, "-")
			if _, err := h.Lstat(path); err != nil {
				if optional {
					c.Warnings = append(c.Warnings, fmt.Sprintf("%s.devices: optional %s not present, skipped", pre, path))
					continue
				}
				fail(pre+".devices", "%s: %v", path, unwrapPathErr(err))
				continue
			}
			devs = append(devs, d)
		}
		p.Devices = devs
		v.errs = append(v.errs, prepareIO(c, h, pre, p)...)
		names := make([]string, 0, len(p.Rlimits))
		for k := range p.Rlimits {
			names = append(names, k)
		}
		sort.Strings(names)
		for _, k := range names {
			r, err := ParseRlimit(p.Rlimits[k])
			if err != nil {
				fail(pre+".rlimits."+k, "%v", err)
				continue
			}
			hard, ok := h.RlimitHard(k)
			if !ok || r.Hard <= hard {
				continue
			}
			clamped := Rlimit{Soft: min(r.Soft, hard), Hard: hard}
			c.Warnings = append(c.Warnings, fmt.Sprintf("%s.rlimits.%s: %s exceeds the host's hard limit, clamped to %s", pre, k, r, clamped))
			p.Rlimits[k] = clamped.String()
		}
	}
	return errors.Join(v.errs...)
}

func unwrapPathErr(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		if errors.Is(pe.Err, fs.ErrNotExist) {
			return errors.New("does not exist")
		}
		return pe.Err
	}
	return err
}

// OSHost is the real host.
type OSHost struct{}

// Lstat calls os.Lstat.
func (OSHost) Lstat(path string) (fs.FileInfo, error) { return os.Lstat(path) }

var rlimitResource = map[string]int{
	"as": unix.RLIMIT_AS, "core": unix.RLIMIT_CORE, "cpu": unix.RLIMIT_CPU, "data": unix.RLIMIT_DATA,
	"fsize": unix.RLIMIT_FSIZE, "locks": unix.RLIMIT_LOCKS, "memlock": unix.RLIMIT_MEMLOCK,
	"msgqueue": unix.RLIMIT_MSGQUEUE, "nice": unix.RLIMIT_NICE, "nofile": unix.RLIMIT_NOFILE,
	"nproc": unix.RLIMIT_NPROC, "rss": unix.RLIMIT_RSS, "rtprio": unix.RLIMIT_RTPRIO,
	"rttime": unix.RLIMIT_RTTIME, "sigpending": unix.RLIMIT_SIGPENDING, "stack": unix.RLIMIT_STACK,
}

// RlimitHard reads qmd's own hard limit, which the Podman service (also
// started by root on this host) shares: a container cannot get more.
func (OSHost) RlimitHard(name string) (uint64, bool) {
	res, ok := rlimitResource[name]
	if !ok {
		return 0, false
	}
	var r unix.Rlimit
	if err := unix.Getrlimit(res, &r); err != nil {
		return 0, false
	}
	return r.Max, true
}
