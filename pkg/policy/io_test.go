package policy

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/containers/qmd/internal/config"
	"github.com/containers/qmd/internal/incident"
	"github.com/containers/qmd/pkg/cgroups"
	"github.com/containers/qmd/pkg/protect"
)

var ioVda = cgroups.Device{Major: 254, Minor: 0}

func ioLimitRW(rbps, wbps uint64) cgroups.IOLimit {
	l := cgroups.NoIOLimit(ioVda)
	l.RBps, l.WBps = rbps, wbps
	return l
}

// The pure step/restore rule: 25 % steps from the configured limit, one
// per window, down to the floor; restored one step per quiet period back
// to the configured values exactly.
func TestIOThrottleStepsAndRestoresExactly(t *testing.T) {
	thr := newIOThrottle(0.25, 0, 1<<20, 30*time.Second)
	thr.minInterval = time.Second
	configured := cgroups.IOLimit{Dev: ioVda, RBps: 100 << 20, WBps: 10 << 20, RIOPS: 2000, WIOPS: cgroups.Max}
	tg := []ioTarget{{configured: configured, rate: [2]uint64{unknownRate, unknownRate}}}
	t0 := time.Unix(1000, 0)

	ch, held := thr.pressure(t0, tg)
	if len(ch) != 1 || ch[0].RBps != 75<<20 || ch[0].WBps != 7864320 || ch[0].RIOPS != 2000 || ch[0].WIOPS != cgroups.Max {
		t.Fatalf("first step: %+v %q", ch, held)
	}
	// A second trigger in the same window: no second step.
	if ch, held := thr.pressure(t0.Add(500*time.Millisecond), tg); len(ch) != 0 || held != ioHeldRate {
		t.Errorf("two steps in one window: %+v %q", ch, held)
	}
	var last cgroups.IOLimit
	steps := 1
	tEnd := t0
	for i := 1; i < 100; i++ {
		tEnd = t0.Add(time.Duration(i) * time.Second)
		ch, held := thr.pressure(tEnd, tg)
		if len(ch) == 0 {
			if held != ioHeldFloor {
				t.Fatalf("held for %q", held)
			}
			break
		}
		steps++
		last = ch[0]
	}
	if last.WBps != 1<<20 || last.RBps < 1<<20 {
		t.Errorf("not at the floor: %+v", last)
	}
	if last.RBps > 2<<20 {
		t.Errorf("read limit stopped above the floor: %d", last.RBps)
	}
	if !thr.throttled() {
		t.Fatal("not throttled")
	}
	// Hysteresis: nothing before restore_after since the last pressure.
	if ch := thr.tick(tEnd.Add(10 * time.Second)); len(ch) != 0 {
		t.Errorf("restored during the quiet period: %+v", ch)
	}
	restores := 0
	for now := tEnd.Add(30 * time.Second); thr.throttled(); now = now.Add(30 * time.Second) {
		ch := thr.tick(now)
		if len(ch) != 1 {
			t.Fatalf("restore step: %+v", ch)
		}
		// Not again within restore_after of the last step.
		if ch := thr.tick(now.Add(time.Second)); len(ch) != 0 {
			t.Fatalf("two restore steps within restore_after: %+v", ch)
		}
		last = ch[0]
		restores++
	}
	if last != configured {
		t.Errorf("restored to %+v, want exactly the configured %+v", last, configured)
	}
	if restores != steps {
		t.Errorf("%d steps down, %d up", steps, restores)
	}
}

