package config

import (
	"fmt"
	"path/filepath"
	"strings"
)

// Disk is [partition.disk]: the budget for the partition's writable state
// (the host directory mounted at /var). It is off unless max is set: it is
// a new behaviour that creates and mounts an image, and the default
// configuration must keep working on every host.
type Disk struct {
	// Max is the size of the partition's writable state: the size of the
	// loop-mounted ext4 image qmd creates for it.
	Max Size `toml:"max"`
	// Path is the host directory of the writable state. Empty: the host
	// side of the volume mounted at /var.
	Path string `toml:"path"`
	// Reserve is the free space the host filesystem keeps: qmd refuses to
	// create (or grow) the image when less than max + reserve is free, and
	// the free-space watch (where loop images are unavailable) reacts below
	// it. Empty: DefaultDiskReserve.
	Reserve Size `toml:"reserve"`
}

// DefaultDiskReserve is the free space kept on the host filesystem when
// [partition.disk] reserve is not set.
const DefaultDiskReserve = 1 << 30

// MinDiskMax is the smallest budget: below it an ext4 image holds hardly
// more than its own metadata.
const MinDiskMax = 16 << 20

// Enabled reports whether the disk budget is on (max is set).
func (d Disk) Enabled() bool { return d.Max.Set }

// ReserveBytes is the reserve in bytes, the default when unset.
func (d Disk) ReserveBytes() uint64 {
	if !d.Reserve.Set {
		return DefaultDiskReserve
	}
	return d.Reserve.Bytes
}

// DiskPath is the host directory the budget applies to: disk.path, or the
// host side of the volume mounted at /var. "" when neither exists.
func (p *Partition) DiskPath() string {
	if p.Disk.Path != "" {
		return filepath.Clean(p.Disk.Path)
	}
	for _, vol := range p.Volumes {
		parts := strings.Split(vol, ":")
		if len(parts) >= 2 && filepath.Clean(parts[1]) == "/var" && strings.HasPrefix(parts[0], "/") {
			return filepath.Clean(parts[0])
		}
	}
	return ""
}

// hostSystemDirs are directories a disk budget must never be mounted over:
// hiding them under an image would break the host.
var hostSystemDirs = map[string]bool{
	"/": true, "/bin": true, "/boot": true, "/dev": true, "/etc": true, "/home": true, "/lib": true,
	"/lib64": true, "/opt": true, "/proc": true, "/root": true, "/run": true, "/sbin": true, "/srv": true,
	"/sys": true, "/tmp": true, "/usr": true, "/var": true, "/var/lib": true, "/var/log": true,
	"/var/lib/containers": true, "/var/lib/qmd": true, "/var/tmp": true,
}

func (v *validator) disk(pre string, p *Partition) {
	d := p.Disk
	pre += ".disk"
	if !d.Enabled() {
		// Path and reserve alone would do nothing: say so instead of
		// silently running without a budget.
		if d.Path != "" {
			v.fail(pre+".path", "set max too: the disk budget is off without it")
		}
		if d.Reserve.Set {
			v.fail(pre+".reserve", "set max too: the disk budget is off without it")
		}
		return
	}
	switch {
	case d.Max.Percent > 0:
		v.fail(pre+".max", "%s: a disk budget is a size like \"4G\", not a percentage", d.Max)
	case d.Max.IsInfinity():
		v.fail(pre+".max", "%s: leave max unset for no disk budget", d.Max)
	case d.Max.Bytes < MinDiskMax:
		v.fail(pre+".max", "%s: below 16M an ext4 image holds little more than its metadata", d.Max)
	}
	if d.Reserve.Set && (d.Reserve.Percent > 0 || d.Reserve.IsInfinity()) {
		v.fail(pre+".reserve", "%s: use a size like \"1G\"", d.Reserve)
	}
	path := p.DiskPath()
	switch {
	case d.Path != "" && !strings.HasPrefix(d.Path, "/"):
		v.fail(pre+".path", "%q: must be an absolute path", d.Path)
	case d.Path != "" && strings.Contains(d.Path, ".."):
		v.fail(pre+".path", "%q: must not contain ..", d.Path)
	case path == "":
		v.fail(pre+".path", "no volume mounts /var in the partition: set path to the host directory of its writable state")
	case hostSystemDirs[path]:
		v.fail(pre+".path", "%q is a host system directory: qmd mounts the image over it", path)
	}
}

// diskHash is the part of CreateHash for [partition.disk]: whether a budget
// is mounted under the partition's state, and where. Max and reserve are
// not in it: a grown image is the same mount.
func (p *Partition) diskHash() string {
	if !p.Disk.Enabled() {
		return ""
	}
	return fmt.Sprintf("image at %s", p.DiskPath())
}
