package cgroups

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"sort"
	"strconv"
	"strings"

	sddbus "github.com/coreos/go-systemd/v22/dbus"
	godbus "github.com/godbus/dbus/v5"
)

// Device is a block device number.
type Device struct{ Major, Minor uint32 }

func (d Device) String() string { return fmt.Sprintf("%d:%d", d.Major, d.Minor) }

// less orders devices by major, then minor number.
func (d Device) less(o Device) bool {
	return d.Major < o.Major || (d.Major == o.Major && d.Minor < o.Minor)
}

// ParseDevice parses "MAJ:MIN".
func ParseDevice(s string) (Device, error) {
	a, b, ok := strings.Cut(s, ":")
	if !ok {
		return Device{}, fmt.Errorf("%q is not MAJ:MIN", s)
	}
	ma, err1 := strconv.ParseUint(a, 10, 32)
	mi, err2 := strconv.ParseUint(b, 10, 32)
	if err1 != nil || err2 != nil {
		return Device{}, fmt.Errorf("%q is not MAJ:MIN", s)
	}
	return Device{uint32(ma), uint32(mi)}, nil
}

// IOLimit is the throttle of one device: bytes and IOs per second, Max
// for no limit (io.max's "max").
type IOLimit struct {
	Dev                      Device
	RBps, WBps, RIOPS, WIOPS uint64
}

// NoIOLimit is a device without limits.
func NoIOLimit(d Device) IOLimit {
	return IOLimit{Dev: d, RBps: Max, WBps: Max, RIOPS: Max, WIOPS: Max}
}

func (l IOLimit) String() string {
	return fmt.Sprintf("%s rbps=%s wbps=%s riops=%s wiops=%s", l.Dev, formatMax(l.RBps), formatMax(l.WBps), formatMax(l.RIOPS), formatMax(l.WIOPS))
}

// IOStat is the IO a cgroup did on one device since it was created.
type IOStat struct {
	Dev            Device
	RBytes, WBytes uint64
	RIOs, WIOs     uint64
}