// Without a configured limit the first step is taken from the measured
// rate (a limit above it would relieve nothing), or from defaultIOStart
// when no rate is known; a direction without IO is left alone; an
// absolute step and the floor hold.
func TestIOThrottleStartsFromTheMeasuredRate(t *testing.T) {
	thr := newIOThrottle(0.5, 0, 1<<20, time.Minute)
	t0 := time.Unix(1000, 0)
	ch, _ := thr.pressure(t0, []ioTarget{{configured: cgroups.NoIOLimit(ioVda), rate: [2]uint64{0, 40 << 20}}})
	if len(ch) != 1 || ch[0].RBps != cgroups.Max || ch[0].WBps != 20<<20 {
		t.Errorf("from the measured rate: %+v", ch)
	}
	// A configured 100M limit with the partition doing 8M: from 8M.
	thr = newIOThrottle(0.5, 0, 1<<20, time.Minute)
	ch, _ = thr.pressure(t0, []ioTarget{{configured: ioLimitRW(100<<20, 100<<20), rate: [2]uint64{8 << 20, unknownRate}}})
	if len(ch) != 1 || ch[0].RBps != 4<<20 || ch[0].WBps != 50<<20 {
		t.Errorf("from min(configured, rate): %+v", ch)
	}
	thr = newIOThrottle(0, 30<<20, 1<<20, time.Minute)
	ch, _ = thr.pressure(t0, []ioTarget{{configured: cgroups.NoIOLimit(ioVda), rate: [2]uint64{unknownRate, 10 << 20}}})
	if len(ch) != 1 || ch[0].RBps != defaultIOStart-30<<20 || ch[0].WBps != 1<<20 {
		t.Errorf("default start / absolute step / floor: %+v", ch)
	}
	// Nothing to lower: no IO at all.
	thr = newIOThrottle(0.25, 0, 1<<20, time.Minute)
	if ch, held := thr.pressure(t0, []ioTarget{{configured: cgroups.NoIOLimit(ioVda), rate: [2]uint64{0, 0}}}); len(ch) != 0 || held != ioHeldIdle || thr.throttled() {
		t.Errorf("no IO throttled: %+v %q", ch, held)
	}
}

// ioHost is fakeHost with the io controller's files on the partition and
// on a protected unit.
func ioHost(t *testing.T) (*Host, string) {
	h, root := fakeHost(t)
	write(t, root, map[string]string{
		"libpod-0123abcd/io.weight": "default 100\n",
		"libpod-0123abcd/io.max":    "",
		"libpod-0123abcd/io.stat":   "254:0 rbytes=0 wbytes=0 rios=0 wios=0 dbytes=0 dios=0\n",
	})
	return h, root
}

func ioPartition(t *testing.T, doc string) *config.Partition {
	t.Helper()
	c, err := config.Parse("t.toml", []byte("[[partition]]\nname = \"qm\"\n"+doc))
	if err != nil {
		t.Fatal(err)
	}
	p := c.Partitions[0]
	return &p
}

// Weight and device limits at start; ASIL io pressure lowers the
// configured limits (incident, condition); quiet restores them exactly.
func TestIOLimitsAppliedAndReaction(t *testing.T) {
	h, root := ioHost(t)
	r := newRecorder()
	p := ioPartition(t, `
[partition.io]
weight = 50
step = "50%"
floor = "10M"
restore_after = "30s"
[[partition.io.device]]
path = "254:0"
read_bps = "100M"
write_bps = "40M"
write_iops = 1000
`)
	c := newController(t, h, p, r)
	ioMax := filepath.Join(root, "libpod-0123abcd/io.max")
	if got := read(t, filepath.Join(root, "libpod-0123abcd/io.weight")); got != "50" {
		t.Errorf("io.weight = %q", got)
	}
	configured := "254:0 rbps=104857600 wbps=41943040 riops=max wiops=1000"
	if got := read(t, ioMax); got != configured {
		t.Errorf("io.max at start = %q", got)
	}
	if r.Count(incident.PolicyLimit) != 0 {
		t.Errorf("policy-limit incident with every io file present: %v", r.All())
	}

	t0 := time.Now()
	c.onIOPressure(t0, "") // rate unknown (read at start < 100ms ago): from the configured limits
	if got := read(t, ioMax); got != "254:0 rbps=52428800 wbps=20971520 riops=max wiops=1000" {
		t.Fatalf("io.max after one pressure window = %q", got)
	}
	// The partition keeps doing IO (1G per window, above every limit).
	write(t, root, map[string]string{"libpod-0123abcd/io.stat": "254:0 rbytes=1073741824 wbytes=1073741824 rios=1 wios=1 dbytes=0 dios=0\n"})
	c.onIOPressure(t0.Add(time.Second), "")
	write(t, root, map[string]string{"libpod-0123abcd/io.stat": "254:0 rbytes=2147483648 wbytes=2147483648 rios=2 wios=2 dbytes=0 dios=0\n"})
	c.onIOPressure(t0.Add(2*time.Second), "")
	if got := read(t, ioMax); got != "254:0 rbps=13107200 wbps=10485760 riops=max wiops=1000" {
		t.Fatalf("io.max after three windows = %q (floor 10M)", got)
	}
	if n := r.Count(incident.IOThrottle); n != 3 {
		t.Errorf("%d io-throttle incidents, want 3", n)
	}
	r.mu.Lock()
	if len(r.conds) == 0 || r.conds[0] != "+io-limited" {
		t.Errorf("conditions %v, want +io-limited", r.conds)
	}
	r.mu.Unlock()

	if !c.ioQuiet(t0.Add(20 * time.Second)) {
		t.Fatal("not throttled any more before restore_after")
	}
	if got := read(t, ioMax); got != "254:0 rbps=13107200 wbps=10485760 riops=max wiops=1000" {
		t.Errorf("restored before restore_after: %q", got)
	}
	now := t0.Add(40 * time.Second)
	for c.onQuiet(now) {
		now = now.Add(30 * time.Second)
	}
	if got := read(t, ioMax); got != configured {
		t.Errorf("io.max after restore = %q, want the configured %q", got, configured)
	}
	r.mu.Lock()
	if last := r.conds[len(r.conds)-1]; last != "-io-limited" {
		t.Errorf("last condition %q, want -io-limited", last)
	}
	r.mu.Unlock()
	var restored bool
	for _, inc := range r.All() {
		if inc.Type == incident.IOThrottle && inc.Details["restored"] == "true" && strings.Contains(inc.Summary, "restored") {
			restored = true
		}
	}
	if !restored {
		t.Error("no io-throttle incident for the restore")
	}
}

