package cgroups

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"

	sddbus "github.com/coreos/go-systemd/v22/dbus"

	"github.com/containers/qmd/internal/testutil"
)

func TestIOV2ReadWrite(t *testing.T) {
	h, cg := fakeV2(t)
	testutil.WriteTree(t, h.Root, map[string]string{
		"qm/io.max":    "254:0 rbps=1048576 wbps=max riops=max wiops=100\n",
		"qm/io.stat":   "254:0 rbytes=4096 wbytes=8192 rios=1 wios=2 dbytes=0 dios=0\n7:0 rbytes=1 wbytes=2 rios=3 wios=4 dbytes=0 dios=0 cost.vrate=100.00\n",
		"qm/io.weight": "default 100\n254:0 200\n",
	})
	ls, err := cg.IOMax()
	if err != nil {
		t.Fatal(err)
	}
	want := IOLimit{Dev: Device{254, 0}, RBps: 1 << 20, WBps: Max, RIOPS: Max, WIOPS: 100}
	if len(ls) != 1 || ls[0] != want {
		t.Errorf("io.max: %+v", ls)
	}
	l := IOLimit{Dev: Device{7, 0}, RBps: Max, WBps: 5 << 20, RIOPS: 10, WIOPS: Max}
	if err := cg.SetIOMax(l); err != nil {
		t.Fatal(err)
	}
	if got := readFile(t, filepath.Join(h.Root, "qm/io.max")); got != "7:0 rbps=max wbps=5242880 riops=10 wiops=max" {
		t.Errorf("io.max written: %q", got)
	}
	st, err := cg.IOStat()
	if err != nil {
		t.Fatal(err)
	}
	if len(st) != 2 || st[0] != (IOStat{Dev: Device{254, 0}, RBytes: 4096, WBytes: 8192, RIOs: 1, WIOs: 2}) ||
		st[1] != (IOStat{Dev: Device{7, 0}, RBytes: 1, WBytes: 2, RIOs: 3, WIOs: 4}) {
		t.Errorf("io.stat: %+v", st)
	}
	if w, err := cg.IOWeight(); err != nil || w != 100 {
		t.Errorf("io.weight: %d %v", w, err)
	}
	if err := cg.SetIOWeight(50); err != nil {
		t.Fatal(err)
	}
	if got := readFile(t, filepath.Join(h.Root, "qm/io.weight")); got != "50" {
		t.Errorf("io.weight written: %q", got)
	}
	if err := cg.SetIOWeight(0); err == nil {
		t.Error("weight 0 accepted")
	}
}

// A kernel whose only proportional IO control is BFQ's: io.bfq.weight
// gets the weight mapped to 1..1000.
func TestIOV2BFQFallback(t *testing.T) {
	h, cg := fakeV2(t)
	testutil.WriteTree(t, h.Root, map[string]string{"qm/io.bfq.weight": "default 100\n"})
	if err := cg.SetIOWeight(5050); err != nil {
		t.Fatal(err)
	}
	if got := readFile(t, filepath.Join(h.Root, "qm/io.bfq.weight")); got != "550" {
		t.Errorf("io.bfq.weight written: %q", got)
	}
}

// Without the io controller the cgroup has no io.* files: unsupported,
// naming the file; a cgroup that is gone is not "unsupported".
func TestIOV2Unsupported(t *testing.T) {
	h, cg := fakeV2(t)
	for name, err := range map[string]error{
		"IOMax":       func() error { _, err := cg.IOMax(); return err }(),
		"SetIOMax":    cg.SetIOMax(NoIOLimit(Device{8, 0})),
		"IOStat":      func() error { _, err := cg.IOStat(); return err }(),
		"IOWeight":    func() error { _, err := cg.IOWeight(); return err }(),
		"SetIOWeight": cg.SetIOWeight(50),
	} {
		if !errors.Is(err, ErrUnsupported) || !strings.Contains(err.Error(), "io.") {
			t.Errorf("%s: want ErrUnsupported naming the file, got %v", name, err)
		}
	}
	gone, _ := h.Open("/gone")
	if _, err := gone.IOMax(); err == nil || errors.Is(err, ErrUnsupported) {
		t.Errorf("missing cgroup: %v", err)
	}
}