// ParseIOMax parses v2 io.max: one line per device with limits,
// "8:0 rbps=1048576 wbps=max riops=max wiops=max"; keys the kernel
// does not write stay Max.
func ParseIOMax(file string, data []byte) ([]IOLimit, error) {
	var out []IOLimit
	err := eachDeviceLine(file, data, func(line int, d Device, kvs []string) error {
		l := NoIOLimit(d)
		for _, kv := range kvs {
			k, v, ok := strings.Cut(kv, "=")
			if !ok {
				return perr(file, line, "%q is not key=value", kv)
			}
			n := Max
			if v != "max" {
				var err error
				if n, err = strconv.ParseUint(v, 10, 64); err != nil {
					return perr(file, line, "%s: %q is not a number or max", k, v)
				}
			}
			switch k {
			case "rbps":
				l.RBps = n
			case "wbps":
				l.WBps = n
			case "riops":
				l.RIOPS = n
			case "wiops":
				l.WIOPS = n
			}
		}
		out = append(out, l)
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// ParseIOStat parses v2 io.stat ("8:0 rbytes=.. wbytes=.. rios=.. wios=..
// dbytes=.. dios=..").
func ParseIOStat(file string, data []byte) ([]IOStat, error) {
	var out []IOStat
	err := eachDeviceLine(file, data, func(_ int, d Device, kvs []string) error {
		s := IOStat{Dev: d}
		for _, kv := range kvs {
			k, v, ok := strings.Cut(kv, "=")
			if !ok {
				continue // newer kernels may add other formats (cost.*)
			}
			n, err := strconv.ParseUint(v, 10, 64)
			if err != nil {
				continue
			}
			switch k {
			case "rbytes":
				s.RBytes = n
			case "wbytes":
				s.WBytes = n
			case "rios":
				s.RIOs = n
			case "wios":
				s.WIOs = n
			}
		}
		out = append(out, s)
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// eachDeviceLine calls fn with the line number, the device and the
// other fields of each non-empty "MAJ:MIN key=value..." line of a v2 io
// file, stopping at the first error.
func eachDeviceLine(file string, data []byte, fn func(line int, d Device, kvs []string) error) error {
	for i, line := range strings.Split(string(data), "\n") {
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		d, err := ParseDevice(f[0])
		if err != nil {
			return perr(file, i+1, "%v", err)
		}
		if err := fn(i+1, d, f[1:]); err != nil {
			return err
		}
	}
	return nil
}

// parseV1Devices parses a v1 blkio.throttle.*_device file: "8:0 1048576"
// per line (a limit of 0 is never listed: it means none).
func parseV1Devices(file string, data []byte) (map[Device]uint64, error) {
	out := map[Device]uint64{}
	for i, line := range strings.Split(string(data), "\n") {
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		if len(f) != 2 {
			return nil, perr(file, i+1, "want \"MAJ:MIN VALUE\", got %q", line)
		}
		d, err := ParseDevice(f[0])
		if err != nil {
			return nil, perr(file, i+1, "%v", err)
		}
		n, err := strconv.ParseUint(f[1], 10, 64)
		if err != nil {
			return nil, perr(file, i+1, "%q is not a number", f[1])
		}
		out[d] = n
	}
	return out, nil
}

// parseV1IOService parses blkio.throttle.io_service_bytes(_recursive) or
// io_serviced: "8:0 Read 4096" lines and a "Total" line.
func parseV1IOService(file string, data []byte) (map[Device][2]uint64, error) {
	out := map[Device][2]uint64{}
	for i, line := range strings.Split(string(data), "\n") {
		f := strings.Fields(line)
		if len(f) != 3 {
			continue // "Total N"
		}
		d, err := ParseDevice(f[0])
		if err != nil {
			return nil, perr(file, i+1, "%v", err)
		}
		n, err := strconv.ParseUint(f[2], 10, 64)
		if err != nil {
			return nil, perr(file, i+1, "%q is not a number", f[2])
		}
		v := out[d]
		switch f[1] {
		case "Read":
			v[0] = n
		case "Write":
			v[1] = n
		}
		out[d] = v
	}
	return out, nil
}

// The v1 throttle files, in IOLimit field order.
var v1Throttle = [4]string{
	"blkio.throttle.read_bps_device", "blkio.throttle.write_bps_device",
	"blkio.throttle.read_iops_device", "blkio.throttle.write_iops_device",
}

func (l *IOLimit) fields() [4]*uint64 { return [4]*uint64{&l.RBps, &l.WBps, &l.RIOPS, &l.WIOPS} }

// IOMax reads the device limits (v2 io.max; v1 the four
// blkio.throttle.*_device files), sorted by device. A hierarchy without
// them (no io controller enabled, a kernel without
// CONFIG_BLK_DEV_THROTTLING) wraps ErrUnsupported.
func (c *Cgroup) IOMax() ([]IOLimit, error) {
	if c.h.Version == V2 {
		f, b, err := c.read("io", "io.max")
		if err != nil {
			return nil, c.ioErr("io.max", err)
		}
		return ParseIOMax(f, b)
	}
	all := map[Device]*IOLimit{}
	for i, name := range v1Throttle {
		f, b, err := c.read("blkio", name)
		if err != nil {
			return nil, c.ioErr(name, err)
		}
		m, err := parseV1Devices(f, b)
		if err != nil {
			return nil, err
		}
		for d, v := range m {
			l, ok := all[d]
			if !ok {
				nl := NoIOLimit(d)
				l = &nl
				all[d] = l
			}
			*l.fields()[i] = v
		}
	}
	out := make([]IOLimit, 0, len(all))
	for _, l := range all {
		out = append(out, *l)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Dev.less(out[j].Dev) })
	return out, nil
}

// IOMaxOf is the limit of one device (NoIOLimit when none is set).
func (c *Cgroup) IOMaxOf(d Device) (IOLimit, error) {
	ls, err := c.IOMax()
	if err != nil {
		return IOLimit{}, err
	}
	for _, l := range ls {
		if l.Dev == d {
			return l, nil
		}
	}
	return NoIOLimit(d), nil
}

// SetIOMax sets all four limits of one device (Max removes a limit): v2
// one io.max line, v1 the four blkio.throttle files, where 0 removes.
func (c *Cgroup) SetIOMax(l IOLimit) error {
	if c.h.Version == V2 {
		f := c.file("io", "io.max")
		if !fileExists(f) {
			return c.ioErr("io.max", fs.ErrNotExist)
		}
		return writeFile(f, l.String())
	}
	for i, name := range v1Throttle {
		f := c.file("blkio", name)
		if !fileExists(f) {
			return c.ioErr(name, fs.ErrNotExist)
		}
		v := *l.fields()[i]
		if v == Max {
			v = 0
		}
		if err := writeFile(f, l.Dev.String()+" "+strconv.FormatUint(v, 10)); err != nil {
			return err
		}
	}
	return nil
}

// ioErr turns a missing IO file of an existing cgroup into ErrUnsupported:
// the controller is not enabled for it or the kernel lacks the feature.
func (c *Cgroup) ioErr(name string, err error) error {
	if errors.Is(err, fs.ErrNotExist) && c.Exists() {
		return fmt.Errorf("%s (%s): %w", name, c.Path(), ErrUnsupported)
	}
	return err
}

// IOStat reads how much IO the cgroup (with its descendants) did per
// device: v2 io.stat, v1 blkio.throttle.io_service_bytes_recursive and
// io_serviced_recursive (counted by the throttle layer for every bio,
// limited or not).
func (c *Cgroup) IOStat() ([]IOStat, error) {
	if c.h.Version == V2 {
		f, b, err := c.read("io", "io.stat")
		if err != nil {
			return nil, c.ioErr("io.stat", err)
		}
		return ParseIOStat(f, b)
	}
	f, b, err := c.read("blkio", "blkio.throttle.io_service_bytes_recursive")
	if err != nil {
		return nil, c.ioErr("blkio.throttle.io_service_bytes_recursive", err)
	}
	bytes, err := parseV1IOService(f, b)
	if err != nil {
		return nil, err
	}
	ios := map[Device][2]uint64{}
	if f, b, err := c.read("blkio", "blkio.throttle.io_serviced_recursive"); err == nil {
		ios, _ = parseV1IOService(f, b)
	}
	out := make([]IOStat, 0, len(bytes))
	for d, v := range bytes {
		n := ios[d]
		out = append(out, IOStat{Dev: d, RBytes: v[0], WBytes: v[1], RIOs: n[0], WIOs: n[1]})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Dev.less(out[j].Dev) })
	return out, nil
}

// IOWeightToBFQ maps io.weight / IOWeight (1..10000, default 100) to the
// BFQ weight (1..1000, default 100): linear on both sides of the default,
// so 100 stays 100, 50 stays 50 and 10000 becomes 1000.
func IOWeightToBFQ(w uint64) uint64 {
	switch {
	case w < 1:
		return 1
	case w <= 100:
		return w
	case w >= 10000:
		return 1000
	}
	return 100 + (w-100)*900/9900
}

// IOWeight reads the default IO weight, in io.weight's 1..10000 scale
// where it can: v2 io.weight ("default N"), else io.bfq.weight / v1
// blkio.bfq.weight / blkio.weight as they are (1..1000).
func (c *Cgroup) IOWeight() (uint64, error) {
	names := []string{"io.weight", "io.bfq.weight"}
	ctrl := "io"
	if c.h.Version == V1 {
		names, ctrl = []string{"blkio.bfq.weight", "blkio.weight"}, "blkio"
	}
	for _, name := range names {
		f, b, err := c.read(ctrl, name)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return 0, err
		}
		return parseWeight(f, b)
	}
	return 0, c.ioErr(strings.Join(names, "/"), fs.ErrNotExist)
}

// parseWeight reads "default 100" (and per-device lines after it) or a
// bare number (older kernels' blkio.weight).
func parseWeight(file string, data []byte) (uint64, error) {
	for i, line := range strings.Split(string(data), "\n") {
		f := strings.Fields(line)
		if len(f) == 1 || (len(f) == 2 && f[0] == "default") {
			n, err := strconv.ParseUint(f[len(f)-1], 10, 64)
			if err != nil {
				return 0, perr(file, i+1, "%q is not a weight", line)
			}
			return n, nil
		}
	}
	return 0, perr(file, 0, "no default weight")
}

// SetIOWeight sets the default IO weight (1..10000): v2 io.weight, or
// io.bfq.weight (mapped to 1..1000) where the kernel has only BFQ's; v1
// blkio.bfq.weight (mapped) or CFQ's blkio.weight (mapped, 10..1000).
// Neither file: ErrUnsupported.
func (c *Cgroup) SetIOWeight(w uint64) error {
	if w < 1 || w > 10000 {
		return fmt.Errorf("io weight %d out of range 1..10000", w)
	}
	type cand struct {
		name string
		v    uint64
	}
	bfq := IOWeightToBFQ(w)
	cands := []cand{{"io.weight", w}, {"io.bfq.weight", bfq}}
	ctrl := "io"
	if c.h.Version == V1 {
		cands, ctrl = []cand{{"blkio.bfq.weight", bfq}, {"blkio.weight", max(bfq, 10)}}, "blkio"
	}
	for _, k := range cands {
		f := c.file(ctrl, k.name)
		if !fileExists(f) {
			continue
		}
		// A bare number: io.weight and v2 io.bfq.weight also take
		// "default N", but v1 blkio.bfq.weight takes only the number.
		return writeFile(f, strconv.FormatUint(k.v, 10))
	}
	return c.ioErr(cands[0].name+"/"+cands[1].name, fs.ErrNotExist)
}

// SetIOWeight writes io.weight (or the BFQ / v1 equivalent).
func (s CgroupfsSetter) SetIOWeight(_ context.Context, w uint64) error {
	return s.Cgroup.SetIOWeight(w)
}

// SetIOMax writes io.max (v1: blkio.throttle.*).
func (s CgroupfsSetter) SetIOMax(_ context.Context, l IOLimit) error { return s.Cgroup.SetIOMax(l) }

// SetIOWeight sets IOWeight (1..10000).
func (s *SystemdSetter) SetIOWeight(ctx context.Context, w uint64) error {
	if w < 1 || w > 10000 {
		return fmt.Errorf("io weight %d out of range 1..10000", w)
	}
	return s.set(ctx, u64("IOWeight", w))
}

// ioDeviceLimit is one entry of systemd's IO*Max properties (D-Bus
// signature a(st)): a device node and a value.
type ioDeviceLimit struct {
	Path  string
	Value uint64
}

// SetIOMax sets IOReadBandwidthMax, IOWriteBandwidthMax, IOReadIOPSMax and
// IOWriteIOPSMax for one device. The device is named /dev/block/MAJ:MIN,
// which udev keeps for every block device and systemd resolves with
// stat(); Max ("infinity") lifts the limit.
func (s *SystemdSetter) SetIOMax(ctx context.Context, l IOLimit) error {
	dev := "/dev/block/" + l.Dev.String()
	one := func(name string, v uint64) sddbus.Property {
		return sddbus.Property{Name: name, Value: godbus.MakeVariant([]ioDeviceLimit{{Path: dev, Value: v}})}
	}
	return s.set(ctx, one("IOReadBandwidthMax", l.RBps), one("IOWriteBandwidthMax", l.WBps),
		one("IOReadIOPSMax", l.RIOPS), one("IOWriteIOPSMax", l.WIOPS))
}