// Without configured devices the reaction throttles the devices the
// partition did IO on since the previous reading, from its rate.
func TestIOReactionFollowsTheMeasuredDevice(t *testing.T) {
	h, root := ioHost(t)
	r := newRecorder()
	c := newController(t, h, ioPartition(t, "[partition.io]\nstep = \"50%\"\n"), r)
	ioMax := filepath.Join(root, "libpod-0123abcd/io.max")
	if got := read(t, ioMax); got != "" {
		t.Errorf("io.max written without configured devices: %q", got)
	}
	t0 := time.Now()
	c.sampleIO(t0)
	write(t, root, map[string]string{"libpod-0123abcd/io.stat": "254:0 rbytes=0 wbytes=83886080 rios=0 wios=20 dbytes=0 dios=0\n7:3 rbytes=0 wbytes=0 rios=0 wios=0 dbytes=0 dios=0\n"})
	c.onIOPressure(t0.Add(2*time.Second), "") // 80M in 2 s: 40M/s
	if got := read(t, ioMax); got != "254:0 rbps=max wbps=20971520 riops=max wiops=max" {
		t.Errorf("io.max = %q, want half the measured 40M/s write rate on 254:0 only", got)
	}
	for now := t0.Add(time.Minute); c.ioQuiet(now); now = now.Add(time.Minute) {
	}
	if got := read(t, ioMax); got != "254:0 rbps=max wbps=max riops=max wiops=max" {
		t.Errorf("io.max after restore = %q, want no limit", got)
	}
}

// Dry run: the reaction is reported, nothing is written.
func TestIODryRun(t *testing.T) {
	h, root := ioHost(t)
	h.DryRun = true
	r := newRecorder()
	c := newController(t, h, ioPartition(t, "[[partition.io.device]]\npath = \"254:0\"\nwrite_bps = \"8M\"\n"), r)
	c.onIOPressure(time.Now(), "")
	if got := read(t, filepath.Join(root, "libpod-0123abcd/io.max")); got != "" {
		t.Errorf("dry run wrote io.max = %q", got)
	}
	if r.Count(incident.IOThrottle) != 1 {
		t.Error("dry run must report what it would do")
	}
}