func TestIOV1ReadWrite(t *testing.T) {
	h, cg := fakeV1(t)
	testutil.WriteTree(t, h.Root, map[string]string{
		"blkio/qm/cgroup.procs":                              "100\n",
		"blkio/qm/blkio.bfq.weight":                          "100\n",
		"blkio/qm/blkio.throttle.read_bps_device":            "254:0 1048576\n",
		"blkio/qm/blkio.throttle.write_bps_device":           "",
		"blkio/qm/blkio.throttle.read_iops_device":           "",
		"blkio/qm/blkio.throttle.write_iops_device":          "254:0 300\n7:1 5\n",
		"blkio/qm/blkio.throttle.io_service_bytes_recursive": "254:0 Read 4096\n254:0 Write 8192\n254:0 Sync 0\n254:0 Async 12288\n254:0 Discard 0\n254:0 Total 12288\nTotal 12288\n",
		"blkio/qm/blkio.throttle.io_serviced_recursive":      "254:0 Read 1\n254:0 Write 2\n254:0 Total 3\nTotal 3\n",
	})
	ls, err := cg.IOMax()
	if err != nil {
		t.Fatal(err)
	}
	if len(ls) != 2 || ls[0] != (IOLimit{Dev: Device{7, 1}, RBps: Max, WBps: Max, RIOPS: Max, WIOPS: 5}) ||
		ls[1] != (IOLimit{Dev: Device{254, 0}, RBps: 1 << 20, WBps: Max, RIOPS: Max, WIOPS: 300}) {
		t.Errorf("v1 limits: %+v", ls)
	}
	if err := cg.SetIOMax(IOLimit{Dev: Device{254, 0}, RBps: Max, WBps: 2 << 20, RIOPS: Max, WIOPS: 7}); err != nil {
		t.Fatal(err)
	}
	for file, want := range map[string]string{
		"read_bps_device": "254:0 0", "write_bps_device": "254:0 2097152", "read_iops_device": "254:0 0", "write_iops_device": "254:0 7",
	} {
		if got := readFile(t, filepath.Join(h.Root, "blkio/qm/blkio.throttle."+file)); got != want {
			t.Errorf("%s: %q, want %q (0 lifts a v1 limit)", file, got, want)
		}
	}
	st, err := cg.IOStat()
	if err != nil {
		t.Fatal(err)
	}
	if len(st) != 1 || st[0] != (IOStat{Dev: Device{254, 0}, RBytes: 4096, WBytes: 8192, RIOs: 1, WIOs: 2}) {
		t.Errorf("v1 stat: %+v", st)
	}
	if err := cg.SetIOWeight(50); err != nil {
		t.Fatal(err)
	}
	if got := readFile(t, filepath.Join(h.Root, "blkio/qm/blkio.bfq.weight")); got != "50" {
		t.Errorf("blkio.bfq.weight: %q", got)
	}
	if w, err := cg.IOWeight(); err != nil || w != 50 {
		t.Errorf("weight read back: %d %v", w, err)
	}
}

func TestIOV1NoThrottling(t *testing.T) {
	h, cg := fakeV1(t)
	testutil.WriteTree(t, h.Root, map[string]string{"blkio/qm/cgroup.procs": "100\n"})
	if err := cg.SetIOMax(NoIOLimit(Device{8, 0})); !errors.Is(err, ErrUnsupported) || !strings.Contains(err.Error(), "blkio.throttle.read_bps_device") {
		t.Errorf("kernel without CONFIG_BLK_DEV_THROTTLING: %v", err)
	}
	if err := cg.SetIOWeight(50); !errors.Is(err, ErrUnsupported) {
		t.Errorf("no blkio weight file: %v", err)
	}
}

func TestIOParseErrors(t *testing.T) {
	for _, bad := range []string{"8 rbps=1\n", "8:0 rbps\n", "8:0 rbps=x\n"} {
		if _, err := ParseIOMax("io.max", []byte(bad)); err == nil {
			t.Errorf("io.max %q accepted", bad)
		}
	}
	if _, err := parseV1Devices("f", []byte("8:0\n")); err == nil {
		t.Error("v1 line without value accepted")
	}
	if _, err := ParseDevice("8:0:0"); err == nil {
		t.Error("8:0:0 accepted")
	}
}

func TestIOWeightToBFQ(t *testing.T) {
	for w, want := range map[uint64]uint64{0: 1, 1: 1, 50: 50, 100: 100, 5050: 550, 10000: 1000, 20000: 1000} {
		if got := IOWeightToBFQ(w); got != want {
			t.Errorf("IOWeightToBFQ(%d) = %d, want %d", w, got, want)
		}
	}
}

type ioFakeUnitSetter struct {
	unit  string
	props []sddbus.Property
}

func (f *ioFakeUnitSetter) SetUnitPropertiesContext(_ context.Context, name string, _ bool, props ...sddbus.Property) error {
	f.unit = name
	f.props = append(f.props, props...)
	return nil
}

// The IO*Max properties are a(st) (device node, value); systemd resolves
// /dev/block/MAJ:MIN with stat().
func TestSystemdSetterIO(t *testing.T) {
	f := &ioFakeUnitSetter{}
	s := &SystemdSetter{Conn: f, Unit: "libpod-x.scope"}
	if err := s.SetIOMax(context.Background(), IOLimit{Dev: Device{254, 0}, RBps: 1, WBps: 2, RIOPS: 3, WIOPS: Max}); err != nil {
		t.Fatal(err)
	}
	if err := s.SetIOWeight(context.Background(), 50); err != nil {
		t.Fatal(err)
	}
	if err := s.SetIOWeight(context.Background(), 0); err == nil {
		t.Error("weight 0 accepted")
	}
	got := map[string]string{}
	for _, p := range f.props {
		got[p.Name] = p.Value.Signature().String() + " " + p.Value.String()
	}
	want := map[string]string{
		"IOReadBandwidthMax":  `a(st) @a(st) [("/dev/block/254:0", 1,)]`,
		"IOWriteBandwidthMax": `a(st) @a(st) [("/dev/block/254:0", 2,)]`,
		"IOReadIOPSMax":       `a(st) @a(st) [("/dev/block/254:0", 3,)]`,
		"IOWriteIOPSMax":      `a(st) @a(st) [("/dev/block/254:0", 18446744073709551615,)]`,
		"IOWeight":            `t @t 50`,
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s: %q, want %q", k, got[k], v)
		}
	}
	if f.unit != "libpod-x.scope" {
		t.Errorf("unit %q", f.unit)
	}
}
