package config

import (
	"fmt"
	"io/fs"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// IO is the partition's block IO policy ([partition.io]): a proportional
// weight, static per-device limits, and the reaction to IO pressure of the
// protected (ASIL) units, which lowers the partition's bandwidth limits in
// steps and restores them with hysteresis.
type IO struct {
	// Weight is IOWeight= / io.weight (1..10000; v1 blkio.bfq.weight
	// mapped to 1..1000). containers/qm's qm.container sets 50.
	Weight uint64 `toml:"weight"`
	// Threshold is the ASIL io "some" stall per PSI window
	// (partition.pressure.window) that counts as IO pressure.
	Threshold Duration `toml:"threshold"`
	// Step: each confirmed IO pressure window lowers the bps limits by
	// this share of the current limit ("25%") or by this many bytes/s.
	Step Size `toml:"step"`
	// Floor: the reaction never sets a bps limit below this (bytes/s).
	Floor Size `toml:"floor"`
	// RestoreAfter: one step back up after this long without IO pressure.
	RestoreAfter Duration `toml:"restore_after"`
	// Devices are the static per-device limits; also the devices the
	// reaction throttles (when none is given: the devices the partition
	// did IO on).
	Devices []IODevice `toml:"device"`
}

// IODevice is one [[partition.io.device]]: a block device and its limits.
// An unset rate or IOPS (zero Size / 0) means no limit.
type IODevice struct {
	Path      string `toml:"path"` // "/dev/vda" or "MAJ:MIN"
	ReadBps   Size   `toml:"read_bps"`
	WriteBps  Size   `toml:"write_bps"`
	ReadIOPS  int64  `toml:"read_iops"`
	WriteIOPS int64  `toml:"write_iops"`
}

// DefaultIO is the built-in [partition.io]: weight 50 as containers/qm,
// no static limits; the reaction is armed (it needs [[protect]] units
// with watch_pressure to ever fire).
func DefaultIO() IO {
	return IO{
		Weight:       50,
		Threshold:    Duration{100 * time.Millisecond},
		Step:         Size{Percent: 25, Set: true, Original: "25%"},
		Floor:        Size{Bytes: 1 << 20, Set: true, Original: "1M"},
		RestoreAfter: Duration{30 * time.Second},
	}
}

// majMinRE is a device number as the kernel writes it in io.max, io.stat
// and blkio.throttle.*: "8:0".
var majMinRE = regexp.MustCompile(`^([0-9]{1,10}):([0-9]{1,10})$`)

// ParseMajMin parses "MAJ:MIN".
func ParseMajMin(s string) (major, minor uint32, ok bool) {
	m := majMinRE.FindStringSubmatch(s)
	if m == nil {
		return 0, 0, false
	}
	ma, err1 := strconv.ParseUint(m[1], 10, 32)
	mi, err2 := strconv.ParseUint(m[2], 10, 32)
	if err1 != nil || err2 != nil {
		return 0, 0, false
	}
	return uint32(ma), uint32(mi), true
}

// StepValue returns the step as a share of the current limit (pct > 0) or an
// absolute byte rate.
func (x IO) StepValue() (pct float64, bytes uint64) {
	if x.Step.Percent > 0 {
		return x.Step.Percent / 100, 0
	}
	return 0, x.Step.Bytes
}

// validateIO checks [partition.io]. It does not touch the host: whether a
// device path exists is Prepare's business (prepareIO).
func (v *validator) validateIO(pre string, io IO, window time.Duration) {
	pre += ".io"
	if io.Weight < 1 || io.Weight > 10000 {
		v.fail(pre+".weight", "%d: must be in 1..10000 (IOWeight)", io.Weight)
	}
	if io.Threshold.Duration <= 0 || (window > 0 && io.Threshold.Duration > window) {
		v.fail(pre+".threshold", "%s: must be positive and within the pressure window %s", io.Threshold.Duration, window)
	}
	switch {
	case !io.Step.Set || io.Step.IsInfinity() || (io.Step.Percent == 0 && io.Step.Bytes == 0):
		v.fail(pre+".step", "must be a positive rate (\"10M\") or a percentage of the current limit (\"25%%\")")
	case io.Step.Percent >= 100:
		v.fail(pre+".step", "%s: a step of 100%% or more would stop the partition's IO; use less", io.Step)
	}
	if !io.Floor.Set || io.Floor.IsInfinity() || io.Floor.Percent > 0 || io.Floor.Bytes == 0 {
		v.fail(pre+".floor", "must be a positive rate in bytes per second, e.g. \"1M\" (a percentage has no meaning here)")
	}
	if io.RestoreAfter.Duration <= 0 {
		v.fail(pre+".restore_after", "must be positive")
	}
	seen := map[string]int{}
	for i, d := range io.Devices {
		key := fmt.Sprintf("%s.device[%d]", pre, i)
		switch {
		case d.Path == "":
			v.fail(key+".path", "must name a block device (\"/dev/vda\") or \"MAJ:MIN\"")
			continue
		case strings.HasPrefix(d.Path, "/"):
			if !strings.HasPrefix(d.Path, "/dev/") || strings.Contains(d.Path, "/../") {
				v.fail(key+".path", "%q: a block device path is /dev/NAME", d.Path)
			}
		default:
			if _, _, ok := ParseMajMin(d.Path); !ok {
				v.fail(key+".path", "%q: use a block device path (\"/dev/vda\") or \"MAJ:MIN\" (\"253:0\")", d.Path)
			}
		}
		if j, dup := seen[d.Path]; dup {
			v.fail(key+".path", "%q is already configured in device[%d]", d.Path, j)
		}
		seen[d.Path] = i
		if d.ReadIOPS < 0 {
			v.fail(key+".read_iops", "%d: must not be negative (0: no limit)", d.ReadIOPS)
		}
		if d.WriteIOPS < 0 {
			v.fail(key+".write_iops", "%d: must not be negative (0: no limit)", d.WriteIOPS)
		}
		for _, r := range []struct {
			name string
			s    Size
		}{{"read_bps", d.ReadBps}, {"write_bps", d.WriteBps}} {
			if !r.s.Set {
				continue
			}
			if r.s.Percent > 0 {
				v.fail(key+"."+r.name, "%s: a rate in bytes per second (\"100M\") or \"max\", not a percentage", r.s)
			} else if r.s.Bytes == 0 {
				v.fail(key+"."+r.name, "0 would stop the partition's IO on the device; use a positive rate or \"max\"")
			}
		}
	}
}

// prepareIO checks the configured devices against the host: a path that
// does not exist is skipped with a warning (one configuration serves
// several hosts, like an optional device); a path that is not a block
// device is an error naming the key.
func prepareIO(c *Config, h Host, pre string, p *Partition) []error {
	v := &validator{origin: c.origin}
	keep := p.IO.Devices[:0:0]
	for i, d := range p.IO.Devices {
		key := fmt.Sprintf("%s.io.device[%d].path", pre, i)
		if !strings.HasPrefix(d.Path, "/") {
			keep = append(keep, d)
			continue
		}
		fi, err := h.Lstat(d.Path)
		if err != nil {
			c.Warnings = append(c.Warnings, fmt.Sprintf("%s: %s not present on this host (%v), skipped", key, d.Path, unwrapPathErr(err)))
			continue
		}
		// Lstat: /dev/disk/by-* names are symlinks; the device they
		// point to is resolved when the limits are applied.
		if fi.Mode()&fs.ModeSymlink == 0 && (fi.Mode()&fs.ModeDevice == 0 || fi.Mode()&fs.ModeCharDevice != 0) {
			v.fail(key, "%s is not a block device", d.Path)
			continue
		}
		keep = append(keep, d)
	}
	p.IO.Devices = keep
	return v.errs
}