// A host without the io controller on the partition (cgroup v2 without
// io delegated, v1 without blkio throttling): reported once in the
// policy-limit incident, no failure.
func TestIOUnsupportedIsReported(t *testing.T) {
	h, _ := fakeHost(t)
	r := newRecorder()
	newController(t, h, ioPartition(t, "[[partition.io.device]]\npath = \"254:0\"\nwrite_bps = \"8M\"\n"), r)
	if r.Count(incident.PolicyLimit) != 1 {
		t.Fatalf("policy-limit incidents: %v", r.All())
	}
	inc := r.All()[0]
	if !strings.Contains(inc.Details["unsupported"], "io.weight") || !strings.Contains(inc.Details["unsupported"], "io.max 254:0") {
		t.Errorf("unsupported: %q", inc.Details["unsupported"])
	}
}

// A configured device path missing on this host is skipped, the rest
// applies.
func TestIOMissingDeviceSkipped(t *testing.T) {
	h, root := ioHost(t)
	r := newRecorder()
	p := ioPartition(t, "[[partition.io.device]]\npath = \"/dev/qmd-no-such-disk\"\nwrite_bps = \"8M\"\n")
	c := newController(t, h, p, r)
	if len(c.io.devs) != 0 {
		t.Errorf("missing device kept: %+v", c.io.devs)
	}
	if got := read(t, filepath.Join(root, "libpod-0123abcd/io.weight")); got != "50" {
		t.Errorf("io.weight = %q", got)
	}
}

// ioThrottledByASIL runs a controller whose partition has write_bps 8M on
// 254:0 (plus extra configuration) and wrote 1 GiB there, and sends it a
// confirmed IO pressure signal of a protected unit; it returns once the
// io-throttle incident is recorded.
func ioThrottledByASIL(t *testing.T, extra string) (root string, sigs *fakeSignals) {
	t.Helper()
	h, root := ioHost(t)
	sigs = &fakeSignals{}
	h.Pressure = sigs
	r := newRecorder()
	c := newController(t, h, ioPartition(t, extra+"[[partition.io.device]]\npath = \"254:0\"\nwrite_bps = \"8M\"\n"), r)
	runController(t, c)
	write(t, root, map[string]string{
		"libpod-0123abcd/io.stat": "254:0 rbytes=0 wbytes=1073741824 rios=0 wios=1 dbytes=0 dios=0\n",
	})
	// One window after the controller started: the rate is measured.
	sigs.send(t, protect.Signal{Kind: protect.IO, Source: "probe.service", At: time.Now().Add(2 * time.Second), Stall: 200 * time.Millisecond})
	r.waitFor(t, "io-throttle", func() bool { return r.Count(incident.IOThrottle) == 1 })
	return root, sigs
}

// End to end through Run: a confirmed IO pressure signal of a protected
// unit from the host-level protector lowers the partition's io.max (the
// protector confirms wake-ups against the totals: pkg/protect's tests).
func TestASILIOSignalThrottles(t *testing.T) {
	root, _ := ioThrottledByASIL(t, "")
	if got := read(t, filepath.Join(root, "libpod-0123abcd/io.max")); got != "254:0 rbps=max wbps=6291456 riops=max wiops=max" {
		t.Errorf("io.max = %q, want 8M - 25%%", got)
	}
}

// A limit on a device that is not configured (a reload removed it, or
// the previous controller's reaction left it) is lifted at start.
func TestIOStaleLimitLifted(t *testing.T) {
	h, root := ioHost(t)
	write(t, root, map[string]string{"libpod-0123abcd/io.max": "7:3 rbps=max wbps=1048576 riops=max wiops=max\n"})
	newController(t, h, ioPartition(t, ""), newRecorder())
	if got := read(t, filepath.Join(root, "libpod-0123abcd/io.max")); got != "7:3 rbps=max wbps=max riops=max wiops=max" {
		t.Errorf("stale limit not lifted: io.max %q", got)
	}
}

// A partition is throttled through its disk (the kernel refuses io.max
// on a partition); sysfs links /sys/dev/block/MAJ:MIN to the device's
// directory, a partition's inside its disk's.
func TestResolveIODevicePartitionToDisk(t *testing.T) {
	sys := t.TempDir()
	write(t, sys, map[string]string{
		"devices/virtual/block/ioVda/dev":            "254:0\n",
		"devices/virtual/block/ioVda/vda1/dev":       "254:1\n",
		"devices/virtual/block/ioVda/vda1/partition": "1\n",
	})
	if err := os.MkdirAll(filepath.Join(sys, "dev/block"), 0o755); err != nil {
		t.Fatal(err)
	}
	for link, target := range map[string]string{"254:0": "../../devices/virtual/block/ioVda", "254:1": "../../devices/virtual/block/ioVda/vda1"} {
		if err := os.Symlink(target, filepath.Join(sys, "dev/block", link)); err != nil {
			t.Fatal(err)
		}
	}
	for in, want := range map[string]cgroups.Device{"254:1": ioVda, "254:0": ioVda, "7:5": {Major: 7, Minor: 5}} {
		got, err := resolveIODevice(sys, in)
		if err != nil || got != want {
			t.Errorf("%s -> %v %v, want %v", in, got, err, want)
		}
	}
	// A real block device node, through stat(2): /dev/ioVda or a loop device.
	for _, node := range []string{"/dev/ioVda", "/dev/loop0"} {
		var st unix.Stat_t
		if unix.Stat(node, &st) != nil {
			continue
		}
		got, err := resolveIODevice("/sys", node)
		want := cgroups.Device{Major: unix.Major(uint64(st.Rdev)), Minor: unix.Minor(uint64(st.Rdev))}
		if err != nil || got != want {
			t.Errorf("%s -> %v %v, want %v", node, got, err, want)
		}
	}
	if _, err := resolveIODevice("/sys", "/dev/null"); err == nil || !strings.Contains(err.Error(), "not a block device") {
		t.Errorf("/dev/null: %v", err)
	}
	if _, err := resolveIODevice("/sys", "/dev/qmd-no-such-disk"); err == nil {
		t.Error("missing device resolved")
	}
}

// failingIOSetter refuses io.max writes while fail is set.
type failingIOSetter struct {
	cgroups.LimitSetter
	fail bool
}

func (f *failingIOSetter) SetIOMax(ctx context.Context, l cgroups.IOLimit) error {
	if f.fail {
		return errors.New("test: io.max refused")
	}
	return f.LimitSetter.SetIOMax(ctx, l)
}

// TestIOThrottleWriteFailureKeepsState: a step whose io.max write fails is
// taken back (no incident, no io-limited, nothing to restore); the next
// window steps from what is really set.
func TestIOThrottleWriteFailureKeepsState(t *testing.T) {
	h, root := ioHost(t)
	r := newRecorder()
	c := newController(t, h, ioPartition(t, "[partition.io]\nstep = \"50%\"\nfloor = \"1M\"\n[[partition.io.device]]\npath = \"254:0\"\nwrite_bps = \"40M\"\n"), r)
	ioMax := filepath.Join(root, "libpod-0123abcd/io.max")
	configured := read(t, ioMax)
	fs := &failingIOSetter{LimitSetter: c.setter, fail: true}
	c.setter = fs
	t0 := time.Now()
	c.onIOPressure(t0, "")
	if c.io.thr.throttled() || r.Count(incident.IOThrottle) != 0 || read(t, ioMax) != configured {
		t.Fatalf("after a failed write: throttled %v, %d incidents, io.max %q", c.io.thr.throttled(), r.Count(incident.IOThrottle), read(t, ioMax))
	}
	r.mu.Lock()
	if len(r.conds) != 0 {
		t.Errorf("conditions %v after a failed write", r.conds)
	}
	r.mu.Unlock()
	fs.fail = false
	write(t, root, map[string]string{"libpod-0123abcd/io.stat": "254:0 rbytes=0 wbytes=1073741824 rios=0 wios=1 dbytes=0 dios=0\n"})
	c.onIOPressure(t0.Add(2*time.Second), "")
	if got := read(t, ioMax); got != "254:0 rbps=max wbps=20971520 riops=max wiops=max" {
		t.Errorf("io.max %q, want one step (half of 40M) from the configured value", got)
	}
}

// TestIOReactionTargetsTheASILDevice: the reaction lowers the limits only
// on devices the partition did IO on AND the pressured ASIL cgroup uses:
// ASIL reads stalled on a second disk (254:16) behind a partition writer
// there; the configured main disk (254:0), where the partition did a
// little IO too, is left as configured (e2e scenario 15 saw it lowered to
// the floor while the second disk stayed unlimited). A disk the ASIL
// cgroup does not use is never a target.
func TestIOReactionTargetsTheASILDevice(t *testing.T) {
	h, root := ioHost(t)
	r := newRecorder()
	c := newController(t, h, ioPartition(t, "[partition.io]\nstep = \"50%\"\nfloor = \"1M\"\n[[partition.io.device]]\npath = \"254:0\"\nwrite_bps = \"40M\"\n"), r)
	rec := &recordingIOSetter{LimitSetter: c.setter}
	c.setter = rec
	asil := t.TempDir()
	write(t, asil, map[string]string{"io.stat": "254:0 rbytes=0 wbytes=0 rios=0 wios=0 dbytes=0 dios=0\n254:16 rbytes=8388608 wbytes=0 rios=512 wios=0 dbytes=0 dios=0\n"})
	t0 := time.Now()
	c.sampleIO(t0)
	// 2 s later: 16M written on 254:16 (8M/s), 64K on 254:0.
	write(t, root, map[string]string{"libpod-0123abcd/io.stat": "254:0 rbytes=0 wbytes=65536 rios=0 wios=16 dbytes=0 dios=0\n254:16 rbytes=0 wbytes=16777216 rios=0 wios=16 dbytes=0 dios=0\n"})
	c.onIOPressure(t0.Add(2*time.Second), asil)
	if want := []string{"254:16 rbps=max wbps=4194304 riops=max wiops=max"}; !slices.Equal(rec.set, want) {
		t.Fatalf("io.max writes %q, want only %q: 254:16 at half its 8M/s write rate, 254:0 left as configured", rec.set, want)
	}
	// Pressure on an ASIL cgroup that uses neither disk: nothing to do.
	other := t.TempDir()
	write(t, other, map[string]string{"io.stat": "8:0 rbytes=4096 wbytes=0 rios=1 wios=0 dbytes=0 dios=0\n"})
	write(t, root, map[string]string{"libpod-0123abcd/io.stat": "254:0 rbytes=0 wbytes=131072 rios=0 wios=32 dbytes=0 dios=0\n254:16 rbytes=0 wbytes=33554432 rios=0 wios=32 dbytes=0 dios=0\n"})
	c.onIOPressure(t0.Add(4*time.Second), other)
	if len(rec.set) != 1 {
		t.Errorf("io.max writes %q after pressure of an ASIL cgroup on another disk, want none more", rec.set)
	}
	if n := r.Count(incident.IOThrottle); n != 1 {
		t.Errorf("%d io-throttle incidents, want 1", n)
	}
}

// recordingIOSetter records the io.max lines written.
type recordingIOSetter struct {
	cgroups.LimitSetter
	set []string
}

func (r *recordingIOSetter) SetIOMax(ctx context.Context, l cgroups.IOLimit) error {
	r.set = append(r.set, l.String())
	return r.LimitSetter.SetIOMax(ctx, l)
}

// TestIOThrottleRestoresPerDevice: pressure that goes on for one disk does
// not hold back the restore of another whose contention ended.
func TestIOThrottleRestoresPerDevice(t *testing.T) {
	thr := newIOThrottle(0.5, 0, 1<<20, 10*time.Second)
	thr.minInterval = time.Second
	slow := cgroups.Device{Major: 254, Minor: 16}
	vda := []ioTarget{{configured: ioLimitRW(100<<20, 50<<20), rate: [2]uint64{unknownRate, unknownRate}}}
	both := append([]ioTarget{{configured: cgroups.NoIOLimit(slow), rate: [2]uint64{0, 8 << 20}}}, vda...)
	t0 := time.Unix(1000, 0)
	if ch, _ := thr.pressure(t0, both); len(ch) != 2 {
		t.Fatalf("first window: %+v, want both disks lowered", ch)
	}
	// The main disk stays under pressure every window; the slow disk's ended.
	var restored []cgroups.IOLimit
	for i := 1; i <= 15; i++ {
		now := t0.Add(time.Duration(i) * time.Second)
		thr.pressure(now, vda)
		restored = append(restored, thr.tick(now)...)
	}
	if len(restored) != 1 || restored[0] != cgroups.NoIOLimit(slow) {
		t.Errorf("restored %+v, want only the slow disk, back to no limit", restored)
	}
	if d := thr.devs[ioVda]; len(d.history) == 0 {
		t.Error("the main disk was restored under steady pressure")
	}
}

// TestIOThrottleIgnoresATrickle: a device where the partition does less
// than the floor is no cause (a limit at the floor could not slow it), so
// it is not lowered; once throttled, a partition pushing against its limit
// holds the throttle and one that went back to a trickle lets the restore
// run although the ASIL pressure goes on (e2e scenario 15 on a loaded
// host: CPU-starved fsync probes kept the main disk at the floor for
// minutes because the partition's journald wrote a few KiB/s there).
func TestIOThrottleIgnoresATrickle(t *testing.T) {
	thr := newIOThrottle(0.5, 0, 1<<20, 10*time.Second)
	thr.minInterval = time.Second
	at := func(r, w uint64) []ioTarget {
		return []ioTarget{{configured: cgroups.NoIOLimit(ioVda), rate: [2]uint64{r, w}}}
	}
	t0 := time.Unix(1000, 0)
	for i := 0; i < 20; i++ {
		if ch, held := thr.pressure(t0.Add(time.Duration(i)*time.Second), at(16<<10, 600<<10)); len(ch) != 0 || held != ioHeldIdle {
			t.Fatalf("window %d: %+v %q for a partition below the floor, want nothing (%q)", i, ch, held, ioHeldIdle)
		}
	}
	if thr.throttled() {
		t.Fatal("throttled by a trickle")
	}
	// A writer at 8M/s: its write limit goes down to the floor, the
	// trickle of reads is left alone.
	now := t0.Add(30 * time.Second)
	last := cgroups.NoIOLimit(ioVda)
	for i := 0; i < 10; i++ {
		now = now.Add(time.Second)
		// It writes as fast as its limit lets it, up to 8M/s.
		if ch, _ := thr.pressure(now, at(16<<10, min(8<<20, last.WBps))); len(ch) == 1 {
			last = ch[0]
		}
	}
	if last.WBps != 1<<20 || last.RBps != cgroups.Max {
		t.Fatalf("writer at 8M/s lowered to %+v, want write at the 1M floor and reads unlimited", last)
	}
	// Still writing at its limit: held for 60 s of pressure.
	for i := 0; i < 60; i++ {
		now = now.Add(time.Second)
		thr.pressure(now, at(16<<10, 1<<20))
		if ch := thr.tick(now); len(ch) != 0 {
			t.Fatalf("restored %+v while the partition pushed against its limit", ch)
		}
	}
	// The writer stopped; the ASIL pressure goes on: restored step by step.
	for i := 0; i < 120 && thr.throttled(); i++ {
		now = now.Add(time.Second)
		thr.pressure(now, at(16<<10, 64<<10))
		thr.tick(now)
	}
	if thr.throttled() {
		t.Errorf("still throttled 120 s after the writer stopped: %+v", thr.devs[ioVda].current)
	}
}

// Through Run: steady ASIL CPU pressure does not hold back the restore of
// an IO limit whose contention ended. Each reaction keeps its own
// hysteresis; with one restore timer reset by every confirmed window, a
// loaded host's CPU pressure kept the slow disk at the floor for good (CI,
// e2e scenario 15).
func TestIORestoredUnderSteadyCPUPressure(t *testing.T) {
	root, sigs := ioThrottledByASIL(t, "[partition.io]\nrestore_after = \"1s\"\n")
	// The writer stopped (io.stat stays); CPU pressure every 100 ms.
	done := make(chan struct{})
	defer close(done)
	go func() {
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-done:
				return
			case now := <-tick.C:
				sigs.offer(protect.Signal{Kind: protect.CPU, Source: "probe.service", At: now, Stall: 200 * time.Millisecond})
			}
		}
	}()
	want := "254:0 rbps=max wbps=8388608 riops=max wiops=max"
	deadline := time.Now().Add(10 * time.Second)
	for got := read(t, filepath.Join(root, "libpod-0123abcd/io.max")); got != want; got = read(t, filepath.Join(root, "libpod-0123abcd/io.max")) {
		if time.Now().After(deadline) {
			t.Fatalf("io.max %q 10 s into steady CPU pressure, want the configured %q back (restore_after 1s)", got, want)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
